/**
 * `sluice compact` on a real local lake: compacts closed partitions, applies --retention by
 * layer, prints JSON; bad flags get messages that say what to write instead; refuses while a serve
 * writes the lake (not after it stopped gracefully); a serve starting while a compact runs waits
 * for it, and a compact that finds a start in between refuses (storage/maintenance-mark.ts).
 */
import { mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { parseRetention, register } from '../../cli/compact.js';
import { pino } from 'pino';
import { claimLakeForMaintenance, LAKE_SERVED_WITHIN_MS } from '../../cli/serve-lock.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { FRONTIER_KEY, readFrontier, writeFrontier } from '../../engine/reconcile.js';
import { partKey, partName } from '../../common/lake-layout.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { holdMaintenanceMark, MAINTENANCE_FRESH_MS, MAINTENANCE_KEY, runningMaintenance } from '../../storage/maintenance-mark.js';
import { encodeParquet } from '../../storage/parquet.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';
import { silverRows } from './silver-rows.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-compact-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

async function run(args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  register(program);
  let out = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  }) as typeof process.stdout.write;
  try {
    await program.parseAsync(args, { from: 'user' });
  } finally {
    process.stdout.write = write;
  }
  return out;
}

describe('sluice compact', () => {
  it('parses --retention per layer (bare numbers are days) and pins its messages', () => {
    expect(parseRetention(['bronze=30d,silver=365', 'gold=12h'])).toEqual({ bronze: 30, silver: 365, gold: 0.5 });
    expect(() => parseRetention(['events=30d'])).toThrow('--retention must look like bronze=30d,silver=365d with layers bronze, silver, gold, dlq, late, got "events=30d"');
    expect(() => parseRetention(['dlq=0'])).toThrow('--retention dlq must be a positive age, got "0"');
    expect(() => parseRetention(['late=soon'])).toThrow('--retention late must look like 500ms, 10s, 30m, 2h or 7d, got "soon"');
  });

  it('compacts closed partitions and applies retention on a local lake', async () => {
    const lake = join(root, 'lake');
    const store = new LocalObjectStore(lake);
    const committer = new TwoPhaseCommitter(store);
    const old = Date.UTC(2020, 0, 1, 5);
    const files = [0, 1, 2].map((i) => {
      const b = silverRows({ rows: 50, seed: 10 + i, startMs: old, spanMs: 60_000, batchRows: 50 });
      return { key: partKey('events', old, partName(0, i, i)), body: encodeParquet(b), rows: 50 };
    });
    const bronze = { key: partKey('bronze_events', old, partName(0, 0, 2)), body: encodeParquet(silverRows({ rows: 5, seed: 1, startMs: old, batchRows: 5 })), rows: 5 };
    await committer.publish(await committer.stage([...files, bronze], { id: 's0-0-2', kind: 'flush', shard: 0 }));

    const out = JSON.parse(await run(['compact', '--lake', lake, '--older-than', '1h', '--json'])) as { compacted: { files: number; outputs: number; rows: number } };
    expect(out.compacted).toMatchObject({ files: 3, outputs: 1, rows: 150 });
    expect((await store.list('silver/')).length).toBe(1);

    const text = await run(['compact', '--lake', lake, '--retention', 'bronze=30d']);
    expect(text).toContain('retention removed 1 files in 1 partitions');
    expect(await store.list('bronze/')).toEqual([]);
    expect((await store.list('silver/')).length).toBe(1);
    await expect(run(['compact', '--lake', lake, '--table', 'hourly'])).rejects.toThrow('--table must be one of bronze_events, events, sessions, dlq, got hourly');
  });

  it('refuses while a serve writes the lake (its frontier is fresh); --force runs beside it, and so does an older frontier', async () => {
    const lake = join(root, 'served');
    const store = new LocalObjectStore(lake);
    await store.put(FRONTIER_KEY, new TextEncoder().encode('{}'));
    await expect(run(['compact', '--lake', lake])).rejects.toMatchObject({
      code: 'lake_in_use',
      message: expect.stringMatching(/^a running sluice serve writes lake .* \(it wrote _sluice\/frontier\.json \d+ s ago\) and already compacts and reconciles it in the background; stop it first .*or pass --force to run sluice compact beside it$/),
    });
    expect(await run(['compact', '--lake', lake, '--force'])).toContain('compacted 0 files');
    const old = (Date.now() - LAKE_SERVED_WITHIN_MS - 1000) / 1000;
    utimesSync(join(lake, FRONTIER_KEY), old, old);
    expect(await run(['compact', '--lake', lake])).toContain('compacted 0 files');
    await store.close();
  });

  it('runs at once after a graceful stop of the engine (it marks the frontier stopped), and refuses again once it starts', async () => {
    const lake = join(root, 'stopped');
    const options = validateEngineOptions({ dataDir: join(root, 'stopped-data'), lake, shards: 2, workers: 1, flushIntervalMs: 50, compactAfterMs: 0 });
    const logger = pino({ level: 'silent' });
    await (await Coordinator.start(options, logger)).close();
    expect(await run(['compact', '--lake', lake])).toContain('compacted 0 files');
    const again = await Coordinator.start(options, logger);
    try {
      await expect(run(['compact', '--lake', lake])).rejects.toMatchObject({ code: 'lake_in_use' });
    } finally {
      await again.close();
    }
    expect(await run(['compact', '--lake', lake])).toContain('compacted 0 files');
  }, 30_000);

  it('a start while a compact runs waits for the compact (its mark), and the compact refuses from then on', async () => {
    const lake = join(root, 'marked');
    const options = validateEngineOptions({ dataDir: join(root, 'marked-data'), lake, shards: 2, workers: 1, flushIntervalMs: 50, compactAfterMs: 0 });
    const logger = pino({ level: 'silent' });
    await (await Coordinator.start(options, logger)).close();
    const store = new LocalObjectStore(lake);
    try {
      // A compact that got past its checks (the lake was stopped) holds its mark while it works.
      const mark = await holdMaintenanceMark(store, 'sluice compact');
      let started = false;
      const starting = Coordinator.start(options, logger).then((c) => ((started = true), c));
      await new Promise((r) => setTimeout(r, 1500));
      expect(started, 'the start waits while the compact runs').toBe(false);
      // The start has said it writes the lake: another compact now refuses.
      await expect(run(['compact', '--lake', lake])).rejects.toMatchObject({ code: 'lake_in_use' });
      await mark.release();
      await (await starting).close();
      expect(await runningMaintenance(store)).toBeUndefined();
      // A mark not refreshed for MAINTENANCE_FRESH_MS is a compact that died: it holds nobody.
      await holdMaintenanceMark(store, 'sluice compact');
      const old = (Date.now() - MAINTENANCE_FRESH_MS - 1000) / 1000;
      utimesSync(join(lake, MAINTENANCE_KEY), old, old);
      expect(await runningMaintenance(store)).toBeUndefined();
      await store.delete(MAINTENANCE_KEY);
    } finally {
      await store.close();
    }
  }, 30_000);

  it('a compact that finds a serve started between its first look and its mark refuses, and takes its mark back', async () => {
    const lake = join(root, 'raced');
    const options = validateEngineOptions({ dataDir: join(root, 'raced-data'), lake, shards: 2, workers: 1, flushIntervalMs: 50, compactAfterMs: 0 });
    await (await Coordinator.start(options, pino({ level: 'silent' }))).close();
    const store = new LocalObjectStore(lake);
    try {
      const stopped = (await readFrontier(store))!;
      expect(stopped.stoppedAtMs).toBeDefined();
      // The serve's start lands right before the compact's mark (it rewrites the frontier, unmarked).
      const racing = new Proxy(store, {
        get(target, prop) {
          if (prop === 'put') {
            return async (key: string, body: Uint8Array) => {
              if (key === MAINTENANCE_KEY) await writeFrontier(target, { ...stopped, stoppedAtMs: undefined });
              return target.put(key, body);
            };
          }
          const v = Reflect.get(target, prop) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
      await expect(claimLakeForMaintenance(racing, lake, 'sluice compact')).rejects.toMatchObject({ code: 'lake_in_use' });
      expect((await store.list(MAINTENANCE_KEY)).length).toBe(0);
    } finally {
      await store.close();
    }
  }, 30_000);
});
