#!/usr/bin/env node
// Entry shim: registers the TypeScript loader (tsx) so the CLI and its worker threads run from source.
// Log fsyncs, Parquet writes and LMDB share libuv's thread pool (4 threads by default): give
// them room so a shard's group-commit fsync never queues behind checkpoint file writes.
process.env.UV_THREADPOOL_SIZE ??= '32';
const { register } = await import('tsx/esm/api');

register();
const { main } = await import('../cli/main.ts');
await main(process.argv.slice(2));
