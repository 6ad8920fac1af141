import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { composeServeConfig } from '../../cli/config.js';
import { validateEngineOptions } from '../../engine/options.js';

describe('composeServeConfig', () => {
  it('takes the README\'s config file example as written', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', '..', 'README.md'), 'utf8');
    const example = /In the config file each setting[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(example, 'the README has the example').toBeDefined();
    const file = join(mkdtempSync(join(tmpdir(), 'sluice-readme-config-')), 'sluice.json');
    writeFileSync(file, example!);
    const c = composeServeConfig({ config: file }, {});
    expect(c.engine).toMatchObject({ lake: 's3://analytics-lake/sluice', shards: 8, flushIntervalMs: 10_000, allowedLatenessMs: 7_200_000, sessionGapMs: 1_800_000 });
    expect(c.writeKeys).toEqual(['sk_ios_prod', 'sk_web_prod']);
    expect(c.ingest).toMatchObject({ rateLimit: { eventsPerSecond: 20_000, burst: 40_000 }, maxMemoryBytes: 4 * 2 ** 30 });
  });

  const dir = mkdtempSync(join(tmpdir(), 'sluice-config-'));
  const file = join(dir, 'sluice.json');
  writeFileSync(file, JSON.stringify({ port: 9000, shards: 3, flushInterval: '5s', sessionGap: '20m', lake: '/from/file', data: join(dir, 'data') }));

  it('uses documented defaults', () => {
    const c = composeServeConfig({}, {});
    expect(c.port).toBe(8080);
    expect(c.host).toBe('127.0.0.1');
    expect(c.engine.flushIntervalMs).toBe(10_000);
    expect(c.engine.allowedLatenessMs).toBe(7_200_000);
    expect(c.engine.sessionGapMs).toBe(1_800_000);
    expect(c.engine.dedupTtlMs).toBe(86_400_000);
    expect(c.engine.lake).toBe('./lake');
    expect(c.writeKeys).toEqual([]);
  });

  it('takes flags over environment over config file over defaults', () => {
    const env = { SLUICE_CONFIG: file, SLUICE_PORT: '9100', SLUICE_SESSION_GAP: '10m', SLUICE_WRITE_KEYS: 'a, b' };
    const c = composeServeConfig({ port: '9200' }, env);
    expect(c.port).toBe(9200); // flag
    expect(c.engine.sessionGapMs).toBe(600_000); // env over file
    expect(c.engine.shards).toBe(3); // file
    expect(c.engine.flushIntervalMs).toBe(5_000); // file
    expect(c.engine.lake).toBe('/from/file');
    expect(c.writeKeys).toEqual(['a', 'b']);
    expect(c.engine.dedupTtlMs).toBe(86_400_000); // default
  });

  it('derives the engine\'s per-shard memory bounds from --max-memory (rows held until a checkpoint, dedup hot table, Parquet encode sizes)', () => {
    const small = composeServeConfig({ maxMemory: '1GiB', shards: '4', data: join(dir, 'data') }, {});
    expect(small.ingest.maxMemoryBytes).toBe(2 ** 30);
    // Half of 1 GiB over 4 shards = 128 MiB a shard: 64 MiB of rows, 64 MiB / 48 B of dedup entries.
    expect(small.engine.maxUncommittedBytesPerShard).toBe(64 * 2 ** 20);
    expect(small.engine.dedupHotCapacity).toBe(Math.floor((64 * 2 ** 20) / 48));
    // Encode sizes: 128 MiB ÷ 16 = 8 MiB chunks (the ceiling), ÷ 8 = 16 MiB Parquet calls (parquet-wasm's heap grows to the biggest call).
    expect(small.engine.encodeChunkBytes).toBe(8 * 2 ** 20);
    expect(small.engine.maxBytesPerParquetCall).toBe(16 * 2 ** 20);
    // A tiny budget: the 1 MiB floors (and the other floors).
    const tiny = composeServeConfig({ maxMemory: '16MiB', shards: '8', data: join(dir, 'data') }, {});
    expect(tiny.engine.encodeChunkBytes).toBe(2 ** 20);
    expect(tiny.engine.maxBytesPerParquetCall).toBe(2 ** 20);
    expect(tiny.engine.maxUncommittedBytesPerShard).toBe(512 * 1024);
    expect(tiny.engine.dedupHotCapacity).toBe(100_000);
    // A budget of 64 GiB: the defaults are the ceilings.
    const big = composeServeConfig({ maxMemory: '64GiB', shards: '4', data: join(dir, 'data') }, {});
    expect(big.engine.maxUncommittedBytesPerShard).toBe(2 * big.engine.targetFileBytes);
    expect(big.engine.dedupHotCapacity).toBe(4_000_000);
    expect(big.engine.encodeChunkBytes).toBe(8 * 2 ** 20);
    expect(big.engine.maxBytesPerParquetCall).toBe(256 * 2 ** 20);
    // In between (4 GiB, 4 shards: 512 MiB a shard): the chunk at its ceiling, the call not yet.
    const mid = composeServeConfig({ maxMemory: '4GiB', shards: '4', data: join(dir, 'data') }, {});
    expect(mid.engine.encodeChunkBytes).toBe(8 * 2 ** 20);
    expect(mid.engine.maxBytesPerParquetCall).toBe(64 * 2 ** 20);
    // No budget (0): the defaults.
    const none = composeServeConfig({ maxMemory: '0', shards: '4', data: join(dir, 'data') }, {});
    expect(none.engine.dedupHotCapacity).toBe(4_000_000);
    expect(none.engine.encodeChunkBytes).toBe(8 * 2 ** 20);
    expect(none.engine.maxBytesPerParquetCall).toBe(256 * 2 ** 20);
    expect(() => validateEngineOptions({ dedupHotCapacity: 10 })).toThrow(/dedupHotCapacity must be an integer ≥ 1000/);
  });

  it('takes the worker niceness from --worker-nice or SLUICE_WORKER_NICE, default 10', () => {
    expect(composeServeConfig({}, {}).engine.workerNice).toBe(10);
    expect(composeServeConfig({}, { SLUICE_WORKER_NICE: '0' }).engine.workerNice).toBe(0);
    expect(composeServeConfig({ workerNice: '19' }, { SLUICE_WORKER_NICE: '0' }).engine.workerNice).toBe(19);
  });

  it('takes the range linger from --range-linger or SLUICE_RANGE_LINGER, default 200 ms, 0 turns it off, bounded at 10 s', () => {
    expect(composeServeConfig({}, {}).engine.rangeLingerMs).toBe(200);
    expect(composeServeConfig({}, { SLUICE_RANGE_LINGER: '0' }).engine.rangeLingerMs).toBe(0);
    expect(composeServeConfig({ rangeLinger: '50ms' }, { SLUICE_RANGE_LINGER: '0' }).engine.rangeLingerMs).toBe(50);
    expect(() => composeServeConfig({ rangeLinger: '1m' }, {})).toThrow(/^--range-linger must be between 0 and 10 000 ms, got "1m"$/);
  });

  it('reads the S3 endpoint from SLUICE_S3_ENDPOINT or the standard AWS_ENDPOINT_URL_S3', () => {
    expect(composeServeConfig({}, { AWS_ENDPOINT_URL_S3: 'http://127.0.0.1:9' }).engine.s3Endpoint).toBe('http://127.0.0.1:9');
    expect(composeServeConfig({}, { SLUICE_S3_ENDPOINT: 'http://a', AWS_ENDPOINT_URL_S3: 'http://b' }).engine.s3Endpoint).toBe('http://a');
  });

  it.each([
    [{ port: 'x' }, '--port must be an integer, got "x"'],
    [{ flushInterval: 'soon' }, '--flush-interval must look like 500ms, 10s, 30m, 2h or 7d, got "soon"'],
    [{ shards: '0' }, '--shards must be an integer in 1..4096, got "0"'],
    [{ compression: 'lz4' }, '--compression must be zstd, snappy or none, got "lz4"'],
    [{ workerNice: 'low' }, '--worker-nice must be an integer, got "low"'],
    [{ workerNice: '-5' }, '--worker-nice must be an integer in 0..19, got "-5"'],
    // The flag the user typed, not the engine option it becomes (flushIntervalMs).
    [{ flushInterval: '10ms' }, '--flush-interval must be at least 50 ms, got "10ms"'],
    [{ readKeys: ['short'] }, '--read-key must be a key of at least 8 characters, got "short"'],
  ])('rejects %j with an exact message', (flags, message) => {
    expect(() => composeServeConfig(flags, {})).toThrow(message);
  });

  it('rejects unknown settings in the config file, naming them', () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify({ prot: 1 }));
    expect(() => composeServeConfig({ config: bad }, {})).toThrow(/unknown setting "prot"/);
    expect(() => composeServeConfig({ config: join(dir, 'missing.json') }, {})).toThrow(/cannot read config file/);
  });

  it('checks the config file\'s ingest settings when composing, before serve creates anything', () => {
    const bad = join(dir, 'bad-ingest.json');
    writeFileSync(bad, JSON.stringify({ data: join(dir, 'never-created'), ingest: { maxBodyBytes: 'big' } }));
    expect(() => composeServeConfig({ config: bad }, {})).toThrow(`"ingest" in config file ${bad}: maxBodyBytes must be a positive integer, got "big"`);
    writeFileSync(bad, JSON.stringify({ ingest: { maxBodyByte: 1000 } }));
    expect(() => composeServeConfig({ config: bad }, {})).toThrow(/unknown ingest option "maxBodyByte"/);
    writeFileSync(bad, JSON.stringify({ ingest: { maxBodyBytes: 1000, bodyTimeoutMs: 5000 } }));
    expect(composeServeConfig({ config: bad }, {}).ingest).toMatchObject({ maxBodyBytes: 1000, bodyTimeoutMs: 5000 });
  });
});

describe('validateEngineOptions', () => {
  it('caps workers at the shard count', () => {
    expect(validateEngineOptions({ shards: 2, workers: 8 }).workers).toBe(2);
  });
  it.each([
    [{ flushIntervalMs: 10 }, 'flushIntervalMs must be at least 50 ms, got 10'],
    [{ dedupTtlMs: 1000 }, 'dedupTtlMs must be at least 1 minute, got 1000'],
    [{ sessionGapMs: 0 }, 'sessionGapMs must be > 0, got 0'],
    [{ workerNice: 20 }, 'workerNice must be an integer in 0..19, got 20'],
  ])('%j → %s', (o, message) => expect(() => validateEngineOptions(o)).toThrow(message));
});
