/**
 * The process layout of `sluice serve`: ingest (the ack thread) in the serve process, the engine
 * in a child process of its own, niced as a whole. Under Segment traffic from concurrent clients
 * that remember every acknowledged id: kill -9 the engine process alone (acks go on, it is
 * restarted and recovers), the ingest process alone (the orphaned engine exits by itself), and
 * both; restart; SIGTERM. Silver holds every acknowledged event exactly once — also when the
 * SIGTERM comes while the engine process is down or recovering (the stop starts it or waits for it),
 * also during serve's own start.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { until } from '../helpers/engine-node.js';
import { openLakeReader } from '../helpers/lake.js';
import { buildDist, expectExactlyOnce, freePort, KEY, killServed, serve, serveWith, stop, Traffic, userEnv, type Served } from '../helpers/served.js';

const REPO = join(import.meta.dirname, '..', '..');
const dirs: string[] = [];

beforeAll(buildDist, 240_000);

afterAll(async () => {
  await killServed();
  if (!process.env.KEEP_LAKE) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));



/** /proc/<pid>/stat: [ppid, niceness]. */
function statOf(pid: number): { ppid: number; nice: number } | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
    return { ppid: Number(fields[1]), nice: Number(fields[16]) };
  } catch {
    return undefined;
  }
}

/** The first process `is` holds for, polled every `everyMs` for up to `withinMs` (undefined after that; one look with 0). */
async function processWhere(is: (pid: number) => boolean, everyMs = 50, withinMs = 30_000): Promise<number | undefined> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const found = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .find(is);
    if (found !== undefined) return found;
    if (Date.now() >= deadline) return undefined;
    await delay(everyMs);
  }
}

/** Is `pid` an engine process (engine/engine-host.ts) working in `cwd` — before its serve's pid is known. */
const engineHostIn =
  (cwd: string) =>
  (pid: number): boolean => {
    try {
      return realpathSync(`/proc/${pid}/cwd`) === realpathSync(cwd) && readFileSync(`/proc/${pid}/environ`, 'utf8').includes('SLUICE_ENGINE_HOST=');
    } catch {
      return false;
    }
  };

/** The engine process: the serve process's child (waits for it, bounded). */
async function engineOf(server: Served, not?: number): Promise<number> {
  const child = await processWhere((p) => p !== not && statOf(p)?.ppid === server.pid);
  if (child === undefined) throw new Error(`no engine process under ${server.pid}:\n${server.stderr()}`);
  return child;
}

async function gone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (statOf(pid) === undefined) return true;
    await delay(50);
  }
  return false;
}

/** Silver of the lake under `cwd` holds every event `t` got acknowledged exactly once. */
async function expectAllCommitted(cwd: string, t: Traffic): Promise<void> {
  const reader = await openLakeReader(join(cwd, 'lake'));
  try {
    const counts = new Map<string, number>();
    for (const row of await reader.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${reader.rel('events')} GROUP BY 1`)) counts.set(row.event_id, Number(row.n));
    expectExactlyOnce(counts, t);
  } finally {
    reader.close();
  }
}

const ARGS = ['--data', 'data', '--lake', 'lake', '--shards', '3', '--workers', '2', '--flush-interval', '300ms', '--allowed-lateness', '10m', '--session-gap', '5m'];

describe('sluice serve: ingest and engine in separate processes', () => {
  it('kill -9 the engine alone, the ingest alone, both: acks go on, nothing acknowledged is lost or doubled', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'sluice-layout-'));
    dirs.push(cwd);
    const env = userEnv({});
    const entry = join(REPO, 'bin', 'sluice.js');
    // An invalid event in every request: the DLQ log is written, read and flushed through the kills too
    // (a start after them failed half the time — log_corrupt: two DLQ reads interleaved on one reader).
    const t = new Traffic({ invalid: true });

    // Life 1: the engine process dies under load; ingest keeps acknowledging into the log.
    let server = await serve(entry, cwd, ARGS, env);
    const engine = await engineOf(server);
    expect(statOf(engine)!.nice).toBe(10); // niced as a whole (--worker-nice default)
    // In a session of its own (a terminal's Ctrl-C reaches serve alone), whose autogroup is niced
    // too where the kernel groups by session: else niceness ranks it only against serve.
    const session = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[3]);
    expect(session(engine)).toBe(engine);
    expect(session(engine)).not.toBe(session(server.pid));
    if (existsSync(`/proc/${engine}/autogroup`) && readFileSync('/proc/sys/kernel/sched_autogroup_enabled', 'utf8').trim() === '1') {
      const group = (pid: number): string => readFileSync(`/proc/${pid}/autogroup`, 'utf8').trim();
      expect(group(engine)).toMatch(/nice 10$/);
      expect(group(engine).split(' ')[0]).not.toBe(group(server.pid).split(' ')[0]);
    }
    // glibc returns the engine's big freed buffers to the kernel (engine/engine-process.ts).
    expect(readFileSync(`/proc/${engine}/environ`, 'utf8').split('\0')).toContain('MALLOC_MMAP_THRESHOLD_=131072');
    // …and its heaps keep a small young generation (engine/engine-process.ts ENGINE_SEMI_SPACE_MB).
    expect(readFileSync(`/proc/${engine}/cmdline`, 'utf8').split('\0')).toContain('--max-semi-space-size=4');
    let traffic = t.run(server.url, 'a', delay(2500));
    await delay(600);
    process.kill(engine, 'SIGKILL');
    const ackedAtKill = t.acked.size;
    // Reaped by serve (its restart is 500 ms away): no live figures — they stayed frozen at the dead engine's, answered 200.
    expect(await gone(engine, 5_000)).toBe(true);
    expect((await fetch(`${server.url}/v1/live`)).status, '/v1/live while the engine is down').toBe(503);
    const restarted = await engineOf(server, engine);
    await traffic;
    expect(t.acked.size, 'acks went on while the engine was down').toBeGreaterThan(ackedAtKill);
    expect(restarted).not.toBe(engine);

    // The ingest process dies: its orphaned engine exits by itself.
    const orphan = await engineOf(server);
    traffic = t.run(server.url, 'b', delay(800));
    await delay(400);
    process.kill(server.pid, 'SIGKILL');
    await traffic;
    expect(await gone(orphan, 15_000), 'the orphaned engine process exits').toBe(true);

    // Life 2: both die at once.
    server = await serve(entry, cwd, ARGS, env);
    const second = await engineOf(server);
    traffic = t.run(server.url, 'c', delay(1000));
    await delay(500);
    process.kill(second, 'SIGKILL');
    process.kill(server.pid, 'SIGKILL');
    await traffic;
    await server.exited;

    // Life 3: recovers everything, a little more traffic, SIGTERM drains and commits — started
    // with process-wide node flags, which a worker thread refuses in its execArgv (its shard
    // workers used to be refused: the engine stopped during recovery).
    server = await serveWith(['--expose-gc', '--stack-size=984', '--trace-warnings', entry], cwd, ARGS, env);
    const flagged = readFileSync(`/proc/${await engineOf(server)}/cmdline`, 'utf8').split('\0');
    expect(flagged).toEqual(expect.arrayContaining(['--expose-gc', '--stack-size=984', '--trace-warnings']));
    await t.run(server.url, 'd', delay(500));
    expect(await stop(server, 'SIGTERM')).toBe(0);
    expect(t.acked.size).toBeGreaterThan(1000);

    await expectAllCommitted(cwd, t);
  }, 180_000);

  it('an engine killed while invalid events arrive restarts and stays up (it died at the end of every recovery: a DLQ mark taken for a shard\'s)', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'sluice-layout-dlq-'));
    dirs.push(cwd);
    const t = new Traffic({ invalid: true });
    const server = await serve(join(REPO, 'bin', 'sluice.js'), cwd, ARGS, userEnv({}));
    const traffic = t.run(server.url, 'a', delay(4000));
    await delay(600);
    const engine = await engineOf(server);
    process.kill(engine, 'SIGKILL');
    const restarted = await engineOf(server, engine);
    // Its recovery takes a second or so; invalid events keep coming meanwhile (their DLQ marks arrive early).
    await delay(2500);
    expect(statOf(restarted), 'the restarted engine is still running').toBeDefined();
    await traffic;
    expect(await stop(server, 'SIGTERM')).toBe(0);
    await expectAllCommitted(cwd, t);
  }, 120_000);

  it('an engine process killed during its first recovery is started again, and serve comes up; meanwhile it listens and answers events 503 starting', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'sluice-layout-first-'));
    dirs.push(cwd);
    const t = new Traffic();
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const starting = serve(join(REPO, 'bin', 'sluice.js'), cwd, [...ARGS, '--port', String(port)], userEnv({}));
    // The engine process of this serve (its pid is not known before it listens): same working directory, started as the engine host.
    const engine = await processWhere(engineHostIn(cwd), 10);
    expect(engine, 'an engine process started').toBeDefined();
    process.kill(engine!, 'SIGKILL');
    // Its next start is at least 500 ms away: serve listens, live, not ready, refusing events.
    await until('serve listening during the recovery', async () => (await fetch(`${url}/healthz`)).status === 200, 10_000);
    const refused = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`, 'content-type': 'application/json' }, body: JSON.stringify({ batch: [{ type: 'track', userId: 'u1', event: 'Early', messageId: 'early-1' }] }) });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('2');
    expect(await refused.json()).toMatchObject({ code: 'starting' });
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
    const live = await fetch(`${url}/v1/live`);
    expect({ status: live.status, body: await live.json() }).toMatchObject({ status: 503, body: { code: 'starting' } });
    const server = await starting;
    expect(server.url).toBe(url);
    expect(server.stderr()).toContain('starting it again');
    await t.run(server.url, 'a', delay(500));
    expect(await stop(server, 'SIGTERM')).toBe(0);
    await expectAllCommitted(cwd, t);
  }, 120_000);

  it('SIGTERM while the engine process is down or recovering: the stop still commits everything acknowledged', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'sluice-layout-stop-'));
    dirs.push(cwd);
    const env = userEnv({});
    const entry = join(REPO, 'bin', 'sluice.js');
    const t = new Traffic();

    // Down: killed, its restart not due yet (ingest waits 500 ms); the events acknowledged meanwhile are only in the log.
    let server = await serve(entry, cwd, ARGS, env);
    await t.run(server.url, 'a', delay(300));
    const engine = await engineOf(server);
    process.kill(engine, 'SIGKILL');
    expect(await gone(engine, 5_000)).toBe(true);
    const before = t.acked.size;
    await t.run(server.url, 'b', delay(200));
    expect(t.acked.size, 'acks went on while the engine was down').toBeGreaterThan(before);
    expect(await stop(server, 'SIGTERM')).toBe(0);
    await expectAllCommitted(cwd, t);

    // Recovering: restarted, replaying the log (its start takes a second or more: workers, the lake's state).
    server = await serve(entry, cwd, ARGS, env);
    const second = await engineOf(server);
    process.kill(second, 'SIGKILL');
    await t.run(server.url, 'c', delay(200));
    await engineOf(server, second);
    expect(await stop(server, 'SIGTERM')).toBe(0);
    await expectAllCommitted(cwd, t);
  }, 180_000);

  it('SIGTERM to serve during its start (listening, 503 starting, the engine recovering): it waits for the recovery, commits everything acknowledged, exits 0 and leaves no engine process', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'sluice-layout-term-start-'));
    dirs.push(cwd);
    const env = userEnv({});
    const entry = join(REPO, 'bin', 'sluice.js');
    const t = new Traffic();
    // A first life killed -9: what it acknowledged is only in the log, for the next start to replay.
    const first = await serve(entry, cwd, ARGS, env);
    await t.run(first.url, 'a', delay(500));
    const firstEngine = await engineOf(first);
    process.kill(first.pid, 'SIGKILL');
    expect(await gone(firstEngine, 15_000), 'the orphaned engine exits by itself').toBe(true);

    const port = await freePort();
    const starting = serve(entry, cwd, [...ARGS, '--port', String(port)], env);
    const exited = starting.then(
      () => 'started',
      (err: Error) => err.message,
    );
    const engine = await processWhere(engineHostIn(cwd), 10);
    expect(engine, 'an engine process started').toBeDefined();
    const serving = statOf(engine!)!.ppid;
    // Killed in its first recovery, the engine is started again 500 ms later: the start lasts.
    process.kill(engine!, 'SIGKILL');
    await until('serve listening during the recovery', async () => (await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status === 200, 10_000);
    expect((await fetch(`http://127.0.0.1:${port}/readyz`)).status).toBe(503);
    process.kill(serving, 'SIGTERM');
    // Killed by the signal before: no handler was installed until the engine had recovered.
    expect(await exited).toMatch(/^serve exited at start with 0:/);
    expect(await gone(serving, 1000)).toBe(true);
    const left = await processWhere((pid) => {
      try {
        return realpathSync(`/proc/${pid}/cwd`) === realpathSync(cwd);
      } catch {
        return false;
      }
    }, 50, 0);
    expect(left, 'no process of this serve left').toBeUndefined();
    await expectAllCommitted(cwd, t);
  }, 180_000);
});
