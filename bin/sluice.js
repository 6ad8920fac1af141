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
