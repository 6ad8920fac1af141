/**
 * Test helper: when acknowledged events are missing from silver, says where each one got lost —
 * so a rare failure of a cluster test explains itself from its first occurrence:
 *
 *   not in the stream      → lost before the log (an ack without a durable append)
 *   in the stream, not in bronze, its offset inside a committed range → the engine skipped it
 *   in the stream, not in bronze, no committed range covers it         → not processed (yet)
 *   in bronze, not in silver → dropped by the operators (dedup?)
 *
 * It reads the lake's files and commit records and the JetStream stream itself from its leader
 * (raw client, Arrow JS): nothing of the engine's own read path.
 */
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { tableFromIPC } from 'apache-arrow';
import { listCommitRecords } from '../../storage/commit-record.js';
import { openObjectStore } from '../../storage/open-store.js';
import { openLakeReader } from './lake.js';

interface Found {
  seq: number;
  shard: number;
}

/**
 * Every wanted event id in the given shard subjects of `stream`, with the sequence of its message,
 * read from the stream LEADER (one message get per message, `next_by_subj`): a consumer would be
 * served by one replica's copy, which is what may be wrong.
 */
async function streamIds(servers: string[], stream: string, subjects: string[], wanted: Set<string>, budgetMs: number): Promise<{ found: Map<string, Found>; messages: number; chunked: number; error?: string }> {
  const found = new Map<string, Found>();
  let messages = 0;
  let chunked = 0;
  const nc = await connect({ servers, timeout: 5000 });
  try {
    const jsm = await jetstreamManager(nc);
    const deadline = Date.now() + budgetMs;
    for (const subject of subjects) {
      const shard = Number(/s(\d+)$/.exec(subject)?.[1] ?? -1);
      for (let seq = 1; Date.now() < deadline; ) {
        // STREAM.MSG.GET takes next_by_subj since nats-server 2.9; the client's type for getMessage leaves it out.
        const m = await jsm.streams.getMessage(stream, { next_by_subj: subject, seq } as unknown as { seq: number });
        if (m === null) break;
        messages++;
        seq = m.seq + 1;
        if (m.header?.get('Sluice-Chunk')) {
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
    }
  } catch (err) {
    return { found, messages, chunked, error: (err as Error).message };
  } finally {
    await nc.close();
  }
  return { found, messages, chunked };
}

/** Committed offset ranges of each shard's flushes, from the lake's commit records. */
async function committedRanges(lake: string): Promise<Map<number, Array<{ first: number; last: number; id: string }>>> {
  const out = new Map<number, Array<{ first: number; last: number; id: string }>>();
  const store = await openObjectStore(lake);
  try {
    for (const r of await listCommitRecords(store)) {
      if (r.shard === undefined || r.offsets === undefined) continue;
      const list = out.get(r.shard) ?? [];
      list.push({ ...r.offsets, id: r.id });
      out.set(r.shard, list);
    }
  } finally {
    await store.close();
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
    const stream = await streamIds(servers, args.stream ?? 'SLUICE', subjects, wanted, args.budgetMs ?? 60_000);
    const ranges = await committedRanges(lake);
    const covered = (shard: number, seq: number): string | undefined => ranges.get(shard)?.find((x) => x.first <= seq && seq <= x.last)?.id;
    lines.push(`missing ${missing.length}: in bronze ${inBronze.size}; found in the stream ${stream.found.size} (read ${stream.messages} messages, ${stream.chunked} chunked ones not decoded${stream.error ? `, stopped: ${stream.error}` : ''})`);
    // Grouped by verdict and shard; the stream sequences (or bronze offsets) as ranges.
    const groups = new Map<string, { ids: string[]; seqs: Set<number> }>();
    for (const id of missing) {
      const b = inBronze.get(id);
      const f = stream.found.get(id);
      const [verdict, seq] = b
        ? [`in bronze s${b.shard}`, b.offset]
        : f
          ? [`in the stream s${f.shard}, ${covered(f.shard, f.seq) ? 'inside a committed range' : 'in no committed range'}`, f.seq]
          : ['not in the stream', undefined];
      const g = groups.get(verdict) ?? { ids: [], seqs: new Set<number>() };
      g.ids.push(id);
      if (seq !== undefined) g.seqs.add(seq);
      groups.set(verdict, g);
    }
    for (const [verdict, g] of groups) lines.push(`  ${verdict}: ${g.ids.length} events (${g.ids.slice(0, 3).join(', ')}) at ${asRanges([...g.seqs])}`);
    for (const [shard, list] of [...ranges].sort((a, b) => a[0] - b[0])) {
      lines.push(`  s${shard} committed: ${list.map((x) => `${x.first}-${x.last}`).join(' ')}`);
    }
  } catch (err) {
    lines.push(`explainMissing failed: ${(err as Error).stack ?? String(err)}`);
  }
  return lines.join('\n');
}

/** `1-4 7 9-10` for [1, 2, 3, 4, 7, 9, 10] (sorted, at most 40 runs). */
function asRanges(values: number[]): string {
  const v = [...values].sort((a, b) => a - b);
  const runs: string[] = [];
  for (let i = 0; i < v.length; ) {
    let j = i;
    while (j + 1 < v.length && v[j + 1]! <= v[j]! + 1) j++;
    runs.push(i === j ? String(v[i]) : `${v[i]}-${v[j]}`);
    i = j + 1;
  }
  return runs.length > 40 ? `${runs.slice(0, 40).join(' ')} … (${runs.length} runs)` : runs.join(' ') || '-';
}
