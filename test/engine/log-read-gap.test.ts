/**
 * A read of a sparse (replicated) log is served by one replica's copy. If that copy misses a
 * record the quorum acknowledged, the read passes over it and nothing else would notice: the
 * record's acknowledged events would never reach silver. The coordinator knows the offsets of
 * the records its own ingest appended (`submit`), so it checks every read against them and
 * fetches a passed-over record by its offset (`readAt`, from the stream leader for JetStream);
 * a record the log cannot produce at all is reported as lost, loudly.
 *
 * The log here is a real segment log declared sparse (the JetStream log's case) behind a read
 * that passes over chosen offsets; DuckDB over the lake is the oracle.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { externalError } from '../../common/errors.js';
import { shardOfUser } from '../../common/hash.js';
import { Coordinator } from '../../engine/coordinator.js';
import { validateEngineOptions } from '../../engine/options.js';
import { engineMetrics } from '../../engine/telemetry.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';
import type { LogRecord } from '../../log/log.js';
import { SegmentLog } from '../../log/segment-log.js';
import { ingestRow as row } from '../helpers/batches.js';
import { silverCounts } from '../helpers/lake.js';
import { WrappedSegmentLog } from '../helpers/wrapped-log.js';

const T0 = Date.UTC(2026, 2, 1, 10, 0, 0);
const root = mkdtempSync(join(tmpdir(), 'sluice-read-gap-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A sparse log whose reads pass over `hidden` offsets; `readAt` finds them unless they are `lost` too. */
class ReplicaWithHoles extends WrappedSegmentLog {
  readonly hidden = new Set<number>();
  readonly lost = new Set<number>();
  /** Offsets whose first fetch fails (the stream has no leader for a moment). */
  readonly fetchFailsOnce = new Set<number>();
  fetched: number[] = [];
  override async *read(fromOffset: number): AsyncGenerator<LogRecord> {
    for await (const r of this.inner.read(fromOffset)) if (!this.hidden.has(r.offset)) yield r;
  }
  async readAt(offset: number): Promise<LogRecord | undefined> {
    this.fetched.push(offset);
    if (this.fetchFailsOnce.delete(offset)) throw externalError('log_unavailable', 'injected: the stream has no leader');
    if (this.lost.has(offset)) return undefined;
    for await (const r of this.inner.read(offset)) return r.offset === offset ? r : undefined;
    return undefined;
  }
}

const gaps = async (recovered: 'true' | 'false'): Promise<number> =>
  (await engineMetrics.logReadGaps.get()).values.find((v) => v.labels.recovered === recovered)?.value ?? 0;

async function run(name: string, arrange: (logs: ReplicaWithHoles[]) => void): Promise<{ ids: string[]; inSilver: Map<string, number>; logs: ReplicaWithHoles[]; lines: Array<{ level: number; msg: string; offset?: number; code?: string }> }> {
  const dataDir = join(root, name, 'data');
  const lake = join(root, name, 'lake');
  const options = validateEngineOptions({ dataDir, lake, shards: 2, workers: 1, flushIntervalMs: 100, reconcileIntervalMs: 0, compactAfterMs: 0, rangeLingerMs: 0 });
  const logs = await Promise.all([0, 1].map(async (shard) => new ReplicaWithHoles(await SegmentLog.open({ dir: join(dataDir, 'test-log', `shard-${shard}`), shard }))));
  const dlq = await SegmentLog.open({ dir: join(dataDir, 'test-log', 'dlq'), shard: -1 });
  const lines: Array<{ level: number; msg: string; offset?: number; code?: string }> = [];
  const logger = pino({ level: 'warn' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const c = await Coordinator.start(options, logger, { shards: logs, dlq });
  arrange(logs);
  const ids: string[] = [];
  let closed = false;
  try {
    // Ten records per shard, as inline ingest hands them over: appended, then submitted with the acknowledged offset.
    for (let k = 0; k < 10; k++) {
      for (const shard of [0, 1]) {
        const users = Array.from({ length: 200 }, (_, i) => `user-${i}`).filter((u) => shardOfUser(u, 2) === shard);
        const b = new IngestBatchBuilder(20);
        for (let i = 0; i < 20; i++) {
          const id = `s${shard}-r${k}-e${i}`;
          ids.push(id);
          b.push(row(id, users[(k * 20 + i) % users.length]!, T0 + ids.length * 1000));
        }
        const payload = b.toIPC();
        const offset = await logs[shard]!.inner.append(payload);
        c.submit(shard, offset, payload, 20);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    await c.drain();
    await c.close();
    closed = true;
  } finally {
    if (!closed) await c.close().catch(() => undefined);
  }
  return { ids, inSilver: await silverCounts(lake), logs, lines };
}

describe('a read that passes over a record this process appended', () => {
  it('fetches it by its offset: every acknowledged event is in silver once, the gap is logged and counted', async () => {
    const before = await gaps('true');
    const { ids, inSilver, logs, lines } = await run('recovered', (logs) => {
      logs[0]!.hidden.add(3);
      logs[1]!.hidden.add(0);
      logs[1]!.hidden.add(9);
    });
    expect([...inSilver.values()].filter((n) => n !== 1)).toEqual([]);
    expect([...inSilver.keys()].sort()).toEqual([...ids].sort());
    expect(logs[0]!.fetched).toEqual([3]);
    expect(logs[1]!.fetched).toEqual([0, 9]);
    expect(lines.filter((l) => /passed over a record/.test(l.msg)).map((l) => l.offset).sort()).toEqual([0, 3, 9]);
    expect((await gaps('true')) - before).toBe(3);
  }, 60_000);

  it('reports one the log cannot produce as lost (error, metric); everything else is processed', async () => {
    const before = await gaps('false');
    const { ids, inSilver, lines } = await run('lost', (logs) => {
      logs[0]!.hidden.add(5);
      logs[0]!.lost.add(5);
    });
    const expected = ids.filter((id) => !id.startsWith('s0-r5-'));
    expect([...inSilver.keys()].sort()).toEqual(expected.sort());
    expect(lines.filter((l) => l.code === 'log_record_lost').map((l) => [l.level, l.offset])).toEqual([[50, 5]]);
    expect((await gaps('false')) - before).toBe(1);
  }, 60_000);

  it('a fetch that fails is no verdict: the record is read again and processed once', async () => {
    const before = { recovered: await gaps('true'), lost: await gaps('false') };
    const { ids, inSilver, logs, lines } = await run('fetch-fails', (logs) => {
      logs[1]!.hidden.add(4);
      logs[1]!.fetchFailsOnce.add(4);
    });
    expect([...inSilver.values()].filter((n) => n !== 1)).toEqual([]);
    expect([...inSilver.keys()].sort()).toEqual([...ids].sort());
    expect(logs[1]!.fetched).toEqual([4, 4]);
    expect(lines.filter((l) => /fetching a record the read passed over failed/.test(l.msg)).map((l) => l.offset)).toEqual([4]);
    expect((await gaps('true')) - before.recovered).toBe(1);
    expect((await gaps('false')) - before.lost).toBe(0);
  }, 60_000);
});
