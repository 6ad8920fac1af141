/**
 * `sluice serve` as a child process for the overload benchmarks (bench/conn-storm.ts,
 * bench/soak.ts): the compiled CLI (bin/sluice.js → dist/, so `npm run build` first) with any
 * flags, in its own process group; /proc figures per process (ingest and the engine process
 * apart), and small raw-socket HTTP helpers that do not share a connection pool with the load.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { fileURLToPath } from 'node:url';
import { childrenOf } from './e2e-server.js';

export interface ServeChild {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Resident memory (bytes) of the serve process (ingest) and of its children (the engine process). */
  rss(): { ingest: number; engine: number };
  /** SIGTERM (drain, commit everything acknowledged), wait up to `timeoutMs`; the exit code (SIGKILL after the bound: -1). */
  stop(timeoutMs: number): Promise<number>;
}

const rssOf = (pid: number): number => {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
};

/** Starts `node bin/sluice.js serve --host 127.0.0.1 --port 0 …args`; resolves once it listens. */
export function startServe(args: string[], logFile: string, startTimeoutMs = 120_000): Promise<ServeChild> {
  return startSluiceChild('serve', args, logFile, startTimeoutMs);
}

/**
 * Starts `node bin/sluice.js <command> --host 127.0.0.1 --port 0 …args` (`serve`, or an engine
 * node's `engine`) in its own process group; resolves once it prints "listening on <url>".
 */
export async function startSluiceChild(command: 'serve' | 'engine', args: string[], logFile: string, startTimeoutMs = 120_000): Promise<ServeChild> {
  const bin = fileURLToPath(new URL('../bin/sluice.js', import.meta.url));
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SLUICE_')));
  env.SLUICE_LOG_LEVEL = 'warn';
  const err = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [bin, command, '--host', '127.0.0.1', '--port', '0', ...args], { env, stdio: ['ignore', 'pipe', err], detached: true });
  } finally {
    closeSync(err);
  }
  const orphan = (): void => void child.kill('SIGKILL');
  process.once('exit', orphan);
  const exited = new Promise<number>((resolve) =>
    child.once('exit', (code) => {
      process.off('exit', orphan);
      resolve(code ?? -1);
    }),
  );
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sluice ${command} did not listen within ${startTimeoutMs} ms; see ${logFile}`));
    }, startTimeoutMs);
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      out += chunk;
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`sluice ${command} exited with ${code} before listening; see ${logFile}`));
    });
  });
  child.stdout!.resume();
  const pid = child.pid!;
  return {
    url,
    port: Number(new URL(url).port),
    pid,
    rss: () => ({ ingest: rssOf(pid), engine: childrenOf(pid).reduce((sum, c) => sum + rssOf(c), 0) }),
    stop: async (timeoutMs) => {
      if (child.exitCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([exited, new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)))]);
      clearTimeout(timer);
      if (r !== 'timeout') return r;
      child.kill('SIGKILL');
      await exited;
      return -1;
    },
  };
}

/**
 * One GET on a fresh loopback connection (as a load balancer's probe does): status and ms from
 * connect to the status line, or `timeout` after `timeoutMs`.
 */
export function probe(port: number, path: string, timeoutMs: number): Promise<{ status: number; ms: number } | 'timeout'> {
  return new Promise((resolve) => {
    const started = performance.now();
    const sock = connect({ host: '127.0.0.1', port });
    let buf = '';
    const done = (r: { status: number; ms: number } | 'timeout'): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    sock.setNoDelay(true);
    sock.on('connect', () => sock.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`));
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(buf);
      if (m) done({ status: Number(m[1]), ms: performance.now() - started });
    });
    sock.on('error', () => done({ status: 0, ms: performance.now() - started }));
  });
}

/** Prometheus text → value of the first sample of `name` whose labels contain `labels` (NaN if absent). */
export function metricValue(text: string, name: string, labels = ''): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (labels !== '' && !rest.includes(labels)) continue;
    return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return NaN;
}

/** Percentile (0–100) of `xs` by nearest rank; NaN when empty. */
export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
