/**
 * A `sluice serve` child process for the end-to-end benchmark: the real CLI, engine and worker
 * pool on loopback, in its own process so its CPU time and peak RSS are its own (the load
 * generator runs in the benchmark's process). Linux /proc gives the process figures; elsewhere
 * they are undefined.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { externalError } from '../common/errors.js';

export interface BenchServerOptions {
  dataDir: string;
  lake: string;
  writeKey: string;
  shards: number;
  workers: number;
  flushIntervalMs: number;
  /** The child's stderr (its warn-level log) goes here. */
  logFile: string;
  /** How long to wait for the listening line. */
  startTimeoutMs: number;
  /**
   * Extra node flags (e.g. `--cpu-prof`) for the serve process; the engine process inherits them
   * (engine/engine-process.ts starts it with the parent's execArgv), and so do worker threads.
   */
  nodeArgs?: string[];
  /** More `serve` flags, appended after the ones above (e.g. `--range-linger 0ms`). */
  serveArgs?: string[];
}

/**
 * CPU and memory of the server at one instant: the serve process and its children (the engine
 * process of `--engine-mode process`). Seconds of CPU, bytes of memory.
 */
export interface ProcStats {
  /** User + system CPU of every thread of the server's processes (ingest, engine, workers, libuv pools, GC). */
  cpuS: number;
  /** User + system CPU of the serve process's main thread (ingest: the ack thread). */
  mainCpuS: number;
  /** User + system CPU of the engine process (0 with `--engine-mode inline`). */
  engineCpuS: number;
  rssBytes: number;
  /** Sum over the processes of their peak resident set size (VmHWM). */
  peakRssBytes: number;
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of a /proc stat line, in seconds. */
function statCpu(path: string): number {
  const text = readFileSync(path, 'utf8');
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // Fields after the command name start at field 3 (state); utime is field 14, stime 15.
  return (Number(f[11]) + Number(f[12])) / ticksPerSecond();
}

/** The whole machine at one instant: CPU seconds busy (all tenants) and each disk's busy time. */
export interface MachineUsage {
  /** Busy CPU time summed over the cores (user, nice, system, irq, softirq, steal), s. */
  busyS: number;
  /** Milliseconds each whole disk (/sys/block, loop and ram devices excluded) has spent doing I/O (io_ticks). */
  diskBusyMs: Map<string, number>;
}

/** /proc/stat and /proc/diskstats now, or undefined off Linux. */
export function machineUsage(): MachineUsage | undefined {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    const busy = f.slice(0, 8).reduce((a, x) => a + x, 0) - f[3]! - f[4]!;
    const disks = new Set(readdirSync('/sys/block').filter((d) => !/^(loop|ram|zram)/.test(d)));
    const diskBusyMs = new Map<string, number>();
    for (const line of readFileSync('/proc/diskstats', 'utf8').split('\n')) {
      const x = line.trim().split(/\s+/);
      if (disks.has(x[2]!)) diskBusyMs.set(x[2]!, Number(x[12]));
    }
    return { busyS: busy / ticksPerSecond(), diskBusyMs };
  } catch {
    return undefined;
  }
}

/** Busy cores of the machine and the busiest disk's utilisation (0–1) between two readings over `seconds`. */
export function machineLoad(a: MachineUsage | undefined, b: MachineUsage | undefined, seconds: number): { busyCores: number; diskBusy: number } {
  if (!a || !b || !(seconds > 0)) return { busyCores: NaN, diskBusy: NaN };
  let disk = 0;
  for (const [d, ms] of b.diskBusyMs) disk = Math.max(disk, (ms - (a.diskBusyMs.get(d) ?? ms)) / 1000 / seconds);
  return { busyCores: (b.busyS - a.busyS) / seconds, diskBusy: Math.min(1, disk) };
}

/** One thread of a process: its id, name (`comm`) and user + system CPU so far, s. */
export interface ThreadCpu {
  tid: number;
  comm: string;
  cpuS: number;
}

/** Every thread of `pid` (from /proc/<pid>/task; empty when the process is gone or not Linux). */
export function threadCpu(pid: number): ThreadCpu[] {
  const out: ThreadCpu[] = [];
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      out.push({ tid: Number(t), comm: readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim(), cpuS: statCpu(`/proc/${pid}/task/${t}/stat`) });
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return out;
}

/** Pids of the direct children of `pid` (from /proc; empty elsewhere). */
export function childrenOf(pid: number): number[] {
  try {
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .filter((p) => {
        try {
          const text = readFileSync(`/proc/${p}/stat`, 'utf8');
          return Number(text.slice(text.lastIndexOf(')') + 2).split(' ')[1]) === pid;
        } catch {
          return false;
        }
      });
  } catch {
    return [];
  }
}

/** The server's CPU and memory (its process and its children), or undefined when /proc is not there (not Linux, or it exited). */
export function procStats(pid: number): ProcStats | undefined {
  try {
    const memory = (p: number): { rss: number; peak: number } => {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const kb = (name: string): number => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
      return { rss: kb('VmRSS'), peak: kb('VmHWM') };
    };
    const own = memory(pid);
    const out: ProcStats = { cpuS: statCpu(`/proc/${pid}/stat`), mainCpuS: statCpu(`/proc/${pid}/task/${pid}/stat`), engineCpuS: 0, rssBytes: own.rss, peakRssBytes: own.peak };
    for (const child of childrenOf(pid)) {
      try {
        const cpu = statCpu(`/proc/${child}/stat`);
        const m = memory(child);
        out.cpuS += cpu;
        out.engineCpuS += cpu;
        out.rssBytes += m.rss;
        out.peakRssBytes += m.peak;
      } catch {
        // the child exited between the listing and the read
      }
    }
    return out;
  } catch {
    return undefined;
  }
}

export class BenchServer {
  readonly url: string;
  readonly pid: number;
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private readonly logFile: string;

  private constructor(child: ChildProcess, url: string, exited: Promise<number | null>, logFile: string) {
    this.child = child;
    this.url = url;
    this.pid = child.pid!;
    this.exited = exited;
    this.logFile = logFile;
  }

  /** Starts `node bin/sluice.js serve` on a free loopback port and resolves once it listens. */
  static async start(o: BenchServerOptions): Promise<BenchServer> {
    const bin = fileURLToPath(new URL('../bin/sluice.js', import.meta.url));
    const args = [
      ...(o.nodeArgs ?? []),
      bin,
      'serve',
      '--host', '127.0.0.1',
      '--port', '0',
      '--data', o.dataDir,
      '--lake', o.lake,
      '--write-key', o.writeKey,
      '--shards', String(o.shards),
      '--workers', String(o.workers),
      '--flush-interval', `${o.flushIntervalMs}ms`,
      ...(o.serveArgs ?? []),
    ];
    // Only the flags configure it: no SLUICE_* setting or config file of the caller leaks in.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLUICE_') && k !== 'AWS_ENDPOINT_URL_S3'));
    env.SLUICE_LOG_LEVEL = 'warn';
    const err = openSync(o.logFile, 'a');
    let child: ChildProcess;
    try {
      // Its own process group: a Ctrl-C meant for the benchmark must not stop the server mid-run.
      child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', err], detached: true });
    } finally {
      closeSync(err);
    }
    const orphan = (): void => void child.kill('SIGKILL');
    process.once('exit', orphan);
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => {
        process.off('exit', orphan);
        resolve(code);
      }),
    );
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => fail(`did not print its address within ${o.startTimeoutMs} ms`), o.startTimeoutMs);
      const fail = (why: string): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(externalError('bench_server_failed', `sluice serve ${why}; its log: ${o.logFile}\n${tail(o.logFile)}`, undefined, 'none'));
      };
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (chunk: string) => {
        out += chunk;
        const m = /Sluice listening on (http:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
      child.once('exit', (code) => fail(`exited with code ${code} before listening`));
    });
    child.stdout!.resume();
    return new BenchServer(child, url, exited, o.logFile);
  }

  stats(): ProcStats | undefined {
    return procStats(this.pid);
  }

  /** SIGTERM (drain, flush, commit everything acknowledged) and wait for exit; SIGKILL after `timeoutMs`. */
  async stop(timeoutMs: number): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
    const code = await Promise.race([this.exited, timedOut]);
    clearTimeout(timer);
    if (code === 'timeout') {
      this.child.kill('SIGKILL');
      await this.exited;
      throw externalError('bench_server_stuck', `sluice serve did not stop within ${timeoutMs} ms of SIGTERM (killed); its log: ${this.logFile}\n${tail(this.logFile)}`, undefined, 'none');
    }
    if (code !== 0) throw externalError('bench_server_failed', `sluice serve exited with code ${code}; its log: ${this.logFile}\n${tail(this.logFile)}`, undefined, 'none');
  }

  /** Last resort on an error path: no drain. */
  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

function tail(file: string): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
}
