/**
 * End to end: what a running Sluice (real server, engine and storage) writes is standard
 * Parquet that DuckDB reads with Hive partitioning, with the documented schema column by column.
 * (Storage-only checks of the same, and the late-trickle/compaction/crash cases, are in
 * parquet.test.ts and late-trickle.test.ts.)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { TABLES } from '../../common/lake-layout.js';
import { openLakeReader } from '../helpers/lake.js';

const roots: string[] = [];
const tempRoot = (): string => {
  const r = mkdtempSync(join(tmpdir(), 'sluice-pq-'));
  roots.push(r);
  return r;
};
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

const auth = `Basic ${Buffer.from('k:').toString('base64')}`;
const T0 = Date.UTC(2026, 4, 10, 9);

async function send(url: string, batch: unknown[]): Promise<void> {
  const res = await fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body: JSON.stringify({ batch }) });
  expect(res.status).toBe(200);
}

const ev = (i: number, t: number, user = `u${i % 13}`): Record<string, unknown> => ({
  type: i % 4 === 0 ? 'screen' : 'track',
  event: 'Button Clicked',
  name: 'Home',
  userId: user,
  messageId: `e-${i}`,
  timestamp: new Date(t).toISOString(),
  context: { device: { type: ['ios', 'android'][i % 2] }, app: { version: '2.0' }, location: { country: 'NL' }, os: { name: 'x' } },
  properties: { i },
});

describe('Parquet in the lake', () => {
  it('is read by DuckDB with hive partitioning and the documented types', async () => {
    const root = tempRoot();
    const s = await startSluice(composeServeConfig({ port: 0, data: join(root, 'd'), lake: join(root, 'lake'), shards: 2, workers: 1, flushInterval: '200ms', writeKeys: ['k'] }, {}), pino({ level: 'warn' }));
    await send(s.url, Array.from({ length: 300 }, (_, i) => ev(i, T0 + i * 60_000)));
    await send(s.url, [{ type: 'track', messageId: 'broken' }]);
    // Events far ahead on every shard move the watermarks past the sessions and windows above.
    await send(s.url, Array.from({ length: 8 }, (_, i) => ev(1000 + i, T0 + 10 * 3_600_000, `pusher-${i}`)));
    await s.close();
    const lake = await openLakeReader(join(root, 'lake'));
    try {
      const schemaOf = async (table: keyof typeof TABLES): Promise<Record<string, string>> =>
        Object.fromEntries((await lake.rows<{ column_name: string; column_type: string }>(`DESCRIBE SELECT * FROM ${lake.rel(table)}`)).map((r) => [r.column_name, r.column_type]));
      const silver = await schemaOf('events');
      expect(silver, JSON.stringify(silver)).toEqual({
        event_id: 'VARCHAR',
        user_id: 'VARCHAR',
        anonymous_id: 'VARCHAR',
        event_type: 'VARCHAR',
        event_time: 'TIMESTAMP WITH TIME ZONE',
        received_at: 'TIMESTAMP WITH TIME ZONE',
        session_id: 'VARCHAR',
        device_type: 'VARCHAR',
        os: 'VARCHAR',
        app_version: 'VARCHAR',
        country: 'VARCHAR',
        source: 'VARCHAR',
        properties: 'VARCHAR',
        year: 'INTEGER',
        month: 'INTEGER',
        day: 'INTEGER',
        hour: 'INTEGER',
      });
      const bronze = await schemaOf('bronze_events');
      expect(bronze.raw).toBe('VARCHAR');
      expect(bronze.shard).toBe('INTEGER');
      expect(bronze.log_offset).toBe('BIGINT');
      const sessions = await schemaOf('sessions');
      expect(sessions).toMatchObject({ session_id: 'VARCHAR', session_start: 'TIMESTAMP WITH TIME ZONE', duration_s: 'DOUBLE', event_count: 'BIGINT', bounce: 'BOOLEAN', first_screen: 'VARCHAR' });
      const hourly = await schemaOf('hourly_metrics');
      expect(hourly).toMatchObject({ window_start: 'TIMESTAMP WITH TIME ZONE', device_type: 'VARCHAR', events: 'BIGINT', active_users: 'BIGINT' });
      expect((await schemaOf('dlq')).code).toBe('VARCHAR');
      // Hive partitions match the rows' event time; timestamps are UTC ms.
      const bad = await lake.rows(`SELECT event_id FROM ${lake.rel('events')} WHERE hour <> hour(event_time AT TIME ZONE 'UTC') OR day <> day(event_time AT TIME ZONE 'UTC')`);
      expect(bad).toEqual([]);
      const [first] = await lake.rows<{ ms: bigint }>(`SELECT epoch_ms(event_time) AS ms FROM ${lake.rel('events')} WHERE event_id = 'e-0'`);
      expect(Number(first!.ms)).toBe(T0);
      // Physical types: TIMESTAMP(MILLIS, UTC), ZSTD.
      const meta = await lake.rows<{ name: string; converted_type: string; logical_type: string }>(`SELECT name, converted_type, logical_type FROM parquet_schema('${lake.files('events')[0]}') WHERE name = 'event_time'`);
      expect(meta[0]!.logical_type).toContain('isAdjustedToUTC=1');
      expect(meta[0]!.converted_type).toBe('TIMESTAMP_MILLIS');
      const codecs = await lake.rows<{ compression: string }>(`SELECT DISTINCT compression FROM parquet_metadata('${lake.files('events')[0]}') WHERE path_in_schema = 'properties'`);
      expect(codecs.map((c) => c.compression)).toEqual(['ZSTD']);
      const stats = await lake.rows<{ stats_min: string }>(`SELECT stats_min FROM parquet_metadata('${lake.files('events')[0]}') WHERE path_in_schema = 'event_time'`);
      expect(stats[0]!.stats_min).not.toBeNull();
    } finally {
      lake.close();
    }
  });

});
