/**
 * kill -9 the engine at random points while it processes and flushes, several rounds, then let
 * it finish: silver and gold must equal a run without crashes, row for row.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openShardLogs, SegmentLog } from '../../log/segment-log.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { normalizeSegment } from '../../ingest/normalize.js';
import { shardOfUser } from '../../common/hash.js';
import { TrafficGenerator } from '../../loadgen/generator.js';
import { reconcileLate } from '../../engine/reconcile.js';
import { openObjectStore } from '../../storage/open-store.js';
import { openLakeReader } from '../helpers/lake.js';

const SHARDS = 3;
const root = mkdtempSync(join(tmpdir(), 'sluice-engine-crash-'));
afterAll(() => {
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

/** Fills a data directory's shard logs with generated traffic, as ingest would have. */
async function prepareLogs(dataDir: string): Promise<number> {
  const logs = await openShardLogs(join(dataDir, 'log'), SHARDS);
  const dlq = await SegmentLog.open({ dir: join(dataDir, 'log', 'dlq'), shard: -1 });
  const gen = new TrafficGenerator({ seed: 3, users: 400, startTime: Date.UTC(2026, 5, 1), stepMs: 900, duplicateRate: 0.05, jitterMs: 20_000, lateRate: 0.02, tooLateRate: 0.01 });
  let events = 0;
  for (let request = 0; request < 120; request++) {
    const receivedAt = Date.UTC(2026, 5, 1) + request * 90_000;
    const byShard = new Map<number, IngestBatchBuilder>();
    for (let i = 0; i < 100; i++) {
      const r = normalizeSegment(gen.next().message, undefined, undefined, { writeKey: 'k', source: 'segment', receivedAt: receivedAt + 86_400_000, maxFutureSkewMs: 600_000, maxEventBytes: 32_768, pii: { hash: [], drop: [], salt: '' } });
      if (!r.ok) continue;
      const s = shardOfUser(r.event.user_id, SHARDS);
      if (!byShard.has(s)) byShard.set(s, new IngestBatchBuilder(100));
      byShard.get(s)!.push(r.event);
      events++;
    }
    for (const [s, b] of byShard) await logs[s]!.append(b.toIPC());
  }
  for (const l of logs) await l.close();
  await dlq.close();
  return events;
}

function runEngine(dataDir: string, lake: string, killAfterMs?: number): Promise<'done' | 'killed'> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, '..', 'fixtures', 'engine-only.ts'), dataDir, lake, String(SHARDS)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const timer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
    child.once('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (signal === 'SIGKILL') resolve('killed');
      else if (code === 0 && out.includes('done')) resolve('done');
      else reject(new Error(`engine exited with ${code} ${signal}`));
    });
  });
}

async function snapshot(lake: string): Promise<Record<string, string[]>> {
  const store = await openObjectStore(lake);
  await reconcileLate(store);
  await store.close();
  const r = await openLakeReader(lake);
  try {
    const rows = async (sql: string): Promise<string[]> => (await r.rows(sql)).map((x) => JSON.stringify(x, (_k, v) => (typeof v === 'bigint' ? Number(v) : v)));
    return {
      silver: await rows(`SELECT * EXCLUDE (year, month, day, hour) FROM ${r.rel('events')} ORDER BY event_id`),
      sessions: await rows(`SELECT * EXCLUDE (year, month, day) FROM ${r.rel('sessions')} ORDER BY session_id`),
      hourly: await rows(`SELECT * EXCLUDE (year, month, day, hour) FROM ${r.rel('hourly_metrics')} ORDER BY ALL`),
      bronze: await rows(`SELECT event_id, shard, log_offset FROM ${r.rel('bronze_events')} ORDER BY ALL`),
    };
  } finally {
    r.close();
  }
}

describe('engine crash safety', () => {
  it('silver and gold after kill -9 rounds equal a run without crashes', async () => {
    const pristine = join(root, 'pristine');
    const events = await prepareLogs(pristine);
    expect(events).toBeGreaterThan(10_000);
    const clean = join(root, 'clean');
    const crashy = join(root, 'crashy');
    cpSync(pristine, clean, { recursive: true });
    cpSync(pristine, crashy, { recursive: true });

    const started = Date.now();
    expect(await runEngine(clean, join(clean, 'lake'))).toBe('done');
    const cleanMs = Date.now() - started;
    // Kill points as fractions of the clean run (fixed times stopped killing anything once the
    // engine got faster than the first): early (during replay), middle, late (final flushes).
    let kills = 0;
    for (const at of [0.45, 0.6, 0.75, 0.9].map((f) => Math.round(f * cleanMs))) {
      if ((await runEngine(crashy, join(crashy, 'lake'), at)) === 'killed') kills++;
    }
    expect(await runEngine(crashy, join(crashy, 'lake'))).toBe('done');
    expect(kills).toBeGreaterThan(0);

    const a = await snapshot(join(clean, 'lake'));
    const b = await snapshot(join(crashy, 'lake'));
    expect(a.silver.length).toBeGreaterThan(9_000);
    expect(a.hourly.length).toBeGreaterThan(0);
    expect(a.sessions.length).toBeGreaterThan(0);
    for (const k of Object.keys(a)) expect(b[k], k).toEqual(a[k]);
  }, 180_000);
});
