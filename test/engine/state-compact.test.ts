/**
 * The erasure's compaction of a shard's state file (engine/erasure-offline.ts `compactLmdbFile`):
 * the file it leaves holds every live entry byte for byte, none of the deleted ones' bytes, and
 * stays writable the way the engine writes it — dropping a dedup bucket whose runs (over ≈ 2 KB)
 * sit on overflow pages, then writing new runs. LMDB's compacting copy (`env.backup(path, true)`)
 * failed exactly there: its file aborted the process at that drop (mdb_page_alloc: "Assertion
 * 'key.mv_size > 0' failed"), and at every restart after it — the engine crash-looped after an
 * online erasure.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compactLmdbFile } from '../../engine/erasure-offline.js';
import { openStateEnv } from '../../engine/state-env.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-state-compact-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const PURGED = 'purged-user-Xq81-session-bytes';

/** A run of fingerprints: over half a page (4 KiB), so it lives on overflow pages. */
const run = (prefix: number, seq: number): Buffer => Buffer.alloc(5_000 + 8 * seq, (prefix + seq) & 0xff);
const runKey = (prefix: number, seq: number): Buffer => Buffer.from([prefix, 0, 0, 0, seq]);

describe('compacting a shard state file', () => {
  it('keeps every live entry, no deleted bytes, and a file the engine can drop a bucket of and write on', async () => {
    const path = join(root, 'state.mdb');
    let env = openStateEnv(path);
    const bucket = env.openDB({ name: 'dedup-491000', keyEncoding: 'binary', encoding: 'binary' });
    for (let seq = 0; seq < 5; seq++) bucket.transactionSync(() => {
      for (let prefix = 0; prefix < 64; prefix++) bucket.putSync(runKey(prefix, seq), run(prefix, seq));
    });
    const sessions = env.openDB({ name: 'state-sessions', encoding: 'msgpack' });
    sessions.transactionSync(() => {
      for (let i = 0; i < 2_000; i++) sessions.putSync(`user-${i}`, { start: i, events: i % 7, screen: 'Home'.repeat(i % 5) });
      sessions.putSync(PURGED, { start: 1, note: PURGED });
    });
    const meta = env.openDB({ name: 'checkpoint', encoding: 'msgpack' });
    meta.putSync('offset', 1234);
    // The purge: the user's session deleted; its bytes stay on a freed page until reused.
    sessions.removeSync(PURGED);
    const before = new Map<string, Array<[string, string]>>();
    for (const name of ['dedup-491000', 'state-sessions', 'checkpoint']) {
      const db = env.openDB({ name, keyEncoding: 'binary', encoding: 'binary' });
      before.set(name, [...db.getRange()].map(({ key, value }) => [Buffer.from(key as Buffer).toString('hex'), Buffer.from(value as Buffer).toString('hex')]));
    }
    await env.close();
    expect(readFileSync(path).includes(Buffer.from(PURGED)), 'the fixture leaves the purged bytes on a free page').toBe(true);

    expect(await compactLmdbFile(path)).toBe(true);
    expect(readFileSync(path).includes(Buffer.from(PURGED))).toBe(false);

    env = openStateEnv(path);
    try {
      for (const [name, entries] of before) {
        const db = env.openDB({ name, keyEncoding: 'binary', encoding: 'binary' });
        expect([...db.getRange()].map(({ key, value }) => [Buffer.from(key as Buffer).toString('hex'), Buffer.from(value as Buffer).toString('hex')]), name).toEqual(entries);
      }
      expect(env.openDB({ name: 'state-sessions', encoding: 'msgpack' }).get('user-42')).toEqual({ start: 42, events: 0, screen: 'HomeHome' });
      expect(env.openDB({ name: 'checkpoint', encoding: 'msgpack' }).get('offset')).toBe(1234);
      // What the dedup operator does when a bucket expires, then new runs.
      env.openDB({ name: 'dedup-491000', keyEncoding: 'binary', encoding: 'binary' }).dropSync();
      const next = env.openDB({ name: 'dedup-491001', keyEncoding: 'binary', encoding: 'binary' });
      for (let seq = 0; seq < 10; seq++) next.transactionSync(() => {
        for (let prefix = 0; prefix < 64; prefix++) next.putSync(runKey(prefix, seq), run(prefix, seq + 1));
      });
      expect(next.getCount()).toBe(640);
      expect([...env.getKeys()].map(String).sort()).toEqual(['checkpoint', 'dedup-491001', 'state-sessions']);
    } finally {
      await env.close();
    }
  });
});
