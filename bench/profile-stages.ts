/**
 * Which pipeline stage a CPU-profile sample belongs to (bench/profile.ts). This file IS the
 * mapping: re-check a figure of the profile table by reading the rules below.
 *
 * A sample is a stack (leaf = the function running, up to the root). Its stage is decided by:
 *
 *   1. the leaf's pseudo frames: `(idle)` and piscina's `atomicsWaitLoop` (an idle worker blocked
 *      in Atomics.wait) → not CPU (excluded), `(garbage collector)` → gc,
 *      `(program)` → program (native code the sampler could not attribute to a JS function:
 *      V8 compiling on this thread, C++ of the runtime and add-ons between JS frames, the
 *      profiler's own signal handling);
 *   2. otherwise the frames are tried from the leaf up, and the FIRST frame that matches a rule
 *      of its process's list (ingest or engine) decides; within a frame the first matching rule
 *      wins. Library frames without a rule (lmdb, most of apache-arrow, node:internal …) are
 *      passed over, so their time goes to the Sluice code that called them — `lmdb` get/put
 *      under the dedup operator is dedup, under a checkpoint it is checkpoint state;
 *   3. a stack with no matching frame is `other` (timers, promises, the event loop).
 *
 * Paths are matched relative to the checkout (`dist/` stripped: `engine/shard-runtime.js`) or
 * from `node_modules/` on (`node_modules/parquet-wasm/…`); compiled `.js` and source `.ts` both
 * match. Function names are V8's (`ShardRuntime.checkpoint` shows as `checkpoint`).
 *
 * Only JS threads are sampled (each process's main thread and its worker threads). The libuv
 * pool (fsync, file writes and reads, LMDB's async work) and V8's helper threads (concurrent
 * marking, background JIT) are not: bench/profile.ts reports them from /proc as the rest of each
 * process's CPU.
 */

export const STAGES = ['ingest', 'log', 'messaging', 'operators', 'assembly', 'encode', 'state', 'background', 'gc', 'program', 'other'] as const;
export type Stage = (typeof STAGES)[number];

/** Row labels of the table, in the words. */
export const STAGE_LABELS: Record<Stage, string> = {
  ingest: 'ingest: uWS + parse + normalize + build record',
  log: 'log append + fsync (JS side: group commit, write/fsync calls)',
  messaging: 'engine messaging: durable marks IPC, range read, piscina, `tableFromIPC`',
  operators: 'dedup + watermark + sessionize + aggregate',
  assembly: 'silver/bronze assembly, coalescing',
  encode: 'checkpoint: Parquet encode (incl. IPC into parquet-wasm)',
  state: 'checkpoint: state / LMDB / stage + publish',
  background: 'background: gold merge, reconcile, compaction, DLQ flush',
  gc: 'GC on the JS threads (scavenges, atomic pauses)',
  program: '(program): V8 JIT / runtime C++ on the JS threads',
  other: 'other (event loop, timers, promises, metrics, logging)',
};

export type Role = 'ingest' | 'engine';

interface Rule {
  stage: Stage;
  /** Matches the frame's path (relative, see above). */
  path: RegExp;
  /** When given, the function name must match too. */
  fn?: RegExp;
}

const ENGINE_RULES: Rule[] = [
  { stage: 'encode', path: /^node_modules\/parquet-wasm\// },
  { stage: 'encode', path: /^storage\/(parquet|encode-groups)\./ },
  // parquet-wasm takes Arrow IPC: in the engine, the IPC writer serves the Parquet encoder.
  { stage: 'encode', path: /^node_modules\/apache-arrow\/.*ipc\/writer/ },
  { stage: 'encode', path: /^engine\/shard-runtime\./, fn: /^(encodeBuffers|encodeFullBuffers)$/ },
  { stage: 'messaging', path: /^node_modules\/apache-arrow\/.*ipc\// },
  { stage: 'messaging', path: /./, fn: /^tableFromIPC$/ },
  { stage: 'background', path: /^engine\/(gold-merge|gold-sql|reconcile|erasure-[a-z]+|failure-episodes)\./ },
  { stage: 'background', path: /^storage\/(compact|rewrite)\./ },
  { stage: 'background', path: /^node_modules\/@duckdb\// },
  { stage: 'assembly', path: /^storage\/partition-buffer\./ },
  { stage: 'assembly', path: /^common\/arrow-(concat|take)\./ },
  { stage: 'state', path: /^storage\// },
  { stage: 'state', path: /^engine\/shard-runtime\./, fn: /^(checkpoint|finishPublish|ownsStaged|close|open)$/ },
  { stage: 'assembly', path: /^engine\/shard-runtime\./, fn: /^(addByTime|append|addBronze|emitUpTo|addPartial|batchBytes|advance)$/ },
  { stage: 'assembly', path: /^engine\/operators\/shard-pipeline\./, fn: /^(toSilver|aliasesBatch|sessionsBatch|int64Of)$/ },
  { stage: 'state', path: /^engine\/operators\/shard-pipeline\./, fn: /^(checkpoint|restore|onCheckpointTxn|afterCheckpoint)$/ },
  { stage: 'state', path: /^engine\/(kernels|operators)\//, fn: /(snapshot|Snapshot|checkpoint|Checkpoint|restore|Restore|serialize|persist|flushState)/ },
  { stage: 'operators', path: /^engine\/(operators|kernels)\// },
  // The range consumer around the operators: processRecords/processBatch, schema check, quarantine.
  { stage: 'messaging', path: /^engine\/shard-runtime\./ },
  { stage: 'other', path: /^(engine\/telemetry|ingest\/metrics)\./ },
  { stage: 'other', path: /^node_modules\/(prom-client|pino|sonic-boom|thread-stream)\// },
  { stage: 'messaging', path: /^engine\/(coordinator|pool|shard-worker|remote-log|resilient-log|local-logs|engine-host|host-protocol)\./ },
  { stage: 'messaging', path: /^log\// },
  { stage: 'messaging', path: /^node_modules\/piscina\// },
  { stage: 'messaging', path: /^node:internal\/(worker|child_process|per_context\/messageport)/ },
];

const INGEST_RULES: Rule[] = [
  { stage: 'log', path: /^log\// },
  { stage: 'log', path: /^ingest\/shard-appender\./ },
  { stage: 'messaging', path: /^engine\/(engine-process|host-protocol)\./ },
  { stage: 'messaging', path: /^node:internal\/child_process/ },
  { stage: 'other', path: /^ingest\/(dashboard\/|metrics\.)/ },
  { stage: 'other', path: /^analytics\// },
  { stage: 'other', path: /^node_modules\/(prom-client|pino|sonic-boom|thread-stream)\// },
  { stage: 'ingest', path: /^ingest\// },
  { stage: 'ingest', path: /^common\// },
  { stage: 'ingest', path: /^node_modules\/(uWebSockets\.js|apache-arrow)\// },
];

/** The frame fields the classifier reads (a V8 `callFrame`). */
export interface Frame {
  functionName: string;
  url: string;
}

/**
 * A frame's path as the rules see it: relative to the checkout (dist/ stripped), from
 * node_modules/ on, `node:internal/…` as is; '' for native frames without a script.
 */
export function framePath(url: string): string {
  if (url === '') return '';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) return url.slice(nm + 1);
  if (url.startsWith('node:')) return url;
  const m = /\/(?:dist\/)?((?:bin|cli|common|log|ingest|engine|storage|loadgen|bench|analytics)\/.*)$/.exec(url);
  return m ? m[1]! : url;
}

/** The stage of one sample: `stack[0]` is the leaf, the last element the root. */
export function classify(role: Role, stack: readonly Frame[]): Stage | 'idle' {
  const leaf = stack[0]?.functionName ?? '';
  if (leaf === '(idle)') return 'idle';
  if (leaf === '(garbage collector)') return 'gc';
  if (leaf === '(program)') return 'program';
  // Piscina's idle workers block in Atomics.wait: waiting, not CPU.
  if (stack.slice(0, 2).some((f) => f.functionName === 'atomicsWaitLoop')) return 'idle';
  const rules = role === 'ingest' ? INGEST_RULES : ENGINE_RULES;
  for (const frame of stack) {
    const path = framePath(frame.url);
    if (path === '') continue;
    for (const r of rules) if (r.path.test(path) && (r.fn === undefined || r.fn.test(frame.functionName))) return r.stage;
  }
  return 'other';
}
