/**
 * Test-only fault injection (kill -9 at an exact step, which random timing cannot hit reliably):
 * with `SLUICE_FAULT=<point>[,<point>…]` the process SIGKILLs itself when it reaches a named
 * point. With `SLUICE_FAULT_DIR` set, each point fires once (a marker file there), so a restarted
 * process — or the engine process ingest restarts with the same environment — goes past it.
 * Points: the erasure job's `erasure:*` (engine/erasure-job.ts, storage/rewrite.ts,
 * engine/erasure-offline.ts). Unset (always, outside tests), a call reads one variable.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function faultPoint(name: string): void {
  const spec = process.env.SLUICE_FAULT;
  if (spec === undefined || !spec.split(',').includes(name)) return;
  const dir = process.env.SLUICE_FAULT_DIR;
  if (dir !== undefined) {
    try {
      writeFileSync(join(dir, `fired-${name.replaceAll(':', '-')}`), `${process.pid}\n`, { flag: 'wx' });
    } catch {
      return; // fired already
    }
  }
  process.kill(process.pid, 'SIGKILL');
}
