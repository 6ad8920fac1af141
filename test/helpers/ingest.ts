/**
 * Test helpers: a real ingest server on loopback over real segment logs in a temp dir.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC, type Table } from 'apache-arrow';
import { pino } from 'pino';
import { SegmentLog, openShardLogs, type SegmentLogOptions } from '../../log/segment-log.js';
import { startIngestServer, type IngestDeps, type IngestServer } from '../../ingest/server.js';
import type { IngestOptions } from '../../ingest/options.js';

export const WRITE_KEY = 'wk_test';

export interface TestIngest {
  server: IngestServer;
  url: string;
  logs: SegmentLog[];
  dlqLog: SegmentLog;
  dir: string;
  durable: Array<{ shard: number; offset: number; rows: number }>;
  /** Every row in the shard logs, decoded. */
  loggedEvents(): Promise<Array<Record<string, unknown>>>;
  deadLetters(): Promise<Array<Record<string, unknown>>>;
  close(): Promise<void>;
}

export async function readLogRows(log: SegmentLog): Promise<Array<Record<string, unknown>>> {
  const rows: Array<Record<string, unknown>> = [];
  for await (const r of log.read(0)) {
    const t: Table = tableFromIPC(r.payload);
    for (const row of t.toArray()) rows.push(row.toJSON() as Record<string, unknown>);
  }
  return rows;
}

export async function startTestIngest(
  options: Partial<IngestOptions> = {},
  deps: Partial<IngestDeps> = {},
  logOptions: Partial<SegmentLogOptions> = {},
  shards = 3,
): Promise<TestIngest> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-ingest-'));
  const logs = await openShardLogs(join(dir, 'log'), shards, logOptions);
  const dlqLog = await SegmentLog.open({ dir: join(dir, 'dlq'), shard: -1 });
  const durable: TestIngest['durable'] = [];
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

export async function post(url: string, body: string | Uint8Array, headers: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
}
