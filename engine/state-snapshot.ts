/**
 * A shard's LMDB state in the object store, so another node can take the shard over (issue 10,
 * failover): every checkpoint ships a delta of what it changed, atomically with its commit, and
 * now and then a full base; a node restores `<data>/shards/<n>/state.mdb` from the latest base
 * plus the deltas after it, and `ShardRuntime.open` then finds exactly the committed state.
 *
 * Layout, next to the commit records:
 *
 *   _sluice/state/s{n}/d-{seq:12}-{commitId}.bin   delta seq: the state from seq−1 to seq (state-changes.ts)
 *   _sluice/state/s{n}/b-{seq:12}/p-{i:6}.bin      a base: the whole state at seq, in parts of ≤ basePartBytes
 *   _sluice/state/s{n}/b-{seq:12}.json             its manifest, written last (a base without one does not exist)
 *
 * Atomic with the commit (a published commit always has its delta, an unpublished one none):
 *
 *   stage files ─▶ ONE LMDB txn: operator state, offset, pending commit, seq+1, and the delta
 *                  (every key journalled since the last checkpoint, its value read in this txn)
 *   publish: stage the recorded delta, publish files + delta, then the commit record
 *   crash before the txn: nothing recorded, no delta staged. Crash after it: recovery stages the
 *   delta from LMDB and publishes it with the files. A delta counts only once its commit record
 *   (written after every file is visible) exists, so a publish cut halfway leaves a delta no
 *   restore uses; the next owner discards its staged copy and replaces it.
 *
 * A base is written after a checkpoint's publish when the deltas since the last base are
 * `baseEveryDeltas` many or outweigh the base; the deltas it covers and older bases are then
 * deleted. Memory while writing or restoring a base is one part; a delta is one checkpoint's
 * changes (the keys it touched).
 *
 * Keys in the runtime's `checkpoint` database that are node-local never ship: `pending` (the
 * recorded commit: its staged files are this node's) and `state-delta` (the delta waiting for
 * its publish). `state-seq` ships: it is how a node tells whether its local env is behind the lake.
 */
import { existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb';
import { META_PREFIX } from '../common/lake-layout.js';
import { externalError, internalError, userError } from '../common/errors.js';
import { COMMITS_PREFIX } from '../storage/commit-record.js';
import type { ObjectStore } from '../storage/object-store.js';
import type { PendingCommit, TwoPhaseCommitter } from '../storage/two-phase.js';
import { ChangesWriter, readChanges, readChangesHeader } from './state-changes.js';
import { StateCapture } from './state-capture.js';

export const STATE_PREFIX = `${META_PREFIX}/state`;
/** The runtime's checkpoint database and the keys this module keeps in it. */
const META_DB = 'checkpoint';
const SEQ_KEY = 'state-seq';
const DELTA_KEY = 'state-delta';
const NODE_LOCAL = [
  { db: META_DB, key: 'pending' },
  { db: META_DB, key: DELTA_KEY },
];
/**
 * Key type of a database the base lists but this process never opened: the dedup operator's hour
 * buckets have binary keys (operators/dedup-operator.ts `bucketDb`); every other shard database
 * uses the default ordered-binary keys.
 */
const isDedupBucket = (db: string): boolean => /^dedup-\d+$/.test(db);
/** How the runtime opens a shard's environment (restore must open it the same way). */
const LMDB_OPTIONS = { maxDbs: 4096, compression: false } as const;

/** Tuning of base snapshots. */
export interface StateSnapshotOptions {
  /** Write a base after this many deltas since the last one. Default 64. */
  baseEveryDeltas?: number;
  /** …or once the deltas since the last base outweigh it (and at least this many bytes). Default 1 MiB. */
  baseMinBytes?: number;
  /** Most record bytes per base part (one object; the memory a base write or restore holds). Default 8 MiB. */
  basePartBytes?: number;
}

const DEFAULTS: Required<StateSnapshotOptions> = { baseEveryDeltas: 64, baseMinBytes: 1 << 20, basePartBytes: 8 << 20 };

export function validateStateSnapshotOptions(o: StateSnapshotOptions = {}): Required<StateSnapshotOptions> {
  const v = { ...DEFAULTS, ...Object.fromEntries(Object.entries(o).filter(([, x]) => x !== undefined)) } as Required<StateSnapshotOptions>;
  if (!(Number.isInteger(v.baseEveryDeltas) && v.baseEveryDeltas >= 1)) throw userError('invalid_option', `stateSnapshot.baseEveryDeltas must be a positive integer, got ${v.baseEveryDeltas}`);
  if (!(Number.isFinite(v.baseMinBytes) && v.baseMinBytes >= 0)) throw userError('invalid_option', `stateSnapshot.baseMinBytes must be ≥ 0, got ${v.baseMinBytes}`);
  if (!(Number.isFinite(v.basePartBytes) && v.basePartBytes >= 1024)) throw userError('invalid_option', `stateSnapshot.basePartBytes must be at least 1 KiB, got ${v.basePartBytes}`);
  return v;
}

const pad = (n: number, width = 12): string => String(n).padStart(width, '0');
const shardPrefix = (shard: number): string => `${STATE_PREFIX}/s${shard}/`;
export const deltaKey = (shard: number, seq: number, commitId: string): string => `${shardPrefix(shard)}d-${pad(seq)}-${commitId}.bin`;
/** Where a shard's publish in progress keeps its PendingCommit (storage/two-phase.ts `intentKey`). */
export const publishIntentKey = (shard: number): string => `${META_PREFIX}/intents/s${shard}.json`;
/** The state seq of the delta a shard's commit carries (undefined: none). */
function deltaSeqOf(pending: PendingCommit, shard: number): number | undefined {
  const prefix = `${shardPrefix(shard)}d-`;
  const key = pending.staged.find((s) => s.key.startsWith(prefix))?.key;
  return key === undefined ? undefined : Number(key.slice(prefix.length, prefix.length + 12));
}
const baseManifestKey = (shard: number, seq: number): string => `${shardPrefix(shard)}b-${pad(seq)}.json`;
const basePartKey = (shard: number, seq: number, part: number): string => `${shardPrefix(shard)}b-${pad(seq)}/p-${pad(part, 6)}.bin`;

/** A base's manifest (JSON). */
interface BaseManifest {
  shard: number;
  seq: number;
  parts: number;
  /** Total bytes of the parts. */
  bytes: number;
  records: number;
  time: string;
}

/** What the object store holds for a shard, as `readStateHead` finds it. */
export interface StateHead {
  shard: number;
  /** The latest restorable state sequence number (0: nothing to restore). */
  seq: number;
  /** The latest base (undefined: the chain starts from an empty environment). */
  base?: { seq: number; parts: number; bytes: number };
  /** The deltas after the base, in order, each with a commit record. */
  deltas: Array<{ seq: number; key: string; commitId: string; bytes: number }>;
}

/** What `restoreShardState` did. */
export interface RestoreResult {
  shard: number;
  seq: number;
  baseSeq: number;
  deltas: number;
  /** Bytes downloaded (base parts + deltas). */
  bytes: number;
  /** LMDB records applied. */
  records: number;
  /** Last log offset of the restored state's checkpoint (−1: none). */
  checkpointOffset: number;
}

/**
 * The latest restorable state of `shard` in `store`: the newest base, and the chain of deltas
 * after it whose commit records exist. Throws (external, no retry) when a valid delta lies
 * beyond a gap in the chain: restoring the part before the gap would resume from an older
 * checkpoint than one already published.
 */
export async function readStateHead(store: ObjectStore, shard: number): Promise<StateHead> {
  const prefix = shardPrefix(shard);
  const listed = await store.list(prefix);
  const committed = new Set(
    (await store.list(`${COMMITS_PREFIX}s${shard}-`))
      .filter((o) => o.key.endsWith('.json'))
      .map((o) => o.key.slice(COMMITS_PREFIX.length, -'.json'.length))
      .filter((id) => id.startsWith(`s${shard}-`)),
  );
  let base: StateHead['base'];
  const bySeq = new Map<number, StateHead['deltas']>();
  for (const o of listed) {
    const name = o.key.slice(prefix.length);
    const b = /^b-(\d{12})\.json$/.exec(name);
    if (b) {
      const seq = Number(b[1]);
      if (!base || seq > base.seq) base = { seq, parts: 0, bytes: 0 };
      continue;
    }
    const d = /^d-(\d{12})-(.+)\.bin$/.exec(name);
    if (d && committed.has(d[2]!)) {
      const seq = Number(d[1]);
      const list = bySeq.get(seq) ?? [];
      list.push({ seq, key: o.key, commitId: d[2]!, bytes: o.size });
      bySeq.set(seq, list);
    }
  }
  if (base) {
    const bytes = await store.get(baseManifestKey(shard, base.seq));
    if (bytes === undefined) throw externalError('state_base_missing', `base manifest ${baseManifestKey(shard, base.seq)} vanished while reading it`);
    const m = JSON.parse(new TextDecoder().decode(bytes)) as BaseManifest;
    base = { seq: m.seq, parts: m.parts, bytes: m.bytes };
  }
  const deltas: StateHead['deltas'] = [];
  let seq = base?.seq ?? 0;
  for (;;) {
    const next = bySeq.get(seq + 1);
    if (!next) break;
    if (next.length > 1) {
      throw internalError('state_delta_conflict', `shard ${shard} has two committed state deltas for seq ${seq + 1} (${next.map((d) => d.commitId).join(', ')}): two owners committed the same checkpoint`);
    }
    deltas.push(next[0]!);
    seq++;
  }
  const beyond = [...bySeq.keys()].filter((s) => s > seq);
  if (beyond.length > 0) {
    throw externalError(
      'state_chain_broken',
      `shard ${shard}'s state in the object store has committed deltas up to seq ${Math.max(...beyond)} but none for seq ${seq + 1}: it cannot be restored past seq ${seq}; restore the missing delta under ${prefix} or replay the shard into a fresh lake`,
      undefined,
      'none',
    );
  }
  return { shard, seq, base, deltas };
}

/**
 * Rebuilds `<shardDir>/state.mdb` from the object store: the latest base, then every delta
 * after it, in order. The environment is built beside it and renamed into place only when
 * complete, so a failed restore leaves whatever was there. Memory: one base part or delta at a
 * time. Returns seq 0 (and touches nothing) when the store holds no state for the shard.
 *
 * The caller must not have the shard's environment open (ShardRuntime.open calls this first).
 */
export async function restoreShardState(store: ObjectStore, shard: number, shardDir: string, head?: StateHead): Promise<RestoreResult> {
  const h = head ?? (await readStateHead(store, shard));
  const result: RestoreResult = { shard, seq: h.seq, baseSeq: h.base?.seq ?? 0, deltas: h.deltas.length, bytes: 0, records: 0, checkpointOffset: -1 };
  if (h.seq === 0) return result;
  const target = join(shardDir, 'state.mdb');
  const building = join(shardDir, 'state.mdb.restoring');
  await removeEnvFiles(building);
  const env = openLmdb({ path: building, ...LMDB_OPTIONS });
  const handles = new Map<string, Database>();
  try {
    const apply = (blob: Uint8Array): void => {
      result.bytes += blob.byteLength;
      env.transactionSync(() => {
        for (const c of readChanges(blob)) {
          result.records++;
          let db = handles.get(c.db);
          if (!db) handles.set(c.db, (db = env.openDB(c.binaryKey ? { name: c.db, keyEncoding: 'binary', encoding: 'binary' } : { name: c.db, encoding: 'binary' })));
          if (c.op === 'put') db.putSync(c.key, c.value);
          else if (c.op === 'remove') db.removeSync(c.key);
          else {
            db.dropSync();
            handles.delete(c.db);
          }
        }
      });
    };
    const fetch = async (key: string): Promise<Uint8Array> => {
      const blob = await store.get(key);
      if (blob === undefined) throw externalError('state_object_missing', `shard ${shard}'s state object ${key} is gone (deleted while restoring?); retry the restore`);
      return blob;
    };
    if (h.base) for (let p = 0; p < h.base.parts; p++) apply(await fetch(basePartKey(shard, h.base.seq, p)));
    for (const d of h.deltas) {
      const blob = await fetch(d.key);
      const header = readChangesHeader(blob);
      if (header.seq !== d.seq || header.commitId !== d.commitId) throw internalError('state_changes_corrupt', `state delta ${d.key} says seq ${header.seq} of commit ${header.commitId}`);
      if (header.complete === false) {
        throw externalError('state_chain_incomplete', `shard ${shard}'s state delta ${d.key} does not cover the state before it (capture began on an existing environment) and no base follows it yet; wait for the owner's next checkpoint`, undefined, 'backoff');
      }
      apply(blob);
    }
    const meta = env.openDB({ name: META_DB, encoding: 'msgpack' });
    result.checkpointOffset = (meta.get('offset') as number | undefined) ?? -1;
    const seq = (meta.get(SEQ_KEY) as number | undefined) ?? 0;
    if (seq !== h.seq) throw internalError('state_changes_corrupt', `shard ${shard}'s restored state says seq ${seq}, its chain ends at ${h.seq}`);
  } catch (err) {
    await env.close();
    await removeEnvFiles(building);
    throw err;
  }
  await env.close();
  await removeEnvFiles(target);
  await rename(building, target);
  await rm(`${building}-lock`, { force: true });
  return result;
}

async function removeEnvFiles(path: string): Promise<void> {
  await rm(path, { force: true, recursive: true });
  await rm(`${path}-lock`, { force: true });
}

/** The local environment's state seq, whether it has any state, and whether a commit is pending; undefined when there is no environment. */
async function readLocalState(path: string): Promise<{ seq: number; hasState: boolean; pending: boolean } | undefined> {
  if (!existsSync(path)) return undefined;
  const env = openLmdb({ path, ...LMDB_OPTIONS });
  try {
    const meta = env.openDB({ name: META_DB, encoding: 'msgpack' });
    return { seq: (meta.get(SEQ_KEY) as number | undefined) ?? 0, hasState: meta.get('offset') !== undefined, pending: (meta.get('pending') ?? null) !== null };
  } finally {
    await env.close();
  }
}

/** The delta recorded in the checkpoint transaction, waiting for its commit's publish. */
interface RecordedDelta {
  commitId: string;
  seq: number;
  key: string;
  bytes: Uint8Array;
}

/** Counters of one shard's state shipping (telemetry and the report's measurements). */
export interface StateSyncStats {
  /** The local state's seq (the last checkpoint's). */
  seq: number;
  deltas: number;
  deltaBytes: number;
  lastDeltaBytes: number;
  bases: number;
  lastBaseBytes: number;
  baseFailures: number;
  lastBaseError?: string;
  restored?: RestoreResult;
}

interface SyncInit {
  complete: boolean;
  needBase: boolean;
  head: StateHead;
  restored?: RestoreResult;
  seq: number;
  rolledForward: number;
}

/**
 * One shard's state shipping, used by ShardRuntime when `stateInObjectStore` is on:
 *
 *   const sync = await ShardStateSync.prepare({ shard, shardDir, store });  // restores when behind
 *   const env = sync.attach(openLmdb(…));                                   // journal writes
 *   checkpoint: sync.checkpointTransaction(commitId, last, write)           // txn + delta
 *               publish(await sync.complete(pending)); …; await sync.published(pending)
 *
 * Not thread-safe; one per shard runtime.
 */
export class ShardStateSync {
  readonly shard: number;
  private readonly store: ObjectStore;
  private readonly options: Required<StateSnapshotOptions>;
  private capture: StateCapture | undefined;
  private env: RootDatabase | undefined;
  private meta: Database | undefined;
  /** False until a base follows, when capture began on an environment with state but no seq. */
  private covering: boolean;
  private needBase: boolean;
  private deltasSinceBase: number;
  private deltaBytesSinceBase: number;
  private baseBytes: number;
  private readonly counters: StateSyncStats;
  /** Files of a previous owner's half-published commit that `prepare` published. */
  readonly rolledForward: number;

  private constructor(shard: number, store: ObjectStore, options: Required<StateSnapshotOptions>, init: SyncInit) {
    this.shard = shard;
    this.rolledForward = init.rolledForward;
    this.store = store;
    this.options = options;
    this.covering = init.complete;
    this.needBase = init.needBase;
    this.deltasSinceBase = init.head.deltas.length;
    this.deltaBytesSinceBase = init.head.deltas.reduce((n, d) => n + d.bytes, 0);
    this.baseBytes = init.head.base?.bytes ?? 0;
    this.counters = { seq: init.seq, deltas: 0, deltaBytes: 0, lastDeltaBytes: 0, bases: 0, lastBaseBytes: 0, baseFailures: 0, restored: init.restored };
  }

  /**
   * Before the shard's environment is opened: restores `<shardDir>/state.mdb` from the object
   * store when it is missing or behind it (its seq lower than the store's latest), and decides
   * whether a base must be written soon (the local env is ahead of the store's chain, e.g. the
   * option was just switched on).
   */
  static async prepare(args: { shard: number; shardDir: string; store: ObjectStore; committer?: TwoPhaseCommitter; options?: StateSnapshotOptions }): Promise<ShardStateSync> {
    const { shard, shardDir, store } = args;
    const options = validateStateSnapshotOptions(args.options);
    // A publish the previous owner began (its intent, storage/two-phase.ts) is finished first, so
    // the head below includes it — unless a newer commit of the same state seq superseded it.
    const rolledForward = (await args.committer?.finishIntent(async (p) => deltaSeqOf(p, shard) === (await readStateHead(store, shard)).seq + 1)) ?? 0;
    const head = await readStateHead(store, shard);
    const local = await readLocalState(join(shardDir, 'state.mdb'));
    const sync = (init: Omit<SyncInit, 'rolledForward'>): ShardStateSync => new ShardStateSync(shard, store, options, { ...init, rolledForward });
    if (head.seq > 0 && (local === undefined || local.seq < head.seq)) {
      const restored = await restoreShardState(store, shard, shardDir, head);
      return sync({ complete: true, needBase: false, head, restored, seq: restored.seq });
    }
    if (local === undefined) return sync({ complete: true, needBase: false, head, seq: 0 });
    const ahead = local.seq - head.seq;
    const untracked = local.seq === 0 && local.hasState;
    // One ahead with a recorded commit: recovery publishes that commit and its delta, and the store catches up.
    const needBase = untracked || ahead > 1 || (ahead === 1 && !local.pending);
    return sync({ complete: !untracked, needBase, head, seq: local.seq });
  }

  /** Journals every write to databases opened through `env` from now on; returns `env`. */
  attach(env: RootDatabase): RootDatabase {
    this.env = env;
    this.capture = StateCapture.attach(env, NODE_LOCAL, isDedupBucket);
    this.meta = env.openDB({ name: META_DB, encoding: 'msgpack' });
    return env;
  }

  /** Staged objects of this shard's state (a recovering owner discards those no recorded commit names). */
  owns(stagingKey: string): boolean {
    return stagingKey.includes(shardPrefix(this.shard));
  }

  /**
   * The checkpoint transaction: runs `write` (operator state, offset, pending commit) and, in
   * the same transaction, bumps the state seq and records the delta of everything journalled
   * since the last checkpoint, to be published with commit `commitId`. On failure nothing is
   * recorded and the journal keeps its entries for the retry.
   */
  checkpointTransaction(commitId: string, lastOffset: number, write: () => void): void {
    const { env, meta, capture } = this.attached();
    const mark = capture.mark();
    let recorded: RecordedDelta | undefined;
    try {
      env.transactionSync(() => {
        write();
        const seq = ((meta.get(SEQ_KEY) as number | undefined) ?? 0) + 1;
        meta.putSync(SEQ_KEY, seq);
        const out = new ChangesWriter(capture.isBinaryKey);
        capture.collect(out);
        const bytes = out.finish({ kind: 'delta', shard: this.shard, seq, commitId, lastOffset, complete: this.covering });
        recorded = { commitId, seq, key: deltaKey(this.shard, seq, commitId), bytes };
        meta.putSync(DELTA_KEY, recorded);
      });
    } catch (err) {
      capture.rollback(mark);
      throw err;
    }
    capture.clear();
    this.covering = true;
    this.counters.seq = recorded!.seq;
  }

  /**
   * `pending` with its recorded delta staged and added (idempotent: call before every publish
   * attempt, recovery's included). Unchanged when no delta is recorded for it.
   */
  async complete(pending: PendingCommit): Promise<PendingCommit> {
    const d = this.recorded(pending);
    if (!d || pending.staged.some((s) => s.key === d.key)) return pending;
    const staged = await this.store.stage(d.key, d.bytes);
    return {
      staged: [...pending.staged, staged],
      record: { ...pending.record, added: [...pending.record.added, { key: d.key, rows: 0, bytes: d.bytes.byteLength }] },
    };
  }

  /**
   * After `pending` is published and cleared: forgets its recorded delta, and writes a base
   * when one is due. A failed base is counted and retried after the next checkpoint; it never
   * fails the checkpoint (its commit and delta are already durable).
   */
  async published(pending: PendingCommit): Promise<void> {
    const { env, meta } = this.attached();
    const d = this.recorded(pending);
    if (d) {
      env.transactionSync(() => meta.removeSync(DELTA_KEY));
      this.deltasSinceBase++;
      this.deltaBytesSinceBase += d.bytes.byteLength;
      this.counters.deltas++;
      this.counters.deltaBytes += d.bytes.byteLength;
      this.counters.lastDeltaBytes = d.bytes.byteLength;
    }
    const due = this.needBase || this.deltasSinceBase >= this.options.baseEveryDeltas || this.deltaBytesSinceBase > Math.max(this.baseBytes, this.options.baseMinBytes);
    // Writes since the checkpoint (dedup merges in afterCheckpoint) may be in the base: harmless, as
    // they are journalled and the next delta ships their final values over it.
    if (!due) return;
    try {
      await this.writeBase();
    } catch (err) {
      this.counters.baseFailures++;
      this.counters.lastBaseError = (err as Error)?.message ?? String(err);
    }
  }

  /**
   * Erasure: the next checkpoint's publish writes a base and deletes every older delta and base,
   * so no state object in the lake keeps what was purged from LMDB since.
   */
  requestBase(): void {
    this.needBase = true;
  }

  get stats(): StateSyncStats {
    return { ...this.counters };
  }

  /**
   * Writes the whole state at the current seq as a base (parts, then the manifest), then deletes
   * the deltas it covers and older bases. Reads one LMDB snapshot throughout.
   */
  async writeBase(): Promise<BaseManifest> {
    const { env, meta, capture } = this.attached();
    const seq = (meta.get(SEQ_KEY) as number | undefined) ?? 0;
    const txn = env.useReadTransaction();
    let manifest: BaseManifest;
    try {
      const names = ([...env.getKeys({ transaction: txn } as never)] as unknown[]).filter((k): k is string => typeof k === 'string').sort();
      const handles = names.map((n) => capture.twin(n));
      let part = 0;
      let bytes = 0;
      let records = 0;
      let at = { db: 0, after: undefined as Buffer | undefined };
      while (at.db < names.length || part === 0) {
        const out = new ChangesWriter(capture.isBinaryKey, Math.min(this.options.basePartBytes, 1 << 20));
        at = fillPart(out, names, handles, at, txn, this.options.basePartBytes, capture);
        const blob = out.finish({ kind: 'base', shard: this.shard, seq, part });
        await this.store.put(basePartKey(this.shard, seq, part), blob);
        bytes += blob.byteLength;
        records += out.records;
        part++;
      }
      manifest = { shard: this.shard, seq, parts: part, bytes, records, time: new Date().toISOString() };
      await this.store.put(baseManifestKey(this.shard, seq), new TextEncoder().encode(`${JSON.stringify(manifest)}\n`));
    } finally {
      txn.done();
    }
    this.needBase = false;
    this.deltasSinceBase = 0;
    this.deltaBytesSinceBase = 0;
    this.baseBytes = manifest.bytes;
    this.counters.bases++;
    this.counters.lastBaseBytes = manifest.bytes;
    await this.deleteBefore(seq);
    return manifest;
  }

  /** Deletes deltas up to `seq` and bases older than it (the base at `seq` covers them). */
  private async deleteBefore(seq: number): Promise<void> {
    const prefix = shardPrefix(this.shard);
    for (const o of await this.store.list(prefix)) {
      const m = /^(?:d-|b-)(\d{12})/.exec(o.key.slice(prefix.length));
      if (!m) continue;
      const s = Number(m[1]);
      const isDelta = o.key.slice(prefix.length).startsWith('d-');
      if (isDelta ? s <= seq : s < seq) await this.store.delete(o.key);
    }
  }

  private recorded(pending: PendingCommit): RecordedDelta | undefined {
    const d = this.attached().meta.get(DELTA_KEY) as RecordedDelta | null | undefined;
    return d && d.commitId === pending.record.id ? { ...d, bytes: d.bytes instanceof Uint8Array ? d.bytes : new Uint8Array(d.bytes) } : undefined;
  }

  private attached(): { env: RootDatabase; meta: Database; capture: StateCapture } {
    if (!this.env || !this.meta || !this.capture) throw internalError('state_sync_detached', 'ShardStateSync used before attach()');
    return { env: this.env, meta: this.meta, capture: this.capture };
  }
}

/**
 * Appends records to `out` from position `at` (database index, last key written) until the part
 * is full or every database is done; returns the position to continue from. Synchronous, so no
 * range iterator lives across an await; each call resumes by key within the same snapshot.
 */
function fillPart(
  out: ChangesWriter,
  names: string[],
  handles: Database[],
  at: { db: number; after: Buffer | undefined },
  txn: unknown,
  partBytes: number,
  capture: StateCapture,
): { db: number; after: Buffer | undefined } {
  let { db, after } = at;
  while (db < names.length) {
    const name = names[db]!;
    for (const { key, value } of handles[db]!.getRange({ start: after, transaction: txn } as never)) {
      const k = capture.rawKey(name, key);
      if (after !== undefined && Buffer.compare(k, after) === 0) continue;
      if (capture.isExcluded(name, k)) continue;
      out.put(name, k, value as Buffer);
      after = k;
      if (out.bytes >= partBytes) return { db, after };
    }
    db++;
    after = undefined;
  }
  return { db, after };
}
