/**
 * The memory a budget (--max-memory) should count: the process's anonymous resident memory
 * (RssAnon + RssShmem in /proc/self/status: V8 and wasm heaps, ArrayBuffers, malloc) — not its
 * file-backed resident pages (RssFile: LMDB's memory map, the executable and its libraries).
 * Those are page cache the kernel reclaims under pressure; they grow with the dedup index as
 * lookups touch it (soak 2026-12-03: the engine's RssFile 77 → 200 MiB in 25 min), so counting
 * them made a server refuse events for memory it would have got back for free.
 *
 * Falls back to the whole RSS where /proc is not there (not Linux).
 */
import { readFileSync } from 'node:fs';

const FIELDS = /^(RssAnon|RssShmem):\s+(\d+) kB$/gm;

export function anonymousResidentBytes(): number {
  let status: string;
  try {
    status = readFileSync('/proc/self/status', 'latin1');
  } catch {
    return process.memoryUsage.rss();
  }
  let kb = 0;
  let found = 0;
  for (const m of status.matchAll(FIELDS)) {
    kb += Number(m[2]);
    found++;
  }
  return found === 0 ? process.memoryUsage.rss() : kb * 1024;
}
