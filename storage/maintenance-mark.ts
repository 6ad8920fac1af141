/**
 * `sluice compact` and `sluice reconcile` rewrite the lake; a serve (or engine node) starting on
 * it meanwhile would write it beside them. Each side announces itself before it looks at the
 * other, so at least one of the two sees the other whatever the interleaving:
 *
 *   maintenance command                         engine start (Coordinator.start)
 *     refuse if the frontier is fresh             rewrite the frontier (fresh, not stopped)
 *     put _sluice/maintenance.json  ─ mark ─┐     wait while a fresh mark exists ◀─┘
 *     refuse if the frontier is fresh now        … then recover and write the lake
 *     work (the mark refreshed every 10 s), delete the mark
 *
 * A mark counts while it was written within {@link MAINTENANCE_FRESH_MS} (a command killed -9
 * stops refreshing it; its mark then goes stale and the start goes on).
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { META_PREFIX } from '../common/lake-layout.js';
import type { ObjectStore } from './object-store.js';

export const MAINTENANCE_KEY = `${META_PREFIX}/maintenance.json`;
/** A mark older than this is a command that died: ignored. */
export const MAINTENANCE_FRESH_MS = 30_000;
const REFRESH_MS = 10_000;

export interface MaintenanceMark {
  command: string;
  pid: number;
  host: string;
  startedAtMs: number;
}

const encoder = new TextEncoder();

/** Puts this command's mark and keeps it fresh until `release()` (which deletes it). */
export async function holdMaintenanceMark(store: ObjectStore, command: string): Promise<{ release(): Promise<void> }> {
  const body = encoder.encode(JSON.stringify({ command, pid: process.pid, host: hostname(), startedAtMs: Date.now() } satisfies MaintenanceMark));
  await store.put(MAINTENANCE_KEY, body);
  let refreshing: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    refreshing = store.put(MAINTENANCE_KEY, body).catch(() => undefined);
  }, REFRESH_MS);
  timer.unref();
  return {
    release: async () => {
      clearInterval(timer);
      await refreshing;
      await store.delete(MAINTENANCE_KEY);
    },
  };
}

/** The mark of a maintenance command that is still running (written within MAINTENANCE_FRESH_MS), if any. */
export async function runningMaintenance(store: ObjectStore, nowMs = Date.now()): Promise<MaintenanceMark | undefined> {
  const found = (await store.list(MAINTENANCE_KEY)).find((o) => o.key === MAINTENANCE_KEY);
  if (found === undefined || nowMs - found.mtimeMs >= MAINTENANCE_FRESH_MS) return undefined;
  const body = await store.get(MAINTENANCE_KEY);
  if (body === undefined) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(body)) as MaintenanceMark;
  } catch {
    return { command: 'a maintenance command', pid: 0, host: '?', startedAtMs: found.mtimeMs };
  }
}

/** An engine's start: waits (saying so once) while a maintenance command rewrites the lake. */
export async function waitForMaintenance(store: ObjectStore, log: Logger, pollMs = 1000): Promise<void> {
  let said = false;
  for (let mark = await runningMaintenance(store); mark !== undefined; mark = await runningMaintenance(store)) {
    if (!said) {
      log.warn({ ...mark }, `waiting for ${mark.command} (pid ${mark.pid} on ${mark.host}) to finish: it rewrites the lake; the engine starts after it (or ${MAINTENANCE_FRESH_MS / 1000} s after its last sign of life)`);
      said = true;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
