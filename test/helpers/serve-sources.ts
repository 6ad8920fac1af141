/**
 * `sluice serve …` run from the sources (tsx) as a child process, as users run it but without a
 * dist/ build: resolves with its URL once it listens, rejects with its exit (e.g. `exited at start
 * with SIGKILL`: a fault point fired during recovery). Bounded at 240 s: a start on a shared,
 * loaded machine (tsx transpiling, the engine's recovery) can pass test/helpers/served's 60 s.
 */
import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { KEY, userEnv, type Served } from './served.js';

const REPO = join(import.meta.dirname, '..', '..');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

export function serveFromSources(cwd: string, args: string[], env: Record<string, string>, compiled = false): Promise<Served> {
  // compiled: dist/ (`node bin/build.js` first) — the S3 store is loaded by a dynamic import that tsx does not resolve in the shard workers.
  const entry = compiled ? [join(REPO, 'bin', 'sluice.js')] : ['--import', TSX, join(REPO, 'test', 'helpers', 'sluice-entry.ts')];
  const child = spawn(process.execPath, [...entry, 'serve', '--port', '0', '--write-key', KEY, ...args], { cwd, env: userEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stderr!.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-20_000)));
  // SLUICE_TEST_SERVER_LOG=<dir>: the whole stderr goes to <dir>/serve-<pid>.log as well (as in ./served.ts).
  if (process.env.SLUICE_TEST_SERVER_LOG) child.stderr!.pipe(createWriteStream(join(process.env.SLUICE_TEST_SERVER_LOG, `serve-${child.pid}.log`)));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return new Promise<Served>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not start within 240 s:\n${err}`));
    }, 240_000);
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      const m = /Sluice listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1]!, pid: child.pid!, exited, stderr: () => err });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited at start with ${code}:\n${err}`));
    });
  });
}

