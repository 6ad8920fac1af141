/**
 * Perf-regression check (CI runs it after `npm test`):
 *
 *   npm run bench:check [-- --update] [--json] [--rounds 5] [--time 500] [--case NAME …] [--list]
 *
 * Measures every case of bench/perf-cases.ts with tinybench and compares it with the committed
 * bench/perf-baseline.json. Absolute speed differs between machines and from minute to minute
 * on shared CI cores, so what is compared is a ratio: a case's rows/s divided by the rows/s of
 * REFERENCE (a fixed pure-JS workload, not Sluice code) measured right before and right after it
 * in the same run. Each round runs
 *
 *   reference, case 1, reference, case 2, …, case N, reference
 *
 * and pairs each case with the geometric mean of its two neighbouring reference measurements;
 * the verdict uses the median over `--rounds` rounds. A case whose ratio is more than 25 % below
 * its baseline ratio is re-measured once with fresh rounds (shared cores have bad minutes), and
 * the check fails (exit 1) if it is still more than 25 % below. Cases without a baseline entry
 * are reported as NEW and do not fail; `--update` writes the baseline (commit it) — with
 * `--case`, only those entries change.
 *
 * Exit codes: 0 pass, 1 regression, 2 usage/baseline error. Run it under
 * `flock /tmp/sluice-heavy.lock` on shared machines so measurements do not overlap.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './args.js';
import { Bench } from 'tinybench';
import { internalError, SluiceError, userError } from '../common/errors.js';
import type { PerfCase } from './perf-cases.js';

/** A case whose ratio falls more than this fraction below its baseline fails. */
export const MAX_SLOWDOWN = 0.25;

// ------------------------------------------------------------------------------------------------
// Pure comparison logic (unit-tested in test/bench/perf-check.test.ts)
// ------------------------------------------------------------------------------------------------

/** One round of one case: its throughput and the reference's throughput next to it (rows/s). */
export interface RoundSample {
  caseRowsPerS: number;
  refRowsPerS: number;
}

/** A case's measurement over all its rounds. */
export interface CaseSummary {
  name: string;
  /** Median of the case's rows/s over the rounds. */
  rowsPerS: number;
  /** Median of the paired reference rows/s. */
  refRowsPerS: number;
  /** Median over rounds of caseRowsPerS / refRowsPerS (dimensionless). */
  ratio: number;
  /** (max − min) / median of the per-round ratios: how noisy this measurement was. */
  spread: number;
  rounds: number;
}

/** One case's entry in the baseline file. */
export interface BaselineEntry {
  /** Case rows/s ÷ reference rows/s when the baseline was taken. */
  ratio: number;
  /** Informational: absolute rows/s on the machine that took the baseline. */
  rowsPerS: number;
}

/** bench/perf-baseline.json. */
export interface Baseline {
  version: 1;
  /** REFERENCE_ID of bench/perf-cases.ts the ratios are relative to. */
  referenceId: string;
  /** Informational: reference rows/s, machine and settings when the baseline was taken. */
  referenceRowsPerS: number;
  machine: string;
  node: string;
  createdAt: string;
  rounds: number;
  timeMs: number;
  cases: Record<string, BaselineEntry>;
}

/** `ok` within bounds; `slower`: more than maxSlowdown below baseline (a failure); `faster`: more than maxSlowdown above (update the baseline); `new`: no baseline entry. */
export type VerdictStatus = 'ok' | 'slower' | 'faster' | 'new';

/** A case compared with its baseline. */
export interface Verdict extends CaseSummary {
  baselineRatio: number | null;
  /** ratio / baselineRatio − 1 (−0.3 = 30 % slower relative to the reference); null when new. */
  change: number | null;
  status: VerdictStatus;
  /** True when this is the result of the re-measurement after a first failing attempt. */
  retried: boolean;
}

/** The median (mean of the middle two for an even count); NaN for an empty list. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Summarizes the rounds of one case (ratios are paired per round, then the median is taken). */
export function summarize(name: string, rounds: readonly RoundSample[]): CaseSummary {
  if (rounds.length === 0) throw internalError('perf_no_rounds', `perf check: no rounds measured for ${name}`);
  const ratios = rounds.map((r) => r.caseRowsPerS / r.refRowsPerS);
  const ratio = median(ratios);
  return {
    name,
    rowsPerS: median(rounds.map((r) => r.caseRowsPerS)),
    refRowsPerS: median(rounds.map((r) => r.refRowsPerS)),
    ratio,
    spread: (Math.max(...ratios) - Math.min(...ratios)) / ratio,
    rounds: rounds.length,
  };
}

/**
 * Compares one summary with its baseline entry: `slower` when ratio < (1 − maxSlowdown) ×
 * baseline (exactly 25 % below passes), `faster` when ratio > (1 + maxSlowdown) × baseline.
 */
export function judge(summary: CaseSummary, baseline: BaselineEntry | undefined, maxSlowdown = MAX_SLOWDOWN, retried = false): Verdict {
  if (baseline === undefined) return { ...summary, baselineRatio: null, change: null, status: 'new', retried };
  const change = summary.ratio / baseline.ratio - 1;
  // Compare as ratio/baseline against the bound (not `change`), so exactly −25 % is not lost to rounding.
  const rel = summary.ratio / baseline.ratio;
  const status: VerdictStatus = rel < 1 - maxSlowdown ? 'slower' : rel > 1 + maxSlowdown ? 'faster' : 'ok';
  return { ...summary, baselineRatio: baseline.ratio, change, status, retried };
}

/** Parses and validates the baseline file's text; throws a user error that says what to do. */
export function parseBaseline(text: string, referenceId: string): Baseline {
  let b: unknown;
  try {
    b = JSON.parse(text);
  } catch (e) {
    throw userError('perf_baseline_invalid', `perf baseline is not valid JSON (${(e as Error).message}); regenerate it with --update`);
  }
  const o = b as Partial<Baseline> | null;
  if (typeof o !== 'object' || o === null || o.version !== 1 || typeof o.cases !== 'object' || o.cases === null) {
    throw userError('perf_baseline_invalid', 'perf baseline has an unknown layout (expected version 1 with a "cases" object); regenerate it with --update');
  }
  for (const [name, e] of Object.entries(o.cases)) {
    if (typeof e?.ratio !== 'number' || !(e.ratio > 0)) throw userError('perf_baseline_invalid', `perf baseline entry ${JSON.stringify(name)} needs a positive "ratio"; regenerate it with --update`);
  }
  if (o.referenceId !== referenceId) {
    throw userError('perf_baseline_stale', `perf baseline was taken against reference ${JSON.stringify(o.referenceId)}, but bench/perf-cases.ts now defines ${JSON.stringify(referenceId)}: its ratios do not apply; regenerate it with --update`);
  }
  return o as Baseline;
}

const fmtRate = (x: number): string => (x >= 1e6 ? `${(x / 1e6).toFixed(2)} M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)} k` : x.toFixed(0));
const fmtPct = (x: number | null): string => (x === null ? '—' : `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)} %`);
const STATUS_TEXT: Record<VerdictStatus, string> = { ok: 'ok', slower: 'FAIL: slower', faster: 'faster: --update?', new: 'NEW: no baseline' };

/** The verdicts as a fixed-width text table (one line per case). */
export function formatTable(verdicts: readonly Verdict[]): string {
  const header = ['case', 'rows/s', 'ratio', 'baseline', 'change', 'spread', 'verdict'];
  const lines = verdicts.map((v) => [
    v.name,
    fmtRate(v.rowsPerS),
    v.ratio.toPrecision(4),
    v.baselineRatio === null ? '—' : v.baselineRatio.toPrecision(4),
    fmtPct(v.change),
    `±${((v.spread / 2) * 100).toFixed(0)} %`,
    STATUS_TEXT[v.status] + (v.retried ? ' (re-measured)' : ''),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 || i === cells.length - 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [row(header), row(widths.map((w) => '-'.repeat(w))), ...lines.map(row)].join('\n');
}

// ------------------------------------------------------------------------------------------------
// Measurement
// ------------------------------------------------------------------------------------------------

/** A case with its state, ready to measure. */
interface Prepared {
  c: PerfCase;
  state: unknown;
}

/**
 * rows/s of one tinybench measurement of `p` (≥ `timeMs` ms): rows ÷ the FASTEST call's time.
 * On shared cores a call is slowed by whatever else runs (preemption, a busy sibling core,
 * another process's GC or memory traffic) and never sped up, so the minimum is the estimator
 * least disturbed by the machine (as in Chen & Revels, "Robust benchmarking in noisy
 * environments", 2016); measured here, per-round ratios from the mean varied ±20–40 % under load,
 * from the minimum ±1–10 %. Allocation costs still count (scavenges happen in most calls of the
 * allocating cases); an occasional full GC does not.
 */
function measure(p: Prepared, timeMs: number): number {
  const bench = new Bench({ time: timeMs, iterations: 4, warmup: false, throws: true });
  const { c, state } = p;
  bench.add(c.name, () => c.run(state));
  const [task] = bench.runSync();
  const r = task!.result;
  if (r.state !== 'completed') throw internalError('perf_case_incomplete', `perf check: ${c.name} did not complete (${r.state})`);
  return (c.rows * 1000) / r.latency.min;
}

/**
 * Runs `rounds` rounds of reference, case 1, reference, case 2, …, reference and returns each
 * case's rounds, paired with the geometric mean of the reference just before and just after it.
 */
function measureRounds(ref: Prepared, cases: readonly Prepared[], rounds: number, timeMs: number, progress: (s: string) => void, label: string): Map<string, RoundSample[]> {
  const out = new Map<string, RoundSample[]>(cases.map((p) => [p.c.name, []]));
  for (let r = 0; r < rounds; r++) {
    progress(`  ${label}: round ${r + 1}/${rounds}`);
    let before = measure(ref, timeMs);
    for (const p of cases) {
      const rate = measure(p, timeMs);
      const after = measure(ref, timeMs);
      out.get(p.c.name)!.push({ caseRowsPerS: rate, refRowsPerS: Math.sqrt(before * after) });
      before = after;
    }
  }
  return out;
}

// ------------------------------------------------------------------------------------------------
// Entry point
// ------------------------------------------------------------------------------------------------

const DEFAULT_BASELINE = fileURLToPath(new URL('./perf-baseline.json', import.meta.url));

async function main(): Promise<number> {
  const { values: args } = benchArgs(import.meta.url, {
    options: {
      update: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      list: { type: 'boolean', default: false },
      rounds: { type: 'string', default: '5' },
      time: { type: 'string', default: '500' },
      warmup: { type: 'string', default: '400' },
      case: { type: 'string', multiple: true },
      baseline: { type: 'string', default: DEFAULT_BASELINE },
    },
  });
  const rounds = Number(args.rounds);
  const timeMs = Number(args.time);
  const warmupMs = Number(args.warmup);
  if (!Number.isInteger(rounds) || rounds < 1) throw userError('perf_check_usage', `--rounds must be a positive integer, got ${args.rounds}`);
  if (!(timeMs > 0) || !(warmupMs >= 0)) throw userError('perf_check_usage', '--time must be > 0 ms and --warmup ≥ 0 ms');
  const log = (s: string): void => {
    if (!args.json) process.stdout.write(`${s}\n`);
  };
  const progress = (s: string): void => {
    if (!args.json) process.stderr.write(`${s}\n`);
  };

  const { PERF_CASES, REFERENCE, REFERENCE_ID } = await import('./perf-cases.js');
  if (args.list) {
    for (const c of [REFERENCE, ...PERF_CASES]) process.stdout.write(`${c.name.padEnd(28)} ${String(c.rows).padStart(7)} rows  ${c.what ?? ''}\n`);
    return 0;
  }
  const names = new Set(PERF_CASES.map((c) => c.name));
  if (names.size !== PERF_CASES.length) throw userError('perf_check_usage', 'bench/perf-cases.ts: case names must be unique');
  for (const n of args.case ?? []) if (!names.has(n)) throw userError('perf_check_usage', `unknown case ${JSON.stringify(n)}; known: ${[...names].join(', ')}`);
  const selected = args.case ? PERF_CASES.filter((c) => args.case!.includes(c.name)) : PERF_CASES;

  let baseline: Baseline | undefined;
  try {
    baseline = parseBaseline(readFileSync(args.baseline, 'utf8'), REFERENCE_ID);
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    if (!args.update) throw userError('perf_check_usage', missing ? `no perf baseline at ${args.baseline}: generate one with --update and commit it` : (e as Error).message);
    if (!missing) progress(`ignoring the existing baseline: ${(e as Error).message}`);
  }

  const started = performance.now();
  log(`perf check: ${selected.length} cases × ${rounds} rounds, ${timeMs} ms per measurement, reference measured between cases; fails below ${Math.round((1 - MAX_SLOWDOWN) * 100)} % of the baseline ratio`);
  const prepare = (c: PerfCase): Prepared => ({ c, state: c.setup() });
  const ref = prepare(REFERENCE);
  const prepared = selected.map(prepare);
  // Warm-up: JIT, wasm heap growth, buffer capacities reach their steady state before measuring.
  for (const p of [ref, ...prepared]) if (warmupMs > 0) measure(p, warmupMs);

  const measured = measureRounds(ref, prepared, rounds, timeMs, progress, 'measuring');
  let verdicts = prepared.map((p) => judge(summarize(p.c.name, measured.get(p.c.name)!), baseline?.cases[p.c.name]));

  const failing = args.update ? [] : verdicts.filter((v) => v.status === 'slower');
  if (failing.length > 0) {
    log(`${failing.length} case(s) more than ${MAX_SLOWDOWN * 100} % below baseline (${failing.map((v) => v.name).join(', ')}): re-measuring only those with ${rounds} fresh rounds before deciding`);
    const again = measureRounds(ref, prepared.filter((p) => failing.some((v) => v.name === p.c.name)), rounds, timeMs, progress, 're-measuring');
    verdicts = verdicts.map((v) => (again.has(v.name) ? judge(summarize(v.name, again.get(v.name)!), baseline?.cases[v.name], MAX_SLOWDOWN, true) : v));
  }
  const elapsedS = (performance.now() - started) / 1000;
  const refRowsPerS = median(verdicts.map((v) => v.refRowsPerS));
  const machine = `${cpus()[0]?.model ?? 'unknown cpu'} × ${cpus().length}`;

  log('');
  log(formatTable(verdicts));
  log('');
  log(`reference: ${fmtRate(refRowsPerS)} events/s${baseline ? ` (baseline machine: ${fmtRate(baseline.referenceRowsPerS)} events/s)` : ''}; ${elapsedS.toFixed(1)} s`);
  const stale = baseline ? Object.keys(baseline.cases).filter((n) => !names.has(n)) : [];
  if (stale.length > 0) log(`baseline entries without a case (remove with --update): ${stale.join(', ')}`);

  const failed = verdicts.filter((v) => v.status === 'slower');
  if (args.update) {
    const cases: Record<string, BaselineEntry> = { ...(baseline?.cases ?? {}) };
    if (!args.case) for (const n of stale) delete cases[n];
    for (const v of verdicts) cases[v.name] = { ratio: +v.ratio.toPrecision(4), rowsPerS: Math.round(v.rowsPerS) };
    const next: Baseline = { version: 1, referenceId: REFERENCE_ID, referenceRowsPerS: Math.round(refRowsPerS), machine, node: process.version, createdAt: new Date().toISOString(), rounds, timeMs, cases };
    writeFileSync(args.baseline, `${JSON.stringify(next, null, 2)}\n`);
    log(`baseline written to ${args.baseline}: commit it`);
  } else if (failed.length > 0) {
    log(`FAIL: ${failed.map((v) => `${v.name} ${fmtPct(v.change)}`).join(', ')} relative to the reference, on two measurements in a row. If the slowdown is intended, regenerate the baseline with --update and say why in the commit.`);
  } else log('perf check passed');

  if (args.json) {
    const ok = args.update || failed.length === 0;
    process.stdout.write(`${JSON.stringify({ ok, updated: args.update, maxSlowdown: MAX_SLOWDOWN, rounds, timeMs, elapsedS: +elapsedS.toFixed(1), referenceId: REFERENCE_ID, referenceRowsPerS: Math.round(refRowsPerS), machine, node: process.version, cases: verdicts, stale })}\n`);
  }
  return args.update || failed.length === 0 ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      process.stderr.write(`bench:check: ${e instanceof SluiceError && e.domain === 'user' ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      process.exitCode = 2;
    },
  );
}
