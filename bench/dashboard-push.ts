/**
 * What the live dashboard costs the ingest thread (not part of `npm test`):
 *
 *   npm run build && node --import tsx bench/dashboard-push.ts [--dashboards 50] [--phase 20s]
 *        [--rounds 3] [--rate 5000] [--json]
 *
 * 1. Push stream: a `sluice serve` child process (compiled dist/, as in production) with a
 *    steady Segment load of `--rate` events/s (0: idle, the quietest reading of the push alone) (50-event batches over keep-alive HTTP from this
 *    process). Phases of `--phase` alternate 0 and `--dashboards` open dashboard streams (WebSocket
 *    clients in this process that read every frame), `--rounds` times; per phase the CPU time of
 *    the server's MAIN thread (/proc/PID/task/PID/stat: uWS, ingest, acks, coordinator, the
 *    dashboard hub) over the wall time. The cost is the difference, in % of one core, and its
 *    share of the main thread's own busy time.
 * 2. Ack path: the per-row cost of the ingest tap (IngestTap.add) on realistic rows, ns/row,
 *    against the server's measured main-thread CPU per acked event.
 *
 * The machine is shared and noisy (2 vCPUs, the load generator on the same cores): read the
 * spread between rounds, which is printed.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import WebSocket from 'ws';
import { parseDuration } from '../common/duration.js';
import type { IngestRow } from '../ingest/batch-builder.js';
import { IngestTap } from '../ingest/dashboard/tap.js';
import { DEFAULT_METRIC_EVENT_TYPES } from '../engine/gold-sql.js';
import { BenchServer } from './e2e-server.js';

const { values: args } = benchArgs(import.meta.url, {
  options: {
    dashboards: { type: 'string', default: '50' },
    phase: { type: 'string', default: '20s' },
    rounds: { type: 'string', default: '3' },
    rate: { type: 'string', default: '5000' },
    json: { type: 'boolean', default: false },
  },
});
const DASHBOARDS = Number(args.dashboards);
const PHASE_MS = parseDuration(args.phase!, '--phase');
const ROUNDS = Number(args.rounds);
const RATE = Number(args.rate);
const WRITE = 'wk_bench_dashboard';
const BATCH = 50;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function batchBody(seq: number): string {
  const now = new Date().toISOString();
  const types = ['Application Opened', 'screen', 'Button Tapped', 'Push Notification Received', 'Push Notification Tapped'];
  return JSON.stringify({
    batch: Array.from({ length: BATCH }, (_, k) => {
      const i = seq * BATCH + k;
      const type = types[i % types.length]!;
      return {
        type: type === 'screen' ? 'screen' : 'track',
        ...(type === 'screen' ? { name: `Screen ${i % 20}` } : { event: type }),
        userId: `user-${(i * 7919) % 20000}`,
        messageId: `bench-${i}`,
        timestamp: now,
        properties: { plan: i % 3 ? 'free' : 'pro', value: i % 100 },
        context: { device: { type: i % 2 ? 'ios' : 'android' }, os: { name: i % 2 ? 'iOS' : 'Android' }, app: { version: `3.${i % 7}.0` }, location: { country: ['DE', 'US', 'FR', 'BR', 'IN'][i % 5] } },
      };
    }),
  });
}

/** Open-loop load: one batch every 1000·BATCH/RATE ms until stopped; counts acks and errors. */
function startLoad(url: string): { stop(): Promise<{ acked: number; errors: number }> } {
  let running = true;
  let acked = 0;
  let errors = 0;
  let seq = 0;
  const inFlight = new Set<Promise<void>>();
  const intervalMs = (1000 * BATCH) / RATE;
  const started = performance.now();
  const loop = async (): Promise<void> => {
    while (running) {
      const due = started + seq * intervalMs;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      if (inFlight.size > 256) {
        await Promise.race(inFlight);
        continue;
      }
      const p = fetch(`${url}/v1/batch`, { method: 'POST', headers: { authorization: `Bearer ${WRITE}`, 'content-type': 'application/json' }, body: batchBody(seq++) })
        .then(async (res) => {
          await res.arrayBuffer();
          if (res.status === 200) acked += BATCH;
          else errors++;
        })
        .catch(() => void errors++)
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
    }
  };
  const done = loop();
  return {
    async stop() {
      running = false;
      await done;
      await Promise.allSettled([...inFlight]);
      return { acked, errors };
    },
  };
}

interface Dashboards {
  frames: number;
  bytes: number;
  close(): Promise<void>;
}

async function openDashboards(url: string, readKey: string, n: number): Promise<Dashboards> {
  const d = { frames: 0, bytes: 0 };
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<WebSocket>((resolve, reject) => {
          const ws = new WebSocket(`${url.replace('http', 'ws')}/dashboard/stream`, { headers: { authorization: `Bearer ${readKey}` } });
          ws.on('message', (m: Buffer) => {
            d.frames++;
            d.bytes += m.length;
          });
          ws.once('open', () => resolve(ws));
          ws.once('error', reject);
        }),
    ),
  );
  return {
    get frames() {
      return d.frames;
    },
    get bytes() {
      return d.bytes;
    },
    close: async () => {
      await Promise.all(sockets.map((ws) => new Promise<void>((r) => (ws.once('close', () => r()), ws.close()))));
    },
  };
}

interface Phase {
  dashboards: number;
  mainCorePct: number;
  processCorePct: number;
  framesPerSecond: number;
  frameBytes: number;
}

async function measure(server: BenchServer, dashboards: number, readKey: string): Promise<Phase> {
  const dash = dashboards > 0 ? await openDashboards(server.url, readKey, dashboards) : undefined;
  await sleep(2000); // settle (connect, init frames)
  const a = server.stats()!;
  const t0 = performance.now();
  const f0 = dash?.frames ?? 0;
  const b0 = dash?.bytes ?? 0;
  await sleep(PHASE_MS);
  const b = server.stats()!;
  const wall = (performance.now() - t0) / 1000;
  const frames = (dash?.frames ?? 0) - f0;
  const bytes = (dash?.bytes ?? 0) - b0;
  await dash?.close();
  return {
    dashboards,
    mainCorePct: (100 * (b.mainCpuS - a.mainCpuS)) / wall,
    processCorePct: (100 * (b.cpuS - a.cpuS)) / wall,
    framesPerSecond: frames / wall,
    frameBytes: frames > 0 ? bytes / frames : 0,
  };
}

/** ns per row of IngestTap.add on rows shaped like the load's. */
function tapCost(): { nsPerRow: number } {
  const tap = new IngestTap({ lateAfterMs: 60_000, maxDimensionValues: 1000, tailSize: 200, tailPerSecond: 20, metricTypes: DEFAULT_METRIC_EVENT_TYPES });
  const now = Date.now();
  const rows: IngestRow[] = Array.from({ length: BATCH }, (_, i) => ({
    event_id: `e${i}`,
    user_id: `user-${(i * 7919) % 20000}`,
    anonymous_id: null,
    event_type: ['Application Opened', 'screen', 'Button Tapped'][i % 3]!,
    event_time: now - (i % 5) * 1000,
    received_at: now,
    device_type: i % 2 ? 'ios' : 'android',
    os: 'iOS',
    app_version: `3.${i % 7}.0`,
    country: ['DE', 'US', 'FR'][i % 3]!,
    source: 'segment',
    properties: '{"plan":"free"}',
    raw: null,
  }));
  for (let i = 0; i < 20_000; i++) tap.add(rows, now + i);
  const reps = 200_000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < reps; i++) tap.add(rows, now + 20_000 + i);
  const ns = Number(process.hrtime.bigint() - t0);
  return { nsPerRow: ns / (reps * BATCH) };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-dash-'));
  const server = await BenchServer.start({ dataDir: join(dir, 'data'), lake: join(dir, 'lake'), writeKey: WRITE, shards: 4, workers: 2, flushIntervalMs: 5000, logFile: join(dir, 'server.log'), startTimeoutMs: 60_000 });
  const readKey = readFileSync(join(dir, 'data', 'read-key'), 'utf8').trim();
  const phases: Phase[] = [];
  let load: ReturnType<typeof startLoad> | undefined;
  try {
    if (RATE > 0) load = startLoad(server.url);
    await sleep(3000); // warm up
    for (let r = 0; r < ROUNDS; r++) {
      for (const n of [0, DASHBOARDS]) {
        const p = await measure(server, n, readKey);
        phases.push(p);
        if (!args.json) process.stderr.write(`round ${r + 1}: ${n} dashboards → main thread ${p.mainCorePct.toFixed(2)} % of a core, process ${p.processCorePct.toFixed(1)} %, ${p.framesPerSecond.toFixed(1)} frames/s of ${(p.frameBytes / 1024).toFixed(1)} KiB\n`);
      }
    }
  } finally {
    const sent = await load?.stop();
    await server.stop(60_000).catch(() => server.kill());
    rmSync(dir, { recursive: true, force: true });
    if (sent && !args.json) process.stderr.write(`load: ${sent.acked} events acked, ${sent.errors} errors\n`);
  }
  const diffs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) diffs.push(phases[2 * r + 1]!.mainCorePct - phases[2 * r]!.mainCorePct);
  const base = median(phases.filter((p) => p.dashboards === 0).map((p) => p.mainCorePct));
  const tap = tapCost();
  const result = {
    dashboards: DASHBOARDS,
    rate: RATE,
    phaseSeconds: PHASE_MS / 1000,
    rounds: ROUNDS,
    mainThreadBaselinePct: base,
    pushCostPctOfCore: median(diffs),
    pushCostPctOfCoreEachRound: diffs,
    pushCostShareOfMainThread: median(diffs) / base,
    tapNsPerRow: tap.nsPerRow,
    tapPctOfCoreAtRate: (tap.nsPerRow * RATE) / 1e7,
    phases,
  };
  if (args.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    process.stdout.write(
      `${DASHBOARDS} dashboards at ${RATE} events/s: push stream costs the main thread ${result.pushCostPctOfCore.toFixed(2)} % of a core (rounds: ${diffs.map((d) => d.toFixed(2)).join(', ')}), ` +
        `${(100 * result.pushCostShareOfMainThread).toFixed(1)} % of its ${base.toFixed(1)} % busy time\n` +
        `ingest tap: ${tap.nsPerRow.toFixed(0)} ns per acked row (${result.tapPctOfCoreAtRate.toFixed(2)} % of a core at ${RATE} events/s)\n`,
    );
  }
}

await main();
