/**
 * Compaction and retention.
 *
 * Compaction merges the small files of a closed partition into one file, crash-safely:
 *
 *   1. stage the merged file   (invisible)
 *   2. write the commit record (kind 'compact', added = merged, removed = inputs)  ← the decision
 *   3. publish the merged file
 *   4. delete the inputs
 *
 * `finishCompactions` completes any record whose steps 3–4 did not all happen (publishes the
 * staged file if needed, deletes leftover inputs) or drops a record whose merged file is gone.
 * Between 3 and 4 a plain glob reader could see rows twice; readers that honour commit records
 * (`liveFiles`, used by `sluice query`) never do.
 *
 * Retention deletes whole partitions older than a per-table age, with a 'retention' record.
 */
import { createHash } from 'node:crypto';
import { Table } from 'apache-arrow';
import { partitionTimeOfKey, TABLES, type TableName } from '../common/lake-layout.js';
import { commitRecordKey, listCommitRecords, writeCommitRecord, type CommitRecord } from './commit-record.js';
import { STAGING_PREFIX } from './local-store.js';
import type { ObjectStore } from './object-store.js';
import { decodeParquet, encodeParquet, type ParquetCompression } from './parquet.js';

export interface CompactOptions {
  /** Files at least this big are left alone. Default 64 MiB (half the 128 MiB target). */
  smallFileBytes?: number;
  compression?: ParquetCompression;
  now?: number;
}

/** The tables compaction touches (gold metrics are one file per window already; late/ is cleared by reconciliation). */
export const COMPACTED_TABLES: TableName[] = ['bronze_events', 'events', 'sessions', 'dlq'];

/** Partition directories (key prefixes ending in '/') of a table, with their files. */
export async function partitionsOf(store: ObjectStore, table: TableName): Promise<Map<string, Array<{ key: string; size: number }>>> {
  const out = new Map<string, Array<{ key: string; size: number }>>();
  for (const o of await store.list(`${TABLES[table].prefix}/`)) {
    if (!o.key.endsWith('.parquet')) continue;
    const dir = o.key.slice(0, o.key.lastIndexOf('/') + 1);
    let list = out.get(dir);
    if (!list) out.set(dir, (list = []));
    list.push({ key: o.key, size: o.size });
  }
  return out;
}

/** Merges the small files of one partition into one. Returns the number of input files merged (0 when nothing to do). */
export async function compactPartition(store: ObjectStore, partitionDir: string, options: CompactOptions = {}): Promise<number> {
  const small = options.smallFileBytes ?? 64 * 1024 * 1024;
  const files = (await store.list(partitionDir)).filter((o) => o.key.endsWith('.parquet') && o.key.lastIndexOf('/') === partitionDir.length - 1 && o.size < small);
  if (files.length < 2) return 0;
  const inputs = files.map((f) => f.key).sort();
  const tables: Table[] = [];
  const rows: number[] = [];
  for (const key of inputs) {
    const t = decodeParquet((await store.get(key))!);
    tables.push(t);
    rows.push(t.numRows);
  }
  const merged = new Table(tables.flatMap((t) => t.batches));
  const id = createHash('sha1').update(inputs.join('\n')).digest('hex').slice(0, 16);
  const key = `${partitionDir}part-c${id}.parquet`;
  const body = encodeParquet(merged, { compression: options.compression ?? 'zstd' });
  const staged = await store.stage(key, body);
  const record: CommitRecord = {
    id: `compact-${id}`,
    time: new Date(options.now ?? Date.now()).toISOString(),
    kind: 'compact',
    added: [{ key, rows: merged.numRows, bytes: body.byteLength }],
    removed: inputs.map((k, i) => ({ key: k, rows: rows[i]! })),
  };
  await writeCommitRecord(store, record);
  await store.publish(staged);
  for (const k of inputs) await store.delete(k);
  return inputs.length;
}

/** Completes or voids compactions a crash interrupted. Returns how many it touched. */
export async function finishCompactions(store: ObjectStore): Promise<number> {
  let touched = 0;
  for (const r of await listCommitRecords(store)) {
    if (r.kind !== 'compact') continue;
    const merged = r.added[0]!;
    const present = new Set((await store.list(merged.key.slice(0, merged.key.lastIndexOf('/') + 1))).map((o) => o.key));
    const leftovers = r.removed.filter((f) => present.has(f.key));
    if (!present.has(merged.key)) {
      const stagingKey = `${STAGING_PREFIX}${merged.key}`;
      if (await store.get(stagingKey)) {
        await store.publish({ key: merged.key, stagingKey, size: merged.bytes ?? 0 });
      } else {
        // The merged file never became visible: the inputs are still the truth; drop the record.
        await store.delete(commitRecordKey(r.id));
        touched++;
        continue;
      }
    }
    if (leftovers.length > 0 || !present.has(merged.key)) touched++;
    for (const f of leftovers) await store.delete(f.key);
  }
  return touched;
}

/** Compacts every partition of the compacted tables whose start is older than `olderThanMs` (closed partitions). */
export async function compactAll(store: ObjectStore, options: CompactOptions & { olderThanMs: number; tables?: TableName[] }): Promise<{ partitions: number; files: number }> {
  await finishCompactions(store);
  const now = options.now ?? Date.now();
  let partitions = 0;
  let files = 0;
  for (const table of options.tables ?? COMPACTED_TABLES) {
    const step = TABLES[table].granularity === 'day' ? 86_400_000 : 3_600_000;
    for (const dir of (await partitionsOf(store, table)).keys()) {
      const start = partitionTimeOfKey(dir);
      if (start === undefined || start + step > now - options.olderThanMs) continue;
      const n = await compactPartition(store, dir, options);
      if (n > 0) {
        partitions++;
        files += n;
      }
    }
  }
  return { partitions, files };
}

/** Deletes partitions older than the given age (ms) per table. */
export async function applyRetention(store: ObjectStore, maxAgeMs: Partial<Record<TableName, number>>, nowMs = Date.now()): Promise<number> {
  const removed: Array<{ key: string; rows: number }> = [];
  for (const [table, age] of Object.entries(maxAgeMs) as Array<[TableName, number]>) {
    const step = TABLES[table].granularity === 'day' ? 86_400_000 : 3_600_000;
    for (const [dir, files] of await partitionsOf(store, table)) {
      const start = partitionTimeOfKey(dir);
      if (start === undefined || start + step > nowMs - age) continue;
      for (const f of files) removed.push({ key: f.key, rows: 0 });
    }
  }
  if (removed.length === 0) return 0;
  await writeCommitRecord(store, { id: `retention-${nowMs}`, time: new Date(nowMs).toISOString(), kind: 'retention', added: [], removed });
  for (const f of removed) await store.delete(f.key);
  return removed.length;
}
