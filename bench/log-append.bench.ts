/**
 * SegmentLog append throughput: N concurrent appenders, each appending fixed-size records back to
 * back (the next append starts when the previous one is acknowledged, i.e. fsync'd), on real
 * fdatasync in a temp dir. Reports appends/s, MB/s (payload bytes, 1 MB = 1e6 B), fsyncs/s and
 * the process's CPU per fsync (user + system, every thread: the libuv pool's write and fdatasync
 * included; the kernel's journal thread is not) per run and the median of the runs.
 *
 *   node --import tsx bench/log-append.bench.ts [--seconds 3] [--runs 3] [--concurrency 64]
 *        [--record-bytes 65536] [--segment-mib 64] [--max-records 200000] [--json]
 *
 * Each run is bounded by time and by record count. The temp dir is removed afterwards.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { benchArgs } from './args.js';
import { SegmentLog } from '../log/segment-log.js';

const { values } = benchArgs(import.meta.url, {
  options: {
    seconds: { type: 'string', default: '3' },
    runs: { type: 'string', default: '3' },
    concurrency: { type: 'string', default: '64' },
    'record-bytes': { type: 'string', default: '65536' },
    'segment-mib': { type: 'string', default: '64' },
    'max-records': { type: 'string', default: '200000' },
    json: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const runs = Number(values.runs);
const concurrency = Number(values.concurrency);
const recordBytes = Number(values['record-bytes']);
const segmentBytes = Number(values['segment-mib']) * 1024 * 1024;
const maxRecords = Number(values['max-records']);

interface RunResult {
  appendsPerSec: number;
  mbPerSec: number;
  fsyncsPerSec: number;
  recordsPerFsync: number;
  p50FsyncMs: number;
  cpuUsPerFsync: number;
}

async function runOnce(): Promise<RunResult> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-log-bench-'));
  try {
    const fsyncMs: number[] = [];
    const log = await SegmentLog.open({ dir, shard: 0, segmentBytes, onFsync: (ms) => fsyncMs.push(ms) });
    const payload = new Uint8Array(recordBytes);
    for (let i = 0; i < payload.length; i++) payload[i] = (i * 131) & 0xff;
    let appended = 0;
    let started = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const deadline = t0 + seconds * 1000;
    async function appender(): Promise<void> {
      while (started < maxRecords && performance.now() < deadline) {
        started++;
        await log.append(payload);
        appended++;
      }
    }
    await Promise.all(Array.from({ length: concurrency }, appender));
    const elapsed = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    await log.close();
    const sorted = [...fsyncMs].sort((a, b) => a - b);
    return {
      appendsPerSec: appended / elapsed,
      mbPerSec: (appended * recordBytes) / 1e6 / elapsed,
      fsyncsPerSec: fsyncMs.length / elapsed,
      recordsPerFsync: appended / Math.max(1, fsyncMs.length),
      p50FsyncMs: sorted[Math.floor(sorted.length / 2)] ?? 0,
      cpuUsPerFsync: (cpu.user + cpu.system) / Math.max(1, fsyncMs.length),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const results: RunResult[] = [];
for (let r = 0; r < runs; r++) {
  const res = await runOnce();
  results.push(res);
  if (!values.json) {
    console.log(
      `run ${r + 1}: ${res.appendsPerSec.toFixed(0)} appends/s, ${res.mbPerSec.toFixed(1)} MB/s, ` +
        `${res.fsyncsPerSec.toFixed(0)} fsyncs/s (${res.recordsPerFsync.toFixed(1)} records/fsync, p50 fsync ${res.p50FsyncMs.toFixed(3)} ms, ${res.cpuUsPerFsync.toFixed(1)} µs CPU/fsync)`,
    );
  }
}
const summary = {
  concurrency,
  recordBytes,
  seconds,
  runs,
  medianAppendsPerSec: median(results.map((r) => r.appendsPerSec)),
  medianMBPerSec: median(results.map((r) => r.mbPerSec)),
  medianFsyncsPerSec: median(results.map((r) => r.fsyncsPerSec)),
  medianRecordsPerFsync: median(results.map((r) => r.recordsPerFsync)),
  medianP50FsyncMs: median(results.map((r) => r.p50FsyncMs)),
  medianCpuUsPerFsync: median(results.map((r) => r.cpuUsPerFsync)),
};
if (values.json) console.log(JSON.stringify(summary));
else {
  console.log(
    `median of ${runs}: ${summary.medianAppendsPerSec.toFixed(0)} appends/s, ${summary.medianMBPerSec.toFixed(1)} MB/s, ` +
      `${summary.medianFsyncsPerSec.toFixed(0)} fsyncs/s, ${summary.medianRecordsPerFsync.toFixed(1)} records/fsync, ` +
      `p50 fsync ${summary.medianP50FsyncMs.toFixed(3)} ms, ${summary.medianCpuUsPerFsync.toFixed(1)} µs CPU/fsync ` +
      `(${concurrency} appenders × ${recordBytes} B records)`,
  );
}
