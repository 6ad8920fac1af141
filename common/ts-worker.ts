/**
 * Worker threads whose entry is a module of this project: run directly when compiled (`.js`); from
 * TypeScript sources (tests, dev scripts) through a one-line bootstrap that registers tsx's ESM
 * hooks first and then imports the `.ts` entry — on Node 20, `--import tsx` in a worker's execArgv
 * does not reach its entry. A worker gets the node flags of its process that a thread accepts
 * (`workerExecArgv`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { internalError } from './errors.js';

/**
 * A worker thread running `entry` (a file: URL of a .js or, from sources, .ts module); without
 * `options.execArgv`, with `workerExecArgv()` (a Worker otherwise inherits every flag, and Node
 * refuses it when one is process-wide).
 */
export function startModuleWorker(entry: URL, options: WorkerOptions = {}): Worker {
  const o = { ...options, execArgv: options.execArgv ?? workerExecArgv() };
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, o);
  const boot = `import(${JSON.stringify(tsxApiUrl())}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { ...o, eval: true });
}

/**
 * A flag every Worker refuses (V8's stack size is per process; this is its default on x64): added
 * to the probe in `acceptedByWorkers` so that Node always answers with its list of refused flags,
 * and no thread is started.
 */
const REFUSED_SENTINEL = '--stack-size=984';
const REFUSED_PREFIX = 'Initiated Worker with invalid execArgv flags: ';
const accepted = new Map<string, string[]>();

/**
 * The flags of `argv` (default: this process's execArgv) that a worker thread accepts. Node refuses
 * a Worker whose execArgv holds a process-wide flag — V8's (`--stack-size`, `--trace-gc`,
 * `--expose-gc`, heap sizes, …) or Node's per-process ones (`--title`, `--icu-data-dir`, …) — with
 * ERR_WORKER_INVALID_EXEC_ARGV, and those apply to every thread of the process anyway; the others
 * (loaders, `--cpu-prof`, `--enable-source-maps`, `--trace-warnings`, …) are per thread and must be
 * passed on. So `node --trace-gc bin/sluice.js serve` runs its workers with the rest (it used to
 * stop during recovery, its shard workers refused).
 *
 * Which is which is Node's own answer: a Worker built with `argv` plus a flag that is always
 * refused throws synchronously, before a thread starts, naming every refused element. Asked once
 * per distinct `argv`. Should the answer not read as expected (another Node), the heap-size flags
 * are dropped as before and the rest passed on.
 */
export function workerExecArgv(argv: readonly string[] = process.execArgv): string[] {
  if (argv.length === 0) return [];
  const key = argv.join('\0');
  let keep = accepted.get(key);
  if (keep === undefined) {
    keep = acceptedByWorkers(argv);
    accepted.set(key, keep);
  }
  return [...keep];
}

function acceptedByWorkers(argv: readonly string[]): string[] {
  let keep = [...argv];
  for (let round = 0; round <= argv.length; round++) {
    const refused = refusedByWorkers(keep);
    if (refused === undefined) break;
    // execArgv holds no script or arguments: an element after a flag that is not itself a flag is that flag's value.
    keep = keep.filter((a, i) => !(refused.has(a) || (!a.startsWith('-') && i > 0 && refused.has(keep[i - 1]!))));
    if (refused.has(REFUSED_SENTINEL)) return keep; // every refused flag was named
  }
  return argv.filter((a) => !HEAP_FLAG.test(a));
}

/**
 * The elements of `argv` Node refuses in a Worker's execArgv, the sentinel among them once Node
 * named them all (it stops at a refused flag given its value apart: `--title x`); undefined when
 * its answer does not read as expected.
 */
function refusedByWorkers(argv: readonly string[]): Set<string> | undefined {
  try {
    void new Worker('', { eval: true, execArgv: [...argv, REFUSED_SENTINEL] }).terminate(); // not expected: the sentinel was accepted
  } catch (err) {
    const message = (err as { code?: unknown }).code === 'ERR_WORKER_INVALID_EXEC_ARGV' ? String((err as Error).message) : '';
    if (!message.startsWith(REFUSED_PREFIX)) return undefined;
    const refused = new Set(message.slice(REFUSED_PREFIX.length).split(', '));
    return [...refused].every((a) => a === REFUSED_SENTINEL || argv.includes(a)) ? refused : undefined;
  }
  return undefined;
}

/** V8's heap-size flags (per process; the young generation reaches workers through resourceLimits). */
const HEAP_FLAG = /^--(max-semi-space-size|min-semi-space-size|max-old-space-size|max-young-generation-size|initial-old-space-size|initial-heap-size)(=|$)/;

/** file: URL of tsx's ESM register API (import.meta.resolve is missing under some test runners). */
function tsxApiUrl(): string {
  if (typeof import.meta.resolve === 'function') return import.meta.resolve('tsx/esm/api');
  // Walk up from the CommonJS entry to tsx's package.json and read the ESM entry from its exports.
  let dir = dirname(createRequire(import.meta.url).resolve('tsx/esm/api'));
  for (;;) {
    const pkgFile = join(dir, 'package.json');
    if (existsSync(pkgFile)) {
      const pkg = JSON.parse(readFileSync(pkgFile, 'utf8')) as { name?: string; exports?: Record<string, { import?: { default?: string } }> };
      const rel = pkg.name === 'tsx' ? pkg.exports?.['./esm/api']?.import?.default : undefined;
      if (rel) return pathToFileURL(join(dir, rel)).href;
    }
    const up = dirname(dir);
    if (up === dir) throw internalError('tsx_not_found', 'cannot locate tsx/esm/api to run worker threads from TypeScript sources; run npm install');
    dir = up;
  }
}
