/**
 * kill -9 the ingest server while clients send; reopen the logs: every batch that got a 200 is
 * in the log exactly once, and the torn tail (if any) was cut.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { openShardLogs } from '../../ingest/log/segment-log.js';
import { readLogRows } from './harness.js';

const SHARDS = 3;
const auth = `Basic ${Buffer.from('crash-key:').toString('base64')}`;

async function startChild(dir: string): Promise<{ port: number; kill: () => Promise<void> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'ingest-only-server.ts'), dir, String(SHARDS)], {
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
  it.each([1, 2])('round %i: every acknowledged batch survives kill -9 exactly once', async (round) => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-crash-'));
    try {
      const acked = new Set<string>();
      for (let life = 0; life < 2; life++) {
        const server = await startChild(dir);
        let stop = false;
        let seq = 0;
        const client = async (c: number): Promise<void> => {
          while (!stop && seq < 5000) {
            const n = seq++;
            const batch = Array.from({ length: 20 }, (_, i) => ({
              type: 'track',
              event: 'Crash Test',
              userId: `u-${(n * 20 + i) % 97}`,
              messageId: `r${round}-l${life}-c${c}-b${n}-e${i}`,
              timestamp: new Date().toISOString(),
            }));
            try {
              const res = await fetch(`http://127.0.0.1:${server.port}/v1/batch`, {
                method: 'POST',
                headers: { authorization: auth, 'content-type': 'application/json' },
                body: JSON.stringify({ batch }),
              });
              if (res.status === 200) for (const e of batch) acked.add(e.messageId);
            } catch {
              return; // connection died with the server
            }
          }
        };
        const clients = [0, 1, 2, 3].map(client);
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
      for (const [id, n] of counts) expect(n, id).toBe(1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
