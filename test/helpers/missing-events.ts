/**
 * Test helper: when acknowledged events are missing from silver, says where each one got lost —
 * so a rare failure of a cluster test explains itself from its first occurrence:
 *
 *   not in the stream      → lost before the log (an ack without a durable append)
 *   in the stream, not in bronze, its offset inside a committed range → the engine skipped it
 *   in the stream, not in bronze, no committed range covers it         → not processed (yet)
 *   in bronze, not in silver → dropped by the operators (dedup?)
 *
 * It reads the lake's files and commit records and the JetStream stream itself (raw client,
 * Arrow JS): nothing of the engine's own read path.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { tableFromIPC } from 'apache-arrow';
import { openLakeReader } from './lake.js';

interface Found {
  seq: number;
  shard: number;
}

/** Every event id of the given shard subjects in `stream`, with the sequence of its message. */
async function streamIds(servers: string[], stream: string, subjects: string[], wanted: Set<string>, budgetMs: number): Promise<{ found: Map<string, Found>; messages: number; chunked: number; error?: string }> {
  const found = new Map<string, Found>();
  let messages = 0;
  let chunked = 0;
  const nc = await connect({ servers, timeout: 5000 });
  try {
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    for (const subject of subjects) {
      const shard = Number(/s(\d+)$/.exec(subject)?.[1] ?? -1);
      // nats-server 2.9: one filter_subject, no ordered consumer with filters.
      const info = await jsm.consumers.add(stream, { filter_subject: subject, deliver_policy: DeliverPolicy.All, ack_policy: AckPolicy.None, mem_storage: true, num_replicas: 1, inactive_threshold: 30_000 * 1e6 });
      const consumer = await js.consumers.get(stream, info.name);
      const deadline = Date.now() + budgetMs;
      while (Date.now() < deadline) {
        const batch = await consumer.fetch({ max_messages: 256, expires: 2000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          messages++;
          if (m.headers?.get('Sluice-Chunk')) {
            chunked++;
            continue;
          }
          const t = tableFromIPC(m.data);
          const ids = t.getChild('event_id');
          for (let i = 0; i < t.numRows; i++) {
            const id = String(ids?.get(i));
            if (wanted.has(id)) found.set(id, { seq: m.seq, shard });
          }
        }
        if (got === 0) break;
      }
    }
  } catch (err) {
    return { found, messages, chunked, error: (err as Error).message };
  } finally {
    await nc.close();
  }
  return { found, messages, chunked };
}

/** Committed offset ranges of each shard's flushes, from the commit records on disk. */
function committedRanges(lake: string): Map<number, Array<{ first: number; last: number; id: string }>> {
  const dir = join(lake, '_sluice', 'commits');
  const out = new Map<number, Array<{ first: number; last: number; id: string }>>();
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.json'));
  } catch {
    return out;
  }
  for (const n of names) {
    const r = JSON.parse(readFileSync(join(dir, n), 'utf8')) as { id: string; shard?: number; offsets?: { first: number; last: number } };
    if (r.shard === undefined || r.offsets === undefined) continue;
    const list = out.get(r.shard) ?? [];
    list.push({ ...r.offsets, id: r.id });
    out.set(r.shard, list);
  }
  for (const list of out.values()) list.sort((a, b) => a.first - b.first);
  return out;
}

/**
 * A report (text) of where the `missing` ids are: in bronze (with shard and log offset), in the
 * stream (with shard and sequence), in a committed range or not. Never throws.
 */
export async function explainMissing(args: { lake: string; missing: string[]; servers: string[]; shards: number; stream?: string; budgetMs?: number }): Promise<string> {
  const { lake, missing, servers, shards } = args;
  const lines: string[] = [];
  try {
    const wanted = new Set(missing);
    const inBronze = new Map<string, { shard: number; offset: number }>();
    const r = await openLakeReader(lake);
    try {
      if (r.files('bronze_events').length > 0) {
        const list = missing.map((id) => `'${id.replace(/'/g, "''")}'`).join(', ');
        const rows = await r.rows<{ event_id: string; shard: number; log_offset: bigint | number }>(`SELECT event_id, shard, log_offset FROM ${r.rel('bronze_events')} WHERE event_id IN (${list})`);
        for (const x of rows) inBronze.set(x.event_id, { shard: Number(x.shard), offset: Number(x.log_offset) });
      }
    } finally {
      r.close();
    }
    const subjects = Array.from({ length: shards }, (_, s) => `sluice.events.s${s}`);
    const stream = await streamIds(servers, args.stream ?? 'SLUICE', subjects, wanted, args.budgetMs ?? 20_000);
    const ranges = committedRanges(lake);
    const covered = (shard: number, seq: number): string | undefined => ranges.get(shard)?.find((x) => x.first <= seq && seq <= x.last)?.id;
    lines.push(`missing ${missing.length}: in bronze ${inBronze.size}; found in the stream ${stream.found.size} (read ${stream.messages} messages, ${stream.chunked} chunked ones not decoded${stream.error ? `, stopped: ${stream.error}` : ''})`);
    const bySeq = new Map<string, string[]>();
    for (const id of missing) {
      const b = inBronze.get(id);
      const f = stream.found.get(id);
      const where = b
        ? `bronze s${b.shard}@${b.offset}`
        : f
          ? `stream s${f.shard}@${f.seq} ${covered(f.shard, f.seq) ? `inside committed ${covered(f.shard, f.seq)}` : 'in no committed range'}`
          : 'not in the stream';
      const list = bySeq.get(where) ?? [];
      list.push(id);
      bySeq.set(where, list);
    }
    for (const [where, ids] of [...bySeq].slice(0, 40)) lines.push(`  ${where}: ${ids.length} (${ids.slice(0, 3).join(', ')})`);
    for (const [shard, list] of [...ranges].sort((a, b) => a[0] - b[0])) {
      lines.push(`  s${shard} committed: ${list.map((x) => `${x.first}-${x.last}`).join(' ')}`);
    }
  } catch (err) {
    lines.push(`explainMissing failed: ${(err as Error).stack ?? String(err)}`);
  }
  return lines.join('\n');
}
