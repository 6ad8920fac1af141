/**
 * Starts a real NATS JetStream cluster of `nats-server` processes on loopback for tests and
 * benchmarks: one process per node, each with its own client port, cluster (route) port and
 * store directory under one temp directory, all routed to each other. No mocks.
 *
 *   node n1 ── routes ── node n2
 *        \               /
 *         ──── node n3 ──        client ports: `urls` (127.0.0.1 only)
 *
 * `kill(i)` is a SIGKILL (a crash: no clean shutdown, the store dir keeps what was fsync'd or
 * replicated); `restart(i)` starts the node again on the same ports and store dir.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';

/** Path of `nats-server`, or undefined when it is not installed (the test files skip then). */
export function natsServerPath(): string | undefined {
  for (const p of [process.env.NATS_SERVER, '/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) {
    if (p !== undefined && p !== '' && spawnSync(p, ['--version'], { stdio: 'ignore' }).status === 0) return p;
  }
  const which = spawnSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' });
  const found = which.stdout.trim();
  return which.status === 0 && found !== '' ? found : undefined;
}

export interface NatsCluster {
  /** Client URLs, one per node (`nats://127.0.0.1:port`). */
  readonly urls: string[];
  /** The temp directory holding each node's store dir, config and log. */
  readonly dir: string;
  /** SIGKILLs node `i` (0-based) and waits until its process is gone. */
  kill(i: number): Promise<void>;
  /** Starts node `i` again (same ports, same store dir) and waits until it accepts clients. */
  restart(i: number): Promise<void>;
  /** Whether node `i` is running. */
  running(i: number): boolean;
  /** Sends node `i` a signal (`SIGSTOP` freezes it as a hung machine would, `SIGCONT` thaws it). */
  signal(i: number, signal: NodeJS.Signals): void;
  /** Waits (bounded) until JetStream answers through some live node: a meta leader exists. */
  waitForMetaLeader(timeoutMs?: number): Promise<void>;
  /** Stops every node (SIGTERM, then SIGKILL after 5 s) and deletes the temp directory. */
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /** Nodes (default 3). */
  nodes?: number;
  /** Keep the temp directory after stop (debugging). */
  keep?: boolean;
}

/**
 * `n` distinct free loopback TCP ports: all bound at once, then released (the servers bind them
 * right after). Bound one at a time and released in between, the OS may hand out the same port
 * twice: two nodes on one client port, the second exits, and the helper — which only waits for
 * the port to accept connections — takes the cluster for three nodes (R3 streams then fail with
 * "no suitable peers for placement"; seen in a local loop of the cluster tests).
 */
async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  try {
    return await Promise.all(
      servers.map(
        (s) =>
          new Promise<number>((resolve, reject) => {
            s.once('error', reject);
            s.listen(0, '127.0.0.1', () => {
              const addr = s.address();
              resolve(typeof addr === 'object' && addr !== null ? addr.port : 0);
            });
          }),
      ),
    );
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve()))));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits (bounded) until a TCP connection to the port succeeds. */
async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const { connect: tcp } = await import('node:net');
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nats-server on port ${port} exited (${child.exitCode ?? child.signalCode}) before it listened`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = tcp({ host: '127.0.0.1', port }, () => (sock.destroy(), resolve(true)));
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nats-server did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** Attempts at starting a cluster: its ports are free when picked, but another process of a parallel test run can bind one before nats-server does. */
const START_ATTEMPTS = 3;

export async function startNatsCluster(options: NatsClusterOptions = {}): Promise<NatsCluster> {
  const bin = natsServerPath();
  if (bin === undefined) throw new Error('nats-server is not installed (apt-get install -y nats-server)');
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(bin, options);
    } catch (err) {
      // Only a port taken in between is retried (with fresh ports); anything else is the test's failure.
      if (attempt >= START_ATTEMPTS || !/address already in use/i.test((err as Error)?.message ?? '')) throw err;
    }
  }
}

async function startOnce(bin: string, options: NatsClusterOptions): Promise<NatsCluster> {
  const n = options.nodes ?? 3;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-nats-'));
  const ports: Array<{ client: number; route: number }> = [];
  const picked = await freePorts(2 * n);
  for (let i = 0; i < n; i++) ports.push({ client: picked[2 * i]!, route: picked[2 * i + 1]! });
  const routes = ports.map((p) => `nats-route://127.0.0.1:${p.route}`);
  const configs: string[] = [];
  for (let i = 0; i < n; i++) {
    const store = join(dir, `n${i + 1}`, 'store');
    mkdirSync(store, { recursive: true });
    const conf = join(dir, `n${i + 1}`, 'nats.conf');
    const lines = [
      `server_name: n${i + 1}`,
      `listen: 127.0.0.1:${ports[i]!.client}`,
      `jetstream { store_dir: ${JSON.stringify(store)}, max_memory_store: 64MB, max_file_store: 2GB }`,
    ];
    if (n > 1) {
      lines.push(`cluster { name: sluice, listen: 127.0.0.1:${ports[i]!.route}, routes: [${routes.filter((_, k) => k !== i).join(', ')}] }`);
    }
    writeFileSync(conf, lines.join('\n') + '\n');
    configs.push(conf);
  }
  const children: Array<ChildProcess | undefined> = new Array(n).fill(undefined);

  const launch = async (i: number): Promise<void> => {
    const logFile = createWriteStream(join(dir, `n${i + 1}`, 'server.log'), { flags: 'a' });
    const child = spawn(bin, ['-c', configs[i]!], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout!.pipe(logFile);
    child.stderr!.pipe(logFile);
    children[i] = child;
    try {
      await waitForPort(ports[i]!.client, child, 20_000);
    } catch (err) {
      // Say why: nats-server logs it ("address already in use", a bad config, …).
      const tail = await logTail(i);
      throw new Error(`${(err as Error).message}${tail === '' ? '' : `; its log: ${tail}`}`);
    }
  };
  const logTail = async (i: number): Promise<string> => {
    const log = join(dir, `n${i + 1}`, 'server.log');
    await new Promise((r) => setTimeout(r, 100)); // let the piped output reach the file
    return existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
  };

  const exited = (c: ChildProcess) => c.exitCode !== null || c.signalCode !== null;
  const waitExit = (c: ChildProcess, ms: number) =>
    exited(c) ? Promise.resolve(true) : new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), ms);
      c.once('exit', () => (clearTimeout(t), resolve(true)));
    });

  const cluster: NatsCluster = {
    urls: ports.map((p) => `nats://127.0.0.1:${p.client}`),
    dir,
    async kill(i) {
      const c = children[i];
      if (c === undefined || exited(c)) return;
      c.kill('SIGKILL');
      await waitExit(c, 10_000);
    },
    async restart(i) {
      const c = children[i];
      if (c !== undefined && !exited(c)) throw new Error(`node ${i} is still running`);
      await launch(i);
    },
    running(i) {
      const c = children[i];
      return c !== undefined && !exited(c);
    },
    signal(i, signal) {
      const c = children[i];
      if (c !== undefined && !exited(c)) c.kill(signal);
    },
    async waitForMetaLeader(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      let last: unknown;
      while (Date.now() < deadline) {
        const live = cluster.urls.filter((_, i) => cluster.running(i));
        try {
          const nc = await connect({ servers: live, timeout: 2000, reconnect: false });
          try {
            const jsm = await jetstreamManager(nc, { timeout: 2000 });
            await jsm.getAccountInfo();
            return;
          } finally {
            await nc.close();
          }
        } catch (err) {
          last = err;
        }
        await sleep(200);
      }
      throw new Error(`no JetStream meta leader within ${timeoutMs} ms: ${(last as Error)?.message ?? String(last)}`);
    },
    async stop() {
      await Promise.all(children.map(async (c) => {
        if (c === undefined || exited(c)) return;
        c.kill('SIGCONT'); // a frozen node would ignore SIGTERM until the SIGKILL
        c.kill('SIGTERM');
        if (!(await waitExit(c, 5000))) {
          c.kill('SIGKILL');
          await waitExit(c, 5000);
        }
      }));
      if (!options.keep) rmSync(dir, { recursive: true, force: true });
    },
  };

  try {
    await Promise.all(configs.map((_, i) => launch(i)));
    // A node whose port another process took exits right after starting — possibly after its
    // port already answered (the other process): check that every node is still up.
    await sleep(300);
    for (let i = 0; i < n; i++) {
      if (!cluster.running(i)) throw new Error(`nats-server n${i + 1} exited right after it started; its log: ${await logTail(i)}`);
    }
    await cluster.waitForMetaLeader();
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}
