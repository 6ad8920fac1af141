/**
 * The load generator's warm-up: acks of the batches meant for the first warmupMs of a run are kept
 * out of the latency percentiles and reported apart (against the recording uWS server).
 */
import { describe, expect, it } from 'vitest';
import { main } from '../../cli/main.js';
import { runLoadgen } from '../../loadgen/run.js';
import { startRecordingServer } from './recording-server.js';

const KEY = 'lg-warmup-key';

describe('loadgen warm-up', () => {
  it('open loop: batches intended in the warm-up go to their own histogram, the rest to the percentiles', async () => {
    const server = await startRecordingServer({ writeKey: KEY });
    try {
      // 4000 ev/s in batches of 50: one batch every 12.5 ms of intended time, so 8 of the 16
      // batches are intended within the first 100 ms, whenever their acks come back.
      const s = await runLoadgen({ url: server.url, writeKey: KEY, protocol: 'ndjson', rate: 4000, events: 800, durationMs: 30_000, warmupMs: 100, users: 100, connections: 2, batchSize: 50 });
      expect(s).toMatchObject({ sent: 800, acked: 800, failed: 0, requests: 16 });
      expect(s.warmupLatencyMs.count).toBe(8);
      expect(s.latencyMs.count).toBe(8);
      expect(s.warmupLatencyMs.max).toBeGreaterThan(0);
    } finally {
      server.close();
    }
  });

  it('without a warm-up every ack is in the percentiles', async () => {
    const server = await startRecordingServer({ writeKey: KEY });
    try {
      const s = await runLoadgen({ url: server.url, writeKey: KEY, protocol: 'http', rate: 4000, events: 400, durationMs: 30_000, users: 100, connections: 2, batchSize: 50 });
      expect(s.latencyMs.count).toBe(8);
      expect(s.warmupLatencyMs.count).toBe(0);
    } finally {
      server.close();
    }
  });

  it('sluice loadgen --warmup: the warm-up\'s acks are printed on their own line, not in the percentiles', async () => {
    const server = await startRecordingServer({ writeKey: KEY });
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((c: string | Uint8Array) => (out.push(String(c)), true)) as typeof process.stdout.write;
    try {
      await main(['loadgen', '--url', server.url, '--write-key', KEY, '--protocol', 'ndjson', '--rate', '4000', '--events', '800', '--duration', '30s', '--warmup', '100ms', '--users', '100', '--connections', '2']);
    } finally {
      process.stdout.write = write;
      server.close();
    }
    const text = out.join('');
    expect(text).toMatch(/ack p50\/p90\/p99\/p99\.9\/max .* over 8 requests/);
    expect(text).toMatch(/warm-up +p50\/p99\/max .* over 8 requests \(not in the line above\)/);
  });

  it('exits 1 when events were given up on, naming the server it could not reach', async () => {
    const out: string[] = [];
    const write = process.stdout.write.bind(process.stdout);
    process.stdout.write = ((c: string | Uint8Array) => (out.push(String(c)), true)) as typeof process.stdout.write;
    const before = process.exitCode;
    try {
      await main(['loadgen', '--url', 'http://127.0.0.1:1', '--write-key', KEY, '--events', '20', '--max-retries', '0', '--workers', '1', '--connections', '1']);
      expect(process.exitCode).toBe(1);
    } finally {
      process.stdout.write = write;
      process.exitCode = before;
    }
    expect(out.join('')).toMatch(/failed 20/);
    expect(out.join('')).toContain('error      connection to http://127.0.0.1:1 failed 1 times (is sluice serve running there?)');
  });

  it('rejects a warm-up as long as the run', async () => {
    await expect(runLoadgen({ url: 'http://127.0.0.1:1', writeKey: KEY, durationMs: 1000, warmupMs: 1000 })).rejects.toThrow('--warmup (1000 ms) must be shorter than --duration (1000 ms)');
  });
});
