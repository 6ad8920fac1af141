/**
 * Deduplication by event id within a TTL: a hot in-memory fingerprint table (kernels/dedup-table)
 * in front of an LMDB index in the shard's environment.
 *
 *   batch ──▶ fingerprints ──▶ hot table hit? ── yes ──▶ duplicate
 *                                   │ no
 *                                   ▼
 *                   id's possible buckets all hot? ── yes ──▶ new (remember as pending)
 *                                   │ no (cold buckets were evicted to bound memory)
 *                                   ▼
 *                   a cold bucket's sorted run has it? ── yes ──▶ duplicate, else new
 *
 * LMDB layout: one sub-database per hour bucket of received_at (`dedup-<hour>`), so expiry drops
 * whole databases: O(buckets), never a scan. Inside a bucket, ids are stored as runs of packed
 * 64-bit fingerprints (8 bytes each, little-endian lo/hi halves), radix-split by the top byte of
 * the fingerprint so that no step ever holds more than 1/256 of a bucket:
 *
 *   key [prefix u8][seq u32 BE]   a run: the bucket's new ids of one checkpoint with that prefix
 *   key [prefix u8][FFFFFFFF]     the prefix's sorted run: every earlier run merged, searchable
 *
 * A checkpoint writes at most 256 values per bucket instead of one per id; the runs of a bucket
 * are merged into its sorted runs only when the bucket goes cold (leaves the hot table), because
 * only cold buckets are ever searched in LMDB.
 *
 * New runs are written only in `onCheckpoint`, which the runtime calls inside its checkpoint
 * transaction, so the index and the log offset commit together: a replay after a crash sees
 * exactly the ids committed with the offset it resumes from. Merging is derived data (its own
 * transaction, idempotent; an interrupted merge is redone on open).
 *
 * Time is data time (received_at), never the wall clock, so replays decide identically.
 */
import type { Data, Utf8 } from 'apache-arrow';
import type { Database, RootDatabase } from 'lmdb';
import { userError } from '../../common/errors.js';
import { DedupTable } from '../kernels/dedup-table.js';
import { fingerprintUtf8 } from '../kernels/fingerprint.js';

const HOUR = 3_600_000;
/** Version of the LMDB layout below (1 was one key per id). */
const FORMAT = 2;
/** Sequence number reserved for a prefix's sorted run. */
const SORTED = 0xffffffff;

export interface DedupOptions {
  /** Remember ids this long (ms of received_at). */
  ttlMs: number;
  /** Entries the hot table may hold after a checkpoint before old buckets are evicted. Default 4 M. */
  hotCapacity?: number;
}

const runKey = (prefix: number, seq: number): Buffer => {
  const k = Buffer.allocUnsafe(5);
  k[0] = prefix;
  k.writeUInt32BE(seq, 1);
  return k;
};

export class DedupOperator {
  private readonly env: RootDatabase;
  private readonly ttlBuckets: number;
  private readonly hotCapacity: number;
  private readonly hot: DedupTable;
  private readonly meta: Database;
  /** Live LMDB buckets (hour numbers), ascending. */
  private buckets: number[];
  private readonly dbs = new Map<number, Database>();
  /** Buckets below this may be missing from the hot table (−Infinity: the hot table has every live id). */
  private coldBelow = -Infinity;
  /** Buckets with runs not yet merged into their sorted runs. */
  private unmerged = new Set<number>();
  /** Next run sequence number (per environment, persisted in meta with the buckets). */
  private seq: number;
  private maxBucket = -Infinity;
  /** New ids since the last checkpoint: fingerprint halves and bucket, `pendingCount` of them. */
  private pendingHi = new Uint32Array(1024);
  private pendingLo = new Uint32Array(1024);
  private pendingBucket = new Int32Array(1024);
  private pendingCount = 0;
  private hi = new Uint32Array(0);
  private lo = new Uint32Array(0);
  private readonly sortedKey = Buffer.alloc(5);

  constructor(env: RootDatabase, options: DedupOptions) {
    this.env = env;
    this.ttlBuckets = Math.ceil(options.ttlMs / HOUR);
    this.hotCapacity = options.hotCapacity ?? 4_000_000;
    this.meta = env.openDB({ name: 'dedup-meta', encoding: 'msgpack' });
    this.buckets = ((this.meta.get('buckets') as number[] | undefined) ?? []).slice().sort((a, b) => a - b);
    const format = (this.meta.get('format') as number | undefined) ?? (this.buckets.length > 0 ? 1 : FORMAT);
    if (format !== FORMAT) {
      throw userError('dedup_index_format', `the shard's dedup index has format ${format}, this build reads format ${FORMAT}: replay into a fresh data directory`);
    }
    this.seq = (this.meta.get('seq') as number | undefined) ?? 0;
    this.sortedKey.writeUInt32BE(SORTED, 1);
    this.hot = new DedupTable(1 << 16);
    this.loadHot();
    this.mergeCold();
  }

  private bucketDb(bucket: number): Database {
    let db = this.dbs.get(bucket);
    if (!db) {
      db = this.env.openDB({ name: `dedup-${bucket}`, keyEncoding: 'binary', encoding: 'binary' });
      this.dbs.set(bucket, db);
    }
    return db;
  }

  /** Warm the hot table from LMDB, newest buckets first, while whole buckets fit. */
  private loadHot(): void {
    if (this.buckets.length > 0) this.maxBucket = this.buckets[this.buckets.length - 1]!;
    for (let i = this.buckets.length - 1; i >= 0; i--) {
      const b = this.buckets[i]!;
      let fits = true;
      for (const { key, value } of this.bucketDb(b).getRange({})) {
        if ((key as Buffer).readUInt32BE(1) !== SORTED) this.unmerged.add(b);
        const v = value as Buffer;
        if (fits && this.hot.size + v.length / 8 > this.hotCapacity) fits = false;
        if (fits) for (let p = 0; p < v.length; p += 8) this.hot.add(v.readUInt32LE(p + 4), v.readUInt32LE(p), b);
      }
      if (!fits) {
        // This bucket is partly loaded: it and every older one are searched in LMDB.
        this.hot.retain((x) => x > b);
        this.coldBelow = b + 1;
        for (let k = i - 1; k >= 0; k--) if (this.hasRuns(this.buckets[k]!)) this.unmerged.add(this.buckets[k]!);
        return;
      }
    }
  }

  private hasRuns(bucket: number): boolean {
    for (const { key } of this.bucketDb(bucket).getRange({})) if ((key as Buffer).readUInt32BE(1) !== SORTED) return true;
    return false;
  }

  /**
   * Marks first occurrences: `keep[i] = 1` for a row whose id was not seen within the TTL (nor
   * earlier in this batch). `receivedAt` is epoch ms per row. Returns the number of duplicates.
   */
  processBatch(eventIds: Data<Utf8>, receivedAt: Float64Array, keep: Uint8Array): number {
    const n = eventIds.length;
    if (this.hi.length < n) {
      this.hi = new Uint32Array(n * 2);
      this.lo = new Uint32Array(n * 2);
    }
    const { hi, lo } = this;
    fingerprintUtf8(eventIds, hi, lo);
    const searchCold = this.coldBelow !== -Infinity;
    let duplicates = 0;
    for (let i = 0; i < n; i++) {
      const bucket = Math.floor(receivedAt[i]! / HOUR);
      if (bucket > this.maxBucket) this.maxBucket = bucket;
      const h = hi[i]!;
      const l = lo[i]!;
      let isNew = this.hot.add(h, l, bucket);
      if (isNew && searchCold && this.inColdBuckets(h, l)) isNew = false;
      if (isNew) {
        keep[i] = 1;
        if (this.pendingCount === this.pendingHi.length) this.growPending();
        const p = this.pendingCount++;
        this.pendingHi[p] = h;
        this.pendingLo[p] = l;
        this.pendingBucket[p] = bucket;
      } else {
        keep[i] = 0;
        duplicates++;
      }
    }
    return duplicates;
  }

  private growPending(): void {
    const grow = <T extends Uint32Array | Int32Array>(a: T): T => {
      const b = new (a.constructor as new (n: number) => T)(a.length * 2);
      b.set(a);
      return b;
    };
    this.pendingHi = grow(this.pendingHi);
    this.pendingLo = grow(this.pendingLo);
    this.pendingBucket = grow(this.pendingBucket);
  }

  /** Binary search of the fingerprint in the sorted runs of every live cold bucket. */
  private inColdBuckets(hi: number, lo: number): boolean {
    this.sortedKey[0] = hi >>> 24;
    for (let k = this.buckets.length - 1; k >= 0; k--) {
      const b = this.buckets[k]!;
      if (b >= this.coldBelow) continue;
      // A zero-copy view, valid until the next LMDB read: searched at once.
      const run = this.bucketDb(b).getBinaryFast(this.sortedKey) as Buffer | undefined;
      if (run && searchRun(run, hi, lo)) return true;
    }
    return false;
  }

  /**
   * Writes the ids seen since the last checkpoint as runs and drops expired buckets. Must run
   * inside the runtime's `env.transactionSync`, together with the offset and operator state.
   */
  onCheckpoint(): void {
    const live = new Set(this.buckets);
    for (const [bucket, ids] of this.pendingByBucket()) {
      const db = this.bucketDb(bucket);
      const seq = this.seq++;
      for (const [prefix, run] of radixSplit(ids)) db.putSync(runKey(prefix, seq), run);
      live.add(bucket);
      if (bucket < this.coldBelow) this.unmerged.add(bucket);
    }
    const oldest = this.maxBucket - this.ttlBuckets;
    for (const b of [...live]) {
      if (b < oldest) {
        this.bucketDb(b).dropSync();
        this.dbs.delete(b);
        live.delete(b);
        this.unmerged.delete(b);
      }
    }
    this.buckets = [...live].sort((a, b) => a - b);
    this.meta.putSync('buckets', this.buckets);
    this.meta.putSync('seq', this.seq);
    this.meta.putSync('format', FORMAT);
  }

  /** Pending fingerprints grouped by bucket, packed as (lo, hi) u32 pairs. */
  private pendingByBucket(): Map<number, Uint32Array> {
    const n = this.pendingCount;
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) counts.set(this.pendingBucket[i]!, (counts.get(this.pendingBucket[i]!) ?? 0) + 1);
    const out = new Map<number, Uint32Array>();
    const fill = new Map<number, number>();
    for (const [b, c] of counts) {
      out.set(b, new Uint32Array(c * 2));
      fill.set(b, 0);
    }
    for (let i = 0; i < n; i++) {
      const b = this.pendingBucket[i]!;
      const at = fill.get(b)!;
      const ids = out.get(b)!;
      ids[at] = this.pendingLo[i]!;
      ids[at + 1] = this.pendingHi[i]!;
      fill.set(b, at + 2);
    }
    return out;
  }

  /** The hot table's size: ids held and bytes of its arrays (bounded by hotCapacity; grows by doublings). */
  get hotTable(): { ids: number; bytes: number } {
    return { ids: this.hot.size, bytes: this.hot.bytes };
  }

  /** After the checkpoint committed: forget pending ids, expire and bound the hot table. */
  afterCheckpoint(): void {
    // A burst (a replay after a restart, a long interval) grew the pending arrays: keep room for
    // twice this interval's ids, not for the burst (12 B an id; 2 M ids held 24 MiB for good).
    const keep = Math.max(1024, 2 ** Math.ceil(Math.log2(2 * this.pendingCount + 1)));
    if (this.pendingHi.length > 2 * keep) {
      this.pendingHi = new Uint32Array(keep);
      this.pendingLo = new Uint32Array(keep);
      this.pendingBucket = new Int32Array(keep);
    }
    this.pendingCount = 0;
    const oldest = this.maxBucket - this.ttlBuckets;
    if (this.hot.size > this.hotCapacity) {
      // Evict oldest buckets (all committed now) until three quarters full; LMDB still has them.
      let cutoff = oldest;
      const counts = this.hot.bucketCounts();
      let size = this.hot.size;
      for (const b of [...counts.keys()].sort((x, y) => x - y)) {
        if (size <= this.hotCapacity * 0.75) break;
        size -= counts.get(b)!;
        cutoff = b + 1;
      }
      this.hot.retain((b) => b >= cutoff);
      if (cutoff > this.coldBelow) {
        for (const b of this.buckets) if (b < cutoff && b >= this.coldBelow) this.unmerged.add(b);
        this.coldBelow = cutoff;
      }
    } else {
      this.hot.retain((b) => b >= oldest);
    }
    this.mergeCold();
  }

  /** Merges the runs of cold buckets into their sorted runs, one prefix per transaction. */
  private mergeCold(): void {
    for (const b of [...this.unmerged]) {
      if (b >= this.coldBelow) continue;
      const db = this.bucketDb(b);
      for (let prefix = 0; prefix < 256; prefix++) {
        const start = runKey(prefix, 0);
        const end = runKey(prefix, SORTED);
        const runs: Array<{ key: Buffer; value: Buffer }> = [];
        for (const { key, value } of db.getRange({ start, end })) runs.push({ key: key as Buffer, value: Buffer.from(value as Buffer) });
        if (runs.length === 0) continue;
        const sortedKey = runKey(prefix, SORTED);
        const previous = db.getBinary(sortedKey) as Buffer | undefined;
        const total = runs.reduce((n, r) => n + r.value.length, previous?.length ?? 0);
        const merged = new Uint8Array(total);
        let at = 0;
        if (previous) {
          merged.set(previous, 0);
          at = previous.length;
        }
        for (const r of runs) {
          merged.set(r.value, at);
          at += r.value.length;
        }
        // As u64 (hi·2³² + lo, little endian) the native typed-array sort orders by (hi, lo).
        new BigUint64Array(merged.buffer).sort();
        this.env.transactionSync(() => {
          db.putSync(sortedKey, merged);
          for (const r of runs) db.removeSync(r.key);
        });
      }
      this.unmerged.delete(b);
    }
  }

  get stats(): { hotEntries: number; hotBytes: number; pendingBytes: number; buckets: number; complete: boolean } {
    const pendingBytes = this.pendingHi.byteLength + this.pendingLo.byteLength + this.pendingBucket.byteLength;
    return { hotEntries: this.hot.size, hotBytes: this.hot.bytes, pendingBytes, buckets: this.buckets.length, complete: this.coldBelow === -Infinity };
  }
}

/** The ids (lo, hi pairs) split by the top byte of hi, as byte arrays ready to store. */
function radixSplit(ids: Uint32Array): Map<number, Uint8Array> {
  const counts = new Uint32Array(256);
  for (let i = 1; i < ids.length; i += 2) counts[ids[i]! >>> 24]!++;
  const runs = new Map<number, Uint32Array>();
  const fill = new Uint32Array(256);
  for (let p = 0; p < 256; p++) if (counts[p]! > 0) runs.set(p, new Uint32Array(counts[p]! * 2));
  for (let i = 0; i < ids.length; i += 2) {
    const p = ids[i + 1]! >>> 24;
    const run = runs.get(p)!;
    const at = fill[p]!;
    run[at] = ids[i]!;
    run[at + 1] = ids[i + 1]!;
    fill[p] = at + 2;
  }
  const out = new Map<number, Uint8Array>();
  for (const [p, run] of runs) out.set(p, new Uint8Array(run.buffer));
  return out;
}

/** Binary search of (hi, lo) in a sorted run of 8-byte (lo, hi) little-endian entries. */
function searchRun(run: Buffer, hi: number, lo: number): boolean {
  let a = 0;
  let b = (run.length >>> 3) - 1;
  while (a <= b) {
    const m = (a + b) >>> 1;
    const h = run.readUInt32LE(m * 8 + 4);
    const l = h === hi ? run.readUInt32LE(m * 8) : 0;
    if (h < hi || (h === hi && l < lo)) a = m + 1;
    else if (h > hi || l > lo) b = m - 1;
    else return true;
  }
  return false;
}
