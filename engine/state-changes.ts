/**
 * The binary form of a set of LMDB changes (a shard's state delta, or one part of a full base
 * snapshot): raw key and value bytes exactly as lmdb-js stored them, so applying them through
 * binary handles rebuilds byte-identical databases whatever encoding (msgpack, binary,
 * ordered-binary keys) the operators opened them with.
 *
 *   "SLS1" │ u8 kind (1 delta, 2 base part) │ u32 LE header bytes │ header JSON
 *   then records until the end:
 *     u8 op (1 put, 2 remove, 3 drop database) │ varint db (index into header.dbs)
 *     put:    varint key bytes │ key │ varint value bytes │ value
 *     remove: varint key bytes │ key
 *     drop:   nothing more (the named database is deleted, every key with it)
 *
 * Records apply in order; a delta lists, per database, its drop (if any) before its puts and
 * removes, so a database dropped and written again in one round ends with exactly the new keys.
 *
 * `header.binaryKeys` names the databases whose keys are binary (`keyEncoding: 'binary'`); the
 * others use lmdb-js's default ordered-binary keys. Whoever applies the records must open each
 * database with the same key type: lmdb-js gives the two different LMDB comparators, and a
 * B-tree written under one is not searchable under the other.
 */
import { internalError } from '../common/errors.js';

const MAGIC = 0x31534c53; // "SLS1" little endian

export type ChangesKind = 'delta' | 'base';

/** Metadata at the head of a changes blob (JSON). `dbs` names the databases records refer to. */
export interface ChangesHeader {
  kind: ChangesKind;
  shard: number;
  /** State sequence number: a delta takes the state from seq − 1 to seq; a base part holds the state at seq. */
  seq: number;
  /** Names of the databases the records refer to, by index. */
  dbs: string[];
  /** Those of `dbs` with binary keys (the rest: ordered-binary). */
  binaryKeys: string[];
  /** Delta: the commit record id it is published with (it is valid only once that record exists). */
  commitId?: string;
  /** Delta: the last log offset of its checkpoint. */
  lastOffset?: number;
  /**
   * Delta: true when its changes cover every write since the state at seq − 1 (false for the
   * first delta of an environment that had state before capture began: only a base after it
   * makes the chain restorable).
   */
  complete?: boolean;
  /** Base part: its index among the base's parts. */
  part?: number;
}

export type Change =
  | { op: 'put'; db: string; binaryKey: boolean; key: Uint8Array; value: Uint8Array }
  | { op: 'remove'; db: string; binaryKey: boolean; key: Uint8Array }
  | { op: 'drop'; db: string; binaryKey: boolean };

const OP = { put: 1, remove: 2, drop: 3 } as const;

/**
 * Builds one changes blob. Records are appended into a buffer that grows by doubling; `finish`
 * returns the blob (header first) and the writer must not be used afterwards.
 */
export class ChangesWriter {
  private buf: Uint8Array;
  private at = 0;
  private readonly dbIndex = new Map<string, number>();
  private readonly dbs: string[] = [];
  records = 0;

  /** `binaryKey(db)`: whether database `db` has binary keys (recorded in the header). */
  constructor(
    private readonly binaryKey: (db: string) => boolean,
    initialBytes = 64 * 1024,
  ) {
    this.buf = new Uint8Array(Math.max(64, initialBytes));
  }

  /** Bytes of the records so far (the header adds a few dozen more). */
  get bytes(): number {
    return this.at;
  }

  put(db: string, key: Uint8Array, value: Uint8Array): void {
    this.head(OP.put, db);
    this.bytesField(key);
    this.bytesField(value);
  }

  remove(db: string, key: Uint8Array): void {
    this.head(OP.remove, db);
    this.bytesField(key);
  }

  drop(db: string): void {
    this.head(OP.drop, db);
  }

  finish(header: Omit<ChangesHeader, 'dbs' | 'binaryKeys'>): Uint8Array {
    const json = new TextEncoder().encode(JSON.stringify({ ...header, dbs: this.dbs, binaryKeys: this.dbs.filter((d) => this.binaryKey(d)) }));
    const out = new Uint8Array(9 + json.length + this.at);
    const view = new DataView(out.buffer);
    view.setUint32(0, MAGIC, true);
    out[4] = header.kind === 'delta' ? 1 : 2;
    view.setUint32(5, json.length, true);
    out.set(json, 9);
    out.set(this.buf.subarray(0, this.at), 9 + json.length);
    return out;
  }

  private head(op: number, db: string): void {
    let index = this.dbIndex.get(db);
    if (index === undefined) {
      index = this.dbs.length;
      this.dbs.push(db);
      this.dbIndex.set(db, index);
    }
    this.reserve(1 + 5);
    this.buf[this.at++] = op;
    this.varint(index);
    this.records++;
  }

  private bytesField(b: Uint8Array): void {
    this.reserve(5 + b.length);
    this.varint(b.length);
    this.buf.set(b, this.at);
    this.at += b.length;
  }

  private varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.at++] = (n & 0x7f) | 0x80;
      n >>>= 7;
    }
    this.buf[this.at++] = n;
  }

  private reserve(n: number): void {
    if (this.at + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.at + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.at));
    this.buf = next;
  }
}

/** The header of a changes blob (cheap: does not walk the records). */
export function readChangesHeader(blob: Uint8Array): ChangesHeader {
  if (blob.length < 9) throw internalError('state_changes_corrupt', `state changes blob of ${blob.length} bytes is too short`);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw internalError('state_changes_corrupt', 'state changes blob does not start with SLS1');
  const length = view.getUint32(5, true);
  if (9 + length > blob.length) throw internalError('state_changes_corrupt', 'state changes header runs past the blob');
  return JSON.parse(new TextDecoder().decode(blob.subarray(9, 9 + length))) as ChangesHeader;
}

/**
 * The records of a changes blob, in order. Keys and values are views into `blob` (valid as long
 * as it is; copy to keep them).
 */
export function* readChanges(blob: Uint8Array): Generator<Change> {
  const header = readChangesHeader(blob);
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  let at = 9 + view.getUint32(5, true);
  const varint = (): number => {
    let n = 0;
    let shift = 0;
    for (;;) {
      if (at >= blob.length) throw internalError('state_changes_corrupt', 'state changes record runs past the blob');
      const b = blob[at++]!;
      n += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return n;
      shift += 7;
    }
  };
  const bytes = (): Uint8Array => {
    const n = varint();
    if (at + n > blob.length) throw internalError('state_changes_corrupt', 'state changes record runs past the blob');
    const out = blob.subarray(at, at + n);
    at += n;
    return out;
  };
  const binary = new Set(header.binaryKeys);
  while (at < blob.length) {
    const op = blob[at++]!;
    const db = header.dbs[varint()];
    if (db === undefined) throw internalError('state_changes_corrupt', 'state changes record names an unknown database');
    const binaryKey = binary.has(db);
    if (op === OP.put) {
      const key = bytes();
      yield { op: 'put', db, binaryKey, key, value: bytes() };
    } else if (op === OP.remove) yield { op: 'remove', db, binaryKey, key: bytes() };
    else if (op === OP.drop) yield { op: 'drop', db, binaryKey };
    else throw internalError('state_changes_corrupt', `state changes record has unknown op ${op}`);
  }
}
