/**
 * Thread niceness (Linux: `setPriority` with no pid sets the calling thread's only).
 */
import { getPriority, setPriority } from 'node:os';

/**
 * Makes the calling thread at least `nice` nice, and returns its niceness. Never raises its
 * priority: an unprivileged process may not (EACCES), and a thread already nicer than asked stays
 * as it is — Sluice started under `nice -n 5` runs its engine process at 5 + 10, and its worker
 * threads asking for 10 made every shard fail to open.
 */
export function niceAtLeast(nice: number): number {
  const current = getPriority();
  if (current >= nice) return current;
  setPriority(nice);
  return nice;
}
