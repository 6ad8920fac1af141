/**
 * The load generator's clients against a real uWebSockets.js server that validates like Sluice's
 * ingest and records what arrived: every protocol delivers exactly the generated events, retries
 * honour 429 + Retry-After, lost sockets are resent, the histogram has one sample per ack, and
 * the truth file holds exactly the acknowledged valid events.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DuckDBInstance } from '@duckdb/node-api';
import { generateEvents, type GeneratedEvent } from '../../loadgen/generator.js';
import { runLoadgen, type LoadgenOptions, type LoadgenProtocol } from '../../loadgen/run.js';
import { startRecordingServer, type RecordingServer } from './recording-server.js';

const KEY = 'lg-test-key';
const START = Date.UTC(2026, 2, 1, 8);
const root = mkdtempSync(join(tmpdir(), 'sluice-loadgen-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const knobs = { duplicateRate: 0.05, invalidRate: 0.03, lateRate: 0.02, tooLateRate: 0.01, jitterMs: 5000 };
const base = (server: RecordingServer, protocol: LoadgenProtocol): Partial<LoadgenOptions> => ({
  url: server.url,
  writeKey: KEY,
  protocol,
  events: 1500,
  durationMs: 60_000,
  users: 200,
  seed: 9,
  workers: 1,
  connections: 3,
  batchSize: 40,
  startTime: START,
  stepMs: 1000,
  ...knobs,
});

/** What the generator makes for the same options (one partition, same clock). */
const expected = (n: number, partition = 0, partitions = 1): GeneratedEvent[] =>
  generateEvents({ seed: 9, users: 200, startTime: START, stepMs: 1000 * partitions, partition, partitions, ...knobs }, n);

const idOf = (protocol: string, item: Record<string, unknown>): string => String(protocol === 'segment' ? item.messageId : item.event_id);

async function rows<T>(sql: string): Promise<T[]> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    return (await conn.runAndReadAll(sql)).getRowObjects() as T[];
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

describe('loadgen clients against a recording uWS server', () => {
  it.each<LoadgenProtocol>(['http', 'ndjson', 'arrow-ws'])('%s: the server receives exactly the generated events, acks match, truth = acked valid events', async (protocol) => {
    const server = await startRecordingServer({ writeKey: KEY });
    const truth = join(root, `truth-${protocol}.parquet`);
    try {
      const s = await runLoadgen({ ...base(server, protocol), truth });
      const want = expected(1500);
      const got = server.acked.flatMap((r) => r.items.map((item) => ({ protocol: r.protocol, item })));
      // Same multiset of event ids (duplicates included), whatever the connections' interleaving.
      expect(got.map((g) => idOf(g.protocol, g.item)).sort()).toEqual(want.map((e) => e.message.messageId).sort());
      if (protocol === 'http') {
        // Segment bodies carry the generated messages byte for byte.
        const byId = new Map(want.map((e) => [e.message.messageId, JSON.stringify(e.message)]));
        for (const g of got) expect(JSON.stringify(g.item)).toBe(byId.get(String(g.item.messageId)));
      } else {
        // Canonical rows carry the true event time and the dimensions.
        const byId = new Map(want.filter((e) => e.kind !== 'invalid').map((e) => [e.message.messageId, e]));
        for (const g of got) {
          const e = byId.get(String(g.item.event_id));
          if (!e) continue;
          expect(g.item.event_time).toBe(e.eventTime);
          expect(g.item.user_id ?? g.item.anonymous_id).toBe(e.userId);
          expect(g.item.event_type).toBe(e.eventType);
          expect(g.item.device_type).toBe(e.message.context.device.type);
          expect(g.item.country).toBe(e.message.context.location.country);
        }
      }
      const invalid = want.filter((e) => e.kind === 'invalid').length;
      const duplicates = want.filter((e) => e.kind === 'duplicate').length;
      const rejectedIds = new Set(server.acked.flatMap((r) => r.rejected.map((i) => idOf(r.protocol, r.items[i]!))));
      expect(rejectedIds).toEqual(new Set(want.filter((e) => e.kind === 'invalid').map((e) => e.message.messageId)));
      expect(s).toMatchObject({ sent: 1500, acked: 1500 - invalid, rejected: invalid, invalidSent: invalid, duplicatesSent: duplicates, failed: 0, retried: 0, rejectedValid: 0, acceptedInvalid: 0 });
      expect(s.requests).toBe(server.acked.length);
      expect(s.latencyMs.count).toBe(server.acked.length);
      expect(s.latencyMs.max).toBeGreaterThan(0);
      // Truth: each valid event once, with its true time and generator session.
      const validIds = want.filter((e) => e.kind === 'valid').map((e) => e.message.messageId);
      expect(s.truthRows).toBe(validIds.length);
      const t = await rows<{ event_id: string; t: bigint; session_no: number }>(`SELECT event_id, epoch_ms(event_time) AS t, session_no FROM '${truth}'`);
      expect(t.map((r) => r.event_id).sort()).toEqual([...validIds].sort());
      const wantById = new Map(want.map((e) => [e.message.messageId, e]));
      for (const r of t) {
        expect(Number(r.t)).toBe(wantById.get(r.event_id)!.eventTime);
        expect(r.session_no).toBe(wantById.get(r.event_id)!.sessionNo);
      }
      const sessions = await rows<{ n: bigint; events: bigint }>(`SELECT count(*) AS n, sum(event_count) AS events FROM '${truth.replace(/\.parquet$/, '.sessions.parquet')}'`);
      expect(Number(sessions[0]!.events)).toBe(validIds.length);
      expect(Number(sessions[0]!.n)).toBe(new Set(want.filter((e) => e.kind === 'valid').map((e) => `${e.userId}#${e.sessionNo}`)).size);
    } finally {
      server.close();
    }
  });

  it('http: 429 with Retry-After is retried after the wait, counted, and inside the batch latency', async () => {
    const server = await startRecordingServer({ writeKey: KEY, throttleFirst: 2, retryAfterS: 1 });
    try {
      const s = await runLoadgen({ ...base(server, 'http'), events: 400, connections: 1 });
      expect(s).toMatchObject({ sent: 400, failed: 0, retried: 2, throttled: 2 });
      expect(s.acked + s.rejected).toBe(400);
      // Each throttled body came back no sooner than Retry-After.
      for (const th of server.throttled) {
        const times = server.arrivals.get(th.body)!;
        expect(times.length).toBeGreaterThanOrEqual(2);
        for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(1000);
      }
      // The wait counts as latency of that batch (measured from its intended send time).
      expect(s.latencyMs.max).toBeGreaterThanOrEqual(1000);
    } finally {
      server.close();
    }
  });

  it('arrow-ws: throttled acks are retried; a dropped socket is reconnected and its pending batches resent', async () => {
    const server = await startRecordingServer({ writeKey: KEY, throttleFirst: 1, retryAfterS: 1, closeWsOnMessage: 5 });
    try {
      const s = await runLoadgen({ ...base(server, 'arrow-ws'), events: 600, connections: 2, duplicateRate: 0, invalidRate: 0 });
      expect(s.failed).toBe(0);
      expect(s.throttled).toBe(1);
      expect(s.retried).toBeGreaterThanOrEqual(3); // 1 throttled + one per batch pending on each dropped socket
      expect(server.closedSockets).toBe(2);
      expect(s.acked).toBe(600);
      const ids = server.acked.flatMap((r) => r.items.map((i) => String(i.event_id)));
      expect(new Set(ids).size).toBe(600);
      expect(ids.length).toBe(600);
    } finally {
      server.close();
    }
  });

  it('worker threads: partition k sends users ≡ k (mod W); the union is the generator output of each partition', async () => {
    const server = await startRecordingServer({ writeKey: KEY });
    try {
      const s = await runLoadgen({ ...base(server, 'http'), workers: 2, events: 800 });
      expect(s).toMatchObject({ sent: 800, failed: 0, workers: 2 });
      const got = server.acked.flatMap((r) => r.items.map((i) => String(i.messageId))).sort();
      const want = [...expected(400, 0, 2), ...expected(400, 1, 2)].map((e) => e.message.messageId).sort();
      expect(got).toEqual(want);
      for (const r of server.acked) {
        for (const item of r.items) {
          const user = String(item.userId ?? item.anonymousId ?? '');
          const m = /^(?:user|anon)-(\d+)$/.exec(user);
          if (m) expect(Number(m[1]) % 2).toBe(Number(String(item.messageId).slice(9, 13)));
        }
      }
    } finally {
      server.close();
    }
  });

  it('open loop: --rate paces batches and every ack is one histogram sample', async () => {
    const server = await startRecordingServer({ writeKey: KEY });
    try {
      const s = await runLoadgen({ url: server.url, writeKey: KEY, protocol: 'ndjson', rate: 4000, events: 800, durationMs: 30_000, users: 100, connections: 2, batchSize: 50 });
      expect(s).toMatchObject({ sent: 800, acked: 800, failed: 0 });
      expect(s.latencyMs.count).toBe(16);
      expect(server.acked.length).toBe(16);
    } finally {
      server.close();
    }
  });

  it('a refused write key stops the run with a user error that says what to do', async () => {
    const server = await startRecordingServer({ writeKey: KEY });
    try {
      await expect(runLoadgen({ ...base(server, 'http'), writeKey: 'wrong' })).rejects.toMatchObject({ domain: 'user', code: 'unauthorized', message: expect.stringMatching(/--write-key/) });
      await expect(runLoadgen({ ...base(server, 'arrow-ws'), writeKey: 'wrong' })).rejects.toMatchObject({ domain: 'user', code: 'unauthorized' });
    } finally {
      server.close();
    }
  });
});
