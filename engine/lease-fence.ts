/**
 * Fencing: a lease's revision (engine/lease.ts) is a token that only grows from owner to owner.
 * The lake holds the newest owner's token per lease, and a commit publishes only while its
 * writer still holds the newest token and a lease it could renew:
 *
 *   new owner (token 42)                          ex-owner (token 17, lease lost or overdue)
 *     acquire lease s3 ─▶ writeFence(s3, 42)        checkpoint: stage files, record pending
 *     restore state from the lake, start            before publishing: checkFence
 *                                                     Date.now() ≥ validUntil  → refuse (lease overdue)
 *                                                     _sluice/fences/s3 = 42 > 17 → refuse (taken over)
 *                                                   refused: `fenced` (retry none) — the node gives the shard up
 *
 * The residual window (docs/SCALE-OUT.md, "Fencing"): an ex-owner that passed both checks just
 * before its lease went overdue still publishes that one commit. A new owner can only acquire
 * after the key expired, i.e. at least `ttl` after the ex-owner's last renewal was sent, and the
 * ex-owner stops `margin` before that: the publish of one commit (a few object-store writes)
 * must take longer than `margin` (default ttl / 5) to overlap a new owner's start.
 */
import { externalError, SluiceError } from '../common/errors.js';
import { META_PREFIX } from '../common/lake-layout.js';
import type { ObjectStore } from '../storage/object-store.js';

export const FENCES_PREFIX = `${META_PREFIX}/fences`;
export const fenceKey = (name: string): string => `${FENCES_PREFIX}/${name}.json`;

/**
 * What a shard's committer needs to fence itself (crosses to the worker thread in
 * ShardRuntimeOptions). `validUntil` is a SharedArrayBuffer of one Float64 — the epoch ms until
 * which the lease is valid — that the owner's main thread raises at every renewal (and zeroes
 * when it loses the lease), so the worker sees it without a message.
 */
export interface LeaseFence {
  /** Lease name (`s{n}`, `dlq`, `gold`): the fence object is `_sluice/fences/{name}.json`. */
  name: string;
  token: number;
  node: string;
  validUntil: SharedArrayBuffer;
}

interface FenceBody {
  token: number;
  node: string;
  time: string;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export async function readFence(store: ObjectStore, name: string): Promise<FenceBody | undefined> {
  const body = await store.get(fenceKey(name));
  return body === undefined ? undefined : (JSON.parse(decoder.decode(body)) as FenceBody);
}

/** The error of a refused commit: not retried (this node gives the shard or role up). */
export function fencedError(fence: Pick<LeaseFence, 'name' | 'token' | 'node'>, why: string): Error {
  const what = /^s\d+$/.test(fence.name) ? `shard ${fence.name.slice(1)}` : fence.name;
  return externalError('fenced', `node ${fence.node} may no longer commit ${fence.name} (its lease token ${fence.token}): ${why}; the commit was not published and this node gives ${what} up (its next owner resumes from what the lake holds)`, undefined, 'none');
}

/** True for a refused commit (also as a shard task's error, which keeps the worker's code). */
export const isFenced = (err: unknown): boolean => err instanceof SluiceError && err.code === 'fenced';

/**
 * Raises the lake's fence of `name` to `token` before the new owner starts. Refuses (throws
 * `fenced`) when a higher token is already there: then this node is the stale one.
 */
export async function writeFence(store: ObjectStore, fence: Pick<LeaseFence, 'name' | 'token' | 'node'>): Promise<void> {
  const current = await readFence(store, fence.name);
  if (current !== undefined && current.token > fence.token) throw fencedError(fence, `node ${current.node} holds a newer lease (token ${current.token})`);
  const body: FenceBody = { token: fence.token, node: fence.node, time: new Date().toISOString() };
  await store.put(fenceKey(fence.name), encoder.encode(`${JSON.stringify(body)}\n`));
}

/** Throws `fenced` unless the lease is still valid and the lake's fence holds no higher token. Call right before publishing. */
export async function checkFence(store: ObjectStore, fence: LeaseFence, now = Date.now()): Promise<void> {
  const until = new Float64Array(fence.validUntil)[0]!;
  if (!(now < until)) throw fencedError(fence, `its lease is overdue (valid until ${new Date(until).toISOString()}; it could not be renewed in time)`);
  const current = await readFence(store, fence.name);
  if (current !== undefined && current.token > fence.token) throw fencedError(fence, `node ${current.node} took the lease over (token ${current.token})`);
}

/** A shared validity cell for `LeaseFence.validUntil`. */
export function validityCell(untilMs: number): { buffer: SharedArrayBuffer; set(untilMs: number): void } {
  const buffer = new SharedArrayBuffer(8);
  const view = new Float64Array(buffer);
  view[0] = untilMs;
  return { buffer, set: (ms) => void (view[0] = ms) };
}
