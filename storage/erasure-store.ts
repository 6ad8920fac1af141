/**
 * Erasure bookkeeping in the data directory, shared by ingest (accepts requests, suppresses),
 * the engine (runs the jobs) and `sluice erase`:
 *
 *   <data>/erasure/salt                 random, created once; the salt of every user hash
 *   <data>/erasure/requests.jsonl       append-only, fsync'd: one ErasureRequest per line —
 *                                       salted hashes only, never an id in clear (the suppression set)
 *   <data>/erasure/pending/<id>.json    the ids in clear, while the job needs them to match rows;
 *                                       deleted when the job completes
 *   <data>/erasure/jobs/<id>.json       the job's progress (phase, files rewritten, rows removed),
 *                                       replaced atomically (tmp + fsync + rename) after every step
 *
 * Accepting writes the pending file first and the request line second: a crash in between leaves
 * a pending file no request names, which `requests()` never returns and `accept` ignores.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { userError } from '../common/errors.js';

/** The last log offsets (per shard, and of the DLQ log) that may hold events of a request's users. */
export interface ErasureMarks {
  shards: Record<string, number>;
  dlq: number;
}

/** One accepted request, as appended to requests.jsonl (no user id in clear). */
export interface ErasureRequest {
  id: string;
  /** ISO-8601 UTC. */
  receivedAt: string;
  reason: string | null;
  /** Salted hashes (HMAC-SHA256, hex) of the users, in request order. */
  userHashes: string[];
  /** The shard of each user (same order). */
  shards: number[];
  marks: ErasureMarks;
}

export type ErasurePhase = 'accepted' | 'waiting-commit' | 'scanned' | 'rewritten' | 'gold-done' | 'waiting-log' | 'done';

/** What the job removed from one layer (table, log or state). */
export interface LayerReport {
  files: string[];
  rowsRemoved: number;
}

/** The job's progress, replaced after every step (engine/erasure-job.ts). */
/** The erased users' part of one gold window, subtracted from it once it is merged; no user id. */
export interface GoldWindowCorrection {
  /** sha256 (hex) of the window's gold file at the scan; null: not merged then (it is recomputed once merged). */
  base: string | null;
  /** sha256 of the corrected file, recorded before it is written (a redo after a crash finds it in place). */
  next?: string;
  /** The scan dropped rows the users' counts do not cover (another user's, part of a session that stays): recompute. */
  recompute?: boolean;
  /** Per grouping-set row (dimensions, 'ALL' roll-ups): the users' counts; daily rows also session_ms and bounces. */
  rows: Array<Record<string, string | number>>;
  /** How the window was corrected, once it was. */
  how?: 'subtracted' | 'recomputed';
}

export interface ErasureJob {
  id: string;
  phase: ErasurePhase;
  updatedAt: string;
  completedAt?: string;
  /** Per table (and `log`, `state`): files rewritten or deleted, rows removed. */
  layers: Record<string, LayerReport>;
  /**
   * The rewrite plan from the scan: files holding the users' rows and how many; `done` once
   * rewritten; `stale` when the file was gone at its rewrite (replaced by another writer: its rows
   * moved elsewhere, so the job scans again before it goes on).
   */
  plan?: Array<{ table: string; key: string; rows: number; done: boolean; stale?: boolean }>;
  /** Session ids of the users (murmur3 hashes, needed to match session_aliases); cleared when done. */
  sessionIds?: string[];
  /** Gold windows (start ms) the users' events fell in, still to correct. */
  windows?: { hourly: number[]; daily: number[] };
  /** Per gold window (`hourly/<start>`, `daily/<start>`): the users' part, found by the scan (engine/erasure-job.ts). */
  gold?: Record<string, GoldWindowCorrection>;
  /** The users' shards' LMDB files were compacted after the purge (engine/erasure-offline.ts). */
  stateCompacted?: boolean;
  /** Open sessions dropped from the shards' state. */
  openSessionsPurged?: number;
  /** Why the job waits, when it does (shown by GET /v1/admin/erasures/{id} and `sluice erase --status`). */
  waitingFor?: string;
}

const enc = new TextEncoder();

/** Writes `path` whole: tmp file, fsync, rename, fsync of the directory. */
export async function writeFileDurably(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await fsyncDir(join(path, '..'));
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class ErasureStore {
  private constructor(
    readonly dir: string,
    private readonly salt: Buffer,
  ) {}

  /** Opens (creating) `<dataDir>/erasure`, and its salt on first use. */
  static async open(dataDir: string): Promise<ErasureStore> {
    const dir = join(dataDir, 'erasure');
    await mkdir(join(dir, 'pending'), { recursive: true });
    await mkdir(join(dir, 'jobs'), { recursive: true });
    const saltPath = join(dir, 'salt');
    let salt: Buffer;
    try {
      salt = Buffer.from((await readFile(saltPath, 'utf8')).trim(), 'hex');
    } catch {
      const fresh = randomBytes(32).toString('hex');
      try {
        const fh = await open(saltPath, 'wx', 0o600);
        await fh.writeFile(`${fresh}\n`);
        await fh.sync();
        await fh.close();
        await fsyncDir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      salt = Buffer.from((await readFile(saltPath, 'utf8')).trim(), 'hex');
    }
    return new ErasureStore(dir, salt);
  }

  /** The salted hash of a user id (HMAC-SHA256 keyed by this data directory's salt, hex). */
  hash(userId: string): string {
    return createHmac('sha256', this.salt).update(userId, 'utf8').digest('hex');
  }

  /** Records a request durably (clear ids in the pending file, hashes in requests.jsonl); returns it. */
  async accept(users: string[], reason: string | null, shards: number[], marks: ErasureMarks, now = Date.now()): Promise<ErasureRequest> {
    if (users.length === 0) throw userError('invalid_request', 'an erasure request needs at least one user id');
    const id = `er-${now}-${randomBytes(4).toString('hex')}`;
    const request: ErasureRequest = { id, receivedAt: new Date(now).toISOString(), reason, userHashes: users.map((u) => this.hash(u)), shards, marks };
    await writeFileDurably(join(this.dir, 'pending', `${id}.json`), JSON.stringify({ id, users }));
    const fh = await open(join(this.dir, 'requests.jsonl'), 'a');
    try {
      await fh.write(enc.encode(`${JSON.stringify(request)}\n`));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await this.saveJob({ id, phase: 'accepted', updatedAt: request.receivedAt, layers: {} });
    return request;
  }

  /** Every accepted request, oldest first (a torn last line — a crash mid-append — is skipped). */
  async requests(): Promise<ErasureRequest[]> {
    let text: string;
    try {
      text = await readFile(join(this.dir, 'requests.jsonl'), 'utf8');
    } catch {
      return [];
    }
    const out: ErasureRequest[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      try {
        out.push(JSON.parse(line) as ErasureRequest);
      } catch {
        // torn tail
      }
    }
    return out;
  }

  /** The ids in clear of a request whose job has not completed; undefined once it has. */
  async pendingUsers(id: string): Promise<string[] | undefined> {
    try {
      return (JSON.parse(await readFile(join(this.dir, 'pending', `${id}.json`), 'utf8')) as { users: string[] }).users;
    } catch {
      return undefined;
    }
  }

  /** Deletes the ids in clear (the job is complete). */
  async forgetUsers(id: string): Promise<void> {
    await unlink(join(this.dir, 'pending', `${id}.json`)).catch(() => undefined);
    await fsyncDir(join(this.dir, 'pending'));
  }

  async job(id: string): Promise<ErasureJob | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir, 'jobs', `${id}.json`), 'utf8')) as ErasureJob;
    } catch {
      return undefined;
    }
  }

  async saveJob(job: ErasureJob): Promise<void> {
    await writeFileDurably(join(this.dir, 'jobs', `${job.id}.json`), JSON.stringify(job));
  }

  /** Requests whose job is not done. */
  async open(): Promise<Array<{ request: ErasureRequest; job: ErasureJob }>> {
    const out: Array<{ request: ErasureRequest; job: ErasureJob }> = [];
    for (const request of await this.requests()) {
      const job = (await this.job(request.id)) ?? { id: request.id, phase: 'accepted', updatedAt: request.receivedAt, layers: {} };
      if (job.phase !== 'done') out.push({ request, job });
    }
    return out;
  }

  /** Pending files no request names (a crash between the two writes of `accept`). */
  async orphans(): Promise<string[]> {
    const known = new Set((await this.requests()).map((r) => r.id));
    return (await readdir(join(this.dir, 'pending'))).filter((n) => n.endsWith('.json') && !known.has(n.slice(0, -5)));
  }
}
