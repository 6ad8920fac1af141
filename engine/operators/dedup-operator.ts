/**
 * Deduplication by event id within a TTL: a hot in-memory fingerprint table (kernels/dedup-table)
 * in front of an LMDB index in the shard's environment.
 *
 *   batch ──▶ fingerprints ──▶ hot table hit? ── yes ──▶ duplicate
 *                                   │ no
 *                                   ▼
 *                   hot table complete? ── yes ──▶ new (remember as pending)
 *                                   │ no (entries were evicted to bound memory)
 *                                   ▼
 *                   LMDB bucket db has it? ── yes ──▶ duplicate, else new
 *
 * LMDB keeps one sub-database per hour bucket of received_at (`dedup-<hour>`), so expiry drops
 * whole databases: O(buckets), never a scan. New fingerprints are written to LMDB only in
 * `onCheckpoint`, which the runtime calls inside its checkpoint transaction, so the index and
 * the log offset commit together: a replay after a crash sees exactly the ids committed with
 * the offset it resumes from.
 *
 * Time is data time (received_at), never the wall clock, so replays decide identically.
 */
import type { Data, Utf8 } from 'apache-arrow';
import type { Database, RootDatabase } from 'lmdb';
import { DedupTable } from '../kernels/dedup-table.js';
import { fingerprintUtf8 } from '../kernels/fingerprint.js';

const HOUR = 3_600_000;

export interface DedupOptions {
  /** Remember ids this long (ms of received_at). */
  ttlMs: number;
  /** Entries the hot table may hold after a checkpoint before old buckets are evicted. Default 4 M. */
  hotCapacity?: number;
}

export class DedupOperator {
  private readonly env: RootDatabase;
  private readonly ttlBuckets: number;
  private readonly hotCapacity: number;
  private readonly hot: DedupTable;
  private readonly meta: Database;
  /** Live LMDB buckets (hour numbers). */
  private buckets: number[];
  private readonly dbs = new Map<number, Database>();
  /** True while the hot table holds every id of every live bucket (no LMDB lookups needed). */
  private complete = true;
  private maxBucket = -Infinity;
  private pendingHi: number[] = [];
  private pendingLo: number[] = [];
  private pendingBucket: number[] = [];
  private hi = new Uint32Array(0);
  private lo = new Uint32Array(0);
  private readonly key = Buffer.alloc(8);

  constructor(env: RootDatabase, options: DedupOptions) {
    this.env = env;
    this.ttlBuckets = Math.ceil(options.ttlMs / HOUR);
    this.hotCapacity = options.hotCapacity ?? 4_000_000;
    this.meta = env.openDB({ name: 'dedup-meta', encoding: 'msgpack' });
    this.buckets = ((this.meta.get('buckets') as number[] | undefined) ?? []).slice().sort((a, b) => a - b);
    this.hot = new DedupTable(1 << 16);
    this.loadHot();
  }

  private bucketDb(bucket: number): Database {
    let db = this.dbs.get(bucket);
    if (!db) {
      db = this.env.openDB({ name: `dedup-${bucket}`, keyEncoding: 'binary', encoding: 'binary' });
      this.dbs.set(bucket, db);
    }
    return db;
  }

  /** Warm the hot table from LMDB, newest buckets first, while it fits. */
  private loadHot(): void {
    if (this.buckets.length > 0) this.maxBucket = this.buckets[this.buckets.length - 1]!;
    for (let i = this.buckets.length - 1; i >= 0; i--) {
      const b = this.buckets[i]!;
      for (const { key } of this.bucketDb(b).getRange({})) {
        if (this.hot.size >= this.hotCapacity) {
          this.complete = false;
          return;
        }
        const k = key as Buffer;
        this.hot.add(k.readUInt32BE(0), k.readUInt32BE(4), b);
      }
    }
  }

  /**
   * Marks first occurrences: `keep[i] = 1` for a row whose id was not seen within the TTL (nor
   * earlier in this batch). Returns the number of duplicates.
   */
  processBatch(eventIds: Data<Utf8>, receivedAt: Float64Array, keep: Uint8Array): number {
    const n = eventIds.length;
    if (this.hi.length < n) {
      this.hi = new Uint32Array(n * 2);
      this.lo = new Uint32Array(n * 2);
    }
    const { hi, lo } = this;
    fingerprintUtf8(eventIds, hi, lo);
    let duplicates = 0;
    for (let i = 0; i < n; i++) {
      const bucket = Math.floor(receivedAt[i]! / HOUR);
      if (bucket > this.maxBucket) this.maxBucket = bucket;
      const h = hi[i]!;
      const l = lo[i]!;
      let isNew = this.hot.add(h, l, bucket);
      if (isNew && !this.complete && this.inLmdb(h, l)) isNew = false;
      if (isNew) {
        keep[i] = 1;
        this.pendingHi.push(h);
        this.pendingLo.push(l);
        this.pendingBucket.push(bucket);
      } else {
        keep[i] = 0;
        duplicates++;
      }
    }
    return duplicates;
  }

  private inLmdb(hi: number, lo: number): boolean {
    this.key.writeUInt32BE(hi, 0);
    this.key.writeUInt32BE(lo, 4);
    for (let i = this.buckets.length - 1; i >= 0; i--) {
      if (this.bucketDb(this.buckets[i]!).doesExist(this.key)) return true;
    }
    return false;
  }

  /**
   * Writes the ids seen since the last checkpoint and drops expired buckets. Must run inside the
   * runtime's `env.transactionSync`, together with the offset and operator state.
   */
  onCheckpoint(): void {
    const live = new Set(this.buckets);
    for (let i = 0; i < this.pendingHi.length; i++) {
      const b = this.pendingBucket[i]!;
      // LMDB copies the key inside putSync, so one buffer serves every put.
      this.key.writeUInt32BE(this.pendingHi[i]!, 0);
      this.key.writeUInt32BE(this.pendingLo[i]!, 4);
      this.bucketDb(b).putSync(this.key, EMPTY);
      live.add(b);
    }
    const oldest = this.maxBucket - this.ttlBuckets;
    for (const b of [...live]) {
      if (b < oldest) {
        this.bucketDb(b).dropSync();
        this.dbs.delete(b);
        live.delete(b);
      }
    }
    this.buckets = [...live].sort((a, b) => a - b);
    this.meta.putSync('buckets', this.buckets);
  }

  /** After the checkpoint committed: forget pending ids, expire and bound the hot table. */
  afterCheckpoint(): void {
    this.pendingHi = [];
    this.pendingLo = [];
    this.pendingBucket = [];
    const oldest = this.maxBucket - this.ttlBuckets;
    if (this.hot.size > this.hotCapacity) {
      // Evict oldest buckets (all committed now) until three quarters full; LMDB still has them.
      let cutoff = oldest;
      const counts = new Map<number, number>();
      this.hot.retain((b) => {
        counts.set(b, (counts.get(b) ?? 0) + 1);
        return true;
      });
      let size = this.hot.size;
      for (const b of [...counts.keys()].sort((x, y) => x - y)) {
        if (size <= this.hotCapacity * 0.75) break;
        size -= counts.get(b)!;
        cutoff = b + 1;
      }
      this.hot.retain((b) => b >= cutoff);
      this.complete = false;
    } else {
      this.hot.retain((b) => b >= oldest);
    }
  }

  get stats(): { hotEntries: number; hotBytes: number; buckets: number; complete: boolean } {
    return { hotEntries: this.hot.size, hotBytes: this.hot.bytes, buckets: this.buckets.length, complete: this.complete };
  }
}

const EMPTY = Buffer.alloc(0);
