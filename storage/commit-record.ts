/**
 * Commit records: one JSON object per publish under `_sluice/commits/`, saying which files a
 * flush, compaction, reconciliation or retention run added and removed, with row counts and the
 * log offsets covered. `liveFiles` folds them into the set of files that should exist, which
 * `sluice quality` compares with what is actually there.
 */
import { META_PREFIX } from '../common/lake-layout.js';
import type { ObjectStore } from './object-store.js';

export const COMMITS_PREFIX = `${META_PREFIX}/commits/`;

export interface CommitFile {
  key: string;
  rows: number;
  bytes?: number;
}

export interface CommitRecord {
  /** Deterministic per publish (`s{shard}-{first}-{last}`, `gold-hourly-{start}`, …): rewriting it is idempotent. */
  id: string;
  /** ISO time of the commit. */
  time: string;
  kind: 'flush' | 'compact' | 'reconcile' | 'retention';
  shard?: number;
  offsets?: { first: number; last: number };
  added: CommitFile[];
  removed: CommitFile[];
  /** Row accounting of a shard flush: bronze rows in = silver rows + duplicates (too-late rows are in silver too). */
  stats?: { bronzeRows: number; silverRows: number; duplicates: number; tooLate: number };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function commitRecordKey(id: string): string {
  return `${COMMITS_PREFIX}${id.replaceAll('/', '_')}.json`;
}

export async function writeCommitRecord(store: ObjectStore, record: CommitRecord): Promise<void> {
  await store.put(commitRecordKey(record.id), encoder.encode(`${JSON.stringify(record)}\n`));
}

/** Every commit record, ordered by time then id. */
export async function listCommitRecords(store: ObjectStore): Promise<CommitRecord[]> {
  const objects = await store.list(COMMITS_PREFIX);
  const records = await Promise.all(
    objects.map(async (o) => JSON.parse(decoder.decode((await store.get(o.key)) ?? new Uint8Array())) as CommitRecord),
  );
  return records.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** Files under `tablePrefix` that the commit records say exist now (added and not later removed), with their rows. */
export async function liveFiles(store: ObjectStore, tablePrefix: string): Promise<Map<string, number>> {
  const live = new Map<string, number>();
  for (const r of await listCommitRecords(store)) {
    for (const f of r.removed) if (f.key.startsWith(tablePrefix)) live.delete(f.key);
    for (const f of r.added) if (f.key.startsWith(tablePrefix)) live.set(f.key, f.rows);
  }
  return live;
}
