/**
 * SegmentLog.roll() (erasure seals the active segment on request): on an idle log, between group
 * commits under appends, on an empty active segment; truncation then deletes the sealed segment,
 * offsets stay dense, a reopen continues after the last record.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SegmentLog } from '../../log/segment-log.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'sluice-roll-'));
  dirs.push(d);
  return d;
}
const segs = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.seg')).sort();
const rec = (i: number): Uint8Array => new TextEncoder().encode(`record-${i}`);

async function offsets(log: SegmentLog): Promise<number[]> {
  const out: number[] = [];
  for await (const r of log.read(0)) out.push(r.offset);
  return out;
}

describe('SegmentLog.roll', () => {
  it('seals the active segment of an idle log; truncation deletes it; a reopen continues', async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 0 });
    for (let i = 0; i < 5; i++) await log.append(rec(i));
    expect(await log.roll()).toBe(5);
    expect(segs(dir)).toEqual(['00000000000000000000.seg', '00000000000000000005.seg']);
    // An empty active segment is not sealed again.
    expect(await log.roll()).toBe(5);
    expect(segs(dir)).toHaveLength(2);
    await log.truncateBefore(5);
    expect(segs(dir)).toEqual(['00000000000000000005.seg']);
    expect(await log.append(rec(5))).toBe(5);
    await log.close();
    const again = await SegmentLog.open({ dir, shard: 0 });
    expect(again.nextOffset).toBe(6);
    expect(await offsets(again)).toEqual([5]);
    await again.close();
  });

  it('rolls between group commits while appends go on: no record lost or reordered', async () => {
    const dir = tempDir();
    const log = await SegmentLog.open({ dir, shard: 1 });
    const appends: Array<Promise<number>> = [];
    const rolls: Array<Promise<number>> = [];
    for (let i = 0; i < 300; i++) {
      appends.push(log.append(rec(i)));
      if (i % 60 === 30) rolls.push(log.roll());
      if (i % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    expect(await Promise.all(appends)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    const firsts = await Promise.all(rolls);
    expect(firsts.length).toBe(5);
    for (let k = 1; k < firsts.length; k++) expect(firsts[k]!).toBeGreaterThanOrEqual(firsts[k - 1]!);
    // Every roll point that had records before it starts a segment.
    for (const f of firsts) expect(segs(dir)).toContain(`${String(f).padStart(20, '0')}.seg`);
    expect(await offsets(log)).toEqual(Array.from({ length: 300 }, (_, i) => i));
    await log.truncateBefore(firsts[firsts.length - 1]!);
    expect(Number(segs(dir)[0]!.slice(0, 20))).toBe(firsts[firsts.length - 1]);
    await log.close();
    await expect(log.roll()).rejects.toThrow(/closed/);
  });
});
