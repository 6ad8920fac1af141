/**
 * An engine node in the test process (not `sluice engine` as a child: see engine-node.ts) on a real
 * nats-server: its own JetStream connection and lease table (ttl 4 s, R1), fast scans. Close
 * both: `await n.node.close(); await n.js.close()`.
 */
import { pino } from 'pino';
import { ClusterNode } from '../../engine/cluster-node.js';
import { LeaseTable } from '../../engine/lease.js';
import type { EngineOptions } from '../../engine/options.js';
import { JetStreamLogs } from '../../log/jetstream-log.js';

export interface TestEngineNode {
  node: ClusterNode;
  js: JetStreamLogs;
}

export async function startEngineNode(servers: readonly string[], id: string, options: EngineOptions): Promise<TestEngineNode> {
  const js = await JetStreamLogs.connect({ servers: [...servers], replicas: 1 });
  const leases = await LeaseTable.open(js.nc, { nodeId: id, ttlMs: 4000, replicas: 1 });
  return { node: await ClusterNode.start(options, js, leases, pino({ level: process.env.T_LOG ?? 'silent' }), { scanMs: 300, syncMs: 50 }), js };
}
