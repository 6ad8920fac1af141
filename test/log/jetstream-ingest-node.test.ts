/**
 * Several ingest nodes on one REAL 3-node JetStream cluster (issue 10): a `serve --role ingest`
 * node (no engine) and a `serve --log nats://… --engine-mode inline` node take traffic for the
 * same users — so the same shards — at the same time; every acknowledged event is in silver
 * exactly once (DuckDB over the lake), rejected ones in dlq/. And the ingest node's backpressure:
 * 503 + Retry-After while the stream holds more than --max-backlog that no engine truncated, with
 * its count, the publish latency and the backlog per shard on /metrics. Both nodes run from the
 * sources as child processes. Skipped only when nats-server is missing.
 */
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { composeServeConfig } from '../../cli/config.js';
import { JetStreamLogs } from '../../log/jetstream-log.js';
import { postJson } from '../helpers/erasure.js';
import { openLakeReader, silverCounts } from '../helpers/lake.js';
import { natsServerPath, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.js';
import { expectExactlyOnce, killServed, KEY, serveWith, stop, Traffic, userEnv, type Served } from '../helpers/served.js';

const REPO = join(import.meta.dirname, '..', '..');
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const AUTH = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `sluice serve …` as a child process run from the sources (tsx). Resolves once it prints its URL. */
function serveFromSources(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Served> {
  const main = pathToFileURL(join(REPO, 'cli', 'main.ts')).href;
  return serveWith(['--import', TSX, '-e', `import(${JSON.stringify(main)}).then((m) => m.main(process.argv.slice(1)))`], cwd, args, userEnv(env));
}

async function post(url: string, batch: unknown[]): Promise<{ status: number; retryAfter: string | null; body: { ok?: boolean; rejected?: Array<{ code: string }>; code?: string } }> {
  const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ batch }) });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as never };
}

const track = (messageId: string, userId: string, t: number) => ({ type: 'track', event: 'Button Clicked', userId, messageId, timestamp: new Date(t).toISOString() });

async function metric(url: string, line: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = line.exec(text);
  return m ? Number(m[1]) : NaN;
}

const describeNats = natsServerPath() === undefined ? describe.skip : describe;
if (natsServerPath() === undefined) console.warn('test/log/jetstream-ingest-node.test.ts: SKIPPED — nats-server is not installed (apt-get install -y nats-server)');

describe('serve --role (config)', () => {
  it('role is all by default, ingest from flag, env or file; ingest needs --log nats://…', () => {
    expect(composeServeConfig({}, {}).role).toBe('all');
    expect(composeServeConfig({ role: 'ingest', log: 'nats://127.0.0.1:4222' }, {}).role).toBe('ingest');
    expect(composeServeConfig({}, { SLUICE_ROLE: 'ingest', SLUICE_LOG: 'nats://127.0.0.1:4222' }).role).toBe('ingest');
    expect(() => composeServeConfig({ role: 'ingest' }, {})).toThrow(expect.objectContaining({ code: 'invalid_option', message: expect.stringContaining('--log nats://') }));
    expect(() => composeServeConfig({ role: 'engine-ish', log: 'nats://127.0.0.1:4222' }, {})).toThrow(expect.objectContaining({ code: 'invalid_option' }));
  });
});

describeNats('ingest nodes on JetStream (3-node cluster)', () => {
  let cluster: NatsCluster | undefined;
  let dir: string;
  beforeAll(async () => {
    cluster = await startNatsCluster({ nodes: 3 });
    dir = mkdtempSync(join(tmpdir(), 'sluice-js-ingest-'));
  }, 60_000);
  afterAll(async () => {
    await killServed();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function freshStream(): Promise<void> {
    const admin = await JetStreamLogs.connect({ servers: cluster!.urls });
    await admin.jsm.streams.delete('SLUICE').catch(() => undefined);
    await admin.close();
  }

  it('a --role ingest node and a serve --log node take traffic for the same users at once: every acknowledged event in silver exactly once, rejects in dlq/', async () => {
    await freshStream();
    const c = cluster!;
    const cwdE = mkdtempSync(join(dir, 'engine-'));
    const cwdI = mkdtempSync(join(dir, 'ingest-'));
    const lake = join(cwdE, 'lake');
    const engineNode = await serveFromSources(cwdE, ['--log', c.urls.join(','), '--engine-mode', 'inline', '--data', join(cwdE, 'data'), '--lake', lake, '--shards', '2', '--workers', '1', '--flush-interval', '1s']);
    const ingestNode = await serveFromSources(cwdI, ['--role', 'ingest', '--log', c.urls.slice(1).join(','), '--data', join(cwdI, 'data'), '--shards', '2', '--admin-key', 'ak_ingest']);
    let stopped = false;
    try {
      // The ingest node has no engine: no live view, no lake, no local log — and no erasure job, so
      // it refuses a request it would have accepted and never run.
      expect((await fetch(`${ingestNode.url}/v1/live`)).status).toBe(404);
      const erase = await postJson(ingestNode.url, '/v1/admin/erasures', { users: ['u1'], reason: 'test' }, 'ak_ingest');
      expect(erase).toMatchObject({ status: 501, body: { ok: false, code: 'erasure_not_supported', message: expect.stringContaining('Erase offline') } });
      const traffic = new Traffic(); // one id/user sequence: both nodes get the same users (u0…u299), so the same shards
      const until = delay(4000);
      const load = Promise.all([traffic.run(ingestNode.url, 'viaI', until), traffic.run(engineNode.url, 'viaE', until)]);
      // A client retrying on the other node (its first answer lost): the same events acked by both, stored twice in the stream.
      const now = Date.now() - 3_600_000;
      const retried = Array.from({ length: 40 }, (_, i) => track(`retry-${i}`, `u${i % 7}`, now + i));
      expect((await post(ingestNode.url, retried)).status).toBe(200);
      expect((await post(engineNode.url, retried)).status).toBe(200);
      for (const e of retried) (traffic.sent.add(e.messageId), traffic.acked.add(e.messageId));
      // Rejected events at the ingest node: dead letters through the shared DLQ subject.
      const bad = [0, 1, 2].map((i) => ({ type: 'track', userId: `bad${i}`, messageId: `bad-${i}`, timestamp: new Date().toISOString() }));
      const rejected = await post(ingestNode.url, bad);
      expect(rejected.status).toBe(200);
      expect(rejected.body.rejected!.map((r) => r.code)).toEqual(['missing_event', 'missing_event', 'missing_event']);
      await load;
      const viaI = [...traffic.acked].filter((id) => id.startsWith('viaI')).length;
      const viaE = [...traffic.acked].filter((id) => id.startsWith('viaE')).length;
      expect(viaI).toBeGreaterThan(0);
      expect(viaE).toBeGreaterThan(0);
      expect(await stop(ingestNode, 'SIGTERM')).toBe(0);
      // The engine learns the other node's records from the stream; wait (bounded) until silver has every acknowledged id.
      for (let i = 0; i < 120; i++) {
        const counts = await silverCounts(lake);
        if ([...traffic.acked].every((id) => counts.has(id))) break;
        await delay(500);
      }
      expect(await stop(engineNode, 'SIGTERM')).toBe(0);
      stopped = true;
      expectExactlyOnce(await silverCounts(lake), traffic);
      expect(existsSync(join(cwdI, 'lake'))).toBe(false);
      expect(existsSync(join(cwdI, 'data', 'log'))).toBe(false);
      const r = await openLakeReader(lake);
      try {
        const dlq = await r.rows<{ code: string; raw: string }>(`SELECT code, raw FROM ${r.rel('dlq')} ORDER BY raw`);
        expect(dlq.map((d) => d.code)).toEqual(['missing_event', 'missing_event', 'missing_event']);
        dlq.forEach((d, i) => expect(d.raw).toContain(`bad-${i}`));
        // Both writers' records were in the same shards.
        const perShard = await r.rows<{ shard: number; n: bigint }>(`SELECT shard, count(DISTINCT substr(event_id, 1, 4)) AS n FROM ${r.rel('bronze_events')} WHERE event_id LIKE 'via%' GROUP BY 1 ORDER BY 1`);
        expect(perShard.map((p) => [p.shard, Number(p.n)])).toEqual([[0, 2], [1, 2]]);
      } finally {
        r.close();
      }
    } finally {
      if (!stopped) {
        await stop(ingestNode, 'SIGKILL').catch(() => undefined);
        await stop(engineNode, 'SIGKILL').catch(() => undefined);
      }
    }
  }, 240_000);

  it('an ingest node answers 503 + Retry-After while the stream holds more than --max-backlog untruncated bytes, and accepts again once engines truncate; /metrics shows it', async () => {
    await freshStream();
    const c = cluster!;
    const cwd = mkdtempSync(join(dir, 'bp-'));
    const node = await serveFromSources(cwd, ['--role', 'ingest', '--log', c.urls.join(','), '--data', join(cwd, 'data'), '--shards', '2', '--max-backlog', '64KiB']);
    try {
      const t0 = Date.now() - 3_600_000;
      // No engine consumes: the stream only grows. Requests are acked until a poll (1 s) sees it past 64 KiB.
      let refused: Awaited<ReturnType<typeof post>> | undefined;
      let acked = 0;
      for (let n = 0; n < 400 && refused === undefined; n++) {
        const batch = Array.from({ length: 50 }, (_, i) => ({ ...track(`bp-${n}-${i}`, `u${i}`, t0 + i), properties: { pad: 'x'.repeat(200) } }));
        const res = await post(node.url, batch);
        if (res.status === 503) refused = res;
        else {
          expect(res.status).toBe(200);
          acked++;
          if (acked > 20) await delay(50); // past the bound: give the poll its second
        }
      }
      expect(refused).toBeDefined();
      expect(refused!.body.code).toBe('overloaded');
      expect(Number(refused!.retryAfter)).toBeGreaterThan(0);
      expect(await metric(node.url, /^sluice_ingest_backpressure_total\{reason="uncommitted"\} (\d+)/m)).toBeGreaterThanOrEqual(1);
      expect(await metric(node.url, /^sluice_jetstream_publish_seconds_count (\d+)/m)).toBeGreaterThanOrEqual(acked);
      expect(await metric(node.url, /^sluice_jetstream_backlog_records\{shard="0"\} (\d+)/m)).toBeGreaterThan(0);
      expect(await metric(node.url, /^sluice_jetstream_backlog_bytes (\d+)/m)).toBeGreaterThan(64 * 1024);
      // The engines truncate (here: a purge of the shard subjects): the next poll lets requests in again.
      const admin = await JetStreamLogs.connect({ servers: c.urls });
      try {
        await admin.jsm.streams.purge('SLUICE', { filter: 'sluice.events.*' });
      } finally {
        await admin.close();
      }
      let status = 503;
      for (let i = 0; i < 50 && status === 503; i++) {
        await delay(200);
        status = (await post(node.url, [track(`after-${i}`, 'u1', t0)])).status;
      }
      expect(status).toBe(200);
    } finally {
      await stop(node, 'SIGTERM').catch(() => undefined);
    }
  }, 120_000);
});
