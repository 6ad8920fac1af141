/**
 * Test helpers for scale-out engine nodes: `sluice engine …` started as a child process from the
 * sources (no dist/ build), its cluster view, a bounded poll, and a NATS cluster per describe block.
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import { startNatsCluster, type NatsCluster } from './nats-cluster.js';
import { userEnv, type Served } from './served.js';

const REPO = join(import.meta.dirname, '..', '..');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const MAIN = pathToFileURL(join(REPO, 'cli', 'main.ts')).href;
/** Node arguments that run the CLI from the sources (append the CLI's own arguments). */
export const FROM_SOURCES = ['--import', TSX, '-e', `import(${JSON.stringify(MAIN)}).then((m) => m.main(process.argv.slice(1)))`];

export const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `sluice engine …` as a child process from the sources; resolves once it prints its URL. */
export async function engineNode(cwd: string, args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [...FROM_SOURCES, 'engine', '--port', '0', '--host', '127.0.0.1', ...args], { cwd, env: userEnv({ SLUICE_LOG_LEVEL: 'info' }), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-200_000)));
  // SLUICE_TEST_SERVER_LOG=<dir>: the whole stderr in <dir>/engine-<pid>.log too, as for served processes.
  if (process.env.SLUICE_TEST_SERVER_LOG) child.stderr!.pipe(createWriteStream(join(process.env.SLUICE_TEST_SERVER_LOG, `engine-${child.pid}.log`)));
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`engine did not start within 90 s:\n${err}`)), 90_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /Sluice engine node listening on (http:\/\/\S+)/.exec(out);
      if (m) (clearTimeout(timer), resolve(m[1]!));
    });
    void exited.then((code) => (clearTimeout(timer), reject(new Error(`engine exited at start with ${code}:\n${err}`))));
  });
  return { url, pid: child.pid!, exited, stderr: () => err };
}

/** What `GET /v1/cluster` of an engine node answers. */
export interface ClusterView {
  node: string;
  leases: string[];
  shards: number[];
}
export const view = async (e: Served): Promise<ClusterView> => (await (await fetch(`${e.url}/v1/cluster`)).json()) as ClusterView;

/** Polls `check` every 250 ms until it holds (a throwing check counts as not yet); throws after `ms`. */
export async function until(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await delay(250);
  }
  throw new Error(`timed out (${ms} ms) waiting for ${what}`);
}

/**
 * For a describe block: a 3-node NATS cluster and a temp directory made before its tests, and at
 * the end every child process in `children` killed (thawed first, in case a test froze it), the
 * cluster stopped and the directory removed.
 */
export function natsBed(prefix: string): { nats: () => NatsCluster; dir: () => string; children: Served[] } {
  let nats: NatsCluster | undefined;
  let dir: string | undefined;
  const children: Served[] = [];
  beforeAll(async () => {
    nats = await startNatsCluster({ nodes: 3 });
    dir = mkdtempSync(join(tmpdir(), prefix));
  }, 60_000);
  afterAll(async () => {
    for (const c of children) {
      try {
        process.kill(c.pid, 'SIGCONT');
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await nats?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  return { nats: () => nats!, dir: () => dir!, children };
}
