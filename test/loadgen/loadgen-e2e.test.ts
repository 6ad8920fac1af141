/**
 * The load generator in-process against a real Sluice, per protocol: the truth file (every
 * valid event once) must equal silver.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';
import { runLoadgen, type LoadgenProtocol } from '../../loadgen/run.js';
import { openLakeReader } from '../helpers/lake.js';

const roots: string[] = [];
afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

describe('loadgen against a real server', () => {
  it.each<LoadgenProtocol>(['http', 'ndjson', 'arrow-ws'])('%s: silver holds exactly the truth', async (protocol) => {
    const root = mkdtempSync(join(tmpdir(), 'sluice-lg-'));
    roots.push(root);
    const config = composeServeConfig({ port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 4, workers: 2, flushInterval: '300ms', writeKeys: ['lg-key'] }, {});
    const sluice = await startSluice(config, pino({ level: 'warn' }));
    const truth = join(root, 'truth.parquet');
    const summary = await runLoadgen({
      url: sluice.url,
      writeKey: 'lg-key',
      protocol,
      events: 3000,
      durationMs: 20_000,
      users: 300,
      seed: 5,
      workers: 1,
      connections: 4,
      batchSize: 50,
      duplicateRate: 0.05,
      invalidRate: 0.02,
      lateRate: 0.02,
      tooLateRate: 0.01,
      jitterMs: 5000,
      clockSkewMs: 0,
      startTime: Date.UTC(2026, 2, 1, 8),
      stepMs: 2000,
      truth,
    });
    await sluice.close();
    expect(summary.sent).toBe(3000);
    expect(summary.failed).toBe(0);
    expect(summary.rejected).toBe(summary.invalidSent);
    expect(summary.acked).toBe(summary.sent - summary.invalidSent);
    const lake = await openLakeReader(join(root, 'lake'));
    try {
      const missing = await lake.rows(`SELECT event_id FROM '${truth}' EXCEPT SELECT event_id FROM ${lake.rel('events')}`);
      const extra = await lake.rows(`SELECT event_id FROM ${lake.rel('events')} EXCEPT SELECT event_id FROM '${truth}'`);
      const [dups] = await lake.rows<{ n: bigint }>(`SELECT count(*) - count(DISTINCT event_id) AS n FROM ${lake.rel('events')}`);
      expect(missing).toEqual([]);
      expect(extra).toEqual([]);
      expect(Number(dups!.n)).toBe(0);
      const [t] = await lake.rows<{ n: bigint }>(`SELECT count(*) AS n FROM '${truth}'`);
      expect(Number(t!.n)).toBe(summary.truthRows);
      // Times and dimensions agree with the truth too.
      const diff = await lake.rows(`SELECT t.event_id FROM '${truth}' t JOIN ${lake.rel('events')} s USING (event_id)
        WHERE epoch_ms(t.event_time) <> epoch_ms(s.event_time) OR t.event_type <> s.event_type OR t.device_type <> s.device_type OR t.country <> s.country`);
      expect(diff).toEqual([]);
    } finally {
      lake.close();
    }
  });
});
