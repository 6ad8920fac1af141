/**
 * What shipping a shard's state to the lake costs per checkpoint (engine/state-snapshot.ts):
 * bytes of each checkpoint's delta against the full state (a base written at the end), for a
 * steady stream on ONE shard — `--users` users, `--rate` events per checkpoint interval of
 * `--interval-s` seconds of event time, `--checkpoints` checkpoints — and the checkpoint
 * duration with the option against the same runtime without it, in the same run.
 *
 *   node --import tsx bench/state-snapshot-size.ts [--users 100000] [--rate 50000] [--checkpoints 12] [--json]
 *
 * The lake and data dirs are on tmpfs (/dev/shm) when there is one: sizes do not depend on the
 * disk, durations would (fsyncs). Durations on a shared machine: medians, ratio in the same run.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { IngestBatchBuilder } from '../ingest/batch-builder.js';
import { ShardRuntime } from '../engine/shard-runtime.js';
import type { ShardRuntimeOptions } from '../engine/types.js';
import type { ShardStateSync } from '../engine/state-snapshot.js';

const { values } = benchArgs(import.meta.url, {
  options: {
    users: { type: 'string', default: '100000' },
    rate: { type: 'string', default: '50000' },
    'interval-s': { type: 'string', default: '10' },
    checkpoints: { type: 'string', default: '12' },
    json: { type: 'boolean', default: false },
  },
});
const users = Number(values.users);
const perCheckpoint = Number(values.rate);
const intervalMs = Number(values['interval-s']) * 1000;
const checkpoints = Number(values.checkpoints);
const RECORD = 5000;
const T0 = Date.UTC(2026, 2, 2, 9, 0, 0);
const TYPES = ['Application Opened', 'Screen Viewed', 'Button Tapped', 'Notification Opened'];

const root = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'sluice-state-size-'));
let seed = 42;
const rand = (): number => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

/** The records of checkpoint c: `perCheckpoint` events of random users over its interval. */
function recordsOf(c: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let done = 0; done < perCheckpoint; done += RECORD) {
    const b = new IngestBatchBuilder(RECORD);
    for (let i = 0; i < RECORD && done + i < perCheckpoint; i++) {
      const t = T0 + c * intervalMs + Math.floor(((done + i) / perCheckpoint) * intervalMs);
      b.push({
        event_id: `e-${c}-${done + i}`,
        user_id: `user-${Math.floor(rand() * users)}`,
        anonymous_id: null,
        event_type: TYPES[Math.floor(rand() * TYPES.length)]!,
        event_time: t,
        received_at: t + 200,
        device_type: rand() < 0.5 ? 'ios' : 'android',
        os: null,
        app_version: '4.1',
        country: ['DE', 'FR', 'US', 'BR'][Math.floor(rand() * 4)]!,
        source: 'bench',
        properties: null,
        raw: null,
      });
    }
    out.push(b.toIPC());
  }
  return out;
}

const options = (name: string, state: boolean): ShardRuntimeOptions => ({
  shards: 1,
  dataDir: join(root, `${name}-data`),
  lake: join(root, `${name}-lake`),
  allowedLatenessMs: 2 * 3_600_000,
  sessionGapMs: 30 * 60_000,
  dedupTtlMs: 24 * 3_600_000,
  compression: 'zstd',
  targetFileBytes: 128 << 20,
  workerNice: 0,
  maxRowsPerParquetCall: 1_000_000,
  maxBytesPerParquetCall: 256 << 20,
  encodeChunkRows: 262_144,
  encodeChunkBytes: 32 << 20,
  ...(state ? { stateInObjectStore: { baseEveryDeltas: 1_000_000, baseMinBytes: Number.MAX_SAFE_INTEGER } } : {}),
});

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const withState = await ShardRuntime.open(0, options('with', true));
const without = await ShardRuntime.open(0, options('without', false));
const sync = (withState as unknown as { stateSync: ShardStateSync }).stateSync;
const rows: Array<{ checkpoint: number; deltaBytes: number; msWith: number; msWithout: number }> = [];
let offset = 0;
for (let c = 0; c < checkpoints; c++) {
  const recs = recordsOf(c);
  const offsets = recs.map((_, i) => offset + i);
  offset += recs.length;
  // Alternate which runtime goes first, so neither always meets a warmer machine.
  const order = c % 2 === 0 ? [withState, without] : [without, withState];
  const ms = new Map<ShardRuntime, number>();
  for (const rt of order) {
    rt.processRecords(offsets, recs.map((r) => r.slice().buffer));
    const started = performance.now();
    await rt.checkpoint();
    ms.set(rt, performance.now() - started);
  }
  rows.push({ checkpoint: c + 1, deltaBytes: sync.stats.lastDeltaBytes, msWith: ms.get(withState)!, msWithout: ms.get(without)! });
}
const base = await sync.writeBase();
const lmdbBytes = statSync(join(root, 'with-data', 'shards', '0', 'state.mdb')).size;
await withState.close();
await without.close();
rmSync(root, { recursive: true, force: true });

const steady = rows.slice(2).map((r) => r.deltaBytes);
const result = {
  users,
  eventsPerCheckpoint: perCheckpoint,
  intervalS: intervalMs / 1000,
  checkpoints,
  deltaBytes: rows.map((r) => r.deltaBytes),
  medianDeltaBytesAfterWarmup: median(steady),
  baseBytes: base.bytes,
  baseRecords: base.records,
  lmdbFileBytes: lmdbBytes,
  deltaToBase: median(steady) / base.bytes,
  checkpointMsWith: median(rows.map((r) => r.msWith)),
  checkpointMsWithout: median(rows.map((r) => r.msWithout)),
  checkpointRatio: median(rows.map((r) => r.msWith / r.msWithout)),
};
if (values.json) console.log(JSON.stringify(result));
else {
  for (const r of rows) console.log(`checkpoint ${r.checkpoint}: delta ${(r.deltaBytes / 1024).toFixed(0)} KiB, ${r.msWith.toFixed(0)} ms with / ${r.msWithout.toFixed(0)} ms without`);
  console.log(result);
}
