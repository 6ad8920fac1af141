/**
 * `sluice erase` offline, through the command line's parser: a lake written by the real server,
 * the server stopped, one user erased; no byte of the id is left in the lake or the data
 * directory, the others' events are intact, `--status` lists the audit record (hashes only).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { main } from '../../cli/main.js';
import { startSluice } from '../../cli/serve.js';
import { openLakeReader } from '../helpers/lake.js';

const U = 'cli-erase-user-9qz';
const root = mkdtempSync(join(tmpdir(), 'sluice-erase-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const walk = (dir: string): string[] => readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [join(dir, n)]));

describe('sluice erase', () => {
  it('erases a user offline and reports it in --status', async () => {
    const data = join(root, 'data');
    const lake = join(root, 'lake');
    const s = await startSluice(composeServeConfig({ port: 0, data, lake, shards: 2, workers: 1, flushInterval: '250ms', engineMode: 'inline', compression: 'none', writeKeys: ['wk'] }, {}), pino({ level: 'warn' }));
    const t0 = Date.now() - 3 * 3_600_000;
    const batch = ['a', 'b', 'c', U].flatMap((u, i) => [0, 1, 2].map((k) => ({ messageId: `${u}-${k}`, userId: u, type: 'track', event: 'Application Opened', timestamp: new Date(t0 + i * 1000 + k * 60_000).toISOString() })));
    const res = await fetch(`${s.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer wk' }, body: JSON.stringify({ batch }) });
    expect(res.status).toBe(200);
    await s.close();

    const out: string[] = [];
    const write = vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => (out.push(String(chunk)), true));
    try {
      await main(['erase', '--lake', lake, '--data', data, '--shards', '2', '--user', U, '--reason', 'ticket 7']);
      const result = JSON.parse(out.join('')) as { seconds: number; requests: Array<{ state: string; layers: Record<string, { rowsRemoved: number }> }> };
      expect(result.requests[0]!.state).toBe('done');
      expect(result.requests[0]!.layers.events!.rowsRemoved).toBe(3);
      expect(result.requests[0]!.layers.bronze_events!.rowsRemoved).toBe(3);
      out.length = 0;
      await main(['erase', '--status', '--lake', lake, '--data', data]);
      const status = JSON.parse(out.join('')) as { audit: Array<{ reason: string; userHashes: string[] }> };
      expect(status.audit).toHaveLength(1);
      expect(status.audit[0]!.reason).toBe('ticket 7');
      expect(status.audit[0]!.userHashes[0]).toMatch(/^[0-9a-f]{64}$/);
      // A second erasure reports its own request, not every one the data directory ever had; --status lists both.
      out.length = 0;
      await main(['erase', '--lake', lake, '--data', data, '--user', 'c', '--reason', 'ticket 8']);
      const second = JSON.parse(out.join('')) as { requests: Array<{ state: string; layers: Record<string, { rowsRemoved: number }> }> };
      expect(second.requests).toHaveLength(1);
      expect(second.requests[0]!.layers.events!.rowsRemoved).toBe(3);
      out.length = 0;
      await main(['erase', '--status', '--lake', lake, '--data', data]);
      expect((JSON.parse(out.join('')) as { audit: unknown[] }).audit).toHaveLength(2);
    } finally {
      write.mockRestore();
    }
    const needle = Buffer.from(U);
    expect([...walk(lake), ...walk(data)].filter((f) => readFileSync(f).includes(needle))).toEqual([]);
    const reader = await openLakeReader(lake);
    try {
      const rows = await reader.rows<{ user_id: string; n: bigint }>(`SELECT user_id, count(*) AS n FROM ${reader.rel('events')} GROUP BY 1 ORDER BY 1`);
      expect(rows.map((r) => [r.user_id, Number(r.n)])).toEqual([['a', 3], ['b', 3]]);
    } finally {
      reader.close();
    }
  }, 120_000);
});
