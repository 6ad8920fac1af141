/**
 * `sluice erase --lake … --data … --user ID [--user ID…] [--reason TEXT]`: erases users offline
 * (the server stopped), and `sluice erase --status`: every request's state and the lake's audit
 * records.
 *
 * Offline it runs the engine over the data directory as `serve` would (replaying and committing
 * the logs), records the request with the logs' marks and runs the job through checkpoints: as on
 * a running server, the job compacts the shards' LMDB files and seals the log segments holding the
 * users, which the next checkpoint's truncation deletes. A second pass (the engine restarted) only
 * runs if a request is still open. A request interrupted (kill -9) resumes at the next
 * `sluice erase` or `sluice serve`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { pino } from 'pino';
import { userError } from '../common/errors.js';
import { shardOfUser } from '../common/hash.js';
import { Coordinator } from '../engine/coordinator.js';
import { listAudit } from '../engine/erasure-job.js';
import { readFrontier } from '../engine/reconcile.js';
import { ErasureStore } from '../storage/erasure-store.js';
import { recordedSessionGap, resolveShards } from '../engine/data-layout.js';
import { defaultEngineOptions, validateEngineOptions } from '../engine/options.js';
import { erasureStatus } from '../ingest/erasures.js';
import { openObjectStore } from '../storage/open-store.js';
import { requireDataDir, requireLake } from './check-paths.js';

/** Refuses when an engine (serve) runs on the data directory. */
async function refuseIfRunning(dataDir: string): Promise<void> {
  let pid: number;
  try {
    pid = Number((await readFile(join(dataDir, 'engine.pid'), 'utf8')).trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return;
  try {
    process.kill(pid, 0);
  } catch {
    return;
  }
  throw userError('engine_running', `an engine (pid ${pid}) runs on ${dataDir}: stop sluice serve first, or send the request to the running server (POST /v1/admin/erasures with an admin key)`);
}

export interface EraseOptions {
  data: string;
  lake: string;
  s3Endpoint?: string;
  users: string[];
  reason?: string;
  /** Shard count of the data directory (as serve was started with; default: the one it recorded). */
  shards?: number;
}

/** Runs the engine over the data directory until every open request is done or can go no further; returns their states. */
export async function eraseOffline(o: EraseOptions): Promise<Array<Record<string, unknown>>> {
  // A typo in a path must not look like a completed erasure of a new, empty server.
  requireDataDir(o.data);
  requireLake(o.lake);
  await refuseIfRunning(o.data);
  // The backlog it drains is processed as serve would: with the lake's session gap and lateness.
  const store = await openObjectStore(o.lake, { s3Endpoint: o.s3Endpoint });
  const frontier = await readFrontier(store).finally(() => store.close());
  const options = validateEngineOptions({
    dataDir: o.data,
    lake: o.lake,
    s3Endpoint: o.s3Endpoint,
    shards: resolveShards(o.data, o.shards, defaultEngineOptions().shards),
    workers: 1,
    reconcileIntervalMs: 0,
    compactAfterMs: 0,
    flushIntervalMs: 3_600_000,
    sessionGapMs: frontier?.sessionGapMs ?? recordedSessionGap(o.data),
    ...(frontier?.allowedLatenessMs !== undefined ? { allowedLatenessMs: frontier.allowedLatenessMs } : {}),
  });
  const log = pino({ level: process.env.SLUICE_LOG_LEVEL ?? 'warn' }, pino.destination(2));
  const erasures = await ErasureStore.open(o.data);
  const ids: string[] = [];
  for (let pass = 0; pass < 2; pass++) {
    const c = await Coordinator.start(options, log);
    try {
      await c.drain();
      await c.checkpointNow(true);
      if (pass === 0 && o.users.length > 0) {
        const local = c.shardLogs;
        const shards = o.users.map((u) => shardOfUser(u, options.shards));
        // Every shard's mark, as ingest takes them: an id may sit on any shard (docs/ERASURE.md).
        const marks = { shards: Object.fromEntries(local.map((log, s) => [String(s), log.nextOffset - 1])), dlq: c.dlqLog.durableNextOffset - 1 };
        ids.push((await erasures.accept(o.users, o.reason ?? null, shards, marks)).id);
      }
      await c.checkpointNow(true);
    } finally {
      await c.close();
    }
    if ((await erasures.open()).length === 0) break;
  }
  // This run's requests (and any earlier one still not done); --status lists them all.
  const states: Array<Record<string, unknown>> = [];
  for (const r of await erasures.requests()) {
    const status = (await erasureStatus(erasures, r.id))!;
    if (ids.includes(r.id) || status.state !== 'done') states.push(status);
  }
  return states;
}

export function register(program: Command): void {
  program
    .command('erase')
    .description('erase users from every layer (server stopped), or --status: list erasure requests and audit records')
    .option('--lake <dir|s3://bucket/prefix>', 'the lake', process.env.SLUICE_LAKE ?? './lake')
    .option('--data <dir>', 'the data directory', process.env.SLUICE_DATA ?? './data')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint', process.env.SLUICE_S3_ENDPOINT)
    .option('--shards <n>', 'shards of the data directory (default: as serve was started with, from DATA/layout.json)', process.env.SLUICE_SHARDS)
    .option('--user <id>', 'user id to erase (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--reason <text>', 'why (kept in the audit record)')
    .option('--status', 'list the requests and the audit records')
    .action(async (flags: { lake: string; data: string; s3Endpoint?: string; shards?: string; user?: string[]; reason?: string; status?: boolean }) => {
      if (flags.status) {
        requireDataDir(flags.data);
        requireLake(flags.lake);
        const erasures = await ErasureStore.open(flags.data);
        const store = await openObjectStore(flags.lake, { s3Endpoint: flags.s3Endpoint });
        try {
          const requests = await Promise.all((await erasures.requests()).map((r) => erasureStatus(erasures, r.id)));
          process.stdout.write(`${JSON.stringify({ requests, audit: await listAudit(store) }, null, 1)}\n`);
        } finally {
          await store.close();
        }
        return;
      }
      if (!flags.user?.length) throw userError('invalid_option', 'name at least one --user to erase (or --status)');
      const shards = flags.shards === undefined ? undefined : Number(flags.shards);
      if (shards !== undefined && !(Number.isInteger(shards) && shards > 0)) throw userError('invalid_option', `--shards must be a positive integer, got "${flags.shards}"`);
      const started = performance.now();
      const states = await eraseOffline({ data: flags.data, lake: flags.lake, s3Endpoint: flags.s3Endpoint, users: flags.user, reason: flags.reason, shards });
      process.stdout.write(`${JSON.stringify({ seconds: Number(((performance.now() - started) / 1000).toFixed(2)), requests: states }, null, 1)}\n`);
      if (states.some((s) => s.state !== 'done')) process.exitCode = 1;
    });
}
