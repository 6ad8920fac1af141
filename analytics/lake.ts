/**
 * How analytics reaches the lake's files: the one module of analytics/ that touches the object
 * store.
 *
 * Which files: a lake with commit records is read through them (`foldCommitRecords`, the same
 * fold `sluice compact` and the engine use): a reader sees exactly the files the records say
 * exist and that are present, never a staged file, a stray copy, or the inputs of a finished
 * compaction that are not deleted yet. A lake without commit records is read by listing.
 * `mode: 'present'` (quality checks) reads every Parquet file present instead, so damage shows
 * up in the numbers.
 *
 * Where: a local lake is read in place. An S3 lake is read through Sluice's own S3 store,
 * because DuckDB's httpfs extension cannot be installed here: the files a query needs are
 * copied into a local cache directory (only files not already there with the same size and
 * modification time; each written to a temp name and renamed, so concurrent readers of one cache
 * never see a partial file), and DuckDB reads the copies. The cache is never evicted; delete it at will.
 */
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { rename, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { partitionTimeOfKey, TABLES, type TableName } from '../common/lake-layout.js';
import { externalError, userError } from '../common/errors.js';
import { COMMITS_PREFIX, foldCommitRecords, listCommitRecords, type CommitRecord } from '../storage/commit-record.js';
import type { ObjectInfo, ObjectStore } from '../storage/object-store.js';
import { openObjectStore } from '../storage/open-store.js';
import { mapLimit } from '../common/map-limit.js';

/** A half-open time range [fromMs, toMs) in epoch ms; an absent end is unbounded. */
export interface TimeRange {
  fromMs?: number;
  toMs?: number;
}

export interface LakeOptions {
  /** A directory, `file://…` or `s3://bucket/prefix`. */
  lake: string;
  /** Endpoint of an S3-compatible store (path-style), e.g. http://127.0.0.1:4568. */
  s3Endpoint?: string;
  /** Where S3 files are cached. Default: `<os tmpdir>/sluice-cache/<sha1 of the lake URL, 12 hex>`. */
  cacheDir?: string;
  /**
   * 'committed' (default): the files the commit records name (all files when there are no
   * records). 'present': every Parquet file under the table prefixes.
   */
  mode?: 'committed' | 'present';
  /** Parallel downloads when syncing an S3 table. Default 8. */
  downloadConcurrency?: number;
}

export const LAKE_DEFAULTS = { mode: 'committed', downloadConcurrency: 8 } as const;

export function validateLakeOptions(o: LakeOptions): Required<Pick<LakeOptions, 'mode' | 'downloadConcurrency'>> & LakeOptions {
  if (typeof o.lake !== 'string' || o.lake === '') throw userError('invalid_option', 'lake must be a directory or s3://bucket/prefix, e.g. --lake ./lake');
  const v = { ...LAKE_DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) } as Required<Pick<LakeOptions, 'mode' | 'downloadConcurrency'>> & LakeOptions;
  if (v.mode !== 'committed' && v.mode !== 'present') throw userError('invalid_option', `lake mode must be committed or present, got ${String(v.mode)}`);
  if (!Number.isInteger(v.downloadConcurrency) || v.downloadConcurrency < 1) throw userError('invalid_option', `downloadConcurrency must be a positive integer, got ${v.downloadConcurrency}`);
  return v;
}

/** Partition step of a table in ms. */
export const partitionStepMs = (table: TableName): number => (TABLES[table].granularity === 'day' ? 86_400_000 : 3_600_000);

/** Whether a partition starting at `startMs` (of `stepMs`) can hold times in `range`. */
export function partitionOverlaps(startMs: number, stepMs: number, range: TimeRange): boolean {
  return (range.fromMs === undefined || startMs + stepMs > range.fromMs) && (range.toMs === undefined || startMs < range.toMs);
}

export class Lake {
  /** Bytes and files downloaded into the cache since open (S3 only); for reports and tests. */
  readonly downloads = { files: 0, bytes: 0 };
  private records: CommitRecord[] = [];
  private recordsSignature = '';
  private readonly left = new Map<string, string>();

  private constructor(
    readonly store: ObjectStore,
    readonly cacheDir: string | undefined,
    private readonly options: ReturnType<typeof validateLakeOptions>,
  ) {}

  static async open(options: LakeOptions): Promise<Lake> {
    const o = validateLakeOptions(options);
    const store = await openObjectStore(o.lake, { s3Endpoint: o.s3Endpoint });
    const local = store.localPath('x') !== undefined;
    if (local && !existsSync(dirname(store.localPath('x')!))) {
      await store.close();
      throw userError('lake_not_found', `lake directory ${o.lake} does not exist; pass --lake DIR (the --lake of sluice serve) or s3://bucket/prefix`);
    }
    const cacheDir = local ? undefined : (o.cacheDir ?? join(tmpdir(), 'sluice-cache', createHash('sha1').update(store.url).digest('hex').slice(0, 12)));
    const lake = new Lake(store, cacheDir, o);
    await lake.refresh();
    return lake;
  }

  /** The lake as the caller named it (a directory, file://… or s3://…). */
  get location(): string {
    return this.options.lake;
  }

  /** 'committed' or 'present' (see `LakeOptions.mode`). */
  get mode(): 'committed' | 'present' {
    return this.options.mode;
  }

  get isLocal(): boolean {
    return this.cacheDir === undefined;
  }

  /** Commit records as last read (time order). */
  get commitRecords(): readonly CommitRecord[] {
    return this.records;
  }

  /**
   * Re-reads the commit records when the set of record objects changed (keys, sizes, mtimes)
   * since the last read. Returns whether anything changed.
   */
  async refresh(): Promise<boolean> {
    const listed = (await this.store.list(COMMITS_PREFIX)).filter((o) => o.key.endsWith('.json'));
    const signature = listed.map((o) => `${o.key}:${o.size}:${o.mtimeMs}`).join('\n');
    if (signature === this.recordsSignature) return false;
    this.records = listed.length === 0 ? [] : await listCommitRecords(this.store);
    this.recordsSignature = signature;
    return true;
  }

  /**
   * Leaves a file out of every table read from now on, for `why` (`sluice quality` found it
   * damaged and reported it; its other checks then run over the files that can be read).
   */
  leaveOut(key: string, why: string): void {
    this.left.set(key, why);
  }

  /** Files left out (key → why). */
  get leftOut(): ReadonlyMap<string, string> {
    return this.left;
  }

  /** Parquet objects present under a table's prefix. */
  async present(table: TableName): Promise<ObjectInfo[]> {
    return (await this.store.list(`${TABLES[table].prefix}/`)).filter((o) => o.key.endsWith('.parquet'));
  }

  /** Keys of the table's readable Parquet files (see module doc), pruned to partitions overlapping `range`. */
  async keys(table: TableName, range?: TimeRange): Promise<ObjectInfo[]> {
    return this.select(table, await this.present(table), range);
  }

  private select(table: TableName, present: ObjectInfo[], range?: TimeRange): ObjectInfo[] {
    let files = this.left.size === 0 ? present : present.filter((o) => !this.left.has(o.key));
    if (this.options.mode === 'committed' && this.records.length > 0) {
      const live = foldCommitRecords(this.records, `${TABLES[table].prefix}/`, new Set(present.map((o) => o.key)));
      files = present.filter((o) => live.has(o.key));
    }
    if (!range || (range.fromMs === undefined && range.toMs === undefined)) return files;
    const step = partitionStepMs(table);
    return files.filter((o) => {
      const start = partitionTimeOfKey(o.key);
      return start === undefined || partitionOverlaps(start, step, range);
    });
  }

  /** The directory DuckDB reads the lake's files under: the lake's own (local) or the cache (S3). */
  get readRoot(): string {
    return this.cacheDir ?? dirname(this.store.localPath('x')!);
  }

  /** Where DuckDB reads `key`: in place (local) or its copy in the cache (S3; valid after `paths` synced it). */
  pathOf(key: string): string {
    return this.cacheDir === undefined ? this.store.localPath(key)! : join(this.cacheDir, ...key.split('/'));
  }

  /** Local paths DuckDB can read for a table: in place, or synced into the cache (S3). */
  async paths(table: TableName, range?: TimeRange): Promise<string[]> {
    const files = await this.keys(table, range);
    if (this.cacheDir === undefined) return files.map((o) => this.store.localPath(o.key)!);
    return mapLimit(files, this.options.downloadConcurrency, async (o) => {
      const path = this.pathOf(o.key);
      // Same size and modification time as the object: the copy is current. (Gold windows are
      // rewritten in place under the same key, so the size alone is not enough.)
      if (existsSync(path)) {
        const st = statSync(path);
        if (st.size === o.size && Math.abs(st.mtimeMs - o.mtimeMs) < 1) return path;
      }
      const body = await this.store.get(o.key);
      if (body === undefined) throw externalError('lake_file_vanished', `${o.key} disappeared from ${this.store.url} while it was being read (a compaction or retention ran); run the query again`);
      mkdirSync(dirname(path), { recursive: true });
      const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
      await writeFile(tmp, body);
      await utimes(tmp, new Date(o.mtimeMs), new Date(o.mtimeMs));
      await rename(tmp, path);
      this.downloads.files++;
      this.downloads.bytes += body.byteLength;
      return path;
    });
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
