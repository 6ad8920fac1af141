/**
 * The real Segment and RudderStack Node SDKs, pointed at Sluice with nothing but a host change.
 * (RudderStack gzips by default and labels the JSON `application/x-www-form-urlencoded`;
 * Segment sends writeKey and sentAt in the body.)
 */
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Analytics } from '@segment/analytics-node';
import { startHarness as startTestIngest, WRITE_KEY, type Harness as TestIngest } from './harness.js';

const require = createRequire(import.meta.url);

describe('SDK compatibility', () => {
  let s: TestIngest;
  beforeAll(async () => {
    s = await startTestIngest();
  });
  afterAll(async () => {
    await s.close();
  });

  it('@segment/analytics-node delivers track, screen-like page, identify and group calls', async () => {
    const analytics = new Analytics({ writeKey: WRITE_KEY, host: s.url, flushAt: 10, maxRetries: 0 });
    const errors: unknown[] = [];
    analytics.on('error', (e) => errors.push(e));
    analytics.track({ userId: 'seg-1', event: 'Order Completed', properties: { revenue: 42 }, messageId: 'seg-track-1', context: { device: { type: 'server' } } });
    analytics.page({ userId: 'seg-1', name: 'Pricing', messageId: 'seg-page-1' });
    analytics.identify({ userId: 'seg-1', traits: { plan: 'pro' }, messageId: 'seg-identify-1' });
    analytics.group({ userId: 'seg-1', groupId: 'g1', messageId: 'seg-group-1' });
    await analytics.closeAndFlush({ timeout: 10_000 });
    expect(errors).toEqual([]);
    const rows = await s.loggedEvents();
    const byId = new Map(rows.map((r) => [r.event_id, r]));
    expect(byId.get('seg-track-1')).toMatchObject({ user_id: 'seg-1', event_type: 'Order Completed', device_type: 'server' });
    expect(byId.get('seg-page-1')).toMatchObject({ event_type: 'page' });
    expect(byId.get('seg-identify-1')).toMatchObject({ event_type: 'identify' });
    expect(byId.get('seg-group-1')).toMatchObject({ event_type: 'group' });
  });

  it('@rudderstack/rudder-sdk-node delivers gzip-compressed batches', async () => {
    const Rudder = require('@rudderstack/rudder-sdk-node') as new (key: string, opts: Record<string, unknown>) => {
      track(m: Record<string, unknown>): void;
      screen(m: Record<string, unknown>): void;
      flush(cb?: (err?: unknown) => void): Promise<unknown>;
    };
    const errors: unknown[] = [];
    const client = new Rudder(WRITE_KEY, { dataPlaneUrl: s.url, flushAt: 100, flushInterval: 60_000, retryCount: 0, logLevel: 'error', errorHandler: (e: unknown) => errors.push(e) });
    client.track({ userId: 'rs-1', event: 'Push Notification Tapped', messageId: 'rs-track-1', properties: { campaign: 'x' } });
    client.screen({ userId: 'rs-1', name: 'Home', messageId: 'rs-screen-1' });
    await new Promise<void>((resolve, reject) => void client.flush((err) => (err ? reject(err) : resolve())));
    expect(errors).toEqual([]);
    const rows = await s.loggedEvents();
    const byId = new Map(rows.map((r) => [r.event_id, r]));
    expect(byId.get('rs-track-1')).toMatchObject({ user_id: 'rs-1', event_type: 'Push Notification Tapped' });
    expect(byId.get('rs-screen-1')).toMatchObject({ event_type: 'screen' });
    expect(JSON.parse(String(byId.get('rs-screen-1')!.properties)).name).toBe('Home');
  });
});
