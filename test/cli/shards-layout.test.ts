/**
 * A data directory keeps the shard count it was first started with (engine/data-layout.ts).
 *
 * Through the compiled CLI, from a working directory outside the checkout: `serve --shards 5`,
 * then `serve` without `--shards` runs on the same 5 shards (it does not take the default, the
 * machine's cores, which would re-hash every returning user to another shard), and `--shards 2` or
 * SLUICE_SHARDS=3 is refused at start with a message naming both counts, before anything is
 * opened. Every acknowledged event of both lives is in silver exactly once (DuckDB over the files).
 * Another --session-gap is refused as well (the lake's frontier and layout.json record the gap).
 * Below: the module's own rules (directories made before layout.json existed, a damaged file).
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SluiceError } from '../../common/errors.js';
import { claimShards, LAYOUT_FILE, recordedSessionGap, recordedShards, resolveShards } from '../../engine/data-layout.js';
import { silverCounts } from '../helpers/lake.js';
import { buildDist, expectExactlyOnce, killServed, serve, stop, Traffic, userEnv } from '../helpers/served.js';

const REPO = join(import.meta.dirname, '..', '..');
const ENTRY = join(REPO, 'dist', 'bin', 'sluice.js');
const dirs: string[] = [];

function tempDir(tag: string): string {
  const d = mkdtempSync(join(tmpdir(), `sluice-layout-${tag}-`));
  dirs.push(d);
  return d;
}

beforeAll(buildDist, 240_000);

afterAll(async () => {
  await killServed();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('sluice serve keeps the data directory’s shard count', () => {
  it('adopts the recorded count without --shards, refuses another one, and loses nothing across the restart', async () => {
    const cwd = tempDir('cwd');
    const args = ['--flush-interval', '500ms', '--lake', 'lake'];
    const traffic = new Traffic();

    const first = await serve(ENTRY, cwd, [...args, '--shards', '5'], userEnv({}));
    await traffic.run(first.url, 'first', delay(1000));
    expect(await stop(first, 'SIGTERM')).toBe(0);
    expect(JSON.parse(readFileSync(join(cwd, 'data', LAYOUT_FILE), 'utf8'))).toEqual({ shards: 5, sessionGapMs: 30 * 60_000 });
    const lastShardLog = join(cwd, 'data', 'log', 'shard-4');
    const logBytes = () => readdirSync(lastShardLog).reduce((n, f) => n + statSync(join(lastShardLog, f)).size, 0);
    const afterFirst = logBytes();
    expect(afterFirst).toBeGreaterThan(0);

    for (const [extra, env] of [
      [['--shards', '2'], {}],
      [[], { SLUICE_SHARDS: '3' }],
    ] as const) {
      const refused = serve(ENTRY, cwd, [...args, ...extra], userEnv(env));
      await expect(refused).rejects.toThrow(/exited at start with 2[\s\S]*was started with 5 shards, not (2|3)/);
    }

    // The session gap is the lake's: another one is refused too, naming both.
    await expect(serve(ENTRY, cwd, [...args, '--session-gap', '10m'], userEnv({}))).rejects.toThrow(/exited at start with 2[\s\S]*sluice: lake \S+ was built with a session gap of 30m, not 10m/);
    // …and the data directory's: without the lake's frontier (deleted while serve was down) as well.
    rmSync(join(cwd, 'lake', '_sluice', 'frontier.json'));
    await expect(serve(ENTRY, cwd, [...args, '--session-gap', '10m'], userEnv({}))).rejects.toThrow(/exited at start with 2[\s\S]*sluice: the data directory \S+ was built with a session gap of 30m, not 10m/);

    const second = await serve(ENTRY, cwd, args, userEnv({}));
    await traffic.run(second.url, 'second', delay(1000));
    expect(await stop(second, 'SIGTERM')).toBe(0);
    // The fifth shard took its users' events again (with the default, the cores, it would have been left behind).
    expect(logBytes()).toBeGreaterThan(afterFirst);
    expect(traffic.acked.size).toBeGreaterThan(100);
    expectExactlyOnce(await silverCounts(join(cwd, 'lake')), traffic);
  }, 180_000);
});

describe('data-layout', () => {
  const code = (f: () => unknown): string | undefined => {
    try {
      f();
    } catch (err) {
      return err instanceof SluiceError ? err.code : String(err);
    }
    return undefined;
  };

  it('a new directory takes the fallback (or what was given) and records it on claim', async () => {
    const data = join(tempDir('new'), 'data');
    expect(recordedShards(data)).toBeUndefined();
    expect(resolveShards(data, undefined, 8)).toBe(8);
    expect(resolveShards(data, 6, 8)).toBe(6);
    await claimShards(data, 6);
    expect(recordedShards(data)).toBe(6);
    expect(resolveShards(data, undefined, 8)).toBe(6);
    expect(resolveShards(data, 6, 8)).toBe(6);
    expect(code(() => resolveShards(data, 7, 8))).toBe('shards_mismatch');
    await expect(claimShards(data, 7)).rejects.toMatchObject({ code: 'shards_mismatch' });
    await claimShards(data, 6); // agreeing again is a no-op
    expect(readFileSync(join(data, LAYOUT_FILE), 'utf8')).toBe('{"shards":6}\n');
  });

  it('the engine records the session gap beside the shards and refuses another one', async () => {
    const data = join(tempDir('gap'), 'data');
    await claimShards(data, 3); // ingest's local logs claim first, without a gap
    expect(recordedSessionGap(data)).toBeUndefined();
    await claimShards(data, 3, 600_000);
    expect(readFileSync(join(data, LAYOUT_FILE), 'utf8')).toBe('{"shards":3,"sessionGapMs":600000}\n');
    await claimShards(data, 3); // ingest again: keeps the gap
    await claimShards(data, 3, 600_000);
    expect(recordedSessionGap(data)).toBe(600_000);
    await expect(claimShards(data, 3, 1_800_000)).rejects.toMatchObject({ code: 'session_gap_mismatch', message: expect.stringContaining('was built with a session gap of 10m, not 30m') });
    writeFileSync(join(data, LAYOUT_FILE), '{"shards":3,"sessionGapMs":-5}\n');
    expect(code(() => recordedSessionGap(data))).toBe('layout_corrupt');
  });

  it('a directory from before layout.json counts its local shard logs', async () => {
    const data = tempDir('legacy');
    for (const d of ['shard-0', 'shard-1', 'shard-2', 'shard-3', 'dlq', 'shard-x']) mkdirSync(join(data, 'log', d), { recursive: true });
    expect(recordedShards(data)).toBe(4);
    expect(code(() => resolveShards(data, 2, 8))).toBe('shards_mismatch');
    await claimShards(data, 4);
    expect(readFileSync(join(data, LAYOUT_FILE), 'utf8')).toBe('{"shards":4}\n');
  });

  it('a damaged layout.json is an error naming the file, never a silent default', () => {
    const data = tempDir('bad');
    for (const text of ['', '{"shards":0}', '{"shards":"4"}', 'not json', '[]']) {
      writeFileSync(join(data, LAYOUT_FILE), text);
      expect(code(() => recordedShards(data)), text).toBe('layout_corrupt');
    }
  });
});
