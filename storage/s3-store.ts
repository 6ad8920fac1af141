/**
 * ObjectStore on S3 or an S3-compatible server (@aws-sdk/client-s3).
 *
 * - Credentials and region from the standard AWS chain; a custom endpoint switches to
 *   path-style addressing (MinIO, s3rver, …).
 * - Retries with exponential backoff on 5xx and throttling (the SDK's standard retry strategy,
 *   `maxAttempts` 6).
 * - Bodies above `multipartThreshold` go up as multipart uploads (@aws-sdk/lib-storage).
 * - Checksums only when required: some S3-compatible servers store aws-chunked framing otherwise.
 * - stage = put under `<prefix>/_sluice/staging/<key>`; publish = CopyObject to the final key,
 *   then delete the staged copy (idempotent: staged copy gone + final present = done).
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
import { externalError } from '../common/errors.js';
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
  /** Multipart part size. Default 16 MiB. */
  partSize?: number;
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

  constructor(options: S3StoreOptions) {
    this.bucket = options.bucket;
    this.prefix = options.prefix === '' ? '' : `${options.prefix}/`;
    this.url = `s3://${options.bucket}/${options.prefix}`;
    this.multipartThreshold = options.multipartThreshold ?? 16 * 1024 * 1024;
    this.partSize = Math.max(5 * 1024 * 1024, options.partSize ?? 16 * 1024 * 1024);
    this.client = new S3Client({
      region: options.region ?? process.env.AWS_REGION ?? 'us-east-1',
      endpoint: options.endpoint,
      forcePathStyle: options.endpoint !== undefined,
      maxAttempts: 6,
      retryMode: 'standard',
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  private full(key: string): string {
    return `${this.prefix}${key}`;
  }

  private async wrap<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw externalError('s3_failed', `S3 ${what} on ${this.url} failed: ${(err as Error).message}`, err);
    }
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    await this.wrap(`put ${key}`, async () => {
      if (body.byteLength > this.multipartThreshold) {
        await new Upload({ client: this.client, params: { Bucket: this.bucket, Key: this.full(key), Body: body }, partSize: this.partSize, queueSize: 4 }).done();
      } else {
        await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.full(key), Body: body, ContentLength: body.byteLength }));
      }
    });
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
      return await out.Body!.transformToByteArray();
    } catch (err) {
      if (notFound(err)) return undefined;
      throw externalError('s3_failed', `S3 get ${key} on ${this.url} failed: ${(err as Error).message}`, err);
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
    try {
      await this.client.send(
        new CopyObjectCommand({ Bucket: this.bucket, Key: this.full(staged.key), CopySource: encodeURI(`${this.bucket}/${this.full(staged.stagingKey)}`) }),
      );
    } catch (err) {
      if (notFound(err) && (await this.exists(staged.key))) return;
      throw externalError('s3_failed', `S3 publish ${staged.key} on ${this.url} failed: ${(err as Error).message}`, err);
    }
    await this.delete(staged.stagingKey);
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
