/**
 * Commit records: one JSON object per publish under `_sluice/commits/<id>.json`, saying which
 * files a flush, compaction, reconciliation, retention or erasure run added and removed, with row counts
 * and the log offsets covered. `liveFiles` folds them (in time order) into the set of files that
 * should exist, which `sluice query` reads and `sluice quality` compares with what is there.
 *
 * Ids are deterministic per publish (`s{shard}-{first}-{last}`, `compact-{hash}`, …), so writing
 * a record again (recovery) overwrites it with the same content instead of adding a second one.
 */
import { META_PREFIX } from '../common/lake-layout.js';
import { externalError } from '../common/errors.js';
import type { ObjectStore } from './object-store.js';

export const COMMITS_PREFIX = `${META_PREFIX}/commits/`;

/** A file a commit added or removed. */
export interface CommitFile {
  /** Object key relative to the lake root. */
  key: string;
  /** Rows in the file (0 when unknown, e.g. retention of files no record described). */
  rows: number;
  /** Encoded size in bytes, when known. */
  bytes?: number;
}

/** `erase`: a file rewritten (or deleted) without an erased user's rows (storage/rewrite.ts); removed = the old rows, added = the rows kept. */
export type CommitKind = 'flush' | 'compact' | 'reconcile' | 'retention' | 'erase';

export interface CommitRecord {
  /** Deterministic per publish (`s{shard}-{first}-{last}`, `compact-{hash}`, `gold-hourly-{start}`, …): rewriting it is idempotent. */
  id: string;
  /** ISO-8601 UTC time of the commit (records fold in this order, then by id). */
  time: string;
  kind: CommitKind;
  shard?: number;
  /** Inclusive log offsets the commit covers (flushes). */
  offsets?: { first: number; last: number };
  added: CommitFile[];
  removed: CommitFile[];
  /** Row accounting of a shard flush: bronze rows in = silver rows + duplicates (too-late rows are in silver too). */
  stats?: { bronzeRows: number; silverRows: number; duplicates: number; tooLate: number };
  /** Set by `finishCompactions` on a compaction that never became visible: the record then adds and removes nothing. */
  aborted?: boolean;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function commitRecordKey(id: string): string {
  return `${COMMITS_PREFIX}${id.replaceAll('/', '_')}.json`;
}

/** Writes (or idempotently rewrites) a record; atomically visible like any `put`. */
export async function writeCommitRecord(store: ObjectStore, record: CommitRecord): Promise<void> {
  await store.put(commitRecordKey(record.id), encoder.encode(`${JSON.stringify(record)}\n`));
}

export const compareRecords = (a: CommitRecord, b: CommitRecord): number =>
  a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;

/** Every commit record, ordered by time then id. Reads them 16 at a time. */
export async function listCommitRecords(store: ObjectStore): Promise<CommitRecord[]> {
  const objects = (await store.list(COMMITS_PREFIX)).filter((o) => o.key.endsWith('.json'));
  const records: CommitRecord[] = [];
  for (let i = 0; i < objects.length; i += 16) {
    const page = await Promise.all(
      objects.slice(i, i + 16).map(async (o) => {
        const bytes = await store.get(o.key);
        if (bytes === undefined) return undefined; // deleted between list and get
        try {
          return JSON.parse(decoder.decode(bytes)) as CommitRecord;
        } catch (err) {
          throw externalError('corrupt_commit_record', `commit record ${o.key} in ${store.url} is not valid JSON; move it aside and run \`sluice quality\``, err, 'none');
        }
      }),
    );
    for (const r of page) if (r) records.push(r);
  }
  return records.sort(compareRecords);
}

/**
 * Files under `tablePrefix` that the commit records say exist now (added and not later
 * removed), with their row counts.
 *
 * One rule keeps readers exact across a compaction in flight: a 'compact' record whose merged
 * file is not visible yet while some of its inputs still are has not happened yet (the
 * compaction writes its record before publishing the merged file), so it is skipped and its
 * inputs stay live. Pass `present` (keys that exist now) to apply that rule without another
 * listing; otherwise `liveFiles` lists `tablePrefix` itself.
 */
export async function liveFiles(
  store: ObjectStore,
  tablePrefix: string,
  options: { records?: CommitRecord[]; present?: ReadonlySet<string> } = {},
): Promise<Map<string, number>> {
  const records = options.records ?? (await listCommitRecords(store));
  const present = options.present ?? new Set((await store.list(tablePrefix)).map((o) => o.key));
  return foldCommitRecords(records, tablePrefix, present);
}

/** The pure fold behind `liveFiles` (records in time order). */
export function foldCommitRecords(records: readonly CommitRecord[], tablePrefix: string, present: ReadonlySet<string>): Map<string, number> {
  const inFlight = (r: CommitRecord): boolean => r.kind === 'compact' && r.added.some((f) => !present.has(f.key)) && r.removed.some((f) => present.has(f.key));
  // A file compacted away never comes back (its inputs are flush and merged files, whose names are
  // never used again), whatever the order of the records' times: a compaction recorded (before its
  // fix) with a time earlier than the flush that added one of its inputs removed it before it was added.
  const gone = new Set<string>();
  for (const r of records) if (!r.aborted && r.kind === 'compact' && !inFlight(r)) for (const f of r.removed) gone.add(f.key);
  const live = new Map<string, number>();
  for (const r of records) {
    if (r.aborted || inFlight(r)) continue;
    for (const f of r.removed) if (f.key.startsWith(tablePrefix)) live.delete(f.key);
    for (const f of r.added) if (f.key.startsWith(tablePrefix) && !gone.has(f.key)) live.set(f.key, f.rows);
  }
  return live;
}
