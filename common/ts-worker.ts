/**
 * Worker threads whose entry is a module of this project: run directly when compiled (`.js`); from
 * TypeScript sources (tests, dev scripts) through a one-line bootstrap that registers tsx's ESM
 * hooks first and then imports the `.ts` entry — on Node 20, `--import tsx` in a worker's execArgv
 * does not reach its entry.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';
import { internalError } from './errors.js';

/** A worker thread running `entry` (a file: URL of a .js or, from sources, .ts module). */
export function startModuleWorker(entry: URL, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const boot = `import(${JSON.stringify(tsxApiUrl())}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { ...options, eval: true });
}

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
