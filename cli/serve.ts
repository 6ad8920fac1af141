/**
 * `sluice serve`: the whole engine in one process — ingest server, shard pool, lake writer.
 * `startSluice(config)` is the same thing in-process, for tests, the demo and the benchmark.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { pino, type Logger } from 'pino';
import { Coordinator } from '../engine/coordinator.js';
import { startIngestServer, type IngestDeps, type IngestServer } from '../ingest/server.js';
import { EngineProcess } from '../engine/engine-process.js';
import { openLocalLogs, type LocalLogs } from '../engine/local-logs.js';
import type { ShardLog } from '../log/log.js';
import { JetStreamLogs, type JetStreamLog } from '../log/jetstream-log.js';
import { JetStreamBacklog, observePublish } from '../ingest/jetstream-backlog.js';
import { ErasureStore } from '../storage/erasure-store.js';
import { sealErasedLogs } from '../engine/erasure-offline.js';
import { Suppression } from '../ingest/erasures.js';
import { reportCommits, UncommittedLog } from '../ingest/uncommitted-log.js';
import { logDir } from '../engine/local-logs.js';
import { composeServeConfig, type RawSettings, type ServeConfig } from './config.js';
import { claimDataDir } from './serve-lock.js';
import { runUntilSignal } from './until-signal.js';
import { anonymousResidentBytes } from '../common/resident-memory.js';

export interface RunningSluice {
  readonly port: number;
  readonly url: string;
  readonly writeKey: string;
  /** A dashboard read key (`GET /dashboard?key=…`). */
  readonly readKey: string;
  /** The engine, when it runs in this process (`engineMode` 'inline'). */
  readonly coordinator: Coordinator | undefined;
  /** Stops accepting, drains, flushes and commits everything acknowledged, closes everything. */
  close(): Promise<void>;
}

/** Reads DATA/write-key (or DATA/read-key), or creates it with a random key when no key is configured. */
async function ensureKey(dataDir: string, file = 'write-key', prefix = 'sk_'): Promise<string> {
  const path = join(dataDir, file);
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    await mkdir(dataDir, { recursive: true });
    const key = `${prefix}${randomBytes(12).toString('hex')}`;
    await writeFile(path, `${key}\n`, { mode: 0o600 });
    return key;
  }
}

/** `stop`: aborted when a stop comes during the start (the engine then makes no further start attempt). */
export async function startSluice(config: ServeConfig, logger: Logger = pino({ level: 'info' }, pino.destination(2)), stop?: AbortSignal): Promise<RunningSluice> {
  const writeKeys = config.writeKeys.length > 0 ? config.writeKeys : [await ensureKey(config.engine.dataDir)];
  const fileDashboard = (config.ingest.dashboard ?? {}) as { readKeys?: unknown };
  const configuredReadKeys = config.readKeys?.length ? config.readKeys : Array.isArray(fileDashboard.readKeys) ? (fileDashboard.readKeys as string[]) : [];
  const readKeys = configuredReadKeys.length > 0 ? configuredReadKeys : [await ensureKey(config.engine.dataDir, 'read-key', 'rk_')];
  const dashboard = { historyFile: join(config.engine.dataDir, 'dashboard-history.json'), metricEventTypes: config.engine.metricEventTypes, ...fileDashboard, readKeys };
  const erasureStore = await ErasureStore.open(config.engine.dataDir);
  const suppression = new Suppression(erasureStore);
  await suppression.load();
  // The engine process recovers (its last checkpoint, then the log since it) while ingest listens
  // and answers events 503 `starting`: health checks and clients see a live server, not a refused connection.
  const engine = await startEngine(config, logger);
  if (stop?.aborted) engine.abandonStart?.();
  else stop?.addEventListener('abort', () => engine.abandonStart?.(), { once: true });
  const maxBacklogBytes =
    (config.ingest.maxBacklogBytes as number | undefined) ?? (config.logServers !== undefined ? JETSTREAM_MAX_BACKLOG_BYTES : await defaultMaxBacklogBytes(config.engine.dataDir));
  // A checkpoint pauses its shard's processing for up to about a flush interval: no refusals for a healthy one.
  const maxLagMs = (config.ingest.maxLagMs as number | undefined) ?? Math.max(DEFAULT_MAX_LAG_MS, config.engine.flushIntervalMs);
  let server: IngestServer;
  try {
    server = await startIngestServer(
      { ...config.ingest, maxBacklogBytes, maxLagMs, host: config.host, port: config.port, writeKeys: writeKeys.map((key) => ({ key })), adminKeys: config.adminKeys ?? [], dashboard, logger },
      { logs: engine.logs, dlqLog: engine.dlqLog, ...engine.deps, ...(engine.starting ? { starting: engine.starting } : {}), erasures: { store: erasureStore, suppression, ...(config.role === 'ingest' ? { unsupported: INGEST_NODE_ERASURE } : {}) } },
    );
  } catch (err) {
    await engine.recovered.catch(() => undefined);
    await engine.close();
    throw err;
  }
  if (engine.starting?.()) logger.info({ url: `http://${config.host}:${server.port}` }, 'listening; events get 503 starting until the engine has recovered');
  try {
    await engine.recovered;
  } catch (err) {
    await server.close();
    await engine.close();
    throw err;
  }
  let closing: Promise<void> | undefined;
  return {
    port: server.port,
    url: `http://${config.host}:${server.port}`,
    writeKey: writeKeys[0]!,
    readKey: readKeys[0]!,
    coordinator: engine.coordinator,
    close: () =>
      (closing ??= (async () => {
        await server.close();
        await engine.close();
      })()),
  };
}

/** Why an ingest node refuses erasure requests (docs/SCALE-OUT.md, "Not done / limits"). */
const INGEST_NODE_ERASURE =
  'an ingest node (--role ingest) has no engine to run erasure requests, and the engine nodes of a cluster do not run them yet: nothing would be erased. Erase offline (docs/ERASURE.md: sluice erase with the nodes stopped) or on a single sluice serve';

/** Default of --max-lag (ingest.maxLagMs) when the flush interval is shorter. */
const DEFAULT_MAX_LAG_MS = 5_000;

/**
 * Default bound of the stream's untruncated bytes on JetStream (ingest.maxBacklogBytes): the
 * stream lives on the NATS nodes' disks, not this node's; about a minute of R3 input on the
 * machine of docs/SCALE-OUT.md (the engines truncate after every checkpoint, and hold back for
 * 2 × appendTimeoutMs after they start).
 */
const JETSTREAM_MAX_BACKLOG_BYTES = 4 * 2 ** 30;

/**
 * Default bound of the uncommitted log (ingest.maxBacklogBytes): a quarter of the data
 * directory's free disk at start (the rest stays for LMDB, a local lake and compaction), within
 * 256 MiB … 64 GiB (above that, replaying it after a crash would take long).
 */
async function defaultMaxBacklogBytes(dataDir: string): Promise<number> {
  try {
    await mkdir(dataDir, { recursive: true });
    const fs = await statfs(dataDir);
    return Math.min(64 * 2 ** 30, Math.max(256 * 2 ** 20, Math.floor((fs.bavail * fs.bsize) / 4)));
  } catch {
    return 2 ** 30;
  }
}

/** Bytes of a shard's log segment files on disk (0 when it has none yet). */
async function logBytesOnDisk(dataDir: string, shard: number): Promise<number> {
  const dir = logDir(dataDir, shard);
  let total = 0;
  for (const f of await readdir(dir).catch(() => [] as string[])) if (f.endsWith('.seg')) total += (await stat(join(dir, f)).catch(() => ({ size: 0 }))).size;
  return total;
}

/**
 * Counts what the local shard logs hold uncommitted (ingest.maxBacklogBytes): what was in them at
 * start, then every durable record until the engine's truncation reports its commit.
 */
async function trackUncommitted(dataDir: string, logs: readonly ShardLog[]): Promise<UncommittedLog> {
  const u = new UncommittedLog(logs.length);
  for (const log of logs) {
    u.existing(log.shard, log.durableNextOffset - 1, await logBytesOnDisk(dataDir, log.shard));
    reportCommits(log, u);
  }
  return u;
}

/** The engine and what ingest needs of it, in this process or in the engine process. */
interface StartedEngine {
  logs: readonly ShardLog[];
  dlqLog: ShardLog;
  deps: Omit<IngestDeps, 'logs' | 'dlqLog'>;
  coordinator: Coordinator | undefined;
  /** Settles when the engine has recovered (at once for the inline engine, which recovers before it returns). */
  recovered: Promise<void>;
  /** Until `recovered`. */
  starting?(): boolean;
  /** A stop before `recovered`: no further start attempt (EngineProcess.abandonStart). */
  abandonStart?(): void;
  close(): Promise<void>;
}

/** The engine and what ingest needs of it, in this process or in the engine process. */
async function startEngine(config: ServeConfig, logger: Logger): Promise<StartedEngine> {
  if (config.role === 'ingest') return startIngestNode(config, logger);
  if ((config.engineMode ?? 'inline') === 'inline') {
    // --log nats://…: ingest appends to and the engine consumes from JetStream, where other ingest nodes may append to the same shards.
    const jetstream = config.logServers !== undefined ? await openJetStream(config, logger) : undefined;
    const coordinator = await Coordinator.start(config.engine, logger, jetstream !== undefined ? { shards: jetstream.shards, dlq: jetstream.dlq } : undefined)
      .catch(async (err: unknown) => (await jetstream?.close(), Promise.reject(err)));
    const following = jetstream !== undefined ? followOtherWriters(jetstream, coordinator, logger) : undefined;
    // The local log's uncommitted bytes are counted here; JetStream's are the stream's, polled.
    const uncommitted = jetstream === undefined ? await trackUncommitted(config.engine.dataDir, coordinator.local!.logs) : undefined;
    return {
      recovered: Promise.resolve(),
      logs: jetstream?.shards ?? coordinator.local!.logs,
      dlqLog: jetstream?.dlq ?? coordinator.local!.dlqLog,
      coordinator,
      deps: {
        onDurable: (shard, offset, payload, rows) => {
          uncommitted?.durable(shard, offset, rows, payload.byteLength);
          coordinator.submit(shard, offset, payload, rows);
        },
        backlog: () => coordinator.backlog(),
        ...(uncommitted !== undefined ? { uncommitted: () => ({ bytes: uncommitted.bytes, events: uncommitted.events }), lagMs: () => uncommitted.lagMs(coordinator.processedOffsets()) } : {}),
        ...(jetstream !== undefined ? { uncommitted: () => jetstream.backlog.uncommitted() } : {}),
        live: () => coordinator.live(),
        ready: () => coordinator.failure === undefined,
      },
      close: async () => {
        await following?.stop();
        await coordinator.close();
        await jetstream?.close();
      },
    };
  }
  // The logs are ingest's (it appends, the engine reads); a reopened log's records reach the engine as a new mark.
  let engine: EngineProcess | undefined;
  await sealErasedLogs(config.engine.dataDir, await ErasureStore.open(config.engine.dataDir));
  const logs = await openLocalLogs(config.engine, logger, 'ingest:', async (shard, fresh) => engine?.durable(shard, fresh.durableNextOffset - 1, 0));
  // Before the engine starts: its first checkpoint's truncation is already a commit report.
  const uncommitted = await trackUncommitted(config.engine.dataDir, logs.logs);
  const launched = EngineProcess.launch(config.engine, logs, logger, { nice: config.engine.workerNice, logLevel: logger.level });
  const e = (engine = launched.engine);
  const recovered = launched.recovered;
  recovered.catch(() => undefined); // awaited by startSluice (which then closes): not an unhandled rejection meanwhile
  const dlq = logs.dlqLog;
  return {
    recovered,
    starting: () => e.recovering(),
    abandonStart: () => e.abandonStart(),
    logs: logs.logs,
    // Dead letters are appended by ingest directly: each durable append becomes a mark for the engine too.
    dlqLog: {
      get shard() {
        return dlq.shard;
      },
      get nextOffset() {
        return dlq.nextOffset;
      },
      get pendingBytes() {
        return dlq.pendingBytes;
      },
      get durableNextOffset() {
        return dlq.durableNextOffset;
      },
      append: (payload) =>
        dlq.append(payload).then((offset) => {
          e.durable(-1, offset, 0);
          return offset;
        }),
      read: (from) => dlq.read(from),
      truncateBefore: (offset) => dlq.truncateBefore(offset),
      close: () => dlq.close(),
    },
    coordinator: undefined,
    deps: {
      onDurable: (shard, offset, payload, rows) => {
        uncommitted.durable(shard, offset, rows, payload.byteLength);
        e.durable(shard, offset, rows);
      },
      backlog: () => e.backlog(),
      uncommitted: () => ({ bytes: uncommitted.bytes, events: uncommitted.events }),
      lagMs: () => {
        const processed = e.processedOffsets();
        return processed === undefined ? 0 : uncommitted.lagMs(processed);
      },
      live: () => e.live(),
      ready: () => e.ready(),
      metrics: () => e.metricsText(),
      memoryBytes: () => anonymousResidentBytes() + e.anonBytes(),
    },
    close: async () => {
      try {
        await e.close();
      } finally {
        await closeLogs(logs);
        logs.episodes.clear();
      }
    },
  };
}

/** A node's JetStream log: every shard and the DLQ, publish latency into /metrics, the stream's backlog polled. */
interface JetStreamNodeLog {
  readonly logs: JetStreamLogs;
  readonly shards: JetStreamLog[];
  readonly dlq: JetStreamLog;
  readonly backlog: JetStreamBacklog;
  close(): Promise<void>;
}

async function openJetStream(config: ServeConfig, logger: Logger): Promise<JetStreamNodeLog> {
  const logs = await JetStreamLogs.connect({
    servers: config.logServers!,
    ...(config.logReplicas !== undefined ? { replicas: config.logReplicas } : {}),
    onPublish: observePublish,
    logger,
  });
  try {
    const { shards, dlq } = await logs.openAll(config.engine.shards);
    const backlog = await JetStreamBacklog.start(logs, { shards: config.engine.shards, logger });
    return {
      logs,
      shards,
      dlq,
      backlog,
      close: async () => {
        await backlog.close();
        await logs.close();
      },
    };
  } catch (err) {
    await logs.close();
    throw err;
  }
}

/**
 * `--role ingest`: an ingest node, no engine at all — it appends to JetStream (ack after the
 * PubAck) and refuses with 503 while the stream holds more than maxBacklogBytes that the engines
 * have not truncated. Engine nodes (or a `serve --log` node) consume the same shards.
 */
async function startIngestNode(config: ServeConfig, logger: Logger): Promise<StartedEngine> {
  const jetstream = await openJetStream(config, logger);
  return {
    recovered: Promise.resolve(),
    logs: jetstream.shards,
    dlqLog: jetstream.dlq,
    coordinator: undefined,
    deps: {
      uncommitted: () => jetstream.backlog.uncommitted(),
      ready: () => !jetstream.logs.nc.isClosed(),
    },
    close: () => jetstream.close(),
  };
}

/**
 * Other ingest nodes append to the same shards: an inline engine learns of their records only by
 * asking the stream (`JetStreamLogs.follow`: each subject's last sequence, every 250 ms) and hands
 * the new marks to the coordinator, whose pumps read the records from the stream.
 */
function followOtherWriters(jetstream: JetStreamNodeLog, coordinator: Coordinator, logger: Logger): { stop(): Promise<void> } {
  return jetstream.logs.follow([...jetstream.shards, jetstream.dlq], (shard, next) => {
    if (shard >= 0) coordinator.durable(shard, next, 0); // the DLQ flush reads up to the DLQ log's own mark
  }, { onError: (err) => logger.warn({ err }, 'cannot learn other writers\' records from JetStream; retrying') });
}

async function closeLogs(logs: LocalLogs): Promise<void> {
  for (const l of logs.logs) await l.close();
  await logs.dlqLog.close();
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('run the ingest server and the engine on embedded defaults (local log, local lake)')
    .option('--port <n>', 'HTTP/WebSocket port (0 = any free port)')
    .option('--host <addr>', 'address to listen on')
    .option('--data <dir>', 'data directory: logs, checkpoints, write key')
    .option('--lake <dir|s3://bucket/prefix>', 'where Parquet tables are written')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (path-style)')
    .option('--shards <n>', 'number of shards (default: the cores; fixed for a data directory, which records it)')
    .option('--workers <n>', 'worker threads')
    .option('--write-key <key>', 'accepted write key (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--read-key <key>', 'dashboard read key (repeatable; never a write key)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--admin-key <key>', 'admin key for /v1/admin/erasures (repeatable; never a write or read key)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--flush-interval <duration>', 'checkpoint / file flush interval, e.g. 10s')
    .option('--allowed-lateness <duration>', 'watermark lag behind the max event time, e.g. 2h')
    .option('--session-gap <duration>', 'inactivity gap closing a session, e.g. 30m')
    .option('--dedup-ttl <duration>', 'how long event ids are remembered (by receive time, in whole hours), e.g. 24h')
    .option('--target-file-size <bytes>', 'target Parquet file size, e.g. 128MiB')
    .option('--compression <codec>', 'zstd | snappy | none')
    .option('--worker-nice <n>', 'niceness 0–19 of the engine (its process and worker threads; default 10: acks first)')
    .option('--range-linger <duration>', 'how long a shard waits for more records under light load before it processes them, e.g. 200ms (default; 0 = at once)')
    .option('--max-backlog <bytes>', 'bound of the log not yet committed by the engine: 503 + Retry-After above it, e.g. 2GiB (default ¼ of the free disk, 256MiB–64GiB)')
    .option('--max-lag <duration>', 'how far the engine\'s processing may fall behind the acks: 503 + Retry-After above it, e.g. 10s (default 5s, or the flush interval if longer; 0 = no bound)')
    .option('--rate-limit <events/s>', 'per write key (fairness between keys; burst 2 s): 429 + Retry-After above it (default 1000000: off for a single server)')
    .option('--max-memory <bytes>', 'memory budget (ingest + engine RSS): 503 + Retry-After above it, e.g. 2GiB (default 75 % of RAM)')
    .option('--engine-mode <mode>', 'process (default: the engine in its own niced process) | inline (in the ingest process)')
    .option('--log <nats://host:4222,…>', 'append to and consume from NATS JetStream instead of the local log (engine inline for now)')
    .option('--role <role>', 'all (default: ingest and engine) | ingest (an ingest node on --log nats://…: no engine)')
    .option('--config <file>', 'JSON config file')
    .action(async (flags: RawSettings & { writeKey?: string[]; readKey?: string[]; adminKey?: string[]; config?: string }) => {
      const config = composeServeConfig({ ...flags, writeKeys: flags.writeKey, readKeys: flags.readKey, adminKeys: flags.adminKey });
      const logger = pino({ level: process.env.SLUICE_LOG_LEVEL ?? 'info' }, pino.destination(2));
      // An ingest node keeps no state in its data directory that another could clash with.
      const claim = config.role === 'ingest' ? undefined : await claimDataDir(config.engine.dataDir, logger);
      // The handlers go in before the start: serve listens (503 `starting`) while its engine
      // recovers, and a SIGTERM meanwhile killed it without a word, leaving the engine process
      // behind. A stop during the start lets the engine finish recovering, then drains and commits
      // (a start waiting for the object store to come back is given up).
      try {
        await runUntilSignal(
          (stop) => startSluice(config, logger, stop),
          (sluice) => sluice.close(),
          (sluice) =>
            process.stdout.write(
              `Sluice listening on ${sluice.url}\n` +
                `  write key: ${sluice.writeKey}\n` +
                `  dashboard: ${sluice.url}/dashboard?key=${sluice.readKey}\n` +
                (config.role === 'ingest' ? `  role:      ingest node (no engine), log ${config.logServers!.join(',')}\n` : `  lake:      ${config.engine.lake}\n`) +
                `  data:      ${config.engine.dataDir}\n` +
                `  shards:    ${config.engine.shards} on ${config.engine.workers} workers\n` +
                `try: curl -u ${sluice.writeKey}: -H 'content-type: application/json' ${sluice.url}/v1/track ` +
                `-d '{"userId":"u1","event":"Application Opened"}'\n`,
            ),
          logger,
          'stopping: draining and committing everything acknowledged',
        );
      } finally {
        await claim?.release();
      }
    });
}
