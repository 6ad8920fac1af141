/**
 * A shard's state.mdb stays in ONE memory map while it grows (engine/state-env.ts): with lmdb-js's
 * default the file is mapped anew at every growth and the old maps stay, so pages read through
 * several maps are resident, and counted in RSS, several times.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open as openLmdb, type RootDatabase } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { openStateEnv } from '../../engine/state-env.js';

const dir = mkdtempSync(join(tmpdir(), 'sluice-state-env-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Grows the env to ≈ 20 MB in 40 transactions, reading every key written so far after each, as dedup lookups do. */
function grow(env: RootDatabase): void {
  const db = env.openDB({ name: 'dedup-test', encoding: 'binary' });
  const value = Buffer.alloc(400, 1);
  for (let t = 0; t < 40; t++) {
    env.transactionSync(() => {
      for (let i = 0; i < 1200; i++) db.putSync(`k-${t}-${i}`, value);
    });
    for (let u = 0; u <= t; u += 4) expect(db.getBinary(`k-${u}-7`)?.length).toBe(400);
  }
}

const mapsOf = (path: string): number => readFileSync('/proc/self/maps', 'utf8').split('\n').filter((l) => l.endsWith(` ${path}`)).length;

describe('state.mdb map', () => {
  it('stays one map of the file while it grows 20 MB', async () => {
    const path = join(dir, 'state.mdb');
    const env = openStateEnv(path);
    grow(env);
    expect(mapsOf(path)).toBe(1);
    await env.close();
  });

  it('(why) lmdb-js’s default maps a growing file several times', async () => {
    const path = join(dir, 'default.mdb');
    const env = openLmdb({ path, maxDbs: 4096, compression: false });
    grow(env);
    expect(mapsOf(path), 'if lmdb-js keeps one map by default now, openStateEnv’s mapSize is no longer needed').toBeGreaterThan(1);
    await env.close();
  });
});
