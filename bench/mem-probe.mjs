/**
 * Memory probe for the soak (bench-only; preloaded into every isolate of `sluice serve` through
 * NODE_OPTIONS=--import, like bench/soak.ts's heap probe). Active only when MEM_PROBE_DIR is set,
 * and only in the server's processes: the engine process (SLUICE_ENGINE_HOST in its environment;
 * its main thread and every piscina worker) and ingest (`bin/sluice.js serve`).
 *
 * Each isolate appends one JSON line per sample to MEM_PROBE_DIR/mem-<role>-<pid>-<threadId>.jsonl:
 * process.memoryUsage() (external, arrayBuffers are this isolate's; rss is the process's) and
 * v8.getHeapStatistics(), every MEM_PROBE_EVERY_MS (default 10 s). Triggers, polled every 2 s:
 *   touch MEM_PROBE_DIR/gc-<N>    every isolate samples, forces a full GC (gc(), twice), samples
 *                                 again (kind "gc-before"/"gc-after"); the engine main thread also
 *                                 records its process's smaps split (brk, wasm, other) before and
 *                                 10 s after.
 *   touch MEM_PROBE_DIR/snap-<N>  every isolate of the engine writes a heap snapshot
 *                                 MEM_PROBE_DIR/<N>-<role>-<pid>-<threadId>.heapsnapshot
 * Run:  MEM_PROBE_DIR=/tmp/x NODE_OPTIONS="--import file:///…/bench/mem-probe.mjs" node --import tsx bench/soak.ts …
 */
import { getHeapStatistics, setFlagsFromString, writeHeapSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { isMainThread, threadId } from 'node:worker_threads';
import { appendFileSync, existsSync, readFileSync } from 'node:fs';

const dir = process.env.MEM_PROBE_DIR;
const engine = process.env.SLUICE_ENGINE_HOST !== undefined;
const ingest = !engine && /sluice\.js$/.test(process.argv[1] ?? '') && process.argv[2] === 'serve';
if (dir && (engine || ingest)) {
  const role = engine ? (isMainThread ? 'engine-main' : 'engine-worker') : isMainThread ? 'ingest-main' : 'ingest-worker';
  const file = `${dir}/mem-${role}-${process.pid}-${threadId}.jsonl`;
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc');
  const every = Number(process.env.MEM_PROBE_EVERY_MS ?? 10_000);
  const mib = (b) => Math.round((b / 2 ** 20) * 10) / 10;

  const smaps = () => {
    const out = { brk: 0, wasm: 0, wasmCount: 0, other: 0, file: 0 };
    let text;
    try {
      text = readFileSync('/proc/self/smaps', 'utf8');
    } catch {
      return out;
    }
    const maps = [];
    for (const block of text.split(/\n(?=[0-9a-f]+-[0-9a-f]+ )/)) {
      const head = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+ *(.*)$/m.exec(block);
      if (!head) continue;
      const anon = Number(/^Anonymous:\s+(\d+) kB/m.exec(block)?.[1] ?? 0) * 1024;
      const rss = Number(/^Rss:\s+(\d+) kB/m.exec(block)?.[1] ?? 0) * 1024;
      maps.push({ start: parseInt(head[1], 16), end: parseInt(head[2], 16), perm: head[3], name: head[4].trim(), anon, rss });
    }
    maps.forEach((m, i) => {
      if (m.rss - m.anon > 0) out.file += m.rss - m.anon;
      if (m.anon === 0) return;
      const next = maps[i + 1];
      if (m.name === '[heap]') out.brk += m.anon;
      else if (m.perm.startsWith('rw') && m.name === '' && next && next.start === m.end && next.perm.startsWith('---') && next.end - next.start >= 2 ** 30) {
        out.wasm += m.anon;
        out.wasmCount++;
      } else out.other += m.anon;
    });
    return { brk: mib(out.brk), wasm: mib(out.wasm), wasmCount: out.wasmCount, other: mib(out.other), file: mib(out.file) };
  };

  const sample = (kind, extra = {}) => {
    const m = process.memoryUsage();
    const h = getHeapStatistics();
    const line = {
      at: Date.now(),
      kind,
      role,
      pid: process.pid,
      threadId,
      rss: mib(m.rss),
      heapUsed: mib(h.used_heap_size),
      heapTotal: mib(h.total_heap_size),
      external: mib(m.external),
      arrayBuffers: mib(m.arrayBuffers),
      v8External: mib(h.external_memory),
      malloced: mib(h.malloced_memory),
      peakMalloced: mib(h.peak_malloced_memory),
      nativeContexts: h.number_of_native_contexts,
      detachedContexts: h.number_of_detached_contexts,
      ...extra,
    };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  };

  const done = new Set();
  const poll = () => {
    for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9]) {
      const g = `gc-${n}`;
      if (!done.has(g) && existsSync(`${dir}/${g}`)) {
        done.add(g);
        const before = role === 'engine-main' ? smaps() : undefined;
        sample('gc-before', { trigger: g, ...(before ? { maps: before } : {}) });
        const t = performance.now();
        gc();
        gc();
        sample('gc-after', { trigger: g, gcMs: Math.round(performance.now() - t) });
        if (role === 'engine-main') setTimeout(() => sample('gc-after-10s', { trigger: g, maps: smaps() }), 10_000).unref();
      }
      const s = `snap-${n}`;
      if (engine && !done.has(s) && existsSync(`${dir}/${s}`)) {
        done.add(s);
        sample('snap-before', { trigger: s });
        const t = performance.now();
        const path = writeHeapSnapshot(`${dir}/${n}-${role}-${process.pid}-${threadId}.heapsnapshot`);
        sample('snap-after', { trigger: s, snapMs: Math.round(performance.now() - t), path });
      }
    }
  };
  sample('start');
  setInterval(() => sample('tick', role === 'engine-main' ? { maps: smaps() } : {}), every).unref();
  setInterval(poll, 2000).unref();
}
