/**
 * Rewriting a committed Parquet file without some of its rows (erasure), atomically:
 *
 *   read + decode ─▶ keep mask ─▶ nothing to drop? done (idempotent: a rewritten file has none;
 *     │                if the caller planned rows and our commit record is missing, the publish
 *     │                ran before a crash that came before the record: the record is written now)
 *     some rows kept:  encode ─▶ stage ─▶ publish over the same key (rename / copy: old or new,
 *                      never half) ─▶ commit record (removed: old rows, added: new rows)
 *     no row kept:     commit record (removed) ─▶ delete
 *     file gone:       `missing.ours` says whether our record exists (deleted by us before a crash)
 *                      or another writer replaced it (the caller rescans)
 *
 * The key does not change, so readers that honour commit records and readers that glob both see
 * either the old file or the new one. Records are kind 'erase' (removed: the old file and its rows;
 * added: the same key with the rows kept), so `sluice quality` subtracts the erased rows from the
 * flush accounting instead of counting them as lost; ids are deterministic per (request, key), so a
 * repeated step writes the same record again.
 */
import { createHash } from 'node:crypto';
import type { RecordBatch, Table } from 'apache-arrow';
import { takeRows, maskToIndices } from '../common/arrow-take.js';
import { faultPoint } from '../common/fault.js';
import { commitRecordKey, writeCommitRecord } from './commit-record.js';
import type { ObjectStore } from './object-store.js';
import { decodeParquet, encodeParquetAsync, type ParquetOptions } from './parquet.js';
import { TwoPhaseCommitter } from './two-phase.js';

export interface RewriteResult {
  rowsBefore: number;
  rowsAfter: number;
  /** The file no longer exists (every row was dropped, or it was gone already). */
  deleted: boolean;
  /**
   * The file was gone already: `ours` when this rewrite's own commit record exists (done before a
   * crash), else another writer (compaction, reconciliation) replaced it — its rows are elsewhere now.
   */
  missing?: { ours: boolean };
}

/**
 * Drops the rows of `key` for which `drop(table, row)` is true (row index within the whole
 * table). `recordId` names the commit record (deterministic per request and key).
 */
export async function rewriteWithout(
  store: ObjectStore,
  key: string,
  drop: (table: Table) => Uint8Array,
  recordId: string,
  parquet: ParquetOptions = {},
  /** Rows the caller's scan found to drop: when none is left, the rewrite ran before a crash (see below). */
  planned = 0,
): Promise<RewriteResult> {
  const id = `${recordId}-${createHash('sha1').update(key).digest('hex').slice(0, 12)}`;
  const bytes = await store.get(key);
  if (bytes === undefined) return { rowsBefore: 0, rowsAfter: 0, deleted: true, missing: { ours: (await store.get(commitRecordKey(id))) !== undefined } };
  const table = decodeParquet(bytes);
  const mask = drop(table);
  const before = table.numRows;
  let dropped = 0;
  for (let i = 0; i < mask.length; i++) dropped += mask[i]!;
  if (dropped === 0) {
    // Published before a crash that came before its commit record: the record is written now.
    if (planned > 0 && (await store.get(commitRecordKey(id))) === undefined) {
      await writeCommitRecord(store, { id, time: new Date().toISOString(), kind: 'erase', added: [{ key, rows: before, bytes: bytes.byteLength }], removed: [{ key, rows: before + planned }] });
    }
    return { rowsBefore: before, rowsAfter: before, deleted: false };
  }
  const time = new Date().toISOString();
  if (dropped === before) {
    await writeCommitRecord(store, { id, time, kind: 'erase', added: [], removed: [{ key, rows: before, bytes: bytes.byteLength }] });
    faultPoint('erasure:rewrite-recorded');
    await store.delete(key);
    return { rowsBefore: before, rowsAfter: 0, deleted: true };
  }
  const kept: RecordBatch[] = [];
  let offset = 0;
  for (const batch of table.batches) {
    const keep = new Uint8Array(batch.numRows);
    for (let i = 0; i < batch.numRows; i++) keep[i] = mask[offset + i] ? 0 : 1;
    offset += batch.numRows;
    const idx = maskToIndices(keep);
    if (idx.length > 0) kept.push(idx.length === batch.numRows ? batch : takeRows(batch, idx));
  }
  // Async: a compacted file may hold more rows than one synchronous encode call takes (maxRowsPerCall).
  const body = await encodeParquetAsync(kept, parquet);
  const committer = new TwoPhaseCommitter(store);
  const pending = await committer.stage([{ key, body, rows: before - dropped }], { id, kind: 'erase', removed: [{ key, rows: before, bytes: bytes.byteLength }] });
  faultPoint('erasure:rewrite-staged');
  await committer.publish(pending);
  return { rowsBefore: before, rowsAfter: before - dropped, deleted: false };
}
