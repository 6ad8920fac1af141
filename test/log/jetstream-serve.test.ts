/**
 * `sluice serve --log nats://…` on a REAL 3-node JetStream cluster: ingest appends every shard
 * record and dead letter to the stream (ack after the PubAck), the inline engine consumes them,
 * and after the SIGTERM path (`close()`: stop accepting, drain, flush, commit) every acknowledged
 * event is in silver exactly once. In-process (`startSluice`, what the SIGTERM handler calls),
 * so the test runs the sources without a dist/ build. Skipped only when nats-server is missing.
 */
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { JetStreamLogs } from '../../log/jetstream-log.js';
import { openLakeReader } from '../helpers/lake.js';
import { explainMissing } from '../helpers/missing-events.js';
import { natsServerPath, startNatsCluster, type NatsCluster } from '../helpers/nats-cluster.js';
import { expectExactlyOnce, killServed, KEY, serveWith, stop, Traffic, userEnv, type Served } from '../helpers/served.js';

const REPO = join(import.meta.dirname, '..', '..');
/** tsx's loader by absolute URL: the child runs in another working directory. */
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `sluice serve …` as a child process run from the sources (tsx): no dist/ build needed. Resolves once it prints its URL. */
function serveFromSources(cwd: string, args: string[], env: Record<string, string> = {}): Promise<Served> {
  const main = pathToFileURL(join(REPO, 'cli', 'main.ts')).href;
  return serveWith(['--import', TSX, '-e', `import(${JSON.stringify(main)}).then((m) => m.main(process.argv.slice(1)))`], cwd, args, userEnv(env));
}

const describeNats = natsServerPath() === undefined ? describe.skip : describe;
if (natsServerPath() === undefined) console.warn('test/log/jetstream-serve.test.ts: SKIPPED — nats-server is not installed (apt-get install -y nats-server)');

describeNats('sluice serve --log nats://… (3-node JetStream, inline engine)', () => {
  let cluster: NatsCluster | undefined;
  let dir: string;
  beforeAll(async () => {
    cluster = await startNatsCluster({ nodes: 3 });
    dir = mkdtempSync(join(tmpdir(), 'sluice-js-serve-'));
  }, 60_000);
  afterAll(async () => {
    await killServed();
    await cluster?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('acks after the PubAck, and after the SIGTERM path every acknowledged event is in silver exactly once', async () => {
    const data = join(dir, 'data1');
    const lake = join(dir, 'lake1');
    const config = composeServeConfig(
      { log: cluster!.urls.join(','), data, lake, shards: 2, workers: 1, flushInterval: '1s', port: 0, writeKeys: [KEY] },
      {},
    );
    expect(config.engineMode).toBe('inline');
    expect(config.logServers).toEqual(cluster!.urls);
    const sluice = await startSluice(config, pino({ level: 'warn' }, pino.destination(2)));
    const traffic = new Traffic();
    let closed = false;
    try {
      const load = traffic.run(sluice.url, 'js', new Promise((r) => setTimeout(r, 4000)));
      // Three events ingest rejects (a track call without `event`): dead letters through the JetStream DLQ subject.
      const res = await fetch(`${sluice.url}/v1/batch`, {
        method: 'POST',
        headers: { authorization: `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`, 'content-type': 'application/json' },
        body: JSON.stringify({ batch: [0, 1, 2].map((i) => ({ type: 'track', userId: `bad${i}`, messageId: `bad-${i}`, timestamp: new Date().toISOString() })) }),
      });
      const body = (await res.json()) as { accepted: number; rejected: Array<{ code: string }> };
      expect(res.status).toBe(200);
      expect(body.rejected.map((r) => r.code)).toEqual(['missing_event', 'missing_event', 'missing_event']);
      await load;
      expect(traffic.acked.size).toBeGreaterThan(0);
      await sluice.close(); // what SIGTERM runs
      closed = true;
    } finally {
      if (!closed) await sluice.close();
    }
    // The records went to JetStream, not to local log files.
    expect(existsSync(join(data, 'log', 'shard-0'))).toBe(false);
    const js = await JetStreamLogs.connect({ servers: cluster!.urls });
    try {
      const info = await js.jsm.streams.info('SLUICE', { subjects_filter: 'sluice.events.*' });
      expect(info.config.num_replicas).toBe(3);
      expect(Object.keys(info.state.subjects ?? {}).sort()).toEqual(['sluice.events.s0', 'sluice.events.s1']);
      const dlqInfo = await js.jsm.streams.info('SLUICE', { subjects_filter: 'sluice.dlq' });
      expect(dlqInfo.state.subjects?.['sluice.dlq']).toBe(1); // flushed and truncated: the newest record stays
    } finally {
      await js.close();
    }
    const r = await openLakeReader(lake);
    try {
      const counts = new Map<string, number>();
      for (const row of await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`)) {
        counts.set(row.event_id, Number(row.n));
      }
      expectExactlyOnce(counts, traffic);
      const dlq = await r.rows<{ code: string; raw: string }>(`SELECT code, raw FROM ${r.rel('dlq')} ORDER BY raw`);
      expect(dlq.map((d) => d.code)).toEqual(['missing_event', 'missing_event', 'missing_event']);
      dlq.forEach((d, i) => expect(d.raw).toContain(`bad-${i}`));
    } finally {
      r.close();
    }
  }, 120_000);

  it('kill -9 of serve --log mid-load before any checkpoint, restart: the engine replays everything from JetStream, every acknowledged event in silver exactly once', async () => {
    const c = cluster!;
    const admin = await JetStreamLogs.connect({ servers: c.urls });
    await admin.jsm.streams.delete('SLUICE').catch(() => undefined); // the earlier tests' records are not this lake's
    await admin.close();
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    const args = ['--log', c.urls.join(','), '--data', join(cwd, 'data'), '--lake', join(cwd, 'lake'), '--shards', '2', '--workers', '1', '--flush-interval', '1h'];
    const traffic = new Traffic();
    const first = await serveFromSources(cwd, args);
    const killed = delay(2500).then(() => stop(first, 'SIGKILL'));
    await traffic.run(first.url, 'life0', killed);
    expect(await killed).toBe('SIGKILL');
    const acked = traffic.acked.size;
    expect(acked).toBeGreaterThan(0);
    // No checkpoint ran (1 h interval): everything acknowledged so far must come back from the stream.
    const last = await serveFromSources(cwd, args, { SLUICE_LOG_LEVEL: 'info' });
    await traffic.run(last.url, 'life1', delay(1500));
    expect(traffic.acked.size).toBeGreaterThan(acked);
    expect(await stop(last, 'SIGTERM')).toBe(0);
    expect(last.stderr()).toContain('replayed log records after the last checkpoint');
    const r = await openLakeReader(join(cwd, 'lake'));
    try {
      const counts = new Map<string, number>();
      for (const row of await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`)) {
        counts.set(row.event_id, Number(row.n));
      }
      expectExactlyOnce(counts, traffic);
    } finally {
      r.close();
    }
  }, 180_000);

  it('kill -9 of the stream leader mid-load: ingest keeps acknowledging through the quorum, every acknowledged event in silver exactly once', async () => {
    const c = cluster!;
    const admin = await JetStreamLogs.connect({ servers: c.urls });
    await admin.jsm.streams.delete('SLUICE').catch(() => undefined); // the first test's records are not this lake's
    await admin.close();
    const data = join(dir, 'data2');
    const lake = join(dir, 'lake2');
    const config = composeServeConfig({ log: c.urls.join(','), data, lake, shards: 2, workers: 1, flushInterval: '1s', port: 0, writeKeys: [KEY] }, {});
    const sluice = await startSluice(config, pino({ level: 'warn' }, pino.destination(2)));
    const traffic = new Traffic();
    let killed: number | undefined;
    let ackedBeforeKill = 0;
    try {
      const info = await (async () => {
        const a = await JetStreamLogs.connect({ servers: c.urls });
        try {
          return await a.jsm.streams.info('SLUICE');
        } finally {
          await a.close();
        }
      })();
      killed = Number(info.cluster!.leader!.slice(1)) - 1;
      const load = traffic.run(sluice.url, 'jsk', new Promise((r) => setTimeout(r, 6000)));
      await new Promise((r) => setTimeout(r, 2000));
      ackedBeforeKill = traffic.acked.size;
      await c.kill(killed);
      await load;
      expect(ackedBeforeKill).toBeGreaterThan(0);
      expect(traffic.acked.size).toBeGreaterThan(ackedBeforeKill); // acks went on without the killed node
      await sluice.close();
    } finally {
      await sluice.close().catch(() => undefined);
      if (killed !== undefined && !c.running(killed)) {
        await c.restart(killed);
        await c.waitForMetaLeader();
      }
    }
    const r = await openLakeReader(lake);
    try {
      const counts = new Map<string, number>();
      for (const row of await r.rows<{ event_id: string; n: bigint }>(`SELECT event_id, count(*) AS n FROM ${r.rel('events')} GROUP BY 1`)) {
        counts.set(row.event_id, Number(row.n));
      }
      // Failed once in CI (stop 28: 84 acknowledged events absent) and never since: if it recurs, say where they are.
      const missing = [...traffic.acked].filter((id) => !counts.has(id));
      if (missing.length > 0) throw new Error(`${missing.length} of ${traffic.acked.size} acknowledged ids not in silver\n${await explainMissing({ lake, missing, servers: c.urls, shards: 2 })}`);
      expectExactlyOnce(counts, traffic);
    } finally {
      r.close();
    }
  }, 180_000);
});
