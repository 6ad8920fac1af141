/**
 * DeadLetterAppender over a real SegmentLog: many requests' dead letters become one DLQ record
 * while the log is busy, each request's promise resolves only once its letters are durable (with
 * the record's offset), a record never spans two hours of received_at, and a failed append rejects
 * every request in it. Read back with Arrow JS's own reader, not the writer's code.
 */
import { fdatasyncSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC } from 'apache-arrow';
import { afterAll, describe, expect, it } from 'vitest';
import { DeadLetterAppender, writeKeyId } from '../../ingest/dead-letters.js';
import type { DeadLetter } from '../../ingest/protocols/decoded.js';
import { SegmentLog } from '../../log/segment-log.js';

const root = mkdtempSync(join(tmpdir(), 'sluice-dead-letters-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let dirs = 0;

const letter = (i: number): DeadLetter => ({ index: i, code: 'missing_user', message: `event ${i} has no user`, raw: `{"event":"e${i}"}` });

/** Every record of the log: its offset and rows (received_at as epoch ms). */
async function records(log: SegmentLog): Promise<Array<{ offset: number; rows: Array<Record<string, unknown>> }>> {
  const out: Array<{ offset: number; rows: Array<Record<string, unknown>> }> = [];
  for await (const r of log.read(0)) {
    const rows = tableFromIPC(r.payload)
      .toArray()
      .map((row) => {
        const o = row.toJSON() as Record<string, unknown>;
        return { ...o, received_at: Number(o.received_at) };
      });
    out.push({ offset: r.offset, rows });
  }
  return out;
}

describe('DeadLetterAppender', () => {
  it('puts the letters of requests that arrive while the log is busy into one record, each request answered once they are durable', async () => {
    let release: () => void = () => undefined;
    let gate: Promise<void> | undefined = new Promise((r) => (release = r));
    const log = await SegmentLog.open({
      dir: join(root, `dlq-${++dirs}`),
      shard: -1,
      fsync: async (fd) => {
        if (gate) await gate;
        fdatasyncSync(fd);
      },
    });
    const dlq = new DeadLetterAppender(log, { maxRows: 8192, maxDelayMs: 0 });
    const t = Date.UTC(2026, 11, 5, 10, 15);
    const first = dlq.add([letter(0)], 'http', 'key-a', t);
    await new Promise((r) => setImmediate(r)); // cut: its append now waits on the gate
    const settled: number[] = [];
    const later = [1, 2, 3].map((k) => dlq.add([letter(10 * k), letter(10 * k + 1)], k === 2 ? 'arrow' : 'http', `key-${k}`, t + k).then((o) => (settled.push(k), o)));
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toEqual([]); // nothing acknowledged before its record is durable
    gate = undefined;
    release();
    expect(await first).toBe(0);
    expect(await Promise.all(later)).toEqual([1, 1, 1]);
    const got = await records(log);
    expect(got.map((r) => r.offset)).toEqual([0, 1]);
    expect(got[1]!.rows).toEqual(
      [1, 2, 3].flatMap((k) =>
        [10 * k, 10 * k + 1].map((i) => ({ received_at: t + k, source: k === 2 ? 'arrow' : 'http', write_key_id: writeKeyId(`key-${k}`), code: 'missing_user', message: `event ${i} has no user`, raw: `{"event":"e${i}"}` })),
      ),
    );
    await log.close();
  });

  it('starts a new record at an hour boundary of received_at', async () => {
    const log = await SegmentLog.open({ dir: join(root, `dlq-${++dirs}`), shard: -1 });
    const dlq = new DeadLetterAppender(log, { maxRows: 8192, maxDelayMs: 5 });
    const hour = Date.UTC(2026, 11, 5, 11);
    const offsets = await Promise.all([dlq.add([letter(1)], 'http', 'k', hour - 1), dlq.add([letter(2)], 'http', 'k', hour), dlq.add([letter(3)], 'http', 'k', hour + 5)]);
    expect(offsets).toEqual([0, 1, 1]);
    const got = await records(log);
    expect(got.map((r) => r.rows.map((x) => x.received_at))).toEqual([[hour - 1], [hour, hour + 5]]);
    await log.close();
  });

  it('cuts at maxRows', async () => {
    const log = await SegmentLog.open({ dir: join(root, `dlq-${++dirs}`), shard: -1 });
    const dlq = new DeadLetterAppender(log, { maxRows: 3, maxDelayMs: 1_000 });
    const t = Date.UTC(2026, 11, 5, 12);
    // Had the 1 s linger applied, the test would wait for it: a full batch goes out at once.
    const started = performance.now();
    expect(await dlq.add([letter(1), letter(2), letter(3)], 'http', 'k', t)).toBe(0);
    expect(performance.now() - started).toBeLessThan(900);
    await log.close();
  });

  it('rejects every request of a record whose append failed, and drain() waits for what is queued', async () => {
    let fail = true;
    const log = await SegmentLog.open({
      dir: join(root, `dlq-${++dirs}`),
      shard: -1,
      fsync: async (fd) => {
        if (fail) throw Object.assign(new Error('EIO: injected'), { code: 'EIO' });
        fdatasyncSync(fd);
      },
    });
    const dlq = new DeadLetterAppender(log, { maxRows: 8192, maxDelayMs: 0 });
    const t = Date.UTC(2026, 11, 5, 13);
    const results = await Promise.allSettled([dlq.add([letter(1)], 'http', 'k', t), dlq.add([letter(2)], 'http', 'k', t)]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    fail = false;
    await dlq.drain();
    await log.close();
  });
});
