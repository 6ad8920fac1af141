/**
 * Erasure at ingest: the suppression check and the admin endpoints.
 *
 *   POST /v1/admin/erasures        {"users": ["u1", …], "reason": "…"}  (admin key)  → 202 {"id": …}
 *   GET  /v1/admin/erasures/{id}   → 200 the job's state (storage/erasure-store.ts), 404 unknown id
 *
 * Suppression first: a request is added to the in-memory suppression set before it is answered,
 * and from then on every event of those users is refused (`user_erased`: counted in
 * sluice_ingest_rejected_total, not stored, not dead-lettered — its payload would re-create what
 * is being deleted). The set holds salted hashes only (it is rebuilt from requests.jsonl at start);
 * a cheap 32-bit prefilter keeps the HMAC off the path of every other user.
 */
import type uws from 'uWebSockets.js';
import { murmur3String, shardOfUser } from '../common/hash.js';
import type { ErasureMarks, ErasureStore } from '../storage/erasure-store.js';
import type { Decoded } from './protocols/decoded.js';

/** The users whose events ingest refuses. */
export class Suppression {
  private readonly prefilter = new Set<number>();
  private readonly hashes = new Set<string>();

  constructor(private readonly store: ErasureStore) {}

  get size(): number {
    return this.hashes.size;
  }

  /** Loads every accepted request's hashes (prefilter from the clear ids of still-pending ones; see `has`). */
  async load(): Promise<void> {
    for (const r of await this.store.requests()) for (const h of r.userHashes) this.hashes.add(h);
    for (const r of await this.store.requests()) for (const u of (await this.store.pendingUsers(r.id)) ?? []) this.prefilter.add(murmur3String(u));
  }

  add(users: readonly string[]): void {
    for (const u of users) {
      this.prefilter.add(murmur3String(u));
      this.hashes.add(this.store.hash(u));
    }
  }

  /** True when `userId` was erased. Without a prefilter entry for a completed request (after a restart) every id is hashed. */
  has(userId: string): boolean {
    if (this.hashes.size === 0) return false;
    if (this.prefilter.size >= this.hashes.size && !this.prefilter.has(murmur3String(userId))) return false;
    return this.hashes.has(this.store.hash(userId));
  }
}

/** The code of an erased user's refused event (a refusal by policy: not counted as invalid). */
export const ERASED_CODE = 'user_erased';

/** A refusal reported in the reply's `rejected`, never stored. */
export interface ErasedRow {
  index: number;
  code: typeof ERASED_CODE;
  message: string;
}

const ERASED_MESSAGE = 'this user was erased (a data-erasure request); their events are no longer accepted';

/** Ids a dead letter's raw JSON names (userId, anonymousId, user_id, anonymous_id, an alias's previousId). */
function idsOfRaw(raw: string): string[] {
  try {
    const o = JSON.parse(raw) as Record<string, unknown>;
    return [o.userId, o.anonymousId, o.user_id, o.anonymous_id, o.previousId].filter((v): v is string => typeof v === 'string');
  } catch {
    return [];
  }
}

/**
 * An alias call names the person's former id (`previousId`, kept in the row's properties): an
 * erased one is the erased person's own id, which the alias would bring back into the lake.
 */
function erasedPreviousId(properties: string | null, suppression: Suppression): boolean {
  if (properties === null) return false;
  try {
    const previous = (JSON.parse(properties) as { previousId?: unknown } | null)?.previousId;
    return (typeof previous === 'string' || typeof previous === 'number') && suppression.has(String(previous));
  } catch {
    return false;
  }
}

/**
 * Removes the rows and dead letters of erased users from `d` (in place) and returns them as
 * refusals with their index in the request. Rows keep request order, so a row's index is the
 * n-th index not taken by a dead letter.
 */
export function dropErased(d: Decoded, suppression: Suppression): ErasedRow[] {
  if (suppression.size === 0) return [];
  const out: ErasedRow[] = [];
  const rejectIndexes = d.rejects.map((r) => r.index).sort((a, b) => a - b);
  let kept = 0;
  let index = 0;
  let r = 0;
  for (let i = 0; i < d.rows.length; i++, index++) {
    while (r < rejectIndexes.length && rejectIndexes[r] === index) {
      r++;
      index++;
    }
    const row = d.rows[i]!;
    if (suppression.has(row.user_id) || (typeof row.anonymous_id === 'string' && suppression.has(row.anonymous_id)) || (row.event_type === 'alias' && erasedPreviousId(row.properties, suppression))) {
      out.push({ index, code: ERASED_CODE, message: ERASED_MESSAGE });
    }
    else d.rows[kept++] = row;
  }
  d.rows.length = kept;
  const letters = d.rejects.filter((l) => {
    if (!idsOfRaw(l.raw).some((id) => suppression.has(id))) return true;
    out.push({ index: l.index, code: ERASED_CODE, message: ERASED_MESSAGE });
    return false;
  });
  d.rejects.length = 0;
  d.rejects.push(...letters);
  return out;
}

export interface AdminDeps {
  adminKeys: readonly string[];
  /** Other keys (write, read): presenting one of them is 403, not 401. */
  isOtherKey(key: string): boolean;
  store: ErasureStore;
  suppression: Suppression;
  shards: number;
  /**
   * After the users are suppressed: waits until everything of theirs already handed to the logs is
   * appended, and returns the last offsets that may hold their events.
   */
  marks(shards: number[]): Promise<ErasureMarks>;
  /**
   * Set where no engine shares this data directory (an ingest node of a cluster): nothing would
   * ever run a request, so a new one is refused (501) with this reason instead of accepted.
   */
  unsupported?: string;
}

const MAX_ADMIN_BODY = 64 * 1024;

function keyOf(header: string): string | undefined {
  if (/^bearer /i.test(header)) return header.slice(7).trim();
  if (/^basic /i.test(header)) {
    const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(0, colon) : decoded;
  }
  return undefined;
}

function reply(res: uws.HttpResponse, aborted: { v: boolean }, status: string, body: unknown): void {
  if (aborted.v) return;
  res.cork(() => {
    res.writeStatus(status);
    res.writeHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(body));
  });
}

/** 401 without (or with an unknown) key, 403 with a write or read key, undefined with an admin key. */
function authorize(deps: AdminDeps, header: string): { status: string; body: unknown } | undefined {
  const key = keyOf(header);
  if (deps.adminKeys.length === 0) return { status: '401 Unauthorized', body: { ok: false, code: 'admin_disabled', message: 'no admin key is configured; start Sluice with --admin-key (or SLUICE_ADMIN_KEYS, adminKeys in the config file)' } };
  if (key === undefined || key === '') return { status: '401 Unauthorized', body: { ok: false, code: 'missing_admin_key', message: 'send an admin key as a Bearer token or the HTTP Basic user name' } };
  if (deps.adminKeys.includes(key)) return undefined;
  if (deps.isOtherKey(key)) return { status: '403 Forbidden', body: { ok: false, code: 'not_an_admin_key', message: 'this key may send or read events but not administer; use an admin key' } };
  return { status: '401 Unauthorized', body: { ok: false, code: 'unknown_admin_key', message: 'unknown admin key' } };
}

/** Parses `{"users": [...]|"userId": "…", "reason": "…"}`; a string says what is wrong. */
export function parseErasureBody(text: string): { users: string[]; reason: string | null } | string {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    return 'the body must be JSON: {"users": ["user id", …], "reason": "…"}';
  }
  if (typeof o !== 'object' || o === null) return 'the body must be a JSON object';
  const b = o as Record<string, unknown>;
  const users = Array.isArray(b.users) ? b.users : typeof b.userId === 'string' ? [b.userId] : undefined;
  if (!users || users.length === 0 || users.some((u) => typeof u !== 'string' || u === '')) return '"users" must be a non-empty array of non-empty user ids';
  if (users.length > 1000) return 'at most 1000 users per request';
  if (b.reason !== undefined && typeof b.reason !== 'string') return '"reason" must be a string';
  return { users: [...new Set(users as string[])], reason: (b.reason as string | undefined) ?? null };
}

/** Mounts the admin routes on `app`. */
export function mountAdmin(app: uws.TemplatedApp, deps: AdminDeps): void {
  app.post('/v1/admin/erasures', (res, req) => {
    const aborted = { v: false };
    res.onAborted(() => (aborted.v = true));
    const denied = authorize(deps, req.getHeader('authorization'));
    if (denied) {
      res.onData(() => undefined);
      reply(res, aborted, denied.status, denied.body);
      return;
    }
    if (deps.unsupported !== undefined) {
      res.onData(() => undefined);
      reply(res, aborted, '501 Not Implemented', { ok: false, code: 'erasure_not_supported', message: deps.unsupported });
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    res.onData((chunk, last) => {
      size += chunk.byteLength;
      if (size <= MAX_ADMIN_BODY) chunks.push(Buffer.from(new Uint8Array(chunk).slice()));
      if (!last) return;
      if (size > MAX_ADMIN_BODY) return reply(res, aborted, '413 Payload Too Large', { ok: false, code: 'body_too_large', message: `at most ${MAX_ADMIN_BODY} bytes` });
      const parsed = parseErasureBody(Buffer.concat(chunks).toString('utf8'));
      if (typeof parsed === 'string') return reply(res, aborted, '400 Bad Request', { ok: false, code: 'invalid_request', message: parsed });
      void accept(deps, parsed.users, parsed.reason).then(
        (id) => reply(res, aborted, '202 Accepted', { ok: true, id, state: 'accepted', status: `/v1/admin/erasures/${id}` }),
        (err: unknown) => reply(res, aborted, '500 Internal Server Error', { ok: false, code: 'internal', message: `the request could not be recorded: ${(err as Error).message}` }),
      );
    });
  });
  app.get('/v1/admin/erasures/:id', (res, req) => {
    const aborted = { v: false };
    res.onAborted(() => (aborted.v = true));
    const denied = authorize(deps, req.getHeader('authorization'));
    if (denied) return reply(res, aborted, denied.status, denied.body);
    const id = req.getParameter(0) ?? '';
    void erasureStatus(deps.store, id).then(
      (s) => (s ? reply(res, aborted, '200 OK', s) : reply(res, aborted, '404 Not Found', { ok: false, code: 'not_found', message: `no erasure request ${id}` })),
      (err: unknown) => reply(res, aborted, '500 Internal Server Error', { ok: false, code: 'internal', message: (err as Error).message }),
    );
  });
}

/** Suppress first, then record (with the log marks taken after suppression). */
async function accept(deps: AdminDeps, users: string[], reason: string | null): Promise<string> {
  deps.suppression.add(users);
  const shards = users.map((u) => shardOfUser(u, deps.shards));
  // Every shard's mark: an id may sit on any shard (an anonymousId or an id in properties is on the
  // shard of the event's userId), and the job waits for each to commit past its mark before it scans.
  const marks = await deps.marks(Array.from({ length: deps.shards }, (_, s) => s));
  const request = await deps.store.accept(users, reason, shards, marks);
  return request.id;
}

/** The public state of a request (no user id; the users' hashes are in the audit record). */
export async function erasureStatus(store: ErasureStore, id: string): Promise<Record<string, unknown> | undefined> {
  const request = (await store.requests()).find((r) => r.id === id);
  if (!request) return undefined;
  const job = await store.job(id);
  return {
    ok: true,
    id,
    receivedAt: request.receivedAt,
    reason: request.reason,
    users: request.userHashes.length,
    state: job?.phase ?? 'accepted',
    waitingFor: job?.waitingFor ?? null,
    completedAt: job?.completedAt ?? null,
    openSessionsPurged: job?.openSessionsPurged ?? 0,
    layers: job?.layers ?? {},
  };
}
