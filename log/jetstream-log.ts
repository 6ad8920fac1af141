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
 * Offsets stay dense per shard (the engine's contract: the shard runtime throws `offset_gap`
 * on a hole, and checkpoint file names come from offset ranges). The stream sequence of a
 * subject is not dense (other shards interleave), so every record carries its dense offset in
 * the `Sluice-Offset` header, and the append is an optimistic compare-and-set on the subject:
 *
 *   stream seq:   1        2        3        4        5        6
 *   subject:      s0       s1       s0       s0       s1       s0
 *   offset hdr:   0        0        1        2        1        3
 *
 *   append(p) on s0 knowing (last offset 2, its seq 4):
 *     publish s0, p, { Sluice-Offset: 3,
 *                      Nats-Expected-Last-Subject-Sequence: 4,     ← CAS: nobody appended since
 *                      Nats-Msg-Id: <writer>.s0.3 }                ← a retry is stored once
 *     ─▶ PubAck {seq 6}            (stored on a quorum of the replicas) → resolve(3), last = (3, 6)
 *     ─▶ PubAck {seq 6', dup}      (an earlier attempt of this very record was stored) → resolve(3)
 *     ─▶ 10071 wrong last sequence: if the subject's record after seq 4 carries our Msg-Id, an
 *                                   earlier attempt was stored (a clustered 2.9 server checks the
 *                                   expectation before the Msg-Id) → resolve(3); else another
 *                                   writer appended → re-read the subject's last record, take
 *                                   its offset + 1, publish again (new Msg-Id)
 *     ─▶ timeout / no responders / connection lost → publish the same message again (same
 *                                   Msg-Id, same expectation) until `appendTimeoutMs`
 *
 * Why the Msg-Id is `writer id + shard + offset` and not a content hash: the id must name one
 * publish attempt chain of one writer. A content hash would merge two different appends of equal
 * bytes (then two offsets would point at one stored record), and `shard + offset` alone would let
 * a competing writer's publish of the same offset, once its expectation passed (the race below),
 * be answered "duplicate" with OUR record's sequence. The writer id is random per
 * opened log (per process), so ids never collide across writers or restarts, and the retries of
 * one append reuse it: a publish whose PubAck was lost is stored once (the duplicate window,
 * default 2 min, is far longer than `appendTimeoutMs`).
 *
 * One publish is in flight per shard (the CAS needs the previous record's sequence); concurrent
 * appends queue and go out in call order, shards publish in parallel. Ingest's group commit
 * already sends one record per shard at a time, so this costs little (see docs/SCALE-OUT.md).
 *
 * ONE WRITER PER SHARD AT A TIME. The CAS makes a writer whose position is stale (another writer
 * appended since) move past the other's records, but nats-server 2.9 checks the expectation on
 * the stream leader against what is already applied, not against publishes still being
 * replicated: two writers publishing to one subject at the same instant both passed it and one
 * offset was stored twice (102 of 200 rounds on the 3-node test cluster, bench/jetstream-cas-race.ts;
 * only an expectation of 0, "subject empty", is serialized). A reader therefore never skips
 * such a record: it throws `log_conflict`. Several ingest nodes need per-shard write ownership
 * (a lease in JetStream KV, the next step of issue 10); see docs/SCALE-OUT.md.
 *
 * Durability: the PubAck of an R3 stream means the record is in the stream leader's and at
 * least one follower's store (a Raft quorum). nats-server 2.9 writes to the OS on store and
 * fsyncs periodically (`sync_interval`, not configurable before 2.10): a process crash (kill -9)
 * of any minority loses nothing acknowledged; a power loss of a quorum at once may.
 *
 * A failed append (no PubAck before `appendTimeoutMs`) rejects with `log_publish_failed`; the
 * record may still have been stored. The next append first re-reads the subject's last record,
 * so offsets stay dense, and such a record is read like any other (a duplicate at worst: the
 * client was told to retry; dedup by event_id downstream removes it), as with the local log.
 *
 * Records above the server's `max_payload` (1 MiB by default; ingest's group commit can build
 * bigger ones) are stored as consecutive messages with the same offset and `Sluice-Chunk: i/n`,
 * each chained by the CAS and with its own Msg-Id (`….<offset>.<i>`); the append resolves after
 * the last chunk's PubAck. A reader yields the record once all n chunks are read, and drops an
 * incomplete one (the tail of a failed append: never acknowledged); the next append reuses the
 * offset of such a tail (`sync` sees it), so offsets stay dense.
 *
 * Reads: an ephemeral pull consumer (R1, memory, no acks) filtered on the shard's subject,
 * starting at the sequence of `fromOffset` (found from the last position this log knows, or by
 * a binary search over the subject with `next_by_subj` message gets), deleted when the read ends.
 *
 * Truncation purges the subject below the record of `offset` (JetStream purge with `filter` +
 * `seq`), never the subject's newest record, so a writer that opens the log later still finds
 * the last offset (as the segment log keeps its newest segment). The stream discards NEW
 * messages at its limits (`maxBytes`: appends fail with `log_full` until the engine truncates),
 * so unconsumed records are never dropped; `maxAgeMs` (off by default) would drop them, and if
 * it removed EVERY record of a shard while no writer has the log open, the next writer would
 * start that shard at offset 0 again (see docs/SCALE-OUT.md).
 */
import { connect, headers as natsHeaders, nuid, type NatsConnection } from '@nats-io/transport-node';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
  type JetStreamPublishOptions,
  type MsgRequest,
  type PubAck,
  type StoredMsg,
} from '@nats-io/jetstream';
import { performance } from 'node:perf_hooks';
import { externalError, internalError, userError, SluiceError } from '../common/errors.js';
import type { LogRecord, ShardLog } from './log.js';

/** Header holding a record's dense per-shard offset (decimal). */
export const OFFSET_HEADER = 'Sluice-Offset';
/** Header of a record stored as several messages: `i/n` (chunk i of n, 0-based). */
export const CHUNK_HEADER = 'Sluice-Chunk';
/** Room left in a message for the headers when a record is cut into chunks of max_payload. */
const HEADER_ROOM_BYTES = 4096;

/** JetStream API error codes this log reacts to. */
const WRONG_LAST_SEQUENCE = 10071;
const STREAM_NOT_FOUND = 10059;
const STREAM_NAME_IN_USE = 10058;
const SUBJECTS_OVERLAP = 10065;
/** The stream's max_bytes (or max_msgs) is reached and it discards new messages. */
const STREAM_FULL = 10077;

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
  /** How long (ms) one publish attempt waits for its PubAck. Default 5 s. */
  publishTimeoutMs?: number;
  /** Identifies this writer in `Nats-Msg-Id`s; default a random NUID per opened log set. */
  writerId?: string;
  /** Replaces the client's publish (failure injection in tests). */
  publish?: JetStreamPublish;
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
  readonly publishTimeoutMs: number;
  readonly writerId: string;
  readonly publish: JetStreamPublish | undefined;
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
  if (appendTimeoutMs >= duplicateWindowMs) {
    throw bad(`appendTimeoutMs (${appendTimeoutMs}) must be shorter than duplicateWindowMs (${duplicateWindowMs}), or a retried publish could be stored twice`);
  }
  const writerId = options.writerId ?? nuid.next();
  if (typeof writerId !== 'string' || !TOKEN_RE.test(writerId)) throw bad(`writerId must be letters, digits, '-' or '_', got ${JSON.stringify(writerId)}`);
  for (const fn of ['publish', 'onPublish'] as const) {
    if (options[fn] !== undefined && typeof options[fn] !== 'function') throw bad(`${fn} must be a function, got ${typeof options[fn]}`);
  }
  if (options.logger !== undefined && (typeof options.logger !== 'object' || typeof options.logger?.warn !== 'function')) {
    throw bad('logger must be an object with a warn(obj, msg) method (a pino Logger works)');
  }
  const name = options.name ?? JETSTREAM_LOG_DEFAULTS.name;
  return {
    servers: [...servers], stream, subjectPrefix, replicas, maxAgeMs, maxBytes, duplicateWindowMs, appendTimeoutMs, publishTimeoutMs,
    writerId, publish: options.publish, onPublish: options.onPublish, logger: options.logger, name,
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

function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
}

/** The offset a stored record carries; a record without one is not Sluice's: corruption. */
function offsetOf(subject: string, seq: number, value: string | undefined): number {
  const n = value === undefined ? NaN : Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw internalError('log_corrupt', `${subject} stream sequence ${seq} has no valid ${OFFSET_HEADER} header (${JSON.stringify(value)}); only Sluice may publish to its subjects`);
  }
  return n;
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
      const jsm = await jetstreamManager(nc, { timeout: opts.publishTimeoutMs });
      const logs = new JetStreamLogs(opts, nc, jsm, jetstream(nc, { timeout: opts.publishTimeoutMs }));
      // Retried until appendTimeoutMs: at startup the cluster may still be electing leaders.
      const deadline = performance.now() + opts.appendTimeoutMs;
      for (let attempt = 1; ; attempt++) {
        try {
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
      throw externalError('log_unavailable', `NATS at ${opts.servers.join(',')} has no usable JetStream: ${(err as Error)?.message ?? String(err)}`, err);
    }
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

  /** Opens shard `shard`'s log (-1: the DLQ): finds the subject's last offset. */
  async open(shard: number): Promise<JetStreamLog> {
    if (!Number.isSafeInteger(shard) || shard < -1) throw userError('invalid_option', `shard must be an integer >= 0 (or -1 for the DLQ), got ${String(shard)}`);
    const log = new JetStreamLog(this, shard);
    await log.sync();
    this.opened.push(log);
    return log;
  }

  /** Opens shards 0 … n-1 and the DLQ. */
  async openAll(shards: number): Promise<{ shards: JetStreamLog[]; dlq: JetStreamLog }> {
    if (!Number.isSafeInteger(shards) || shards < 1) throw userError('invalid_option', `shards must be an integer >= 1, got ${String(shards)}`);
    const logs = await Promise.all(Array.from({ length: shards }, (_, s) => this.open(s)));
    return { shards: logs, dlq: await this.open(-1) };
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
/** How long a read waits for records it knows are durable but a lagging replica has not yet delivered. */
const READ_CATCH_UP_MS = 10_000;

/**
 * One shard's log on JetStream (see the file comment for the design). Open with
 * {@link JetStreamLogs.open}. `append` does not copy the payload: the caller must not mutate it
 * until the append settled. Records yielded by `read` own their payload (a fresh buffer).
 *
 * As the engine's `ConsumedLog` on a node that does not append, `durableNextOffset` is what
 * this log last learned (open, `sync()`, its own appends); call `sync()` to learn other writers'.
 */
export class JetStreamLog implements ShardLog {
  readonly shard: number;
  readonly subject: string;
  private readonly opts: ResolvedJetStreamLogOptions;
  /** Next offset this writer will publish. */
  private next = 0;
  /** Stream sequence of the subject's last record (offset next-1); 0 when the subject is empty. */
  private lastSeq = 0;
  private durableNext = 0;
  /** A known record: its offset, first message's sequence (if known) and last message's, to start reads without a search. */
  private hint: { offset: number; seq: number | undefined; end: number } | undefined;
  /** The last publish failed with an unknown outcome: resynchronise before the next. */
  private needsSync = false;
  private queue: QueuedAppend[] = [];
  private pending = 0;
  private pumping: Promise<void> | undefined;
  private closing = false;
  private truncatedBefore = 0;
  private readCount = 0;

  constructor(
    private readonly logs: JetStreamLogs,
    shard: number,
  ) {
    this.shard = shard;
    this.opts = logs.options;
    this.subject = shardSubject(this.opts.subjectPrefix, shard);
  }

  get nextOffset(): number {
    return this.next;
  }

  /** Bytes of appends not yet acknowledged by the stream (for backpressure). */
  get pendingBytes(): number {
    return this.pending;
  }

  get durableNextOffset(): number {
    return this.durableNext;
  }

  /**
   * Learns the subject's last record (its offset and stream sequence) from the stream leader:
   * every record below the returned offset is durable. Retries transient failures until
   * `appendTimeoutMs`.
   */
  async sync(): Promise<number> {
    const last = await this.retrying('sync', () => this.logs.jsm.streams.getMessage(this.opts.stream, { last_by_subj: this.subject }));
    if (last !== null) {
      const offset = offsetOf(this.subject, last.seq, last.header.get(OFFSET_HEADER) || undefined);
      const chunk = chunkOf(this.subject, last.seq, last.header.get(CHUNK_HEADER) || undefined);
      // The tail of a failed chunked append (never acknowledged): the next record takes its offset.
      const complete = chunk === undefined || chunk[0] === chunk[1] - 1;
      const after = complete ? offset + 1 : offset;
      // A live writer never goes back, even if stream limits removed every record.
      if (after >= this.next) {
        this.next = after;
        this.lastSeq = last.seq;
      }
      if (complete) this.hint = { offset, seq: chunk === undefined ? last.seq : undefined, end: last.seq };
    } else {
      this.lastSeq = 0;
    }
    if (this.next > this.durableNext) this.durableNext = this.next;
    this.needsSync = false;
    return this.durableNext;
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

  /** Publishes queued appends one at a time, in call order. */
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
   * One append: CAS-publish with retries (see the file comment), as one message or, above the
   * server's max_payload, as chunks chained by the same CAS. Resolves with the offset.
   */
  private async publishOne(payload: Uint8Array): Promise<number> {
    const started = performance.now();
    const tries = { attempts: 0, deadline: started + this.opts.appendTimeoutMs, lastErr: undefined as unknown };
    if (this.needsSync) await this.sync();
    const chunkBytes = Math.max(1024, this.logs.maxPayload - HEADER_ROOM_BYTES);
    const n = Math.max(1, Math.ceil(payload.byteLength / chunkBytes));
    try {
      for (let conflicts = 0; conflicts < 10_000 && performance.now() < tries.deadline; conflicts++) {
        const offset = this.next;
        let firstSeq = 0;
        let conflict = false;
        for (let i = 0; i < n && !conflict; i++) {
          const part = n === 1 ? payload : payload.subarray(i * chunkBytes, Math.min(payload.byteLength, (i + 1) * chunkBytes));
          const seq = await this.publishMessage(part, offset, n === 1 ? undefined : [i, n], tries);
          if (seq === undefined) conflict = true;
          else {
            this.lastSeq = seq; // the next chunk's CAS chains after this one
            if (i === 0) firstSeq = seq;
          }
        }
        if (!conflict) return this.acked(offset, firstSeq, this.lastSeq, started, payload.byteLength, tries.attempts);
        // Another writer appended to this shard: take the offset after its record.
        this.opts.logger?.warn({ subject: this.subject, offset }, 'another writer appended to this shard; retrying at the next offset');
        await this.sync();
      }
    } catch (err) {
      this.needsSync = true; // a chunked record may be partly stored
      if (!(err instanceof SluiceError && err.code === 'log_publish_failed')) throw err;
      tries.lastErr = err.cause;
    }
    this.needsSync = true;
    throw externalError(
      'log_publish_failed',
      `no PubAck for a record of ${this.subject} within ${this.opts.appendTimeoutMs} ms after ${tries.attempts} attempts: ${(tries.lastErr as Error)?.message ?? String(tries.lastErr)}; the record may or may not be stored (never acknowledge it)`,
      tries.lastErr,
    );
  }

  /**
   * Publishes one message of a record (the same message again after a timeout or a lost
   * connection). Resolves with its stream sequence, or undefined when another writer appended
   * first (the CAS failed and the stored message is not ours). Throws `log_publish_failed` at
   * the deadline.
   */
  private async publishMessage(
    part: Uint8Array,
    offset: number,
    chunk: [number, number] | undefined,
    tries: { attempts: number; deadline: number; lastErr: unknown },
  ): Promise<number | undefined> {
    const publish = this.opts.publish ?? ((s, p, o) => this.logs.js.publish(s, p, o));
    const h = natsHeaders();
    h.set(OFFSET_HEADER, String(offset));
    if (chunk !== undefined) h.set(CHUNK_HEADER, `${chunk[0]}/${chunk[1]}`);
    const msgID = `${this.opts.writerId}.${this.shard < 0 ? 'dlq' : `s${this.shard}`}.${offset}${chunk === undefined ? '' : `.${chunk[0]}`}`;
    while (performance.now() < tries.deadline) {
      tries.attempts++;
      try {
        const timeout = Math.max(50, Math.min(this.opts.publishTimeoutMs, tries.deadline - performance.now()));
        return (await publish(this.subject, part, { msgID, headers: h, expect: { lastSubjectSequence: this.lastSeq }, timeout })).seq;
      } catch (err) {
        tries.lastErr = err;
        if (apiCode(err) === WRONG_LAST_SEQUENCE) {
          // Either an earlier attempt of this very message was stored (its PubAck lost: a
          // clustered 2.9 server checks the expectation before the Msg-Id), or another writer
          // appended. Under the CAS our message can only be the subject's next after lastSeq.
          const next = await this.nextBySubject(this.lastSeq + 1);
          return next !== null && next.header.get('Nats-Msg-Id') === msgID ? next.seq : undefined;
        }
        if (apiCode(err) === STREAM_FULL) {
          throw externalError('log_full', `JetStream stream ${this.opts.stream} is full (maxBytes ${this.opts.maxBytes}): records are kept until the engine has checkpointed past them and truncated; retry later, or raise maxBytes`, err);
        }
        if (apiCode(err) === STREAM_NOT_FOUND) break;
        this.opts.logger?.warn({ subject: this.subject, offset, attempt: tries.attempts, err: (err as Error)?.message }, 'JetStream publish failed; retrying the same message');
        await sleep(Math.min(50 * tries.attempts, 500));
      }
    }
    throw externalError('log_publish_failed', 'deadline', tries.lastErr);
  }

  /** Records an acknowledged append at `offset`, stored as stream sequences `firstSeq` … `lastSeq`. */
  private acked(offset: number, firstSeq: number, lastSeq: number, started: number, bytes: number, attempts: number): number {
    this.next = offset + 1;
    this.lastSeq = lastSeq;
    this.hint = { offset, seq: firstSeq, end: lastSeq };
    if (this.next > this.durableNext) this.durableNext = this.next;
    try {
      this.opts.onPublish?.(performance.now() - started, bytes, attempts);
    } catch {
      // metrics must not fail an append
    }
    return offset;
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

  /** The first message of the subject at or after stream sequence `seq`, or null. */
  private nextBySubject(seq: number): Promise<StoredMsg | null> {
    // STREAM.MSG.GET takes next_by_subj since server 2.9 (the client types it for direct gets only);
    // answered by the stream leader, unlike a direct get that a lagging replica may serve.
    const query = { next_by_subj: this.subject, seq } as unknown as MsgRequest;
    return this.retrying('message get', () => this.logs.jsm.streams.getMessage(this.opts.stream, query));
  }

  /**
   * A stream sequence from which the subject's records with offset >= `from` start (records
   * below `from` may follow it; the reader skips them). Binary search over the subject when no
   * known position is close. With `exact`, every subject record below the returned sequence has
   * an offset < `from` and the first at or after it has one >= `from` (the purge bound).
   */
  private async startSeqFor(from: number, exact = false): Promise<number> {
    const h = this.hint;
    if (!exact && h !== undefined && from > h.offset && from - h.offset <= READ_BATCH) return h.end + 1;
    if (h !== undefined && from === h.offset && h.seq !== undefined) return h.seq;
    // Smallest x such that the first subject message at or after x has offset >= from.
    let lo = 1;
    let hi = h !== undefined && from <= h.offset ? h.end : Math.max(1, this.lastSeq);
    if (h !== undefined && from > h.offset) lo = h.end + 1;
    for (let steps = 0; lo < hi && steps < 64; steps++) {
      const mid = Math.floor((lo + hi) / 2);
      const m = await this.nextBySubject(mid);
      if (m === null || offsetOf(this.subject, m.seq, m.header.get(OFFSET_HEADER) || undefined) >= from) hi = mid;
      else lo = m.seq + 1;
    }
    return lo;
  }

  /**
   * Yields durable records with `offset >= fromOffset` in offset order, until it has caught up
   * with `durableNextOffset` (records acknowledged while reading are included). Starts at the
   * lowest stored offset if `fromOffset` was truncated away.
   */
  async *read(fromOffset: number): AsyncGenerator<LogRecord, void, undefined> {
    if (!Number.isSafeInteger(fromOffset) || fromOffset < 0) {
      throw userError('invalid_offset', `read(fromOffset) needs an integer offset >= 0, got ${String(fromOffset)}`);
    }
    if (fromOffset >= this.durableNext) return;
    const startSeq = await this.startSeqFor(fromOffset);
    const jsm = this.logs.jsm;
    const ci = await this.retrying('consumer create', () =>
      jsm.consumers.add(this.opts.stream, {
        name: `sluice_read_${this.opts.writerId}_${this.shard < 0 ? 'dlq' : this.shard}_${++this.readCount}`,
        filter_subject: this.subject,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: startSeq,
        ack_policy: AckPolicy.None,
        mem_storage: true,
        num_replicas: 1,
        inactive_threshold: 60_000 * 1e6,
      }),
    );
    const consumer = await this.logs.js.consumers.get(this.opts.stream, ci.name);
    let expected = fromOffset;
    let yielded = false;
    /** Chunks of the record being reassembled. */
    let parts: { offset: number; n: number; bufs: Uint8Array[]; bytes: number; seq: number } | undefined;
    let stalledSince: number | undefined;
    try {
      for (let rounds = 0; expected < this.durableNext && rounds < 1_000_000; rounds++) {
        const want = Math.max(1, Math.min(READ_BATCH, this.durableNext - expected));
        const batch = await consumer.fetch({ max_messages: want, expires: 1000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          const offset = offsetOf(this.subject, m.seq, m.headers?.get(OFFSET_HEADER) || undefined);
          if (offset >= this.durableNext) return;
          if (offset < fromOffset && !yielded) continue; // before the start
          const chunk = chunkOf(this.subject, m.seq, m.headers?.get(CHUNK_HEADER) || undefined);
          let payload: Uint8Array;
          let firstSeq = m.seq;
          if (chunk === undefined) {
            parts = undefined; // a partial record before this one was never acknowledged
            payload = new Uint8Array(m.data);
          } else {
            const [i, n] = chunk;
            if (i === 0) parts = { offset, n, bufs: [], bytes: 0, seq: m.seq };
            if (parts === undefined || parts.offset !== offset || parts.n !== n || parts.bufs.length !== i) {
              parts = undefined; // the middle of a record whose start is not read, or a broken (never acknowledged) one
              continue;
            }
            parts.bufs.push(new Uint8Array(m.data));
            parts.bytes += m.data.byteLength;
            if (parts.bufs.length < n) continue;
            payload = new Uint8Array(parts.bytes);
            let at = 0;
            for (const b of parts.bufs) (payload.set(b, at), (at += b.byteLength));
            firstSeq = parts.seq;
            parts = undefined;
          }
          if (yielded && offset !== expected) {
            // Never skip or reorder silently: two records claim one offset (concurrent writers
            // on a server that does not serialize the subject CAS), or one is missing.
            throw internalError('log_conflict', `${this.subject}: stream sequence ${m.seq} holds offset ${offset} where offset ${expected} was expected; more than one writer appended to this shard at once (run one ingest writer per shard)`);
          }
          this.hint = { offset, seq: firstSeq, end: m.seq };
          expected = offset + 1;
          yielded = true;
          yield { offset, payload };
          if (expected >= this.durableNext) break;
        }
        if (got > 0) {
          stalledSince = undefined;
          continue;
        }
        // Durable records not delivered yet: a replica behind the quorum, or truncated away.
        stalledSince ??= performance.now();
        if (performance.now() - stalledSince > READ_CATCH_UP_MS) return;
      }
    } finally {
      jsm.consumers.delete(this.opts.stream, ci.name).catch(() => undefined);
    }
  }

  /**
   * Purges the subject's records below `offset` (every consumer is past them), except its
   * newest record, which keeps the last offset for writers that open the log later.
   */
  async truncateBefore(offset: number): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw userError('invalid_offset', `truncateBefore(offset) needs an integer offset >= 0, got ${String(offset)}`);
    }
    if (offset <= this.truncatedBefore) return;
    const last = await this.retrying('message get', () => this.logs.jsm.streams.getMessage(this.opts.stream, { last_by_subj: this.subject }));
    if (last === null) return;
    const lastOffset = offsetOf(this.subject, last.seq, last.header.get(OFFSET_HEADER) || undefined);
    if (this.hint === undefined || this.hint.offset < lastOffset) this.hint = { offset: lastOffset, seq: undefined, end: last.seq };
    // Purge removes sequences below `seq`: exactly the records with lower offsets (see startSeqFor).
    const seq = offset > lastOffset ? last.seq : Math.min(await this.startSeqFor(offset, true), last.seq);
    // Nothing is below sequence 1, and nats-server 2.9 reads a filtered purge's `seq` of 0 or 1 as
    // "no bound": it would purge the whole subject, newest record included (measured).
    if (seq <= 1) return;
    await this.retrying('purge', () => this.logs.jsm.streams.purge(this.opts.stream, { filter: this.subject, seq }));
    this.truncatedBefore = Math.min(offset, lastOffset);
  }

  /** Waits for queued and in-flight appends; later appends reject with `log_closed`. */
  async close(): Promise<void> {
    this.closing = true;
    while (this.pumping !== undefined) await this.pumping;
  }
}
