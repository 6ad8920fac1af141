/**
 * Connection storm: does `/healthz` (and `/readyz`) answer promptly while thousands of loopback
 * connections are open and the server is under load? (issue 14 measured up to 7.7 s with 3,000.)
 *
 *   node --import tsx bench/conn-storm.ts [--connections 3000] [--rate 5000] [--phase 20s] [--rounds 3] [--out FILE.json]
 *
 * Starts `sluice serve` (compiled: `npm run build` first; the engine in its own process) in a temp
 * directory, then for each round runs three phases of `--phase` each:
 *   quiet        no load, no storm (the reference of the round)
 *   load         the load generator at `--rate` Segment events/s (two worker threads, so the
 *                probes' thread is not the one generating)
 *   storm+load   the same load plus `--connections` sockets: ⅔ idle keep-alive (one GET, then
 *                silent; reopened when the server closes them), ⅓ slow bodies (a POST that
 *                declares 100 KB and trickles 64 B/s; the server answers 408 after its body
 *                timeout, and the socket is reopened)
 * A probe opens a fresh connection every 100 ms for GET /healthz (as a load balancer does) and
 * every 500 ms for /readyz, launched on schedule whether or not earlier ones answered (no
 * coordinated omission), from its own thread. Each phase ends with a /metrics scrape: the ack
 * thread's event-loop delay (p99, max) over the phase tells the server's share of the latency. Prints per phase p50/p90/p99/max over the rounds' probes, the median
 * per-round p99, and ratios to the quiet phase of the same rounds.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Socket } from 'node:net';
import { benchArgs } from './args.js';
import { Worker } from 'node:worker_threads';
import { parseDuration } from '../common/duration.js';
import { runLoadgen } from '../loadgen/run.js';
import { metricValue, percentile, startServe, type ServeChild } from './serve-child.js';

const { values: flags } = benchArgs(import.meta.url, {
  options: {
    connections: { type: 'string', default: '3000' },
    rate: { type: 'string', default: '5000' },
    phase: { type: 'string', default: '20s' },
    rounds: { type: 'string', default: '3' },
    out: { type: 'string' },
  },
});
const CONNECTIONS = Number(flags.connections);
const RATE = Number(flags.rate);
const PHASE_MS = parseDuration(flags.phase!, '--phase');
const ROUNDS = Number(flags.rounds);
const KEY = 'wk_storm';
const AUTH = `Basic ${Buffer.from(`${KEY}:`).toString('base64')}`;
/** Probes in the first seconds of a phase are left out (the load generator's threads start). */
const WARMUP_MS = 3000;
const PROBE_TIMEOUT_MS = 30_000;

type Phase = 'quiet' | 'load' | 'storm+load';

/** The storm's sockets: kept at `count` open until stop(). */
class Storm {
  private readonly sockets = new Set<Socket>();
  private running = true;
  private timers = new Set<NodeJS.Timeout>();
  opened = 0;
  closedByServer = 0;
  answered408 = 0;

  constructor(
    private readonly port: number,
    count: number,
  ) {
    // Open in waves, so the listen backlog is not the thing measured.
    for (let i = 0; i < count; i++) this.later(() => this.open(i % 3 === 2 ? 'slow' : 'idle'), Math.floor(i / 200) * 50);
  }

  private open(kind: 'idle' | 'slow'): void {
    {
      if (!this.running) return;
      const s = connect({ host: '127.0.0.1', port: this.port });
      this.sockets.add(s);
      this.opened++;
      let trickle: NodeJS.Timeout | undefined;
      s.on('connect', () => {
        if (kind === 'idle') s.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n');
        else {
          s.write(`POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${AUTH}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"batch":[`);
          trickle = setInterval(() => s.write(' '.repeat(64)), 1000);
        }
      });
      s.on('data', (d: Buffer) => {
        if (d.toString('latin1', 0, 12) === 'HTTP/1.1 408') this.answered408++;
      });
      s.on('error', () => undefined);
      s.on('close', () => {
        clearInterval(trickle);
        this.sockets.delete(s);
        if (!this.running) return;
        this.closedByServer++;
        this.later(() => this.open(kind), 100);
      });
    }
  }

  get size(): number {
    return this.sockets.size;
  }

  stop(): void {
    this.running = false;
    for (const t of this.timers) clearTimeout(t);
    for (const s of this.sockets) s.destroy();
  }

  private later(f: () => void, ms: number): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      f();
    }, ms);
    this.timers.add(t);
  }
}

interface Probe {
  /** ms since the prober started. */
  at: number;
  path: string;
  /** ms from connect() to the status line, or null when it timed out. */
  ms: number | null;
  /** ms from connect() to the connection being established. */
  connectMs: number | null;
  status: number;
}

interface Sample extends Probe {
  round: number;
  phase: Phase;
}

/**
 * The probes run in their own thread (plain JavaScript, no loader), so neither the storm's
 * sockets nor anything else on the benchmark's main thread delays them.
 */
const PROBER = `
const { parentPort, workerData } = require('node:worker_threads');
const { connect } = require('node:net');
const t0 = performance.now();
const out = [];
const pending = new Set();
const shoot = (path) => {
  const started = performance.now();
  const p = new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port: workerData.port });
    let buf = '';
    let connectMs = null;
    const done = (status, ok) => {
      clearTimeout(timer);
      sock.destroy();
      out.push({ at: started - t0, path, ms: ok ? performance.now() - started : null, connectMs, status });
      resolve();
    };
    const timer = setTimeout(() => done(0, false), workerData.timeoutMs);
    sock.setNoDelay(true);
    sock.on('connect', () => {
      connectMs = performance.now() - started;
      sock.write('GET ' + path + ' HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n');
    });
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const m = /^HTTP\\/1\\.1 (\\d{3})/.exec(buf);
      if (m) done(Number(m[1]), true);
    });
    sock.on('error', () => done(0, true));
  });
  pending.add(p);
  p.then(() => pending.delete(p));
};
let tick = 0;
const timer = setInterval(() => {
  shoot('/healthz');
  if (tick++ % 5 === 0) shoot('/readyz');
}, 100);
parentPort.on('message', async () => {
  clearInterval(timer);
  await Promise.all([...pending]);
  parentPort.postMessage(out);
});
`;

function startProber(port: number): { stop(): Promise<Probe[]> } {
  const w = new Worker(PROBER, { eval: true, workerData: { port, timeoutMs: PROBE_TIMEOUT_MS } });
  return {
    stop: () =>
      new Promise<Probe[]>((resolve) => {
        w.once('message', (m: Probe[]) => {
          void w.terminate();
          resolve(m);
        });
        w.postMessage('stop');
      }),
  };
}

async function runPhase(
  server: ServeChild,
  round: number,
  phase: Phase,
  samples: Sample[],
  seed: number,
): Promise<{ openAtEnd: number; loopDelayMaxMs: number; loopDelayP99Ms: number; storm?: { opened: number; closedByServer: number; answered408: number } }> {
  const abort = new AbortController();
  await (await fetch(`${server.url}/metrics`)).text(); // resets the loop-delay window
  const load =
    phase === 'quiet'
      ? undefined
      : runLoadgen({ url: server.url, writeKey: KEY, protocol: 'http', rate: RATE, durationMs: PHASE_MS + 5000, users: 10_000, seed, workers: 2, connections: 8, batchSize: 50, signal: abort.signal, maxRetries: 10 });
  const storm = phase === 'storm+load' ? new Storm(server.port, CONNECTIONS) : undefined;
  const prober = startProber(server.port);
  await new Promise((r) => setTimeout(r, PHASE_MS));
  const probes = await prober.stop();
  for (const p of probes) if (p.at >= WARMUP_MS) samples.push({ round, phase, ...p });
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  const loopDelayMaxMs = metricValue(metrics, 'sluice_ingest_event_loop_delay_seconds', 'quantile="max"') * 1000;
  const loopDelayP99Ms = metricValue(metrics, 'sluice_ingest_event_loop_delay_seconds', 'quantile="0.99"') * 1000;
  const openAtEnd = storm?.size ?? 0;
  storm?.stop();
  abort.abort();
  await load?.catch(() => undefined);
  return { openAtEnd, loopDelayMaxMs, loopDelayP99Ms, storm: storm && { opened: storm.opened, closedByServer: storm.closedByServer, answered408: storm.answered408 } };
}

const fmt = (x: number): string => (Number.isNaN(x) ? '–' : x < 10 ? x.toFixed(2) : x.toFixed(0));

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'sluice-storm-'));
  const server = await startServe(['--data', join(root, 'data'), '--lake', join(root, 'lake'), '--write-key', KEY], join(root, 'serve.log'));
  const samples: Sample[] = [];
  const phases: Array<{ round: number; phase: Phase; openAtEnd: number; loopDelayMaxMs: number; loopDelayP99Ms: number; storm?: unknown }> = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const phase of ['quiet', 'load', 'storm+load'] as const) {
        const r = await runPhase(server, round, phase, samples, 100 + round);
        phases.push({ round, phase, ...r });
        process.stderr.write(`round ${round} ${phase}: ${samples.filter((s) => s.round === round && s.phase === phase).length} probes, open storm sockets at end ${r.openAtEnd}, ack-thread loop delay p99 ${fmt(r.loopDelayP99Ms)} ms max ${fmt(r.loopDelayMaxMs)} ms\n`);
        // Let the storm's sockets close before the next phase.
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  } finally {
    await server.stop(120_000);
    rmSync(root, { recursive: true, force: true });
  }
  const rows: Array<Record<string, unknown>> = [];
  const loop = (phase: Phase, k: 'loopDelayMaxMs' | 'loopDelayP99Ms'): number => percentile(phases.filter((p) => p.phase === phase).map((p) => p[k]), 50);
  for (const path of ['/healthz', '/readyz']) {
    const quietP99 = (round: number): number => percentile(samples.filter((s) => s.round === round && s.phase === 'quiet' && s.path === path && s.ms !== null).map((s) => s.ms!), 99);
    for (const phase of ['quiet', 'load', 'storm+load'] as const) {
      const of = samples.filter((s) => s.phase === phase && s.path === path);
      const ms = of.filter((s) => s.ms !== null).map((s) => s.ms!);
      const perRound = Array.from({ length: ROUNDS }, (_, r) => percentile(of.filter((s) => s.round === r && s.ms !== null).map((s) => s.ms!), 99));
      const ratios = perRound.map((p, r) => p / quietP99(r));
      rows.push({
        path,
        phase,
        probes: of.length,
        timeouts: of.filter((s) => s.ms === null).length,
        statuses: [...new Set(of.map((s) => s.status))].join('/'),
        p50: percentile(ms, 50),
        p90: percentile(ms, 90),
        p99: percentile(ms, 99),
        max: Math.max(...ms),
        connectP99: percentile(of.filter((s) => s.connectMs !== null).map((s) => s.connectMs!), 99),
        medianRoundP99: percentile(perRound, 50),
        medianP99VsQuiet: percentile(ratios, 50),
      });
    }
  }
  process.stdout.write(`conn-storm: ${CONNECTIONS} connections, load ${RATE} ev/s, ${ROUNDS} rounds × 3 phases × ${PHASE_MS / 1000} s (ms, fresh connection per probe)\n`);
  process.stdout.write('path      phase        probes timeouts statuses   p50     p90     p99     max  connect-p99  median-round-p99  ×quiet\n');
  for (const r of rows) {
    process.stdout.write(
      `${String(r.path).padEnd(9)} ${String(r.phase).padEnd(12)} ${String(r.probes).padStart(6)} ${String(r.timeouts).padStart(8)} ${String(r.statuses).padEnd(8)} ${[r.p50, r.p90, r.p99, r.max].map((x) => fmt(x as number).padStart(7)).join(' ')} ${fmt(r.connectP99 as number).padStart(12)} ${fmt(r.medianRoundP99 as number).padStart(12)} ${fmt(r.medianP99VsQuiet as number).padStart(10)}\n`,
    );
  }
  for (const phase of ['quiet', 'load', 'storm+load'] as const) process.stdout.write(`ack-thread event-loop delay, ${phase}: median over rounds of p99 ${fmt(loop(phase, 'loopDelayP99Ms'))} ms, of max ${fmt(loop(phase, 'loopDelayMaxMs'))} ms\n`);
  if (flags.out) writeFileSync(flags.out, `${JSON.stringify({ connections: CONNECTIONS, rate: RATE, phaseMs: PHASE_MS, rounds: ROUNDS, rows, phases }, null, 2)}\n`);
}

await main();
