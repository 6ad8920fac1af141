/**
 * A query planned over files a compaction then deletes (the server compacts in the background)
 * is run again over the lake as it is now, instead of failing with DuckDB's "No files found".
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openLakeQuery } from '../../analytics/query.js';
import { partKey, partName } from '../../common/lake-layout.js';
import { compactPartition } from '../../storage/compact.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { encodeParquet } from '../../storage/parquet.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';
import { silverRows } from '../storage/silver-rows.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-query-vanished-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('a query beside a compaction', () => {
  it('is run again when a file it was planned over has been compacted away', async () => {
    const lake = join(root, 'lake');
    const store = new LocalObjectStore(lake);
    const hour = Date.UTC(2026, 0, 1, 5);
    const files = [0, 1, 2].map((i) => ({ key: partKey('events', hour, partName(0, i, i)), body: encodeParquet(silverRows({ rows: 50, seed: 30 + i, startMs: hour, spanMs: 60_000, batchRows: 50 })), rows: 50 }));
    const committer = new TwoPhaseCommitter(store);
    await committer.publish(await committer.stage(files, { id: 's0-0-2', kind: 'flush', shard: 0 }));

    const q = await openLakeQuery({ lake });
    try {
      expect(Number((await q.run('SELECT count(*) FROM events')).rows[0]![0])).toBe(150);
      const compacted = await compactPartition(store, 'silver/events', 'year=2026/month=01/day=01/hour=05', { now: hour + 2 * 3_600_000 });
      expect(compacted).toMatchObject({ inputs: 3, outputs: 1 });
      // The next statement is planned before the compaction's record is seen (as when it lands between the listing and the read).
      const refresh = q.lake.refresh.bind(q.lake);
      let stale = true;
      q.lake.refresh = async () => (stale ? ((stale = false), false) : refresh());
      expect(Number((await q.run('SELECT count(*) FROM events')).rows[0]![0])).toBe(150);
      expect(stale).toBe(false);
    } finally {
      await q.close();
      await store.close();
    }
  });
});
