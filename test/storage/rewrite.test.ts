/**
 * rewriteWithout (erasure's file rewrite) on files bigger than one synchronous Parquet call, a
 * compaction that merges a file an erasure rewrote meanwhile, and shardOfPart, which narrows
 * erasure to the users' shards' files.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Int32, makeData, RecordBatch, Schema, Struct, Utf8, vectorFromArray, type Table } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { partName, shardOfPart } from '../../common/lake-layout.js';
import { listCommitRecords } from '../../storage/commit-record.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { decodeParquet, encodeParquetAsync } from '../../storage/parquet.js';
import { rewriteWithout } from '../../storage/rewrite.js';
import { compactPartition } from '../../storage/compact.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';

const schema = new Schema([new Field('id', new Int32(), false), new Field('user_id', new Utf8(), false)]);
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function batch(ids: number[]): RecordBatch {
  const children = [vectorFromArray(Int32Array.from(ids)).data[0]!, vectorFromArray(ids.map((i) => `u${i % 7}`), new Utf8()).data[0]!];
  return new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: ids.length, nullCount: 0, children }));
}

describe('rewriteWithout', () => {
  it('rewrites a file of more rows than one synchronous encode call takes (a compacted file), dropping exactly the matching rows', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-rewrite-'));
    dirs.push(dir);
    const store = new LocalObjectStore(dir);
    const parquet = { maxRowsPerCall: 100 };
    const ids = Array.from({ length: 350 }, (_, i) => i);
    const key = 'silver/events/year=2026/month=12/day=02/hour=10/part-cabc-s3.parquet';
    await store.put(key, await encodeParquetAsync([batch(ids.slice(0, 200)), batch(ids.slice(200))], parquet));

    const drop = (table: Table): Uint8Array => {
      const users = table.getChild('user_id')!;
      return Uint8Array.from({ length: table.numRows }, (_, i) => (users.get(i) === 'u3' ? 1 : 0));
    };
    const erased = ids.filter((i) => i % 7 === 3).length;
    const r = await rewriteWithout(store, key, drop, 'erase-req1', parquet, erased);
    expect(r).toEqual({ rowsBefore: 350, rowsAfter: 350 - erased, deleted: false });

    const after = decodeParquet((await store.get(key))!);
    const kept = Array.from(after.getChild('id')!.toArray() as Int32Array);
    expect(kept).toEqual(ids.filter((i) => i % 7 !== 3));
    const records = (await listCommitRecords(store)).filter((x) => x.kind === 'erase');
    expect(records).toHaveLength(1);
    expect(records[0]!.removed).toEqual([{ key, rows: 350, bytes: expect.any(Number) }]);
    // Idempotent: a second run finds nothing to drop and writes nothing new.
    expect(await rewriteWithout(store, key, drop, 'erase-req1', parquet, erased)).toEqual({ rowsBefore: 350 - erased, rowsAfter: 350 - erased, deleted: false });
    expect((await listCommitRecords(store)).filter((x) => x.kind === 'erase')).toHaveLength(1);
  });
});

describe('a compaction beside an erasure', () => {
  it('merges a file an erasure rewrote after the compaction listed the commit records: it judges row counts by the records as they are now', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-rewrite-compact-'));
    dirs.push(dir);
    const store = new LocalObjectStore(dir);
    const partition = 'year=2026/month=12/day=02/hour=10';
    const keys = [0, 1, 2].map((i) => `silver/events/${partition}/${partName(0, i, i)}`);
    const committer = new TwoPhaseCommitter(store);
    await committer.publish(await committer.stage(await Promise.all(keys.map(async (key, i) => ({ key, body: await encodeParquetAsync([batch([i * 10, i * 10 + 1, i * 10 + 3])]), rows: 3 }))), { id: 's0-0-2', kind: 'flush', shard: 0 }));
    const stale = await listCommitRecords(store);
    // The erasure rewrites the first file (2 of its 3 rows stay) and records it, after the compaction listed the records.
    const drop = (table: Table): Uint8Array => Uint8Array.from({ length: table.numRows }, (_, i) => (table.getChild('id')!.get(i) === 3 ? 1 : 0));
    expect(await rewriteWithout(store, keys[0]!, drop, 'erase-req2', {}, 1)).toMatchObject({ rowsAfter: 2 });
    const r = await compactPartition(store, 'silver/events', partition, { records: stale, now: Date.UTC(2026, 11, 3) });
    expect(r).toEqual({ inputs: 3, outputs: 1, rows: 8 });
    const merged = (await store.list(`silver/events/${partition}/`)).filter((o) => o.key.endsWith('.parquet'));
    expect(merged).toHaveLength(1);
    expect(Array.from(decodeParquet((await store.get(merged[0]!.key))!).getChild('id')!.toArray() as Int32Array).sort((a, b) => a - b)).toEqual([0, 1, 10, 11, 13, 20, 21, 23]);
  });
});

describe('shardOfPart', () => {
  it.each([
    ['silver/events/year=2026/month=12/day=02/hour=10/part-s3-17-42.parquet', 3],
    ['silver/events/year=2026/month=12/day=02/hour=10/part-s12-0-9-w5-c-1.parquet', 12],
    ['bronze/events/year=2026/month=12/day=02/hour=10/part-c0123456789abcdef-s7.parquet', 7],
    ['bronze/events/year=2026/month=12/day=02/hour=10/part-c0123456789abcdef.parquet', undefined],
    ['dlq/year=2026/month=12/day=02/hour=10/part-dlq-1-2.parquet', undefined],
  ])('%s → %s', (key, shard) => {
    expect(shardOfPart(key)).toBe(shard);
  });
});
