/**
 * Every message between ingest (the `sluice serve` process, which owns the logs and answers
 * clients) and the engine process (engine/engine-host.ts), in one place. They travel over the
 * child process's IPC channel as JSON; records never do — the engine reads them from the log files.
 *
 *   ingest (parent)                                   engine process (child, niced)
 *   ───────────────                                   ─────────────────────────────
 *   spawn with EngineHostInit (options, durable marks)
 *        ◀──────────────────────────────────────────── started   (recovered, replay done)
 *   durable{marks: [shard, next, rows]…} ────────────▶ pumps read the new records from the files
 *        ◀──────────────────────────────────────────── status{backlog, reasons, live} (every 200 ms)
 *        ◀──────────────────────────────────────────── metrics{text} (every second)
 *        ◀──────────────────────────────────────────── truncate{shard, before}  (after a checkpoint)
 *        ◀──────────────────────────────────────────── roll{id, shard}  (erasure: seal the active segment)
 *   rolled{id, first | error} ───────────────────────▶
 *   close ───────────────────────────────────────────▶ drain, final checkpoint
 *        ◀──────────────────────────────────────────── closed{error?}, then the process exits
 *   (the IPC channel closes: ingest is gone) ─────────▶ drain, final checkpoint, exit
 */
import type { RetryAdvice } from '../common/errors.js';
import type { LiveSnapshot } from './coordinator.js';
import type { EngineOptions } from './options.js';

/** Passed in the environment (SLUICE_ENGINE_HOST) when the engine process is spawned. */
export interface EngineHostInit {
  options: EngineOptions;
  /** Durable mark (next offset) of each shard log, and of the DLQ log. */
  marks: number[];
  dlqMark: number;
  logLevel: string;
}

export type ToEngine =
  | {
      kind: 'durable';
      /** [shard (−1: the DLQ log), durable next offset, events made durable since the last message]. */
      marks: Array<[number, number, number]>;
    }
  | { kind: 'close' }
  /** Answer to `roll`: the first offset after the sealed segment, or why sealing failed. */
  | { kind: 'rolled'; id: number; first?: number; error?: string };

export type FromEngine =
  | { kind: 'started' }
  /** The start failed (sent before exiting): ingest's start fails with the same error, not with "the engine exited". */
  | { kind: 'failed'; code: string; domain: 'user' | 'external' | 'internal'; message: string; retry: RetryAdvice }
  | {
      kind: 'status';
      /** Events acknowledged and not yet processed, as of this message. */
      backlog: number;
      /** Why the engine is not ready (empty when it is). */
      reasons: string[];
      live: LiveSnapshot;
      /** Anonymous resident memory of the engine process (common/resident-memory.ts). */
      anonBytes: number;
      /** Per shard, the offset of the last record processed (null: not counted), as of this message (Coordinator.processedOffsets). */
      processed: Array<number | null>;
    }
  | { kind: 'metrics'; text: string }
  | { kind: 'truncate'; shard: number; before: number }
  /** Erasure: seal the log's active segment (shard −1: the DLQ log); answered by `rolled`. */
  | { kind: 'roll'; id: number; shard: number }
  | { kind: 'closed'; error?: string };
