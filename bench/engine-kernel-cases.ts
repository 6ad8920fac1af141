/**
 * The engine's kernels as benchmark cases over pre-built ingest batches: each case's `run` pushes
 * every batch through one kernel, `reset` restores fresh state (untimed). Used by
 * bench/engine-kernels.bench.ts and the CI perf-regression check.
 */
import type { Data, DataType, Dictionary, RecordBatch, Timestamp, Utf8 } from 'apache-arrow';
import type { Database } from 'lmdb';
import { DedupTable } from '../engine/kernels/dedup-table.js';
import { epochMillis } from '../engine/kernels/epoch-millis.js';
import { fingerprintKey, fingerprintUtf8 } from '../engine/kernels/fingerprint.js';
import { RecordWriter } from '../engine/kernels/record-bytes.js';
import { SessionTable, type DimValues } from '../engine/kernels/session-table.js';
import { AggregateOperator } from '../engine/operators/aggregate-operator.js';

export interface KernelCase {
  name: 'dedup' | 'sessionize' | 'aggregate' | 'checkpoint';
  /** Processes every batch once. */
  run(): void;
  /** Fresh state before each timed run. */
  reset(): void;
}

const col = <T extends DataType>(b: RecordBatch, name: string): Data<T> => b.getChild(name)!.data[0] as Data<T>;

export function kernelCases(batches: RecordBatch[]): KernelCase[] {
  const maxRows = batches.reduce((m, b) => Math.max(m, b.numRows), 0);
  const hi = new Uint32Array(maxRows);
  const lo = new Uint32Array(maxRows);
  let table = new DedupTable();
  const dedup: KernelCase = {
    name: 'dedup',
    reset: () => {
      table = new DedupTable();
    },
    run: () => {
      for (const b of batches) {
        fingerprintUtf8(col<Utf8>(b, 'event_id'), hi, lo);
        for (let i = 0; i < b.numRows; i++) table.add(hi[i]!, lo[i]!, 0);
      }
    },
  };

  const HOUR = 3_600_000;
  const DAY = 86_400_000;
  const dims: DimValues = { id: 0, d: 'ios', v: '4.0', c: 'US' };
  let sessions = new SessionTable(1_800_000);
  const sessionize: KernelCase = {
    name: 'sessionize',
    reset: () => {
      sessions = new SessionTable(1_800_000);
    },
    run: () => {
      for (const b of batches) {
        const users = col<Utf8>(b, 'user_id');
        const ids = col<Utf8>(b, 'event_id');
        fingerprintUtf8(users, hi, lo);
        const times = epochMillis(col<Timestamp>(b, 'event_time'));
        for (let i = 0; i < b.numRows; i++) sessions.assign(fingerprintKey(hi[i]!, lo[i]!), users, ids, i, times[i]!, null, dims);
        sessions.takeStartChanges();
      }
      sessions.close(Infinity);
    },
  };

  let agg = new AggregateOperator(1_800_000);
  const aggregate: KernelCase = {
    name: 'aggregate',
    reset: () => {
      agg = new AggregateOperator(1_800_000);
    },
    run: () => {
      for (const b of batches) {
        const rows = Int32Array.from({ length: b.numRows }, (_, i) => i);
        fingerprintUtf8(col<Utf8>(b, 'user_id'), hi, lo);
        const times = epochMillis(col<Timestamp>(b, 'event_time'));
        const dict = (name: string): Data<Dictionary<Utf8>> => col<Dictionary<Utf8>>(b, name);
        const combos = agg.combosOf(dict('device_type'), dict('app_version'), dict('country'), rows);
        for (let i = 0; i < b.numRows; i++) {
          const t = times[i]!;
          const hour = agg.acc('hourly', t - (t % HOUR), combos[i]!);
          const day = agg.acc('daily', t - (t % DAY), combos[i]!);
          agg.addEvent(hour, day, fingerprintKey(hi[i]!, lo[i]!), 0);
        }
      }
      agg.emit(Infinity);
    },
  };
  // The state a checkpoint writes after these events (every user and window touched): each changed
  // user's open sessions as snapshots, each dirty accumulator's counters and new users, into a
  // store that only keeps the values (what LMDB would be handed; its encoding and I/O are not timed).
  const sink = { putSync: (_k: unknown, v: unknown) => void (kept = v), removeSync: () => undefined } as unknown as Database;
  let kept: unknown;
  const stateDbs = { accs: sink, users: sink };
  const changedState = (): { table: SessionTable; agg: AggregateOperator } => {
    const table = new SessionTable(1_800_000);
    const agg = new AggregateOperator(1_800_000);
    for (const b of batches) {
      const users = col<Utf8>(b, 'user_id');
      const ids = col<Utf8>(b, 'event_id');
      fingerprintUtf8(users, hi, lo);
      const times = epochMillis(col<Timestamp>(b, 'event_time'));
      const rows = Int32Array.from({ length: b.numRows }, (_, i) => i);
      const combos = agg.combosOf(col<Dictionary<Utf8>>(b, 'device_type'), col<Dictionary<Utf8>>(b, 'app_version'), col<Dictionary<Utf8>>(b, 'country'), rows);
      for (let i = 0; i < b.numRows; i++) {
        const t = times[i]!;
        const key = fingerprintKey(hi[i]!, lo[i]!);
        table.assign(key, users, ids, i, t, null, agg.combos[combos[i]!]!);
        agg.addEvent(agg.acc('hourly', t - (t % HOUR), combos[i]!), agg.acc('daily', t - (t % DAY), combos[i]!), key, 0);
      }
      agg.addSessionStarts(table.takeStartChanges());
    }
    return { table, agg };
  };
  let state = changedState();
  const records = new RecordWriter();
  const checkpoint: KernelCase = {
    name: 'checkpoint',
    reset: () => {
      state = changedState();
    },
    run: () => {
      // What ShardPipeline.onCheckpointTxn writes: each changed user's binary record, then the accumulators.
      let n = 0;
      for (const key of state.table.changedUsers()) n += state.table.userRecord(key, records)?.length ?? 0;
      state.agg.checkpoint(stateDbs);
      kept = n;
    },
  };
  return [dedup, sessionize, aggregate, checkpoint];
}
