/**
 * A paused engine node (SIGSTOP: a long GC pause, a frozen VM) on a REAL 3-node JetStream cluster:
 * its leases go overdue while it sleeps; when it wakes (SIGCONT), the fence refuses whatever it was
 * committing, it gives its shards up and takes them again — restored from the lake, not from its
 * own disk. Every acknowledged event must still be in silver exactly once. Skipped only when
 * nats-server is missing.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { createWriteStream, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silverCounts } from '../helpers/lake.js';
import { explainMissing } from '../helpers/missing-events.js';
import { natsServerPath, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.js';
import { expectExactlyOnce, serveWith, stop, Traffic, userEnv, type Served } from '../helpers/served.js';

const REPO = join(import.meta.dirname, '..', '..');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const MAIN = pathToFileURL(join(REPO, 'cli', 'main.ts')).href;
const FROM_SOURCES = ['--import', TSX, '-e', `import(${JSON.stringify(MAIN)}).then((m) => m.main(process.argv.slice(1)))`];
const SHARDS = 4;
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function engineNode(cwd: string, args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [...FROM_SOURCES, 'engine', '--port', '0', '--host', '127.0.0.1', ...args], { cwd, env: userEnv({ SLUICE_LOG_LEVEL: 'info' }), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-200_000)));
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

async function until(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await delay(250);
  }
  throw new Error(`timed out (${ms} ms) waiting for ${what}`);
}

const describeNats = natsServerPath() === undefined ? describe.skip : describe;

describeNats('a paused engine node (SIGSTOP longer than its lease) on JetStream', () => {
  let nats: NatsCluster | undefined;
  let dir: string;
  const children: Served[] = [];
  beforeAll(async () => {
    nats = await startNatsCluster({ nodes: 3 });
    dir = mkdtempSync(join(tmpdir(), 'sluice-pause-'));
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

  it('wakes up fenced, retakes its shards from the lake: every acknowledged event once in silver', async () => {
    const c = nats!;
    const lake = join(dir, 'lake');
    const e1 = await engineNode(dir, ['--log', c.urls.join(','), '--data', join(dir, 'e1', 'data'), '--lake', lake, '--shards', String(SHARDS), '--workers', '1', '--flush-interval', '500ms', '--allowed-lateness', '10m', '--lease-ttl', '4s', '--node-id', 'e1']);
    children.push(e1);
    const i1 = await serveWith(FROM_SOURCES, dir, ['--role', 'ingest', '--log', c.urls.join(','), '--data', join(dir, 'i1', 'data'), '--shards', String(SHARDS)], userEnv({}));
    children.push(i1);
    await until('e1 to own every shard', async () => ((await (await fetch(`${e1.url}/v1/cluster`)).json()) as { shards: number[] }).shards.length === SHARDS, 60_000);

    const traffic = new Traffic();
    const load = traffic.run(i1.url, 'p', delay(20_000));
    // The engine node itself frozen past its lease: on waking, its renewal timer finds the leases overdue.
    await delay(2000);
    process.kill(e1.pid, 'SIGSTOP');
    await delay(6000);
    process.kill(e1.pid, 'SIGCONT');
    // Two of three NATS servers frozen: no quorum, so no renewal (and no append) succeeds, while the
    // engine goes on checkpointing what it read into the lake — until the fence refuses a publish.
    await delay(3000);
    c.signal(1, 'SIGSTOP');
    c.signal(2, 'SIGSTOP');
    await delay(6000);
    c.signal(1, 'SIGCONT');
    c.signal(2, 'SIGCONT');
    await load;

    let missing: string[] = [];
    await until('silver to hold every acknowledged event', async () => {
      const counts = await silverCounts(lake);
      missing = [...traffic.acked].filter((id) => !counts.has(id));
      return missing.length === 0;
    }, 90_000).catch(async (err: Error) => {
      const where = await explainMissing({ lake, missing, servers: c.urls, shards: SHARDS });
      throw new Error(`${err.message}: ${missing.length} of ${traffic.acked.size} acknowledged ids not in silver (${missing.slice(0, 8).join(', ')})\n${where}\n--- e1\n${e1.stderr().slice(-12000)}`);
    });
    expect(await stop(i1, 'SIGTERM')).toBe(0);
    expect(await stop(e1, 'SIGTERM')).toBe(0);
    expectExactlyOnce(await silverCounts(lake), traffic);
    expect(e1.stderr()).toContain('took over shard');
  }, 300_000);
});
