import { describe, expect, it } from 'vitest';
import { ackLags, parseServerMetrics, quantile, type MonitorSample } from '../../bench/e2e-monitor.js';
import { loadShape, parseCount, parseList, validateE2eBenchOptions } from '../../bench/e2e-options.js';

describe('validateE2eBenchOptions', () => {
  it('fills the documented defaults', () => {
    const o = validateE2eBenchOptions({ shards: 4, workers: 2 });
    expect(o.protocols).toEqual(['http', 'ndjson', 'arrow-ws']);
    expect(o.durationMs).toBe(20_000);
    expect(o.rateFractions).toEqual([0.5, 0.9]);
    expect(o.userScale).toEqual([10_000, 100_000, 1_000_000, 10_000_000]);
    expect(o.workerScale).toEqual([1, 2]);
    expect(o.lightLoop).toBe(true);
  });

  it.each([
    [{ protocols: [] }, '--protocols must name at least one of http, ndjson, arrow-ws'],
    [{ protocols: ['grpc'] }, '--protocols must be a comma-separated list of http, ndjson, arrow-ws, got "grpc"'],
    [{ protocols: ['http', 'http'] }, '--protocols lists a protocol twice: http,http'],
    [{ durationMs: 500 }, '--duration must be between 1s and 1h, got 500 ms'],
    [{ warmupMs: 20_000 }, '--warmup must be ≥ 0 and shorter than --duration (20000 ms), got 20000 ms'],
    [{ rateFractions: [1.5] }, '--rates must be fractions of the max in (0, 1], e.g. 0.5,0.9; got 1.5'],
    [{ users: 0 }, '--users must be an integer in 1..50000000, got 0'],
    [{ userScale: [100_000_000] }, '--user-scale must list integers in 1..50000000, got 100000000'],
    [{ shards: 2, workerScale: [1, 4] }, 'engine workers (4) must not exceed --shards (2): a worker without a shard measures nothing'],
    [{ flushIntervalMs: 10 }, '--flush-interval must be at least 50ms, got 10 ms'],
    [{ batchSize: 0 }, '--batch-size must be an integer in 1..100000, got 0'],
    [{ users: 1, loadgenWorkers: 2 }, 'users (1) must be at least --loadgen-workers (2): each generator thread simulates its own users'],
    [{ maxServerRssBytes: 1024 }, '--max-rss must be at least 64MiB, got 1024 bytes'],
    [{ lightLoop: 'yes' }, 'lightLoop must be true or false, got yes'],
  ] as const)('rejects %j', (input, message) => {
    expect(() => validateE2eBenchOptions({ shards: 4, workers: 2, ...(input as object) })).toThrow(message);
  });
});

describe('list and count flags', () => {
  it('parses counts with K and M', () => {
    expect(parseList('10K,100k,1M,1.5M', '--user-scale', (x) => parseCount(x, '--user-scale'))).toEqual([10_000, 100_000, 1_000_000, 1_500_000]);
    expect(parseList('none', '--user-scale', Number)).toEqual([]);
    expect(() => parseCount('ten', '--users')).toThrow('--users must be a count like 10000, 100K or 1M, got "ten"');
    expect(() => parseList('1,,2', '--worker-scale', Number)).toThrow('--worker-scale has an empty item');
  });
});

describe('ackLags', () => {
  const s = (t: number, acked: number, processed: number): MonitorSample => ({ t, acked, processed, committed: 0, committedSilver: 0, backlog: 0 });
  it('measures how long until the processed count reaches each acked count', () => {
    const samples = [s(0, 0, 0), s(100, 10, 0), s(200, 20, 10), s(300, 20, 15), s(400, 30, 20), s(500, 30, 30)];
    const { lags, unreached } = ackLags(samples, (x) => x.processed, 0, 500);
    expect(lags).toEqual([100, 200, 100, 100, 0]);
    expect(unreached).toBe(0);
    expect(quantile(lags, 0.5)).toBe(100);
  });
  it('counts acked totals never reached', () => {
    const { lags, unreached } = ackLags([s(0, 5, 0), s(100, 5, 4)], (x) => x.processed, 0, 100);
    expect(lags).toEqual([100, 0]);
    expect(unreached).toBe(2);
  });
});

describe('loadShape', () => {
  const o = validateE2eBenchOptions({ shards: 2, workers: 2 });
  it('gives max and open-loop runs the options, per protocol where not given', () => {
    expect(loadShape(o, 'http')).toEqual({ loadgenWorkers: 2, connections: 32, batchSize: 50, pipeline: 4 });
    expect(loadShape(o, 'arrow-ws')).toEqual({ loadgenWorkers: 2, connections: 4, batchSize: 1000, pipeline: 4 });
    expect(loadShape(validateE2eBenchOptions({ shards: 2, workers: 2, connections: 8, batchSize: 20, loadgenWorkers: 3 }), 'ndjson')).toEqual({ loadgenWorkers: 3, connections: 8, batchSize: 20, pipeline: 4 });
  });
  it('gives the light closed loop one thread and few requests in flight', () => {
    expect(loadShape(o, 'http', true)).toEqual({ loadgenWorkers: 1, connections: 4, batchSize: 50, pipeline: 1 });
    expect(loadShape(o, 'arrow-ws', true)).toEqual({ loadgenWorkers: 1, connections: 1, batchSize: 1000, pipeline: 1 });
  });
});

describe('parseServerMetrics', () => {
  const text = [
    '# HELP sluice_ingest_ack_seconds Time from request received to acknowledgement sent.',
    '# TYPE sluice_ingest_ack_seconds histogram',
    'sluice_ingest_ack_seconds_bucket{le="0.01"} 900',
    'sluice_ingest_ack_seconds_bucket{le="0.02"} 990',
    'sluice_ingest_ack_seconds_bucket{le="0.05"} 998',
    'sluice_ingest_ack_seconds_bucket{le="+Inf"} 1000',
    'sluice_ingest_ack_seconds_sum 5',
    'sluice_ingest_ack_seconds_count 1000',
    'sluice_engine_checkpoint_seconds_bucket{le="1"} 2',
    'sluice_engine_checkpoint_seconds_bucket{le="2"} 3',
    'sluice_engine_checkpoint_seconds_bucket{le="5"} 3',
    'sluice_engine_checkpoint_seconds_bucket{le="10"} 4',
    'sluice_engine_checkpoint_seconds_bucket{le="30"} 4',
    'sluice_engine_checkpoint_seconds_bucket{le="+Inf"} 4',
    'sluice_engine_checkpoint_seconds_sum 12',
    'sluice_engine_checkpoint_seconds_count 4',
    'sluice_engine_checkpoint_step_seconds_sum{step="shard"} 9',
    'sluice_engine_checkpoint_step_seconds_count{step="shard"} 8',
    'sluice_engine_checkpoint_step_seconds_sum{step="shard_commit"} 6',
    'sluice_engine_checkpoint_step_seconds_count{step="shard_commit"} 8',
    'sluice_ingest_requests_total{protocol="segment",status="503"} 7',
    'sluice_ingest_requests_total{protocol="arrow",status="503"} 1',
  ].join('\n');
  it('reads the share of acks within 20 ms and the bucket of the longest checkpoint', () => {
    const m = parseServerMetrics(text);
    expect(m.ackWithin20msShare).toBe(0.99);
    expect(m.ackMeanMs).toBe(5);
    expect(m.ackP99Ms).toBe(20);
    expect([m.checkpoints, m.checkpointMeanS, m.checkpointMaxAboveS, m.checkpointMaxBucketS]).toEqual([4, 3, 5, 10]);
    expect(m.refused503).toBe(8);
    // A shard's own checkpoint, from its labelled series (not the `shard` step beside it).
    expect(m.shardCommitMeanS).toBe(0.75);
  });
  it('says NaN, not 0, when the server never acked', () => {
    expect(parseServerMetrics('sluice_ingest_ack_seconds_bucket{le="0.02"} 0\nsluice_ingest_ack_seconds_bucket{le="+Inf"} 0').ackWithin20msShare).toBeNaN();
  });
});
