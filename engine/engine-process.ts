/**
 * Ingest's side of the engine process (engine/engine-host.ts): spawns it niced as a whole (so the
 * engine's threads, V8's helpers included, yield the CPU to the ack thread), reports the logs'
 * durable marks to it, truncates the logs when it asks, and answers backlog, readiness, the live
 * view and the engine's metrics from what it last reported. If the engine process dies, it is
 * started again (it recovers from its last checkpoint and replays the logs); meanwhile acks go
 * on into the logs, and the backlog grows until ingest refuses with 503.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL, fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { register } from 'prom-client';
import { externalError, SluiceError } from '../common/errors.js';
import { readiness } from '../ingest/metrics.js';
import type { LiveSnapshot } from './coordinator.js';
import type { EngineHostInit, FromEngine, ToEngine } from './host-protocol.js';
import type { LocalLogs } from './local-logs.js';
import type { EngineOptions } from './options.js';

const READINESS_KEY = 'engine-process:';
const RESTART_BASE_MS = 500;
const RESTART_MAX_MS = 30_000;
/** Starts of an engine process that dies during its first recovery without saying why (killed, out of memory) before serve gives up. */
const FIRST_START_ATTEMPTS = 3;
const CLOSE_TIMEOUT_MS = 120_000;
/**
 * Durable marks go to the engine at most this often (the first after a quiet spell at once). One
 * message per group commit woke the engine process ~500 times a second at 8 K Segment events/s
 * for nothing: it gathers records for a range linger (200 ms) anyway.
 */
const MARKS_INTERVAL_MS = 10;

/**
 * With the kernel's autogroup scheduling (Linux, `/proc/sys/kernel/sched_autogroup_enabled`), CPU
 * is shared between sessions first and niceness only ranks threads inside one: a niced engine in
 * serve's session yields to the ack thread, but its bursts (checkpoints) still take their share
 * from every other session on the machine — a co-located load generator was starved by them (its
 * p99 ack 96–159 ms at 50 % of max where the server answered in ≤ 20 ms). So the engine runs in a
 * session of its own and that session's autogroup gets the engine's niceness. Best effort: nothing
 * to do elsewhere (no autogroup file, or a CPU cgroup that decides instead).
 */
function niceAutogroup(pid: number, nice: number, log: Logger): void {
  if (nice <= 0 || process.platform !== 'linux') return;
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch (err) {
    log.debug({ err, pid }, 'could not nice the engine process autogroup');
  }
}

/** How to start the engine process: the compiled host when running compiled, the source with tsx's loader otherwise. */
function hostCommand(nice: number): { command: string; args: string[] } {
  const here = import.meta.url;
  const ts = here.endsWith('.ts');
  const host = fileURLToPath(new URL(ts ? './engine-host.ts' : './engine-host.js', here));
  const loader = ts && !process.execArgv.some((a) => a.includes('tsx')) ? ['--import', pathToFileURL(createRequire(here).resolve('tsx')).href] : [];
  const node = [...process.execArgv, ...engineHeapFlags(), ...loader, host];
  // `nice` (coreutils) lowers the whole process, every thread it will ever start.
  return nice > 0 ? { command: 'nice', args: ['-n', String(nice), process.execPath, ...node] } : { command: process.execPath, args: node };
}

/**
 * V8's semi-space (MiB) of the engine process's heaps — its main thread's, and through
 * `resourceLimits` every worker's (engine/pool.ts) — unless the operator sets
 * `--max-semi-space-size` (serve's flags or NODE_OPTIONS). V8's default (16 MiB: a young
 * generation of up to 48 MiB per heap) kept ~25 MiB per heap resident that the engine does not
 * need: with 4 MiB the 1 M-user soak peaked at 988 instead of 1 052 MiB, for ≈ 6 % more server CPU
 * at 8 K Segment events/s (more scavenges, more promoted and concurrently marked;
 * bench/results/young-generation-2026-12-05.md). The ack thread keeps V8's default: its latency
 * matters more than its memory.
 */
const ENGINE_SEMI_SPACE_MB = 4;

function engineHeapFlags(): string[] {
  const given = [...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)].some((a) => a.startsWith('--max-semi-space-size'));
  return given ? [] : [`--max-semi-space-size=${ENGINE_SEMI_SPACE_MB}`];
}

/**
 * glibc's mmap threshold for the engine process (bytes; the operator's MALLOC_MMAP_THRESHOLD_
 * wins). glibc raises its default threshold (128 KiB) each time a big mmap'd block is freed, up
 * to 32 MiB; from then on the engine's big short-lived buffers (Arrow ranges, Parquet bodies,
 * lmdb-js and parquet-wasm copies) come from the malloc arenas, and their freed pages are kept:
 * under steady load the engine's anonymous memory grew ~10 MiB a minute with no plateau. Fixed
 * at 128 KiB, big blocks go back to the kernel when freed (soak 2026-12-03, run B: the brk heap
 * flat at 48–52 MiB against 50 → 147; checkpoints no slower; bench/results/memory-2026-12-03.md).
 */
const ENGINE_MALLOC_MMAP_THRESHOLD = String(128 * 1024);

export interface EngineProcessOptions {
  /** Niceness of the whole engine process (0–19). */
  nice: number;
  logLevel: string;
}

export class EngineProcess {
  private child: ChildProcess | undefined;
  private closing = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  /** Marks not sent yet (coalesced over MARKS_INTERVAL_MS), and events reported since the engine's last status. */
  private marks = new Map<number, [number, number]>();
  private flushTimer: NodeJS.Timeout | undefined;
  private lastFlush = 0;
  private sinceStatus = 0;
  private status: { backlog: number; reasons: string[]; live: LiveSnapshot | undefined; anonBytes: number; processed: Array<number | null> | undefined } = {
    backlog: 0,
    reasons: [],
    live: undefined,
    anonBytes: 0,
    processed: undefined,
  };
  private metrics = '';
  private metricNames = new Set<string>();
  private closed: ((error: string | undefined) => void) | undefined;
  private firstStartDone = false;

  private constructor(
    private readonly options: EngineOptions,
    private readonly logs: LocalLogs,
    private readonly log: Logger,
    private readonly host: EngineProcessOptions,
  ) {}

  /** Starts the engine process and waits until it has recovered (replayed the logs). */
  static async start(options: EngineOptions, logs: LocalLogs, log: Logger, host: EngineProcessOptions): Promise<EngineProcess> {
    const { engine, recovered } = EngineProcess.launch(options, logs, log, host);
    await recovered;
    return engine;
  }

  /**
   * Starts the engine process; `recovered` settles when it has recovered (replayed the logs), or
   * rejects with why it would not start. Until then `recovering()` is true and /readyz names it.
   */
  static launch(options: EngineOptions, logs: LocalLogs, log: Logger, host: EngineProcessOptions): { engine: EngineProcess; recovered: Promise<void> } {
    const p = new EngineProcess(options, logs, log, host);
    readiness.set(`${READINESS_KEY}down`, 'the engine is recovering (its last checkpoint, then the log since it)');
    const recovered = p.firstStart().then(
      () => {
        p.firstStartDone = true;
      },
      (err: unknown) => {
        p.firstStartDone = true;
        readiness.clear(`${READINESS_KEY}down`);
        throw err;
      },
    );
    return { engine: p, recovered };
  }

  /** Until its first start has recovered (or failed). */
  recovering(): boolean {
    return !this.firstStartDone;
  }

  private async firstStart(): Promise<void> {
    for (let attempt = 1, died = 0; ; attempt++) {
      try {
        await this.spawn();
        return;
      } catch (err) {
        // A process that died without a reason (SIGKILL, the OOM killer) is started again — it
        // recovers from its last checkpoint — a few times before serve gives up. A dependency that
        // failed (the object store unreachable: it ended serve, which nothing restarted when the
        // store came back) is waited for, events answered 503 `starting` meanwhile, until a stop.
        // Any other reason the engine gave (the lake in use, another session gap, …) is the
        // caller's to fix: serve ends with it.
        const silent = !(err instanceof SluiceError) || err.code === 'engine_start_failed';
        const dependency = !silent && err.domain === 'external' && err.retry === 'backoff';
        if (this.closing || (dependency && this.startAbandoned) || !(dependency || (silent && ++died < FIRST_START_ATTEMPTS))) throw err;
        const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (attempt - 1));
        if (dependency) {
          readiness.set(`${READINESS_KEY}down`, `the engine could not start: ${err.message}; trying again in ${delay} ms`);
          this.log.error({ err, attempt, delayMs: delay }, 'the engine could not start (a dependency failed); trying again — events get 503 starting meanwhile');
        } else {
          this.log.error({ err, attempt, delayMs: delay }, 'the engine process exited during its first recovery without a reason; starting it again');
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, delay);
          this.wakeFirstStart = () => (clearTimeout(timer), resolve());
        });
        this.wakeFirstStart = undefined;
        if (this.closing || (dependency && this.startAbandoned)) throw err;
      }
    }
  }

  /** Ends the wait between two first-start attempts (a stop meanwhile). */
  private wakeFirstStart: (() => void) | undefined;
  private startAbandoned = false;

  /**
   * A stop during the first start: a start waiting for a dependency (the object store) fails at
   * once with its error. An engine that died without a reason is still started again, and a
   * recovery under way is not cut short: the stop waits for them, then drains and commits.
   */
  abandonStart(): void {
    this.startAbandoned = true;
    this.wakeFirstStart?.();
  }

  /** After a shard record is durable (ingest's onDurable); `shard` −1: the DLQ log. */
  durable(shard: number, offset: number, rows: number): void {
    const m = this.marks.get(shard);
    this.marks.set(shard, [Math.max(m?.[0] ?? 0, offset + 1), (m?.[1] ?? 0) + rows]);
    this.sinceStatus += rows;
    if (this.flushTimer === undefined) {
      const wait = Math.max(0, this.lastFlush + MARKS_INTERVAL_MS - performance.now());
      this.flushTimer = setTimeout(() => this.flushMarks(), wait);
    }
  }

  /** Events acknowledged and not yet processed by the engine. */
  backlog(): number {
    return this.status.backlog + this.sinceStatus;
  }

  /** Anonymous resident memory of the engine process as it last reported (0 while it is down). */
  anonBytes(): number {
    return this.child === undefined ? 0 : this.status.anonBytes;
  }

  /**
   * Per shard, the offset of the last record the running engine processed (null: not counted), as
   * it last reported; undefined while it is down or recovering — refusing events then would not
   * help it, and ingest goes on acknowledging into the log (bounded by the backlog's size).
   */
  processedOffsets(): Array<number | null> | undefined {
    return this.child === undefined ? undefined : this.status.processed;
  }

  live(): LiveSnapshot | undefined {
    return this.status.live;
  }

  ready(): boolean {
    return this.child !== undefined && this.status.reasons.length === 0;
  }

  /** The engine's Prometheus metrics with this process's own, one family each. */
  async metricsText(): Promise<string> {
    const own = await Promise.all(
      register
        .getMetricsAsArray()
        .map((m) => (m as unknown as { name: string }).name)
        .filter((n) => !this.metricNames.has(n))
        .map((n) => register.getSingleMetricAsString(n)),
    );
    return `${[...own, this.metrics].filter((t) => t !== '').join('\n')}\n`;
  }

  /** Asks the engine to drain and commit everything, waits for it to exit. */
  async close(): Promise<void> {
    this.closing = true;
    this.wakeFirstStart?.();
    const down = this.restartTimer !== undefined;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    if (down) {
      // Down between restarts: start it once more, so that the stop drains and commits what ingest
      // acknowledged meanwhile (a stop used to leave those events to the next start, and exit 0).
      const starting = this.spawn();
      // Bounded as the close itself: a recovery that does not end is killed (and the stop fails).
      const timer = setTimeout(() => this.child?.kill('SIGKILL'), CLOSE_TIMEOUT_MS);
      try {
        await starting;
      } catch (err) {
        throw externalError('engine_close_failed', `the engine process was down and did not start again to drain (${(err as Error)?.message ?? String(err)}); acknowledged events stay in the log and are committed at the next start`);
      } finally {
        clearTimeout(timer);
      }
    }
    this.flushMarks();
    const child = this.child;
    if (child === undefined || child.exitCode !== null) return;
    const result = new Promise<string | undefined>((resolve) => {
      this.closed = resolve;
      child.once('exit', (code) => resolve(code === 0 ? undefined : `engine process exited with ${code}`));
    });
    this.send({ kind: 'close' });
    const timer = setTimeout(() => child.kill('SIGKILL'), CLOSE_TIMEOUT_MS);
    const error = await result;
    clearTimeout(timer);
    readiness.clearPrefix(READINESS_KEY);
    if (error !== undefined) throw externalError('engine_close_failed', `${error}; acknowledged events stay in the log and are committed at the next start`);
  }

  private scheduleRestart(why: string): void {
    const delay = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** this.restarts++);
    readiness.set(`${READINESS_KEY}down`, `${why}; restarting in ${delay} ms`);
    this.log.error({ why, delayMs: delay }, 'the engine process exited; restarting it (it recovers from its last checkpoint)');
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.spawn().catch((err: unknown) => this.log.error({ err }, 'restarting the engine process failed'));
    }, delay);
    this.restartTimer.unref();
  }

  private flushMarks(): void {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.marks.size === 0 || this.child === undefined) return;
    this.lastFlush = performance.now();
    const marks: Array<[number, number, number]> = [...this.marks].map(([shard, [next, rows]]) => [shard, next, rows]);
    this.marks.clear();
    this.send({ kind: 'durable', marks });
  }

  private send(m: ToEngine): void {
    if (this.child?.connected) this.child.send(m);
  }

  private spawn(): Promise<void> {
    const init: EngineHostInit = {
      options: this.options,
      marks: this.logs.logs.map((l) => l.durableNextOffset),
      dlqMark: this.logs.dlqLog.durableNextOffset,
      logLevel: this.host.logLevel,
    };
    const { command, args } = hostCommand(this.host.nice);
    const child = spawn(command, args, {
      // Its own session: a terminal's Ctrl-C reaches serve alone, which closes the engine with a
      // final checkpoint (it used to kill the engine mid-work), and, on Linux, its own autogroup.
      detached: true,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      env: {
        ...process.env,
        SLUICE_ENGINE_HOST: JSON.stringify(init),
        UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '32',
        MALLOC_MMAP_THRESHOLD_: process.env.MALLOC_MMAP_THRESHOLD_ ?? ENGINE_MALLOC_MMAP_THRESHOLD,
      },
    });
    this.child = child;
    if (child.pid !== undefined) niceAutogroup(child.pid, this.host.nice, this.log);
    // Marks reported before the spawn are in `init`; later ones queue until it is up.
    this.marks.clear();
    return new Promise<void>((resolve, reject) => {
      let started = false;
      let failed: SluiceError | undefined;
      child.on('message', (m: FromEngine) => {
        switch (m.kind) {
          case 'failed':
            failed = new SluiceError(m.message, { domain: m.domain, code: m.code, retry: m.retry });
            break;
          case 'started':
            started = true;
            this.restarts = 0;
            readiness.clear(`${READINESS_KEY}down`);
            this.flushMarks();
            resolve();
            break;
          case 'status':
            this.status = { backlog: m.backlog, reasons: m.reasons, live: m.live, anonBytes: m.anonBytes, processed: m.processed };
            this.sinceStatus = 0;
            readiness.clearPrefix(`${READINESS_KEY}engine`);
            m.reasons.forEach((r, i) => readiness.set(`${READINESS_KEY}engine-${i}`, r));
            break;
          case 'metrics':
            this.metrics = m.text;
            this.metricNames = new Set([...m.text.matchAll(/^# HELP (\S+)/gm)].map((x) => x[1]!));
            break;
          case 'truncate': {
            const log = m.shard < 0 ? this.logs.dlqLog : this.logs.logs[m.shard];
            void log?.truncateBefore(m.before).catch((err: unknown) => this.log.warn({ err, shard: m.shard }, 'log truncation failed; retried at the next checkpoint'));
            break;
          }
          case 'roll': {
            const log = m.shard < 0 ? this.logs.dlqLog : this.logs.logs[m.shard];
            if (log === undefined) this.send({ kind: 'rolled', id: m.id, error: `no log for shard ${m.shard}` });
            else log.segmentLog.roll().then(
              (first) => this.send({ kind: 'rolled', id: m.id, first }),
              (err: unknown) => this.send({ kind: 'rolled', id: m.id, error: (err as Error)?.message ?? String(err) }),
            );
            break;
          }
          case 'closed':
            this.closed?.(m.error);
            break;
        }
      });
      child.once('error', (err) => {
        if (!started) reject(err);
      });
      child.once('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        this.status.processed = undefined;
        // Down: no live figures until the next engine reports (they stayed frozen at the dead one's, answered as live).
        this.status.live = undefined;
        if (!started) reject(failed ?? externalError('engine_start_failed', `the engine process exited during recovery (code ${code}, signal ${signal}); see its log above`));
        // The first start's failure is the caller's; a restart that fails is retried.
        if (this.closing || (!started && this.restarts === 0)) return;
        this.scheduleRestart(`engine process exited (code ${code}, signal ${signal})${failed === undefined ? '' : `: ${failed.message}`}`);
      });
    });
  }
}
