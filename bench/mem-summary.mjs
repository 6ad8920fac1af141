/**
 * Summarise bench/mem-probe.mjs's output (bench-only):
 *   node bench/mem-summary.mjs PROBE_DIR [LOAD_START_EPOCH_MS]
 * Per isolate (role, pid, threadId): heap used, external, arrayBuffers every ~minute (ticks), and
 * before/after each forced GC; the engine main thread's smaps split (brk / wasm / other).
 */
import { readdirSync, readFileSync } from 'node:fs';

const [dir, startArg] = process.argv.slice(2);
const files = readdirSync(dir).filter((f) => f.startsWith('mem-') && f.endsWith('.jsonl'));
const all = files.flatMap((f) => readFileSync(`${dir}/${f}`, 'utf8').trim().split('\n').map((l) => JSON.parse(l)));
const t0 = Number(startArg ?? Math.min(...all.map((x) => x.at)));
const t = (x) => `${((x.at - t0) / 60000).toFixed(1).padStart(5)}m`;
const key = (x) => `${x.role} pid ${x.pid} thread ${x.threadId}`;
const groups = new Map();
for (const x of all) groups.set(key(x), [...(groups.get(key(x)) ?? []), x]);
for (const [k, xs] of [...groups.entries()].sort()) {
  xs.sort((a, b) => a.at - b.at);
  console.log(`\n## ${k}`);
  console.log('   t     kind          heapUsed  external  arrayBuffers  malloced   (maps: brk wasm other file)');
  let lastTick = -Infinity;
  for (const x of xs) {
    if (x.kind === 'tick' && x.at - lastTick < 55_000) continue;
    if (x.kind === 'tick') lastTick = x.at;
    if (x.kind === 'snap-before' || x.kind === 'start') continue;
    const maps = x.maps ? `  (${x.maps.brk} ${x.maps.wasm}×${x.maps.wasmCount} ${x.maps.other} ${x.maps.file})` : '';
    console.log(`${t(x)} ${(x.kind + (x.trigger ? ' ' + x.trigger : '')).padEnd(20)} ${String(x.heapUsed).padStart(7)} ${String(x.external).padStart(9)} ${String(x.arrayBuffers).padStart(12)} ${String(x.malloced).padStart(9)}${x.gcMs !== undefined ? `  gc ${x.gcMs} ms` : ''}${x.snapMs !== undefined ? `  snap ${x.snapMs} ms` : ''}${maps}`);
  }
}
