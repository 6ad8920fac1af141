/**
 * The append path on JetStream vs the local segment log, the way ingest drives it: S shards, each
 * with ONE append in flight per writer (group commit: the next record of a shard goes out when the
 * previous one is acknowledged), fixed-size records. `--writers 1,2`: writers per shard — on
 * JetStream each writer is its own connection (to another node of the cluster, as separate ingest
 * nodes would be) appending to the same shards at once (offsets are stream sequences, no CAS); on
 * the segment log (one writer per directory) the same number of appends in flight per shard go
 * through its one log, i.e. the same load. Reports records/s, events/s (records × the given
 * events per record), MB/s, and append→ack latency p50/p99 (for JetStream: publish → PubAck of
 * the quorum, retries included; for the segment log: append → fdatasync done).
 *
 *   node --import tsx bench/jetstream-append.ts [--targets segment,r1,r3] [--writers 1,2] [--shards 8]
 *        [--record-bytes 12000] [--events-per-record 50] [--seconds 5] [--runs 3] [--json]
 *
 * `r3` starts a 3-node nats-server cluster on loopback (test/helpers/nats-cluster.ts), `r1` one
 * node: client, servers and their disks share this machine's cores, so this is a lower bound of a
 * real cluster's throughput and an upper bound of its latency's network part (loopback). Each run
 * is bounded by time and record count; temp dirs and servers are removed afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { benchArgs } from './args.js';
import type { ShardLog } from '../log/log.js';
import { JetStreamLogs } from '../log/jetstream-log.js';
import { SegmentLog } from '../log/segment-log.js';
import { startNatsCluster, type NatsCluster } from '../test/helpers/nats-cluster.js';

const { values } = benchArgs(import.meta.url, {
  options: {
    targets: { type: 'string', default: 'segment,r1,r3' },
    writers: { type: 'string', default: '1' },
    shards: { type: 'string', default: '8' },
    'record-bytes': { type: 'string', default: '12000' },
    'events-per-record': { type: 'string', default: '50' },
    seconds: { type: 'string', default: '5' },
    runs: { type: 'string', default: '3' },
    'max-records': { type: 'string', default: '500000' },
    json: { type: 'boolean', default: false },
  },
});
const shards = Number(values.shards);
const recordBytes = Number(values['record-bytes']);
const eventsPerRecord = Number(values['events-per-record']);
const seconds = Number(values.seconds);
const runs = Number(values.runs);
const maxRecords = Number(values['max-records']);

interface RunResult {
  target: string;
  appends: number;
  recordsPerSec: number;
  eventsPerSec: number;
  mbPerSec: number;
  p50Ms: number;
  p99Ms: number;
  retries: number;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? 0;

/** `writers[w][s]`: writer w's log of shard s (the same object for every writer of a segment log). */
async function drive(target: string, writers: ShardLog[][], retries: () => number): Promise<RunResult> {
  const payload = new Uint8Array(recordBytes);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 131) & 0xff;
  const lat: number[] = [];
  let started = 0;
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(writers.flat().map(async (log) => {
    while (started < maxRecords && performance.now() < deadline) {
      started++;
      const a = performance.now();
      await log.append(payload);
      lat.push(performance.now() - a);
    }
  }));
  const elapsed = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return {
    target, appends: lat.length, recordsPerSec: lat.length / elapsed, eventsPerSec: (lat.length * eventsPerRecord) / elapsed,
    mbPerSec: (lat.length * recordBytes) / 1e6 / elapsed, p50Ms: pct(lat, 50), p99Ms: pct(lat, 99), retries: retries(),
  };
}

async function runSegment(target: string, writers: number): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-js-bench-'));
  try {
    const logs = await Promise.all(Array.from({ length: shards }, (_, s) => SegmentLog.open({ dir: join(dir, `shard-${s}`), shard: s })));
    const r = await drive(target, Array.from({ length: writers }, () => logs), () => 0);
    await Promise.all(logs.map((l) => l.close()));
    return r;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function runJetStream(target: string, cluster: NatsCluster, replicas: number, run: number, writers: number): Promise<RunResult> {
  let retries = 0;
  const name = target.replace(/\W/g, '_');
  const stream = `BENCH_${name}_${run}`;
  const connections: JetStreamLogs[] = [];
  try {
    for (let w = 0; w < writers; w++) {
      // Writer w connects to node w first (another node than the other writers, when there are several).
      const servers = cluster.urls.map((_, i) => cluster.urls[(w + i) % cluster.urls.length]!);
      connections.push(await JetStreamLogs.connect({
        servers, stream, subjectPrefix: `bench${run}.${name}`, replicas,
        onPublish: (_ms, _bytes, attempts) => (retries += attempts - 1),
      }));
    }
    const logs = await Promise.all(connections.map(async (c) => (await c.openAll(shards)).shards));
    const r = await drive(target, logs, () => retries);
    // Nothing lost, nothing stored twice: the stream holds exactly the acknowledged appends.
    const stored = (await connections[0]!.jsm.streams.info(stream)).state.messages;
    if (stored !== r.appends) throw new Error(`${target}: the stream holds ${stored} messages for ${r.appends} acknowledged appends`);
    return r;
  } finally {
    await connections[0]?.jsm.streams.delete(stream).catch(() => undefined);
    for (const c of connections) await c.close();
  }
}

const logTargets = values.targets.split(',').map((t) => t.trim());
const writerCounts = values.writers.split(',').map((w) => Number(w));
const targets = logTargets.flatMap((t) => writerCounts.map((w) => `${t}×${w}w`));
const results: RunResult[] = [];
const clusters = new Map<string, NatsCluster>();
try {
  if (logTargets.includes('r1')) clusters.set('r1', await startNatsCluster({ nodes: 1 }));
  if (logTargets.includes('r3')) clusters.set('r3', await startNatsCluster({ nodes: 3 }));
  for (let run = 1; run <= runs; run++) {
    for (const target of targets) {
      const [t, w] = [target.split('×')[0]!, Number(target.split('×')[1]!.slice(0, -1))];
      const r = t === 'segment' ? await runSegment(target, w) : await runJetStream(target, clusters.get(t)!, t === 'r3' ? 3 : 1, run, w);
      results.push(r);
      if (!values.json) {
        console.log(`run ${run} ${target.padEnd(12)}: ${r.recordsPerSec.toFixed(0)} records/s = ${r.eventsPerSec.toFixed(0)} events/s, ${r.mbPerSec.toFixed(1)} MB/s, append→ack p50 ${r.p50Ms.toFixed(2)} ms p99 ${r.p99Ms.toFixed(2)} ms, retries ${r.retries}`);
      }
    }
  }
} finally {
  for (const c of clusters.values()) await c.stop();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary = targets.map((t) => {
  const rs = results.filter((r) => r.target === t);
  return {
    target: t, recordsPerSec: median(rs.map((r) => r.recordsPerSec)), eventsPerSec: median(rs.map((r) => r.eventsPerSec)),
    mbPerSec: median(rs.map((r) => r.mbPerSec)), p50Ms: median(rs.map((r) => r.p50Ms)), p99Ms: median(rs.map((r) => r.p99Ms)),
  };
});
if (values.json) console.log(JSON.stringify({ shards, recordBytes, eventsPerRecord, seconds, runs, results, summary }));
else {
  console.log(`median of ${runs} (${shards} shards × 1 append in flight per writer, ${recordBytes} B records, ${eventsPerRecord} events/record):`);
  for (const s of summary) {
    console.log(`  ${s.target.padEnd(12)} ${s.recordsPerSec.toFixed(0)} records/s = ${s.eventsPerSec.toFixed(0)} events/s, ${s.mbPerSec.toFixed(1)} MB/s, p50 ${s.p50Ms.toFixed(2)} ms, p99 ${s.p99Ms.toFixed(2)} ms`);
  }
}
