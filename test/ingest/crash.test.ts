/**
 * kill -9 the ingest-only server (a child process) while Segment, NDJSON and Arrow-WebSocket
 * clients send; restart it on the same logs; finally reopen the logs, decode every record and
 * check: every event of every request that got a 200 (or ok ack) is in the logs exactly once.
 * Bounded: 2 rounds × 2 lives, each life ≤ ~0.7 s of traffic and ≤ 5,000 requests per client.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { openShardLogs } from '../../log/segment-log.js';
import { readLogRows } from './harness.js';

const SHARDS = 3;
const KEY = 'crash-key';
const auth = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;
const MAX_REQUESTS = 5000;

async function startChild(dir: string): Promise<{ port: number; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'ingest-only-server.ts'), dir, String(SHARDS), KEY], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (line) resolve((JSON.parse(line) as { port: number }).port);
    });
    child.once('exit', (code) => reject(new Error(`server exited early with ${code}`)));
  });
  return {
    port,
    kill: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGKILL');
      }),
  };
}

describe('crash safety', () => {
  it.each([1, 2])('round %i: every acknowledged event survives kill -9 exactly once (Segment, NDJSON, Arrow WS)', async (round) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-crash-'));
    try {
      const acked = new Set<string>();
      for (let life = 0; life < 2; life++) {
        const server = await startChild(dir);
        const base = `http://127.0.0.1:${server.port}`;
        let stop = false;
        const ids = (tag: string, n: number): string[] => Array.from({ length: 20 }, (_, i) => `r${round}-l${life}-${tag}-b${n}-e${i}`);

        const segmentClient = async (c: number): Promise<void> => {
          for (let n = 0; !stop && n < MAX_REQUESTS; n++) {
            const batch = ids(`s${c}`, n).map((messageId, i) => ({ type: 'track', event: 'Crash Test', userId: `u-${(n * 20 + i) % 97}`, messageId, timestamp: new Date().toISOString() }));
            try {
              const res = await fetch(`${base}/v1/batch`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ batch }) });
              if (res.status === 200) for (const e of batch) acked.add(e.messageId);
            } catch {
              return; // the server died
            }
          }
        };
        const ndjsonClient = async (): Promise<void> => {
          for (let n = 0; !stop && n < MAX_REQUESTS; n++) {
            const events = ids('nd', n).map((event_id, i) => ({ event_id, user_id: `u-${(n + i) % 89}`, event_type: 'crash', event_time: Date.now() }));
            try {
              const res = await fetch(`${base}/v1/events`, { method: 'POST', headers: { authorization: auth }, body: events.map((e) => JSON.stringify(e)).join('\n') });
              if (res.status === 200) for (const e of events) acked.add(e.event_id);
            } catch {
              return;
            }
          }
        };
        const wsClient = async (): Promise<void> => {
          const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/stream`, { headers: { authorization: auth } });
          const opened = await new Promise<boolean>((resolve) => {
            ws.once('open', () => resolve(true));
            ws.once('error', () => resolve(false));
          });
          if (!opened) return;
          const pending = new Map<number, (ok: boolean) => void>();
          ws.on('message', (m) => {
            const ack = JSON.parse(String(m)) as { seq: number; ok: boolean };
            pending.get(ack.seq)?.(ack.ok);
            pending.delete(ack.seq);
          });
          ws.on('close', () => {
            for (const p of pending.values()) p(false);
            pending.clear();
          });
          ws.on('error', () => undefined);
          for (let n = 0; !stop && n < MAX_REQUESTS && ws.readyState === WebSocket.OPEN; n++) {
            const eventIds = ids('ws', n);
            const bytes = tableToIPC(
              tableFromArrays({
                event_id: eventIds,
                user_id: eventIds.map((_, i) => `u-${(n * 3 + i) % 83}`),
                event_type: eventIds.map(() => 'crash'),
                event_time: Float64Array.from(eventIds.map(() => Date.now())),
              }),
              'stream',
            );
            const ok = await new Promise<boolean>((resolve) => {
              pending.set(n, resolve);
              ws.send(bytes, (err) => err && resolve(false));
            });
            if (ok) for (const id of eventIds) acked.add(id);
          }
          ws.terminate();
        };

        const clients = [segmentClient(0), segmentClient(1), segmentClient(2), ndjsonClient(), wsClient()];
        await new Promise((r) => setTimeout(r, 300 + round * 170));
        await server.kill();
        stop = true;
        await Promise.all(clients);
      }
      expect(acked.size).toBeGreaterThan(0);
      const logs = await openShardLogs(join(dir, 'log'), SHARDS);
      const counts = new Map<string, number>();
      for (const log of logs) {
        for (const row of await readLogRows(log)) counts.set(String(row.event_id), (counts.get(String(row.event_id)) ?? 0) + 1);
        await log.close();
      }
      for (const id of acked) expect(counts.get(id), id).toBe(1);
      // Clients never resend, so nothing may appear twice either (a request killed mid-fsync
      // may be in the log without an ack, but only once).
      for (const [id, n] of counts) expect(n, id).toBe(1);
      for (const tag of ['-s0-', '-nd-', '-ws-']) expect([...acked].some((id) => id.includes(tag)), tag).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
