/**
 * One `sluice serve` per data directory. A second serve on the same `--data` used to wait for the
 * first one's engine process (engine/engine-host.ts `takeOver`, written for an engine orphaned by
 * a killed serve that is still exiting), then SIGKILL it after 30 s and run beside the first serve
 * on the same logs — the first serve restarted its engine, which waited in turn.
 *
 * Now serve claims `DATA/serve.pid` before it opens anything: a live serve named there (or a live
 * engine process whose parent is still alive) is refused at once, naming its pid. An engine left
 * behind by a killed serve is still waited for — it exits by itself once its serve is gone — for
 * up to {@link ORPHAN_WAIT_MS}, then killed (SIGKILL: everything it acknowledged is in the logs
 * and its state is recovered as after any crash), so a supervisor's restart never loops on it.
 */
import { readFileSync, unlinkSync } from 'node:fs';
import { mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { userError } from '../common/errors.js';
import { FRONTIER_KEY, readFrontier } from '../engine/reconcile.js';
import { holdMaintenanceMark } from '../storage/maintenance-mark.js';
import type { ObjectStore } from '../storage/object-store.js';

export const SERVE_PID_FILE = 'serve.pid';
const ENGINE_PID_FILE = 'engine.pid';
/** How long serve waits for an engine orphaned by an earlier, killed serve to exit (it exits when its serve is gone) before killing it. */
export const ORPHAN_WAIT_MS = 30_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readPid(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** The process's command line (Linux /proc), or undefined where it cannot be read. */
function commandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

/** The parent pid (Linux /proc), or undefined where it cannot be read. */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) && ppid > 0 ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/** A live `sluice serve` — not a process that merely got the pid of a serve that died (where /proc tells). */
function liveServe(pid: number): boolean {
  if (pid === process.pid || !alive(pid)) return false;
  const cmd = commandLine(pid);
  return cmd === undefined || /\bserve\b/.test(cmd);
}

/** A live engine process (engine/engine-host.ts) — not a process that merely got the pid of one that died (where /proc tells). */
function liveEngine(pid: number): boolean {
  if (pid === process.pid || !alive(pid)) return false;
  const cmd = commandLine(pid);
  return cmd === undefined || cmd.includes('engine-host');
}

function inUse(dataDir: string, pid: number): Error {
  return userError('data_in_use', `data directory ${dataDir} is in use by sluice serve (pid ${pid}); stop it first, or pass another --data`);
}

/**
 * Claims `dataDir` for this serve: refuses (`data_in_use`) when a live serve holds it, waits up to
 * `waitMs` for an orphaned engine to exit (and kills it after that), then records this process
 * in DATA/serve.pid. The returned `release` removes the record (also done at process exit).
 */
export async function claimDataDir(dataDir: string, logger: Logger, waitMs = ORPHAN_WAIT_MS): Promise<{ release(): Promise<void> }> {
  const pidFile = join(dataDir, SERVE_PID_FILE);
  const holder = await readPid(pidFile);
  if (holder !== undefined && liveServe(holder)) throw inUse(dataDir, holder);
  const engine = await readPid(join(dataDir, ENGINE_PID_FILE));
  if (engine !== undefined && liveEngine(engine)) {
    // An engine whose serve still runs (a serve of an older version wrote no serve.pid).
    const parent = parentOf(engine);
    // (A killed serve's engine is reparented to init or a subreaper, which is not a serve.)
    if (parent !== undefined && parent !== 1 && liveServe(parent)) throw inUse(dataDir, parent);
    logger.warn({ pid: engine, waitMs }, 'waiting for an earlier engine process on this data directory (its sluice serve is gone) to exit');
    const deadline = Date.now() + waitMs;
    while (alive(engine) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (alive(engine)) {
      logger.warn({ pid: engine, waitMs }, 'the earlier engine process did not exit: killing it (its work is recovered from the logs and the last checkpoint)');
      try {
        process.kill(engine, 'SIGKILL');
      } catch (err) {
        throw userError('engine_still_running', `an earlier engine process (pid ${engine}) still runs on data directory ${dataDir} and cannot be stopped (${(err as Error).message}); stop it, then start again`);
      }
      for (const stop = Date.now() + 5000; alive(engine) && Date.now() < stop; ) await new Promise((r) => setTimeout(r, 50));
    }
  }
  await mkdir(dataDir, { recursive: true });
  await writePidFile(pidFile, dataDir);
  const removeSync = (): void => {
    try {
      if (readFileSync(pidFile, 'utf8').trim() === String(process.pid)) unlinkSync(pidFile);
    } catch {
      // already gone
    }
  };
  process.once('exit', removeSync);
  return {
    release: async () => {
      process.removeListener('exit', removeSync);
      if ((await readPid(pidFile)) === process.pid) await unlink(pidFile).catch(() => undefined);
    },
  };
}

/** Creates DATA/serve.pid exclusively (two serves started at once: one wins); replaces a stale one. */
async function writePidFile(pidFile: string, dataDir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await writeFile(pidFile, `${process.pid}\n`, { flag: 'wx' });
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 2) throw err;
    }
    const holder = await readPid(pidFile);
    if (holder !== undefined && liveServe(holder)) throw inUse(dataDir, holder);
    await unlink(pidFile).catch(() => undefined);
  }
}

/** How recently a serve must have written the lake's frontier for a maintenance command to count it as running. */
export const LAKE_SERVED_WITHIN_MS = 60_000;

/**
 * For `sluice compact` and `sluice reconcile` without `--force`: refuses while a `sluice serve`
 * (or the gold owner of engine nodes) writes `lake` — it republishes `_sluice/frontier.json` every
 * checkpoint round, and compacts and reconciles the lake itself. A second compactor beside it raced
 * its flushes and erasures (files compacted while an erasure rewrote them, records folding to
 * files that no longer exist). A serve that stopped gracefully marked the frontier stopped.
 */
export async function refuseIfLakeServed(store: ObjectStore, lake: string, command: string, nowMs = Date.now()): Promise<void> {
  const frontier = (await store.list(FRONTIER_KEY)).find((o) => o.key === FRONTIER_KEY);
  if (frontier === undefined) return;
  const ago = nowMs - frontier.mtimeMs;
  if (ago >= LAKE_SERVED_WITHIN_MS) return;
  // A serve that stopped gracefully says so in the frontier it wrote last.
  if ((await readFrontier(store).catch(() => undefined))?.stoppedAtMs !== undefined) return;
  throw userError(
    'lake_in_use',
    `a running sluice serve writes lake ${lake} (it wrote ${FRONTIER_KEY} ${Math.max(0, Math.round(ago / 1000))} s ago) and already compacts and reconciles it in the background; stop it first (after a crash, wait a minute), or pass --force to run ${command} beside it`,
  );
}

/**
 * For `sluice compact` and `sluice reconcile`: refuses as {@link refuseIfLakeServed} does, then
 * marks the lake as being rewritten (a serve starting from now waits for the mark) and looks
 * again — a serve that started in between has rewritten the frontier and goes first
 * (storage/maintenance-mark.ts). `force`: no look and no mark.
 */
export async function claimLakeForMaintenance(store: ObjectStore, lake: string, command: string, force = false): Promise<{ release(): Promise<void> }> {
  if (force) return { release: async () => undefined };
  await refuseIfLakeServed(store, lake, command);
  const mark = await holdMaintenanceMark(store, command);
  try {
    await refuseIfLakeServed(store, lake, command);
  } catch (err) {
    await mark.release();
    throw err;
  }
  return mark;
}
