/**
 * Parquet written by Sluice is standard: DuckDB reads every table with Hive partitioning and
 * sees the documented types column by column; timestamps are TIMESTAMP(MILLIS, UTC); ZSTD,
 * statistics, row-group sizes and per-column dictionary choices are what storage/parquet.ts says;
 * Arrow Dictionary columns round-trip; big inputs respect the per-call row limit.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Table } from 'apache-arrow';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { partKey, partName, TABLES, type TableName } from '../../common/lake-layout.js';
import { dailyMetricsSchema, dlqSchema, hourlyMetricsSchema, sessionsSchema } from '../../common/schema.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { PartitionBuffer } from '../../storage/partition-buffer.js';
import { coalesceBatches } from '../../common/arrow-concat.js';
import { decodeParquet, encodeParquet, encodeParquetAsync, encodeParquetFiles, encodeParquetMerged, validateParquetOptions, type ParquetOptions } from '../../storage/parquet.js';
import { TwoPhaseCommitter } from '../../storage/two-phase.js';
import { openDuck, glob, type Duck } from './duck.js';
import { batchOf, bronzeOf, silverRows } from './silver-rows.js';

const T0 = Date.UTC(2026, 4, 10, 9);
const root = mkdtempSync(join(tmpdir(), 'sluice-parquet-'));
let duck: Duck;
beforeAll(async () => {
  duck = await openDuck();
});
afterAll(() => {
  duck.close();
  rmSync(root, { recursive: true, force: true });
});

const typesOf = async (rel: string): Promise<Record<string, string>> =>
  Object.fromEntries((await duck.rows<{ column_name: string; column_type: string }>(`DESCRIBE SELECT * FROM ${rel}`)).map((r) => [r.column_name, r.column_type]));

describe('Parquet encoding', () => {
  it('round-trips silver rows, Dictionary columns included', () => {
    const batches = silverRows({ rows: 3_000, seed: 7, startMs: T0 });
    const back = decodeParquet(encodeParquet(batches));
    const input = new Table(batches);
    expect(back.numRows).toBe(3_000);
    expect(back.schema.fields.map((f) => `${f.name}:${f.type}`)).toEqual(input.schema.fields.map((f) => `${f.name}:${f.type}`));
    for (const i of [0, 1, 1_234, 2_999]) expect(back.get(i)!.toJSON()).toEqual(input.get(i)!.toJSON());
  });

  it('encodeParquetMerged: the rows of many small sliced batches, as DuckDB reads them and as the coalescing path wrote them', async () => {
    // As a shard buffers them: one small batch per log record, bronze (raw JSON, nulls) and silver.
    const silver = silverRows({ rows: 2_000, seed: 5, startMs: T0, batchRows: 37 }).map((b, i) => (i % 3 === 0 ? b.slice(2, b.numRows - 1) : b));
    const bronze = silver.map((b, i) => bronzeOf(b, 0, i));
    for (const [name, batches] of [['silver', silver], ['bronze', bronze]] as const) {
      const merged = encodeParquetMerged(batches);
      const coalesced = encodeParquet(coalesceBatches(batches));
      const rows = batches.reduce((n, b) => n + b.numRows, 0);
      const back = decodeParquet(merged);
      expect(back.numRows).toBe(rows);
      expect(back.schema.fields.map(String)).toEqual(batches[0]!.schema.fields.map(String));
      const paths = [join(root, `merged-${name}.parquet`), join(root, `coalesced-${name}.parquet`)];
      await new LocalObjectStore(root).put(`merged-${name}.parquet`, merged);
      await new LocalObjectStore(root).put(`coalesced-${name}.parquet`, coalesced);
      // Every row and value, in order: DuckDB over each file, compared row by row.
      const [a, b] = await Promise.all(paths.map((p) => duck.rows<Record<string, unknown>>(`SELECT * FROM read_parquet('${p}', file_row_number = true) ORDER BY file_row_number`)));
      expect(a!.length).toBe(rows);
      expect(a).toEqual(b);
    }
  });

  it('pins option validation messages', () => {
    const cases: Array<[ParquetOptions, string]> = [
      [{ compression: 'lz4' as never }, 'parquet compression must be zstd, snappy or none, got lz4'],
      [{ statistics: 'all' as never }, 'parquet statistics must be page, chunk or none, got all'],
      [{ rowGroupRows: 0 }, 'parquet rowGroupRows must be a positive integer, got 0'],
      [{ maxRowsPerCall: 1.5 }, 'parquet maxRowsPerCall must be a positive integer, got 1.5'],
    ];
    for (const [o, message] of cases) expect(() => validateParquetOptions(o)).toThrow(message);
    expect(validateParquetOptions({ compression: undefined })).toMatchObject({ compression: 'zstd', rowGroupRows: 131_072, statistics: 'page', maxRowsPerCall: 1_000_000 });
  });

  it('keeps each parquet-wasm call under maxRowsPerCall: sync refuses, async streams one file, files splits', async () => {
    const batches = silverRows({ rows: 5_000, seed: 3, startMs: T0, batchRows: 700 });
    expect(() => encodeParquet(batches, { maxRowsPerCall: 2_000 })).toThrow(/more than maxRowsPerCall \(2000\); use encodeParquetAsync or encodeParquetFiles/);
    const one = await encodeParquetAsync(batches, { maxRowsPerCall: 2_000, rowGroupRows: 1_500 });
    const path = join(root, 'async.parquet');
    await new LocalObjectStore(root).put('async.parquet', one);
    const groups = await duck.rows<{ n: bigint }>(`SELECT row_group_num_rows AS n FROM parquet_metadata('${path}') GROUP BY row_group_id, n ORDER BY row_group_id`);
    expect(groups.map((g) => Number(g.n))).toEqual([1_500, 1_500, 1_500, 500]);
    const [c] = await duck.rows<{ n: bigint; d: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM read_parquet('${path}')`);
    expect([Number(c!.n), Number(c!.d)]).toEqual([5_000, 5_000]);
    // Same bytes as the one-call encoder when the input fits.
    expect(Buffer.compare(Buffer.from(await encodeParquetAsync(batches, { rowGroupRows: 1_500 })), Buffer.from(encodeParquet(batches, { rowGroupRows: 1_500 })))).toBe(0);
    const parts = encodeParquetFiles(batches, { maxRowsPerCall: 2_000 });
    expect(parts.map((p) => p.rows)).toEqual([2_000, 2_000, 1_000]);
    expect(parts.reduce((n, p) => n + decodeParquet(p.body).numRows, 0)).toBe(5_000);
  });
});

describe('DuckDB reads the lake', () => {
  const lake = join(root, 'lake');
  beforeAll(async () => {
    const store = new LocalObjectStore(lake);
    const committer = new TwoPhaseCommitter(store);
    const silver = silverRows({ rows: 4_000, seed: 11, startMs: T0, spanMs: 2 * 3_600_000, batchRows: 1_000 });
    const files: Array<{ key: string; body: Uint8Array; rows: number }> = [];
    const add = (table: TableName, time: number, name: string, batches: Parameters<typeof encodeParquet>[0], o?: ParquetOptions): void => {
      const body = encodeParquet(batches, { rowGroupRows: 1_000, ...o });
      files.push({ key: partKey(table, time, name), body, rows: Array.isArray(batches) ? batches.reduce((n, b) => n + b.numRows, 0) : batches.numRows });
    };
    // Two hours of silver split by event-time partition, bronze by receive time.
    const buffer = new PartitionBuffer();
    silver.forEach((b, i) => {
      buffer.addByTime('events', b, 'event_time', 0, i);
      buffer.addByTime('bronze_events', bronzeOf(b, 0, i), 'received_at', 0, i);
    });
    for (const g of buffer.takeDue(0, { force: true })) {
      add(g.table, g.partitionStartMs, partName(0, g.minOffset!, g.maxOffset!), g.batches, g.partitionStartMs > T0 && g.table === 'events' ? { compression: 'snappy' } : {});
    }
    add('dlq', T0, partName(0, 0, 0), [batchOf(dlqSchema, { received_at: [T0, T0 + 1], source: ['http', 'http'], write_key_id: ['k1', null], code: ['missing_field', 'bad_json'], message: ['userId or anonymousId required', 'not JSON'], raw: ['{}', '{'] })]);
    add('sessions', T0, partName(0, 0, 3), [
      batchOf(sessionsSchema, {
        session_id: ['s1'], user_id: ['u1'], session_start: [T0], session_end: [T0 + 90_000], duration_s: [90], event_count: [3n], bounce: [false],
        first_screen: ['Home'], last_screen: ['Cart'], device_type: ['ios'], app_version: ['2.0.0'], country: ['NL'],
      }),
    ]);
    const metrics = { window_start: [T0], device_type: ['ALL'], app_version: ['ALL'], country: ['ALL'], events: [10n], active_users: [4n], installs: [1n], sessions: [2n], screen_views: [5n], notification_views: [1n], notification_opens: [0n] };
    add('hourly_metrics', T0, 'part-gold.parquet', [batchOf(hourlyMetricsSchema, metrics)]);
    add('daily_metrics', T0, 'part-gold.parquet', [batchOf(dailyMetricsSchema, { ...metrics, avg_session_s: [45.5], bounce_rate: [0.5], notification_ctr: [null] })]);
    await committer.publish(await committer.stage(files, { id: 'fixture', kind: 'flush' }));
  });
  const firstFile = async (hour: number): Promise<string> => {
    const [f] = await new LocalObjectStore(lake).list(partKey('events', hour, ''));
    return join(lake, f!.key);
  };
  const rel = (table: TableName): string => glob(join(lake, TABLES[table].prefix), TABLES[table].granularity);
  const hive = { year: 'INTEGER', month: 'INTEGER', day: 'INTEGER', hour: 'INTEGER' };

  it('sees the documented schema of every table, column by column', async () => {
    const silverTypes = {
      event_id: 'VARCHAR', user_id: 'VARCHAR', anonymous_id: 'VARCHAR', event_type: 'VARCHAR', event_time: 'TIMESTAMP WITH TIME ZONE',
      received_at: 'TIMESTAMP WITH TIME ZONE', session_id: 'VARCHAR', device_type: 'VARCHAR', os: 'VARCHAR', app_version: 'VARCHAR',
      country: 'VARCHAR', source: 'VARCHAR', properties: 'VARCHAR',
    };
    expect(await typesOf(rel('events'))).toEqual({ ...silverTypes, ...hive });
    expect(await typesOf(rel('bronze_events'))).toEqual({ ...silverTypes, raw: 'VARCHAR', shard: 'INTEGER', log_offset: 'BIGINT', ...hive });
    expect(await typesOf(rel('dlq'))).toEqual({ received_at: 'TIMESTAMP WITH TIME ZONE', source: 'VARCHAR', write_key_id: 'VARCHAR', code: 'VARCHAR', message: 'VARCHAR', raw: 'VARCHAR', ...hive });
    const { hour: _h, ...dayHive } = hive;
    expect(await typesOf(rel('sessions'))).toEqual({
      session_id: 'VARCHAR', user_id: 'VARCHAR', session_start: 'TIMESTAMP WITH TIME ZONE', session_end: 'TIMESTAMP WITH TIME ZONE', duration_s: 'DOUBLE',
      event_count: 'BIGINT', bounce: 'BOOLEAN', first_screen: 'VARCHAR', last_screen: 'VARCHAR', device_type: 'VARCHAR', app_version: 'VARCHAR', country: 'VARCHAR', ...dayHive,
    });
    const metricTypes = {
      window_start: 'TIMESTAMP WITH TIME ZONE', device_type: 'VARCHAR', app_version: 'VARCHAR', country: 'VARCHAR', events: 'BIGINT', active_users: 'BIGINT',
      installs: 'BIGINT', sessions: 'BIGINT', screen_views: 'BIGINT', notification_views: 'BIGINT', notification_opens: 'BIGINT',
    };
    expect(await typesOf(rel('hourly_metrics'))).toEqual({ ...metricTypes, ...hive });
    expect(await typesOf(rel('daily_metrics'))).toEqual({ ...metricTypes, avg_session_s: 'DOUBLE', bounce_rate: 'DOUBLE', notification_ctr: 'DOUBLE', ...dayHive });
  });

  it('reads the values back exactly: rows, UTC millisecond times, partitions matching event time', async () => {
    const [c] = await duck.rows<{ n: bigint; d: bigint }>(`SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM ${rel('events')}`);
    expect([Number(c!.n), Number(c!.d)]).toEqual([4_000, 4_000]);
    const wrongPartition = await duck.rows(`SELECT event_id FROM ${rel('events')} WHERE hour <> hour(event_time) OR day <> day(event_time) OR month <> month(event_time)`);
    expect(wrongPartition).toEqual([]);
    const expected = new Table(silverRows({ rows: 4_000, seed: 11, startMs: T0, spanMs: 2 * 3_600_000, batchRows: 1_000 }));
    const first = expected.get(0)!;
    const [row] = await duck.rows<{ ms: bigint; event_type: string; country: string; properties: string }>(
      `SELECT epoch_ms(event_time) AS ms, event_type, country, properties FROM ${rel('events')} WHERE event_id = '${String(first.event_id)}'`,
    );
    expect(Number(row!.ms)).toBe(Number(first.event_time));
    expect([row!.event_type, row!.country, row!.properties]).toEqual([first.event_type, first.country, first.properties]);
    // Delta-packed integers decode exactly (bronze offsets, gold counters).
    const offsets = await duck.rows<{ shard: number; o: bigint; n: bigint }>(`SELECT shard, log_offset AS o, count(*) AS n FROM ${rel('bronze_events')} GROUP BY ALL ORDER BY o`);
    expect(offsets.map((r) => [r.shard, Number(r.o), Number(r.n)])).toEqual([0, 1, 2, 3].map((i) => [0, i, 1_000]));
    const [gold] = await duck.rows<{ events: bigint; installs: bigint; w: bigint }>(`SELECT events, installs, epoch_ms(window_start) AS w FROM ${rel('hourly_metrics')}`);
    expect([Number(gold!.events), Number(gold!.installs), Number(gold!.w)]).toEqual([10, 1, T0]);
    const [dlq] = await duck.rows<{ code: string; wk: string | null }>(`SELECT code, write_key_id AS wk FROM ${rel('dlq')} ORDER BY received_at DESC LIMIT 1`);
    expect(dlq).toEqual({ code: 'bad_json', wk: null });
  });

  it('writes TIMESTAMP(MILLIS, UTC), ZSTD by default, statistics, bounded row groups and dictionaries only where they pay', async () => {
    const file = await firstFile(T0);
    const schema = await duck.rows<{ name: string; type: string; converted_type: string; logical_type: string }>(`SELECT name, type, converted_type, logical_type FROM parquet_schema('${file}')`);
    const time = schema.find((s) => s.name === 'event_time')!;
    expect(time.type).toBe('INT64');
    expect(time.converted_type).toBe('TIMESTAMP_MILLIS');
    expect(time.logical_type).toContain('isAdjustedToUTC=1');
    expect(time.logical_type).toMatch(/MILLIS=MilliSeconds\(\)/);
    expect(schema.find((s) => s.name === 'event_type')!.converted_type).toBe('UTF8');
    const meta = await duck.rows<{ path_in_schema: string; compression: string; encodings: string; stats_min_value: string | null; row_group_num_rows: bigint }>(
      `SELECT path_in_schema, compression, encodings, stats_min_value, row_group_num_rows FROM parquet_metadata('${file}')`,
    );
    const of = (col: string): (typeof meta)[number] => meta.find((m) => m.path_in_schema === col)!;
    // ZSTD everywhere except delta-packed times, where a codec gains nothing.
    for (const m of meta) expect(m.compression, m.path_in_schema).toBe(['event_time', 'received_at'].includes(m.path_in_schema) ? 'UNCOMPRESSED' : 'ZSTD');
    expect(Math.max(...meta.map((m) => Number(m.row_group_num_rows)))).toBeLessThanOrEqual(1_000);
    // Min/max where they can prune (times, dimensions); none on random ids and free text.
    for (const col of ['event_time', 'received_at', 'event_type', 'device_type', 'os', 'app_version', 'country', 'source']) expect(of(col).stats_min_value, col).not.toBeNull();
    for (const col of ['event_id', 'user_id', 'session_id', 'properties']) expect(of(col).stats_min_value, col).toBeNull();
    for (const col of ['event_type', 'device_type', 'country', 'source']) expect(of(col).encodings, col).toMatch(/RLE_DICTIONARY/);
    for (const col of ['event_id', 'user_id', 'session_id', 'properties']) expect(of(col).encodings, col).not.toMatch(/DICTIONARY/);
    for (const col of ['event_time', 'received_at']) expect(of(col).encodings, col).toMatch(/DELTA_BINARY_PACKED/);
    const snappy = await firstFile(T0 + 3_600_000);
    expect((await duck.rows<{ c: string }>(`SELECT DISTINCT compression AS c FROM parquet_metadata('${snappy}') WHERE path_in_schema = 'properties'`)).map((r) => r.c)).toEqual(['SNAPPY']);
  });

  it('prunes by time: a filter on event_time skips row groups via statistics', async () => {
    const file = await firstFile(T0);
    const groups = await duck.rows<{ id: bigint; min: string; max: string }>(
      `SELECT row_group_id AS id, stats_min AS min, stats_max AS max FROM parquet_metadata('${file}') WHERE path_in_schema = 'event_time' ORDER BY id`,
    );
    expect(groups.length).toBe(2);
    // Rows are written in time order, so row groups cover disjoint time ranges DuckDB can skip.
    expect(groups[0]!.max <= groups[1]!.min).toBe(true);
  });
});
