/**
 * The local shard logs and the DLQ log under `<data>/log/`, each wrapped so that a failed write
 * (a full disk) is retried by reopening it once there is room (engine/resilient-log.ts). Ingest
 * appends to them; the engine consumes them (in-process directly, or from the engine process
 * through engine/remote-log.ts).
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { observeFsync } from '../ingest/metrics.js';
import { SegmentLog } from '../log/segment-log.js';
import { claimShards } from './data-layout.js';
import { FailureEpisodes } from './failure-episodes.js';
import type { EngineOptions } from './options.js';
import { ResilientLog } from './resilient-log.js';
import { engineMetrics } from './telemetry.js';

export interface LocalLogs {
  logs: ResilientLog[];
  dlqLog: ResilientLog;
  /** Failed and reopened logs (readiness, metrics, one log line per episode). */
  episodes: FailureEpisodes;
}

/** Directory of a shard's log (`shard` −1: the DLQ log). */
export const logDir = (dataDir: string, shard: number): string => join(dataDir, 'log', shard < 0 ? 'dlq' : `shard-${shard}`);

/**
 * Opens every shard's log and the DLQ log. `onReappeared(shard, fresh)` runs after a failed shard
 * log was reopened, before appends resume (records of failed appends may be back in it).
 */
export async function openLocalLogs(
  options: Pick<EngineOptions, 'dataDir' | 'shards' | 'retryBaseMs' | 'retryMaxMs'>,
  log: Logger,
  readinessPrefix: string,
  onReappeared: (shard: number, fresh: SegmentLog) => Promise<void>,
): Promise<LocalLogs> {
  await claimShards(options.dataDir, options.shards);
  const episodes = new FailureEpisodes({
    log,
    what: 'log',
    readinessPrefix,
    baseMs: options.retryBaseMs,
    maxMs: options.retryMaxMs,
    onAttemptFailed: (target, code) => engineMetrics.logFailures.inc({ log: target, code }),
    onStateChanged: (target, consecutive) => engineMetrics.logFailed.set({ log: target }, consecutive > 0 ? 1 : 0),
  });
  const resilient = async (shard: number): Promise<ResilientLog> => {
    const dir = logDir(options.dataDir, shard);
    const target = shard < 0 ? 'dlq' : `shard-${shard}`;
    const open = (): Promise<SegmentLog> => SegmentLog.open({ dir, shard, onFsync: observeFsync });
    return new ResilientLog(await open(), {
      open,
      dir,
      target,
      episodes,
      onReopen: () => engineMetrics.logReopens.inc({ log: target }),
      onReopened: shard >= 0 ? (fresh) => onReappeared(shard, fresh) : undefined,
    });
  };
  const logs: ResilientLog[] = [];
  for (let s = 0; s < options.shards; s++) logs.push(await resilient(s));
  return { logs, dlqLog: await resilient(-1), episodes };
}
