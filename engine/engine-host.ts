/**
 * The engine process: what `sluice serve` spawns (niced as a whole, V8's helper threads
 * included) so that the engine's work never competes with the ack thread on equal terms. It runs
 * the coordinator over the shard logs that ingest writes: it reads them from the files (below the
 * durable marks ingest reports) and asks ingest to truncate them; everything else it needs is in
 * the data directory and the lake. Messages: engine/host-protocol.ts.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pino } from 'pino';
import { register } from 'prom-client';
import { readiness } from '../ingest/metrics.js';
import { Coordinator } from './coordinator.js';
import type { EngineHostInit, FromEngine, ToEngine } from './host-protocol.js';
import { logDir } from './local-logs.js';
import { RemoteLog } from './remote-log.js';
import { engineMetrics } from './telemetry.js';
import { anonymousResidentBytes } from '../common/resident-memory.js';
import { SluiceError } from '../common/errors.js';

const STATUS_EVERY_MS = 200;
const TAKEOVER_WAIT_MS = 30_000;

/**
 * One engine per data directory: an earlier engine process (orphaned by a killed ingest, still
 * exiting) must be gone before this one touches the shards' state. Waits for the process named in
 * the pid file to exit (killing it after TAKEOVER_WAIT_MS), then writes this one's pid there.
 */
async function takeOver(pidFile: string): Promise<void> {
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  let previous = NaN;
  try {
    previous = Number((await readFile(pidFile, 'utf8')).trim());
  } catch {
    // no earlier engine
  }
  if (Number.isInteger(previous) && previous > 0 && previous !== process.pid && alive(previous)) {
    logger.warn({ pid: previous }, 'waiting for an earlier engine process on this data directory to exit');
    const deadline = Date.now() + TAKEOVER_WAIT_MS;
    while (alive(previous) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    if (alive(previous)) process.kill(previous, 'SIGKILL');
  }
  await mkdir(dirname(pidFile), { recursive: true });
  await writeFile(pidFile, `${process.pid}\n`);
}
const METRICS_EVERY_MS = 1000;

const init = JSON.parse(process.env.SLUICE_ENGINE_HOST ?? 'null') as EngineHostInit | null;
if (init === null || typeof process.send !== 'function') {
  process.stderr.write('engine-host: start me through `sluice serve` (needs SLUICE_ENGINE_HOST and an IPC channel)\n');
  process.exit(2);
}
const send = (m: FromEngine): void => {
  if (process.connected) process.send!(m);
};
const logger = pino({ level: init.logLevel, base: { proc: 'engine' } }, pino.destination(2));
const { options } = init;
const shards = init.marks.map((mark, s) => new RemoteLog(logDir(options.dataDir, s), mark, (before) => send({ kind: 'truncate', shard: s, before })));
const dlq = new RemoteLog(logDir(options.dataDir, -1), init.dlqMark, (before) => send({ kind: 'truncate', shard: -1, before }));

// Erasure asks ingest (the logs' writer) to seal a log's active segment; answers match by id.
const ROLL_TIMEOUT_MS = 30_000;
const rolls = new Map<number, { resolve: (first: number) => void; reject: (err: Error) => void }>();
let rollIds = 0;
const roll = (shard: number): Promise<number> =>
  new Promise<number>((resolve, reject) => {
    const id = ++rollIds;
    const timer = setTimeout(() => {
      rolls.delete(id);
      reject(new Error(`ingest did not answer a roll of log ${shard} within ${ROLL_TIMEOUT_MS} ms`));
    }, ROLL_TIMEOUT_MS);
    timer.unref();
    const done = <T,>(f: (v: T) => void) => (v: T): void => {
      clearTimeout(timer);
      rolls.delete(id);
      f(v);
    };
    rolls.set(id, { resolve: done(resolve), reject: done(reject) });
    send({ kind: 'roll', id, shard });
  });

// Marks that arrive while the coordinator recovers are applied once it runs.
let coordinator: Coordinator | undefined;
/** The coordinator's start (recovery: replaying the logs since the last checkpoint); set below. */
let starting: Promise<Coordinator> | undefined;
const early: Array<[number, number, number]> = [];
let closing: Promise<void> | undefined;

const close = (): Promise<void> =>
  (closing ??= (async () => {
    let error: string | undefined;
    try {
      // A stop during recovery waits for it: the close drains and commits what ingest acknowledged
      // (it used to exit at once with success, leaving those events to the next start).
      await (coordinator ?? (await starting))?.close();
    } catch (err) {
      error = (err as Error)?.message ?? String(err);
      logger.error({ err }, 'engine close failed; acknowledged events stay in the log for the next start');
    }
    send({ kind: 'closed', error });
    process.exit(error === undefined ? 0 : 1);
  })());

const applyMarks = (marks: Array<[number, number, number]>): void => {
  for (const [shard, next, rows] of marks) {
    if (shard < 0) dlq.durableNextOffset = Math.max(dlq.durableNextOffset, next);
    else {
      shards[shard]!.durableNextOffset = Math.max(shards[shard]!.durableNextOffset, next);
      coordinator?.durable(shard, next, rows);
    }
  }
};

process.on('message', (m: ToEngine) => {
  switch (m.kind) {
    case 'durable':
      if (coordinator === undefined) early.push(...m.marks);
      applyMarks(m.marks);
      break;
    case 'close':
      void close();
      break;
    case 'rolled': {
      const waiter = rolls.get(m.id);
      if (m.error !== undefined || m.first === undefined) waiter?.reject(new Error(`ingest could not seal the log: ${m.error ?? 'no answer'}`));
      else waiter?.resolve(m.first);
      break;
    }
  }
});
// Ingest is gone (killed): stop at once, as in a crash — the next `serve` starts a new engine that
// recovers from the last checkpoint, and must not find this one still writing the same state.
process.on('disconnect', () => {
  if (closing !== undefined) return;
  logger.warn('ingest went away: exiting; the next start recovers from the last checkpoint');
  process.exit(1);
});

const engineMetricNames = Object.values(engineMetrics).map((m) => (m as unknown as { name: string }).name);

starting = (async () => {
  await takeOver(join(options.dataDir, 'engine.pid'));
  const started = await Coordinator.start(options, logger, { shards, dlq, roll });
  // Shard marks only: the DLQ log's (shard −1) went to `dlq` in applyMarks (a restart while invalid
  // events arrived died here, again and again, as long as they kept coming).
  for (const [shard, next, rows] of early.splice(0)) if (shard >= 0) started.durable(shard, next, rows);
  coordinator = started;
  return started;
})();
const c = await starting.catch((err: unknown) => {
  // Said to ingest before exiting, so that `sluice serve` ends with this error's own line (a lake
  // in use, a shard count refused) rather than "the engine process exited during recovery".
  const e = err instanceof SluiceError ? err : undefined;
  // A user's mistake is ingest's to report, in one line; anything else is logged here with its stack.
  if (e?.domain !== 'user' || !process.connected) logger.error({ err }, 'the engine could not start');
  const failed: FromEngine = { kind: 'failed', code: e?.code ?? 'engine_start_failed', domain: e?.domain ?? 'internal', message: e?.message ?? (err as Error)?.message ?? String(err), retry: e?.retry ?? 'none' };
  // Exit once the message is out (or at once without a channel).
  if (process.connected) process.send!(failed, () => process.exit(1));
  else process.exit(1);
  return new Promise<never>(() => {});
});
send({ kind: 'started' });
setInterval(() => {
  const failure = c.failure;
  const reasons = failure === undefined ? [] : readiness.reasons().length > 0 ? readiness.reasons() : [failure.message];
  send({ kind: 'status', backlog: c.backlog(), reasons, live: c.live(), anonBytes: anonymousResidentBytes(), processed: c.processedOffsets() });
}, STATUS_EVERY_MS).unref();
setInterval(() => {
  void Promise.all(engineMetricNames.map((n) => register.getSingleMetricAsString(n).catch(() => ''))).then((parts) =>
    send({ kind: 'metrics', text: parts.filter((p) => p !== '').join('\n') }),
  );
}, METRICS_EVERY_MS).unref();
