/**
 * ObjectStore on S3 or an S3-compatible server (@aws-sdk/client-s3).
 *
 * - Credentials and region from the standard AWS chain; a custom endpoint switches to
 *   path-style addressing (MinIO, s3rver, …).
 * - Retries with exponential backoff on 5xx and throttling: the SDK's standard retry strategy
 *   per request (`maxAttempts` 3), and our own around a whole publish (copy + delete, 3 attempts).
 *   Short on purpose: they ride out a blip of a second or two; a longer outage fails the
 *   checkpoint, which the engine retries with its own backoff (nothing is lost: the events wait in
 *   the log) and reports in /readyz and /metrics. With 6 SDK attempts × 5 publish attempts, a
 *   checkpoint caught by S3 throttling kept retrying for 30–80 s before anyone could see it.
 * - Bodies above `multipartThreshold` (16 MiB) go up as multipart uploads (@aws-sdk/lib-storage,
 *   16 MiB parts, 4 in flight); smaller ones as one PutObject (atomic: visible whole or not at all).
 * - Checksums only when required: some S3-compatible servers (s3rver) store aws-chunked framing otherwise.
 * - stage = put under `<prefix>/_sluice/staging/<key>`; publish = CopyObject to the final key,
 *   then delete the staged copy (idempotent: staged copy gone + final present = done). CopyObject
 *   is limited to 5 GiB per object, far above Sluice's file sizes.
 * - Conditional writes (`If-None-Match: *`) are not relied on (s3rver ignores them): final keys
 *   are deterministic, so an overwrite writes the same bytes.
 */
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { externalError, userError } from '../common/errors.js';
import { STAGING_PREFIX } from './local-store.js';
import type { ObjectInfo, ObjectStore, StagedObject } from './object-store.js';

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ('' for the bucket root), without trailing slash. */
  prefix: string;
  endpoint?: string;
  region?: string;
  /** Bytes above which puts use multipart upload. Default 16 MiB. */
  multipartThreshold?: number;
  /** Multipart part size (S3 minimum 5 MiB). Default 16 MiB. */
  partSize?: number;
  /** Parts uploaded at once by a multipart upload. Default 4. */
  queueSize?: number;
  /** Attempts per request inside the SDK (standard retry mode, backoff on 5xx/throttling). Default 3. */
  maxAttempts?: number;
  /** Attempts of a whole publish (copy + delete) on transient errors, on top of the SDK's. Default 3. */
  publishAttempts?: number;
  /** First backoff delay of those publish retries, ms (doubles, capped at 5 s, jittered). Default 200. */
  retryBaseMs?: number;
  /** A connection not established within this long fails (and is retried). Default 5 s. */
  connectTimeoutMs?: number;
  /**
   * A request whose socket is idle this long fails (and is retried): an endpoint that accepts
   * connections but never answers does not hang a checkpoint forever. Default 60 s.
   */
  requestTimeoutMs?: number;
}

const MiB = 1024 * 1024;

export const S3_STORE_DEFAULTS = {
  multipartThreshold: 16 * MiB,
  partSize: 16 * MiB,
  queueSize: 4,
  maxAttempts: 3,
  publishAttempts: 3,
  retryBaseMs: 200,
  connectTimeoutMs: 5_000,
  requestTimeoutMs: 60_000,
} as const;

type ValidS3StoreOptions = S3StoreOptions & Required<Pick<S3StoreOptions, keyof typeof S3_STORE_DEFAULTS>>;

/** Fills defaults and checks every option; throws a user error naming the bad one. */
export function validateS3StoreOptions(options: S3StoreOptions): ValidS3StoreOptions {
  const o = { ...S3_STORE_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) } as ValidS3StoreOptions;
  if (typeof o.bucket !== 'string' || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(o.bucket)) throw userError('invalid_option', `S3 bucket must be a valid bucket name (3-63 of a-z 0-9 . -), got "${String(o.bucket)}"`);
  if (typeof o.prefix !== 'string' || o.prefix.startsWith('/') || o.prefix.endsWith('/')) throw userError('invalid_option', `S3 prefix must not start or end with "/", got "${String(o.prefix)}"`);
  if (!(o.partSize >= 5 * MiB)) throw userError('invalid_option', `S3 partSize must be at least 5 MiB (the S3 minimum), got ${o.partSize}`);
  if (!(o.multipartThreshold >= 0)) throw userError('invalid_option', `S3 multipartThreshold must be ≥ 0 bytes, got ${o.multipartThreshold}`);
  for (const k of ['queueSize', 'maxAttempts', 'publishAttempts'] as const) {
    if (!(Number.isInteger(o[k]) && o[k] >= 1)) throw userError('invalid_option', `S3 ${k} must be a positive integer, got ${o[k]}`);
  }
  if (!(o.retryBaseMs >= 0)) throw userError('invalid_option', `S3 retryBaseMs must be ≥ 0 ms, got ${o.retryBaseMs}`);
  for (const k of ['connectTimeoutMs', 'requestTimeoutMs'] as const) {
    if (!(Number.isFinite(o[k]) && o[k] >= 1)) throw userError('invalid_option', `S3 ${k} must be at least 1 ms, got ${o[k]}`);
  }
  return o;
}

/** 5xx, throttling and network errors: worth another try. */
function transient(err: unknown): boolean {
  const e = err as { name?: string; code?: string; $retryable?: unknown; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode ?? 0;
  return (
    status >= 500 ||
    status === 429 ||
    e.$retryable !== undefined ||
    /Throttl|SlowDown|RequestTimeout|TimeoutError/.test(e.name ?? '') ||
    ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT'].includes(e.code ?? '')
  );
}

/** The SDK's message, with what to do when it found no credentials (its own message names none). */
function reasonOf(err: unknown): string {
  const message = (err as Error)?.message ?? String(err);
  if ((err as Error)?.name === 'CredentialsProviderError') return `${message} (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, as for any AWS tool)`;
  return message;
}

const notFound = (err: unknown): boolean => {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
};

export class S3ObjectStore implements ObjectStore {
  readonly url: string;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly queueSize: number;
  private readonly publishAttempts: number;
  private readonly retryBaseMs: number;

  constructor(input: S3StoreOptions) {
    const options = validateS3StoreOptions(input);
    this.bucket = options.bucket;
    this.prefix = options.prefix === '' ? '' : `${options.prefix}/`;
    this.url = `s3://${options.bucket}/${options.prefix}`;
    this.multipartThreshold = options.multipartThreshold;
    this.partSize = options.partSize;
    this.queueSize = options.queueSize;
    this.publishAttempts = options.publishAttempts;
    this.retryBaseMs = options.retryBaseMs;
    // The SDK warns on every command that its releases after January 2027 need Node 22. Sluice
    // runs on Node 20 (its uWebSockets.js build) with the SDK version its lockfile pins: the
    // warning is not the user's to act on. Set the variable to 'false' to see it again.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      region: options.region ?? process.env.AWS_REGION ?? 'us-east-1',
      endpoint: options.endpoint,
      forcePathStyle: options.endpoint !== undefined,
      maxAttempts: options.maxAttempts,
      retryMode: 'standard',
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: { connectionTimeout: options.connectTimeoutMs, socketTimeout: options.requestTimeoutMs },
    });
  }

  private full(key: string): string {
    return `${this.prefix}${key}`;
  }

  private async wrap<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw externalError('s3_failed', `S3 ${what} on ${this.url} failed: ${reasonOf(err)}`, err);
    }
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    await this.wrap(`put ${key}`, async () => {
      if (body.byteLength > this.multipartThreshold) {
        await new Upload({ client: this.client, params: { Bucket: this.bucket, Key: this.full(key), Body: body }, partSize: this.partSize, queueSize: this.queueSize }).done();
      } else {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.full(key), Body: body, ContentLength: body.byteLength }));
      }
    });
  }

  async create(key: string, body: Uint8Array): Promise<boolean> {
    return this.wrap(`create ${key}`, async () => {
      // The look first: servers without conditional writes (s3rver) ignore If-None-Match.
      if ((await this.get(key)) !== undefined) return false;
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.full(key), Body: body, ContentLength: body.byteLength, IfNoneMatch: '*' }));
        return true;
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        // 412: the object exists; 409: a concurrent conditional write of it is in progress (it wins).
        if (status === 412 || status === 409) return false;
        throw err;
      }
    });
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
      return await out.Body!.transformToByteArray();
    } catch (err) {
      if (notFound(err)) return undefined;
      throw externalError('s3_failed', `S3 get ${key} on ${this.url} failed: ${reasonOf(err)}`, err);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const includeMeta = prefix.startsWith('_sluice/');
    let token: string | undefined;
    do {
      const page: ListObjectsV2CommandOutput = await this.wrap(`list ${prefix}`, () =>
        this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.full(prefix), ContinuationToken: token })),
      );
      for (const o of page.Contents ?? []) {
        const key = o.Key!.slice(this.prefix.length);
        if (!includeMeta && key.startsWith('_sluice/')) continue;
        out.push({ key, size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(key: string): Promise<void> {
    await this.wrap(`delete ${key}`, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.full(key) })));
  }

  async stage(key: string, body: Uint8Array): Promise<StagedObject> {
    const stagingKey = `${STAGING_PREFIX}${key}`;
    await this.put(stagingKey, body);
    return { key, stagingKey, size: body.byteLength };
  }

  async publish(staged: StagedObject): Promise<void> {
    await this.withRetry(`publish ${staged.key}`, async () => {
      try {
        await this.client.send(
          new CopyObjectCommand({ Bucket: this.bucket, Key: this.full(staged.key), CopySource: encodeURI(`${this.bucket}/${this.full(staged.stagingKey)}`) }),
        );
      } catch (err) {
        // Already published by an earlier attempt: the staged copy is gone and the final one exists.
        if (notFound(err) && (await this.exists(staged.key))) return;
        throw err;
      }
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.full(staged.stagingKey) }));
    });
  }

  /**
   * On top of the SDK's own retries (per request): retries a whole multi-request operation with
   * exponential backoff and jitter when the failure is transient (5xx, throttling, network).
   */
  private async withRetry<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (attempt >= this.publishAttempts || !transient(err)) {
          throw externalError('s3_failed', `S3 ${what} on ${this.url} failed after ${attempt} attempt(s): ${reasonOf(err)}`, err, transient(err) ? 'backoff' : 'none');
        }
        const delay = Math.min(5_000, this.retryBaseMs * 2 ** (attempt - 1));
        await new Promise((r) => setTimeout(r, delay / 2 + Math.random() * (delay / 2)));
      }
    }
  }

  private async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
      return true;
    } catch (err) {
      if (notFound(err)) return false;
      throw err;
    }
  }

  async discardStaged(keep: ReadonlySet<string>, filter: (stagingKey: string) => boolean = () => true): Promise<number> {
    let n = 0;
    for (const o of await this.list(STAGING_PREFIX)) {
      if (keep.has(o.key) || !filter(o.key)) continue;
      await this.delete(o.key);
      n++;
    }
    return n;
  }

  localPath(): string | undefined {
    return undefined;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
