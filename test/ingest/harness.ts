/**
 * Test harness for ingest: the real server on 127.0.0.1 (port 0) over real fsync'd segment logs
 * in a temp dir, plus small HTTP helpers.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { decodeIngestBatch } from '../../ingest/decode-ipc.js';
import { openShardLogs, SegmentLog, type SegmentLogOptions } from '../../log/segment-log.js';
import type { ShardLog } from '../../log/log.js';
import type { IngestOptionsInput } from '../../ingest/options.js';
import { startIngestServer, type IngestDeps, type IngestServer } from '../../ingest/server.js';
import { tableFromIPC } from 'apache-arrow';

export const WRITE_KEY = 'wk_test';

export interface Harness {
  server: IngestServer;
  url: string;
  logs: SegmentLog[];
  dlqLog: SegmentLog;
  dir: string;
  /** onDurable calls, in order. */
  durable: Array<{ shard: number; offset: number; rows: number }>;
  /** Every row of every shard log, decoded, with its shard and offset. */
  loggedEvents(): Promise<Array<Record<string, unknown>>>;
  deadLetters(): Promise<Array<Record<string, unknown>>>;
  close(): Promise<void>;
}

/** Rows of a log, decoded (ingest records via decodeIngestBatch; other schemas generically). */
export async function readLogRows(log: ShardLog): Promise<Array<Record<string, unknown>>> {
  const rows: Array<Record<string, unknown>> = [];
  for await (const r of log.read(0)) {
    let batch;
    try {
      batch = decodeIngestBatch(r.payload);
    } catch {
      batch = tableFromIPC(r.payload).batches[0]!;
    }
    for (let i = 0; i < batch.numRows; i++) rows.push({ ...(batch.get(i)!.toJSON() as Record<string, unknown>), _shard: log.shard, _offset: r.offset });
  }
  return rows;
}

export async function startHarness(
  options: IngestOptionsInput = {},
  deps: Partial<IngestDeps> = {},
  logOptions: Partial<Omit<SegmentLogOptions, 'dir' | 'shard'>> = {},
  shards = 3,
): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-ingest-'));
  const logs = await openShardLogs(join(dir, 'log'), shards, logOptions);
  const dlqLog = await SegmentLog.open({ dir: join(dir, 'dlq'), shard: -1 });
  const durable: Harness['durable'] = [];
  const server = await startIngestServer(
    { port: 0, writeKeys: [{ key: WRITE_KEY }], logger: pino({ level: 'silent' }), ...options },
    { logs, dlqLog, onDurable: (shard, offset, _p, rows) => durable.push({ shard, offset, rows }), ...deps },
  );
  return {
    server,
    url: `http://127.0.0.1:${server.port}`,
    logs,
    dlqLog,
    dir,
    durable,
    async loggedEvents() {
      const out: Array<Record<string, unknown>> = [];
      for (const l of logs) out.push(...(await readLogRows(l)));
      return out;
    },
    deadLetters: () => readLogRows(dlqLog),
    async close() {
      await server.close();
      for (const l of logs) await l.close();
      await dlqLog.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export const basic = (key = WRITE_KEY): string => `Basic ${Buffer.from(`${key}:`).toString('base64')}`;

export interface Answer {
  status: number;
  json: Record<string, unknown>;
  headers: Headers;
}

export async function post(url: string, body: string | Uint8Array, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
}

/** An ISO timestamp a minute before now (plus `offsetMs`): the server validates against its real clock. */
export const recent = (offsetMs = 0): string => new Date(Date.now() - 60_000 + offsetMs).toISOString();

export function track(i: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'track',
    event: 'Product Clicked',
    userId: `user-${i}`,
    messageId: `msg-${i}`,
    timestamp: recent(),
    context: { device: { type: 'ios' }, os: { name: 'iOS' }, app: { version: '4.0.0' }, location: { country: 'DE' } },
    properties: { sku: `sku-${i}`, price: i },
    ...extra,
  };
}
