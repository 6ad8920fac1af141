/**
 * Ingest HTTP benchmark (not part of `npm test`):
 *
 *   node --import tsx bench/ingest-http.bench.ts [--duration 4s] [--runs 3] [--workers 2]
 *        [--connections 32] [--shards 4] [--only bare|sluice|serve] [--json]
 *        [--serve-node-arg=--cpu-prof …]   (node flags for serve's process; its engine process inherits them)
 *
 * Segment `/v1/batch` JSON ingest: 50-event batches of ~450 B events, sent over keep-alive
 * HTTP/1.1 by closed-loop clients in worker threads (raw sockets, one request in flight per
 * connection, every event a fresh messageId, loopback only, bounded by `--duration`). The same run
 * measures three servers in turn:
 *
 *   bare    uWS that reads the body, JSON.parse()s it and answers 200 (the ceiling), in this
 *           process's main thread
 *   sluice  startIngestServer over real fsync'd SegmentLogs in a temp dir (acks after fdatasync),
 *           in this process's main thread: ingest alone, no engine
 *   serve   the real `sluice serve` (compiled: `npm run build` first), engine process and all, with
 *           its defaults (lag bound included); its figure is the SUSTAINED rate: acknowledged
 *           events ÷ the time from the load's start until the last of them was committed in silver
 *           (issue 13's "sustained ≥ 0.5 of bare"). Use --duration 30s for that figure: a 4 s run
 *           is mostly the drain.
 *
 * Reports events/s, body MB/s, p50/p99 ack latency and the ratios to bare; each figure is the
 * median of `--runs` alternating runs. The machine is shared and noisy: read ±30 %.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import * as hdr from 'hdr-histogram-js';

interface ClientJob {
  port: number;
  connections: number;
  durationMs: number;
  seed: number;
  auth: string;
}

/** The whole server's figure (serve): what it acknowledged, by the time all of it was committed. */
interface Sustained {
  /** Acknowledged events ÷ time from the load's start until the last of them was committed in silver. */
  sustainedPerSec: number;
  /** From the load's end until every acknowledged event was committed. */
  drainS: number;
}

interface ClientResult {
  requests: number;
  events: number;
  bytes: number;
  errors: number;
  statuses: Record<string, number>;
  /** Ack latency histogram (µs), compressed base64. */
  hist: string;
  elapsedMs: number;
}

const EVENTS_PER_BATCH = 50;
/** Where a request's sequence number goes in each messageId (rewritten on every send: ids are never repeated). */
const ID_SLOT = '@@@@@@@@@@';

/** Seeded xorshift32 (deterministic bodies). */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

const EVENTS = ['Application Opened', 'screen_view', 'Product Viewed', 'Added To Cart', 'Push Notification Tapped', 'notification_view', 'Search'];
const DEVICES = ['ios', 'android', 'web'];
const COUNTRIES = ['US', 'DE', 'FR', 'BR', 'IN', 'JP'];

/** One Segment batch body of 50 events of ~450 B each. */
function makeBody(r: () => number, n: number): string {
  const now = Date.now();
  const batch = [];
  for (let i = 0; i < EVENTS_PER_BATCH; i++) {
    const user = Math.floor(r() * 100_000);
    const device = DEVICES[Math.floor(r() * DEVICES.length)]!;
    batch.push({
      type: 'track',
      event: EVENTS[Math.floor(r() * EVENTS.length)],
      userId: `user-${user}`,
      anonymousId: `anon-${(user * 7919).toString(16)}`,
      messageId: `bench-${n}-${ID_SLOT}-${i}`,
      timestamp: new Date(now - Math.floor(r() * 3_600_000)).toISOString(),
      context: {
        device: { type: device, model: device === 'ios' ? 'iPhone15,2' : 'Pixel 8' },
        os: { name: device === 'ios' ? 'iOS' : device === 'android' ? 'Android' : 'Web', version: '17.4' },
        app: { version: `4.${Math.floor(r() * 5)}.0`, build: '4021' },
        location: { country: COUNTRIES[Math.floor(r() * COUNTRIES.length)] },
        library: { name: 'analytics-ios', version: '4.1.8' },
      },
      properties: { screen: `screen-${Math.floor(r() * 40)}`, item: `sku-${Math.floor(r() * 5000)}`, price: Math.floor(r() * 10000) / 100, ab: r() < 0.5 },
    });
  }
  return JSON.stringify({ batch, sentAt: new Date(now).toISOString() });
}

/** Closed-loop raw-socket HTTP/1.1 client: one request in flight per connection. */
async function runClients(job: ClientJob): Promise<ClientResult> {
  const r = rng(job.seed);
  const bodies: Buffer<ArrayBufferLike>[] = [];
  for (let i = 0; i < 64; i++) {
    const body = Buffer.from(makeBody(r, job.seed * 1000 + i));
    const head = `POST /v1/batch HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${job.auth}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`;
    bodies.push(Buffer.concat([Buffer.from(head), body]));
  }
  const bodyBytes = bodies.map((b) => b.length);
  const idSlots = bodies.map((b) => {
    const at: number[] = [];
    for (let i = b.indexOf(ID_SLOT); i >= 0; i = b.indexOf(ID_SLOT, i + 1)) at.push(i);
    return at;
  });
  let sequence = 0;
  /** Template `i` with this request's fresh ids (a copy: a queued socket write may still hold the previous one). */
  const freshRequest = (i: number): Buffer => {
    const req = Buffer.from(bodies[i]!);
    const seq = String(sequence++).padStart(ID_SLOT.length, '0');
    for (const at of idSlots[i]!) req.write(seq, at, 'latin1');
    return req;
  };
  const hist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  const res: ClientResult = { requests: 0, events: 0, bytes: 0, errors: 0, statuses: {}, hist: '', elapsedMs: 0 };
  const started = performance.now();
  const deadline = started + job.durationMs;
  const one = (c: number): Promise<void> =>
    new Promise((resolve) => {
      const sock = connect({ host: '127.0.0.1', port: job.port, noDelay: true });
      let next = c;
      let sentAt = 0;
      let buf: Buffer<ArrayBufferLike> = Buffer.alloc(0);
      const send = (): void => {
        if (performance.now() >= deadline) {
          sock.end();
          resolve();
          return;
        }
        next = (next + 1) % bodies.length;
        sentAt = performance.now();
        sock.write(freshRequest(next));
      };
      sock.on('connect', send);
      sock.on('error', () => {
        res.errors++;
        resolve();
      });
      sock.on('data', (d: Buffer) => {
        buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.subarray(0, end).toString('latin1');
          const m = /content-length:\s*(\d+)/i.exec(head);
          const total = end + 4 + (m ? Number(m[1]) : 0);
          if (buf.length < total) return;
          const status = head.slice(9, 12);
          buf = buf.subarray(total);
          hist.recordValue(Math.max(1, Math.round((performance.now() - sentAt) * 1000)));
          res.statuses[status] = (res.statuses[status] ?? 0) + 1;
          res.requests++;
          if (status === '200') {
            res.events += EVENTS_PER_BATCH;
            res.bytes += bodyBytes[next]!;
          }
          // Refused (overload bounds): as an SDK would, wait Retry-After before the next request.
          const retryAfter = status === '503' || status === '429' ? Number(/retry-after:\s*(\d+)/i.exec(head)?.[1] ?? 1) : 0;
          if (retryAfter > 0) setTimeout(send, retryAfter * 1000);
          else send();
        }
      });
    });
  await Promise.all(Array.from({ length: job.connections }, (_, c) => one(c)));
  res.elapsedMs = performance.now() - started;
  res.hist = hdr.encodeIntoCompressedBase64(hist);
  return res;
}

if (!isMainThread) {
  void runClients(workerData as ClientJob).then((r) => parentPort!.postMessage(r));
} else {
  await main();
}

async function main(): Promise<void> {
  const { values: args } = benchArgs(import.meta.url, {
    options: {
      duration: { type: 'string', default: '4s' },
      runs: { type: 'string', default: '3' },
      workers: { type: 'string', default: '2' },
      connections: { type: 'string', default: '32' },
      shards: { type: 'string', default: '4' },
      json: { type: 'boolean', default: false },
      only: { type: 'string' },
      verbose: { type: 'boolean', default: false },
      'serve-node-arg': { type: 'string', multiple: true, default: [] },
    },
  });
  const { parseDuration } = await import('../common/duration.js');
  const durationMs = parseDuration(args.duration!);
  const runs = Number(args.runs);
  const workers = Number(args.workers);
  const connections = Number(args.connections);
  const shards = Number(args.shards);
  const WRITE_KEY = 'bench-key';
  const auth = `Basic ${Buffer.from(`${WRITE_KEY}:`).toString('base64')}`;

  const uws = (await import('uWebSockets.js')).default;
  const { pino } = await import('pino');
  const { openShardLogs, SegmentLog } = await import('../log/segment-log.js');
  const { startIngestServer } = await import('../ingest/server.js');
  const { observeFsync } = await import('../ingest/metrics.js');
  const { BenchServer } = await import('./e2e-server.js');
  const { Monitor } = await import('./e2e-monitor.js');

  /** A server under test. `sustain` (serve only): after the load, waits until every acknowledged event is committed in silver. */
  interface Contender {
    port: number;
    close: () => Promise<void>;
    /** Server main-thread CPU so far, s, when the server is another process (else this process's event-loop utilization is used). */
    mainCpuS?: () => number;
    sustain?: (loadStart: number, loadEnd: number, events: number) => Promise<Sustained>;
  }

  const startBare = async (): Promise<Contender> => {
    const app = uws.App();
    app.post('/v1/batch', (res) => {
      let aborted = false;
      res.onAborted(() => {
        aborted = true;
      });
      const chunks: Buffer[] = [];
      res.onData((chunk, isLast) => {
        chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
        if (!isLast) return;
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { batch: unknown[] };
        if (aborted) return;
        res.cork(() => {
          res.writeHeader('Content-Type', 'application/json');
          res.end(`{"ok":true,"accepted":${body.batch.length}}`);
        });
      });
    });
    const token = await new Promise<import('uWebSockets.js').us_listen_socket>((resolve, reject) => app.listen('127.0.0.1', 0, (t) => (t ? resolve(t) : reject(new Error('listen failed')))));
    return {
      port: uws.us_socket_local_port(token),
      close: async () => {
        uws.us_listen_socket_close(token);
        (app as unknown as { close?: () => void }).close?.();
      },
    };
  };

  const startSluice = async (): Promise<Contender> => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-ingest-'));
    const logs = await openShardLogs(join(dir, 'log'), shards, { onFsync: observeFsync });
    const dlqLog = await SegmentLog.open({ dir: join(dir, 'dlq'), shard: -1 });
    const server = await startIngestServer({ port: 0, writeKeys: [{ key: WRITE_KEY }], logger: pino({ level: 'silent' }) }, { logs, dlqLog, onDurable: () => undefined });
    return {
      port: server.port,
      close: async () => {
        await server.close();
        for (const l of logs) await l.close();
        await dlqLog.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  };

  const startServe = async (): Promise<Contender> => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-serve-'));
    const lake = join(dir, 'lake');
    const server = await BenchServer.start({
      dataDir: join(dir, 'data'),
      lake,
      writeKey: WRITE_KEY,
      shards,
      workers: 2,
      flushIntervalMs: 5_000,
      logFile: join(dir, 'serve.log'),
      startTimeoutMs: 60_000,
      nodeArgs: args['serve-node-arg'],
    });
    const monitor = new Monitor(server.url, lake, server.pid, 250);
    const stop = async (): Promise<void> => {
      await monitor.stop();
      await server.stop(120_000);
      rmSync(dir, { recursive: true, force: true });
    };
    return {
      port: Number(new URL(server.url).port),
      close: stop,
      mainCpuS: () => server.stats()?.mainCpuS ?? NaN,
      sustain: async (loadStart, loadEnd, events) => {
        const acked = (await monitor.sampleOnce()).acked;
        if (acked !== events) console.error(`serve: the server counted ${acked} acknowledged events, the clients ${events}`);
        const committedAt = await monitor.waitFor((x) => x.committed, acked, performance.now() + 120_000);
        if (committedAt === undefined) throw new Error(`serve: ${monitor.latest.committed} of ${acked} acknowledged events committed 120 s after the load`);
        return { sustainedPerSec: acked / ((committedAt - loadStart) / 1000), drainS: Math.max(0, committedAt - loadEnd) / 1000 };
      },
    };
  };

  interface Figures {
    eventsPerSec: number;
    /** Server main-thread event-loop utilization during the run (0..1). */
    elu: number;
    /** eventsPerSec / elu: events per second of busy server thread (the one-core cost). */
    eventsPerBusySec: number;
    mbPerSec: number;
    p50ms: number;
    p99ms: number;
    non200: number;
    /** Acknowledged events ÷ time from the load's start until all were committed in silver (serve; else the ack rate). */
    sustainedPerSec: number;
    /** After the load: until every acknowledged event was committed (serve; else 0). */
    drainS: number;
  }

  const measure = async (server: Contender): Promise<Figures> => {
    const { port } = server;
    const elu0 = performance.eventLoopUtilization();
    const main0 = server.mainCpuS?.();
    const loadStart = performance.now();
    const results = await Promise.all(
      Array.from({ length: workers }, (_, w) => {
        const job: ClientJob = { port, connections: Math.ceil(connections / workers), durationMs, seed: 17 + w, auth };
        // tsx's --import hook does not reach workers whose entry is a .ts file: start from a
        // one-line script that registers tsx, then imports this file.
        const entry = JSON.stringify(import.meta.url);
        const tsx = JSON.stringify(import.meta.resolve('tsx/esm/api'));
        const worker = new Worker(`import(${tsx}).then((t) => { t.register(); return import(${entry}); })`, { eval: true, workerData: job });
        return new Promise<ClientResult>((resolve, reject) => {
          worker.once('message', (m: ClientResult) => {
            resolve(m);
            void worker.terminate();
          });
          worker.once('error', reject);
        });
      }),
    );
    const hist = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
    let events = 0;
    let bytes = 0;
    let non200 = 0;
    let elapsed = 0;
    for (const r of results) {
      events += r.events;
      bytes += r.bytes;
      non200 += r.requests - (r.statuses['200'] ?? 0) + r.errors;
      elapsed = Math.max(elapsed, r.elapsedMs);
      hist.add(hdr.decodeFromCompressedBase64(r.hist));
    }
    const loadEnd = performance.now();
    const elu = main0 === undefined ? performance.eventLoopUtilization(elu0).utilization : (server.mainCpuS!() - main0) / ((loadEnd - loadStart) / 1000);
    const sustained = (await server.sustain?.(loadStart, loadEnd, events)) ?? { sustainedPerSec: events / (elapsed / 1000), drainS: 0 };
    return {
      ...sustained,
      elu,
      eventsPerBusySec: events / (elapsed / 1000) / elu,
      eventsPerSec: events / (elapsed / 1000),
      mbPerSec: bytes / 1e6 / (elapsed / 1000),
      p50ms: hist.getValueAtPercentile(50) / 1000,
      p99ms: hist.getValueAtPercentile(99) / 1000,
      non200,
    };
  };

  const bare: Figures[] = [];
  const sluice: Figures[] = [];
  const serve: Figures[] = [];
  for (let run = 0; run < runs; run++) {
    for (const [name, start, out] of [
      ['bare', startBare, bare],
      ['sluice', startSluice, sluice],
      ['serve', startServe, serve],
    ] as const) {
      if (args.only && args.only !== name) continue;
      const server = await start();
      const f = await measure(server);
      await server.close();
      out.push(f);
      if (args.verbose && name === 'sluice') {
        const { register } = await import('prom-client');
        const text = await register.metrics();
        console.error(text.split('\n').filter((l) => /^sluice_(log_fsync_seconds_(sum|count)|ingest_ack_seconds_(sum|count))/.test(l)).join('\n'));
      }
      if (!args.json) {
        console.error(
          `run ${run + 1}/${runs} ${name.padEnd(6)} ${Math.round(f.eventsPerSec).toLocaleString('en')} events/s  ${f.mbPerSec.toFixed(1)} MB/s  p50 ${f.p50ms.toFixed(2)} ms  p99 ${f.p99ms.toFixed(2)} ms  server busy ${(100 * f.elu).toFixed(0)} %  → ${Math.round(f.eventsPerBusySec).toLocaleString('en')} events/busy-s${name === 'serve' ? `  sustained ${Math.round(f.sustainedPerSec).toLocaleString('en')} events/s (drain ${f.drainS.toFixed(1)} s)` : ''}${f.non200 ? `  non-200: ${f.non200}` : ''}`,
        );
      }
    }
  }
  if (bare.length === 0) return;
  const med = (xs: Figures[], k: keyof Figures): number => [...xs.map((x) => x[k])].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const pick = (xs: Figures[]) =>
    xs.length === 0
      ? undefined
      : {
          eventsPerSec: med(xs, 'eventsPerSec'),
          sustainedPerSec: med(xs, 'sustainedPerSec'),
          drainS: med(xs, 'drainS'),
          mbPerSec: med(xs, 'mbPerSec'),
          p50ms: med(xs, 'p50ms'),
          p99ms: med(xs, 'p99ms'),
          elu: med(xs, 'elu'),
          eventsPerBusySec: med(xs, 'eventsPerBusySec'),
        };
  /** Median over runs of `of` ÷ bare's events/s, measured back to back (robust to the machine's load drifting between runs). */
  const paired = (xs: Figures[], of: (f: Figures) => number): number | undefined =>
    xs.length === 0 ? undefined : [...xs.map((f, i) => of(f) / bare[i]!.eventsPerSec)].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = {
    config: { durationMs, runs, workers, connections, shards, eventsPerBatch: EVENTS_PER_BATCH, eventBytes: Math.round(makeBody(rng(1), 0).length / EVENTS_PER_BATCH) },
    bare: pick(bare)!,
    sluice: pick(sluice),
    serve: pick(serve),
    /** Ingest alone: acknowledged events/s of sluice ÷ bare, per run. */
    ingestRatio: paired(sluice, (f) => f.eventsPerSec),
    /** The whole server: acknowledged and committed events/s of serve ÷ bare's events/s, per run (issue 13: ≥ 0.5). */
    sustainedRatio: paired(serve, (f) => f.sustainedPerSec),
  };
  if (args.json) console.log(JSON.stringify(summary));
  else {
    const line = (n: string, f: NonNullable<(typeof summary)['serve']>): string =>
      `${n.padEnd(7)} ${Math.round(f.eventsPerSec).toLocaleString('en').padStart(10)} events/s acked  ${f.mbPerSec.toFixed(1).padStart(6)} MB/s  p50 ${f.p50ms.toFixed(2)} ms  p99 ${f.p99ms.toFixed(2)} ms  server main thread busy ${(100 * f.elu).toFixed(0)} %  ${Math.round(f.eventsPerBusySec).toLocaleString('en')} events/busy-s` +
      (n === 'serve' ? `\n${''.padEnd(7)} ${Math.round(f.sustainedPerSec).toLocaleString('en').padStart(10)} events/s sustained (acked ÷ time until all committed in silver; drain ${f.drainS.toFixed(1)} s after the load)` : '');
    console.log(`ingest HTTP, ${EVENTS_PER_BATCH}-event Segment batches of ~${summary.config.eventBytes} B/event, fresh ids, ${connections} connections, ${(durationMs / 1000).toFixed(0)} s, median of ${runs}:`);
    console.log(line('bare', summary.bare));
    if (summary.sluice) console.log(line('sluice', summary.sluice));
    if (summary.serve) console.log(line('serve', summary.serve));
    if (summary.ingestRatio !== undefined) console.log(`ingest alone (sluice ÷ bare, acked events/s): ${summary.ingestRatio.toFixed(2)} (median of per-run ratios)`);
    if (summary.sustainedRatio !== undefined) console.log(`whole server (serve sustained ÷ bare): ${summary.sustainedRatio.toFixed(2)} (median of per-run ratios; issue 13's goal ≥ 0.5)`);
  }
}
