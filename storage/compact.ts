/**
 * Compaction and retention.
 *
 * Compaction merges the small committed files of a closed partition into target-size files.
 * Each merged file is its own crash-safe transaction:
 *
 *   1. encode + stage the merged file        invisible            crash → nothing happened (temp left, harmless)
 *   2. write the commit record               the decision         crash → finishCompactions publishes (2→3→4)
 *      (kind 'compact', added = merged, removed = inputs)
 *   3. publish the merged file               visible              crash → finishCompactions deletes the inputs
 *   4. delete the inputs
 *
 * The merged file's name is a hash of its inputs (`part-c{hash}-s{shard}.parquet`, or
 * `part-c{hash}.parquet` for files of no single shard such as dlq/) and the record id is
 * `compact-{hash}`, so re-running any step writes the same objects again. Files of different
 * shards are never merged together: a user lives in one shard, so erasing a user rewrites only
 * that shard's files, however much the lake holds (engine/erasure-job.ts). A partition keeps at
 * least one file per shard that wrote to it.
 *
 * Readers: `liveFiles` (used by `sluice query` and `sluice quality`) treats a compact record as
 * not yet applied while its merged file is invisible and its inputs still exist, and as applied
 * once the merged file is visible — so a commit-honouring reader sees each row exactly once at
 * every instant. A plain glob reader (`read_parquet('…/**\/*.parquet')`) sees the rows of a
 * partition twice between steps 3 and 4 (milliseconds, or until `finishCompactions` after a crash
 * there): that tiny window is why Sluice's own readers honour commit records.
 *
 * Run one compactor per lake. A second one running at the same time is detected after step 2
 * (another live compact record names one of our inputs) and backs off by marking its record
 * aborted; `finishCompactions` leaves records younger than `graceMs` alone for the same reason.
 *
 * Retention deletes whole partitions older than a per-layer age: first a 'retention' record
 * naming every file it will delete, then the deletes (a crash in between is finished by the next
 * run, which finds the same partitions still expired).
 */
import { createHash } from 'node:crypto';
import { rmdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Schema } from 'apache-arrow';
import * as pq from 'parquet-wasm/node';
import { internalError, userError } from '../common/errors.js';
import { partitionTimeOfKey, shardOfPart, TABLES, type TableName } from '../common/lake-layout.js';
import { commitRecordKey, foldCommitRecords, listCommitRecords, writeCommitRecord, type CommitFile, type CommitRecord } from './commit-record.js';
import { STAGING_PREFIX } from './local-store.js';
import type { ObjectStore } from './object-store.js';
import { parquetSchema, validateParquetOptions, writeParquetStream, writerProperties, type ParquetCompression, type ParquetOptions } from './parquet.js';

export interface CompactOptions {
  /** Aim for merged files of about this many bytes. Default 128 MiB. */
  targetBytes?: number;
  /** Files at least this big are left alone. Default targetBytes / 2. */
  smallFileBytes?: number;
  compression?: ParquetCompression;
  /** Other encoder options (row group size, statistics, …). */
  parquet?: ParquetOptions;
  /** Clock for record times, epoch ms. Default Date.now(). */
  now?: number;
  /**
   * The lake's commit records, as just listed: `compactAll` lists them once for every partition
   * (a partition's fold only reads its own files' records). Default: listed here.
   */
  records?: readonly CommitRecord[];
  /** Crash tests only: stop after this step, as if the process died there. */
  stopAfter?: 'stage' | 'record' | 'publish';
  /**
   * Merge every small file of a shard, not only those worth merging under a trickle (`convergent`,
   * which leaves a partition's big file alone until the small ones outweigh half of it): an
   * operator's `sluice compact` of closed partitions, run once, not every minute. Default false.
   */
  everySmallFile?: boolean;
}

export const COMPACT_DEFAULTS = { targetBytes: 128 * 1024 * 1024 } as const;

/** The tables compaction touches (gold metrics are one file per window already; late/ is cleared by reconciliation). */
export const COMPACTED_TABLES: TableName[] = ['bronze_events', 'events', 'sessions', 'dlq'];

export interface CompactResult {
  /** Input files merged (and removed). */
  inputs: number;
  /** Merged files published. */
  outputs: number;
  /** Rows moved. */
  rows: number;
}

const HOUR = 3_600_000;
const DAY = 86_400_000;
const stepOf = (table: TableName): number => (TABLES[table].granularity === 'day' ? DAY : HOUR);

/** Partition directories (key prefixes ending in '/') of a table, with their Parquet files. */
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

/**
 * Merges the small committed files of one partition (`{tablePrefix}/{partitionPath}/`, e.g.
 * 'silver/events' + 'year=2026/month=05/day=10/hour=09') into files of about `targetBytes`.
 * Files the commit records do not list (in flight, or written by someone else) are left alone,
 * unless the lake has no commit records at all. Files of different Arrow schemas are never
 * merged together.
 */
export async function compactPartition(store: ObjectStore, tablePrefix: string, partitionPath: string, options: CompactOptions = {}): Promise<CompactResult> {
  const dir = `${tablePrefix.replace(/\/+$/, '')}/${partitionPath.replace(/^\/+|\/+$/g, '')}/`;
  const target = options.targetBytes ?? COMPACT_DEFAULTS.targetBytes;
  const small = options.smallFileBytes ?? target / 2;
  if (!(target > 0) || !(small > 0)) throw userError('invalid_option', `compaction targetBytes and smallFileBytes must be positive, got ${target} and ${small}`);
  const records = options.records ?? (await listCommitRecords(store));
  const listed = (await store.list(dir)).filter((o) => o.key.endsWith('.parquet') && o.key.lastIndexOf('/') === dir.length - 1);
  const live = foldCommitRecords(records, dir, new Set(listed.map((o) => o.key)));
  const eligible = listed.filter((o) => o.size < small && (records.length === 0 || live.has(o.key)));
  // One shard's files at a time (undefined: files of no single shard, merged among themselves).
  const byShard = new Map<number | undefined, typeof eligible>();
  for (const o of eligible) {
    const shard = shardOfPart(o.key);
    let files = byShard.get(shard);
    if (!files) byShard.set(shard, (files = []));
    files.push(o);
  }
  const result: CompactResult = { inputs: 0, outputs: 0, rows: 0 };
  for (const [shard, files] of [...byShard].sort(([a], [b]) => (a ?? -1) - (b ?? -1))) {
    const r = await compactShardFiles(store, dir, options.everySmallFile ? files : convergent(files), shard, target, live, { ...options, records });
    result.inputs += r.inputs;
    result.outputs += r.outputs;
    result.rows += r.rows;
  }
  return result;
}

/** An input of a merge: read (again) when the merge reaches it. */
interface MergeInput {
  key: string;
  /** Its widest row group's uncompressed bytes per row (footer's total_byte_size ÷ rows). */
  bytesPerRow: number;
}

/** The widest row group's uncompressed bytes per row of a Parquet file, from its footer. */
async function bytesPerRow(bytes: Uint8Array): Promise<number> {
  const file = await pq.ParquetFile.fromFile(new Blob([bytes]));
  try {
    const meta = file.metadata();
    let widest = 0;
    for (let i = 0; i < meta.numRowGroups(); i++) {
      const g = meta.rowGroup(i);
      if (g.numRows() > 0) widest = Math.max(widest, g.totalByteSize() / g.numRows());
    }
    return widest;
  } finally {
    file.free();
  }
}

/**
 * Rows per row group of a merged file: the encoder's `rowGroupRows`, fewer when that many of the
 * widest input's rows would be more than `maxBytesPerCall`. A merged file's row group is what the
 * next merge of its partition decodes in one call (the open hour's big file is merged again with
 * each batch of new files), so rows alone let parquet-wasm's heap grow with the row width —
 * 131,072 rows of raw Segment JSON is ~100 MiB — instead of with the configured byte bound.
 */
function rowGroupRowsFor(inputs: readonly MergeInput[], o: Required<ParquetOptions>): number {
  const widest = Math.max(1, ...inputs.map((i) => i.bytesPerRow));
  return Math.min(o.rowGroupRows, Math.max(1024, Math.floor(o.maxBytesPerCall / widest)));
}

/** Packs one shard's candidate files (see `compactPartition`) into merged files. */
async function compactShardFiles(
  store: ObjectStore,
  dir: string,
  candidates: Array<{ key: string; size: number }>,
  shard: number | undefined,
  target: number,
  live: ReadonlyMap<string, number>,
  options: CompactOptions,
): Promise<CompactResult> {
  if (candidates.length < 2) return { inputs: 0, outputs: 0, rows: 0 };

  // Pack files in key order greedily up to target bytes, starting a new group whenever the Arrow
  // schema changes. A group holds keys, not bytes: each input is read again when it is merged
  // (see `mergeFiles`), so memory does not grow with the group (up to targetBytes of input).
  const result: CompactResult = { inputs: 0, outputs: 0, rows: 0 };
  let group: MergeInput[] = [];
  let groupBytes = 0;
  let groupSchema = '';
  let schema: Schema | undefined;
  const flush = async (): Promise<void> => {
    if (group.length >= 2) {
      const r = await mergeFiles(store, dir, group, schema!, shard, live, options);
      result.inputs += r.inputs;
      result.outputs += r.outputs;
      result.rows += r.rows;
    }
    group = [];
    groupBytes = 0;
  };
  for (const o of candidates.sort((x, y) => (x.key < y.key ? -1 : 1))) {
    const bytes = await store.get(o.key);
    if (bytes === undefined) continue; // removed meanwhile
    const hash = createHash('sha1').update(pq.readSchema(bytes).intoIPCStream()).digest('hex');
    if (group.length > 0 && (hash !== groupSchema || groupBytes + o.size > target)) await flush();
    if (group.length === 0) schema = parquetSchema(bytes);
    group.push({ key: o.key, bytesPerRow: await bytesPerRow(bytes) });
    groupBytes += o.size;
    groupSchema = hash;
  }
  await flush();
  return result;
}
/**
 * The files worth merging: drops the biggest while it is more than twice all the others together,
 * so a partition that keeps receiving small files (a late trickle, the current hour) does not
 * rewrite its big file each time. A file is rewritten only together with at least half its size
 * of new data, so merged sizes grow geometrically (×1.5 at least): a row is rewritten O(log n)
 * times over n arrivals, and a partition keeps O(log n) files. (Twice, not once: a merged Parquet
 * file is smaller than its inputs together — one footer, better compression.)
 */
function convergent<T extends { size: number }>(files: T[]): T[] {
  const bySize = [...files].sort((a, b) => b.size - a.size);
  let rest = bySize.reduce((n, f) => n + f.size, 0);
  let k = 0;
  while (bySize.length - k >= 2 && bySize[k]!.size > 2 * (rest - bySize[k]!.size)) {
    rest -= bySize[k]!.size;
    k++;
  }
  const keep = new Set(bySize.slice(k));
  return files.filter((f) => keep.has(f));
}

/**
 * A compaction record's time: now, but after every record that added one of its inputs. Records
 * are folded in time order, and `now` is taken when the run starts: a flush committed between that
 * and the listing of the records became an input whose add sorted after its removal, so readers of
 * the records (`sluice quality`) took it for a missing file.
 */
function recordTime(inputs: readonly MergeInput[], options: CompactOptions): number {
  const keys = new Set(inputs.map((f) => f.key));
  let added = Number.NEGATIVE_INFINITY;
  for (const r of options.records ?? []) if (r.added.some((f) => keys.has(f.key))) added = Math.max(added, Date.parse(r.time));
  return Math.max(options.now ?? Date.now(), added + 1);
}

/**
 * One merged file: encode (streaming) → stage → record → publish → delete.
 *
 * Memory: the inputs are read one at a time and decoded one row group at a time (from a Blob:
 * parquet-wasm copies only that row group's column chunks into its heap), and the writer holds
 * at most one row group of output, of at most `maxBytesPerCall` uncompressed (`rowGroupRowsFor`).
 * parquet-wasm's heap grows to its biggest call and never shrinks, so decoding a whole input at
 * once made it grow with the biggest file compaction ever read (up to smallFileBytes of Parquet,
 * several times that decoded): memory set by traffic (how much of an hour a merged file holds),
 * not by configuration (the row group size).
 */
async function mergeFiles(
  store: ObjectStore,
  dir: string,
  inputs: readonly MergeInput[],
  schema: Schema,
  shard: number | undefined,
  live: ReadonlyMap<string, number>,
  options: CompactOptions,
): Promise<CompactResult> {
  const po = validateParquetOptions({ ...options.parquet, compression: options.compression ?? options.parquet?.compression });
  po.rowGroupRows = rowGroupRowsFor(inputs, po);
  const rows: number[] = [];
  let next = 0;
  let file: pq.ParquetFile | undefined;
  let rowGroup = 0;
  let rowGroups = 0;
  const closeFile = (): void => {
    file?.free();
    file = undefined;
  };
  // Feed the streaming writer one row group at a time, straight from wasm (no JS Arrow copy).
  const source = new ReadableStream<pq.RecordBatch>({
    async pull(controller) {
      try {
        while (file === undefined || rowGroup === rowGroups) {
          closeFile();
          const input = inputs[next];
          if (input === undefined) {
            controller.close();
            return;
          }
          const bytes = await store.get(input.key);
          if (bytes === undefined) throw internalError('compaction_input_missing', `compaction of ${dir}: ${input.key} disappeared while it was merged`);
          file = await pq.ParquetFile.fromFile(new Blob([bytes]));
          rowGroups = file.metadata().numRowGroups();
          rowGroup = 0;
          rows[next++] = 0;
        }
        const table = await file.read({ rowGroups: [rowGroup++] });
        try {
          for (const b of table.recordBatches()) {
            rows[next - 1]! += b.numRows;
            controller.enqueue(b);
          }
        } finally {
          table.free();
        }
      } catch (err) {
        closeFile();
        throw err;
      }
    },
    cancel: closeFile,
  });
  const body = await writeParquetStream(source, writerProperties(schema, po)).finally(closeFile);
  const mergedRows = rows.reduce((a, b) => a + b, 0);
  const mismatched = (records: ReadonlyMap<string, number>): number => inputs.findIndex((f, i) => (records.get(f.key) ?? 0) > 0 && records.get(f.key) !== rows[i]);
  let wrong = mismatched(live);
  // The records were listed before the run: an erasure may have rewritten an input since, and it
  // records the rewrite just after publishing it. Judge by the records as they are now (twice, a
  // second apart, for a record still being written), not by a stale fold.
  for (let look = 0; wrong >= 0 && look < 2; look++) {
    if (look > 0) await new Promise((r) => setTimeout(r, 1000));
    const present = new Set((await store.list(dir)).map((o) => o.key));
    wrong = mismatched(foldCommitRecords(await listCommitRecords(store), dir, present));
  }
  if (wrong >= 0) {
    const f = inputs[wrong]!;
    throw internalError('compaction_row_mismatch', `compaction of ${dir}: ${f.key} has ${rows[wrong]} rows but its commit record says ${live.get(f.key)}; run \`sluice quality\``);
  }

  const hash = createHash('sha1').update(inputs.map((f) => f.key).join('\n')).digest('hex').slice(0, 16);
  const key = `${dir}part-c${hash}${shard === undefined ? '' : `-s${shard}`}.parquet`;
  const staged = await store.stage(key, body);
  if (options.stopAfter === 'stage') return { inputs: 0, outputs: 0, rows: 0 };
  const record: CommitRecord = {
    id: `compact-${hash}`,
    time: new Date(recordTime(inputs, options)).toISOString(),
    kind: 'compact',
    added: [{ key, rows: mergedRows, bytes: body.byteLength }],
    removed: inputs.map((f, i) => ({ key: f.key, rows: rows[i]! })),
  };
  await writeCommitRecord(store, record);
  if (options.stopAfter === 'record') return { inputs: 0, outputs: 0, rows: 0 };
  // Another compactor that claimed one of our inputs wins; we back off (both may: that is safe).
  const inputKeys = new Set(inputs.map((f) => f.key));
  const rival = (await listCommitRecords(store)).find((r) => r.kind === 'compact' && !r.aborted && r.id !== record.id && r.removed.some((f) => inputKeys.has(f.key)));
  if (rival) {
    await writeCommitRecord(store, { ...record, added: [], removed: [], aborted: true });
    await store.delete(staged.stagingKey);
    return { inputs: 0, outputs: 0, rows: 0 };
  }
  await store.publish(staged);
  if (options.stopAfter === 'publish') return { inputs: 0, outputs: 1, rows: mergedRows };
  for (const f of inputs) await store.delete(f.key);
  return { inputs: inputs.length, outputs: 1, rows: mergedRows };
}

/** A merged file's name; group 1 is the hash its record id is made of (`compact-{hash}`). */
const MERGED_FILE = /\/part-c([0-9a-f]+)(?:-s\d+)?\.parquet$/;

/**
 * Of the present files `keys`, the ones a reader of present files should read so that it sees
 * each row once: all of them but the inputs of a compaction whose merged file is among them (it
 * is visible, so the compaction has happened and its inputs are only waiting for their delete —
 * milliseconds, or until `finishCompactions` after a crash between publish and delete).
 *
 * For readers that recompute from a range of partitions (reconciliation, erasure's gold
 * recompute): it reads only the records of the merged files in `keys`, where `liveFiles` would
 * read every commit record of the lake.
 */
export async function withoutCompactedInputs(store: ObjectStore, keys: readonly string[]): Promise<string[]> {
  const superseded = new Set<string>();
  const hashes = [...new Set(keys.map((k) => MERGED_FILE.exec(k)?.[1]).filter((h): h is string => h !== undefined))];
  for (let i = 0; i < hashes.length; i += 16) {
    const records = await Promise.all(hashes.slice(i, i + 16).map((h) => store.get(commitRecordKey(`compact-${h}`))));
    for (const bytes of records) {
      if (bytes === undefined) continue; // written before the merged file is published: only a hand-made file has none
      const record = JSON.parse(new TextDecoder().decode(bytes)) as CommitRecord;
      if (record.kind !== 'compact' || record.aborted) continue;
      for (const f of record.removed) superseded.add(f.key);
    }
  }
  return superseded.size === 0 ? [...keys] : keys.filter((k) => !superseded.has(k));
}

/** What `finishCompactions` did. */
export interface FinishResult {
  /** Compactions completed (merged file published and/or leftover inputs deleted). */
  finished: number;
  /** Compactions marked aborted: the merged file never became visible and cannot, every input is intact. */
  aborted: number;
  /**
   * Record ids whose merged file and staged copy are gone while some inputs were deleted: rows
   * are missing (never seen unless objects were deleted by hand). `sluice quality` reports the
   * missing files; restore them or replay the log.
   */
  lost: string[];
}

/**
 * Completes the compactions a crash interrupted (see the module doc). Records younger than
 * `graceMs` (default 0) are left to a compactor that may still be running.
 */
export async function finishCompactions(store: ObjectStore, options: { graceMs?: number; now?: number } = {}): Promise<FinishResult> {
  const now = options.now ?? Date.now();
  const grace = options.graceMs ?? 0;
  const records = await listCommitRecords(store);
  const result: FinishResult = { finished: 0, aborted: 0, lost: [] };
  const removedLater = new Set<string>();
  // Newest first, so "removed by a later record" (retention, a later compaction) is known.
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i]!;
    if (r.aborted) continue;
    if (r.kind === 'compact' && r.added.length > 0 && Date.parse(r.time) <= now - grace) {
      const merged = r.added[0]!;
      const dir = merged.key.slice(0, merged.key.lastIndexOf('/') + 1);
      const present = new Set((await store.list(dir)).map((o) => o.key));
      const leftovers = r.removed.filter((f) => present.has(f.key));
      let visible = present.has(merged.key) || removedLater.has(merged.key);
      let changed = false;
      if (!visible) {
        const stagingKey = `${STAGING_PREFIX}${merged.key}`;
        if ((await store.list(stagingKey)).some((o) => o.key === stagingKey)) {
          await store.publish({ key: merged.key, stagingKey, size: merged.bytes ?? 0 });
          visible = changed = true;
        } else if (leftovers.length === r.removed.length) {
          await writeCommitRecord(store, { ...r, added: [], removed: [], aborted: true });
          result.aborted++;
          continue;
        } else {
          result.lost.push(r.id);
        }
      }
      if (visible && leftovers.length > 0) {
        for (const f of leftovers) await store.delete(f.key);
        changed = true;
      }
      if (changed) result.finished++;
    }
    for (const f of r.removed) removedLater.add(f.key);
  }
  // Merged files staged by a compactor that died before writing its record: nobody will publish them.
  const recorded = new Set(records.filter((r) => r.kind === 'compact').flatMap((r) => r.added.map((f) => `${STAGING_PREFIX}${f.key}`)));
  for (const o of await store.list(STAGING_PREFIX)) {
    if (MERGED_FILE.test(o.key) && !recorded.has(o.key) && o.mtimeMs <= now - grace) await store.delete(o.key);
  }
  return result;
}

/**
 * Background job: finishes interrupted compactions, then compacts every partition of `tables`
 * (default COMPACTED_TABLES) that ended at least `olderThanMs` before `now`.
 */
export async function compactAll(
  store: ObjectStore,
  options: CompactOptions & {
    olderThanMs: number;
    tables?: TableName[];
    finishGraceMs?: number;
    /**
     * Also compact partitions that have not ended (the current hour): safe when nothing else
     * publishes meanwhile (the engine runs it between its checkpoints), and cheap because a run
     * only merges files that outweigh the big one (`convergent`).
     */
    openPartitions?: boolean;
    /** Stops between partitions once aborted (each partition's compaction is atomic): a closing engine does not wait for a whole run. */
    signal?: AbortSignal;
  },
): Promise<{ partitions: number; files: number; outputs: number; rows: number; finished: FinishResult }> {
  const now = options.now ?? Date.now();
  const finished = await finishCompactions(store, { graceMs: options.finishGraceMs ?? 60_000, now });
  const total = { partitions: 0, files: 0, outputs: 0, rows: 0, finished };
  const records = await listCommitRecords(store);
  for (const table of options.tables ?? COMPACTED_TABLES) {
    const prefix = TABLES[table].prefix;
    for (const [dir, files] of await partitionsOf(store, table)) {
      if (options.signal?.aborted) return total;
      const start = partitionTimeOfKey(dir);
      if (start === undefined || (!options.openPartitions && start + stepOf(table) > now - options.olderThanMs)) continue;
      if (files.length < 2) continue;
      const r = await compactPartition(store, prefix, dir.slice(prefix.length + 1), { ...options, now, records });
      if (r.inputs > 0) {
        total.partitions++;
        total.files += r.inputs;
        total.outputs += r.outputs;
        total.rows += r.rows;
      }
    }
  }
  return total;
}

/** Per-layer retention in days (fractions allowed); an omitted layer is kept forever. */
export interface RetentionPolicy {
  bronze?: number;
  silver?: number;
  /** sessions, hourly_metrics, daily_metrics. */
  gold?: number;
  dlq?: number;
  late?: number;
  /** Per-table overrides, in days. */
  tables?: Partial<Record<TableName, number>>;
}

const LAYER_TABLES: Record<Exclude<keyof RetentionPolicy, 'tables'>, TableName[]> = {
  bronze: ['bronze_events'],
  silver: ['events'],
  gold: ['sessions', 'hourly_metrics', 'daily_metrics'],
  dlq: ['dlq'],
  late: ['late_events'],
};

/** Days of retention per table the policy sets (validated). */
export function retentionDays(policy: RetentionPolicy): Partial<Record<TableName, number>> {
  const out: Partial<Record<TableName, number>> = {};
  for (const [layer, tables] of Object.entries(LAYER_TABLES) as Array<[keyof typeof LAYER_TABLES, TableName[]]>) {
    const days = policy[layer];
    if (days !== undefined) for (const t of tables) out[t] = days;
  }
  Object.assign(out, policy.tables ?? {});
  for (const [t, d] of Object.entries(out)) {
    if (!(t in TABLES)) throw userError('invalid_option', `retention table must be one of ${Object.keys(TABLES).join(', ')}, got ${t}`);
    if (!(typeof d === 'number' && Number.isFinite(d) && d > 0)) throw userError('invalid_option', `retention for ${t} must be a positive number of days, got ${String(d)}`);
  }
  return out;
}

/**
 * Deletes every partition whose end is more than its table's retention before `nowMs`, with a
 * 'retention' commit record written first. Returns the files removed.
 */
export async function applyRetention(store: ObjectStore, policy: RetentionPolicy, nowMs = Date.now()): Promise<{ files: number; partitions: number }> {
  const days = retentionDays(policy);
  // An interrupted compaction in an expired partition must not publish its merged file afterwards.
  await finishCompactions(store, { now: nowMs, graceMs: 60_000 });
  const records = await listCommitRecords(store);
  const removed: CommitFile[] = [];
  const dirs: string[] = [];
  for (const [table, d] of Object.entries(days) as Array<[TableName, number]>) {
    const prefix = `${TABLES[table].prefix}/`;
    const parts = await partitionsOf(store, table);
    const present = new Set([...parts.values()].flatMap((fs) => fs.map((f) => f.key)));
    const live = foldCommitRecords(records, prefix, present);
    for (const [dir, files] of parts) {
      const start = partitionTimeOfKey(dir);
      if (start === undefined || start + stepOf(table) > nowMs - d * DAY) continue;
      dirs.push(dir);
      for (const f of files) removed.push({ key: f.key, rows: live.get(f.key) ?? 0 });
    }
  }
  if (removed.length === 0) return { files: 0, partitions: 0 };
  await writeCommitRecord(store, { id: `retention-${nowMs}`, time: new Date(nowMs).toISOString(), kind: 'retention', added: [], removed });
  for (const f of removed) await store.delete(f.key);
  await pruneEmptyDirs(store, dirs);
  return { files: removed.length, partitions: dirs.length };
}

/** Local lakes only: removes the now-empty partition directories (and empty parents) retention left. */
async function pruneEmptyDirs(store: ObjectStore, dirs: string[]): Promise<void> {
  const probe = store.localPath('_sluice');
  const root = probe === undefined ? undefined : dirname(probe);
  for (const dir of dirs) {
    let path = store.localPath(dir.replace(/\/$/, ''));
    while (path !== undefined && root !== undefined && path.length > root.length) {
      try {
        await rmdir(path);
      } catch {
        break; // not empty (or gone): stop climbing
      }
      path = dirname(path);
    }
  }
}

