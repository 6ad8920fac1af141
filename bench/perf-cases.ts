/**
 * The perf-regression registry: named micro-benchmark cases over Sluice's hot kernels, run by
 * `npm run bench:check` (bench/perf-check.ts) with tinybench against {@link REFERENCE}, a fixed
 * pure-JS workload measured in the same run, and compared with bench/perf-baseline.json.
 *
 * A case is `{ name, rows, setup(), run(state) }`:
 *   - `setup()` builds everything the case needs from seeded, deterministic data (no I/O, no
 *     clock); it runs once, outside the measurement, and may be slow.
 *   - `run(state)` is the measured function: one call processes `rows` rows. No I/O, no timers,
 *     no logging; keep a result in `state` so the work cannot be optimized away. It must leave
 *     `state` ready for the next call (every call does the same work).
 *   - Aim for 1–30 ms per call and a working set of a few MB at most. The check takes each
 *     measurement's fastest call (bench/perf-check.ts says why), so a call must be long enough
 *     for timer resolution not to matter and short enough that many calls run undisturbed by
 *     the other processes on a shared machine; a case that streams through tens of MB of fresh
 *     memory measures the machine's memory, not our code (engine.dedup-table below).
 *
 * Adding a case (e.g. the engine's sessionize or aggregate kernel) is one entry in PERF_CASES:
 *
 *   defineCase({
 *     name: 'engine.sessionize',                      // group.kernel, stable: the baseline's key
 *     rows: 100_000,                                  // rows handled by ONE run() call
 *     setup: () => ({ batch: silverBatch(100_000), state: newSessionState() }),
 *     run: (s) => { s.out = sessionize(s.batch, s.state, PARAMS); },
 *   }),
 *
 * then `flock /tmp/sluice-heavy.lock npm run bench:check -- --update` and commit
 * bench/perf-baseline.json. Until then the check reports the case as NEW and does not fail.
 * Renaming a case is removing one and adding another: update the baseline. Changing what a case
 * measures (its data, row count or code path) also needs `--update`, with the reason in the
 * commit message. Do not change {@link REFERENCE}: every ratio in the baseline is relative to it.
 */
import { makeData, Utf8, type Data, type RecordBatch } from 'apache-arrow';
import { coalesceBatches, concatBatches } from '../common/arrow-concat.js';
import { readFlatIpc } from '../common/ipc-read.js';
import type { RootDatabase } from 'lmdb';
import { ShardPipeline } from '../engine/operators/shard-pipeline.js';
import { DedupTable } from '../engine/kernels/dedup-table.js';
import { fingerprintUtf8 } from '../engine/kernels/fingerprint.js';
import { IngestBatchBuilder, type IngestRow } from '../ingest/batch-builder.js';
import { JsonScanner } from '../ingest/json-scan.js';
import type { NormalizeContext } from '../ingest/normalize.js';
import { decodeArrowMessage } from '../ingest/protocols/arrow-ws.js';
import type { Admission } from '../ingest/protocols/decoded.js';
import type { WriteKey } from '../ingest/options.js';
import { decodeSegment, normalizeItems } from '../ingest/protocols/segment.js';
import { rng } from '../loadgen/random.js';
import { encodeParquet, encodeParquetMerged } from '../storage/parquet.js';
import { engineBenchInput } from './engine-data.js';
import { kernelCases } from './engine-kernel-cases.js';
import { silverRows } from '../test/storage/silver-rows.js';

/**
 * One benchmark case. `S` is the case's private state, created by `setup` and owned by the case:
 * `run` may mutate it, nothing else touches it.
 */
export interface PerfCase<S = unknown> {
  /** Stable identifier, `group.kernel` (the key in bench/perf-baseline.json). */
  readonly name: string;
  /** Rows (events, fingerprints, …) processed by one call of `run`; rows/s = rows / seconds per call. */
  readonly rows: number;
  /** One line saying what is measured (printed by `bench:check --list`). */
  readonly what?: string;
  /** Builds the input from seeded data; called once, not measured. */
  setup(): S;
  /** The measured work: synchronous, no I/O, no clock; the same work on every call. */
  run(state: S): void;
}

/** Erases a case's state type so cases of different states share one registry. */
export function defineCase<S>(c: PerfCase<S>): PerfCase {
  return c as unknown as PerfCase;
}

// ------------------------------------------------------------------------------------------------
// Seeded data
// ------------------------------------------------------------------------------------------------


const hex = (r: () => number, digits: number): string => {
  let s = '';
  while (s.length < digits) s += (Math.floor(r() * 0x10000) | 0x10000).toString(16).slice(1);
  return s.slice(0, digits);
};

/** A UUID-v4-shaped id (what Segment SDKs send as messageId). */
const uuid = (r: () => number): string => `${hex(r, 8)}-${hex(r, 4)}-4${hex(r, 3)}-a${hex(r, 3)}-${hex(r, 12)}`;

/** Event time of the generated traffic: 2026-05-10T12:00Z; `sentAt` 60 s later. */
const START_MS = Date.UTC(2026, 4, 10, 12);
const SENT_AT_MS = START_MS + 60_000;

const TRACK_EVENTS = ['Button Clicked', 'Application Opened', 'notification_view', 'notification_open', 'purchase', 'search', 'add_to_cart', 'share'];
const SCREENS = ['Home', 'Search', 'Product', 'Cart', 'Checkout', 'Settings', 'Profile'];
const DEVICES: Array<[string, string, string]> = [
  ['ios', 'iPhone14,2', 'iOS'],
  ['android', 'Pixel 8', 'Android'],
  ['tablet', 'iPad13,4', 'iPadOS'],
];
const VERSIONS = ['2.0.1', '2.1.0', '2.2.0', '3.0.0'];
const COUNTRIES = ['US', 'DE', 'NL', 'FR', 'GB', 'BR', 'IN', 'JP'];

/**
 * A Segment `/v1/batch` body of `events` track/screen calls as mobile SDKs send them (~450 B per
 * message: ids, timestamp, full context, small properties), with a batch-level `sentAt`.
 * Deterministic for a seed. {@link REFERENCE} parses one: changing this function means a new
 * REFERENCE_ID and baseline.
 */
export function segmentBatchBody(events: number, seed: number): string {
  const r = rng(seed);
  const parts: string[] = [];
  for (let i = 0; i < events; i++) {
    const u = Math.floor(5000 * r() ** 3);
    const [device, model, os] = DEVICES[u % DEVICES.length]!;
    const ts = new Date(START_MS + Math.floor(r() * 55_000)).toISOString();
    const screen = r() < 0.3;
    const message: Record<string, unknown> = {
      type: screen ? 'screen' : 'track',
      ...(screen ? { name: SCREENS[Math.floor(r() * SCREENS.length)] } : { event: TRACK_EVENTS[Math.floor(r() * TRACK_EVENTS.length)] }),
      messageId: uuid(r),
      userId: `user-${u.toString(36).padStart(6, '0')}`,
      anonymousId: `anon-${(u * 7919).toString(16).padStart(10, '0')}`,
      timestamp: ts,
      context: {
        app: { name: 'Sluice Demo', version: VERSIONS[u % VERSIONS.length] },
        device: { type: device, model },
        os: { name: os, version: '17.4' },
        library: { name: 'analytics-swift', version: '1.5.11' },
        locale: 'en-US',
        timezone: 'Europe/Amsterdam',
        location: { country: COUNTRIES[(u * 31) % COUNTRIES.length] },
        network: { wifi: r() < 0.6 },
      },
      properties: screen
        ? { duration_ms: Math.floor(r() * 60_000), referrer: 'push' }
        : { item: `sku-${Math.floor(r() * 5000)}`, price: Math.round(r() * 10_000) / 100, qty: 1 + Math.floor(r() * 3), campaign: `c${Math.floor(r() * 40)}` },
    };
    parts.push(JSON.stringify(message));
  }
  return `{"batch":[${parts.join(',')}],"sentAt":"${new Date(SENT_AT_MS).toISOString()}"}`;
}

/** An Arrow Utf8 column (no nulls) of `values`. */
function utf8Data(values: readonly string[]): Data<Utf8> {
  const enc = new TextEncoder();
  const parts = values.map((v) => enc.encode(v));
  const offsets = new Int32Array(values.length + 1);
  for (let i = 0; i < parts.length; i++) offsets[i + 1] = offsets[i]! + parts[i]!.byteLength;
  const bytes = new Uint8Array(offsets[values.length]!);
  for (let i = 0; i < parts.length; i++) bytes.set(parts[i]!, offsets[i]!);
  return makeData({ type: new Utf8(), length: values.length, nullCount: 0, valueOffsets: offsets, data: bytes });
}

/** `n` messageIds of which a fraction `dupRate` repeat an earlier id of the list (SDK retries). */
function eventIds(n: number, dupRate: number, seed: number): string[] {
  const r = rng(seed);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) ids.push(i > 0 && r() < dupRate ? ids[Math.floor(r() * i)]! : uuid(r));
  return ids;
}

const NORMALIZE_CTX: NormalizeContext = {
  writeKey: 'bench-write-key',
  source: 'segment',
  receivedAt: SENT_AT_MS + 500,
  maxFutureSkewMs: 600_000,
  maxEventBytes: 32 * 1024,
  pii: { hash: [], drop: [], salt: '' },
};

const BATCH_KEY = Buffer.from('batch');
/** The write key of the Arrow and Segment decode cases, and an admission that lets every message in (auth and rate limits are the server's). */
const ARROW_KEY: WriteKey = { key: NORMALIZE_CTX.writeKey };
const ARROW_ADMISSION: Admission = { authenticate: () => ARROW_KEY, admit: () => undefined };

/** State of the ingest cases: a Segment body, parsed once, and the scanner that finds its byte ranges. */
interface SegmentState {
  body: Buffer;
  items: unknown[];
  sentAt: unknown;
  context: unknown;
  scanner: JsonScanner;
  rows: IngestRow[];
}

export function segmentState(events: number, seed: number): SegmentState {
  const body = Buffer.from(segmentBatchBody(events, seed));
  const parsed = JSON.parse(body.toString('utf8')) as { batch: unknown[]; sentAt: unknown; context?: unknown };
  const s: SegmentState = {
    body,
    items: parsed.batch,
    sentAt: parsed.sentAt,
    context: parsed.context,
    scanner: new JsonScanner(),
    rows: [],
  };
  scanAndNormalize(s);
  if (s.rows.length !== events) throw new Error(`perf case setup: ${events - s.rows.length} of ${events} generated Segment events were rejected`);
  return s;
}

/** What ingest/protocols/segment.ts does after JSON.parse: scan byte ranges, normalize each item. */
function scanAndNormalize(s: SegmentState): void {
  const { scanner, items } = s;
  if (!scanner.scanBatch(s.body, BATCH_KEY) || scanner.count !== items.length) throw new Error('perf case: scanBatch did not find every item');
  s.rows = normalizeItems(items, s.body, scanner, undefined, s.sentAt, s.context, NORMALIZE_CTX).rows;
}

// ------------------------------------------------------------------------------------------------
// Reference workload
// ------------------------------------------------------------------------------------------------

/** MurmurHash3 x86_32, a private copy: the reference must not change when common/hash.ts does. */
function refMurmur3(bytes: Uint8Array, start: number, end: number, seed: number): number {
  let h = seed >>> 0;
  const len = end - start;
  const blocks = start + (len & ~3);
  let i = start;
  for (; i < blocks; i += 4) {
    let k = bytes[i]! | (bytes[i + 1]! << 8) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  let k = 0;
  const tail = len & 3;
  if (tail === 3) k ^= bytes[i + 2]! << 16;
  if (tail >= 2) k ^= bytes[i + 1]! << 8;
  if (tail >= 1) {
    k ^= bytes[i]!;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, 0x1b873593);
  }
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

interface ReferenceState {
  text: string;
  bytes: Uint8Array;
  /** Start offsets of the body's consecutive 64-byte windows. */
  windows: Int32Array;
  sink: number;
}

/**
 * The reference workload, measured next to every case in the same run so that machine speed
 * cancels out of the ratios: `JSON.parse` of a fixed 500-event Segment batch body (V8's C++
 * parser, object allocation, young-generation GC; ~3/4 of the time) plus two murmur3 passes over
 * the same bytes in 64-byte windows (a JIT-compiled integer loop over a typed array; ~1/4).
 * Nothing in it is Sluice code, so it tracks the machine, not the project. Changing it (or
 * {@link segmentBatchBody}, which makes its input) invalidates every baseline ratio: bump
 * {@link REFERENCE_ID} and regenerate the baseline.
 */
export const REFERENCE: PerfCase = defineCase<ReferenceState>({
  name: 'reference',
  rows: 500,
  what: 'JSON.parse of a fixed 500-event Segment body + 2 murmur3 passes over its bytes in 64-byte windows (not Sluice code)',
  setup: () => {
    const text = segmentBatchBody(500, 7);
    const bytes = new TextEncoder().encode(text);
    const windows = new Int32Array(Math.floor(bytes.length / 64));
    for (let i = 0; i < windows.length; i++) windows[i] = i * 64;
    return { text, bytes, windows, sink: 0 };
  },
  run: (s) => {
    const parsed = JSON.parse(s.text) as { batch: unknown[] };
    let h = parsed.batch.length;
    const { bytes, windows } = s;
    for (let i = 0; i < windows.length; i++) h ^= refMurmur3(bytes, windows[i]!, windows[i]! + 64, h);
    for (let i = 0; i < windows.length; i++) h ^= refMurmur3(bytes, windows[i]!, windows[i]! + 64, 0x2545f491);
    s.sink = h;
  },
});

/** Identifies {@link REFERENCE}'s definition; stored in the baseline, which is refused when it differs. */
export const REFERENCE_ID = 'json-parse-segment500+2x-murmur3-64B/v1';

// ------------------------------------------------------------------------------------------------
// Cases
// ------------------------------------------------------------------------------------------------

/** Every case `bench:check` runs, in run order. Add new cases at the end (see the top of this file). */
export const PERF_CASES: readonly PerfCase[] = [
  defineCase({
    name: 'engine.dedup-table',
    rows: 100_000,
    // Four tables of 25k rather than one of 100k: a 100k table (3–5 MB of fresh typed arrays
    // per call) measured the machine's memory and page faults (±15–20 % between runs on shared
    // cores); at 25k the table stays in cache (±2–4 %) and still probes, inserts and grows.
    what: 'DedupTable.add of 100k fingerprints (2 % repeats) as 4 batches of 25k, each into a fresh table (1<<14, grows once)',
    setup: () => {
      const chunks = [0, 1, 2, 3].map((k) => {
        const ids = utf8Data(eventIds(25_000, 0.02, 11 + k));
        const hi = new Uint32Array(ids.length);
        const lo = new Uint32Array(ids.length);
        fingerprintUtf8(ids, hi, lo);
        return { hi, lo, bucket: 493_000 + k };
      });
      return { chunks, added: 0 };
    },
    run: (s) => {
      let added = 0;
      for (const { hi, lo, bucket } of s.chunks) {
        const t = new DedupTable(1 << 14);
        for (let i = 0; i < hi.length; i++) if (t.add(hi[i]!, lo[i]!, bucket)) added++;
      }
      s.added = added;
    },
  }),

  defineCase({
    name: 'engine.fingerprint',
    rows: 100_000,
    what: 'fingerprintUtf8 (2 × murmur3) over an Arrow Utf8 column of 100k UUID event ids',
    setup: () => {
      const ids = utf8Data(eventIds(100_000, 0, 12));
      return { ids, hi: new Uint32Array(ids.length), lo: new Uint32Array(ids.length) };
    },
    run: (s) => fingerprintUtf8(s.ids, s.hi, s.lo),
  }),

  defineCase<SegmentState>({
    name: 'ingest.segment-normalize',
    rows: 500,
    what: 'after JSON.parse of a 500-event Segment batch: JsonScanner.scanBatch + normalizeSegmentItem per item (ingest/protocols/segment.ts)',
    setup: () => segmentState(500, 13),
    run: scanAndNormalize,
  }),

  defineCase({
    name: 'ingest.batch-ipc',
    rows: 1024,
    what: 'IngestBatchBuilder: push 1024 normalized rows (raw/properties as body byte ranges) + toIPC (one shard log record, a typical group commit)',
    setup: () => ({ rows: segmentState(1024, 14).rows, builder: new IngestBatchBuilder(1024), out: new Uint8Array(0) as Uint8Array }),
    run: (s) => {
      const { rows, builder } = s;
      builder.reset();
      for (let i = 0; i < rows.length; i++) builder.push(rows[i]!);
      s.out = builder.toIPC();
    },
  }),

  defineCase({
    name: 'ingest.arrow-decode',
    rows: 1000,
    what: 'decodeArrowMessage of 20 Arrow WS messages of 50 events (IngestBatchBuilder streams, as the loadgen sends): ipc-guard, IPC read, per-row normalize (ingest/protocols/arrow-ws.ts)',
    setup: () => {
      const rows = segmentState(1000, 15).rows;
      const builder = new IngestBatchBuilder(50);
      const messages: Uint8Array[] = [];
      for (let i = 0; i < rows.length; i += 50) {
        builder.reset();
        for (const r of rows.slice(i, i + 50)) builder.push(r);
        messages.push(builder.toIPC());
      }
      return { messages, accepted: 0 };
    },
    run: (s) => {
      let accepted = 0;
      for (const m of s.messages) {
        const d = decodeArrowMessage(m, ARROW_KEY, ARROW_ADMISSION, () => NORMALIZE_CTX);
        if (d.kind !== 'decoded' || d.rejects.length > 0) throw new Error('perf case: an Arrow message was refused or had rejects');
        accepted += d.rows.length;
      }
      s.accepted = accepted;
    },
  }),

  defineCase({
    name: 'storage.parquet-encode',
    rows: 20_000,
    what: 'encodeParquet (parquet-wasm, ZSTD, defaults) of 20k silver rows (test/storage/silver-rows.ts, seed 42)',
    setup: () => ({ batches: silverRows({ rows: 20_000, seed: 42, batchRows: 10_000 }), out: new Uint8Array(0) as Uint8Array }),
    run: (s) => {
      s.out = encodeParquet(s.batches);
    },
  }),

  ...(['sessionize', 'aggregate'] as const).map((kernel) =>
    defineCase({
      name: `engine.${kernel}`,
      rows: 20_000,
      what: `bench/engine-kernel-cases.ts ${kernel} over 20k seeded loadgen events (2 000 users, batches of 4096), fresh state per call`,
      setup: () => kernelCases(engineBenchInput(20_000, { users: 2_000, batchRows: 4096 }).batches).find((c) => c.name === kernel)!,
      run: (c) => {
        c.reset();
        c.run();
      },
    }),
  ),
  defineCase({
    name: 'engine.state-checkpoint',
    rows: 20_000,
    what: 'incremental checkpoint state after 20k seeded loadgen events (2 000 users): every changed user\'s open sessions as their binary record (SessionTable.userRecord) + dirty accumulators (counters, new-user runs) handed to a store (no LMDB I/O)',
    setup: () => {
      const c = kernelCases(engineBenchInput(20_000, { users: 2_000, batchRows: 4096 }).batches).find((k) => k.name === 'checkpoint')!;
      c.reset();
      return c;
    },
    run: (c) => c.run(),
  }),
  ...rangeCases(),
  coalesceCase(),
  encodeMergedCase(),
  defineCase({
    name: 'ingest.segment-decode',
    rows: 500,
    what: 'decodeSegment of a 500-event Segment batch body: the one-pass scanner (ingest/segment-scan.ts) + normalizeSegmentItem per item — what the ack thread does with a /v1/batch body',
    setup: () => ({ body: Buffer.from(segmentBatchBody(500, 13)), accepted: 0 }),
    run: (s) => {
      const d = decodeSegment(s.body, undefined, ARROW_ADMISSION, () => NORMALIZE_CTX);
      if (d.kind !== 'decoded' || d.rows.length !== 500) throw new Error('perf case: the Segment body was refused or had rejects');
      s.accepted = d.rows.length;
    },
  }),
];

/**
 * A fresh shard's LMDB as the pipeline sees it while processing: every database empty, writes
 * dropped. A fresh shard reads nothing from LMDB between checkpoints (no cold dedup buckets, no
 * restored state), so the range cases time CPU only; their checkpoint writes are not run.
 */
export function emptyLmdb(): RootDatabase {
  const db = {
    get: () => undefined,
    getBinary: () => undefined,
    getBinaryFast: () => undefined,
    getRange: () => [],
    putSync: () => true,
    removeSync: () => true,
    dropSync: () => undefined,
    transactionSync: <T>(f: () => T): T => f(),
    openDB: () => db,
  };
  return db as unknown as RootDatabase;
}

/**
 * The engine's range consumer (ShardRuntime.processRecords without its buffering): each log
 * record of a range read with `readFlatIpc` (the engine's reader) from the bytes ingest appended
 * (IngestBatchBuilder.toIPC), the range's batches concatenated, and ONE ShardPipeline.processBatch
 * (dedup, watermark, sessionize, aggregate, silver batch) with the records' ends. The same
 * 250 Segment events as 10 records of 25 (the small group commits of SDK traffic, where the
 * fixed cost per record shows) and as one record of 250 (a range under load); the ratio of the
 * two is the per-record overhead. A fresh pipeline per call (its construction is timed: a
 * 64 K-entry hot dedup table, empty session and aggregate state), or every event would be a
 * duplicate from the second call on.
 */
function rangeCases(): PerfCase[] {
  const shape = [
    { name: 'engine.range-small-records', records: 10, perRecord: 25 },
    { name: 'engine.range-large-record', records: 1, perRecord: 250 },
  ];
  return shape.map(({ name, records, perRecord }) =>
    defineCase({
      name,
      rows: records * perRecord,
      what: `range consumer: readFlatIpc per record, concatBatches, one ShardPipeline.processBatch over ${records} log record${records === 1 ? '' : 's'} of ${perRecord} Segment events (IngestBatchBuilder.toIPC, seed 15), fresh pipeline per call, LMDB empty (no I/O)`,
      setup: () => ({ payloads: segmentRecords(records, perRecord, 15), silverRows: 0 }),
      run: (s) => {
        const pipeline = new ShardPipeline({ shard: 0, db: emptyLmdb(), allowedLatenessMs: 2 * 3_600_000, sessionGapMs: 1_800_000, dedupTtlMs: 48 * 3_600_000 });
        let silver = 0;
        // As ShardRuntime.processRecords does: each record read on its own, the range concatenated and run as one batch.
        const batches = s.payloads.flatMap((bytes) => readFlatIpc(bytes)!.batches);
        const ends = new Int32Array(batches.length);
        batches.reduce((n, b, k) => (ends[k] = n + b.numRows), 0);
        silver += pipeline.processBatch(batches.length === 1 ? batches[0]! : concatBatches(batches), ends).silver.numRows;
        if (silver === 0) throw new Error('range case: no silver rows (every event dropped?)');
        s.silverRows = silver;
      },
    }),
  );
}

/**
 * The shard's buffer assembly before a Parquet encode: 200 log records of 20 Segment events (the
 * group commits of SDK traffic, read as the engine reads them: readFlatIpc, so each brings its
 * own six dictionaries) coalesced into one batch — per-part costs (dictionary unification,
 * validity) against per-row copying.
 */
function coalesceCase(): PerfCase {
  const records = 200;
  const perRecord = 20;
  return defineCase({
    name: 'engine.coalesce-records',
    rows: records * perRecord,
    what: `coalesceBatches of ${records} ingest batches of ${perRecord} Segment events (IngestBatchBuilder.toIPC → readFlatIpc, seed 16)`,
    setup: () => ({ batches: segmentRecordBatches(records, perRecord, 16), rows: 0 }),
    run: (s) => {
      const out = coalesceBatches(s.batches);
      if (out.length !== 1) throw new Error(`coalesce case: ${out.length} batches, expected 1`);
      s.rows = out[0]!.numRows;
    },
  });
}

/**
 * A shard's checkpoint encode of its buffer: the same 200 records of 20 Segment events merged
 * straight into the IPC stream parquet-wasm reads and encoded (encodeParquetMerged — the engine's
 * path), so the merge and the encode are guarded together.
 */
function encodeMergedCase(): PerfCase {
  const records = 200;
  const perRecord = 20;
  return defineCase({
    name: 'engine.encode-merged-records',
    rows: records * perRecord,
    what: `encodeParquetMerged (ZSTD, defaults) of ${records} ingest batches of ${perRecord} Segment events (IngestBatchBuilder.toIPC → readFlatIpc, seed 16)`,
    setup: () => ({ batches: segmentRecordBatches(records, perRecord, 16), out: new Uint8Array(0) as Uint8Array }),
    run: (s) => {
      s.out = encodeParquetMerged(s.batches);
    },
  });
}

/** The batches of {@link segmentRecords}, as the engine reads them (readFlatIpc): one per record. */
function segmentRecordBatches(records: number, perRecord: number, seed: number): RecordBatch[] {
  return segmentRecords(records, perRecord, seed).flatMap((bytes) => readFlatIpc(bytes)!.batches);
}

/** `records` log records of `perRecord` seeded Segment events each, as ingest writes them (IngestBatchBuilder.toIPC). */
function segmentRecords(records: number, perRecord: number, seed: number): Uint8Array[] {
  const rows = segmentState(records * perRecord, seed).rows;
  const builder = new IngestBatchBuilder(perRecord);
  const payloads: Uint8Array[] = [];
  for (let r = 0; r < records; r++) {
    builder.reset();
    for (let i = r * perRecord; i < (r + 1) * perRecord; i++) builder.push(rows[i]!);
    payloads.push(builder.toIPC());
  }
  return payloads;
}
