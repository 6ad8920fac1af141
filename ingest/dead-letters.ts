/**
 * The DLQ log's writer: rejected events become `dlqSchema` Arrow IPC streams (DLQ log records),
 * written by the fixed-layout IPC writer like the shard records (Arrow JS's builders plus
 * tableToIPC cost ≈ 0.6 ms per call whatever the row count: bench/results/cpu-2026-12-02.md).
 *
 * Group commit, as ingest/shard-appender.ts does for the shard logs: the dead letters of every
 * request that arrives while the log is busy (or within the linger) become ONE record. With 0.5 %
 * invalid events about a quarter of 50-event Segment requests carry a reject; one record each was
 * 1.5–4.6 K records per 20 s at max, which the engine's DLQ flush then read, decoded and merged
 * one by one. A record holds one hour of `received_at` only (the flush files a record under its
 * first row's hour).
 */
import { createHash } from 'node:crypto';
import { RecordBatch, Struct, Table, makeData, tableToIPC } from 'apache-arrow';
import { dlqSchema } from '../common/schema.js';
import { Utf8Column } from './batch-builder.js';
import { encodeIpcStream, schemaMessageOf, type ColumnParts } from '../common/ipc-write.js';
import type { ShardLog } from '../log/log.js';
import { GroupCommit } from './group-commit.js';
import type { GroupCommitOptions } from './options.js';
import type { DeadLetter } from './protocols/decoded.js';

const keyIds = new Map<string, string>();

/** A stable, non-reversible id of a write key for the DLQ (the key itself is a credential). */
export function writeKeyId(key: string): string {
  let id = keyIds.get(key);
  if (id === undefined) {
    id = `wk-${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
    if (keyIds.size < 10_000) keyIds.set(key, id);
  }
  return id;
}

let schemaBytes: Uint8Array | undefined;
/** dlqSchema's encapsulated schema message, encoded once by Arrow JS. */
function schemaMessage(): Uint8Array {
  if (schemaBytes === undefined) {
    const empty = new RecordBatch(dlqSchema, makeData({ type: new Struct(dlqSchema.fields), length: 0, nullCount: 0, children: dlqSchema.fields.map((f) => makeData({ type: f.type, length: 0 } as never)) }));
    schemaBytes = schemaMessageOf(tableToIPC(new Table([empty]), 'stream'));
  }
  return schemaBytes;
}

// Reused across calls (the ack thread is single-threaded; encodeIpcStream copies the bytes out).
const columns = { source: new Utf8Column(), keyId: new Utf8Column(), code: new Utf8Column(), message: new Utf8Column(16, 96), raw: new Utf8Column(16, 512) };
const EMPTY = new Uint8Array(0);

/** A rejected event with what the DLQ stores beside it. */
export interface PendingLetter {
  letter: DeadLetter;
  source: string;
  /** writeKeyId of the request's key. */
  keyId: string;
  /** Epoch ms the request arrived. */
  receivedAt: number;
}

/** One dlqSchema batch of `rows` as IPC stream bytes (fresh, owned by the caller). */
export function encodeDeadLetterRows(rows: readonly PendingLetter[]): Uint8Array {
  const n = rows.length;
  const c = columns;
  for (const col of [c.source, c.keyId, c.code, c.message, c.raw]) col.reset();
  const times = new Int32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const { letter, source, keyId, receivedAt } = rows[i]!;
    times[2 * i] = receivedAt % 4294967296;
    times[2 * i + 1] = Math.floor(receivedAt / 4294967296);
    c.source.pushString(source);
    c.keyId.pushString(keyId);
    c.code.pushString(letter.code);
    c.message.pushString(letter.message);
    c.raw.pushString(letter.raw);
  }
  const parts: ColumnParts[] = [{ length: n, nullCount: 0, buffers: [EMPTY, new Uint8Array(times.buffer)] }, c.source.parts(), c.keyId.parts(), c.code.parts(), c.message.parts(), c.raw.parts()];
  return encodeIpcStream(schemaMessage(), [], parts, n);
}

const HOUR_MS = 3_600_000;

/**
 * Appends dead letters to the DLQ log, many requests' in one record (see the file comment). The
 * batch is cut `maxDelayMs` after its first letter while the log is idle (0 = at the end of the
 * event-loop turn), as soon as the append in flight is durable, at `maxRows`, or before a letter
 * of another hour (ingest/group-commit.ts). `add` resolves once the letters are durable; rejects
 * if that append failed.
 */
export class DeadLetterAppender {
  private rows: PendingLetter[] = [];
  /** Hour (epoch ms / 1 h, floored) of the open batch's letters. */
  private hour = NaN;
  private readonly commits: GroupCommit;

  constructor(
    log: ShardLog,
    private readonly options: GroupCommitOptions,
  ) {
    this.commits = new GroupCommit(log, options.maxDelayMs, {
      size: () => this.rows.length,
      take: () => {
        const rows = this.rows;
        this.rows = [];
        return encodeDeadLetterRows(rows);
      },
    });
  }

  /** One request's rejected events; resolves with the offset of the record that holds them once it is durable. */
  add(rejects: readonly DeadLetter[], source: string, writeKey: string, receivedAt: number): Promise<number> {
    const hour = Math.floor(receivedAt / HOUR_MS);
    if (this.rows.length > 0 && hour !== this.hour) this.commits.cut();
    this.hour = hour;
    const keyId = writeKeyId(writeKey);
    for (const letter of rejects) this.rows.push({ letter, source, keyId, receivedAt });
    const durable = this.commits.wait();
    if (this.rows.length >= this.options.maxRows) this.commits.cut();
    else this.commits.schedule();
    return durable;
  }

  /** Cuts what is queued and waits for every append to settle. */
  drain(): Promise<void> {
    return this.commits.drain();
  }
}
