#!/usr/bin/env node
// Entry point of the `sluice` command: runs the compiled JavaScript in dist/ (`npm run build`;
// `npm ci` builds it) from any working directory, with no TypeScript loader.
//
// This file is CommonJS (bin/package.json) on purpose. Log fsyncs, Parquet writes and LMDB share
// libuv's thread pool (4 threads by default), and libuv sizes that pool from UV_THREADPOOL_SIZE
// once, when it is first used. Loading an ES module entry already reads files through the pool,
// so an ESM entry sets the variable too late; a CommonJS entry is read synchronously and gets to
// set it first. The compiled CLI itself is ESM and is imported after.
'use strict';
process.env.UV_THREADPOOL_SIZE ??= '32';

// V8 lets the old generation grow only a little past what the last full collection left live.
// The ack thread's heap is small (≈ 20 MB live) while request bodies, Arrow records and their
// buffers churn through it, so under load it ran a full mark-compact about every second (32–42 in
// 45 s at 8 K Segment events/s), each a pause of the acks. Growing to 2× live before the next one:
// 3–4 in 45 s, client p99 ack 14.4–14.9 → 8.0–8.6 ms (bench/results/heap-growing-2026-12-05.md). The
// factor is read at every collection, so it can be set here, unlike heap sizes (fixed when the
// isolate is created: `--initial-old-space-size` works only on node's command line).
// SLUICE_HEAP_GROWING_PERCENT=0 leaves V8's own factor.
const growing = process.env.SLUICE_HEAP_GROWING_PERCENT ?? '100';
if (!/^\d{1,4}$/.test(growing)) {
  process.stderr.write(`sluice: SLUICE_HEAP_GROWING_PERCENT must be a whole number from 0 to 9999 (0: V8's default heap growth), got ${JSON.stringify(growing)}\n`);
  process.exit(1);
}
if (Number(growing) > 0) require('node:v8').setFlagsFromString(`--heap-growing-percent=${Number(growing)}`);

const { existsSync } = require('node:fs');
const { join } = require('node:path');
const { pathToFileURL } = require('node:url');

// As bin/sluice.js in a checkout the compiled code is in ../dist/; the build also copies this
// file to dist/bin/sluice.js, where it is in ../.
const main = [join(__dirname, '..', 'cli', 'main.js'), join(__dirname, '..', 'dist', 'cli', 'main.js')].find((p) => existsSync(p));
if (main === undefined) {
  process.stderr.write(`sluice: the compiled JavaScript is missing (${join(__dirname, '..', 'dist')}); run \`npm run build\` in ${join(__dirname, '..')}\n`);
  process.exitCode = 1;
} else {
  // A rejection here is left unhandled on purpose: Node prints it and exits 1, as for any crash.
  import(pathToFileURL(main).href).then((cli) => cli.main(process.argv.slice(2)));
}
