/**
 * `/v1/live`'s eventsPerSecond falls to 0 once the engine has processed nothing for two seconds
 * (it stayed at the last busy second's rate for as long as traffic was stopped).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { composeServeConfig } from '../../cli/config.js';
import { startSluice } from '../../cli/serve.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-live-rate-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('/v1/live eventsPerSecond', () => {
  it('is the recent rate while events come, and 0 once they stop', async () => {
    const s = await startSluice(
      composeServeConfig({ port: 0, data: join(root, 'data'), lake: join(root, 'lake'), shards: 1, workers: 1, flushInterval: '200ms', engineMode: 'inline', writeKeys: ['k'] }, {}),
      pino({ level: 'warn' }),
    );
    const live = async (): Promise<{ eventsPerSecond: number; processedTotal: number }> => (await (await fetch(`${s.url}/v1/live`)).json()) as { eventsPerSecond: number; processedTotal: number };
    try {
      let seq = 0;
      for (let i = 0; i < 12; i++) {
        const batch = Array.from({ length: 50 }, () => ({ type: 'track', event: 'Product Clicked', userId: `u${seq % 7}`, messageId: `m${seq++}`, timestamp: new Date(Date.now() - 60_000).toISOString() }));
        const res = await fetch(`${s.url}/v1/batch`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer k' }, body: JSON.stringify({ batch }) });
        expect(res.status).toBe(200);
        await delay(150);
      }
      await s.coordinator!.drain();
      const busy = await live();
      expect(busy.processedTotal).toBe(600);
      expect(busy.eventsPerSecond).toBeGreaterThan(0);
      await delay(2500);
      expect((await live()).eventsPerSecond).toBe(0);
    } finally {
      await s.close();
    }
  }, 60_000);
});
