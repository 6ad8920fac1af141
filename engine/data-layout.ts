/**
 * The shard count a data directory was made with, kept in `<data>/layout.json` (`{"shards": 4}`).
 *
 * A user lives in shard murmur3(user_id) mod S: its log records, its dedup index, its open
 * sessions and its lake commits all sit in that shard. Starting the same data directory with
 * another S would send a returning user's events to a shard that knows nothing of them (duplicates
 * pass dedup, sessions split, an erasure looks in the wrong shard) and leave the other shards' logs
 * unread — silently. So the first start records S; later starts adopt it when no `--shards` is
 * given and refuse a different one, naming both.
 *
 * The engine records the session gap beside it (`{"shards": 4, "sessionGapMs": 1800000}`): the
 * shards' open sessions and held daily windows follow the gap they were made with, so a start
 * with another one is refused (`session_gap_mismatch`) — as the lake's `_sluice/frontier.json`
 * refuses it too; either record is enough, should the other be lost.
 *
 * Data directories made before this file existed have no layout.json: their local log
 * (`log/shard-0 … shard-<S−1>`, every shard opened at the first start) tells S. An engine node's
 * directory (scale-out) keeps only the shards it owned, so it is never inferred from, only recorded.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { formatDuration } from '../common/duration.js';
import { userError } from '../common/errors.js';
import { writeFileDurably } from '../storage/erasure-store.js';

export const LAYOUT_FILE = 'layout.json';

const SHARD_DIR = /^shard-(\d+)$/;

/**
 * The shard count recorded for `dataDir` (layout.json, else its local shard logs), or undefined for
 * a new directory. Synchronous: configuration is composed before anything starts.
 */
export function recordedShards(dataDir: string): number | undefined {
  return readLayout(dataDir)?.shards;
}

interface Layout {
  shards: number;
  /** Recorded by the engine (absent in directories made before, and in ingest's first record). */
  sessionGapMs?: number;
  /** layout.json holds it (not inferred from the logs). */
  inLayout: boolean;
}

/** What `dataDir` says of its shard count and session gap. */
function readLayout(dataDir: string): Layout | undefined {
  const path = join(dataDir, LAYOUT_FILE);
  let text: string | undefined;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text !== undefined) {
    let parsed: { shards?: unknown; sessionGapMs?: unknown } = {};
    try {
      parsed = JSON.parse(text) as typeof parsed;
    } catch {
      // reported below
    }
    const { shards, sessionGapMs } = parsed ?? {};
    if (!Number.isSafeInteger(shards) || (shards as number) < 1 || (sessionGapMs !== undefined && !(typeof sessionGapMs === 'number' && sessionGapMs > 0))) {
      throw userError('layout_corrupt', `${path} does not hold {"shards": <integer ≥ 1>, "sessionGapMs": <ms>} (got ${JSON.stringify(text.slice(0, 80))}); restore it with the shard count this data directory was started with`);
    }
    return { shards: shards as number, sessionGapMs: sessionGapMs as number | undefined, inLayout: true };
  }
  let names: string[];
  try {
    names = readdirSync(join(dataDir, 'log'));
  } catch {
    return undefined;
  }
  let max = -1;
  for (const n of names) {
    const m = SHARD_DIR.exec(n);
    if (m !== null) max = Math.max(max, Number(m[1]));
  }
  return max >= 0 ? { shards: max + 1, inLayout: false } : undefined;
}

/**
 * The shard count to run `dataDir` with: `given` (a flag, the environment, a config file) when it
 * agrees with the recorded one, the recorded one when nothing was given, else `fallback` (the
 * default for a new directory). Throws `shards_mismatch` when both exist and differ.
 */
export function resolveShards(dataDir: string, given: number | undefined, fallback: number): number {
  const recorded = recordedShards(dataDir);
  if (given !== undefined && recorded !== undefined && given !== recorded) throw mismatch(dataDir, recorded, given);
  return given ?? recorded ?? fallback;
}

/** The session gap recorded for `dataDir` (by its engine), if any. */
export function recordedSessionGap(dataDir: string): number | undefined {
  return readLayout(dataDir)?.sessionGapMs;
}

/**
 * Records `shards` (and the engine's `sessionGapMs`) for `dataDir` unless layout.json holds them
 * already (written durably: a temporary file, fsync'd, renamed, the directory fsync'd); throws
 * `shards_mismatch` / `session_gap_mismatch` if it was made with another count or gap. Every
 * opener of a data directory calls it before touching a shard (the engine, ingest's local logs),
 * so a programmatic start is held to the same rule as the CLI.
 */
export async function claimShards(dataDir: string, shards: number, sessionGapMs?: number): Promise<void> {
  const layout = readLayout(dataDir);
  if (layout !== undefined && layout.shards !== shards) throw mismatch(dataDir, layout.shards, shards);
  if (sessionGapMs !== undefined && layout?.sessionGapMs !== undefined && layout.sessionGapMs !== sessionGapMs) {
    throw sessionGapMismatch(`the data directory ${dataDir}`, layout.sessionGapMs, sessionGapMs);
  }
  if (layout?.inLayout && (sessionGapMs === undefined || layout.sessionGapMs !== undefined)) return;
  await mkdir(dataDir, { recursive: true });
  await writeFileDurably(join(dataDir, LAYOUT_FILE), `${JSON.stringify({ shards, sessionGapMs: sessionGapMs ?? layout?.sessionGapMs })}\n`);
}

/** `what` (a data directory, a lake) was built with a session gap of `recorded` ms; `given` is another. */
export function sessionGapMismatch(what: string, recorded: number, given: number) {
  return userError(
    'session_gap_mismatch',
    `${what} was built with a session gap of ${formatDuration(recorded)}, not ${formatDuration(given)}: its open sessions and held daily windows follow that gap. Start with --session-gap ${formatDuration(recorded)} (or leave it out if that is the default), or use a new --data and --lake`,
  );
}

function mismatch(dataDir: string, recorded: number, given: number) {
  return userError(
    'shards_mismatch',
    `the data directory ${dataDir} was started with ${recorded} shards, not ${given}: a user's events, dedup index and sessions live in ` +
      `the shard its id hashes to, so another count would split them; use --shards ${recorded} with it (or leave --shards out), or a new --data directory`,
  );
}
