/**
 * Up-front checks of the paths a user passes on the command line (`--lake`, `--data`, `--out`),
 * run before a command creates or opens anything, so a typo gets a one-line user error naming the
 * flag and the path instead of an errno with a stack — or, worse, a new empty directory.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { userError } from '../common/errors.js';
import { recordedShards } from '../engine/data-layout.js';

const S3_URL = /^s3:\/\/([^/]+)\/?(.*)$/;
const ANY_URL = /^[a-z][a-z0-9+.-]*:\/\//i;

/** The local directory a lake names, or undefined for an S3 lake; throws a user error for anything else (as storage/open-store.ts would, but before anything starts). */
export function localLakePath(lake: string, flag = '--lake'): string | undefined {
  if (lake.startsWith('s3://')) {
    const m = S3_URL.exec(lake);
    if (m === null || m[1] === '') throw userError('invalid_lake', `${flag} must look like s3://bucket/prefix, got "${lake}"`);
    return undefined;
  }
  if (lake.startsWith('file://')) return new URL(lake).pathname;
  if (ANY_URL.test(lake)) throw userError('invalid_lake', `${flag} must be a directory, a file:// URL or s3://bucket/prefix, got "${lake}"`);
  if (lake === '') throw userError('invalid_lake', `${flag} must name a directory or s3://bucket/prefix, got ""`);
  return lake;
}

/** What is at `path`: 'missing', 'dir' or 'other' (a file, a socket, …). */
function kindOf(path: string): 'missing' | 'dir' | 'other' {
  try {
    return statSync(path).isDirectory() ? 'dir' : 'other';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOTDIR: a parent is a file, which for our purposes means "not there".
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw userError('path_unreadable', `cannot read ${path}: ${(err as Error).message}`, err);
  }
}

/**
 * For commands that read an existing lake (compact, reconcile, erase): a local lake must exist
 * and be a directory; the message is the one `sluice query` and `sluice quality` give
 * (analytics/lake.ts). An S3 lake is only checked for its form.
 */
export function requireLake(lake: string, flag = '--lake'): void {
  const path = localLakePath(lake, flag);
  if (path === undefined) return;
  const kind = kindOf(path);
  if (kind === 'missing') throw userError('lake_not_found', `lake directory ${lake} does not exist; pass --lake DIR (the --lake of sluice serve) or s3://bucket/prefix`);
  if (kind === 'other') throw userError('lake_not_found', `${flag} ${lake} is not a directory; pass --lake DIR (the --lake of sluice serve) or s3://bucket/prefix`);
}

/** `--data` may be missing (serve creates it) but, if present, must be a directory. */
export function checkDataDir(data: string, flag = '--data'): void {
  if (data === '') throw userError('invalid_option', `${flag} must name a directory, got ""`);
  if (kindOf(data) === 'other') throw userError('invalid_option', `${flag} ${data} is not a directory; pass the data directory of sluice serve (or a new directory for a new server)`);
}

/**
 * For commands that work on an existing server's data (erase): `--data` must be a directory that
 * `sluice serve` has used (it records its shard count in layout.json, or has shard logs).
 */
export function requireDataDir(data: string, flag = '--data'): void {
  checkDataDir(data, flag);
  if (kindOf(data) === 'missing') throw userError('data_not_found', `data directory ${data} does not exist; pass ${flag} DIR (the --data of sluice serve)`);
  if (recordedShards(data) === undefined) {
    throw userError('data_not_found', `data directory ${data} holds no Sluice data (no layout.json, no log/); pass ${flag} DIR (the --data of sluice serve)`);
  }
}

/** `--out FILE`: its directory must exist, and FILE must not be a directory. */
export function checkOutFile(out: string, flag = '--out'): void {
  const dir = dirname(resolve(out));
  const dirKind = kindOf(dir);
  if (dirKind === 'missing') throw userError('invalid_option', `${flag} ${out}: directory ${dirname(out)} does not exist; create it first or write elsewhere`);
  if (dirKind === 'other') throw userError('invalid_option', `${flag} ${out}: ${dirname(out)} is not a directory`);
  if (existsSync(out) && kindOf(out) === 'dir') throw userError('invalid_option', `${flag} ${out} is a directory; name a file`);
}
