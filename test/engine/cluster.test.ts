/**
 * Acceptance of issue 10's engine nodes on a REAL 3-node JetStream cluster: two ingest nodes
 * (`serve --role ingest`) and two engine nodes (`sluice engine`), all child processes run from
 * the sources, share one stream and one lake. Traffic goes to both ingest nodes (with a client
 * retry of one batch on the other node, and rejected events); mid-load one NATS server and one
 * engine node are killed with SIGKILL, the NATS server comes back. Then: every acknowledged valid
 * event is in silver exactly once, every rejected one in dlq/, each gold hourly window equals
 * DuckDB's recomputation from silver, and the surviving engine took over the dead node's shards
 * (restored from the lake: the dead node's disk is never read). Skipped only when nats-server
 * is missing.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { goldMetricsSql } from '../../engine/gold-sql.js';
import { reconcileLate } from '../../engine/reconcile.js';
import { openObjectStore } from '../../storage/open-store.js';
import { delay, engineNode, FROM_SOURCES, natsBed, until, view } from '../helpers/engine-node.js';
import { openLakeReader, silverCounts } from '../helpers/lake.js';
import { explainMissing } from '../helpers/missing-events.js';
import { natsServerPath } from '../helpers/nats-cluster.js';
import { expectExactlyOnce, KEY, serveWith, stop, Traffic, userEnv } from '../helpers/served.js';

const AUTH = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;
const SHARDS = 4;

async function post(url: string, batch: unknown[]): Promise<{ status: number; body: { ok?: boolean; rejected?: Array<{ code: string }> } }> {
  const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ batch }) });
  return { status: res.status, body: (await res.json()) as never };
}

const describeNats = natsServerPath() === undefined ? describe.skip : describe;
if (natsServerPath() === undefined) console.warn('test/engine/cluster.test.ts: SKIPPED — nats-server is not installed (apt-get install -y nats-server)');

describeNats('engine nodes on JetStream: leases, failover, gold across nodes (3 NATS servers, 2 ingest, 2 engine nodes)', () => {
  const bed = natsBed('sluice-cluster-');
  const children = bed.children;

  it('kill -9 of a NATS server and of an engine node mid-load: exactly once in silver, rejects in dlq/, gold = DuckDB over silver, the survivor took the dead node’s shards', async () => {
    const c = bed.nats();
    const dir = bed.dir();
    const lake = join(dir, 'lake');
    const engineArgs = (name: string) => ['--log', c.urls.join(','), '--data', join(dir, name, 'data'), '--lake', lake, '--shards', String(SHARDS), '--workers', '1', '--flush-interval', '1s', '--allowed-lateness', '10m', '--lease-ttl', '8s', '--node-id', name];
    const ingestArgs = (name: string, urls: string[]) => ['--role', 'ingest', '--log', urls.join(','), '--data', join(dir, name, 'data'), '--shards', String(SHARDS)];
    const [e1, e2, i1, i2] = await Promise.all([
      engineNode(dir, engineArgs('e1')),
      engineNode(dir, engineArgs('e2')),
      serveWith(FROM_SOURCES, dir, ingestArgs('i1', c.urls), userEnv({})),
      serveWith(FROM_SOURCES, dir, ingestArgs('i2', [...c.urls].reverse()), userEnv({})),
    ]);
    children.push(e1!, e2!, i1!, i2!);
    // Balanced: ceil(4 / 2) shards each.
    await until('two shards per engine node', async () => (await view(e1!)).shards.length === 2 && (await view(e2!)).shards.length === 2, 60_000);
    const e1Shards = (await view(e1!)).shards;
    // The lag gauges are set by the node's next durable-mark sync after it took a shard.
    let e1Metrics = '';
    await until('e1 reports the lag of its shards', async () => {
      e1Metrics = await (await fetch(`${e1!.url}/metrics`)).text();
      return e1Shards.every((s) => e1Metrics.includes(`sluice_engine_consumer_lag_records{shard="${s}"}`));
    }, 30_000);
    for (const s of e1Shards) {
      expect(e1Metrics).toContain(`sluice_engine_lease_held{lease="s${s}"} 1`);
      expect(e1Metrics).toMatch(new RegExp(`sluice_engine_consumer_lag_records\\{shard="${s}"\\} \\d+`));
    }

    const traffic = new Traffic();
    const loadEnds = delay(9000);
    const load = Promise.all([traffic.run(i1!.url, 'viaA', loadEnds), traffic.run(i2!.url, 'viaB', loadEnds)]);
    // A client whose answer was lost retries the batch on the other ingest node: stored twice in the stream, once in silver.
    const t0 = Date.now() - 3_600_000;
    const retried = Array.from({ length: 40 }, (_, i) => ({ type: 'track', event: 'Button Clicked', userId: `u${i}`, messageId: `retry-${i}`, timestamp: new Date(t0 + i).toISOString() }));
    expect((await post(i1!.url, retried)).status).toBe(200);
    expect((await post(i2!.url, retried)).status).toBe(200);
    for (const e of retried) (traffic.sent.add(e.messageId), traffic.acked.add(e.messageId));
    const bad = [0, 1, 2].map((i) => ({ type: 'track', userId: `bad${i}`, messageId: `bad-${i}`, timestamp: new Date().toISOString() }));
    const rejected = await post(i2!.url, bad);
    expect(rejected.body.rejected!.map((r) => r.code)).toEqual(['missing_event', 'missing_event', 'missing_event']);

    await delay(2500);
    const ackedBefore = traffic.acked.size;
    await c.kill(1); // a NATS server
    await delay(1000);
    process.kill(e1!.pid, 'SIGKILL'); // an engine node: its leases expire, its shards move
    expect(await e1!.exited).toBe('SIGKILL');
    await delay(2500);
    await c.restart(1);
    await load;
    expect(traffic.acked.size).toBeGreaterThan(ackedBefore);

    // The survivor takes every shard (the dead node's leases expire after 8 s) and the DLQ and gold leases.
    await until('e2 to own every shard and the dlq and gold leases', async () => {
      const v = await view(e2!);
      return v.shards.length === SHARDS && v.leases.includes('dlq') && v.leases.includes('gold');
    }, 90_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${e2!.stderr().slice(-6000)}`);
    });
    const after = await view(e2!);
    for (const s of e1Shards) expect(after.shards).toContain(s);
    expect(after.leases).toEqual(expect.arrayContaining(['dlq', 'gold']));
    expect(e2!.stderr()).toContain('took over shard');

    let missing: string[] = [];
    await until('silver to hold every acknowledged event', async () => {
      const counts = await silverCounts(lake);
      missing = [...traffic.acked].filter((id) => !counts.has(id));
      return missing.length === 0;
    }, 90_000).catch(async (err: Error) => {
      // Seen in CI (2026-12-04, 2026-12-05), never alone: say where each missing event is and what the nodes did.
      const where = await explainMissing({ lake, missing, servers: c.urls, shards: SHARDS });
      const progress = await fetch(`${e2!.url}/metrics`)
        .then((r) => r.text())
        .then((t) => t.split('\n').filter((l) => /^sluice_engine_(consumer_lag|lease_held|uncommitted|shard)/.test(l)).join('\n'))
        .catch((e: Error) => `metrics: ${e.message}`);
      throw new Error(
        `${err.message}: ${missing.length} of ${traffic.acked.size} acknowledged ids not in silver (${missing.slice(0, 8).join(', ')})\n${where}\n--- e2 /metrics\n${progress}\n` +
          `--- e2 (survivor)\n${e2!.stderr().slice(-12000)}\n--- e1 (killed)\n${e1!.stderr().slice(-6000)}\n--- i1\n${i1!.stderr().slice(-3000)}`,
      );
    });
    expect(await stop(i1!, 'SIGTERM')).toBe(0);
    expect(await stop(i2!, 'SIGTERM')).toBe(0);
    expect(await stop(e2!, 'SIGTERM')).toBe(0); // final checkpoint and gold merge

    expectExactlyOnce(await silverCounts(lake), traffic);
    // Late events of the kill (retried requests) reach gold by reconciliation, as they do on one node.
    const store = await openObjectStore(lake);
    try {
      await reconcileLate(store);
    } finally {
      await store.close();
    }
    const r = await openLakeReader(lake);
    try {
      const dlq = await r.rows<{ code: string; raw: string }>(`SELECT code, raw FROM ${r.rel('dlq')} ORDER BY raw`);
      expect(dlq.map((d) => d.code)).toEqual(['missing_event', 'missing_event', 'missing_event']);
      dlq.forEach((d, i) => expect(d.raw).toContain(`bad-${i}`));
      const windows = await r.rows<{ w: number }>(`SELECT DISTINCT epoch_ms(window_start) AS w FROM ${r.rel('hourly_metrics')} ORDER BY w`);
      expect(windows.length).toBeGreaterThanOrEqual(1);
      const norm = (rows: Array<Record<string, unknown>>): string[] =>
        rows.map((x) => JSON.stringify(Object.fromEntries(Object.entries(x).filter(([k]) => !['year', 'month', 'day', 'hour'].includes(k)).map(([k, v]) => [k, typeof v === 'bigint' ? Number(v) : v instanceof Date ? v.getTime() : v])))).sort();
      for (const { w } of windows) {
        const gold = await r.rows(`SELECT * EXCLUDE (year, month, day, hour) FROM ${r.rel('hourly_metrics')} WHERE epoch_ms(window_start) = ${Number(w)}`);
        const recomputed = await r.rows(goldMetricsSql('hourly', r.rel('events'), Number(w), Number(w) + 3_600_000));
        expect(norm(gold), `hour ${new Date(Number(w)).toISOString()}`).toEqual(norm(recomputed));
      }
    } finally {
      r.close();
    }
  }, 420_000);
});
