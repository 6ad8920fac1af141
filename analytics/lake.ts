/**
 * How analytics reaches the lake's files.
 *
 * Local lakes are read in place. S3 lakes are read through Sluice's own S3 store (DuckDB's
 * httpfs extension cannot be installed here): the files of the tables a query needs are synced
 * into a local cache directory (only new or changed files are downloaded) and DuckDB reads those.
 *
 * Files come from the commit records when there are any (`liveFiles`): a reader then never sees
 * a staged file, a file a compaction has replaced but not yet deleted, or a stray file. A lake
 * without commit records falls back to listing.
 */
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createHash } from 'node:crypto';
import { TABLES, type TableName } from '../common/lake-layout.js';
import { listCommitRecords } from '../storage/commit-record.js';
import type { ObjectStore } from '../storage/object-store.js';
import { openObjectStore } from '../storage/open-store.js';

export interface LakeOptions {
  /** A directory or s3://bucket/prefix. */
  lake: string;
  s3Endpoint?: string;
  /** Where S3 files are cached. Default: <tmp>/sluice-cache/<hash of the lake URL>. */
  cacheDir?: string;
  /** Read only files the commit records name (default true). Quality checks read every file present. */
  honourCommits?: boolean;
}

export class Lake {
  private constructor(
    readonly store: ObjectStore,
    private readonly cacheDir: string | undefined,
    /** Table prefix → committed files, or undefined when the lake has no commit records. */
    private readonly committed: Map<string, Set<string>> | undefined,
  ) {}

  static async open(options: LakeOptions): Promise<Lake> {
    const store = await openObjectStore(options.lake, { s3Endpoint: options.s3Endpoint });
    const cacheDir = store.localPath('x') === undefined ? (options.cacheDir ?? join(tmpdir(), 'sluice-cache', createHash('sha1').update(store.url).digest('hex').slice(0, 12))) : undefined;
    const records = options.honourCommits === false ? [] : await listCommitRecords(store);
    let committed: Map<string, Set<string>> | undefined;
    if (records.length > 0) {
      committed = new Map();
      const live = new Set<string>();
      for (const r of records) {
        for (const f of r.removed) live.delete(f.key);
        for (const f of r.added) live.add(f.key);
      }
      for (const spec of Object.values(TABLES)) committed.set(spec.prefix, new Set([...live].filter((k) => k.startsWith(`${spec.prefix}/`))));
    }
    return new Lake(store, cacheDir, committed);
  }

  /** Keys of a table's Parquet files (committed ones when commit records exist), optionally pruned by partition time. */
  async keys(table: TableName, range?: { fromMs?: number; toMs?: number }): Promise<string[]> {
    const prefix = TABLES[table].prefix;
    const present = (await this.store.list(`${prefix}/`)).map((o) => o.key).filter((k) => k.endsWith('.parquet'));
    const committed = this.committed?.get(prefix);
    const keys = committed ? present.filter((k) => committed.has(k)) : present;
    if (!range) return keys;
    const step = TABLES[table].granularity === 'day' ? 86_400_000 : 3_600_000;
    return keys.filter((k) => {
      const m = /year=(\d{4})\/month=(\d{2})\/day=(\d{2})(?:\/hour=(\d{2}))?/.exec(k);
      if (!m) return true;
      const start = Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), m[4] ? Number(m[4]) : 0);
      return (range.fromMs === undefined || start + step > range.fromMs) && (range.toMs === undefined || start < range.toMs);
    });
  }

  /** Local paths DuckDB can read for a table (downloading S3 objects into the cache). */
  async paths(table: TableName, range?: { fromMs?: number; toMs?: number }): Promise<string[]> {
    const keys = await this.keys(table, range);
    if (!this.cacheDir) return keys.map((k) => this.store.localPath(k)!);
    const out: string[] = [];
    const listed = new Map((await this.store.list(`${TABLES[table].prefix}/`)).map((o) => [o.key, o.size]));
    for (const key of keys) {
      const path = join(this.cacheDir, ...key.split('/'));
      if (!existsSync(path) || statSync(path).size !== listed.get(key)) {
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, (await this.store.get(key))!);
      }
      out.push(path);
    }
    return out;
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
