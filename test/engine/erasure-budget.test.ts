/**
 * An erasure job runs in steps bounded per checkpoint round (engine/erasure-job.ts, the
 * coordinator's `erasureBudgetMs`), so a long job no longer holds every commit back: on the real
 * server (inline engine, rounds driven by the test, a budget of 0 = one step a round) a user with
 * rows in many files is erased while, between two of the job's rewrites, another user's new events
 * are committed to silver. Mid-job another writer replaces a planned file (its rows moved to a new
 * file, as a compaction or a reconciliation between two rounds would): the job, stopped right
 * after finding it gone, scans again next round instead of forgetting it, and when it is done no
 * file of the lake holds the id and every other user's rows are intact.
 */
import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import type { ErasureJob } from '../../storage/erasure-store.js';
import { checkpointRound, filesHolding, postJson, segmentEvents } from '../helpers/erasure.js';
import { openLakeReader } from '../helpers/lake.js';

const ev = segmentEvents('b-');
const A = 'erase-budget-user-K2q';
const LATE_COMER = 'budget-late-comer';
const ADMIN = 'admin-budget-key';
const MIN = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;
const D = Math.floor(Date.now() / DAY) * DAY - 2 * DAY;
const others = Array.from({ length: 8 }, (_, i) => `budget-other-${i}`);

const root = mkdtempSync(join(tmpdir(), 'sluice-erase-budget-'));
afterAll(() => {
  if (!process.env.KEEP_LAKE) rmSync(root, { recursive: true, force: true });
});

async function countsByUser(lakeDir: string): Promise<Map<string, number>> {
  const lake = await openLakeReader(lakeDir);
  try {
    const rows = await lake.rows<{ user_id: string; n: bigint }>(`SELECT user_id, count(*) AS n FROM ${lake.rel('events')} GROUP BY 1`);
    return new Map(rows.map((r) => [r.user_id, Number(r.n)]));
  } finally {
    lake.close();
  }
}

describe('erasure in bounded steps', () => {
  it('lets checkpoints commit between its steps and rescans when a planned file was replaced meanwhile', async () => {
    const d = { data: join(root, 'data'), lake: join(root, 'lake') };
    const config = composeServeConfig(
      // A flush interval the test never reaches: every round is one the test runs.
      { port: 0, data: d.data, lake: d.lake, shards: 2, workers: 1, flushInterval: '1h', allowedLateness: '3d', sessionGap: '30m', engineMode: 'inline', compression: 'none', writeKeys: ['wk-budget'], adminKeys: [ADMIN] },
      {},
    );
    config.engine.erasureBudgetMs = 0;
    const s = await startSluice(config, pino({ level: 'warn' }));
    const jobFile = (id: string): string => join(d.data, 'erasure', 'jobs', `${id}.json`);
    const job = (id: string): ErasureJob => JSON.parse(readFileSync(jobFile(id), 'utf8')) as ErasureJob;
    let before: Map<string, number>;
    let id = '';
    let moved = '';
    let stepsBeforeCommit = 0;
    try {
      // Four flushes, each with A and the others in hours 1–3 of day D: A's rows in 4 files per hour and table.
      for (let f = 0; f < 4; f++) {
        const batch = [A, ...others].flatMap((u, i) => [1, 2, 3].map((h) => ev(u, D + h * HOUR + (f * 10 + i) * MIN)));
        expect((await postJson(s.url, '/v1/batch', { batch }, 'wk-budget')).status).toBe(200);
        await checkpointRound(s);
      }
      before = await countsByUser(d.lake);
      expect(before.get(A)).toBe(12);

      const accepted = await postJson(s.url, '/v1/admin/erasures', { users: [A], reason: 'budget test' }, ADMIN);
      expect(accepted.status).toBe(202);
      id = String(accepted.body.id);

      // Rounds until the job has rewritten some of its files and not others.
      const pending = (j: ErasureJob) => (j.plan ?? []).filter((e) => !e.done);
      for (let i = 0; i < 20; i++) {
        await checkpointRound(s);
        const j = job(id);
        if (j.phase === 'scanned' && (j.plan ?? []).some((e) => e.done) && pending(j).filter((e) => e.table === 'events').length >= 2) break;
      }
      const mid = job(id);
      expect(mid.phase, 'the job stopped between two rewrites').toBe('scanned');
      stepsBeforeCommit = (mid.plan ?? []).filter((e) => e.done).length;

      // A checkpoint commits new events while the job is half done.
      const fresh = [0, 1, 2].map((k) => ev(LATE_COMER, Date.now() - (5 - k) * MIN));
      expect((await postJson(s.url, '/v1/batch', { batch: fresh }, 'wk-budget')).status).toBe(200);
      await checkpointRound(s);
      expect((await countsByUser(d.lake)).get(LATE_COMER), "the late comer's events are in silver").toBe(3);
      expect(job(id).phase, 'while the erasure is still rewriting').toBe('scanned');

      // Another writer replaces a planned silver file not rewritten yet: its rows move to a new file.
      const victim = pending(job(id)).find((e) => e.table === 'events')!;
      const from = join(d.lake, victim.key);
      moved = join(dirname(from), 'part-moved-by-another-writer.parquet');
      renameSync(from, moved);

      for (let i = 0; i < 200 && job(id).phase !== 'done'; i++) await checkpointRound(s);
      expect(job(id).phase).toBe('done');
    } finally {
      await s.close();
    }

    const done = job(id);
    expect(stepsBeforeCommit).toBeGreaterThan(0);
    // The moved file was found by the rescan and rewritten too: no file of the lake holds the id.
    expect(done.plan?.some((e) => e.key.endsWith('part-moved-by-another-writer.parquet') && e.done), 'the rescan planned the moved file').toBe(true);
    expect(filesHolding([d.lake], [A])).toEqual([]);
    expect(done.layers.events?.rowsRemoved).toBe(12);
    const after = await countsByUser(d.lake);
    expect(after.has(A)).toBe(false);
    for (const u of others) expect(after.get(u), u).toBe(before!.get(u));
    expect(after.get(LATE_COMER)).toBe(3);
  });
});
