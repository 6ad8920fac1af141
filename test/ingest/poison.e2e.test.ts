/**
 * Poison pills through the real server AND engine (issue 14): every hostile input found so far
 * (invalid UTF-8 on each protocol, timestamps at the edges, deep nesting, an Arrow IPC message
 * lying about its sizes) is sent, then events of other users; after a drain the lake must hold
 * those events in silver (the engine kept committing) and the rejects in the DLQ (whose Parquet
 * encode would fail on a single invalid UTF-8 byte). A restart over the same log must replay
 * cleanly too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeData, makeVector, RecordBatch, Schema, Field, Struct, Table, tableFromArrays, tableToIPC, Utf8, Float64, vectorFromArray } from 'apache-arrow';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice, type RunningSluice } from '../../cli/serve.js';
import { openLakeReader } from '../helpers/lake.js';
import { openWs } from './ws-client.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const splice = (text: string, bytes: number[]): Buffer => {
  const [a, b] = text.split('@@') as [string, string];
  return Buffer.concat([Buffer.from(a), Buffer.from(bytes), Buffer.from(b)]);
};

async function postRaw(s: RunningSluice, path: string, body: Buffer | string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${s.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${s.writeKey}:`).toString('base64')}` }, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('poison pills through server and engine', () => {
  it('the engine keeps committing after every poison, and replays the log cleanly after a restart', async () => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-poison-'));
    dirs.push(root);
    const config = composeServeConfig({ port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 2, workers: 1, flushInterval: '200ms', writeKeys: ['poison-key'] }, {});
    const quiet = pino({ level: 'warn' });
    let s = await startSluice(config, quiet);
    const now = Date.now();
    const ts = new Date(now - 60_000).toISOString();
    const ok = (id: string, user: string): string => JSON.stringify({ type: 'track', event: 'Ok', userId: user, messageId: id, timestamp: ts });
    const expectedRejects: string[] = [];

    // Segment: invalid UTF-8 in a userId and in a property, timestamps at the edges, deep nesting.
    const seg = Buffer.concat([
      Buffer.from('{"batch":['),
      splice(`{"type":"track","event":"P","userId":"poison-@@","messageId":"p-user","timestamp":"${ts}"}`, [0xff, 0xfe]),
      Buffer.from(','),
      splice(`{"type":"track","event":"P","userId":"poison-2","messageId":"p-prop","timestamp":"${ts}","properties":{"k":"@@"}}`, [0xc3, 0x28]),
      Buffer.from(`,{"type":"track","event":"P","userId":"poison-3","messageId":"p-ts1","timestamp":1e16}`),
      Buffer.from(`,{"type":"track","event":"P","userId":"poison-3","messageId":"p-ts2","timestamp":-1e18}`),
      Buffer.from(`,{"type":"track","event":"P","userId":"poison-3","messageId":"p-ts3","timestamp":-1e300}`),
      Buffer.from(`,{"type":"track","event":"P","userId":"poison-3","messageId":"p-ts4","timestamp":"${ts}","sentAt":-1e18}`),
      Buffer.from(`,{"type":"track","event":"P","userId":"poison-4","messageId":"p-deep","properties":{"a":${'['.repeat(5000)}${']'.repeat(5000)}}}`),
      Buffer.from(`,{"type":"track","event":42,"userId":"poison-5","messageId":"p-event","properties":"not-an-object"}`),
      Buffer.from(`,${ok('after-seg', 'clean-seg')}]}`),
    ]);
    const a = await postRaw(s, '/v1/batch', seg);
    expect(a.status).toBe(200);
    expect(a.json.accepted).toBe(1);
    expectedRejects.push(...(a.json.rejected as Array<{ code: string }>).map((r) => r.code));
    expect(expectedRejects).toEqual(['invalid_utf8', 'invalid_utf8', 'invalid_timestamp', 'invalid_timestamp', 'invalid_timestamp', 'invalid_sent_at', 'too_deep', 'invalid_event']);

    // NDJSON: invalid UTF-8 in a country, event_time 1e16, deep nesting.
    const nd = Buffer.concat([
      splice(`{"event_id":"p-nd-country","user_id":"poison-6","event_type":"x","event_time":${now - 1000},"country":"D@@"}\n`, [0xe2, 0x82]),
      Buffer.from(`{"event_id":"p-nd-ts","user_id":"poison-6","event_type":"x","event_time":1e16}\n`),
      Buffer.from(`${'['.repeat(10_000)}${']'.repeat(10_000)}\n`),
      Buffer.from(JSON.stringify({ event_id: 'after-nd', user_id: 'clean-nd', event_type: 'Ok', event_time: now - 1000 })),
    ]);
    const b = await postRaw(s, '/v1/events', nd);
    expect(b.status).toBe(200);
    expect(b.json.accepted).toBe(1);
    expectedRejects.push(...(b.json.rejected as Array<{ code: string }>).map((r) => r.code));

    // Arrow: invalid UTF-8 in a Utf8 column, an Int64-max-like time, and a message lying about its sizes.
    const users = makeVector(makeData({ type: new Utf8(), length: 2, nullCount: 0, valueOffsets: Int32Array.of(0, 2, 11), data: Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('clean-arrw')]).subarray(0, 11) }));
    const schema = new Schema([new Field('event_id', new Utf8()), new Field('user_id', new Utf8()), new Field('event_type', new Utf8()), new Field('event_time', new Float64())]);
    const cols = [vectorFromArray(['p-arrow', 'after-arrow'], new Utf8()), users, vectorFromArray(['x', 'Ok'], new Utf8()), vectorFromArray([now - 1000, now - 1000], new Float64())];
    const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 2, nullCount: 0, children: cols.map((c) => c.data[0]!) }));
    const good = tableToIPC(tableFromArrays({ user_id: ['x1', 'x2', 'x3', 'x4', 'x5', 'x6', 'x7'], event_type: ['x', 'x', 'x', 'x', 'x', 'x', 'x'], event_time: Float64Array.from({ length: 7 }, () => now) }), 'stream');
    const bomb = Buffer.from(good);
    for (let i = 0; i + 8 <= bomb.length; i += 8) if (bomb.readBigInt64LE(i) === 7n) bomb.writeBigInt64LE(2n ** 40n, i);
    const ws = await openWs(s.port, { authorization: `Bearer ${s.writeKey}` });
    ws.ws.send(bomb);
    expect(await ws.next()).toMatchObject({ ok: false, status: 400 });
    ws.ws.send(tableToIPC(new Table([batch]), 'stream'));
    const c = await ws.next();
    ws.ws.close();
    expect(c).toMatchObject({ ok: true, accepted: 1, rejected: [{ index: 0, code: 'invalid_utf8' }] });
    expectedRejects.push('invalid_utf8');

    // Later traffic of other users, after the poison.
    const later = await postRaw(s, '/v1/batch', `{"batch":[${ok('later-1', 'clean-later-1')},${ok('later-2', 'clean-later-2')}]}`);
    expect(later.json.accepted).toBe(2);
    await s.close();

    // A restart replays whatever the log holds past the checkpoint: nothing in it may be unprocessable.
    s = await startSluice(config, quiet);
    const afterRestart = await postRaw(s, '/v1/batch', `{"batch":[${ok('restart-1', 'clean-restart')}]}`);
    expect(afterRestart.json.accepted).toBe(1);
    await s.close();

    const lake = await openLakeReader(join(root, 'lake'));
    try {
      const silver = (await lake.rows<{ event_id: string; user_id: string }>(`SELECT event_id, user_id FROM ${lake.rel('events')} ORDER BY event_id`)).map((r) => r.event_id);
      expect(silver).toEqual(['after-arrow', 'after-nd', 'after-seg', 'later-1', 'later-2', 'restart-1']);
      const dlq = await lake.rows<{ code: string; raw: string }>(`SELECT code, raw FROM ${lake.rel('dlq')}`);
      expect(dlq.map((d) => d.code).sort()).toEqual([...expectedRejects].sort());
      expect(dlq.find((d) => d.raw.includes('p-user'))!.raw).toContain('\uFFFD');
      const [bronze] = await lake.rows<{ n: bigint }>(`SELECT count(*) AS n FROM ${lake.rel('bronze_events')}`);
      expect(Number(bronze!.n)).toBe(6);
    } finally {
      lake.close();
    }
  });
});
