/**
 * The rolling policy of a sink (Vector's "batch by size/rows/time"): a shard's output rows wait
 * here, grouped by (table, partition start), until their group is big enough for a
 * target-size file or old enough that freshness demands a flush.
 *
 *   add(table, start, batch, nowMs) ──▶ group(table@start) { batches, rows, bytes, firstAddedMs }
 *   takeDue(nowMs) ──▶ groups with estimatedBytes ≥ targetBytes or nowMs − firstAddedMs ≥ flushIntervalMs
 *
 * A trickle of late rows into an old partition therefore makes at most one file per
 * `flushIntervalMs` per shard (the group starts aging at its first row, not at each row), never
 * one per event; compaction merges those later.
 *
 * Pure: no I/O, no clock (every call takes `nowMs`), no encoding. Batches are kept by reference
 * and handed over unchanged by `takeDue`; the caller must not mutate them meanwhile.
 *
 * Exactly-once note for callers: rows still buffered after a checkpoint are not in any file. A
 * checkpoint must either `takeDue(now, { force: true })` everything, or record only offsets below
 * `minBufferedOffset()` as done (or persist the buffered rows with the checkpoint).
 */
import type { Data, RecordBatch } from 'apache-arrow';
import { takeRows } from '../common/arrow-take.js';
import { userError } from '../common/errors.js';
import { partitionStart, TABLES, type TableName } from '../common/lake-layout.js';

/** Rolling policy. Units: bytes and milliseconds. */
export interface PartitionBufferOptions {
  /** A group is due once its estimated encoded (Parquet) size reaches this. Default 128 MiB. */
  targetBytes?: number;
  /** A group is due once its first row has waited this long. Default 10 000 ms. */
  flushIntervalMs?: number;
  /**
   * Estimated Parquet bytes per in-memory Arrow byte. Default 0.2 (ZSTD silver rows measured at
   * ~37 B/row encoded vs ~200 B/row in Arrow; bronze with `raw` compresses a little less).
   */
  encodedRatio?: number;
}

export const PARTITION_BUFFER_DEFAULTS: Readonly<Required<PartitionBufferOptions>> = {
  targetBytes: 128 * 1024 * 1024,
  flushIntervalMs: 10_000,
  encodedRatio: 0.2,
};

export function validatePartitionBufferOptions(options: PartitionBufferOptions = {}): Required<PartitionBufferOptions> {
  const o: Required<PartitionBufferOptions> = {
    targetBytes: options.targetBytes ?? PARTITION_BUFFER_DEFAULTS.targetBytes,
    flushIntervalMs: options.flushIntervalMs ?? PARTITION_BUFFER_DEFAULTS.flushIntervalMs,
    encodedRatio: options.encodedRatio ?? PARTITION_BUFFER_DEFAULTS.encodedRatio,
  };
  if (!(Number.isFinite(o.targetBytes) && o.targetBytes >= 1)) throw userError('invalid_option', `partition buffer targetBytes must be a positive number of bytes, got ${o.targetBytes}`);
  if (!(Number.isFinite(o.flushIntervalMs) && o.flushIntervalMs >= 0)) throw userError('invalid_option', `partition buffer flushIntervalMs must be a non-negative number of ms, got ${o.flushIntervalMs}`);
  if (!(Number.isFinite(o.encodedRatio) && o.encodedRatio > 0)) throw userError('invalid_option', `partition buffer encodedRatio must be a positive number, got ${o.encodedRatio}`);
  return o;
}

/** One partition's buffered rows, as handed over by `takeDue` (the buffer forgets it). */
export interface PartitionGroup {
  readonly table: TableName;
  /** Partition start, epoch ms (UTC hour or day boundary). */
  readonly partitionStartMs: number;
  /** In arrival order, by reference. */
  readonly batches: RecordBatch[];
  readonly rows: number;
  /** In-memory Arrow buffer bytes (values, offsets, validity; dictionaries excluded). */
  readonly arrowBytes: number;
  /** arrowBytes × encodedRatio. */
  readonly estimatedBytes: number;
  /** `nowMs` of the add that created the group. */
  readonly firstAddedMs: number;
  /** Smallest and largest log offset passed to `add` for this group (undefined when none were). */
  readonly minOffset: number | undefined;
  readonly maxOffset: number | undefined;
}

interface MutableGroup {
  table: TableName;
  partitionStartMs: number;
  batches: RecordBatch[];
  rows: number;
  arrowBytes: number;
  firstAddedMs: number;
  minOffset: number | undefined;
  maxOffset: number | undefined;
}

export class PartitionBuffer {
  private readonly options: Required<PartitionBufferOptions>;
  private readonly groups = new Map<string, MutableGroup>();
  private totalRows = 0;
  private totalArrowBytes = 0;

  constructor(options: PartitionBufferOptions = {}) {
    this.options = validatePartitionBufferOptions(options);
  }

  /** Appends `batch` (all of whose rows belong to the partition starting at `partitionStartMs`). */
  add(table: TableName, partitionStartMs: number, batch: RecordBatch, nowMs: number, offset?: number): void {
    if (batch.numRows === 0) return;
    const key = `${table}@${partitionStartMs}`;
    let g = this.groups.get(key);
    if (!g) {
      g = { table, partitionStartMs, batches: [], rows: 0, arrowBytes: 0, firstAddedMs: nowMs, minOffset: undefined, maxOffset: undefined };
      this.groups.set(key, g);
    }
    const bytes = arrowBytes(batch.data);
    g.batches.push(batch);
    g.rows += batch.numRows;
    g.arrowBytes += bytes;
    if (offset !== undefined) {
      g.minOffset = g.minOffset === undefined ? offset : Math.min(g.minOffset, offset);
      g.maxOffset = g.maxOffset === undefined ? offset : Math.max(g.maxOffset, offset);
    }
    this.totalRows += batch.numRows;
    this.totalArrowBytes += bytes;
  }

  /**
   * Splits `batch` by the table's partition of its `timeColumn` (a Timestamp(ms) column) and adds
   * each piece. One pass over the times; a batch within one partition is added without a copy.
   */
  addByTime(table: TableName, batch: RecordBatch, timeColumn: string, nowMs: number, offset?: number): void {
    const n = batch.numRows;
    if (n === 0) return;
    const column = batch.getChild(timeColumn);
    if (!column) throw userError('missing_column', `partition buffer: ${table} batch has no time column "${timeColumn}"`);
    const granularity = TABLES[table].granularity;
    const times = column.data[0]!.values as BigInt64Array;
    const first = partitionStart(Number(times[0]), granularity);
    let uniform = true;
    for (let i = 1; i < n && uniform; i++) uniform = partitionStart(Number(times[i]), granularity) === first;
    if (uniform) {
      this.add(table, first, batch, nowMs, offset);
      return;
    }
    const rowsOf = new Map<number, number[]>();
    for (let i = 0; i < n; i++) {
      const start = partitionStart(Number(times[i]), granularity);
      let list = rowsOf.get(start);
      if (!list) rowsOf.set(start, (list = []));
      list.push(i);
    }
    for (const [start, idx] of rowsOf) this.add(table, start, takeRows(batch, Int32Array.from(idx)), nowMs, offset);
  }

  /**
   * Removes and returns the groups that are due at `nowMs`: estimated size ≥ targetBytes, or
   * first row waiting ≥ flushIntervalMs; with `force`, every group. Ordered by table then
   * partition start, so file naming downstream is deterministic.
   */
  takeDue(nowMs: number, options: { force?: boolean } = {}): PartitionGroup[] {
    const due: PartitionGroup[] = [];
    for (const [key, g] of this.groups) {
      const estimatedBytes = g.arrowBytes * this.options.encodedRatio;
      if (options.force || estimatedBytes >= this.options.targetBytes || nowMs - g.firstAddedMs >= this.options.flushIntervalMs) {
        this.groups.delete(key);
        this.totalRows -= g.rows;
        this.totalArrowBytes -= g.arrowBytes;
        due.push({ ...g, estimatedBytes });
      }
    }
    return due.sort((a, b) => (a.table < b.table ? -1 : a.table > b.table ? 1 : a.partitionStartMs - b.partitionStartMs));
  }

  /** When the next group falls due by age (epoch ms), for a timer; undefined when empty. */
  nextDueMs(): number | undefined {
    let next: number | undefined;
    for (const g of this.groups.values()) {
      const at = g.firstAddedMs + this.options.flushIntervalMs;
      if (next === undefined || at < next) next = at;
    }
    return next;
  }

  /** Smallest log offset still buffered (see the exactly-once note above); undefined when none. */
  minBufferedOffset(): number | undefined {
    let min: number | undefined;
    for (const g of this.groups.values()) if (g.minOffset !== undefined && (min === undefined || g.minOffset < min)) min = g.minOffset;
    return min;
  }

  /** Totals over every buffered group. */
  stats(): { groups: number; rows: number; arrowBytes: number; estimatedBytes: number } {
    return { groups: this.groups.size, rows: this.totalRows, arrowBytes: this.totalArrowBytes, estimatedBytes: this.totalArrowBytes * this.options.encodedRatio };
  }
}

/** Bytes of a batch's Arrow buffers (values, offsets, validity, recursively; dictionaries excluded). */
export function arrowBytes(data: Data): number {
  let n = (data.values?.byteLength ?? 0) + (data.valueOffsets?.byteLength ?? 0) + (data.nullBitmap?.byteLength ?? 0);
  for (const child of data.children) n += arrowBytes(child);
  return n;
}
