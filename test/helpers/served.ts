/**
 * Test helpers for `sluice serve` run as users run it: the compiled CLI as a child process,
 * Segment traffic from concurrent clients that remember every acknowledged id, and the
 * exactly-once check of silver against them.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { expect } from 'vitest';

export const KEY = 'wk_serve_s3';
const AUTH = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;
const CLIENTS = 4;
const BATCH = 50;
/** Per life and client: bounds every traffic loop even if the server never dies. */
const MAX_REQUESTS = 400;
/** Event time advances this much per event, from a day ago. */
const EVENT_STEP_MS = 250;
/**
 * Bounds the event-time counter so it never reaches the future (320 000 × 250 ms ≈ 22 h), with
 * room for several lives of MAX_REQUESTS × CLIENTS × BATCH (80 000) events each.
 */
const MAX_EVENTS = 320_000;

export interface Served {
  readonly url: string;
  readonly pid: number;
  /** Resolves with the exit code, or the signal's name. */
  readonly exited: Promise<number | string>;
  readonly stderr: () => string;
}

/**
 * Environment of a user who set only AWS credentials (plus `extra`): nothing of this process's SLUICE_* leaks in.
 * The servers log warnings only, or at SLUICE_TEST_SERVER_LOG_LEVEL (for debugging a flaky run, with SLUICE_TEST_SERVER_LOG).
 */
export function userEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLUICE_') && !k.startsWith('AWS_') && k !== 'UV_THREADPOOL_SIZE'));
  return { ...env, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1', SLUICE_LOG_LEVEL: process.env.SLUICE_TEST_SERVER_LOG_LEVEL ?? 'warn', ...extra };
}

/**
 * Builds dist/ (`npm run build`: incremental, a no-op when it is up to date), so a test runs the
 * compiled CLI as users run it; throws with the build's output when it fails. For `beforeAll`.
 */
export function buildDist(): void {
  const repo = join(import.meta.dirname, '..', '..');
  const build = spawnSync(process.execPath, [join(repo, 'bin', 'build.js')], { cwd: repo, encoding: 'utf8', timeout: 180_000 });
  if (build.status !== 0) throw new Error(`npm run build failed (${build.status ?? build.signal}):\n${build.stdout}\n${build.stderr}`);
}

/** Servers started here that have not exited: {@link killServed} ends them when a test failed before stopping its own. */
const running = new Set<ChildProcess>();

/**
 * SIGKILLs every server (and its engine process) this file's tests started that is still running
 * — for `afterAll`: a test that fails before its `stop()` would otherwise leave them running
 * after vitest exits (seen: four orphaned serve + engine pairs costing a benchmark CPU).
 */
export async function killServed(): Promise<void> {
  await Promise.all(
    [...running].map(async (child) => {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      try {
        // Its engine process exits on its own once ingest is gone (engine/engine-host.ts).
        child.kill('SIGKILL');
      } catch {
        return;
      }
      await exited;
    }),
  );
}

/** Starts `node <entry> serve …` in `cwd` and resolves once it prints its URL. */
export function serve(entry: string, cwd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Served> {
  return serveWith([entry], cwd, args, env);
}

/** Starts `node <node…> serve …` (`node`: the entry and any Node flags before it) in `cwd`; resolves once it prints its URL. */
export async function serveWith(node: string[], cwd: string, args: string[], env: NodeJS.ProcessEnv): Promise<Served> {
  const child: ChildProcess = spawn(process.execPath, [...node, 'serve', '--port', '0', '--write-key', KEY, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
  // SLUICE_TEST_SERVER_LOG=<dir>: every served process's whole stderr goes to <dir>/serve-<pid>.log as well (for debugging a flaky run).
  if (process.env.SLUICE_TEST_SERVER_LOG) child.stderr!.pipe(createWriteStream(join(process.env.SLUICE_TEST_SERVER_LOG, `serve-${child.pid}.log`)));
  running.add(child);
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve(code ?? signal ?? -1);
    }),
  );
  const url = await new Promise<string>((resolve, reject) => {
    // Start-up includes the engine's recovery: replaying the log since the last checkpoint (to S3, on a busy machine).
    const timer = setTimeout(() => reject(new Error(`serve did not start within 60 s:\n${err}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /Sluice listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited at start with ${code}:\n${err}`));
    });
  });
  return { url, pid: child.pid!, exited, stderr: () => err };
}

/** Sends a signal and waits (bounded) for the exit. */
export async function stop(s: Served, signal: NodeJS.Signals): Promise<number | string> {
  process.kill(s.pid, signal);
  const bound = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 60_000).unref());
  const r = await Promise.race([s.exited, bound]);
  if (r === 'timeout') {
    process.kill(s.pid, 'SIGKILL');
    throw new Error(`serve did not exit within 60 s of ${signal}:\n${s.stderr()}`);
  }
  return r;
}

/** Segment traffic from CLIENTS concurrent clients until `until` resolves (or the server dies); adds acknowledged message ids to `acked`. */
export class Traffic {
  private seq = 0;
  readonly acked = new Set<string>();
  readonly sent = new Set<string>();
  private readonly base = Math.floor((Date.now() - 86_400_000) / 3_600_000) * 3_600_000;

  /** `invalid`: every request also carries one event without a user (rejected, to the DLQ log). */
  constructor(private readonly options: { invalid?: boolean } = {}) {}

  async run(url: string, tag: string, until: Promise<unknown>): Promise<void> {
    let stopped = false;
    void until.then(() => (stopped = true));
    const client = async (c: number): Promise<void> => {
      for (let n = 0; !stopped && n < MAX_REQUESTS && this.seq + BATCH <= MAX_EVENTS; n++) {
        const batch = Array.from({ length: BATCH }, (_, i) => {
          const seq = this.seq++;
          const messageId = `${tag}-c${c}-r${n}-e${i}`;
          return {
            type: 'track',
            event: i % 5 === 0 ? 'Screen Viewed' : 'Button Clicked',
            userId: `u${seq % 300}`,
            messageId,
            timestamp: new Date(this.base + seq * EVENT_STEP_MS).toISOString(),
            context: { device: { type: seq % 2 === 0 ? 'ios' : 'android' }, app: { version: '1.2.0' } },
          };
        });
        for (const e of batch) this.sent.add(e.messageId);
        const invalid = this.options.invalid ? [{ type: 'track', event: 'No User', messageId: `${tag}-c${c}-r${n}-bad`, timestamp: new Date(this.base).toISOString() }] : [];
        let status: number;
        let body: { ok?: boolean; rejected?: unknown[] };
        try {
          const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ batch: [...batch, ...invalid] }) });
          status = res.status;
          body = (await res.json()) as typeof body;
        } catch {
          return; // the server died (kill -9)
        }
        if (status === 200 && body.ok === true) {
          expect(body.rejected).toHaveLength(invalid.length);
          for (const e of batch) this.acked.add(e.messageId);
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  }
}

/** Every acknowledged id exactly once; nothing twice, nothing that was never sent. */
export function expectExactlyOnce(counts: Map<string, number>, t: Traffic): void {
  const missing = [...t.acked].filter((id) => counts.get(id) !== 1);
  const absent = missing.filter((id) => !counts.has(id)).length;
  expect(missing.slice(0, 10), `${missing.length} acknowledged ids not exactly once in silver (${absent} absent, ${missing.length - absent} more than once)`).toEqual([]);
  const twice = [...counts].filter(([, n]) => n !== 1);
  expect(twice.slice(0, 10), 'ids more than once in silver').toEqual([]);
  const unknown = [...counts.keys()].filter((id) => !t.sent.has(id));
  expect(unknown.slice(0, 10), 'ids in silver that were never sent').toEqual([]);
}

/** A port nothing listens on right now (the kernel's pick, released): for a serve whose URL a test needs before its banner. */
export async function freePort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}
