/**
 * `sluice serve` as users run it: the compiled CLI (`npm run build` → dist/) started as a child
 * process from a temporary working directory outside the checkout, writing its lake to S3 (a real
 * s3rver on loopback), driven with Segment batches over HTTP. The lake's live files (per its
 * commit records) are read back from the bucket with DuckDB: every acknowledged event id is in
 * silver exactly once, and the gold hourly totals add up to silver. Second test: kill -9 mid-load
 * twice, restart on the same data directory, SIGTERM — still exactly once on S3. Third: S3 fails
 * for a while (throttling, then dropped connections, through a fault proxy) and recovers — the
 * server rides it out without a restart, exactly once.
 *
 * Event times come from one shared counter (250 ms of event time per event, starting a day ago) so
 * no event is ever too late: every acknowledged event belongs in silver.
 */
import { spawn } from 'node:child_process';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { liveFiles } from '../../storage/commit-record.js';
import { openObjectStore } from '../../storage/open-store.js';
import { eventually } from '../helpers/eventually.js';
import { openLakeReader } from '../helpers/lake.js';
import { buildDist, expectExactlyOnce, freePort, KEY, killServed, serve, stop, Traffic, userEnv } from '../helpers/served.js';

const REPO = join(import.meta.dirname, '..', '..');

const dirs: string[] = [];

interface S3Server {
  endpoint: string;
  stop(): Promise<void>;
}

/**
 * s3rver in a child process, as test/helpers/s3rver.ts starts it, but from fixtures/s3rver-flat.mjs
 * (which keeps s3rver alive when a PUT and a DELETE meet in one directory; see there).
 */
async function startS3rver(bucket: string): Promise<S3Server> {
  const dir = tempDir('s3rver');
  const child = spawn(process.execPath, [join(import.meta.dirname, 'fixtures', 's3rver-flat.mjs'), dir, bucket], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, NODE_OPTIONS: '--openssl-legacy-provider' },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    void exited.then(() => reject(new Error('s3rver exited at start')));
  });
  // For reading the bucket back from this process (the standard AWS chain, as in the servers).
  process.env.AWS_ACCESS_KEY_ID ??= 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY ??= 'S3RVER';
  return {
    endpoint: `http://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

let s3: S3Server;

beforeAll(async () => {
  buildDist();
  s3 = await startS3rver('lake');
}, 240_000);

afterAll(async () => {
  await killServed();
  await s3?.stop();
  if (!process.env.KEEP_LAKE) for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `sluice-serve-s3-${tag}-`));
  dirs.push(d);
  return d;
}

const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Copies the lake's live silver and gold files from the bucket into a local directory, keys as
 * paths: the files its commit records say exist, as `sluice query` reads them. (A plain listing
 * may also hold a compaction's inputs next to its merged file: Sluice compacts these day-old
 * partitions in the background, and a kill -9 between publishing the merged file and deleting
 * the inputs leaves both until the next compaction run finishes it; see storage/compact.ts.)
 */
async function download(lake: string, endpoint: string): Promise<string> {
  const local = tempDir('download');
  const store = await openObjectStore(lake, { s3Endpoint: endpoint });
  try {
    for (const prefix of ['silver/', 'gold/']) {
      for (const key of (await liveFiles(store, prefix)).keys()) {
        const body = await store.get(key);
        const path = join(local, key);
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, body!);
      }
    }
  } finally {
    await store.close();
  }
  return local;
}

interface LakeCheck {
  silverCounts: Map<string, number>;
  goldWindows: number;
  /** Gold hourly windows whose 'ALL' row differs from silver's hour (events, users) or is not exactly one row. */
  goldMismatches: string[];
}

/** Reads silver and gold back: per-id counts in silver; each gold hourly 'ALL' row compared with its hour in silver. */
async function checkLake(local: string): Promise<LakeCheck> {
  const r = await openLakeReader(local);
  try {
    const silverCounts = new Map<string, number>();
    for (const row of await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`)) {
      silverCounts.set(row.event_id, Number(row.n));
    }
    const gold = await r.rows<{ w: unknown; g_events: bigint; g_users: bigint; g_rows: bigint; s_events: bigint | null; s_users: bigint | null }>(`
      WITH g AS (SELECT window_start AS w, sum(events) AS g_events, sum(active_users) AS g_users, count(*) AS g_rows
                 FROM ${r.rel('hourly_metrics')} WHERE device_type = 'ALL' AND app_version = 'ALL' AND country = 'ALL' GROUP BY 1),
           s AS (SELECT date_trunc('hour', event_time) AS w, count(*) AS s_events, count(DISTINCT user_id) AS s_users FROM ${r.rel('events')} GROUP BY 1)
      SELECT g.w, g_events, g_users, g_rows, s_events, s_users FROM g LEFT JOIN s USING (w) ORDER BY 1`);
    const goldMismatches = gold
      .filter((g) => Number(g.g_events) !== Number(g.s_events) || Number(g.g_users) !== Number(g.s_users) || Number(g.g_rows) !== 1)
      .map((g) => `${String(g.w)}: gold ${g.g_events} events / ${g.g_users} users in ${g.g_rows} row(s), silver ${g.s_events} / ${g.s_users}`);
    return { silverCounts, goldWindows: gold.length, goldMismatches };
  } finally {
    r.close();
  }
}

/**
 * An HTTP proxy in front of s3rver that can answer as a failing S3 does: `slowdown` answers every
 * request 503 with S3's SlowDown error (throttling), `reset` drops each connection without an
 * answer; `ok` forwards byte for byte (the Host header too, so SigV4 signatures still match).
 */
interface FaultProxy {
  endpoint: string;
  mode: 'ok' | 'slowdown' | 'reset';
  /** Requests answered with a fault so far. */
  faults: number;
  stop(): Promise<void>;
}

async function startFaultProxy(target: string): Promise<FaultProxy> {
  const to = new URL(target);
  const proxy: FaultProxy = { endpoint: '', mode: 'ok', faults: 0, stop: async () => undefined };
  const server = createServer((req, res) => {
    if (proxy.mode !== 'ok') {
      proxy.faults++;
      req.resume();
      if (proxy.mode === 'reset') {
        req.socket.destroy();
        return;
      }
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>');
      return;
    }
    const upstream = request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  proxy.stop = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}

/** Threads of a process, from /proc (Linux). */
const threadsOf = (pid: number): number => readdirSync(`/proc/${pid}/task`).length;

const SERVE_ARGS = ['--data', 'data', '--shards', '3', '--workers', '2', '--flush-interval', '500ms', '--allowed-lateness', '10m', '--session-gap', '5m'];

describe('sluice serve (compiled) with an S3 lake', () => {
  it('starts from another directory with AWS_ENDPOINT_URL_S3, commits every acknowledged event to silver once, exits 0 on SIGTERM', async () => {
    const cwd = tempDir('cwd');
    const lake = 's3://lake/graceful';
    const server = await serve(join(REPO, 'bin', 'sluice.js'), cwd, [...SERVE_ARGS, '--lake', lake], userEnv({ AWS_ENDPOINT_URL_S3: s3.endpoint }));
    // bin/sluice.js sizes libuv's pool before anything uses it: 32 pool threads (with the
    // default 4, a serve process has ~13 threads in all).
    expect(threadsOf(server.pid)).toBeGreaterThanOrEqual(36);
    expect(existsSync(join(cwd, 'data', 'coordinator.mdb')), 'relative --data resolves against the working directory').toBe(true);

    const traffic = new Traffic();
    await traffic.run(server.url, 'g', delay(3000));
    expect(traffic.acked.size).toBeGreaterThan(2000);
    expect(await stop(server, 'SIGTERM')).toBe(0);

    const { silverCounts, goldWindows, goldMismatches } = await checkLake(await download(lake, s3.endpoint));
    expectExactlyOnce(silverCounts, traffic);
    expect(goldWindows).toBeGreaterThan(0);
    expect(goldMismatches, 'gold hourly windows that differ from silver').toEqual([]);
  }, 90_000);

  it('after kill -9 mid-load and restarts (--s3-endpoint), every acknowledged event is in silver on S3 exactly once', async () => {
    const cwd = tempDir('cwd');
    const lake = 's3://lake/crashy';
    const entry = join(REPO, 'dist', 'bin', 'sluice.js');
    const args = [...SERVE_ARGS, '--lake', lake, '--s3-endpoint', s3.endpoint];
    const traffic = new Traffic();
    // Two lives killed while clients send and checkpoints upload (every 500 ms), then one stopped.
    for (const [life, killAfterMs] of [1700, 2300].entries()) {
      const server = await serve(entry, cwd, args, userEnv({}));
      const killed = delay(killAfterMs).then(() => stop(server, 'SIGKILL'));
      await traffic.run(server.url, `k${life}`, killed);
      expect(await killed).toBe('SIGKILL');
    }
    const acked = traffic.acked.size;
    expect(acked).toBeGreaterThan(1000);
    const last = await serve(entry, cwd, args, userEnv({}));
    await traffic.run(last.url, 'last', delay(1500));
    expect(traffic.acked.size).toBeGreaterThan(acked);
    expect(await stop(last, 'SIGTERM')).toBe(0);

    const { silverCounts, goldMismatches } = await checkLake(await download(lake, s3.endpoint));
    expectExactlyOnce(silverCounts, traffic);
    // Checked after silver, so a failure here is the gold merge's (a window merged again after a
    // restart from only some of its shards' partials), not silver's.
    expect(goldMismatches, 'gold hourly windows that differ from silver after kill -9 and restart').toEqual([]);
  }, 120_000);

  it('rides out an S3 outage (503 SlowDown, then dropped connections) without a restart: acks go on into the log, /readyz names the failing checkpoint, and once S3 answers every acknowledged event is in silver exactly once', async () => {
    const proxy = await startFaultProxy(s3.endpoint);
    try {
      const cwd = tempDir('cwd');
      const lake = 's3://lake/outage';
      const server = await serve(join(REPO, 'dist', 'bin', 'sluice.js'), cwd, [...SERVE_ARGS, '--lake', lake, '--s3-endpoint', proxy.endpoint], userEnv({}));
      const traffic = new Traffic();
      await traffic.run(server.url, 'before', delay(1000));

      proxy.mode = 'slowdown';
      const before = traffic.acked.size;
      await traffic.run(server.url, 'slowdown', delay(2000));
      expect(traffic.acked.size, 'ingest acknowledges into the local log while S3 refuses').toBeGreaterThan(before);
      // A checkpoint caught in its publish when S3 starts refusing fails only after every retry:
      // up to 3 publish attempts × 3 SDK attempts with throttling backoff, seconds (a bound for a
      // loaded CI machine, not a duration: the wait ends as soon as /readyz says so).
      const failing = await eventually(async () => {
        const r = await fetch(`${server.url}/readyz`);
        return r.status === 503 && /checkpoint of shard-\d+ failing/.test(await r.text());
      }, 100_000);
      expect(failing, `/readyz names the failing checkpoint; the server's last log lines:\n${server.stderr().split('\n').slice(-15).join('\n')}`).toBe(true);
      // The engine process sends its metrics every second.
      const counted = await eventually(async () => /sluice_engine_checkpoint_failures_total\{target="shard-\d+",code="[^"]+"\} [1-9]/.test(await (await fetch(`${server.url}/metrics`)).text()), 5_000);
      expect(counted, '/metrics counts the failed checkpoint attempts').toBe(true);

      proxy.mode = 'reset';
      await traffic.run(server.url, 'reset', delay(1500));
      proxy.mode = 'ok';
      const recovered = await eventually(async () => (await fetch(`${server.url}/readyz`).catch(() => undefined))?.status === 200, 60_000);
      expect(recovered, `/readyz back to 200 once S3 answers, without a restart (${proxy.faults} requests failed meanwhile)`).toBe(true);
      expect(proxy.faults).toBeGreaterThan(0);
      await traffic.run(server.url, 'after', delay(1000));
      expect(await stop(server, 'SIGTERM')).toBe(0);

      const { silverCounts, goldMismatches } = await checkLake(await download(lake, s3.endpoint));
      expectExactlyOnce(silverCounts, traffic);
      expect(goldMismatches, 'gold hourly windows that differ from silver after the outage').toEqual([]);
    } finally {
      await proxy.stop();
    }
  }, 240_000);

  it('S3 unreachable at start: serve listens and answers 503 starting, /readyz names the error, and it comes up once S3 answers (it exited); a SIGTERM while it waits ends it at once', async () => {
    const proxy = await startFaultProxy(s3.endpoint);
    try {
      const cwd = tempDir('cwd');
      const lake = 's3://lake/late-s3';
      const entry = join(REPO, 'dist', 'bin', 'sluice.js');
      const port = await freePort();
      const url = `http://127.0.0.1:${port}`;
      const args = [...SERVE_ARGS, '--lake', lake, '--s3-endpoint', proxy.endpoint, '--port', String(port)];
      proxy.mode = 'reset';
      const starting = serve(entry, cwd, args, userEnv({}));
      const outcome = starting.then(
        () => 'started',
        (err: Error) => err.message,
      );
      const waiting = await eventually(async () => {
        const r = await fetch(`${url}/readyz`).catch(() => undefined);
        return r?.status === 503 && /the engine could not start: S3 .* failed/.test(await r.text());
      }, 60_000);
      expect(waiting, `/readyz names the S3 error while serve waits for it (outcome so far: ${await Promise.race([outcome, delay(0).then(() => 'pending')])})`).toBe(true);
      const refused = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`, 'content-type': 'application/json' }, body: JSON.stringify({ batch: [{ type: 'track', userId: 'u1', event: 'Early', messageId: 'early-1' }] }) });
      expect(refused.status).toBe(503);
      proxy.mode = 'ok';
      const server = await starting;
      const traffic = new Traffic();
      await traffic.run(server.url, 'late-s3', delay(1000));
      expect(await stop(server, 'SIGTERM')).toBe(0);
      const r = await openLakeReader(await download(lake, s3.endpoint));
      try {
        const rows = await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`);
        expectExactlyOnce(new Map(rows.map((x) => [x.event_id, Number(x.n)])), traffic);
      } finally {
        r.close();
      }

      // Waiting again (S3 gone), then stopped: it ends with S3's error, without waiting for S3.
      proxy.mode = 'reset';
      const cwd2 = tempDir('cwd');
      const again = serve(entry, cwd2, [...SERVE_ARGS, '--lake', 's3://lake/late-s3-stopped', '--s3-endpoint', proxy.endpoint, '--port', String(port)], userEnv({}));
      const ended = again.then(
        () => 'started',
        (err: Error) => err.message,
      );
      expect(await eventually(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 503, 60_000)).toBe(true);
      const pid = serveProcessIn(cwd2);
      expect(pid, 'the serve process').toBeDefined();
      process.kill(pid!, 'SIGTERM');
      expect(await ended).toMatch(/^serve exited at start with 1:[\s\S]*S3 .* failed/);
    } finally {
      await proxy.stop();
    }
  }, 240_000);
});


/** The serve process (not its engine process) whose working directory is `cwd`, from /proc. */
function serveProcessIn(cwd: string): number | undefined {
  const here = realpathSync(cwd);
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .find((pid) => {
      try {
        return realpathSync(`/proc/${pid}/cwd`) === here && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('serve') && !readFileSync(`/proc/${pid}/environ`, 'utf8').includes('SLUICE_ENGINE_HOST=');
      } catch {
        return false;
      }
    });
}
