/**
 * Issue 14 items 7 and the Parquet bound, through the real server, pool, LMDB and local lake:
 * (a) checkpoints that fail for a while — injected at the object store's file layer: a plain
 *     file where the store's staging directory must be (every stage fails), then one where its
 *     commit records go (the LMDB transaction commits, the publish fails) — leave the process up,
 *     /readyz and /metrics report it, one log line per episode, and once the obstacle is gone
 *     every acknowledged event is in silver exactly once;
 * (b) a shard buffering more rows than maxRowsPerParquetCall commits several files, each within
 *     the bound, every row exactly once.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startSluice } from '../../cli/serve.js';
import { validateEngineOptions, type EngineOptions } from '../../engine/options.js';
import { shardOfUser } from '../../common/hash.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { openLakeReader } from '../helpers/lake.js';
import { captureLogger, eventually, exactlyOnce, HOUR0, metric, postEvents, readyz, silverCounts } from './fixtures/engine-http.js';

const KEY = 'wk-failures';
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempRoot(): { data: string; lake: string } {
  const root = mkdtempSync(join(tmpdir(), 'sluice-ckpt-fail-'));
  dirs.push(root);
  return { data: join(root, 'data'), lake: join(root, 'lake') };
}

function engine(d: { data: string; lake: string }, extra: Partial<EngineOptions> = {}): EngineOptions {
  return validateEngineOptions({ dataDir: d.data, lake: d.lake, shards: 2, workers: 2, flushIntervalMs: 150, reconcileIntervalMs: 0, compactAfterMs: 0, retryBaseMs: 40, retryMaxMs: 300, ...extra });
}

describe('checkpoint failures', () => {
  it('(a) a checkpoint failing K times keeps the process up, is reported, and loses or doubles nothing', async () => {
    const d = tempRoot();
    // The obstacle: a regular file where the store puts staged objects (stage → ENOTDIR).
    mkdirSync(join(d.lake, '_sluice'), { recursive: true });
    const staging = join(d.lake, '_sluice', 'staging');
    writeFileSync(staging, 'not a directory');
    const { logger, lines } = captureLogger();
    const sluice = await startSluice({ host: '127.0.0.1', port: 0, writeKeys: [KEY], engine: engine(d), ingest: {} }, logger);
    const acked = new Set<string>();
    try {
      for (let r = 0; r < 3; r++) {
        const p = await postEvents(sluice.url, KEY, `a${r}`, 60);
        expect(p.status).toBe(200);
        p.ids.forEach((id) => acked.add(id));
      }
      const K = 4;
      expect(await eventually(async () => (await metric(sluice.url, 'sluice_engine_checkpoint_failures_total', { code: 'store_stage_failed' })) >= K)).toBe(true);
      const notReady = await readyz(sluice.url);
      expect(notReady.status).toBe(503);
      expect(notReady.reasons.some((r) => /checkpoint of shard-\d failing .*store_stage_failed/.test(r))).toBe(true);
      expect(await metric(sluice.url, 'sluice_engine_checkpoint_consecutive_failures')).toBeGreaterThan(0);
      expect(await metric(sluice.url, 'sluice_engine_checkpoint_failing')).toBeGreaterThan(0);
      // Still serving: ingest acknowledges while checkpoints fail.
      const during = await postEvents(sluice.url, KEY, 'a-during', 40);
      expect(during.status).toBe(200);
      during.ids.forEach((id) => acked.add(id));

      // Phase 2: staging works again, but commit records cannot be written: the LMDB transaction commits, the publish fails.
      rmSync(staging);
      const commits = join(d.lake, '_sluice', 'commits');
      rmSync(commits, { recursive: true, force: true });
      writeFileSync(commits, 'not a directory');
      const p2 = await postEvents(sluice.url, KEY, 'a-publish', 40);
      expect(p2.status).toBe(200);
      p2.ids.forEach((id) => acked.add(id));
      expect(await eventually(async () => (await metric(sluice.url, 'sluice_engine_checkpoint_failures_total', { code: 'store_write_failed' })) >= K)).toBe(true);

      // The failure stops: everything recovers by itself.
      rmSync(commits);
      expect(await eventually(async () => (await readyz(sluice.url)).status === 200)).toBe(true);
      expect(await metric(sluice.url, 'sluice_engine_checkpoint_consecutive_failures')).toBe(0);
      const after = await postEvents(sluice.url, KEY, 'a-after', 40);
      expect(after.status).toBe(200);
      after.ids.forEach((id) => acked.add(id));
    } finally {
      await sluice.close();
    }
    // One log line per failure episode and target, not one per retry.
    const failing = lines.filter((l) => typeof l.msg === 'string' && / failing \(/.test(l.msg));
    const recovered = lines.filter((l) => typeof l.msg === 'string' && / recovered after /.test(l.msg));
    expect(failing.length).toBeGreaterThan(0);
    expect(recovered.length).toBe(failing.length);
    const perTarget = new Map<string, number>();
    for (const l of failing) perTarget.set(String(l.target), (perTarget.get(String(l.target)) ?? 0) + 1);
    for (const n of perTarget.values()) expect(n).toBeLessThanOrEqual(2); // one episode per obstacle phase
    const { missing, doubled } = exactlyOnce(acked, await silverCounts(d.lake));
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
  }, 90_000);

  it('(b) a shard buffering more rows than maxRowsPerParquetCall commits several bounded files, every row once', async () => {
    const d = tempRoot();
    const MAX = 50;
    const sluice = await startSluice(
      { host: '127.0.0.1', port: 0, writeKeys: [KEY], engine: engine(d, { shards: 1, workers: 1, flushIntervalMs: 60_000, maxRowsPerParquetCall: MAX }), ingest: {} },
      captureLogger().logger,
    );
    const acked = new Set<string>();
    // Metrics are process-wide (prom-client's registry): compare with what (a) left.
    const failuresBefore = await metric(sluice.url, 'sluice_engine_checkpoint_failures_total');
    try {
      for (let r = 0; r < 4; r++) {
        const p = await postEvents(sluice.url, KEY, `b${r}`, 100);
        expect(p.status).toBe(200);
        p.ids.forEach((id) => acked.add(id));
      }
      // One checkpoint holds all 400 rows of the hour: the shard must split them.
      await sluice.coordinator!.drain();
      await sluice.coordinator!.checkpointNow();
      expect(await metric(sluice.url, 'sluice_engine_checkpoint_failures_total')).toBe(failuresBefore);
    } finally {
      await sluice.close();
    }
    const r = await openLakeReader(d.lake);
    try {
      const files = r.files('events');
      expect(files.length).toBeGreaterThanOrEqual(400 / MAX);
      expect(files.every((f) => /part-s0-\d+-\d+-\d+\.parquet$/.test(f))).toBe(true);
      const perFile = await r.rows<{ filename: string; n: bigint }>(`SELECT filename, count(*) AS n FROM read_parquet([${files.map((f) => `'${f}'`).join(',')}], filename = true) GROUP BY filename`);
      expect(perFile.every((x) => Number(x.n) <= MAX)).toBe(true);
      const bronze = r.files('bronze_events');
      expect(bronze.length).toBeGreaterThanOrEqual(400 / MAX);
    } finally {
      r.close();
    }
    const { missing, doubled } = exactlyOnce(acked, await silverCounts(d.lake));
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
  }, 60_000);

  it('(e) a failure that cannot be retried stops only its shard, reported in /readyz and /metrics; the other shard goes on', async () => {
    const d = tempRoot();
    const sluice = await startSluice({ host: '127.0.0.1', port: 0, writeKeys: [KEY], engine: engine(d), ingest: {} }, captureLogger().logger);
    const acked = new Set<string>();
    try {
      const users = Array.from({ length: 40 }, (_, i) => `user-${i}`);
      const first = await postEvents(sluice.url, KEY, 'e0', 40, users.length);
      expect(first.status).toBe(200);
      first.ids.forEach((id) => acked.add(id));
      await sluice.coordinator!.drain();
      // A broken invariant (a bug, not the data): shard 0 gets an offset far past its log end.
      const b = new IngestBatchBuilder(4);
      b.push({ event_id: 'gap', user_id: 'u', anonymous_id: null, event_type: 't', event_time: HOUR0, received_at: HOUR0, device_type: null, os: null, app_version: null, country: null, source: 's', properties: null, raw: null });
      sluice.coordinator!.submit(0, 1_000_000, b.toIPC(), 1);
      expect(await eventually(async () => (await metric(sluice.url, 'sluice_engine_shard_stopped', { shard: '0' })) === 1)).toBe(true);
      const r = await readyz(sluice.url);
      expect(r.status).toBe(503);
      expect(r.reasons.some((x) => /shard-0 stopped \(offset_gap\)/.test(x))).toBe(true);
      expect(sluice.coordinator!.stoppedShards).toEqual([0]);
      // Shard 1's users keep committing; shard 0's events are acknowledged into its log for a restart.
      const p = await postEvents(sluice.url, KEY, 'e1', 40, users.length);
      expect(p.status).toBe(200);
      p.ids.forEach((id) => acked.add(id));
      await sluice.coordinator!.drain();
      await sluice.coordinator!.checkpointNow();
    } finally {
      await sluice.close();
    }
    const counts = await silverCounts(d.lake);
    const onShard1 = [...acked].filter((id) => shardOfUser(`user-${Number(id.split('-')[1]) % 40}`, 2) === 1);
    expect(onShard1.length).toBeGreaterThan(0);
    const { missing, doubled } = exactlyOnce(onShard1, counts);
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
  }, 60_000);
});
