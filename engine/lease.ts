/**
 * Shard ownership for engine nodes: one lease per shard (and `dlq`, `gold`) in a JetStream KV
 * bucket, and a heartbeat bucket listing the live nodes (design: "Scale-out"; docs/SCALE-OUT.md).
 *
 *   bucket SLUICE_LEASES (max_age = ttl, history 1)     bucket SLUICE_NODES (max_age = ttl)
 *     s0   → {node: "e1", …}   rev 17                       e1 → {shards: 2}
 *     s1   → {node: "e2", …}   rev 18                       e2 → {shards: 2}
 *     dlq  → {node: "e1", …}   rev 21
 *
 *   acquire  publish $KV.SLUICE_LEASES.s1 with "expected last subject sequence 0" (create: the
 *            key has no message, i.e. it expired or was released); the PubAck sequence is the
 *            lease's revision and its FENCING TOKEN (stream sequences only grow, so every new
 *            owner holds a higher token than all earlier ones)
 *   renew    the owner updates from its last revision, every ttl/3
 *   expire   no renewal for ttl: the server's max_age removes the message, the key is free
 *   release  the owner purges the key's subject (no delete marker is left behind)
 *
 * Why only `create` takes a lease: on nats-server 2.9.10 R3 an expectation of sequence 0 is
 * serialized (two racing creates: 0 of 200 both won), an expectation of a sequence > 0 is not
 * (two racing updates from one revision: 60 of 200 both won; bench/jetstream-cas-race.ts). An
 * update is therefore only ever made by the owner itself (a renewal nobody races), and no
 * delete or purge marker is left in a key, because the KV client's `create` on a marker falls
 * back to an update from the marker's revision. Releasing purges the subject instead.
 *
 * The owner's own view: a lease is *valid* until `renewedAt + ttl − margin`, where `renewedAt`
 * is the time the last successful renewal (or the acquire) was SENT — the server's max_age
 * clock started no earlier, so the key cannot have expired, nor have a new owner, before then.
 * A node stops committing a shard whose lease is no longer valid (engine/cluster-fence.ts).
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstream, jetstreamManager, JetStreamApiError, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { userError } from '../common/errors.js';

export interface LeaseTableOptions {
  /** This node's id (unique per process; written into the leases it holds). */
  nodeId: string;
  /** Lease time-to-live in ms: a dead owner's leases are free this long after its last renewal. Default 15 000. */
  ttlMs?: number;
  /** The owner treats a lease as lost this long before its expiry (clock rate drift, a slow publish). Default ttl / 5. */
  marginMs?: number;
  /** KV bucket of the leases. Default `SLUICE_LEASES`. */
  bucket?: string;
  /** KV bucket of the node heartbeats. Default `SLUICE_NODES`. */
  nodesBucket?: string;
  /** Replicas of both buckets (1 for a single development server). Default 3. */
  replicas?: number;
  /** Clock, epoch ms (tests). Default Date.now. */
  now?: () => number;
}

export const LEASE_DEFAULTS = { ttlMs: 15_000, bucket: 'SLUICE_LEASES', nodesBucket: 'SLUICE_NODES', replicas: 3 } as const;

/** A lease this node holds. Mutated by `renew`. */
export interface Lease {
  readonly name: string;
  /** Revision of the acquire: the fencing token (higher than every earlier owner's). */
  readonly token: number;
  /** Latest revision (the acquire's or the last renewal's). */
  revision: number;
  /** When the last successful renewal (or the acquire) was sent, epoch ms. */
  renewedAt: number;
}

/** A lease as the bucket shows it (any node's). */
export interface LeaseHolder {
  node: string;
  revision: number;
}

const KEY_RE = /^[A-Za-z0-9_-]+$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class LeaseTable {
  readonly nodeId: string;
  readonly ttlMs: number;
  readonly marginMs: number;
  private readonly now: () => number;

  private constructor(
    options: LeaseTableOptions,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly leases: KV,
    private readonly nodes: KV,
    private readonly bucket: string,
    private readonly nodesBucket: string,
  ) {
    this.nodeId = options.nodeId;
    this.ttlMs = options.ttlMs ?? LEASE_DEFAULTS.ttlMs;
    this.marginMs = options.marginMs ?? Math.floor(this.ttlMs / 5);
    this.now = options.now ?? Date.now;
  }

  /** Creates (or opens) both buckets. */
  static async open(nc: NatsConnection, options: LeaseTableOptions): Promise<LeaseTable> {
    const ttlMs = options.ttlMs ?? LEASE_DEFAULTS.ttlMs;
    if (!Number.isSafeInteger(ttlMs) || ttlMs < 1000) throw userError('invalid_option', `lease ttl must be an integer number of ms >= 1000, got ${String(ttlMs)}`);
    const marginMs = options.marginMs ?? Math.floor(ttlMs / 5);
    if (!(marginMs >= 0 && marginMs < ttlMs / 2)) throw userError('invalid_option', `lease margin must be >= 0 and below half the ttl (${ttlMs} ms), got ${String(marginMs)}`);
    if (!KEY_RE.test(options.nodeId)) throw userError('invalid_option', `node id must match ${KEY_RE}, got ${JSON.stringify(options.nodeId)}`);
    const replicas = options.replicas ?? LEASE_DEFAULTS.replicas;
    const bucket = options.bucket ?? LEASE_DEFAULTS.bucket;
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const kvm = new Kvm(js);
    // Retried for a while: at start-up the cluster may still elect leaders, and nodes create the buckets at once.
    const create = async (name: string): Promise<KV> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await kvm.create(name, { ttl: ttlMs, history: 1, replicas });
        } catch (err) {
          if (attempt >= 10) throw err;
          await new Promise((r) => setTimeout(r, Math.min(250 * attempt, 2000)));
        }
      }
    };
    const leases = await create(bucket);
    const nodes = await create(options.nodesBucket ?? LEASE_DEFAULTS.nodesBucket);
    return new LeaseTable({ ...options, ttlMs, marginMs }, js, jsm, leases, nodes, bucket, options.nodesBucket ?? LEASE_DEFAULTS.nodesBucket);
  }

  /** Takes lease `name` if nobody holds it (create only: see the file comment); undefined when held. */
  async acquire(name: string): Promise<Lease | undefined> {
    const sent = this.now();
    try {
      const ack = await this.js.publish(`$KV.${this.bucket}.${name}`, this.value(), { expect: { lastSubjectSequence: 0 } });
      return { name, token: ack.seq, revision: ack.seq, renewedAt: sent };
    } catch (err) {
      if (err instanceof JetStreamApiError && (err.code === 10071 || err.code === 10164)) return undefined; // wrong last sequence: held
      throw err;
    }
  }

  /** Renews an owned lease from its revision; false when it is gone (expired, taken): the caller must stop using it. */
  async renew(lease: Lease): Promise<boolean> {
    const sent = this.now();
    try {
      lease.revision = await this.leases.update(lease.name, this.value(), lease.revision);
      lease.renewedAt = sent;
      return true;
    } catch (err) {
      if (err instanceof JetStreamApiError && (err.code === 10071 || err.code === 10164)) return false;
      throw err;
    }
  }

  /** True while the owner may still act on the lease (before `renewedAt + ttl − margin`). */
  valid(lease: Lease): boolean {
    return this.now() < this.validUntil(lease);
  }

  validUntil(lease: Lease): number {
    return lease.renewedAt + this.ttlMs - this.marginMs;
  }

  /**
   * Gives a lease up at once (graceful hand-over). Purges the key's subject — no marker stays,
   * so the next `acquire` is an exclusive create. Only call while the lease is valid: a purge
   * after it expired could remove a new owner's lease (whose commits the fence still guards).
   */
  async release(lease: Lease): Promise<void> {
    if (!this.valid(lease)) return;
    await this.jsm.streams.purge(`KV_${this.bucket}`, { filter: `$KV.${this.bucket}.${lease.name}` });
  }

  /** Every lease held now, by name. */
  async holders(): Promise<Map<string, LeaseHolder>> {
    const out = new Map<string, LeaseHolder>();
    for (const key of await keysWithin(this.jsm, this.bucket, this.ttlMs)) {
      const e = await this.leases.get(key);
      if (e === null || e.operation !== 'PUT') continue;
      try {
        out.set(key, { node: (JSON.parse(decoder.decode(e.value)) as { node: string }).node, revision: e.revision });
      } catch {
        // not ours
      }
    }
    return out;
  }

  /** Writes this node's heartbeat (it counts as live for ttl). */
  async heartbeat(): Promise<void> {
    await this.nodes.put(this.nodeId, this.value());
  }

  /** Removes this node's heartbeat (graceful shutdown: the others rebalance at once). */
  async leave(): Promise<void> {
    await this.jsm.streams.purge(`KV_${this.nodesBucket}`, { filter: `$KV.${this.nodesBucket}.${this.nodeId}` }).catch(() => undefined);
  }

  /** Ids of the nodes whose heartbeat is younger than ttl (this one included once it beat). */
  async liveNodes(): Promise<string[]> {
    const now = this.now();
    const ids: string[] = [];
    for (const key of await keysWithin(this.jsm, this.nodesBucket, this.ttlMs)) {
      const e = await this.nodes.get(key);
      // Younger than ttl by its own time as well: a replica still catching up (a NATS server just
      // restarted) may answer with a beat the others have expired, and a dead node would count as live.
      if (e !== null && e.operation === 'PUT' && (key === this.nodeId || now - e.created.getTime() <= this.ttlMs)) ids.push(key);
    }
    return ids.sort();
  }

  private value(): Uint8Array {
    return encoder.encode(JSON.stringify({ node: this.nodeId, at: new Date(this.now()).toISOString() }));
  }
}

/**
 * A bucket's keys (each once), from its stream's subjects — one request, or an error after `ms`:
 * a lease round must not wait on it forever while a NATS server is down (suspected in CI: after a
 * NATS server and an engine node were killed, the survivor logged nothing more and never took the
 * dead node's shards). The round fails instead and the next one retries.
 *
 * Not `kv.keys()`: its consumer also delivers the updates made while it lists (heartbeats and
 * renewals, every second or so), so keys came several times — two live nodes counted as three or
 * four, and a node holding its fair share handed shards over and took them back every few seconds
 * (round 9: 118 of 122 listings of an R3 bucket had duplicates) — and under steady updates the
 * listing did not end at all. Keys whose last value is a delete are in the list too: callers read
 * each key's entry and skip those.
 */
async function keysWithin(jsm: JetStreamManager, bucket: string, ms: number): Promise<string[]> {
  const prefix = `$KV.${bucket}.`;
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`listing a lease bucket's keys took over ${ms} ms`)), ms);
  });
  try {
    const info = await Promise.race([jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}>` }), expired]);
    return Object.keys(info.state.subjects ?? {}).map((subject) => subject.slice(prefix.length));
  } finally {
    clearTimeout(timer);
  }
}
