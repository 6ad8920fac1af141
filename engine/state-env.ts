/**
 * Opens a shard's state.mdb (the dedup index and the operator state, kernels and operators' LMDB
 * databases) with the options every opener of it uses.
 *
 * The map: lmdb-js otherwise starts with a 128 KiB map and maps the file anew each time it
 * outgrows it, keeping the old maps (buffers handed out stay valid). Pages the dedup lookups read
 * through an old map and again through the new one are then resident twice, and RSS counts both:
 * ≈ 2.3 × the file's size in a soak with 1 M users (bench/results/soak-2026-12-04-1m-users.md).
 * Reserving a large map up front keeps one map. It is address space, not memory or disk (the file
 * grows as pages are written); a database that outgrows even this is remapped as before.
 */
import { open as openLmdb, type RootDatabase } from 'lmdb';

export const STATE_MAP_BYTES = 2 ** 36;

export function openStateEnv(path: string): RootDatabase {
  return openLmdb({ path, maxDbs: 4096, compression: false, mapSize: STATE_MAP_BYTES });
}
