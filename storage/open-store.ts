/**
 * Opens the object store a lake URL names: a path or `file://…` → local directory;
 * `s3://bucket/prefix` → S3 (or an S3-compatible store at `s3Endpoint`, path-style).
 */
import { userError } from '../common/errors.js';
import { LocalObjectStore } from './local-store.js';
import type { ObjectStore } from './object-store.js';
import type { S3StoreOptions } from './s3-store.js';

export interface OpenStoreOptions {
  /** Endpoint of an S3-compatible store, e.g. http://127.0.0.1:4568; path-style addressing is used when set. */
  s3Endpoint?: string;
  /** AWS region. Default: AWS_REGION from the standard chain, else us-east-1. */
  region?: string;
  /** Further S3 tuning (multipart threshold and part size, retries); see S3StoreOptions. */
  s3?: Omit<S3StoreOptions, 'bucket' | 'prefix' | 'endpoint' | 'region'>;
}

export async function openObjectStore(url: string, options: OpenStoreOptions = {}): Promise<ObjectStore> {
  if (url.startsWith('s3://')) {
    const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(url);
    if (!m || m[1] === '') throw userError('invalid_lake', `lake URL must look like s3://bucket/prefix, got ${url}`);
    const { S3ObjectStore } = await import('./s3-store.js');
    return new S3ObjectStore({ ...options.s3, bucket: m[1]!, prefix: m[2]!.replace(/\/+$/, ''), endpoint: options.s3Endpoint, region: options.region });
  }
  if (url.startsWith('file://')) return new LocalObjectStore(new URL(url).pathname);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) throw userError('invalid_lake', `lake must be a directory, file:// or s3:// URL, got ${url}`);
  return new LocalObjectStore(url);
}
