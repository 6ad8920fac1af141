/**
 * The replicated log: the `ShardLog` contract on NATS JetStream (design: "Scale-out"), so that
 * ingest nodes and engine nodes on several machines share one log instead of local files.
 *
 * One stream (default `SLUICE`, retention by limits, R3 by default) holds every shard:
 *
 *   subject                 what
 *   sluice.events.s{n}      shard n's records (one Arrow IPC record per group commit)
 *   sluice.dlq              dead letters (the DLQ log, shard -1)
 *
 * A record's offset IS its stream sequence (the log declares `denseOffsets: false`): sparse per
 * shard (other shards interleave), strictly increasing in stream order, assigned by the stream
 * leader, so any number of writers may append to one shard at once and every reader sees the
 * same total order, on every replay (checkpoint file names, which come from offset ranges, are
 * deterministic):
 *
 *   stream seq:   1     2     3     4     5     6     7
 *   subject:      s0    s1    s0    s0    s1    s0    s1
 *   writer:       A     A     B     A     B     B     A
 *   shard 0's offsets: 1, 3, 4, 6          shard 1's: 2, 5, 7
 *
 *   append(p) on s0 by writer A (its n-th append on this shard):
 *     publish s0, p, { Nats-Msg-Id: A.s0.n }          ← a retry is stored once
 *     ─▶ PubAck {seq 6}              (stored on a quorum of the replicas)      → resolve(6)
 *     ─▶ PubAck {seq 6, duplicate}   (an earlier attempt was stored, its PubAck lost) → resolve(6)
 *     ─▶ timeout / no responders / connection lost → publish the same message again (same
 *        Msg-Id) until `appendTimeoutMs`
 *
 * No compare-and-set: nats-server 2.9 does not serialize a subject CAS against publishes still
 * being replicated (two racing writers both passed it in 102 of 200 rounds,
 * bench/jetstream-cas-race.ts), which is why the first version (dense offsets in a header)
 * allowed one writer per shard only. The stream sequence needs no CAS: the leader assigns it.
 *
 * Why the Msg-Id is `writer id + shard + the writer's own append counter`: it must name one
 * append (all retries of it) of one writer. A content hash would merge two appends of equal bytes;
 * anything shared between writers would let one writer's publish be answered "duplicate" with
 * another's record. The writer id is random per opened log set (per process), so ids never collide
 * across writers or restarts; the duplicate window (default 2 min) is longer than
 * `appendTimeoutMs` (validated), so a retry is always inside it.
 *
 * Durability: the PubAck of an R3 stream comes after a Raft quorum stored the record. Raft
 * applies in order, so once a writer holds the PubAck of sequence S, no record below S can
 * appear later: `durableNextOffset` = the highest sequence this log knows on its subject + 1
 * (its own PubAcks, `sync()`, records it read). nats-server 2.9 fsyncs periodically
 * (`sync_interval`, not configurable before 2.10): a kill -9 of any minority loses nothing
 * acknowledged; a power loss of a quorum at once may.
 *
 * A failed append (no PubAck before `appendTimeoutMs`) rejects with `log_publish_failed`; the
 * record may still be stored and is then read like any other (a duplicate at worst: the client
 * was told to retry; dedup by event_id downstream removes it), as with the local log.
 *
 * Records above the server's `max_payload` (1 MiB by default; ingest's group commit can build
 * bigger ones) are stored as messages `Sluice-Chunk: i/n` (Msg-Id `….<counter>.<i>`), each chunk
 * after the first naming its predecessor's sequence (`Sluice-Chunk-Prev`), since another writer's
 * messages may interleave. The record's offset is its LAST chunk's sequence (the record exists
 * from then on, so offsets stay in stream order); a reader that meets a chunk whose predecessors
 * lie before its start fetches them by sequence. An incomplete record (the tail of a failed
 * append, or one still being written) is never yielded. Truncation must not purge the first chunks
 * of a record still being written: see `truncateBefore`.
 *
 * Reads: an ephemeral pull consumer (R1, memory, no acks) filtered on the shard's subject from
 * sequence `fromOffset`, deleted when the read ends; it ends once it has delivered the subject's
 * message at `durableNextOffset - 1` (or later) and nothing is pending. The consumer lives on one
 * server: when that server dies mid-read (heartbeats missed), the read goes on from a new consumer
 * at the next sequence, for up to 30 s, then fails with `log_unavailable`.
 *
 * Truncation removes the subject's messages below a sequence, never its newest message: one
 * filtered purge (`filter` + `seq`) on nats-server ≥ 2.9.18, else one message delete per record.
 * Before 2.9.18 a node restarted after a crash replays a purge still in its Raft log as a purge
 * of EVERY subject up to the stream's last sequence when the purge was made (nats-server #4212):
 * that replica silently loses other shards' unconsumed records, its consumers skip them, and
 * once it leads the stream they are gone (seen here: acknowledged events missing from silver
 * after a kill -9 of a NATS node). A message delete is replayed exactly.
 *
 * The stream discards NEW messages at its limits (`maxBytes`: appends fail with `log_full` until
 * the engines truncate), so unconsumed records are never dropped; `maxAgeMs` (off by default)
 * would drop them.
 */
import { connect, headers as natsHeaders, nuid, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type JetStreamPublishOptions,
  type PubAck,
} from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { performance } from 'node:perf_hooks';
import { externalError, internalError, userError, SluiceError } from '../common/errors.js';
import { mapLimit } from '../common/map-limit.js';
import type { LogRecord, ShardLog } from './log.js';

/** Header of a record stored as several messages: `i/n` (chunk i of n, 0-based). */
export const CHUNK_HEADER = 'Sluice-Chunk';
/** Header of chunk i > 0: the stream sequence of chunk i-1 (other writers' messages may lie between). */
export const CHUNK_PREV_HEADER = 'Sluice-Chunk-Prev';
/** Room left in a message for the headers when a record is cut into chunks of max_payload. */
const HEADER_ROOM_BYTES = 4096;

/** JetStream API error codes this log reacts to. */
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;
const SUBJECTS_OVERLAP = 10065;
/** A message get or delete found no message at that sequence. */
const NO_MESSAGE_FOUND = 10037;
/** A message delete that failed; its description says why ("no message found": already deleted). */
const MESSAGE_DELETE_FAILED = 10057;
/** Message deletes (and the gets that find them) in flight during one truncation. */
const DELETE_CONCURRENCY = 32;
/** The stream's max_bytes (or max_msgs) is reached and it discards new messages. */
const STREAM_FULL = 10077;
/**
 * KV bucket holding each stream's shard count (key: the stream's name; value: `{"shards": S,
 * "stream": <the stream's creation time>}`): every writer and reader of a stream hashes users
 * mod the same S, or a user's events land in shards that do not hold its state.
 */
export const LAYOUT_BUCKET = 'sluice_layout';

/** Minimal structured logger (pino's `Logger` fits). */
export interface JetStreamLogLogger {
  warn(obj: object, msg: string): void;
}

/**
 * Publishes one message and resolves with its PubAck (the JetStream client's `publish`). An
 * option so that tests can inject lost acks around the real publish, as the segment log's
 * `fsync` option does.
 */
export type JetStreamPublish = (subject: string, payload: Uint8Array, options: Partial<JetStreamPublishOptions>) => Promise<PubAck>;

/** Options of the connection and the stream. Validated by {@link validateJetStreamLogOptions}. */
export interface JetStreamLogOptions {
  /** NATS URLs (`nats://host:4222`), any subset of the cluster's nodes. At least one. */
  servers: string[];
  /** Stream name. Default `SLUICE`. Created if missing (with the settings below). */
  stream?: string;
  /** Subject prefix: shard n is `<prefix>.events.s<n>`, the DLQ `<prefix>.dlq`. Default `sluice`. */
  subjectPrefix?: string;
  /** Replicas of a newly created stream (1–5). Default 3 (quorum 2: one node may die). */
  replicas?: number;
  /**
   * Stream limit: records older than this (ms) are dropped, consumed or not. 0 = no limit
   * (default: the engine's truncation after its checkpoints is the retention, as with the local
   * log). If set, it must be far longer than any engine lag and any shard's idle time.
   */
  maxAgeMs?: number;
  /**
   * Stream limit in bytes: when reached, appends are refused (`log_full`: discard policy "new")
   * until the engine truncates — never are unconsumed records dropped. -1 = no limit (default).
   */
  maxBytes?: number;
  /** Window (ms) in which a re-published `Nats-Msg-Id` is stored once. Default 2 min. */
  duplicateWindowMs?: number;
  /** How long (ms) one append keeps retrying (failover, reconnect) before it rejects. Default 30 s. */
  appendTimeoutMs?: number;
  /**
   * How long (ms) truncation keeps the first chunks of a record that may still be being written
   * (see `truncateBefore`). Default 2 × appendTimeoutMs; 0 only where no chunked append can be in
   * flight (tests).
   */
  truncateGraceMs?: number;
  /** How long (ms) one publish attempt waits for its PubAck. Default 5 s. */
  publishTimeoutMs?: number;
  /**
   * How truncation removes a subject's records: `purge` (one filtered purge), `delete` (one
   * message delete per record), or `auto` (default): `purge` on nats-server ≥ 2.9.18, `delete`
   * below — a server before 2.9.18 replays a filtered purge after a crash as a purge of EVERY
   * subject up to the stream's last sequence at the time (see the file comment).
   */
  truncateBy?: 'auto' | 'purge' | 'delete';
  /** Identifies this writer in `Nats-Msg-Id`s; default a random NUID per opened log set. */
  writerId?: string;
  /** Replaces the client's publish (failure injection in tests). */
  publish?: JetStreamPublish;
  /** Sees each pull's messages before a read does and returns what arrives (failure injection in tests: messages lost in transit). */
  onFetch?: (messages: JsMsg[]) => JsMsg[];
  /**
   * Called after every acknowledged append with its duration from first attempt to PubAck (ms),
   * payload bytes and publish attempts. Must not throw. For metrics and the benchmark.
   */
  onPublish?: (durationMs: number, bytes: number, attempts: number) => void;
  /** Told about retries and resynchronisations. Default: silent. */
  logger?: JetStreamLogLogger;
  /** Connection name shown by the server (`connz`). Default `sluice`. */
  name?: string;
}

/** {@link JetStreamLogOptions} with defaults applied. */
export interface ResolvedJetStreamLogOptions {
  readonly servers: readonly string[];
  readonly stream: string;
  readonly subjectPrefix: string;
  readonly replicas: number;
  readonly maxAgeMs: number;
  readonly maxBytes: number;
  readonly duplicateWindowMs: number;
  readonly appendTimeoutMs: number;
  readonly truncateGraceMs: number;
  readonly publishTimeoutMs: number;
  readonly truncateBy: 'auto' | 'purge' | 'delete';
  readonly writerId: string;
  readonly publish: JetStreamPublish | undefined;
  readonly onFetch: ((messages: JsMsg[]) => JsMsg[]) | undefined;
  readonly onPublish: ((durationMs: number, bytes: number, attempts: number) => void) | undefined;
  readonly logger: JetStreamLogLogger | undefined;
  readonly name: string;
}

export const JETSTREAM_LOG_DEFAULTS = {
  stream: 'SLUICE',
  subjectPrefix: 'sluice',
  replicas: 3,
  maxAgeMs: 0,
  maxBytes: -1,
  duplicateWindowMs: 120_000,
  appendTimeoutMs: 30_000,
  publishTimeoutMs: 5_000,
  name: 'sluice',
} as const;

const TOKEN_RE = /^[A-Za-z0-9_-]+$/;
const PREFIX_RE = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** Applies defaults and checks every option; throws a user error (`invalid_option`) naming it. */
export function validateJetStreamLogOptions(options: JetStreamLogOptions): ResolvedJetStreamLogOptions {
  const bad = (message: string) => userError('invalid_option', message);
  if (typeof options !== 'object' || options === null) throw bad(`JetStream log options must be an object, got ${String(options)}`);
  const { servers } = options;
  if (!Array.isArray(servers) || servers.length === 0) throw bad('servers must list at least one NATS URL, e.g. ["nats://127.0.0.1:4222"]');
  for (const s of servers) {
    if (typeof s !== 'string' || !/^(nats|tls):\/\/[^\s,/]+$/.test(s)) throw bad(`servers: ${JSON.stringify(s)} is not a NATS URL like nats://host:4222`);
  }
  const stream = options.stream ?? JETSTREAM_LOG_DEFAULTS.stream;
  if (typeof stream !== 'string' || !TOKEN_RE.test(stream)) throw bad(`stream must be a name of letters, digits, '-' or '_' (default SLUICE), got ${JSON.stringify(stream)}`);
  const subjectPrefix = options.subjectPrefix ?? JETSTREAM_LOG_DEFAULTS.subjectPrefix;
  if (typeof subjectPrefix !== 'string' || !PREFIX_RE.test(subjectPrefix)) {
    throw bad(`subjectPrefix must be dot-separated tokens of letters, digits, '-' or '_' (default sluice), got ${JSON.stringify(subjectPrefix)}`);
  }
  const int = (name: string, v: unknown, min: number, max: number, hint: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`${name} must be an integer from ${min} to ${max} (${hint}), got ${String(v)}`);
    return v;
  };
  const replicas = int('replicas', options.replicas ?? JETSTREAM_LOG_DEFAULTS.replicas, 1, 5, 'stream replicas; default 3');
  const maxAgeMs = int('maxAgeMs', options.maxAgeMs ?? JETSTREAM_LOG_DEFAULTS.maxAgeMs, 0, Number.MAX_SAFE_INTEGER, 'ms; 0 = no limit (default)');
  const maxBytes = options.maxBytes ?? JETSTREAM_LOG_DEFAULTS.maxBytes;
  if (maxBytes !== -1) int('maxBytes', maxBytes, 1, Number.MAX_SAFE_INTEGER, 'bytes; -1 = no limit (default)');
  const duplicateWindowMs = int('duplicateWindowMs', options.duplicateWindowMs ?? JETSTREAM_LOG_DEFAULTS.duplicateWindowMs, 1000, 24 * 3600 * 1000, 'ms; default 2 min');
  const appendTimeoutMs = int('appendTimeoutMs', options.appendTimeoutMs ?? JETSTREAM_LOG_DEFAULTS.appendTimeoutMs, 100, 3600 * 1000, 'ms; default 30 s');
  const publishTimeoutMs = int('publishTimeoutMs', options.publishTimeoutMs ?? JETSTREAM_LOG_DEFAULTS.publishTimeoutMs, 50, 600 * 1000, 'ms; default 5 s');
  const truncateGraceMs = int('truncateGraceMs', options.truncateGraceMs ?? 2 * appendTimeoutMs, 0, 24 * 3600 * 1000, 'ms; default 2 × appendTimeoutMs');
  if (appendTimeoutMs >= duplicateWindowMs) {
    throw bad(`appendTimeoutMs (${appendTimeoutMs}) must be shorter than duplicateWindowMs (${duplicateWindowMs}), or a retried publish could be stored twice`);
  }
  const truncateBy = options.truncateBy ?? 'auto';
  if (!['auto', 'purge', 'delete'].includes(truncateBy)) throw bad(`truncateBy must be 'auto', 'purge' or 'delete', got ${JSON.stringify(truncateBy)}`);
  const writerId = options.writerId ?? nuid.next();
  if (typeof writerId !== 'string' || !TOKEN_RE.test(writerId)) throw bad(`writerId must be letters, digits, '-' or '_', got ${JSON.stringify(writerId)}`);
  for (const fn of ['publish', 'onFetch', 'onPublish'] as const) {
    if (options[fn] !== undefined && typeof options[fn] !== 'function') throw bad(`${fn} must be a function, got ${typeof options[fn]}`);
  }
  if (options.logger !== undefined && (typeof options.logger !== 'object' || typeof options.logger?.warn !== 'function')) {
    throw bad('logger must be an object with a warn(obj, msg) method (a pino Logger works)');
  }
  const name = options.name ?? JETSTREAM_LOG_DEFAULTS.name;
  return {
    servers: [...servers], stream, subjectPrefix, replicas, maxAgeMs, maxBytes, duplicateWindowMs, appendTimeoutMs, truncateGraceMs, publishTimeoutMs,
    truncateBy, writerId, publish: options.publish, onFetch: options.onFetch, onPublish: options.onPublish, logger: options.logger, name,
  };
}

/**
 * Parses `--log` / `SLUICE_LOG`: `nats://h1:4222,nats://h2:4222` (or `nats://h1:4222,h2:4222`),
 * optionally ending in `?replicas=N` (default 3; 1 for a single development server).
 */
export function parseNatsLog(value: string): { servers: string[]; replicas: number | undefined } {
  let replicas: number | undefined;
  const q = value.indexOf('?');
  let list = value;
  if (q >= 0) {
    const m = /^replicas=([1-5])$/.exec(value.slice(q + 1).trim());
    if (m === null) throw userError('invalid_option', `log: the only option after "?" is replicas=1…5 (e.g. nats://127.0.0.1:4222?replicas=1), got ${JSON.stringify(value.slice(q))}`);
    replicas = Number(m[1]);
    list = value.slice(0, q);
  }
  const parts = list.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0 || !parts[0]!.startsWith('nats://')) {
    throw userError('invalid_option', `log must be nats://host:port[,host:port…][?replicas=N] (or unset for the local segment log), got ${JSON.stringify(value)}`);
  }
  return { servers: parts.map((p) => (/^[a-z]+:\/\//.test(p) ? p : `nats://${p}`)), replicas };
}

/** The servers of a `--log` value (see {@link parseNatsLog}). */
export function parseNatsLogUrl(value: string): string[] {
  return parseNatsLog(value).servers;
}

/** The subject of shard `shard` (-1: the DLQ). */
export function shardSubject(prefix: string, shard: number): string {
  return shard < 0 ? `${prefix}.dlq` : `${prefix}.events.s${shard}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** `version` ("2.9.10", "2.10.0-beta.1") is at least `min` (major, minor, patch); false when unknown. */
export function versionAtLeast(version: string | undefined, min: [number, number, number]): boolean {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version ?? '');
  if (!m) return false;
  const v = [Number(m[1]), Number(m[2]), Number(m[3])];
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i]! > min[i]!;
  return true;
}

function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
}

/** The `i/n` of a chunked record's message, or undefined for a record stored whole. */
function chunkOf(subject: string, seq: number, value: string | undefined): [number, number] | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d+)\/(\d+)$/.exec(value);
  const i = m ? Number(m[1]) : NaN;
  const n = m ? Number(m[2]) : NaN;
  if (!(n >= 2 && i >= 0 && i < n)) throw internalError('log_corrupt', `${subject} stream sequence ${seq} has an invalid ${CHUNK_HEADER} header (${JSON.stringify(value)})`);
  return [i, n];
}

/**
 * The connection and the stream, shared by every shard's log of one process. Open with
 * {@link JetStreamLogs.connect}; `close()` closes the logs it opened, then the connection.
 */
export class JetStreamLogs {
  private readonly opened: JetStreamLog[] = [];

  private constructor(
    readonly options: ResolvedJetStreamLogOptions,
    readonly nc: NatsConnection,
    readonly jsm: JetStreamManager,
    readonly js: JetStreamClient,
  ) {}

  /** Connects (to any of `servers`; reconnects forever to any node) and creates or checks the stream. */
  static async connect(options: JetStreamLogOptions): Promise<JetStreamLogs> {
    const opts = validateJetStreamLogOptions(options);
    let nc: NatsConnection;
    try {
      nc = await connect({ servers: [...opts.servers], name: opts.name, maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 10_000 });
    } catch (err) {
      throw externalError('log_unavailable', `cannot connect to NATS at ${opts.servers.join(',')}: ${(err as Error)?.message ?? String(err)}; is nats-server running with JetStream enabled?`, err);
    }
    try {
      // Retried until appendTimeoutMs: at startup the cluster may still be electing leaders, and
      // a node just killed leaves its API requests (the manager's first one too) unanswered or
      // answered "no responders" for a while.
      const deadline = performance.now() + opts.appendTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        try {
          const jsm = await jetstreamManager(nc, { timeout: opts.publishTimeoutMs });
          const logs = new JetStreamLogs(opts, nc, jsm, jetstream(nc, { timeout: opts.publishTimeoutMs }));
          await logs.ensureStream();
          return logs;
        } catch (err) {
          if (err instanceof SluiceError || performance.now() + 250 >= deadline) throw err;
          opts.logger?.warn({ stream: opts.stream, attempt, err: (err as Error)?.message }, 'JetStream not ready; retrying');
          await sleep(Math.min(100 * attempt, 1000));
        }
      }
    } catch (err) {
      await nc.close().catch(() => undefined);
      if (err instanceof SluiceError) throw err;
      throw externalError('log_unavailable', `NATS at ${opts.servers.join(',')} has no usable JetStream after ${opts.appendTimeoutMs} ms of retries: ${(err as Error)?.message ?? String(err)} (is nats-server running with JetStream enabled, -js, and its cluster up?)`, err);
    }
  }

  /**
   * Whether truncation purges (else it deletes record by record): `truncateBy`, or with `auto`
   * whether the server this connection reached is nats-server 2.9.18 or later (the first that
   * replays a filtered purge correctly after a crash; every node of a cluster should run the same
   * version).
   */
  get truncatesByPurge(): boolean {
    const by = this.options.truncateBy;
    return by === 'auto' ? versionAtLeast(this.nc.info?.version, [2, 9, 18]) : by === 'purge';
  }

  /** The largest payload the server accepts (`max_payload`, bytes). */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  /** Creates the stream if missing; checks an existing one holds our subjects and aligns its limits. */
  private async ensureStream(): Promise<void> {
    const o = this.options;
    const subjects = [`${o.subjectPrefix}.events.*`, `${o.subjectPrefix}.dlq`];
    const wanted = {
      discard: DiscardPolicy.New,
      max_age: o.maxAgeMs * 1e6,
      max_bytes: o.maxBytes,
      duplicate_window: o.duplicateWindowMs * 1e6,
    };
    for (let attempt = 0; attempt < 3; attempt++) {
      let info;
      try {
        info = await this.jsm.streams.info(o.stream);
      } catch (err) {
        if (apiCode(err) !== STREAM_NOT_FOUND) throw err;
        if (o.replicas > 1 && this.nc.info?.cluster === undefined) {
          throw userError('log_replicas', `the NATS server at ${o.servers.join(',')} is not clustered, so stream ${o.stream} cannot have ${o.replicas} replicas; run a 3-node JetStream cluster (docs/SCALE-OUT.md), or accept a single copy with nats://…?replicas=1`);
        }
        try {
          await this.jsm.streams.add({
            name: o.stream, subjects, num_replicas: o.replicas, storage: StorageType.File, retention: RetentionPolicy.Limits,
            allow_direct: true, ...wanted,
          });
          return;
        } catch (addErr) {
          if (apiCode(addErr) === STREAM_NAME_IN_USE) continue; // another node created it at the same time
          if (apiCode(addErr) === SUBJECTS_OVERLAP) {
            throw userError('log_stream_mismatch', `cannot create JetStream stream ${o.stream}: another stream already holds subjects ${subjects.join(' or ')}; use that stream's name (stream) or another subjectPrefix`, addErr);
          }
          throw addErr;
        }
      }
      const have = info.config.subjects ?? [];
      const missing = subjects.filter((s) => !have.includes(s));
      if (missing.length > 0) {
        throw userError('log_stream_mismatch', `JetStream stream ${o.stream} exists with subjects ${JSON.stringify(have)} but Sluice needs ${JSON.stringify(subjects)}; pick another stream name or subject prefix, or add the subjects to the stream`);
      }
      if (info.config.num_replicas !== o.replicas) {
        o.logger?.warn({ stream: o.stream, replicas: info.config.num_replicas, configured: o.replicas }, 'the JetStream stream exists with another replica count; keeping it (change it with `nats stream edit`)');
      }
      if (info.config.discard !== wanted.discard || info.config.max_age !== wanted.max_age || info.config.max_bytes !== wanted.max_bytes || info.config.duplicate_window !== wanted.duplicate_window) {
        await this.jsm.streams.update(o.stream, { ...info.config, ...wanted });
      }
      return;
    }
  }

  /**
   * What the stream holds, i.e. what the engines have not truncated yet (one stream-info request,
   * answered by the stream leader): bytes and messages of the whole stream, messages per shard
   * subject (index = shard; chunks count one each). For backpressure and metrics: poll it, do not
   * call it per request.
   */
  async backlog(shards: number): Promise<{ bytes: number; messages: number; perShard: number[] }> {
    const o = this.options;
    const info = await this.jsm.streams.info(o.stream, { subjects_filter: `${o.subjectPrefix}.events.*` });
    const perShard = new Array<number>(shards).fill(0);
    for (let s = 0; s < shards; s++) perShard[s] = info.state.subjects?.[shardSubject(o.subjectPrefix, s)] ?? 0;
    return { bytes: info.state.bytes, messages: info.state.messages, perShard };
  }

  /**
   * Learns other writers' records: every `intervalMs` (default 250), `sync()` of each of `logs`
   * (one `last_by_subj` get each, answered by the stream leader); `onMark(shard, next)` when a
   * log's `durableNextOffset` grew to `next` (not for growth from this process's own appends
   * seen at the same time: harmless, the mark is the same). A consumer that does not append (an
   * engine) or shares shards with other ingest nodes needs this; failures are retried at the next
   * tick (`onError` once per outage). `stop()` waits for a tick in progress.
   */
  follow(logs: readonly JetStreamLog[], onMark: (shard: number, next: number) => void, options: { intervalMs?: number; onError?: (err: unknown) => void } = {}): { stop(): Promise<void> } {
    let running: Promise<void> | undefined;
    let failing = false;
    const tick = async (): Promise<void> => {
      try {
        for (const log of logs) {
          const before = log.durableNextOffset;
          const after = await log.sync();
          if (after > before) onMark(log.shard, after);
        }
        failing = false;
      } catch (err) {
        if (!failing) options.onError?.(err);
        failing = true;
      }
    };
    const timer = setInterval(() => {
      running ??= tick().finally(() => (running = undefined));
    }, options.intervalMs ?? 250);
    timer.unref();
    return {
      stop: async () => {
        clearInterval(timer);
        await running;
      },
    };
  }

  /** Opens shard `shard`'s log (-1: the DLQ): finds the subject's last offset. */
  async open(shard: number): Promise<JetStreamLog> {
    if (!Number.isSafeInteger(shard) || shard < -1) throw userError('invalid_option', `shard must be an integer >= 0 (or -1 for the DLQ), got ${String(shard)}`);
    const log = new JetStreamLog(this, shard);
    await log.sync();
    this.opened.push(log);
    return log;
  }

  /** Opens shards 0 … n-1 and the DLQ, after checking that the stream is used with n shards ({@link claimShards}). */
  async openAll(shards: number): Promise<{ shards: JetStreamLog[]; dlq: JetStreamLog }> {
    if (!Number.isSafeInteger(shards) || shards < 1) throw userError('invalid_option', `shards must be an integer >= 1, got ${String(shards)}`);
    await this.claimShards(shards);
    const logs = await Promise.all(Array.from({ length: shards }, (_, s) => this.open(s)));
    return { shards: logs, dlq: await this.open(-1) };
  }

  /**
   * Records `shards` as the stream's shard count in {@link LAYOUT_BUCKET} (create-if-absent, so
   * two nodes starting at once agree on the first), or checks it against the one recorded: a node
   * started with another `--shards` is refused with `shards_mismatch` before it appends or reads.
   * A record from an earlier stream of the same name (deleted and created again) is replaced.
   */
  private async claimShards(shards: number): Promise<void> {
    const o = this.options;
    const created = (await this.jsm.streams.info(o.stream)).created;
    const value = JSON.stringify({ shards, stream: created });
    let lastErr: unknown;
    for (let attempt = 1; attempt <= 10; attempt++) {
      try {
        // Retried like the lease buckets: at start-up the cluster may still elect leaders, and nodes claim at once.
        const kv = await new Kvm(this.js).create(LAYOUT_BUCKET, { history: 1, replicas: this.nc.info?.cluster === undefined ? 1 : o.replicas });
        const entry = await kv.get(o.stream);
        if (entry === null || entry.operation !== 'PUT') {
          await kv.create(o.stream, value);
          return;
        }
        const held = JSON.parse(entry.string()) as { shards?: unknown; stream?: unknown };
        if (held.stream !== created) {
          await kv.update(o.stream, value, entry.revision);
          return;
        }
        if (held.shards !== shards) {
          throw userError(
            'shards_mismatch',
            `JetStream stream ${o.stream} is used with ${String(held.shards)} shards, not ${shards}: every ingest and engine node must hash users to the same shards; ` +
              `start this node with --shards ${String(held.shards)}`,
          );
        }
        return;
      } catch (err) {
        if (err instanceof SluiceError) throw err;
        lastErr = err; // another node claimed between our read and write, or the cluster is not ready: read again
        await sleep(Math.min(100 * attempt, 1000));
      }
    }
    throw externalError('log_unavailable', `cannot record the shard count of JetStream stream ${o.stream} in KV bucket ${LAYOUT_BUCKET}: ${(lastErr as Error)?.message ?? String(lastErr)}`, lastErr);
  }

  /** Closes every log opened here (waiting for their appends), then the connection. */
  async close(): Promise<void> {
    await Promise.allSettled(this.opened.map((l) => l.close()));
    if (this.nc.isClosed()) return;
    // Drain flushes what is buffered; bounded, since with every server gone it would wait for a reconnect.
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 5000)));
    const drained = await Promise.race([this.nc.drain().then(() => 'drained' as const, () => 'failed' as const), bound]);
    clearTimeout(timer);
    if (drained !== 'drained' && !this.nc.isClosed()) await this.nc.close().catch(() => undefined);
  }
}
interface QueuedAppend {
  readonly payload: Uint8Array;
  readonly resolve: (offset: number) => void;
  readonly reject: (err: unknown) => void;
}

/** Records per pull request of a read. */
const READ_BATCH = 64;
/** How long a read waits for a message it knows is stored but a lagging replica has not yet delivered. */
const READ_CATCH_UP_MS = 10_000;
/** How long a read retries on new consumers after its consumer failed (its server died: a failover takes seconds). */
const READ_RECOVER_MS = 30_000;
/** How long one pull request waits for messages on the server. */
const FETCH_EXPIRES_MS = 1_000;
/**
 * A pull that has not ended this long after it expired has lost its consumer: the client's own
 * server died with the consumer on it, and after the reconnect the client library waits for the
 * consumer's info (which a dead node cannot give) before it watches heartbeats again — with no
 * end of its own (seen in CI: a read hung until the test's 120 s timeout).
 */
const FETCH_STALL_MS = FETCH_EXPIRES_MS + 5_000;

/** A chunked record being reassembled by a read. */
interface PartialRecord {
  readonly n: number;
  readonly parts: Array<Uint8Array | undefined>;
  /** Stream sequence of chunk 0, if seen (the purge must stay below it until the record completes). */
  firstSeq: number | undefined;
}

/**
 * One shard's log on JetStream (see the file comment for the design). Open with
 * {@link JetStreamLogs.open}. `append` does not copy the payload: the caller must not mutate it
 * until the append settled. Records yielded by `read` own their payload (a fresh buffer).
 *
 * Offsets are stream sequences (`denseOffsets` false): strictly increasing per shard, with gaps.
 * `nextOffset` is a lower bound of the next record's offset (= `durableNextOffset`).
 * `durableNextOffset` is what this log last learned (open, `sync()`, its own appends, its reads);
 * a node that does not write (an engine) calls `sync()` to learn other writers' records.
 */
export class JetStreamLog implements ShardLog {
  readonly shard: number;
  readonly subject: string;
  readonly denseOffsets = false;
  private readonly opts: ResolvedJetStreamLogOptions;
  /** Highest stream sequence known on this subject + 1 (0: none known). */
  private durableNext = 0;
  /** This writer's appends to this shard: the last token of its Msg-Ids. */
  private appends = 0;
  private queue: QueuedAppend[] = [];
  private pending = 0;
  private pumping: Promise<void> | undefined;
  private closing = false;
  private truncatedBefore = 0;
  private readCount = 0;
  private readonly openedAt = performance.now();
  /** Sequences of this subject's messages reads delivered (ascending), not yet deleted: what `deleteBelow` removes without looking for it. */
  private delivered: number[] = [];
  /** Chunked records reads yielded whole, by offset (last chunk) and first chunk's sequence: kept by truncation until it passes their offset. */
  private chunkedRead: Array<{ offset: number; firstSeq: number }> = [];
  /** Chunk-0 sequences of records a read saw incomplete, with when first seen (local ms): the purge stays below them. */
  private readonly incomplete = new Map<string, { seq: number; seenAt: number }>();

  constructor(
    private readonly logs: JetStreamLogs,
    shard: number,
  ) {
    this.shard = shard;
    this.opts = logs.options;
    this.subject = shardSubject(this.opts.subjectPrefix, shard);
  }

  /** A lower bound of the next record's offset (offsets are sparse): every offset below is taken or skipped. */
  get nextOffset(): number {
    return this.durableNext;
  }

  /** Bytes of appends not yet acknowledged by the stream (for backpressure). */
  get pendingBytes(): number {
    return this.pending;
  }

  get durableNextOffset(): number {
    return this.durableNext;
  }

  /**
   * Learns the subject's last message from the stream leader: every record below the returned
   * offset is stored (and none can appear there later). Retries transient failures until
   * `appendTimeoutMs`.
   */
  async sync(): Promise<number> {
    const last = await this.retrying('sync', () => this.logs.jsm.streams.getMessage(this.opts.stream, { last_by_subj: this.subject }));
    if (last !== null) this.learned(last.seq);
    return this.durableNext;
  }

  /** Stream sequence `seq` holds a message of this subject: everything below it is stored. */
  private learned(seq: number): void {
    if (seq + 1 > this.durableNext) this.durableNext = seq + 1;
  }

  append(payload: Uint8Array): Promise<number> {
    if (this.closing) return Promise.reject(internalError('log_closed', `JetStream log of ${this.subject} is closed; append before close()`));
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ payload, resolve, reject });
      this.pending += payload.byteLength;
      this.kick();
    });
  }

  /** Starts the pump unless it runs (and again after it, for appends queued as it finished). */
  private kick(): void {
    if (this.pumping !== undefined) return;
    this.pumping = this.pump().finally(() => {
      this.pumping = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  /**
   * Publishes queued appends one at a time, in call order (so one writer's offsets follow its
   * call order; ingest's group commit sends one record per shard at a time anyway).
   */
  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const a = this.queue.shift()!;
      try {
        a.resolve(await this.publishOne(a.payload));
      } catch (err) {
        a.reject(err);
      } finally {
        this.pending -= a.payload.byteLength;
      }
    }
  }

  /**
   * One append: publish with retries (see the file comment), as one message or, above the
   * server's max_payload, as chunks. Resolves with the offset (the last message's sequence).
   */
  private async publishOne(payload: Uint8Array): Promise<number> {
    const started = performance.now();
    const tries = { attempts: 0, deadline: started + this.opts.appendTimeoutMs, lastErr: undefined as unknown };
    const id = `${this.opts.writerId}.${this.shard < 0 ? 'dlq' : `s${this.shard}`}.${++this.appends}`;
    const chunkBytes = Math.max(1024, this.logs.maxPayload - HEADER_ROOM_BYTES);
    const n = Math.max(1, Math.ceil(payload.byteLength / chunkBytes));
    let seq = 0;
    try {
      for (let i = 0; i < n; i++) {
        const part = n === 1 ? payload : payload.subarray(i * chunkBytes, Math.min(payload.byteLength, (i + 1) * chunkBytes));
        let h: MsgHdrs | undefined;
        if (n > 1) {
          h = natsHeaders();
          h.set(CHUNK_HEADER, `${i}/${n}`);
          if (i > 0) h.set(CHUNK_PREV_HEADER, String(seq));
        }
        seq = await this.publishMessage(part, n === 1 ? id : `${id}.${i}`, h, tries);
      }
    } catch (err) {
      if (!(err instanceof SluiceError && err.code === 'log_publish_failed')) throw err;
      throw externalError(
        'log_publish_failed',
        `no PubAck for a record of ${this.subject} within ${this.opts.appendTimeoutMs} ms after ${tries.attempts} attempts: ${(tries.lastErr as Error)?.message ?? String(tries.lastErr)}; the record may or may not be stored (never acknowledge it)`,
        tries.lastErr,
      );
    }
    this.learned(seq);
    try {
      this.opts.onPublish?.(performance.now() - started, payload.byteLength, tries.attempts);
    } catch {
      // metrics must not fail an append
    }
    return seq;
  }

  /**
   * Publishes one message (the same message again after a timeout or a lost connection) and
   * resolves with its stream sequence (the original's, when the answer is "duplicate").
   * Throws `log_publish_failed` at the deadline, `log_full` when the stream is at its limits.
   */
  private async publishMessage(part: Uint8Array, msgID: string, headers: MsgHdrs | undefined, tries: { attempts: number; deadline: number; lastErr: unknown }): Promise<number> {
    const publish = this.opts.publish ?? ((s, p, o) => this.logs.js.publish(s, p, o));
    while (performance.now() < tries.deadline) {
      tries.attempts++;
      try {
        const timeout = Math.max(50, Math.min(this.opts.publishTimeoutMs, tries.deadline - performance.now()));
        const ack = await publish(this.subject, part, { msgID, timeout, ...(headers !== undefined ? { headers } : {}) });
        if (ack.seq > 0) return ack.seq;
        // Sequences start at 1: a PubAck naming sequence 0 (a "duplicate" answer for a message a
        // clustered leader has staged but not yet stored) proves nothing. Ask again until it names one.
        tries.lastErr = new Error(`PubAck of ${msgID} names no sequence (duplicate of a message in flight)`);
      } catch (err) {
        tries.lastErr = err;
        if (apiCode(err) === STREAM_FULL) {
          throw externalError('log_full', `JetStream stream ${this.opts.stream} is full (maxBytes ${this.opts.maxBytes}): records are kept until the engines have checkpointed past them and truncated; retry later, or raise maxBytes`, err);
        }
        if (apiCode(err) === STREAM_NOT_FOUND) break;
        this.opts.logger?.warn({ subject: this.subject, msgID, attempt: tries.attempts, err: (err as Error)?.message }, 'JetStream publish failed; retrying the same message');
      }
      await sleep(Math.min(50 * tries.attempts, 500));
    }
    throw externalError('log_publish_failed', 'deadline', tries.lastErr);
  }

  /** Runs a JetStream request, retrying transient failures (failover, reconnect) until the deadline. */
  private async retrying<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const deadline = performance.now() + this.opts.appendTimeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        const code = apiCode(err);
        if (code === STREAM_NOT_FOUND || performance.now() + 100 >= deadline || err instanceof SluiceError) {
          if (err instanceof SluiceError) throw err;
          throw externalError('log_unavailable', `JetStream ${what} of ${this.subject} failed: ${(err as Error)?.message ?? String(err)}`, err);
        }
        await sleep(Math.min(50 * attempt, 500));
      }
    }
  }

  /**
   * Yields the subject's complete records with `offset >= fromOffset` in offset (stream) order,
   * until it has delivered the message at `durableNextOffset - 1` (records stored while reading
   * are included, and teach this log a higher `durableNextOffset`). Starts at the lowest stored
   * offset if `fromOffset` was truncated away. Throws `log_unavailable` if a message known to be
   * stored is not delivered within 10 s (a replica far behind): never ends early silently.
   */
  async *read(fromOffset: number): AsyncGenerator<LogRecord, void, undefined> {
    if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) {
      throw userError('invalid_offset', `read(fromOffset) needs an integer offset >= 0, got ${String(fromOffset)}`);
    }
    if (fromOffset >= this.durableNext) return;
    /** Highest sequence delivered; what is pending behind it (as the consumer last said). */
    let seen = fromOffset - 1;
    let pending = 0;
    let reader: { name: string; consumer: Consumer } | undefined;
    /** The current consumer's delivery sequence of the last message that arrived (0: none yet). */
    let lastDelivery = 0;
    const partials = new Map<string, PartialRecord>();
    let stalledSince: number | undefined;
    /** Consumers of this read that stalled for READ_CATCH_UP_MS in a row (one is replaced, the second fails the read). */
    let staleConsumers = 0;
    /** Since when reading fails (the consumer's node died, a failover): retried on a new consumer until READ_RECOVER_MS. */
    let failingSince: number | undefined;
    try {
      for (let rounds = 0; rounds < 1_000_000; rounds++) {
        if (pending <= 0 && seen >= this.durableNext - 1) return;
        let batch: JsMsg[];
        try {
          if (reader === undefined) {
            const opened = await this.openReader(seen + 1);
            reader = opened;
            pending = opened.pending;
            lastDelivery = 0;
          }
          batch = await this.fetchSome(reader.consumer, pending);
          failingSince = undefined;
        } catch (err) {
          if (err instanceof SluiceError) throw err;
          failingSince ??= performance.now();
          if (performance.now() - failingSince > READ_RECOVER_MS) {
            throw externalError('log_unavailable', `${this.subject}: reading from sequence ${seen + 1} failed for ${READ_RECOVER_MS} ms: ${(err as Error)?.message ?? String(err)}`, err);
          }
          // The consumer lives on one server (R1): when that server dies, read on from a new one.
          this.opts.logger?.warn({ subject: this.subject, from: seen + 1, err: (err as Error)?.message }, 'JetStream read failed; reading on from a new consumer');
          if (reader !== undefined) this.dropReader(reader.name);
          reader = undefined;
          await sleep(250);
          continue;
        }
        let lostInTransit = false;
        for (const m of batch) {
          // Pull responses are plain NATS messages: those in flight when the client's connection
          // drops (its server killed, a reconnect) are lost, and with no acks the consumer has
          // moved past them — a hole nothing else shows (offsets are sparse). The consumer's
          // delivery sequence counts every message it sent: a gap means some never arrived, so
          // the read goes on from a new consumer after the last message it saw.
          if (m.info.deliverySequence !== lastDelivery + 1) {
            lostInTransit = true;
            break;
          }
          lastDelivery = m.info.deliverySequence;
          pending = m.info.pending;
          // Only what was asked for, each message once: in CI a read from a start sequence got the
          // subject's first (purged) record right after a node restart (a consumer on a replica still
          // catching up), and a consumer recreated after a failure may deliver again what the last
          // one did.
          if (m.seq <= seen) continue;
          seen = m.seq;
          this.learned(m.seq);
          if (m.seq > (this.delivered.at(-1) ?? 0)) this.delivered.push(m.seq);
          const chunk = chunkOf(this.subject, m.seq, m.headers?.get(CHUNK_HEADER) || undefined);
          if (chunk === undefined) {
            yield { offset: m.seq, payload: new Uint8Array(m.data) };
            continue;
          }
          const whole = await this.assemble(partials, m.seq, m.headers!, new Uint8Array(m.data), chunk, fromOffset);
          if (whole !== undefined) yield { offset: m.seq, payload: whole };
        }
        if (lostInTransit && reader !== undefined) {
          this.opts.logger?.warn({ subject: this.subject, from: seen + 1 }, 'JetStream read missed messages in transit; reading on from a new consumer');
          this.dropReader(reader.name);
          reader = undefined;
          continue;
        }
        if (batch.length > 0) {
          stalledSince = undefined;
          staleConsumers = 0;
          continue;
        }
        if (seen >= this.durableNext - 1) return;
        // A message known to be stored is not delivered yet: the consumer's replica is behind.
        stalledSince ??= performance.now();
        if (performance.now() - stalledSince > READ_CATCH_UP_MS) {
          // Once on a fresh consumer (placed anew: its replica may be current; in CI a consumer
          // made right after the client's own server died delivered nothing for 10 s), then fail.
          if (staleConsumers++ === 0 && reader !== undefined) {
            this.opts.logger?.warn({ subject: this.subject, from: seen + 1, stalledMs: READ_CATCH_UP_MS }, 'JetStream read got nothing it knows is stored; reading on from a new consumer');
            this.dropReader(reader.name);
            reader = undefined;
            stalledSince = undefined;
            continue;
          }
          throw externalError('log_unavailable', `${this.subject}: the read from ${fromOffset} got no message up to sequence ${this.durableNext - 1} (known stored) within ${READ_CATCH_UP_MS} ms on two consumers; a replica is far behind`);
        }
      }
    } finally {
      for (const [id, p] of partials) {
        if (p.firstSeq !== undefined && !this.incomplete.has(id)) this.incomplete.set(id, { seq: p.firstSeq, seenAt: performance.now() });
      }
      if (reader !== undefined) this.dropReader(reader.name);
    }
  }

  /**
   * The record at exactly `offset` — this subject's message at that stream sequence, with its
   * earlier chunks — fetched from the stream leader; undefined if there is none there (another
   * subject's message, a purged one, a chunk that is not a record's last). The engine's check that
   * a read (served by one replica's copy) passed over no record this process appended uses it
   * (engine/coordinator.ts, `fillGaps`).
   */
  async readAt(offset: number): Promise<LogRecord | undefined> {
    if (!Number.isSafeInteger(offset) || offset < 1) return undefined;
    const m = await this.retrying('message get', () => this.logs.jsm.streams.getMessage(this.opts.stream, { seq: offset }));
    if (m === null || m.subject !== this.subject) return undefined;
    const chunk = chunkOf(this.subject, m.seq, m.header?.get(CHUNK_HEADER) || undefined);
    if (chunk === undefined) return { offset: m.seq, payload: new Uint8Array(m.data) };
    const whole = await this.assemble(new Map(), m.seq, m.header, new Uint8Array(m.data), chunk, offset);
    return whole === undefined ? undefined : { offset: m.seq, payload: whole };
  }

  /** An ephemeral pull consumer (R1, memory, no acks) of this subject from sequence `from`, and what it has pending. */
  private async openReader(from: number): Promise<{ name: string; consumer: Consumer; pending: number }> {
    const ci = await this.retrying('consumer create', () =>
      this.logs.jsm.consumers.add(this.opts.stream, {
        name: `sluice_read_${this.opts.writerId}_${this.shard < 0 ? 'dlq' : this.shard}_${++this.readCount}`,
        filter_subject: this.subject,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: Math.max(1, from),
        ack_policy: AckPolicy.None,
        mem_storage: true,
        num_replicas: 1,
        inactive_threshold: 60_000 * 1e6,
      }),
    );
    return { name: ci.name, consumer: await this.logs.js.consumers.get(this.opts.stream, ci.name), pending: ci.num_pending };
  }

  /** One pull: up to READ_BATCH messages (no more than `pending`, at least 1), or none after 1 s. Throws if the consumer's server is gone. */
  private async fetchSome(consumer: Consumer, pending: number): Promise<JsMsg[]> {
    const out: JsMsg[] = [];
    const messages = await consumer.fetch({ max_messages: Math.max(1, Math.min(READ_BATCH, pending)), expires: FETCH_EXPIRES_MS });
    // Ends a stalled pull with an error: the read then goes on from a new consumer (see FETCH_STALL_MS).
    const stall = setTimeout(() => messages.stop(new Error(`a pull got no answer within ${FETCH_STALL_MS} ms (its consumer is gone)`)), FETCH_STALL_MS);
    try {
      for await (const m of messages) out.push(m);
    } finally {
      clearTimeout(stall);
    }
    return this.opts.onFetch ? this.opts.onFetch(out) : out;
  }

  /** Deletes a read's consumer (best effort: its inactive threshold removes it otherwise). */
  private dropReader(name: string): void {
    this.logs.jsm.consumers.delete(this.opts.stream, name).catch(() => undefined);
  }

  /**
   * Adds chunk `i/n` (stream sequence `seq`) to its record; returns the whole record when this
   * was its last chunk. Chunks stored before the read's start are fetched by their sequence
   * (`Sluice-Chunk-Prev`). A missing first chunk (purged: the record was never acknowledged, its
   * writer gave up long ago) leaves the record incomplete.
   */
  private async assemble(partials: Map<string, PartialRecord>, seq: number, h: MsgHdrs, data: Uint8Array, [i, n]: [number, number], from: number): Promise<Uint8Array | undefined> {
    const msgId = h.get('Nats-Msg-Id') ?? '';
    const id = msgId.slice(0, msgId.lastIndexOf('.'));
    let p = partials.get(id);
    if (p === undefined || p.n !== n) partials.set(id, (p = { n, parts: new Array<Uint8Array | undefined>(n).fill(undefined), firstSeq: undefined }));
    p.parts[i] = data;
    if (i === 0) p.firstSeq = seq;
    // Predecessors before the read's start: fetch them (each names the previous one's sequence).
    let prev = i > 0 ? Number(h.get(CHUNK_PREV_HEADER)) : 0;
    for (let k = i - 1; k >= 0 && p.parts[k] === undefined && prev >= 1 && prev < from; k--) {
      const got = await this.retrying('message get', () => this.logs.jsm.streams.getMessage(this.opts.stream, { seq: prev })).catch(() => null);
      if (got === null || (got.header.get('Nats-Msg-Id') ?? '') !== `${id}.${k}`) break;
      p.parts[k] = new Uint8Array(got.data);
      if (k === 0) p.firstSeq = got.seq;
      prev = Number(got.header.get(CHUNK_PREV_HEADER) ?? 0);
    }
    if (i !== n - 1) return undefined;
    partials.delete(id);
    this.incomplete.delete(id);
    if (p.parts.some((b) => b === undefined)) {
      this.opts.logger?.warn({ subject: this.subject, seq, msgId }, 'a chunked record misses chunks (the tail of a failed append); not read');
      return undefined;
    }
    // Until it is committed (truncation past its offset), a re-read from below its offset needs its earlier chunks.
    if (p.firstSeq !== undefined && p.firstSeq < seq) this.chunkedRead.push({ offset: seq, firstSeq: p.firstSeq });
    const whole = new Uint8Array(p.parts.reduce((s, b) => s + b!.byteLength, 0));
    let at = 0;
    for (const b of p.parts) (whole.set(b!, at), (at += b!.byteLength));
    return whole;
  }

  /**
   * Purges the subject's messages below `offset` (every consumer is past them), except its
   * newest message, and except the chunks of a record still being written: below the first chunk
   * of a record a read saw incomplete (until it completes, or `truncateGraceMs` passed: its
   * writer gave up), and nothing at all during the first `truncateGraceMs` after open (a
   * record begun before this log's first read may have its first chunks below it).
   */
  async truncateBefore(offset: number): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw userError('invalid_offset', `truncateBefore(offset) needs an integer offset >= 0, got ${String(offset)}`);
    }
    if (offset <= this.truncatedBefore) return;
    const grace = this.opts.truncateGraceMs;
    const now = performance.now();
    if (now - this.openedAt < grace) return;
    let seq = offset;
    for (const [id, c] of this.incomplete) {
      if (now - c.seenAt > grace) this.incomplete.delete(id);
      else seq = Math.min(seq, c.seq);
    }
    // A chunked record read whole but not committed yet (its offset at or above the bound, while
    // its first chunks lie below, before another writer's committed record): a re-read after a
    // crash fetches those chunks by sequence, so they stay.
    this.chunkedRead = this.chunkedRead.filter((r) => r.offset >= offset);
    for (const r of this.chunkedRead) seq = Math.min(seq, r.firstSeq);
    const last = await this.retrying('message get', () => this.logs.jsm.streams.getMessage(this.opts.stream, { last_by_subj: this.subject }));
    if (last === null) return;
    this.learned(last.seq);
    seq = Math.min(seq, last.seq);
    // Nothing is below sequence 1, and nats-server 2.9 reads a filtered purge's `seq` of 0 or 1 as
    // "no bound": it would purge the whole subject, newest record included (measured).
    if (seq <= 1 || seq <= this.truncatedBefore) return;
    if (this.logs.truncatesByPurge) await this.retrying('purge', () => this.logs.jsm.streams.purge(this.opts.stream, { filter: this.subject, seq }));
    else await this.deleteBelow(seq);
    this.truncatedBefore = seq;
  }

  /**
   * Deletes every message of the subject below `seq`, one message delete each (a Raft operation
   * that a restarted replica replays exactly, unlike a filtered purge before nats-server 2.9.18):
   * first those reads delivered, then whatever the stream leader still has below `seq` (records
   * this process never read: written before it took the shard, or read by a previous owner).
   */
  private async deleteBelow(seq: number): Promise<void> {
    const remove = (s: number): Promise<void> =>
      this.retrying('message delete', async () => {
        try {
          await this.logs.jsm.streams.deleteMessage(this.opts.stream, s, false);
        } catch (err) {
          // Already gone (another node's truncation, an earlier attempt): nothing to do. A message
          // delete answers it as a failed delete (10057) whose description says so.
          if (apiCode(err) !== NO_MESSAGE_FOUND && !(apiCode(err) === MESSAGE_DELETE_FAILED && /no message found/i.test((err as Error).message))) throw err;
        }
      });
    let k = 0;
    while (k < this.delivered.length && this.delivered[k]! < seq) k++;
    // Taken off the list before the deletes: one that fails is found by the walk below, next time.
    await mapLimit(this.delivered.splice(0, k), DELETE_CONCURRENCY, remove);
    // What is left below `seq`, from the leader (message get: never a replica's copy).
    for (let from = Math.max(1, this.truncatedBefore); ; ) {
      const found: number[] = [];
      while (found.length < DELETE_CONCURRENCY) {
        const at = from;
        const m = await this.retrying('message get', () => this.logs.jsm.streams.getMessage(this.opts.stream, { next_by_subj: this.subject, seq: at } as unknown as { seq: number }));
        if (m === null || m.seq >= seq) break;
        found.push(m.seq);
        from = m.seq + 1;
      }
      if (found.length === 0) return;
      await mapLimit(found, DELETE_CONCURRENCY, remove);
    }
  }

  /** Waits for queued and in-flight appends; later appends reject with `log_closed`. */
  async close(): Promise<void> {
    this.closing = true;
    while (this.pumping !== undefined) await this.pumping;
  }
}
