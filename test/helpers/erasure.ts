/**
 * What the erasure tests share: their Segment events, posting JSON with a key, asking for an
 * erasure and waiting until it is done, and the byte scan that proves an id is gone from every file
 * of a lake and a data directory (a running server deletes files while it walks).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningSluice } from '../../cli/serve.js';

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

/** One checkpoint round of an inline engine, after draining what ingest acknowledged (erasure jobs take their steps at its end). */
export async function checkpointRound(s: RunningSluice): Promise<void> {
  await s.coordinator!.drain();
  await s.coordinator!.checkpointNow(true);
}

/** POSTs `body` as JSON to `url + path` with `key` as the bearer token; the reply's status and JSON body. */
export async function postJson(url: string, path: string, body: unknown, key: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/**
 * Asks the server at `url` (admin key `admin`) to erase `users`, then polls the request's state,
 * calling `settle()` before each poll (drain and checkpoint, or wait a round), until it is `done`
 * or `polls` polls went by. Returns the request's id and its last state (the caller expects `done`).
 */
export async function eraseAndWait(url: string, admin: string, users: string[], reason: string, settle: () => Promise<void>, polls = 60): Promise<{ id: string; state: string }> {
  const accepted = await postJson(url, '/v1/admin/erasures', { users, reason }, admin);
  if (accepted.status !== 202) throw new Error(`erasure request answered ${accepted.status}: ${JSON.stringify(accepted.body)}`);
  const id = String(accepted.body.id);
  let state = '';
  for (let i = 0; i < polls && state !== 'done'; i++) {
    await settle();
    const res = await fetch(`${url}/v1/admin/erasures/${id}`, { headers: { authorization: `Bearer ${admin}` } });
    state = String(((await res.json()) as { state: string }).state);
  }
  return { id, state };
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
