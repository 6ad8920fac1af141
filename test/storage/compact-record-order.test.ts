/**
 * Commit records are folded in time order, so a compaction's record must come after the records
 * that added its inputs. `compactLake` took its clock at the start of the run: a flush committed
 * between that and the listing of the records became an input whose add sorted after its removal,
 * and `sluice quality` then reported it as a missing file for ever (exploratory round 7, under CPU
 * contention). Checked both ways on a real local lake: a compaction run with a clock older than its
 * inputs' records writes its record after them, and a lake holding such an inverted record (as
 * written before the fix) folds to the merged file alone, which quality's files check accepts.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runQualityChecks } from '../../analytics/quality.js';
import { partKey, partName } from '../../common/lake-layout.js';
import { listCommitRecords, liveFiles, writeCommitRecord } from '../../storage/commit-record.js';
import { compactPartition } from '../../storage/compact.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { encodeParquet } from '../../storage/parquet.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';
import { silverRows } from './silver-rows.js';

const HOUR_START = Date.UTC(2026, 4, 10, 9);
const T = HOUR_START + 3 * 3_600_000;
const DIR = 'silver/events/year=2026/month=05/day=10/hour=09/';

const root = mkdtempSync(join(tmpdir(), 'sluice-record-order-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Two flush files of one shard in hour 09, committed at T and T + 10 s. */
async function twoFlushes(lake: string): Promise<{ store: LocalObjectStore; keys: string[] }> {
  const store = new LocalObjectStore(lake);
  let now = T;
  const committer = new TwoPhaseCommitter(store, { now: () => now });
  const keys: string[] = [];
  for (const i of [0, 1]) {
    now = T + i * 10_000;
    const key = partKey('events', HOUR_START, partName(0, i, i));
    await committer.publish(await committer.stage([{ key, body: encodeParquet(silverRows({ rows: 40, seed: 3 + i, startMs: HOUR_START, spanMs: 60_000, batchRows: 40 })), rows: 40 }], { id: `s0-${i}-${i}`, kind: 'flush', shard: 0 }));
    keys.push(key);
  }
  return { store, keys };
}

describe('a compaction record', () => {
  it('is written after the records that added its inputs, whatever the clock the run started with', async () => {
    const { store, keys } = await twoFlushes(join(root, 'clock'));
    try {
      // The run's clock is older than the second flush (taken before it committed).
      const r = await compactPartition(store, 'silver/events', 'year=2026/month=05/day=10/hour=09', { now: T + 5_000, targetBytes: 64 * 2 ** 20 });
      expect(r).toMatchObject({ inputs: 2, outputs: 1, rows: 80 });
      const records = await listCommitRecords(store);
      expect(records.map((x) => x.kind)).toEqual(['flush', 'flush', 'compact']);
      expect(Date.parse(records[2]!.time)).toBeGreaterThan(T + 10_000);
      const live = await liveFiles(store, DIR);
      expect([...live.keys()].filter((k) => keys.includes(k))).toEqual([]);
      expect([...live.values()]).toEqual([80]);
    } finally {
      await store.close();
    }
  });

  it('recorded before the flush that added one of its inputs (as written before the fix) still removes it: quality finds no missing file', async () => {
    const lake = join(root, 'inverted');
    const { store, keys } = await twoFlushes(lake);
    try {
      await compactPartition(store, 'silver/events', 'year=2026/month=05/day=10/hour=09', { targetBytes: 64 * 2 ** 20 });
      const [compact] = (await listCommitRecords(store)).filter((x) => x.kind === 'compact');
      await writeCommitRecord(store, { ...compact!, time: new Date(T + 5_000).toISOString() });
      const records = await listCommitRecords(store);
      expect(records.map((x) => x.kind), 'the compaction sorts between the two flushes').toEqual(['flush', 'compact', 'flush']);
      const live = await liveFiles(store, DIR);
      expect([...live.keys()].filter((k) => keys.includes(k))).toEqual([]);
      expect([...live.values()]).toEqual([80]);
    } finally {
      await store.close();
    }
    const report = await runQualityChecks({ lake, now: T + 60_000 });
    const files = report.checks.find((c) => c.name === 'files')!;
    expect(files.problems).toEqual([]);
  }, 60_000);
});
