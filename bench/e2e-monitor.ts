/**
 * Samples a running server during a benchmark run, every `periodMs`, over loopback and the local
 * lake:
 *
 *   acked      sluice_ingest_events_total (GET /metrics): events fsync'd and acknowledged
 *   processed  acceptedTotal + duplicatesTotal (GET /v1/live): events the shards have processed,
 *              i.e. visible in the live view (duplicates are processed too, then dropped)
 *   committed  Σ stats.bronzeRows of the shard flush records under _sluice/commits/: events whose
 *              silver (and bronze) rows are published; silver rows = Σ stats.silverRows
 *
 * All three count the same events (accepted ones, duplicates included), so "how long until
 * processed (committed) reaches what was acked at time t" is the ack → live (→ silver) lag.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { COMMITS_PREFIX, type CommitRecord } from '../storage/commit-record.js';
import { procStats } from './e2e-server.js';

export interface MonitorSample {
  /** performance.now() of the sample, ms. */
  t: number;
  acked: number;
  processed: number;
  committed: number;
  committedSilver: number;
  backlog: number;
}

export class Monitor {
  readonly samples: MonitorSample[] = [];
  peakRssBytes = 0;
  private readonly seen = new Set<string>();
  private last: MonitorSample = { t: 0, acked: 0, processed: 0, committed: 0, committedSilver: 0, backlog: 0 };
  private stopped = false;
  private readonly loop: Promise<void>;
  private readonly commitsDir: string;

  constructor(
    private readonly url: string,
    lake: string,
    private readonly pid: number,
    private readonly periodMs: number,
  ) {
    this.commitsDir = join(lake, COMMITS_PREFIX);
    this.loop = this.run();
  }

  /** The latest sample (zeros before the first). */
  get latest(): MonitorSample {
    return this.last;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const started = performance.now();
      await this.sampleOnce();
      const wait = this.periodMs - (performance.now() - started);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  /** Takes one sample now (also used to get an exact final reading). */
  async sampleOnce(): Promise<MonitorSample> {
    const [acked, live, commits] = await Promise.all([this.readAcked(), this.readLive(), this.readCommits()]);
    const s: MonitorSample = {
      t: performance.now(),
      acked: acked ?? this.last.acked,
      processed: live?.processed ?? this.last.processed,
      backlog: live?.backlog ?? this.last.backlog,
      committed: commits.bronze,
      committedSilver: commits.silver,
    };
    const p = procStats(this.pid);
    if (p) this.peakRssBytes = Math.max(this.peakRssBytes, p.peakRssBytes);
    this.samples.push(s);
    this.last = s;
    return s;
  }

  private async readAcked(): Promise<number | undefined> {
    try {
      const text = await (await fetch(`${this.url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
      let n = 0;
      for (const m of text.matchAll(/^sluice_ingest_events_total\{[^}]*\} (\d+(?:\.\d+)?(?:e\+?\d+)?)$/gm)) n += Number(m[1]);
      return n;
    } catch {
      return undefined;
    }
  }

  private async readLive(): Promise<{ processed: number; backlog: number } | undefined> {
    try {
      const live = (await (await fetch(`${this.url}/v1/live`, { signal: AbortSignal.timeout(5_000) })).json()) as { acceptedTotal: number; duplicatesTotal: number; backlogEvents: number };
      return { processed: live.acceptedTotal + live.duplicatesTotal, backlog: live.backlogEvents };
    } catch {
      return undefined;
    }
  }

  private committedBronze = 0;
  private committedSilver = 0;

  /** Folds shard flush records not seen before (ids are deterministic; a rewrite is the same record). */
  private async readCommits(): Promise<{ bronze: number; silver: number }> {
    let names: string[];
    try {
      names = await readdir(this.commitsDir);
    } catch {
      names = [];
    }
    for (const name of names) {
      if (!name.endsWith('.json') || this.seen.has(name)) continue;
      // Claimed before the read: the sampling loop and a direct sampleOnce() may fold concurrently.
      this.seen.add(name);
      let r: CommitRecord;
      try {
        r = JSON.parse(await readFile(join(this.commitsDir, name), 'utf8')) as CommitRecord;
      } catch {
        this.seen.delete(name); // published atomically, so this is a vanished file: retry next time
        continue;
      }
      if (r.kind === 'flush' && r.stats) {
        this.committedBronze += r.stats.bronzeRows;
        this.committedSilver += r.stats.silverRows;
      }
    }
    return { bronze: this.committedBronze, silver: this.committedSilver };
  }

  /** Waits (sampling) until `pick(sample) ≥ target`; resolves the time it got there, or undefined at the deadline. */
  async waitFor(pick: (s: MonitorSample) => number, target: number, deadline: number): Promise<number | undefined> {
    for (;;) {
      const hit = this.samples.find((s) => pick(s) >= target);
      if (hit) return hit.t;
      if (performance.now() > deadline) return undefined;
      await new Promise((r) => setTimeout(r, this.periodMs / 2));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** Server-side figures from its Prometheus text (counters since the server started). */
export interface ServerMetrics {
  fsyncs: number;
  fsyncMeanMs: number;
  /** Upper bound of the histogram bucket holding the 99th percentile, ms. */
  fsyncP99Ms: number;
  /** Request received → ack sent, as the server sees it. */
  ackMeanMs: number;
  ackP99Ms: number;
  /** Share (0–1) of acks sent within 20 ms of the request (issue 13's goal, the server's side of it). */
  ackWithin20msShare: number;
  checkpoints: number;
  checkpointMeanS: number;
  /** The longest checkpoint lies in (checkpointMaxAboveS, checkpointMaxBucketS]: the bounds of its histogram bucket. */
  checkpointMaxBucketS: number;
  checkpointMaxAboveS: number;
  /** Mean of a shard's own checkpoint (encode, stage, LMDB, publish; its ranges wait meanwhile), NaN when the server does not report it. */
  shardCommitMeanS: number;
  /** Requests refused with 503 (engine backlog or log high-water mark) and 429. */
  refused503: number;
  refused429: number;
}

function histogram(text: string, name: string): { count: number; sum: number; buckets: Array<[number, number]> } {
  const num = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
  const buckets: Array<[number, number]> = [];
  for (const m of text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))) buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  return { count: num(new RegExp(`^${name}_count (\\S+)$`, 'm')), sum: num(new RegExp(`^${name}_sum (\\S+)$`, 'm')), buckets };
}

/** Mean of one labelled series of a histogram (`name{label="value"}`), NaN when absent. */
function labelledMean(text: string, name: string, label: string, value: string): number {
  const series = (suffix: string): number => Number(new RegExp(`^${name}_${suffix}\\{${label}="${value}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return series('sum') / series('count');
}

/** Upper bound of the bucket where the cumulative count reaches q of the total. */
function bucketQuantile(buckets: Array<[number, number]>, q: number): number {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return NaN;
  return buckets.find(([, c]) => c >= q * total)?.[0] ?? NaN;
}

/** Cumulative count at the bucket bounded by `le` ÷ the total; NaN when the bucket is not there or nothing was counted. */
function shareWithin(buckets: Array<[number, number]>, le: number): number {
  const total = buckets.at(-1)?.[1] ?? 0;
  const at = buckets.find(([b]) => b === le);
  return total > 0 && at ? at[1] / total : NaN;
}

/** Parses what the benchmark reports from GET /metrics. */
export function parseServerMetrics(text: string): ServerMetrics {
  const fsync = histogram(text, 'sluice_log_fsync_seconds');
  const ack = histogram(text, 'sluice_ingest_ack_seconds');
  const cp = histogram(text, 'sluice_engine_checkpoint_seconds');
  const sum = (re: RegExp): number => [...text.matchAll(re)].reduce((n, m) => n + Number(m[1]), 0);
  return {
    fsyncs: fsync.count,
    fsyncMeanMs: (fsync.sum / fsync.count) * 1000,
    fsyncP99Ms: bucketQuantile(fsync.buckets, 0.99) * 1000,
    ackMeanMs: (ack.sum / ack.count) * 1000,
    ackP99Ms: bucketQuantile(ack.buckets, 0.99) * 1000,
    ackWithin20msShare: shareWithin(ack.buckets, 0.02),
    checkpoints: cp.count,
    checkpointMeanS: cp.sum / cp.count,
    checkpointMaxBucketS: bucketQuantile(cp.buckets, 1),
    checkpointMaxAboveS: cp.buckets[cp.buckets.findIndex(([, c]) => c >= cp.count) - 1]?.[0] ?? 0,
    shardCommitMeanS: labelledMean(text, 'sluice_engine_checkpoint_step_seconds', 'step', 'shard_commit'),
    refused503: sum(/^sluice_ingest_requests_total\{[^}]*status="503"[^}]*\} (\S+)$/gm),
    refused429: sum(/^sluice_ingest_requests_total\{[^}]*status="429"[^}]*\} (\S+)$/gm),
  };
}

/** Fetches and parses GET /metrics; undefined when the server does not answer. */
export async function fetchServerMetrics(url: string): Promise<ServerMetrics | undefined> {
  try {
    return parseServerMetrics(await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text());
  } catch {
    return undefined;
  }
}

/**
 * For each sample in [from, to] with acked > 0: how long until `pick` reached that sample's acked
 * count (ms). Samples never reached within the recording count as (last sample − t) and are
 * reported in `unreached`.
 */
export function ackLags(samples: readonly MonitorSample[], pick: (s: MonitorSample) => number, from: number, to: number): { lags: number[]; unreached: number } {
  const lags: number[] = [];
  let unreached = 0;
  let j = 0;
  const end = samples.at(-1)?.t ?? 0;
  for (const s of samples) {
    if (s.t < from || s.t > to || s.acked === 0) continue;
    while (j < samples.length && (samples[j]!.t < s.t || pick(samples[j]!) < s.acked)) j++;
    if (j < samples.length) lags.push(samples[j]!.t - s.t);
    else {
      lags.push(end - s.t);
      unreached++;
    }
  }
  return { lags, unreached };
}

/** Value at quantile q (0..1) of unsorted numbers, nearest rank; NaN when empty. */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
