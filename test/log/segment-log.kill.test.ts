/**
 * kill -9 while appending: a child process appends continuously (16 appenders, small segments so
 * it rolls) and prints every acknowledged record; it is SIGKILLed mid-stream, then the log is
 * reopened. Every acknowledged record must be there, byte-exact, exactly once. Several rounds on
 * the same directory, so recovery of a killed log is itself appended to and killed again.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { SegmentLog } from '../../log/segment-log.js';

const CHILD = fileURLToPath(new URL('./fixtures/append-child.ts', import.meta.url));
const REPO = fileURLToPath(new URL('../../', import.meta.url));

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

interface Ack {
  offset: number;
  seq: number;
  hash: string;
}

/** Runs the child until it has acknowledged `killAfter` records (or exits, or 20 s pass), then SIGKILLs it. */
function runAndKill(dir: string, seed: number, killAfter: number): Promise<{ acks: Ack[]; signal: string | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, String(seed), '100000'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    const acks: Ack[] = [];
    let partial = '';
    let stderr = '';
    let killed = false;
    const kill = () => {
      if (!killed) {
        killed = true;
        child.kill('SIGKILL');
      }
    };
    const timer = setTimeout(kill, 20_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!; // an unfinished line was not (fully) reported: ignore it
      for (const line of lines) {
        const [o, s, h] = line.split(' ');
        acks.push({ offset: Number(o), seq: Number(s), hash: h! });
      }
      if (acks.length >= killAfter) kill();
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL' && code !== 0) reject(new Error(`child exited with ${code}: ${stderr}`));
      else resolve({ acks, signal });
    });
  });
}

describe('SegmentLog under kill -9', () => {
  it('keeps every acknowledged record, intact and exactly once, across kill rounds', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sluice-log-kill-'));
    dirs.push(dir);
    const allAcks: Ack[] = [];
    const killPoints = [150, 400, 60, 250];
    for (let round = 0; round < killPoints.length; round++) {
      const { acks, signal } = await runAndKill(dir, round + 1, killPoints[round]!);
      expect(signal).toBe('SIGKILL');
      expect(acks.length).toBeGreaterThanOrEqual(killPoints[round]!);
      allAcks.push(...acks);

      const log = await SegmentLog.open({ dir, shard: 0, segmentBytes: 256 * 1024 });
      const bySeq = new Map<number, number>();
      const records = new Map<number, { seq: number; hash: string }>();
      let expected = 0;
      for await (const r of log.read(0)) {
        expect(r.offset).toBe(expected++);
        const seq = new DataView(r.payload.buffer, r.payload.byteOffset).getUint32(0, true);
        bySeq.set(seq, (bySeq.get(seq) ?? 0) + 1);
        records.set(r.offset, { seq, hash: createHash('sha256').update(r.payload).digest('hex') });
      }
      expect(expected).toBe(log.nextOffset);
      for (const a of allAcks) {
        expect(records.get(a.offset)).toEqual({ seq: a.seq, hash: a.hash });
        expect(bySeq.get(a.seq)).toBe(1);
      }
      // The child never retries, so no sequence number may appear twice, acknowledged or not.
      for (const count of bySeq.values()) expect(count).toBe(1);
      await log.close();
    }
    expect(new Set(allAcks.map((a) => a.offset)).size).toBe(allAcks.length);
  });
});
