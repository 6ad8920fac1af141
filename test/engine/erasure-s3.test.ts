/**
 * Erasure on the S3 store (a real s3rver on loopback), `sluice serve` running (the compiled CLI as a
 * child process, as test/cli/serve-s3 runs it; inline engine): one
 * user with events in bronze, silver, late/, dlq/ and gold sessions is erased mid-stream; the
 * request completes online; afterwards no object of the lake and no file of the data directory
 * holds the id's bytes, the other users' silver rows are intact, the audit record is in the bucket
 * and every rewrite has an `erase` commit record.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listCommitRecords } from '../../storage/commit-record.js';
import { openObjectStore } from '../../storage/open-store.js';
import { decodeParquet } from '../../storage/parquet.js';
import { filesHolding } from '../helpers/erasure.js';
import { startS3rver, type S3Server } from '../helpers/s3rver.js';
import { serveFromSources } from '../helpers/serve-sources.js';
import { buildDist, KEY, stop } from '../helpers/served.js';

const A = 'erase-s3-user-T5v';
const ADMIN = 'admin-s3';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
const others = Array.from({ length: 12 }, (_, i) => `s3-other-${i}`);

let s3: S3Server;
const root = mkdtempSync(join(tmpdir(), 'sluice-erase-s3-'));
beforeAll(async () => {
  buildDist(); // the compiled CLI, as test/cli/serve-s3 runs it
  s3 = await startS3rver('lake');
}, 300_000);
afterAll(async () => {
  await s3?.stop();
  rmSync(root, { recursive: true, force: true });
});

let seq = 0;
const ev = (userId: string, t: number, extra: Record<string, unknown> = {}) => ({
  messageId: `s3-${seq++}`,
  userId,
  type: 'track',
  event: 'Application Opened',
  timestamp: new Date(t).toISOString(),
  context: { device: { type: 'ios' }, app: { version: '1.0' } },
  ...extra,
});

interface Server {
  url: string;
}
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 1000));

async function post(s: Server, batch: unknown[]): Promise<{ status: number; rejected: unknown[] }> {
  const res = await fetch(`${s.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` }, body: JSON.stringify({ batch }) });
  const body = (await res.json()) as { rejected: unknown[] };
  return { status: res.status, rejected: body.rejected };
}

async function admin(s: Server, path: string, init: RequestInit = {}): Promise<Record<string, unknown>> {
  const res = await fetch(`${s.url}${path}`, { ...init, headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN}` } });
  return { http: res.status, ...((await res.json()) as Record<string, unknown>) };
}


describe('erasure on S3 (s3rver)', () => {
  it('erases a user from every layer of an S3 lake online', async () => {
    const data = join(root, 'data');
    const lake = 's3://lake/erase';
    const args = ['--data', data, '--lake', lake, '--s3-endpoint', s3.endpoint, '--shards', '2', '--workers', '1', '--flush-interval', '250ms', '--allowed-lateness', '10m', '--session-gap', '30m', '--compression', 'none', '--engine-mode', 'inline', '--admin-key', ADMIN];
    const store = await openObjectStore(lake, { s3Endpoint: s3.endpoint });
    const s = await serveFromSources(root, args, {}, true);
    /** Lake objects whose bytes hold the id. */
    const holding = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const o of await store.list('')) {
        const b = await store.get(o.key);
        if (b && Buffer.from(b).includes(Buffer.from(A))) out.push(o.key);
      }
      return out;
    };
    try {
      for (let h = 1; h <= 3; h++) expect((await post(s, [...others, A].flatMap((u, i) => [0, 7].map((m) => ev(u, D + h * HOUR + i * MIN + m * MIN))))).status).toBe(200);
      // Out of order for the last two users, within the lateness: their hour-3 sessions start earlier,
      // take a new id, and leave session_aliases rows (a second table the job copies from S3).
      await settle();
      expect((await post(s, [others[11]!, A].map((u) => ev(u, D + 3 * HOUR + 9 * MIN)))).status).toBe(200);
      expect((await post(s, [ev(A, D + HOUR, { timestamp: 'not-a-time' })])).rejected).toHaveLength(1);
      expect((await post(s, [...others, A].map((u) => ev(u, Date.now() - MIN)))).status).toBe(200);
      await settle();
      expect((await post(s, [ev(A, D + 2 * HOUR + 30_000)])).status).toBe(200);
      const layers = ['bronze/', 'silver/events/', 'late/', 'dlq/', 'gold/sessions/', 'gold/session_aliases/'];
      let before = '';
      for (let i = 0; i < 120 && !layers.every((p) => before.includes(p)); i++) {
        await settle();
        before = (await holding()).join('\n');
      }
      for (const p of layers) expect(before, p).toContain(p);

      const accepted = await admin(s, '/v1/admin/erasures', { method: 'POST', body: JSON.stringify({ users: [A], reason: 's3 test' }) });
      expect(accepted.http).toBe(202);
      const id = String(accepted.id);
      let state = '';
      for (let i = 0; i < 120 && state !== 'done'; i++) {
        expect((await post(s, others.slice(0, 4).map((u) => ev(u, Date.now())))).status).toBe(200);
        await settle();
        state = String((await admin(s, `/v1/admin/erasures/${id}`)).state);
      }
      const status = await admin(s, `/v1/admin/erasures/${id}`);
      expect(status.state, JSON.stringify(status)).toBe('done');
      expect((status.layers as Record<string, { rowsRemoved: number }>).events!.rowsRemoved).toBe(3 * 2 + 3);

      // Online: no object of the bucket, no file of the data directory holds the id.
      expect(await holding()).toEqual([]);
      expect(filesHolding([data], [A])).toEqual([]);
      expect((await store.list('_sluice/audit/')).map((o) => o.key)).toEqual([`_sluice/audit/${id}.json`]);
      const erases = (await listCommitRecords(store)).filter((r) => r.id.startsWith(`erase-${id}`) && !r.id.includes('-gold-'));
      expect(erases.length).toBeGreaterThan(0);
      for (const r of erases) expect(r.kind).toBe('erase');
    } finally {
      expect(await stop(s, 'SIGTERM')).toBe(0);
    }
    // The others' silver rows are all there: 3 hours × 2 + 1 now + the ones sent during the job.
    const perUser = new Map<string, number>();
    for (const o of await store.list('silver/events/')) {
      if (!o.key.endsWith('.parquet')) continue;
      const t = decodeParquet((await store.get(o.key))!);
      const col = t.getChild('user_id')!;
      for (let i = 0; i < t.numRows; i++) perUser.set(String(col.get(i)), (perUser.get(String(col.get(i))) ?? 0) + 1);
    }
    expect(perUser.has(A)).toBe(false);
    for (const u of others.slice(4, 11)) expect(perUser.get(u), u).toBe(7);
    expect(perUser.get(others[11]!)).toBe(8);
    // Gold counts the others alone, as this test sent them: per hour 12 users × 2 events, 12 sessions (+1 event in hour 3).
    for (let h = 1; h <= 3; h++) {
      const start = D + h * HOUR;
      const hour = new Date(start);
      const p2 = (n: number): string => String(n).padStart(2, '0');
      const dir = `gold/hourly_metrics/year=${hour.getUTCFullYear()}/month=${p2(hour.getUTCMonth() + 1)}/day=${p2(hour.getUTCDate())}/hour=${p2(hour.getUTCHours())}/`;
      const files = (await store.list(dir)).filter((o) => o.key.endsWith('.parquet'));
      expect(files, dir).toHaveLength(1);
      const t = decodeParquet((await store.get(files[0]!.key))!);
      const all = t.toArray().map((r) => r.toJSON() as Record<string, unknown>).find((r) => r.device_type === 'ALL' && r.app_version === 'ALL' && r.country === 'ALL')!;
      expect([Number(all.events), Number(all.active_users), Number(all.sessions)], dir).toEqual([h === 3 ? 25 : 24, 12, 12]);
    }
    expect(await (async () => (await store.list('')).length)()).toBeGreaterThan(0);
    await store.close();
  }, 240_000);
});
