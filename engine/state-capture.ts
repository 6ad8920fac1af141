/**
 * Records which LMDB keys a shard's operators write, so a checkpoint can ship exactly what
 * changed (engine/state-snapshot.ts) instead of the whole state.
 *
 * `StateCapture.attach(env)` patches the environment's `openDB`: every named database opened
 * through it afterwards journals its writes (put, remove, drop, clear) as (database name, raw
 * key bytes) — not the values. `collect` folds the journal into a changes blob by reading each
 * touched key's CURRENT raw value (or its absence) through a binary twin handle of the same
 * database. So a delta holds final values, not operations: applying it to any state between the
 * previous delta's and this one's gives this one's, and a key written many times between two
 * checkpoints is shipped once.
 *
 *   put/remove ──▶ journal [(db, rawKey)] ──collect (inside the checkpoint txn)──▶ ChangesWriter
 *   drop/clear ──▶ journal [(db, drop)]          reads the txn's own writes
 *
 * Raw key bytes are what lmdb-js writes: the key itself for `keyEncoding: 'binary'`, its
 * ordered-binary form (`keyValueToBuffer`) for the default key encoding. A twin has the same key
 * type as its database (lmdb-js gives ordered-binary keys their own LMDB comparator, so a lookup
 * under the other one misses keys) and takes raw key bytes either way: ordered-binary writes a
 * Buffer key as is. Other key encodings and
 * LMDB flags (dupSort, integerKey, …) are refused at `openDB`: their bytes would not round-trip.
 * The root (unnamed) database is not journalled: the shard keeps nothing in it.
 */
import * as lmdb from 'lmdb';
import type { Database, RootDatabase } from 'lmdb';
import { internalError } from '../common/errors.js';
import type { ChangesWriter } from './state-changes.js';

interface Touch {
  db: string;
  /** Raw key bytes; null: the database was dropped or cleared. */
  key: Buffer | null;
}

/** lmdb-js's own ordered-binary key encoder (exported at runtime, missing from its typings). */
const keyValueToBuffer = (lmdb as unknown as { keyValueToBuffer(key: unknown): Uint8Array }).keyValueToBuffer;

type OpenDb = (name: string | { name?: string } & Record<string, unknown>, options?: Record<string, unknown>) => Database;

/** dbOptions that change nothing about the bytes stored (encoding only changes how values are decoded: we read values raw). */
const HARMLESS_OPTIONS = new Set(['name', 'encoding', 'keyEncoding', 'cache', 'compression', 'create', 'useVersions', 'sharedStructuresKey']);

export class StateCapture {
  private readonly journal: Touch[] = [];
  private readonly twins = new Map<string, Database>();
  private readonly openRaw: OpenDb;
  private readonly excluded: Set<string>;
  /** Key type of each database opened through the environment (true: binary keys). */
  private readonly binaryKeys = new Map<string, boolean>();

  private constructor(
    readonly env: RootDatabase,
    excluded: Array<{ db: string; key: string }>,
    private readonly binaryKeyFallback: (db: string) => boolean,
  ) {
    this.openRaw = (env.openDB as OpenDb).bind(env);
    this.excluded = new Set(excluded.map((e) => touchId(e.db, Buffer.from(keyValueToBuffer(e.key)))));
  }

  /**
   * Starts journalling the writes of every database opened through `env.openDB` from now on
   * (databases opened earlier are not journalled). `excluded` keys (node-local bookkeeping,
   * e.g. the runtime's recorded pending commit) are never journalled. `binaryKeyFallback` says
   * whether a database not opened in this process has binary keys (a base lists every database).
   */
  static attach(env: RootDatabase, excluded: Array<{ db: string; key: string }> = [], binaryKeyFallback: (db: string) => boolean = () => false): StateCapture {
    const capture = new StateCapture(env, excluded, binaryKeyFallback);
    const openDB: OpenDb = (nameOrOptions, maybeOptions) => {
      const options = (typeof nameOrOptions === 'object' ? nameOrOptions : { ...maybeOptions, name: nameOrOptions }) as Record<string, unknown>;
      const db = capture.openRaw(nameOrOptions as never, maybeOptions);
      return capture.wrap(db, options);
    };
    (env as unknown as { openDB: OpenDb }).openDB = openDB;
    return capture;
  }

  /** Journal length now: `rollback(mark)` forgets what is journalled after it (an aborted transaction's writes). */
  mark(): number {
    return this.journal.length;
  }

  rollback(mark: number): void {
    this.journal.length = Math.min(this.journal.length, mark);
  }

  /** Journalled entries not yet collected. */
  get pending(): number {
    return this.journal.length;
  }

  /**
   * Writes the net effect of the journal into `out`: per database its drop (if any), then every
   * touched key's current raw value, or a remove when it is gone. Call it inside the write
   * transaction (its reads see that transaction's writes); `clear()` once it committed.
   */
  collect(out: ChangesWriter): void {
    const perDb = new Map<string, { dropped: boolean; keys: Map<string, Buffer> }>();
    for (const t of this.journal) {
      let e = perDb.get(t.db);
      if (!e) perDb.set(t.db, (e = { dropped: false, keys: new Map() }));
      if (t.key === null) {
        e.dropped = true;
        e.keys.clear();
      } else e.keys.set(t.key.toString('latin1'), t.key);
    }
    for (const [db, e] of perDb) {
      if (e.dropped) out.drop(db);
      if (e.keys.size === 0) continue;
      const twin = this.twin(db);
      for (const key of e.keys.values()) {
        const value = twin.getBinary(key);
        if (value === undefined) out.remove(db, key);
        else out.put(db, key, value);
      }
    }
  }

  /** Forgets the journal (its changes were collected and committed). */
  clear(): void {
    this.journal.length = 0;
  }

  /** Whether database `name` has binary keys (else ordered-binary). */
  isBinaryKey = (name: string): boolean => this.binaryKeys.get(name) ?? this.binaryKeyFallback(name);

  /**
   * A handle on database `name` with its key type that takes raw key bytes and returns raw
   * values. Keys it yields from ranges are raw for binary-key databases, decoded otherwise
   * (`rawKey` turns them back).
   */
  twin(name: string): Database {
    let db = this.twins.get(name);
    if (!db) {
      db = this.openRaw(this.isBinaryKey(name) ? { name, keyEncoding: 'binary', encoding: 'binary' } : { name, encoding: 'binary' });
      this.twins.set(name, db);
    }
    return db;
  }

  /** Raw bytes of a key of database `name` as a twin's range yields it. */
  rawKey(name: string, key: unknown): Buffer {
    return this.isBinaryKey(name) ? Buffer.from(key as Uint8Array) : Buffer.from(keyValueToBuffer(key));
  }

  /** Whether (db, raw key) is node-local bookkeeping that never leaves the node. */
  isExcluded(db: string, key: Uint8Array): boolean {
    return this.excluded.has(touchId(db, key));
  }

  private wrap(db: Database, options: Record<string, unknown>): Database {
    const name = options.name;
    if (typeof name !== 'string') throw internalError('state_capture_unsupported', 'the shard state capture journals named databases only');
    for (const k of Object.keys(options)) {
      if (!HARMLESS_OPTIONS.has(k) && options[k] !== undefined && options[k] !== false) {
        throw internalError('state_capture_unsupported', `database "${name}" opened with ${k}: the shard state capture cannot ship its raw bytes`);
      }
    }
    const keyEncoding = options.keyEncoding;
    if (keyEncoding !== undefined && keyEncoding !== 'binary' && keyEncoding !== 'ordered-binary') {
      throw internalError('state_capture_unsupported', `database "${name}" uses keyEncoding ${String(keyEncoding)}: the shard state capture supports binary and ordered-binary keys`);
    }
    this.binaryKeys.set(name, keyEncoding === 'binary');
    const rawKey = keyEncoding === 'binary' ? (k: unknown): Buffer => Buffer.from(k as Uint8Array) : (k: unknown): Buffer => Buffer.from(keyValueToBuffer(k));
    const touch = (key: unknown): void => {
      const raw = rawKey(key);
      if (this.excluded.size > 0 && this.excluded.has(touchId(name, raw))) return;
      this.journal.push({ db: name, key: raw });
    };
    const dropped = (): void => {
      this.journal.push({ db: name, key: null });
      // LMDB closes a dropped database's handle: the twin is reopened when next needed.
      this.twins.delete(name);
    };
    const patched = db as unknown as Record<string, (...args: unknown[]) => unknown>;
    for (const method of ['putSync', 'removeSync', 'put', 'remove'] as const) {
      const original = patched[method]!.bind(db);
      patched[method] = (key: unknown, ...rest: unknown[]) => {
        const result = original(key, ...rest);
        touch(key);
        return result;
      };
    }
    for (const method of ['dropSync', 'drop', 'clearSync', 'clearAsync'] as const) {
      const original = patched[method]!.bind(db);
      patched[method] = (...args: unknown[]) => {
        const result = original(...args);
        dropped();
        return result;
      };
    }
    for (const method of ['ifNoExists', 'ifVersion', 'putMany'] as const) {
      if (typeof patched[method] !== 'function') continue;
      patched[method] = () => {
        throw internalError('state_capture_unsupported', `${method} on database "${name}" is not journalled by the shard state capture`);
      };
    }
    return db;
  }
}

function touchId(db: string, key: Uint8Array): string {
  return `${db}\u0000${Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1')}`;
}
