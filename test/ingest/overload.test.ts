/**
 * Overload on the real server (`startSluice`, the engine in its own process, real segment logs,
 * the local lake): when ingest acks faster than the engine commits, the uncommitted log is bounded
 * (ingest.maxBacklogBytes) — 503 + Retry-After, the reason in /readyz and /metrics — and every
 * acknowledged event is committed once the load stops; when its processing falls behind the acks
 * by more than ingest.maxLagMs, likewise.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { validateIngestOptions } from '../../ingest/options.js';
import { UncommittedLog } from '../../ingest/uncommitted-log.js';
import { openLakeReader } from '../helpers/lake.js';

const KEY = 'wk_overload';
const AUTH = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;
const CLIENTS = 4;
const BATCH = 100;
/** Bounds of the load loop, per client: requests, and wall time for all of them. */
const MAX_REQUESTS = 300;
const MAX_LOAD_MS = 30_000;

const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

const metric = (text: string, name: string): number => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

interface Refusal {
  retryAfter: string | null;
  code: unknown;
  message: unknown;
}

/**
 * CLIENTS clients post batches of BATCH events (ids `${prefix}c{client}-r{n}-e{i}`) until
 * `maxRefusals` 503s, MAX_REQUESTS each or MAX_LOAD_MS; after each 503 `onRefused` runs, then the
 * client waits `pauseMs`. Returns the acknowledged ids and the refusals; any other answer throws.
 */
async function loadUntilRefused(url: string, prefix: string, maxRefusals: number, pauseMs: number, onRefused: () => Promise<void>): Promise<{ acked: Set<string>; refusals: Refusal[] }> {
  const acked = new Set<string>();
  const refusals: Refusal[] = [];
  const deadline = Date.now() + MAX_LOAD_MS;
  const client = async (c: number): Promise<void> => {
    for (let n = 0; n < MAX_REQUESTS && Date.now() < deadline && refusals.length < maxRefusals; n++) {
      const now = Date.now();
      const batch = Array.from({ length: BATCH }, (_, i) => ({
        type: 'track',
        event: 'Button Clicked',
        userId: `u${(n * BATCH + i) % 97}`,
        messageId: `${prefix}c${c}-r${n}-e${i}`,
        timestamp: new Date(now - 1000).toISOString(),
        properties: { pad: 'x'.repeat(64) },
      }));
      const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: AUTH, 'content-type': 'application/json' }, body: JSON.stringify({ batch }) });
      const body = (await res.json()) as { ok?: boolean; code?: unknown; message?: unknown };
      if (res.status === 200 && body.ok === true) for (const e of batch) acked.add(e.messageId);
      else if (res.status === 503) {
        refusals.push({ retryAfter: res.headers.get('retry-after'), code: body.code, message: body.message });
        await onRefused();
        await new Promise((r) => setTimeout(r, pauseMs));
      } else throw new Error(`unexpected answer ${res.status}: ${JSON.stringify(body)}`);
    }
  };
  await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
  return { acked, refusals };
}

/** One more event, acknowledged (200) or not: ingest accepts again. */
async function postOne(url: string, messageId: string): Promise<number> {
  const res = await fetch(`${url}/v1/batch`, {
    method: 'POST',
    headers: { authorization: AUTH, 'content-type': 'application/json' },
    body: JSON.stringify({ batch: [{ type: 'track', event: 'Button Clicked', userId: 'u1', messageId, timestamp: new Date().toISOString() }] }),
  });
  return res.status;
}

/** Every acknowledged id exactly once in the lake's silver (DuckDB over the files), and nothing else: a refused request left no event. */
async function expectExactlyOnce(lakeDir: string, acked: ReadonlySet<string>): Promise<void> {
  const lake = await openLakeReader(lakeDir);
  try {
    const ids = await lake.rows<{ message_id: string; n: bigint }>(`SELECT event_id AS message_id, count(*) AS n FROM ${lake.rel('events')} GROUP BY 1`);
    const counts = new Map(ids.map((r) => [r.message_id, Number(r.n)]));
    const missing = [...acked].filter((id) => counts.get(id) !== 1);
    expect(missing.slice(0, 10), `${missing.length} of ${acked.size} acknowledged ids not exactly once in silver`).toEqual([]);
    expect(counts.size, 'silver holds events that were not acknowledged').toBe(acked.size);
  } finally {
    lake.close();
  }
}

describe('overload settings', () => {
  it.each([
    ['flag', { maxBacklog: '64MiB', rateLimit: '500', maxLag: '750ms' }, {}],
    ['environment', {}, { SLUICE_MAX_BACKLOG: '64MiB', SLUICE_RATE_LIMIT: '500', SLUICE_MAX_LAG: '750ms' }],
  ])('--max-backlog, --rate-limit and --max-lag from the %s', (_, flags, env) => {
    const c = composeServeConfig(flags, env);
    expect(c.ingest.maxBacklogBytes).toBe(64 * 2 ** 20);
    expect(c.ingest.rateLimit).toEqual({ eventsPerSecond: 500, burst: 1000 });
    const o = validateIngestOptions({ writeKeys: [{ key: 'k' }], ...c.ingest });
    expect(o.maxBacklogBytes).toBe(64 * 2 ** 20);
    expect(o.maxLagMs).toBe(750);
    expect(validateIngestOptions({ writeKeys: [{ key: 'k' }] }).maxLagMs).toBe(5000);
    expect(validateIngestOptions({ writeKeys: [{ key: 'k' }], ...composeServeConfig({ maxLag: '0' }, {}).ingest }).maxLagMs).toBe(0);
  });

  it('pins the messages of invalid bounds', () => {
    expect(() => composeServeConfig({ rateLimit: '0' }, {})).toThrow('--rate-limit must be a number of events per second > 0, got "0"');
    expect(() => validateIngestOptions({ writeKeys: [{ key: 'k' }], maxBacklogBytes: -1 })).toThrow('maxBacklogBytes must be a whole number of bytes ≥ 0 (0 = no bound), got -1');
    expect(() => validateIngestOptions({ writeKeys: [{ key: 'k' }], maxLagMs: 1.5 })).toThrow('maxLagMs must be a whole number of ms ≥ 0 (0 = no bound), got 1.5');
  });

  it('counts durable records until the engine commits past them (its truncation), and what was in the log at start until the first commit past it', () => {
    const u = new UncommittedLog(2);
    u.existing(0, 9, 1000);
    u.durable(0, 10, 5, 84);
    u.durable(1, 0, 3, 34);
    u.durable(0, 11, 2, 184);
    expect([u.bytes, u.events]).toEqual([1000 + 100 + 50 + 200, 10]);
    u.committed(0, 11);
    expect([u.bytes, u.events]).toEqual([50 + 200, 5]);
    u.committed(1, 1);
    u.committed(0, 12);
    expect([u.bytes, u.events]).toEqual([0, 0]);
    u.committed(0, 5); // a lower mark changes nothing
    expect(u.bytes).toBe(0);
  });

  it('tells how long the oldest acknowledged record the engine has not processed has waited, over the shards it counts', () => {
    const u = new UncommittedLog(3);
    u.existing(0, 9, 1000, 1_000); // records left by an earlier run: acknowledged no later than the start
    u.durable(0, 10, 5, 84, 2_000);
    u.durable(0, 11, 5, 84, 3_000);
    u.durable(1, 0, 3, 34, 2_500);
    u.durable(1, 1, 3, 34, 4_000);
    expect(u.lagMs([-1, -1, -1], 5_000)).toBe(4_000); // nothing processed: the oldest is the start block
    expect(u.lagMs([9, -1, null], 5_000)).toBe(3_000); // shard 0 past its start block: its next record is the oldest
    expect(u.lagMs([10, -1, -1], 5_000)).toBe(2_500); // now shard 1's first record is
    expect(u.lagMs([10, 0, -1], 5_000)).toBe(2_000);
    expect(u.lagMs([11, 1, -1], 5_000)).toBe(0); // caught up (shard 2 never had a record)
    expect(u.lagMs([null, null, null], 5_000)).toBe(0); // no shard counted (the engine is down)
    // A commit drops the records below it; the lag goes on from what is left.
    u.committed(0, 11);
    expect(u.lagMs([10, 1, 0], 5_000)).toBe(2_000);
    expect(u.lagMs([11, 1, 0], 5_000)).toBe(0);
  });
});

describe('overload: the uncommitted log is bounded', () => {
  it('answers 503 + Retry-After past --max-backlog while the engine has not committed, names it in /readyz and /metrics, and commits every acknowledged event after the load', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-overload-'));
    roots.push(root);
    // A tiny bound and a slow engine (one checkpoint every 8 s): the load passes the bound between checkpoints.
    const config = composeServeConfig(
      { port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 2, workers: 1, flushInterval: '8s', maxBacklog: '64KiB', engineMode: 'process', writeKeys: [KEY] },
      {},
    );
    const sluice = await startSluice(config, pino({ level: 'warn' }));
    let readyWhileOver: { status: number; body: string } | undefined;
    try {
      const { acked, refusals } = await loadUntilRefused(sluice.url, '', 10, 100, async () => {
        if (readyWhileOver !== undefined) return;
        const r = await fetch(`${sluice.url}/readyz`);
        readyWhileOver = { status: r.status, body: await r.text() };
      });

      expect(refusals.length, 'no 503 within the load bound').toBeGreaterThan(0);
      for (const r of refusals) {
        expect(r.code).toBe('overloaded');
        expect(String(r.message)).toMatch(/behind committing \(\d+ MiB of acknowledged events not yet committed, bound 0 MiB\)/);
        expect(Number(r.retryAfter)).toBeGreaterThanOrEqual(1);
      }
      expect(readyWhileOver?.status).toBe(503);
      expect(readyWhileOver?.body).toMatch(/behind committing/);
      const during = await (await fetch(`${sluice.url}/metrics`)).text();
      expect(metric(during, 'sluice_ingest_backpressure_total\\{reason="uncommitted"\\}')).toBeGreaterThanOrEqual(refusals.length);

      // Load stopped: the engine's next checkpoint commits everything, and ingest accepts again.
      let uncommitted = NaN;
      for (const stop = Date.now() + 60_000; Date.now() < stop; ) {
        uncommitted = metric(await (await fetch(`${sluice.url}/metrics`)).text(), 'sluice_log_uncommitted_bytes');
        if (uncommitted === 0) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      expect(uncommitted).toBe(0);
      expect((await fetch(`${sluice.url}/readyz`)).status).toBe(200);

      // Committed means in silver, before any shutdown drain.
      await expectExactlyOnce(join(root, 'lake'), acked);
      expect(await postOne(sluice.url, 'after')).toBe(200);
    } finally {
      await sluice.close();
    }
  }, 120_000);
});

describe('overload: the engine may not fall behind the acks by more than --max-lag', () => {
  it('answers 503 + Retry-After while the running engine has not processed what was acknowledged longer ago than the bound, accepts again once it has, and commits every acknowledged event', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-lag-'));
    roots.push(root);
    // A bound below the engine's least delay (it lingers 200 ms for more records, reports every 200 ms): every burst passes it.
    const config = composeServeConfig(
      { port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 2, workers: 1, flushInterval: '1s', maxLag: '1ms', engineMode: 'process', writeKeys: [KEY] },
      {},
    );
    const sluice = await startSluice(config, pino({ level: 'warn' }));
    let lagWhileRefused = NaN;
    let acked = new Set<string>();
    try {
      const load = await loadUntilRefused(sluice.url, 'lag-', 20, 50, async () => {
        const lagNow = metric(await (await fetch(`${sluice.url}/metrics`)).text(), 'sluice_engine_lag_seconds');
        lagWhileRefused = Number.isNaN(lagWhileRefused) ? lagNow : Math.max(lagWhileRefused, lagNow);
      });
      acked = load.acked;
      const refusals = load.refusals;

      expect(refusals.length, 'no 503 within the load bound').toBeGreaterThan(0);
      expect(acked.size).toBeGreaterThan(0);
      for (const r of refusals) {
        expect(r.code).toBe('overloaded');
        expect(String(r.message)).toMatch(/^Sluice is behind \(its engine is processing events acknowledged \d+\.\d s ago, bound 0\.001 s\); retry later$/);
        expect(r.retryAfter).toBe('1');
      }
      expect(lagWhileRefused, 'sluice_engine_lag_seconds while refused').toBeGreaterThan(0);
      expect(metric(await (await fetch(`${sluice.url}/metrics`)).text(), 'sluice_ingest_backpressure_total\\{reason="lag"\\}')).toBeGreaterThanOrEqual(refusals.length);

      // The load stopped: the engine catches up, the lag goes to 0 and ingest accepts again.
      let lag = NaN;
      for (const stop = Date.now() + 30_000; Date.now() < stop; ) {
        lag = metric(await (await fetch(`${sluice.url}/metrics`)).text(), 'sluice_engine_lag_seconds');
        if (lag === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(lag).toBe(0);
      expect(await postOne(sluice.url, 'lag-after')).toBe(200);
      acked.add('lag-after');
    } finally {
      await sluice.close();
    }
    // Every acknowledged event exactly once in silver (the stop drains and commits).
    await expectExactlyOnce(join(root, 'lake'), acked);
  }, 120_000);
});
