/**
 * An engine node (`sluice engine --log nats://…`): a Coordinator that runs only the shards whose
 * lease this node holds, consuming them from JetStream (design: "Scale-out"; docs/SCALE-OUT.md).
 *
 *   every scanMs (default ttl / 3):
 *     heartbeat ─▶ SLUICE_NODES (live nodes N)
 *     renew every held lease from its revision ─ lost / overdue ─▶ abandon the shard (no commit)
 *     rebalance: target = ceil(S / N)
 *       more than target ─▶ removeShard (drain, final checkpoint) ─▶ release (purge the key)
 *       fewer ─▶ acquire free keys (create only) ─▶ fence ─▶ wipe local state ─▶ addShard
 *                (state restored from the lake, consumption from the committed checkpoint)
 *     `dlq` and `gold`: whoever finds them free takes them (one node each)
 *   every syncMs (default 200): learn each owned shard's durable mark from the stream
 *
 * A shard taken over is never resumed from this node's local disk: its directory is removed
 * before the runtime opens, so state comes from the object store (the previous owner may have
 * committed after this node last ran it). A shard this node held without a gap is resumed from
 * its own state, which is exactly what it committed.
 *
 * Failover time: a dead node's leases expire `ttl` after its last renewal; another node's scan
 * finds them within `scanMs`: takeover within ttl + scanMs (+ restore), 20 s with the defaults.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Gauge, register } from 'prom-client';
import { Coordinator, type ClusterRole } from './coordinator.js';
import type { EngineOptions } from './options.js';
import { LeaseTable, type Lease } from './lease.js';
import { validityCell, writeFence, type LeaseFence } from './lease-fence.js';
import type { JetStreamLog, JetStreamLogs } from '../log/jetstream-log.js';
import { openObjectStore } from '../storage/open-store.js';
import type { ObjectStore } from '../storage/object-store.js';

export interface ClusterNodeOptions {
  /** How often leases are renewed and ownership rebalanced, ms. Default ttl / 3. */
  scanMs?: number;
  /** How often owned shards' durable marks are read from the stream, ms. Default 200. */
  syncMs?: number;
}

function gauge(name: string, help: string, labelNames: string[]): Gauge {
  return (register.getSingleMetric(name) as Gauge | undefined) ?? new Gauge({ name, help, labelNames });
}

export const clusterMetrics = {
  lease: gauge('sluice_engine_lease_held', '1 while this engine node holds the lease (s{n}, dlq, gold), 0 otherwise.', ['lease']),
  leaseToken: gauge('sluice_engine_lease_token', 'Fencing token (acquire revision) of a lease this node holds.', ['lease']),
  lag: gauge('sluice_engine_consumer_lag_records', 'Per owned shard: records durable in the stream and not yet processed (offset difference).', ['shard']),
  uncommitted: gauge('sluice_engine_uncommitted_records', 'Per owned shard: records processed or durable since its last committed checkpoint (offset difference).', ['shard']),
  liveNodes: gauge('sluice_engine_live_nodes', 'Engine nodes with a live heartbeat, as this node last saw them.', []),
  takeovers: gauge('sluice_engine_leases_acquired', 'Leases this node acquired since it started (takeovers and rebalancing).', []),
};

interface Held {
  lease: Lease;
  fence: LeaseFence;
  cell: ReturnType<typeof validityCell>;
}

export class ClusterNode {
  readonly coordinator: Coordinator;
  readonly leases: LeaseTable;
  private readonly held = new Map<string, Held>();
  private readonly store: ObjectStore;
  private scanTimer: NodeJS.Timeout | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private renewing = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private syncing = false;
  /** Closed: nothing runs any more. Stopping: the final checkpoints run, only renewals go on. */
  private closed = false;
  private stopping = false;
  /** halt() (tests: a frozen node): no renewals, no scans; close() still closes the coordinator. */
  private halted = false;
  private acquired = 0;

  private constructor(
    private readonly options: EngineOptions,
    private readonly logs: { shards: JetStreamLog[]; dlq: JetStreamLog },
    leases: LeaseTable,
    store: ObjectStore,
    coordinator: Coordinator,
    private readonly role: { fences: Map<string, LeaseFence> },
    private readonly log: Logger,
  ) {
    this.leases = leases;
    this.store = store;
    this.coordinator = coordinator;
  }

  /** Starts the coordinator with no shard, then takes leases (the first scan runs before this resolves). */
  static async start(options: EngineOptions, js: JetStreamLogs, leases: LeaseTable, log: Logger, nodeOptions: ClusterNodeOptions = {}): Promise<ClusterNode> {
    // A shard taken over restores its state from the lake (engine/state-snapshot.ts), so every commit ships it there.
    options = { ...options, stateInObjectStore: options.stateInObjectStore || true };
    const logs = await js.openAll(options.shards);
    const store = await openObjectStore(options.lake, { s3Endpoint: options.s3Endpoint });
    const fences = new Map<string, LeaseFence>();
    const cluster: ClusterRole = {
      owned: [],
      fence: (s) => fences.get(`s${s}`),
      role: (name) => fences.get(name),
      // The next scan stops renewing it (see scanOnce).
      giveUp: (name) => void fences.delete(name),
    };
    const coordinator = await Coordinator.start(options, log, { shards: logs.shards, dlq: logs.dlq, cluster });
    const node = new ClusterNode(options, logs, leases, store, coordinator, { fences }, log);
    const scanMs = nodeOptions.scanMs ?? Math.max(250, Math.floor(leases.ttlMs / 3));
    // Renewals run on their own timer: a slow rebalance (a shard restoring its state) must not let leases lapse.
    node.renewTimer = setInterval(() => void node.renew(), Math.max(100, Math.floor((leases.ttlMs - leases.marginMs) / 4)));
    await node.scan();
    node.scanTimer = setInterval(() => void node.scan(), scanMs);
    node.syncTimer = setInterval(() => void node.sync(), nodeOptions.syncMs ?? 200);
    return node;
  }

  /** The leases this node holds (names), for tests and /metrics. */
  get heldLeases(): string[] {
    return [...this.held.keys()].sort();
  }

  /** The fence of a lease this node holds (tests; /metrics). */
  fenceOf(name: string): LeaseFence | undefined {
    return this.held.get(name)?.fence;
  }

  /** One round: heartbeat, renewals, rebalancing. Rounds never overlap. */
  scan(): Promise<void> {
    if (this.scanning || this.closed || this.stopping) return this.scanning ?? Promise.resolve();
    this.scanning = this.scanOnce()
      .catch((err: unknown) => this.log.warn({ err }, 'lease round failed; retried at the next one'))
      .finally(() => (this.scanning = undefined));
    return this.scanning;
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.closed) return;
    this.renewing = true;
    try {
      await this.leases.heartbeat();
      await this.renewAll();
    } catch (err) {
      this.log.warn({ err }, 'heartbeat failed; retried');
    } finally {
      this.renewing = false;
    }
  }

  private async scanOnce(): Promise<void> {
    await this.renew();
    const nodes = await this.leases.liveNodes();
    clusterMetrics.liveNodes.set(nodes.length);
    const S = this.options.shards;
    const target = Math.ceil(S / Math.max(1, nodes.length));
    const mine = (): number[] => [...this.held.keys()].filter((k) => k.startsWith('s')).map((k) => Number(k.slice(1)));
    // A shard whose commit the fence refused was given up by the coordinator (its lease had gone
    // overdue, or another node took it) while this node's renewals still came through: it holds
    // a lease it no longer runs, and nobody would take the shard. Stop renewing it — no release: the
    // lease may be another node's by now — and once it expires the next owner, this node too,
    // restores the shard from the lake.
    for (const s of mine()) {
      if (!this.coordinator.ownedShards.includes(s) && !this.closed && !this.stopping) {
        this.log.warn({ shard: s }, 'letting the lease of a shard given up after a fenced commit expire; it is taken again from the lake');
        await this.drop(`s${s}`, false);
      }
    }
    // The same for `gold` and `dlq` after a fenced commit under them (ClusterRole.giveUp).
    for (const name of ['dlq', 'gold'] as const) {
      if (this.held.has(name) && !this.role.fences.has(name) && !this.closed && !this.stopping) {
        this.log.warn({ lease: name }, `letting the ${name} lease expire after a fenced commit; it is taken again when free`);
        await this.drop(name, false);
      }
    }
    // Hand extras over (highest shard numbers first), each after its final checkpoint.
    for (const s of mine().sort((a, b) => b - a).slice(0, Math.max(0, mine().length - target))) {
      if (this.closed || this.stopping) return;
      await this.releaseShard(s);
    }
    const holders = await this.leases.holders();
    for (let s = 0; s < S && mine().length < target && !this.closed && !this.stopping; s++) {
      const name = `s${s}`;
      // A shard stopped here (a refused commit, a bug) is left to other nodes until this one restarts.
      if (holders.has(name) || this.held.has(name) || this.coordinator.stoppedShards.includes(s)) continue;
      const held = await this.take(name);
      if (held === undefined) continue;
      try {
        // Never resume a taken-over shard from local disk: the lake holds what its last owner committed.
        await rm(join(this.options.dataDir, 'shards', String(s)), { recursive: true, force: true });
        await this.coordinator.addShard(s);
        this.log.info({ shard: s, token: held.lease.token }, 'took over shard');
      } catch (err) {
        this.log.error({ err, shard: s }, 'opening a taken-over shard failed; releasing its lease');
        await this.drop(name, true);
      }
    }
    for (const name of ['dlq', 'gold'] as const) {
      if (!holders.has(name) && !this.held.has(name) && !this.closed && !this.stopping) await this.take(name);
    }
  }

  /** Acquires a lease and raises its fence; undefined when another node holds it. */
  private async take(name: string): Promise<Held | undefined> {
    const lease = await this.leases.acquire(name);
    if (lease === undefined) return undefined;
    const fence: LeaseFence = { name, token: lease.token, node: this.leases.nodeId, validUntil: new SharedArrayBuffer(8) };
    const cell = validityCell(this.leases.validUntil(lease));
    fence.validUntil = cell.buffer;
    try {
      await writeFence(this.store, fence);
    } catch (err) {
      this.log.warn({ err, lease: name }, 'raising the fence failed; releasing the lease');
      await this.leases.release(lease).catch(() => undefined);
      return undefined;
    }
    const held = { lease, fence, cell };
    this.held.set(name, held);
    this.role.fences.set(name, fence);
    this.acquired++;
    clusterMetrics.takeovers.set(this.acquired);
    clusterMetrics.lease.set({ lease: name }, 1);
    clusterMetrics.leaseToken.set({ lease: name }, lease.token);
    return held;
  }

  private async renewAll(): Promise<void> {
    await Promise.all(
      [...this.held.values()].map(async (h) => {
        let ok = false;
        try {
          ok = this.leases.valid(h.lease) && (await this.leases.renew(h.lease));
        } catch (err) {
          this.log.warn({ err, lease: h.lease.name }, 'lease renewal failed');
        }
        // A renewal in flight when the node was halted must not extend what the frozen node may commit.
        if (ok && !this.halted) h.cell.set(this.leases.validUntil(h.lease));
        else if (!this.leases.valid(h.lease)) {
          await this.lost(h.lease.name);
        }
      }),
    );
  }

  /** The lease is gone or overdue: stop using it at once, without a commit (the fence would refuse it anyway). */
  private async lost(name: string): Promise<void> {
    this.log.error({ lease: name }, 'lease lost (not renewed within ttl − margin); this node stops committing it');
    if (name.startsWith('s')) {
      const s = Number(name.slice(1));
      this.coordinator.abandonShard(s);
    }
    await this.drop(name, false);
  }

  private async drop(name: string, release: boolean): Promise<void> {
    const h = this.held.get(name);
    if (h === undefined) return;
    h.cell.set(0);
    this.held.delete(name);
    this.role.fences.delete(name);
    clusterMetrics.lease.set({ lease: name }, 0);
    if (name.startsWith('s')) {
      clusterMetrics.lag.remove({ shard: name.slice(1) });
      clusterMetrics.uncommitted.remove({ shard: name.slice(1) });
    }
    if (release) await this.leases.release(h.lease).catch((err: unknown) => this.log.warn({ err, lease: name }, 'releasing a lease failed; it expires'));
  }

  /** Graceful hand-over: final checkpoint, then the lease is free for the node that needs it. */
  private async releaseShard(s: number): Promise<void> {
    try {
      await this.coordinator.removeShard(s);
    } catch (err) {
      this.log.warn({ err, shard: s }, 'final checkpoint before hand-over failed; keeping the shard');
      return;
    }
    await this.drop(`s${s}`, true);
    this.log.info({ shard: s }, 'handed shard over');
  }

  /** Learns how far each owned shard's subject (and the DLQ) is durable; the coordinator's pumps read from there. */
  private async sync(): Promise<void> {
    if (this.syncing || this.closed || this.stopping) return;
    this.syncing = true;
    try {
      for (const s of this.coordinator.ownedShards) {
        const next = await this.logs.shards[s]!.sync();
        this.coordinator.durable(s, next, 0);
      }
      if (this.held.has('dlq')) await this.logs.dlq.sync();
      for (const p of this.coordinator.progress()) {
        clusterMetrics.lag.set({ shard: String(p.shard) }, Math.max(0, p.durableNext - p.submittedNext));
        clusterMetrics.uncommitted.set({ shard: String(p.shard) }, Math.max(0, p.durableNext - p.checkpointed - 1));
      }
    } catch (err) {
      this.log.warn({ err }, 'reading durable marks from JetStream failed; retried');
    } finally {
      this.syncing = false;
    }
  }

  /**
   * Graceful stop: waits for the scan, catches up with the stream, commits every owned shard
   * (final checkpoint) while the leases are still renewed, then releases every lease and the
   * heartbeat so the others take over at once.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    if (!this.halted) {
      await this.scanning;
      await this.sync();
    }
    this.stopping = true; // no more rebalancing or syncing; renewals go on
    clearInterval(this.scanTimer);
    clearInterval(this.syncTimer);
    let failure: unknown;
    try {
      await this.coordinator.close();
    } catch (err) {
      failure = err;
    }
    this.closed = true;
    clearInterval(this.renewTimer);
    while (this.renewing) await new Promise((r) => setTimeout(r, 10));
    // Leases of shards whose final checkpoint failed are left to expire (their records stay in the stream); `release` skips overdue ones.
    if (failure === undefined) for (const name of [...this.held.keys()]) await this.drop(name, true);
    if (!this.halted) await this.leases.leave();
    await this.store.close();
    if (failure !== undefined) throw failure;
  }

  /** A crash for tests: timers stop, nothing is committed or released (leases expire). */
  halt(): void {
    this.halted = true;
    this.stopping = true;
    clearInterval(this.renewTimer);
    clearInterval(this.scanTimer);
    clearInterval(this.syncTimer);
  }
}
