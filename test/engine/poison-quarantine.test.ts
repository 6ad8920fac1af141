/**
 * Issue 14 item 7, poison quarantine: log records the worker cannot process (bytes that are no
 * Arrow IPC, an IPC stream of another schema) go to the DLQ with their error, are counted in
 * /metrics, and the shard goes on — also when the server is killed -9 before its first
 * checkpoint and replays them: each poison record lands in dlq/ exactly once, every other
 * event in silver exactly once, and a third start does not see them again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { shardOfUser } from '../../common/hash.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { openShardLogs } from '../../log/segment-log.js';
import { openLakeReader } from '../helpers/lake.js';
import { eventually, exactlyOnce, HOUR0, metric, postEvents, silverCounts } from './fixtures/engine-http.js';

const KEY = 'wk-poison';
const SHARDS = 2;
const root = mkdtempSync(join(tmpdir(), 'sluice-poison-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface Child {
  url: string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

async function start(engine: Record<string, unknown>): Promise<Child> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'serve.ts'), JSON.stringify(engine), KEY], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`server exited early with ${code}`)));
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    url: `http://127.0.0.1:${port}`,
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(out).toContain('closed');
    },
  };
}

/** Valid events of `users` as one ingest record. */
function record(tag: string, users: string[]): { payload: Uint8Array; ids: string[] } {
  const b = new IngestBatchBuilder(64);
  const ids: string[] = [];
  users.forEach((u, i) => {
    const id = `${tag}-${i}`;
    ids.push(id);
    b.push({ event_id: id, user_id: u, anonymous_id: null, event_type: 'Application Opened', event_time: HOUR0 + i * 1000, received_at: HOUR0 + i * 1000, device_type: 'ios', os: 'iOS', app_version: '4.0', country: 'DE', source: 'test', properties: null, raw: null });
  });
  return { payload: b.toIPC(), ids };
}

describe('poison quarantine', () => {
  it('(c) poison records go to the DLQ once, other events keep committing, also across kill -9 and restarts', async () => {
    const dataDir = join(root, 'data');
    const lake = join(root, 'lake');
    const users = Array.from({ length: 40 }, (_, i) => `pu-${i}`).filter((u) => shardOfUser(u, SHARDS) === 0).slice(0, 5);
    const acked = new Set<string>();
    // The log as ingest would have left it, with two poison records between good ones.
    const logs = await openShardLogs(join(dataDir, 'log'), SHARDS);
    const before = record('pre', users);
    await logs[0]!.append(before.payload);
    await logs[0]!.append(new TextEncoder().encode('this is not an Arrow IPC stream'));
    await logs[0]!.append(tableToIPC(tableFromArrays({ unexpected: Int32Array.from([1, 2, 3]) }), 'stream'));
    const after = record('post', users);
    await logs[0]!.append(after.payload);
    for (const l of logs) await l.close();
    [...before.ids, ...after.ids].forEach((id) => acked.add(id));

    const base = { dataDir, lake, shards: SHARDS, workers: 1, reconcileIntervalMs: 0, compactAfterMs: 0, retryBaseMs: 40, retryMaxMs: 300 };
    // Life 1: no checkpoint (a long flush interval), then kill -9 — the quarantine was never committed.
    const one = await start({ ...base, flushIntervalMs: 600_000 });
    expect(await eventually(async () => (await metric(one.url, 'sluice_engine_quarantined_records_total')) === 2)).toBe(true);
    expect(await metric(one.url, 'sluice_engine_quarantined_records_total', { code: 'undecodable_record' })).toBe(1);
    expect(await metric(one.url, 'sluice_engine_quarantined_records_total', { code: 'unexpected_schema' })).toBe(1);
    const p1 = await postEvents(one.url, KEY, 'life1', 30);
    expect(p1.status).toBe(200);
    p1.ids.forEach((id) => acked.add(id));
    expect(await eventually(async () => (await metric(one.url, 'sluice_engine_events_processed_total')) >= 10 + 30)).toBe(true);
    expect((await fetch(`${one.url}/readyz`)).status).toBe(200); // a quarantined record is not a failure of the server
    await one.kill();

    // Life 2: replays from offset 0, quarantines the same two records, commits everything.
    const two = await start({ ...base, flushIntervalMs: 150 });
    expect(await eventually(async () => (await metric(two.url, 'sluice_engine_quarantined_records_total')) === 2)).toBe(true);
    const p2 = await postEvents(two.url, KEY, 'life2', 30);
    expect(p2.status).toBe(200);
    p2.ids.forEach((id) => acked.add(id));
    await two.stop();

    // Life 3: the poison records are behind the checkpoint: not seen again.
    const three = await start({ ...base, flushIntervalMs: 150 });
    const p3 = await postEvents(three.url, KEY, 'life3', 30);
    expect(p3.status).toBe(200);
    p3.ids.forEach((id) => acked.add(id));
    expect(await metric(three.url, 'sluice_engine_quarantined_records_total')).toBe(0);
    await three.stop();

    const { missing, doubled } = exactlyOnce(acked, await silverCounts(lake));
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
    const r = await openLakeReader(lake);
    try {
      const dead = await r.rows<{ code: string; message: string; raw: string }>(`SELECT code, message, raw FROM ${r.rel('dlq')} WHERE source = 'engine' ORDER BY code`);
      expect(dead.map((x) => x.code)).toEqual(['undecodable_record', 'unexpected_schema']);
      expect(dead[0]!.message).toContain('shard 0 log offset 1');
      expect(dead[1]!.message).toContain('shard 0 log offset 2');
      expect(Buffer.from(dead[0]!.raw, 'base64').toString()).toBe('this is not an Arrow IPC stream');
    } finally {
      r.close();
    }
  }, 120_000);
});
