/**
 * The `ShardLog` contract as one suite that every implementation passes (the local segment log,
 * the JetStream log), as the object stores share theirs. Each implementation keeps its own test
 * file for what only it has (segments and fsyncs; Msg-Id de-duplication and failover).
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ShardLog } from '../../log/log.js';

/** One empty log location (a directory, a stream subject) for one test. */
export interface LogPlace {
  /** Opens the log there: the first call on an empty place, later calls reopen it (a restart). */
  open(): Promise<ShardLog>;
  /** Releases what `open` acquired (connections, directories). */
  cleanup(): Promise<void>;
}

export interface LogConformanceTarget {
  name: string;
  /** A new empty place; called once per test. */
  place(): Promise<LogPlace>;
}

/** Deterministic payload for record `i`: byte k = (i * 31 + k) mod 251, first 4 bytes = i. */
export function payload(i: number, size = 32): Uint8Array {
  const p = new Uint8Array(size);
  for (let k = 0; k < size; k++) p[k] = (i * 31 + k) % 251;
  if (size >= 4) new DataView(p.buffer).setUint32(0, i, true);
  return p;
}

export async function readAll(log: Pick<ShardLog, 'read'>, from = 0): Promise<Array<{ offset: number; payload: Uint8Array }>> {
  const out = [];
  for await (const r of log.read(from)) out.push(r);
  return out;
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);

/**
 * Whether offsets are dense (0, 1, 2, …) for this log; a sparse log (JetStream: stream sequences)
 * gives strictly increasing offsets with gaps, so the suite checks what `append` returned.
 */
const dense = (log: ShardLog) => log.denseOffsets !== false;

/** Offsets strictly increasing. */
function increasing(offsets: number[]): void {
  for (let i = 1; i < offsets.length; i++) expect(offsets[i]).toBeGreaterThan(offsets[i - 1]!);
}

/** Appends payloads `from … to-1` one after another; the offsets `append` resolved with. */
async function appendSeq(log: ShardLog, from: number, to: number, size?: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = from; i < to; i++) out.push(await log.append(payload(i, size)));
  return out;
}

export function describeLogConformance(target: LogConformanceTarget): void {
  describe(`${target.name} conforms to the ShardLog contract`, () => {
    const places: LogPlace[] = [];
    const place = async () => {
      const p = await target.place();
      places.push(p);
      return p;
    };
    afterEach(async () => {
      for (const p of places.splice(0)) await p.cleanup();
    });

    it('appends, reads back byte-exact, reads from the middle, keeps offsets increasing (dense if declared) across reopen', async () => {
      const at = await place();
      let log = await at.open();
      expect(log.nextOffset).toBe(0);
      expect(log.durableNextOffset).toBe(0);
      expect(await readAll(log)).toEqual([]);
      const offsets: number[] = [];
      for (let i = 0; i < 5; i++) {
        offsets.push(await log.append(payload(i, 10 + i)));
        expect(log.durableNextOffset).toBe(offsets[i]! + 1);
      }
      increasing(offsets);
      if (dense(log)) expect(offsets).toEqual([0, 1, 2, 3, 4]);
      expect(log.pendingBytes).toBe(0);
      await log.close();
      log = await at.open();
      expect(log.nextOffset).toBe(offsets[4]! + 1);
      expect(log.durableNextOffset).toBe(offsets[4]! + 1);
      offsets.push(await log.append(payload(5, 15)));
      expect(offsets[5]).toBeGreaterThan(offsets[4]!);
      if (dense(log)) expect(offsets[5]).toBe(5);
      const all = await readAll(log);
      expect(all.map((r) => r.offset)).toEqual(offsets);
      all.forEach((r, i) => expect(r.payload).toEqual(payload(i, 10 + i)));
      expect((await readAll(log, offsets[3]!)).map((r) => r.offset)).toEqual(offsets.slice(3));
      // From an offset between two records (a sparse log's gap, or the next record's): the next record on.
      expect((await readAll(log, offsets[2]! + 1)).map((r) => r.offset)).toEqual(offsets.slice(3));
      expect(await readAll(log, offsets[5]! + 1)).toEqual([]);
      expect(await readAll(log, offsets[5]! + 100)).toEqual([]);
      await log.close();
    });

    it('yields payloads that own their ArrayBuffer (transferable alone)', async () => {
      const log = await (await place()).open();
      for (let i = 0; i < 3; i++) await log.append(payload(i, 100));
      const all = await readAll(log);
      expect(all).toHaveLength(3);
      for (const r of all) {
        expect(r.payload.byteOffset).toBe(0);
        expect(r.payload.buffer.byteLength).toBe(100);
      }
      await log.close();
    });

    it('accepts empty payloads', async () => {
      const at = await place();
      let log = await at.open();
      const first = await log.append(new Uint8Array(0));
      if (dense(log)) expect(first).toBe(0);
      expect(await log.append(payload(1))).toBeGreaterThan(first);
      await log.close();
      log = await at.open();
      expect((await readAll(log)).map((r) => r.payload.length)).toEqual([0, 32]);
      await log.close();
    });

    it('concurrent appends get increasing offsets in call order, each holding its own payload', async () => {
      const at = await place();
      let log = await at.open();
      const offsets = await Promise.all(range(0, 200).map((i) => log.append(payload(i, 64))));
      increasing(offsets);
      if (dense(log)) expect(offsets).toEqual(range(0, 200));
      await log.close();
      log = await at.open();
      const all = await readAll(log);
      expect(all.map((r) => r.offset)).toEqual(offsets);
      all.forEach((r, i) => expect(r.payload).toEqual(payload(i, 64)));
      await log.close();
    });

    it('truncateBefore drops nothing at or above the offset, keeps the newest record, offsets stay increasing after reopen', async () => {
      const at = await place();
      let log = await at.open();
      const offsets = await appendSeq(log, 0, 40, 200);
      /** The offsets of records i … 39. */
      const from = (i: number) => offsets.slice(i);
      await log.truncateBefore(offsets[30]!);
      const after = (await readAll(log, 0)).map((r) => r.offset);
      expect(after[0]).toBeLessThanOrEqual(offsets[30]!);
      expect(after).toEqual(from(offsets.indexOf(after[0]!)));
      expect((await readAll(log, offsets[30]!)).map((r) => r.offset)).toEqual(from(30));
      await log.truncateBefore(offsets[10]!); // below an earlier truncation: nothing at or above record 30 goes
      // (A replicated log may apply the first truncation to a read's replica a moment later: the first offset only grows.)
      const again = (await readAll(log, 0)).map((r) => r.offset);
      expect(again[0]).toBeGreaterThanOrEqual(after[0]!);
      expect(again[0]).toBeLessThanOrEqual(offsets[30]!);
      expect(again).toEqual(from(offsets.indexOf(again[0]!)));
      await log.truncateBefore(offsets[39]! + 1000); // everything is below, yet the newest record stays
      const left = (await readAll(log, 0)).map((r) => r.offset);
      expect(left.at(-1)).toBe(offsets[39]);
      expect(left).toEqual(from(offsets.indexOf(left[0]!)));
      await log.close();
      log = await at.open();
      expect(log.nextOffset).toBe(offsets[39]! + 1);
      const next = await log.append(payload(40));
      expect(next).toBeGreaterThan(offsets[39]!);
      if (dense(log)) expect(next).toBe(40);
      const last = await readAll(log, 0);
      // Truncation may take effect later on a replicated log's replicas: the first offset is at most what was seen.
      expect(last[0]!.offset).toBeLessThanOrEqual(offsets[39]!);
      expect(last.map((r) => r.offset)).toEqual([...from(offsets.indexOf(last[0]!.offset)), next]);
      expect(last.at(-1)!.payload).toEqual(payload(40));
      await log.close();
    });

    it('truncateBefore past the only record keeps it (the first record ever written)', async () => {
      const at = await place();
      let log = await at.open();
      const first = await log.append(payload(0));
      if (dense(log)) expect(first).toBe(0);
      await log.truncateBefore(first + 1);
      await log.truncateBefore(first + 5);
      expect((await readAll(log)).map((r) => r.payload)).toEqual([payload(0)]);
      await log.close();
      log = await at.open();
      expect(log.nextOffset).toBe(first + 1);
      expect((await readAll(log)).map((r) => r.payload)).toEqual([payload(0)]);
      await log.close();
    });

    it('a reader started earlier also yields records made durable while it reads', async () => {
      const log = await (await place()).open();
      const offsets = [await log.append(payload(0, 900))];
      const seen: number[] = [];
      for await (const r of log.read(0)) {
        seen.push(r.offset);
        if (seen.length < 6) offsets.push(await log.append(payload(seen.length, 900)));
      }
      expect(offsets).toHaveLength(6);
      expect(seen).toEqual(offsets);
      await log.close();
    });

    it('a reader that stops early leaves the log readable from where it stopped', async () => {
      const log = await (await place()).open();
      const offsets = await appendSeq(log, 0, 10);
      const firstThree: number[] = [];
      for await (const r of log.read(0)) {
        firstThree.push(r.offset);
        if (firstThree.length === 3) break;
      }
      expect(firstThree).toEqual(offsets.slice(0, 3));
      const rest = await readAll(log, offsets[2]! + 1);
      expect(rest.map((r) => r.offset)).toEqual(offsets.slice(3));
      rest.forEach((r, i) => expect(r.payload).toEqual(payload(3 + i)));
      await log.close();
    });

    it('rejects appends after close, and close waits for appends in flight', async () => {
      const log = await (await place()).open();
      const inFlight = Promise.all(range(0, 20).map((i) => log.append(payload(i))));
      await log.close();
      const offsets = await inFlight;
      increasing(offsets);
      if (dense(log)) expect(offsets).toEqual(range(0, 20));
      await expect(log.append(payload(99))).rejects.toMatchObject({ code: 'log_closed' });
      await log.close(); // idempotent
    });

    it('rejects bad read and truncate offsets', async () => {
      const log = await (await place()).open();
      await expect(readAll(log, -1)).rejects.toMatchObject({ code: 'invalid_offset' });
      await expect(readAll(log, 0.5)).rejects.toMatchObject({ code: 'invalid_offset' });
      await expect(log.truncateBefore(0.5)).rejects.toMatchObject({ code: 'invalid_offset' });
      await expect(log.truncateBefore(-1)).rejects.toMatchObject({ code: 'invalid_offset' });
      await log.close();
    });
  });
}
