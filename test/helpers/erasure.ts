/**
 * What the erasure tests share: their Segment events and the byte scan that proves an id is gone
 * from every file of a lake and a data directory (a running server deletes files while it walks).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** A Segment track event factory; message ids are `${prefix}${n}`, unique per factory. */
export function segmentEvents(prefix: string): (userId: string, t: number, extra?: Record<string, unknown>) => SegmentTestEvent {
  let seq = 0;
  return (userId, t, extra = {}) => ({
    messageId: `${prefix}${seq++}`,
    userId,
    type: 'track',
    event: seq % 3 === 0 ? 'Push Notification Received' : 'Application Opened',
    timestamp: new Date(t).toISOString(),
    context: { device: { type: seq % 2 ? 'ios' : 'android' }, app: { version: '1.0' }, location: { country: 'DE' } },
    properties: { n: seq },
    ...extra,
  });
}

export interface SegmentTestEvent {
  messageId: string;
  userId: string;
  type: string;
  event: string;
  timestamp: string;
  context: Record<string, unknown>;
  properties: Record<string, unknown>;
  [more: string]: unknown;
}

/** `f()`, or `otherwise` when what it reads was deleted meanwhile (ENOENT). */
export function gone<T>(f: () => T, otherwise: T): T {
  try {
    return f();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return otherwise;
    throw err;
  }
}

/** Every file under `dir` that exists now. */
export function walk(dir: string): string[] {
  return gone(() => readdirSync(dir), [] as string[]).flatMap((name) => {
    const p = join(dir, name);
    return gone(() => statSync(p).isDirectory(), false) ? walk(p) : [p];
  });
}

/** Files under `roots` holding the bytes of any of `ids`. */
export function filesHolding(roots: string[], ids: string[]): string[] {
  const needles = ids.map((id) => Buffer.from(id, 'utf8'));
  return roots.flatMap(walk).filter((f) => {
    const bytes = gone(() => readFileSync(f), Buffer.alloc(0));
    return needles.some((n) => bytes.includes(n));
  });
}
