/**
 * engine/lake-owner: one data directory per lake on segment logs (their offsets, from 0 in each
 * data directory, name the lake's files). A second data directory on a lake another one writes —
 * a second server, or a new --data after the first was deleted — overwrote its files and commit
 * records; now it is refused, and the lake is left as it was.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { claimLake, LAKE_OWNER_KEY } from '../../engine/lake-owner.js';
import { LocalObjectStore } from '../../storage/local-store.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-lake-owner-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('claimLake', () => {
  it('records the first data directory, lets it back in, refuses any other; a lake from before the record is adopted only by a data directory that already ran', async () => {
    const lake = join(root, 'lake');
    const store = new LocalObjectStore(lake);
    const d1 = join(root, 'd1');
    const d2 = join(root, 'd2');
    for (const d of [d1, d2]) mkdirSync(d, { recursive: true });
    await claimLake(store, d1, lake);
    const owner = JSON.parse(readFileSync(join(lake, LAKE_OWNER_KEY), 'utf8')) as { dataId: string };
    expect(owner.dataId).toBe((JSON.parse(readFileSync(join(d1, 'data-id.json'), 'utf8')) as { id: string }).id);
    await claimLake(store, d1, lake); // its own lake: again and again
    await expect(claimLake(store, d2, lake)).rejects.toMatchObject({ code: 'lake_in_use', message: expect.stringContaining(`written by another data directory (id ${owner.dataId}`) });
    expect(JSON.parse(readFileSync(join(lake, LAKE_OWNER_KEY), 'utf8'))).toEqual(owner);

    // A lake written before owner records: shard commits, no owner.
    const old = join(root, 'old-lake');
    const oldStore = new LocalObjectStore(old);
    await oldStore.put('_sluice/commits/s0-0-41.json', Buffer.from('{}'));
    const fresh = join(root, 'fresh');
    mkdirSync(fresh);
    await expect(claimLake(oldStore, fresh, old)).rejects.toMatchObject({ code: 'lake_in_use', message: expect.stringContaining('holds shard commits of another data directory') });
    expect(existsSync(join(old, LAKE_OWNER_KEY))).toBe(false);
    const ran = join(root, 'ran');
    mkdirSync(join(ran, 'coordinator.mdb'), { recursive: true });
    writeFileSync(join(ran, 'layout.json'), '{"shards": 2}\n');
    await claimLake(oldStore, ran, old); // the data directory that wrote it, from before the record
    expect(existsSync(join(old, LAKE_OWNER_KEY))).toBe(true);
    await expect(claimLake(oldStore, fresh, old)).rejects.toMatchObject({ code: 'lake_in_use' });
    await store.close();
    await oldStore.close();
  });

  it('of data directories starting at the same moment on a new lake, one records itself and every other is refused', async () => {
    const lake = join(root, 'race-lake');
    const store = new LocalObjectStore(lake);
    const dirs = [0, 1, 2, 3].map((i) => join(root, `race-${i}`));
    for (const d of dirs) mkdirSync(d, { recursive: true });
    const outcomes = await Promise.allSettled(dirs.map((d) => claimLake(store, d, lake)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    for (const o of outcomes) if (o.status === 'rejected') expect(o.reason).toMatchObject({ code: 'lake_in_use' });
    const winner = dirs[outcomes.findIndex((o) => o.status === 'fulfilled')]!;
    const owner = JSON.parse(readFileSync(join(lake, LAKE_OWNER_KEY), 'utf8')) as { dataId: string };
    expect(owner.dataId).toBe((JSON.parse(readFileSync(join(winner, 'data-id.json'), 'utf8')) as { id: string }).id);
    await store.close();
  });
});
