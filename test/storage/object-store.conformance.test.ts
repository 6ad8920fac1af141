/**
 * One conformance suite, looped over every ObjectStore implementation (Kysely-style): the local
 * directory store and the S3 store against a real s3rver.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ObjectStore } from '../../storage/object-store.js';
import { openObjectStore } from '../../storage/open-store.js';
import { S3ObjectStore, validateS3StoreOptions, type S3StoreOptions } from '../../storage/s3-store.js';
import { mapLimit } from '../../common/map-limit.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';
import { liveFiles, listCommitRecords } from '../../storage/commit-record.js';
import { startS3rver, type S3Server } from '../helpers/s3rver.js';

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const MULTIPART = 5 * 1024 * 1024;
const big = (n: number, seed: number): Uint8Array => new Uint8Array(n).map((_, i) => (i * 31 + seed) % 251);
const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;
const text = (b: Uint8Array | undefined): string | undefined => (b === undefined ? undefined : new TextDecoder().decode(b));

interface Backend {
  name: string;
  open(prefix: string): Promise<ObjectStore>;
  setup(): Promise<void>;
  teardown(): Promise<void>;
}

let s3: S3Server;
const localRoot = mkdtempSync(join(tmpdir(), 'sluice-store-'));

const backends: Backend[] = [
  {
    name: 'local directory',
    setup: async () => {},
    teardown: async () => rmSync(localRoot, { recursive: true, force: true }),
    open: (prefix) => openObjectStore(join(localRoot, prefix)),
  },
  {
    name: 's3 (s3rver)',
    setup: async () => {
      s3 = await startS3rver('lake');
    },
    teardown: async () => s3.stop(),
    // A low multipart threshold so the conformance cases also cover multipart uploads.
    open: async (prefix) => new S3ObjectStore({ bucket: 'lake', prefix, endpoint: s3.endpoint, multipartThreshold: MULTIPART, partSize: MULTIPART }),
  },
];

describe.each(backends)('ObjectStore conformance: $name', (backend) => {
  let n = 0;
  const fresh = (): Promise<ObjectStore> => backend.open(`t${n++}`);
  beforeAll(() => backend.setup());
  afterAll(() => backend.teardown());

  it('puts, gets, overwrites, lists sorted by key and deletes', async () => {
    const store = await fresh();
    await store.put('silver/events/year=2026/b.parquet', bytes('B'));
    await store.put('silver/events/year=2026/a.parquet', bytes('A'));
    await store.put('gold/x.parquet', bytes('X'));
    await store.put('silver/events/year=2026/a.parquet', bytes('A2'));
    expect(text(await store.get('silver/events/year=2026/a.parquet'))).toBe('A2');
    expect(await store.get('missing')).toBeUndefined();
    const listed = await store.list('silver/');
    expect(listed.map((o) => o.key)).toEqual(['silver/events/year=2026/a.parquet', 'silver/events/year=2026/b.parquet']);
    expect(listed[0]!.size).toBe(2);
    await store.delete('silver/events/year=2026/a.parquet');
    await store.delete('never-existed');
    expect((await store.list('silver/')).map((o) => o.key)).toEqual(['silver/events/year=2026/b.parquet']);
    await store.close();
  });

  it('creates an object only where there is none, leaving no temp behind', async () => {
    const store = await fresh();
    expect(await store.create('_sluice/owner.json', bytes('first'))).toBe(true);
    expect(await store.create('_sluice/owner.json', bytes('second'))).toBe(false);
    expect(text(await store.get('_sluice/owner.json'))).toBe('first');
    expect((await store.list('_sluice/')).map((o) => o.key)).toEqual(['_sluice/owner.json']);
    await store.close();
  });

  it('stages invisibly and publishes idempotently', async () => {
    const store = await fresh();
    const staged = await store.stage('silver/events/p/part-s0-0-1.parquet', bytes('data'));
    expect(await store.list('silver/')).toEqual([]);
    expect((await store.list('')).some((o) => o.key.includes('staging'))).toBe(false);
    await store.publish(staged);
    await store.publish(staged);
    expect(text(await store.get('silver/events/p/part-s0-0-1.parquet'))).toBe('data');
    expect((await store.list('_sluice/staging/')).length).toBe(0);
    await store.close();
  });

  it('recovers a crash between stage and publish: recorded files are published, unrecorded discarded, none doubled', async () => {
    const store = await fresh();
    const committer = new TwoPhaseCommitter(store);
    const recorded = await committer.stage([{ key: 'silver/events/h/part-s1-0-4.parquet', body: bytes('rec'), rows: 4 }], { id: 's1-0-4', kind: 'flush', shard: 1 });
    await committer.stage([{ key: 'silver/events/h/part-s1-5-9.parquet', body: bytes('unrec'), rows: 5 }], { id: 's1-5-9', kind: 'flush', shard: 1 });
    await committer.stage([{ key: 'silver/events/h/part-s2-0-1.parquet', body: bytes('other shard'), rows: 1 }], { id: 's2-0-1', kind: 'flush', shard: 2 });
    // "crash": nothing published. Recovery of shard 1 with its recorded pending commit:
    const r = await committer.recover([recorded], (k) => k.includes('/part-s1-'));
    expect(r).toEqual({ published: 1, discarded: 1 });
    // Recovery is idempotent.
    await committer.recover([recorded], (k) => k.includes('/part-s1-'));
    expect((await store.list('silver/')).map((o) => o.key)).toEqual(['silver/events/h/part-s1-0-4.parquet']);
    expect((await store.list('_sluice/staging/')).map((o) => o.key)).toEqual(['_sluice/staging/silver/events/h/part-s2-0-1.parquet']);
    expect([...(await liveFiles(store, 'silver/'))]).toEqual([['silver/events/h/part-s1-0-4.parquet', 4]]);
    expect((await listCommitRecords(store)).map((c) => c.id)).toEqual(['s1-0-4']);
    await store.close();
  });

  it('stages and publishes bodies above the multipart threshold intact; re-staging a key overwrites it', async () => {
    const store = await fresh();
    const body = big(MULTIPART + 1_234_567, 1);
    await store.put('bronze/events/h/direct.parquet', body);
    expect(same(await store.get('bronze/events/h/direct.parquet'), body)).toBe(true);
    await store.stage('bronze/events/h/part-s0-0-9.parquet', big(1_000, 2));
    const staged = await store.stage('bronze/events/h/part-s0-0-9.parquet', body);
    expect(staged).toEqual({ key: 'bronze/events/h/part-s0-0-9.parquet', stagingKey: '_sluice/staging/bronze/events/h/part-s0-0-9.parquet', size: body.byteLength });
    await store.publish(staged);
    expect(same(await store.get('bronze/events/h/part-s0-0-9.parquet'), body)).toBe(true);
    expect((await store.list('bronze/')).map((o) => [o.key, o.size])).toEqual([
      ['bronze/events/h/direct.parquet', body.byteLength],
      ['bronze/events/h/part-s0-0-9.parquet', body.byteLength],
    ]);
    await store.close();
  });

  it('lists nothing of _sluice/ (staging, temps, commits) unless asked for it, and no temp outlives a put', async () => {
    const store = await fresh();
    await store.put('silver/x.parquet', bytes('x'));
    await store.stage('silver/y.parquet', bytes('y'));
    const c = new TwoPhaseCommitter(store);
    await c.publish(await c.stage([{ key: 'silver/z.parquet', body: bytes('z'), rows: 1 }], { id: 'z', kind: 'flush' }));
    expect((await store.list('')).map((o) => o.key)).toEqual(['silver/x.parquet', 'silver/z.parquet']);
    expect((await store.list('_sluice/')).map((o) => o.key)).toEqual(['_sluice/commits/z.json', '_sluice/staging/silver/y.parquet']);
    await store.close();
  });

  it('publish stays idempotent after the published file was compacted away (the commit record proves it)', async () => {
    const store = await fresh();
    const committer = new TwoPhaseCommitter(store);
    const pending = await committer.stage([{ key: 'silver/events/h/part-s3-0-1.parquet', body: bytes('p'), rows: 2 }], { id: 's3-0-1', kind: 'flush', shard: 3 });
    await committer.publish(pending);
    await store.delete('silver/events/h/part-s3-0-1.parquet'); // e.g. merged by compaction meanwhile
    await committer.recover([pending]);
    expect(await store.list('silver/')).toEqual([]);
    // Without a record, a pending commit whose bytes are gone is an error, not silence.
    const lost = { ...pending, record: { ...pending.record, id: 'never-written' } };
    await expect(committer.publish(lost)).rejects.toThrow();
    await store.close();
  });

  it('handles concurrent publishes of different keys', async () => {
    const store = await fresh();
    const committer = new TwoPhaseCommitter(store);
    const pendings = await Promise.all(
      Array.from({ length: 12 }, (_, i) => committer.stage([{ key: `bronze/events/h/part-s${i}-0-0.parquet`, body: bytes(`f${i}`), rows: 1 }], { id: `s${i}-0-0`, kind: 'flush', shard: i })),
    );
    await Promise.all(pendings.map((p) => committer.publish(p)));
    expect((await store.list('bronze/')).length).toBe(12);
    expect((await liveFiles(store, 'bronze/')).size).toBe(12);
    await store.close();
  });
});

describe('S3 store specifics', () => {
  let server: S3Server;
  beforeAll(async () => {
    server = await startS3rver('big');
  });
  afterAll(() => server.stop());

  it('pins option validation messages', () => {
    const cases: Array<[Partial<S3StoreOptions>, string]> = [
      [{ bucket: 'B' }, 'S3 bucket must be a valid bucket name (3-63 of a-z 0-9 . -), got "B"'],
      [{ prefix: 'a/' }, 'S3 prefix must not start or end with "/", got "a/"'],
      [{ partSize: 1024 }, 'S3 partSize must be at least 5 MiB (the S3 minimum), got 1024'],
      [{ publishAttempts: 0 }, 'S3 publishAttempts must be a positive integer, got 0'],
    ];
    for (const [o, message] of cases) expect(() => validateS3StoreOptions({ bucket: 'lake', prefix: '', ...o })).toThrow(message);
    expect(validateS3StoreOptions({ bucket: 'lake', prefix: 'p' })).toMatchObject({ multipartThreshold: 16 * 1024 * 1024, partSize: 16 * 1024 * 1024, maxAttempts: 3, publishAttempts: 3 });
  });

  it('uploads large bodies as multipart and pages long listings', async () => {
    const store = new S3ObjectStore({ bucket: 'big', prefix: 'p', endpoint: server.endpoint, multipartThreshold: 5 * 1024 * 1024, partSize: 5 * 1024 * 1024 });
    const body = big(12 * 1024 * 1024, 3);
    await store.put('large.bin', body);
    expect(same(await store.get('large.bin'), body)).toBe(true);
    await mapLimit(Array.from({ length: 1100 }, (_, i) => i), 32, (i) => store.put(`many/k${String(i).padStart(5, '0')}`, bytes('x')));
    const listed = await store.list('many/');
    expect(listed.length).toBe(1100);
    expect(listed[1099]!.key).toBe('many/k01099');
    await store.close();
  });

  it('retries a publish through transient 503s (its own retries on top of the SDK)', async () => {
    // A loopback proxy in front of s3rver that answers the first two CopyObject requests with 503 SlowDown.
    let copiesFailed = 0;
    const target = new URL(server.endpoint);
    const proxy = createServer((req, res) => {
      if (req.method === 'PUT' && req.headers['x-amz-copy-source'] && copiesFailed < 2) {
        copiesFailed++;
        req.resume();
        res.writeHead(503, { 'content-type': 'application/xml' }).end('<Error><Code>SlowDown</Code><Message>slow down</Message></Error>');
        return;
      }
      const up = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 500, r.headers);
        r.pipe(res);
      });
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const port = (proxy.address() as AddressInfo).port;
      const store = new S3ObjectStore({ bucket: 'big', prefix: 'retry', endpoint: `http://127.0.0.1:${port}`, maxAttempts: 1, publishAttempts: 4, retryBaseMs: 1 });
      const staged = await store.stage('silver/p.parquet', bytes('retry me'));
      await store.publish(staged);
      expect(copiesFailed).toBe(2);
      expect(text(await store.get('silver/p.parquet'))).toBe('retry me');
      expect(await store.list('_sluice/staging/')).toEqual([]);
      // Non-transient failures are not retried and say what failed.
      await expect(store.publish({ key: 'silver/q.parquet', stagingKey: '_sluice/staging/silver/q.parquet', size: 1 })).rejects.toThrow(/S3 publish silver\/q\.parquet on s3:\/\/big\/retry failed after 1 attempt/);
      await store.close();
    } finally {
      await new Promise<void>((r) => proxy.close(() => r()));
    }
  });
  it('an endpoint that accepts connections but never answers fails the request after requestTimeoutMs (retried), instead of hanging a checkpoint', async () => {
    const sockets = new Set<Socket>();
    const silent = createNetServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
      sock.resume(); // reads the request, never answers
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    try {
      const port = (silent.address() as AddressInfo).port;
      const store = new S3ObjectStore({ bucket: 'big', prefix: 'silent', endpoint: `http://127.0.0.1:${port}`, maxAttempts: 2, requestTimeoutMs: 300 });
      const err = await store.put('silver/x.parquet', bytes('never stored')).then(() => undefined, (e: unknown) => e as Error);
      expect(err?.message).toMatch(/S3 put silver\/x\.parquet on s3:\/\/big\/silent failed/);
      expect(sockets.size).toBe(2); // the SDK's retry came on a new connection
      await store.close();
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('without credentials says how to give them (the SDK names none), and does not print its Node 22 notice', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY, profile: process.env.AWS_PROFILE, file: process.env.AWS_SHARED_CREDENTIALS_FILE, config: process.env.AWS_CONFIG_FILE };
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    delete process.env.AWS_ACCESS_KEY_ID;
    delete process.env.AWS_SECRET_ACCESS_KEY;
    delete process.env.AWS_PROFILE;
    process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/credentials';
    process.env.AWS_CONFIG_FILE = '/nonexistent/config';
    try {
      const store = new S3ObjectStore({ bucket: 'nocreds', prefix: 'p', endpoint: 'http://127.0.0.1:1', maxAttempts: 1 });
      await expect(store.get('x')).rejects.toThrow(/^S3 get x on s3:\/\/nocreds\/p failed: .*\(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, as for any AWS tool\)$/s);
      await store.close();
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => w.includes('NodeVersionSupportWarning'))).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      for (const [k, v] of [['AWS_ACCESS_KEY_ID', saved.id], ['AWS_SECRET_ACCESS_KEY', saved.secret], ['AWS_PROFILE', saved.profile], ['AWS_SHARED_CREDENTIALS_FILE', saved.file], ['AWS_CONFIG_FILE', saved.config]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
