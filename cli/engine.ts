/**
 * `sluice engine --log nats://… --lake … --data …`: an engine node (issue 10). It runs the
 * coordinator over the shards whose lease it holds in JetStream KV, consuming them from the
 * stream (engine/cluster-node.ts), and serves its own /metrics, /healthz, /readyz and
 * /v1/cluster on --port. Ingest runs elsewhere (`sluice serve --role ingest --log nats://…`).
 */
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { pino, type Logger } from 'pino';
import { register as registry } from 'prom-client';
import { userError } from '../common/errors.js';
import { parseDuration } from '../common/duration.js';
import { ClusterNode } from '../engine/cluster-node.js';
import { LeaseTable, LEASE_DEFAULTS } from '../engine/lease.js';
import { JetStreamLogs } from '../log/jetstream-log.js';
import { composeServeConfig, type RawSettings, type ServeConfig } from './config.js';
import { runUntilSignal } from './until-signal.js';

export interface EngineNodeSettings {
  /** Lease time-to-live, ms (a dead node's shards are taken over within about ttl + ttl/3). Default 15 s. */
  leaseTtlMs?: number;
  /** This node's id (default: host name + random suffix). */
  nodeId?: string;
}

export interface RunningEngineNode {
  readonly url: string;
  readonly node: ClusterNode;
  close(): Promise<void>;
}

/** Starts an engine node in-process (what the command runs; tests call it too). */
export async function startEngineNode(config: ServeConfig, settings: EngineNodeSettings, logger: Logger): Promise<RunningEngineNode> {
  if (config.logServers === undefined) throw userError('invalid_option', 'sluice engine needs the shared log: --log nats://host:4222[,…] (engine nodes consume the JetStream stream that ingest nodes append to)');
  const nodeId = settings.nodeId ?? `${hostname().replace(/[^A-Za-z0-9_-]/g, '-')}-${randomBytes(3).toString('hex')}`;
  const js = await JetStreamLogs.connect({ servers: config.logServers, ...(config.logReplicas !== undefined ? { replicas: config.logReplicas } : {}), logger });
  let node: ClusterNode;
  try {
    const leases = await LeaseTable.open(js.nc, { nodeId, ttlMs: settings.leaseTtlMs ?? LEASE_DEFAULTS.ttlMs, replicas: config.logReplicas ?? LEASE_DEFAULTS.replicas });
    node = await ClusterNode.start(config.engine, js, leases, logger);
  } catch (err) {
    await js.close();
    throw err;
  }
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string): void => void res.writeHead(status, { 'content-type': type }).end(body);
    if (path === '/metrics') {
      registry.metrics().then((text) => send(200, registry.contentType, text), (err: unknown) => send(500, 'text/plain', String(err)));
    } else if (path === '/healthz') {
      send(200, 'text/plain', 'ok\n');
    } else if (path === '/readyz') {
      const failure = node.coordinator.failure;
      send(failure === undefined ? 200 : 503, 'text/plain', failure === undefined ? 'ready\n' : `${failure.message}\n`);
    } else if (path === '/v1/cluster') {
      send(200, 'application/json', JSON.stringify({ node: nodeId, leases: node.heldLeases, shards: node.coordinator.ownedShards, progress: node.coordinator.progress(), stopped: node.coordinator.stoppedShards }));
    } else {
      send(404, 'text/plain', 'not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${config.host}:${port}`,
    node,
    close: () =>
      (closing ??= (async () => {
        await closeServer(server);
        try {
          await node.close();
        } finally {
          await js.close();
        }
      })()),
  };
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export function register(program: Command): void {
  program
    .command('engine')
    .description('run an engine node: own shards by lease in JetStream KV, consume them from the stream, commit to the lake (scale-out; docs/SCALE-OUT.md)')
    .requiredOption('--log <nats://host:4222,…>', 'the JetStream cluster the ingest nodes append to')
    .option('--port <n>', 'HTTP port of /metrics, /readyz, /v1/cluster (0 = any free port)')
    .option('--host <addr>', 'address to listen on')
    .option('--data <dir>', 'local data directory (shard state of the owned shards; never read by another node)')
    .option('--lake <dir|s3://bucket/prefix>', 'where Parquet tables, commit records, state snapshots and fences are written')
    .option('--s3-endpoint <url>', 'S3-compatible endpoint (path-style)')
    .option('--shards <n>', 'number of shards (the same on every node)')
    .option('--workers <n>', 'worker threads')
    .option('--flush-interval <duration>', 'checkpoint / file flush interval, e.g. 10s')
    .option('--allowed-lateness <duration>', 'watermark lag behind the max event time, e.g. 2h')
    .option('--session-gap <duration>', 'inactivity gap closing a session, e.g. 30m')
    .option('--dedup-ttl <duration>', 'how long event ids are remembered (by receive time, in whole hours), e.g. 24h')
    .option('--target-file-size <bytes>', 'target Parquet file size, e.g. 128MiB')
    .option('--compression <codec>', 'zstd | snappy | none')
    .option('--lease-ttl <duration>', `shard lease time-to-live: a dead node's shards move within about 4/3 of it (default ${LEASE_DEFAULTS.ttlMs / 1000}s)`)
    .option('--node-id <id>', 'this node’s id in the lease buckets (default: host name + random suffix)')
    .option('--config <file>', 'JSON config file')
    .action(async (flags: RawSettings & { config?: string; leaseTtl?: string; nodeId?: string }) => {
      const { leaseTtl, nodeId, ...rest } = flags;
      const config = composeServeConfig({ ...rest, port: rest.port ?? '9464' } as RawSettings);
      const logger = pino({ level: process.env.SLUICE_LOG_LEVEL ?? 'info' }, pino.destination(2));
      // As serve: a stop during the start (its first scan restores the shards it takes) waits for it, then hands everything over.
      await runUntilSignal(
        () => startEngineNode(config, { ...(leaseTtl !== undefined ? { leaseTtlMs: parseDuration(leaseTtl, '--lease-ttl') } : {}), ...(nodeId !== undefined ? { nodeId } : {}) }, logger),
        (running) => running.close(),
        (running) =>
          process.stdout.write(`Sluice engine node listening on ${running.url}\n  lake: ${config.engine.lake}\n  data: ${config.engine.dataDir}\n  shards: ${config.engine.shards} (owned now: ${running.node.coordinator.ownedShards.join(', ') || 'none'})\n`),
        logger,
        'stopping: final checkpoint of the owned shards, then the leases are released',
      );
    });
}
