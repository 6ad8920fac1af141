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
import { startSluice } from '../../cli/serve.js';
import { validateEngineOptions } from '../../engine/options.js';
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
});
