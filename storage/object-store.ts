/**
 * The object store contract, implemented by the local directory store (embedded default) and
 * the S3 store; both pass one conformance suite (test/storage/object-store.conformance.test.ts).
 *
 * Keys are '/'-separated, relative to the store's root (a directory or an s3://bucket/prefix).
 * Readers (DuckDB globbing `…/*.parquet`) must never see a partial object: `put` and `publish`
 * make an object visible whole or not at all, and staged objects live under `_sluice/staging/`,
 * which no table glob matches.
 */
export interface ObjectInfo {
  readonly key: string;
  readonly size: number;
  /** Last modification, epoch ms. */
  readonly mtimeMs: number;
}

/** A staged object: serializable as JSON so a checkpoint can record it. */
export interface StagedObject {
  /** Final key it will be published under. */
  readonly key: string;
  /** Where the bytes wait, invisible to readers. */
  readonly stagingKey: string;
  readonly size: number;
}

export interface ObjectStore {
  /** `file:///abs/dir` or `s3://bucket/prefix`, for messages and commit records. */
  readonly url: string;
  /** Writes `body` at `key`, atomically visible (overwrites). */
  put(key: string, body: Uint8Array): Promise<void>;
  /**
   * Writes `body` at `key` only if nothing is there; true when this call created it. Atomic on a
   * local directory (a hard link, which fails on an existing name) and on S3 servers with
   * conditional writes (`If-None-Match: *`: AWS S3, MinIO); on a server that ignores the condition
   * (s3rver) it is a look then a put, so two creates at the same instant can both succeed there.
   */
  create(key: string, body: Uint8Array): Promise<boolean>;
  /** The object's bytes, or undefined when it does not exist. */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Every object whose key starts with `prefix`, sorted by key. Excludes staged objects unless `prefix` is inside `_sluice/`. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Deletes `key`; deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** First phase: stores the bytes invisibly. Deterministic staging key for a given final key. */
  stage(key: string, body: Uint8Array): Promise<StagedObject>;
  /**
   * Second phase: makes a staged object visible under its final key. Idempotent: if the staged
   * bytes are gone and the final object exists, it is already published and this succeeds.
   */
  publish(staged: StagedObject): Promise<void>;
  /**
   * Deletes staged objects whose staging key is not in `keep` and that `filter` selects
   * (recovery: a shard discards only its own unrecorded temps). Returns how many.
   */
  discardStaged(keep: ReadonlySet<string>, filter?: (stagingKey: string) => boolean): Promise<number>;
  /** Absolute local path of `key` when the store is a local directory (DuckDB reads it in place). */
  localPath(key: string): string | undefined;
  close(): Promise<void>;
}
