/**
 * Issue 14 item 4 on a real small filesystem (a tmpfs mounted for the test; skipped where the
 * machine does not allow mounting): data directory (logs, LMDB) and local lake on it, the real
 * server with the engine. Filling the disk → ingest answers 503 + Retry-After, /readyz names the
 * failure, /metrics shows it, the process stays up; freeing the space → ingest acknowledges again
 * and /readyz turns ready without a restart; every acknowledged event is in silver exactly once.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { startSluice } from '../../cli/serve.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import { ingestRow } from '../helpers/batches.js';
import { captureLogger, eventually, exactlyOnce, metric, postEvents, readyz, silverCounts } from './fixtures/engine-http.js';

const KEY = 'wk-disk';
const mountPoint = mkdtempSync(join(tmpdir(), 'sluice-tmpfs-'));
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=32m', 'tmpfs', mountPoint], { stdio: 'ignore' });
  mounted = true;
} catch {
  mounted = false;
}
afterAll(() => {
  if (mounted) execFileSync('umount', ['-l', mountPoint], { stdio: 'ignore' });
  rmSync(mountPoint, { recursive: true, force: true });
});

/** Writes `path` until the filesystem refuses with ENOSPC (bounded: at most 64 MiB); returns bytes written. */
async function fill(path: string): Promise<number> {
  const fh = await open(path, 'w');
  let written = 0;
  try {
    for (const size of [1 << 20, 1 << 16, 1 << 12, 1 << 8, 1]) {
      const chunk = Buffer.alloc(size, 7);
      for (let i = 0; i < 64 * 1024 && written < 64 << 20; i++) {
        try {
          await fh.write(chunk);
          written += size;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
          break;
        }
      }
    }
  } finally {
    await fh.close().catch(() => undefined);
  }
  return written;
}

describe('disk full', () => {
  it.skipIf(!mounted)('(d) answers 503 while the data disk is full, reports it, and resumes by itself when space returns, nothing acked lost', async () => {
    const data = join(mountPoint, 'data');
    const lake = join(mountPoint, 'lake');
    mkdirSync(data, { recursive: true });
    const { logger, lines } = captureLogger();
    const engine = validateEngineOptions({ dataDir: data, lake, shards: 2, workers: 2, flushIntervalMs: 150, reconcileIntervalMs: 0, compactAfterMs: 0, retryBaseMs: 40, retryMaxMs: 300 });
    const sluice = await startSluice({ host: '127.0.0.1', port: 0, writeKeys: [KEY], engine, ingest: {} }, logger);
    const acked = new Set<string>();
    const filler = join(mountPoint, 'filler');
    try {
      const first = await postEvents(sluice.url, KEY, 'd-before', 50);
      expect(first.status).toBe(200);
      first.ids.forEach((id) => acked.add(id));
      expect(await eventually(async () => (await readyz(sluice.url)).status === 200)).toBe(true);

      expect(await fill(filler)).toBeGreaterThan(0);
      // Small appends may still fit in a segment's last page: send until one is refused.
      let refused: { status: number; retryAfter: string | null } | undefined;
      for (let i = 0; i < 200 && refused === undefined; i++) {
        const p = await postEvents(sluice.url, KEY, `d-full-${i}`, 50);
        if (p.status === 200) p.ids.forEach((id) => acked.add(id));
        else refused = p;
      }
      expect(refused?.status).toBe(503);
      expect(refused?.retryAfter).not.toBeNull();
      const notReady = await readyz(sluice.url);
      expect(notReady.status).toBe(503);
      expect(notReady.reasons.some((r) => /disk_full/.test(r))).toBe(true);
      expect(await metric(sluice.url, 'sluice_log_failed')).toBeGreaterThan(0);
      expect(await metric(sluice.url, 'sluice_log_failures_total', { code: 'disk_full' })).toBeGreaterThan(0);
      expect((await fetch(`${sluice.url}/healthz`)).status).toBe(200);
      // The engine's checkpoints hit the same full disk (LMDB or lake): retried, counted, not fatal.
      expect(await eventually(async () => (await metric(sluice.url, 'sluice_engine_checkpoint_failures_total', { code: 'disk_full' })) > 0)).toBe(true);

      rmSync(filler);
      let resumed = false;
      for (let i = 0; i < 400 && !resumed; i++) {
        const p = await postEvents(sluice.url, KEY, `d-after-${i}`, 50);
        if (p.status === 200) {
          p.ids.forEach((id) => acked.add(id));
          resumed = true;
        } else await new Promise((r) => setTimeout(r, 50));
      }
      expect(resumed).toBe(true);
      expect(await eventually(async () => (await readyz(sluice.url)).status === 200)).toBe(true);
      expect(await metric(sluice.url, 'sluice_log_failed')).toBe(0);
      expect(await metric(sluice.url, 'sluice_log_reopens_total')).toBeGreaterThan(0);
      const more = await postEvents(sluice.url, KEY, 'd-more', 50);
      expect(more.status).toBe(200);
      more.ids.forEach((id) => acked.add(id));
    } finally {
      rmSync(filler, { force: true });
      await sluice.close();
    }
    const failing = lines.filter((l) => typeof l.msg === 'string' && / failing \(/.test(l.msg));
    expect(failing.length).toBeGreaterThan(0);
    expect(failing.some((l) => l.code === 'disk_full')).toBe(true);
    const { missing, doubled } = exactlyOnce(acked, await silverCounts(lake));
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
  }, 120_000);

  it.skipIf(!mounted)('(lake full) a shard whose checkpoints fail holds at most maxUncommittedBytesPerShard in memory; the rest waits in the log, and all of it is committed once space returns', async () => {
    const data = mkdtempSync(join(tmpdir(), 'sluice-held-data-')); // the log has room: only the lake is full
    const lake = join(mountPoint, 'lake-held');
    mkdirSync(lake, { recursive: true });
    const bound = 256 * 1024;
    const options = validateEngineOptions({
      dataDir: data, lake, shards: 1, workers: 1, flushIntervalMs: 200, targetFileBytes: 64 * 1024, maxUncommittedBytesPerShard: bound,
      maxRangeBytes: 16 * 1024, reconcileIntervalMs: 0, compactAfterMs: 0, retryBaseMs: 40, retryMaxMs: 300,
    });
    const c = await Coordinator.start(options, pino({ level: 'silent' }));
    const filler = join(mountPoint, 'filler-held');
    const ids: string[] = [];
    const send = async (batches: number): Promise<void> => {
      for (let b = 0; b < batches; b++) {
        const builder = new IngestBatchBuilder(100);
        for (let i = 0; i < 100; i++) {
          const id = `h-${ids.length}`;
          ids.push(id);
          const t = Date.UTC(2026, 2, 1, 10) + ids.length * 1000;
          builder.push(ingestRow(id, `u${ids.length % 50}`, t, { raw: `{"pad":"${'x'.repeat(400)}${id}"}` }));
        }
        const payload = builder.toIPC();
        const offset = await c.shardLogs[0]!.append(payload);
        c.submit(0, offset, payload, 100);
      }
    };
    try {
      await send(2);
      await c.drain();
      await c.checkpointNow();
      expect(await fill(filler)).toBeGreaterThan(0);
      // ~100 × 100 rows of ~0.5 KB: about 20 × the bound, while every checkpoint fails on the full lake.
      await send(100);
      let most = 0;
      const held = await eventually(async () => {
        const p = c.progress()[0]!;
        most = Math.max(most, p.uncommittedBytes);
        return p.held && p.submittedNext < p.durableNext;
      });
      expect(held).toBe(true);
      for (let i = 0; i < 20; i++) {
        most = Math.max(most, c.progress()[0]!.uncommittedBytes);
        await new Promise((r) => setTimeout(r, 50));
      }
      // At the bound it takes no more ranges: at most one range's rows beyond it.
      expect(most).toBeGreaterThanOrEqual(bound);
      expect(most).toBeLessThan(2 * bound);
      expect(c.progress()[0]!.submittedNext).toBeLessThan(c.progress()[0]!.durableNext);
      rmSync(filler);
      await c.drain();
      await c.checkpointNow(true);
    } finally {
      rmSync(filler, { force: true });
      await c.close();
      rmSync(data, { recursive: true, force: true });
    }
    const counts = await silverCounts(lake);
    const { missing, doubled } = exactlyOnce(new Set(ids), counts);
    expect(missing).toEqual([]);
    expect(doubled).toEqual([]);
  }, 120_000);
});
