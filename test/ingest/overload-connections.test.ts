/**
 * Many open connections (the real uWS server on loopback over real segment logs): /healthz and
 * /readyz still answer while 3,000 connections are open — idle keep-alive ones and slow bodies —
 * and ingest goes on; once the clients go away, every slot they held is released. Latency under
 * the storm is measured in bench/conn-storm.ts, not here.
 */
import { connect, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { basic, post, startHarness, track } from './harness.js';

const IDLE = 2000;
const SLOW = 1000;
/** Bounds: time to open the storm, and the load's requests. */
const OPEN_WITHIN_MS = 60_000;
const LOAD_REQUESTS = 40;

describe('overload: 3,000 open connections', () => {
  it('answers /healthz and /readyz 200 and keeps acknowledging while 2,000 idle keep-alive and 1,000 slow-body connections are open, and releases every slot when they close', async () => {
    const s = await startHarness({ bodyTimeoutMs: 60_000 });
    const port = Number(new URL(s.url).port);
    const sockets: Socket[] = [];
    let connected = 0;
    let idleAnswered = 0;
    try {
      const open = (kind: 'idle' | 'slow'): void => {
        const sock = connect({ host: '127.0.0.1', port });
        sockets.push(sock);
        sock.on('error', () => undefined);
        sock.on('connect', () => {
          connected++;
          if (kind === 'idle') sock.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
          else sock.write(`POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${basic()}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"batch":[`);
        });
        if (kind === 'idle') sock.on('data', (d: Buffer) => void (d.toString('latin1', 0, 12) === 'HTTP/1.1 200' && idleAnswered++));
      };
      for (let i = 0; i < IDLE + SLOW; i++) {
        open(i < IDLE ? 'idle' : 'slow');
        if (i % 200 === 199) await new Promise((r) => setTimeout(r, 20));
      }
      for (const stop = Date.now() + OPEN_WITHIN_MS; (connected < IDLE + SLOW || idleAnswered < IDLE) && Date.now() < stop; ) await new Promise((r) => setTimeout(r, 50));
      expect(connected).toBe(IDLE + SLOW);
      expect(idleAnswered).toBe(IDLE);

      // Load and probes while all of them are open.
      let acked = 0;
      const load = (async () => {
        for (let n = 0; n < LOAD_REQUESTS; n++) {
          const r = await post(`${s.url}/v1/batch`, JSON.stringify({ batch: Array.from({ length: 20 }, (_, i) => track(n * 20 + i)) }), { authorization: basic() });
          if (r.status === 200) acked += 20;
        }
      })();
      const health = await fetch(`${s.url}/healthz`);
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ ok: true });
      expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
      await load;
      expect(acked).toBe(LOAD_REQUESTS * 20);
      expect((await fetch(`${s.url}/healthz`)).status).toBe(200);
      const during = await (await fetch(`${s.url}/metrics`)).text();
      expect(Number(/^sluice_ingest_in_flight_requests (\S+)$/m.exec(during)?.[1])).toBeGreaterThanOrEqual(SLOW);

      // The clients go away: every slow body's slot is released (a reset mid-body is an abort).
      for (const sock of sockets) sock.destroy();
      let inFlight = NaN;
      for (const stop = Date.now() + 30_000; Date.now() < stop; ) {
        inFlight = Number(/^sluice_ingest_in_flight_requests (\S+)$/m.exec(await (await fetch(`${s.url}/metrics`)).text())?.[1]);
        if (inFlight === 0) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(inFlight).toBe(0);
    } finally {
      for (const sock of sockets) sock.destroy();
      await s.close();
    }
  }, 120_000);
});
