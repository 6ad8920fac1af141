/**
 * User errors of the command line, as a user meets them: the compiled CLI (`node bin/sluice.js`)
 * spawned in an empty temporary working directory. Each mistake must give one line on stderr (no
 * stack), a non-zero exit code, and create nothing.
 */
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDist, killServed, serve, stop, userEnv } from '../helpers/served.js';

const ENTRY = join(import.meta.dirname, '..', '..', 'bin', 'sluice.js');
const root = mkdtempSync(join(tmpdir(), 'sluice-cli-errors-'));
const env = userEnv({});

beforeAll(() => buildDist(), 180_000);
afterAll(async () => {
  await killServed();
  rmSync(root, { recursive: true, force: true });
});

let dirs = 0;
/** A new empty working directory. */
function workdir(): string {
  const dir = join(root, `w${dirs++}`);
  mkdirSync(dir);
  return dir;
}

function sluice(cwd: string, args: string[], timeout = 30_000, extraEnv: Record<string, string> = {}): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [ENTRY, ...args], { cwd, env: { ...env, ...extraEnv }, encoding: 'utf8', timeout });
}

/** Exit code 2 and exactly one line on stderr, no stack, matching `message`. */
function expectUserError(r: SpawnSyncReturns<string>, message: RegExp, code = 2): string {
  const context = `status ${r.status}, signal ${r.signal}\nstderr: ${r.stderr}`;
  expect(r.stderr, context).not.toMatch(/^\s+at /m);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, context).toHaveLength(1);
  expect(lines[0], context).toMatch(/^sluice: /);
  expect(lines[0], context).toMatch(message);
  expect(r.status, context).toBe(code);
  return lines[0]!;
}

const MISSING_LAKE = /^sluice: lake directory \.\/nolake does not exist; pass --lake DIR/;

describe('sluice serve: bad arguments', () => {
  it.each([
    ['s3://', /--lake must look like s3:\/\/bucket\/prefix, got "s3:\/\/"/],
    ['ftp://x/y', /--lake must be a directory, a file:\/\/ URL or s3:\/\/bucket\/prefix, got "ftp:\/\/x\/y"/],
  ])('refuses --lake %s in one line and creates nothing', (lake, message) => {
    const cwd = workdir();
    expectUserError(sluice(cwd, ['serve', '--port', '0', '--lake', lake]), message);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('refuses a --data that is a file (serve and erase)', () => {
    const cwd = workdir();
    writeFileSync(join(cwd, 'afile'), 'x');
    expectUserError(sluice(cwd, ['serve', '--port', '0', '--data', './afile', '--lake', './lake']), /--data \.\/afile is not a directory/);
    expectUserError(sluice(cwd, ['erase', '--data', './afile', '--lake', './lake', '--user', 'u1']), /--data \.\/afile is not a directory/);
    expect(readdirSync(cwd)).toEqual(['afile']);
  });

  it('names the flag the user typed, not the internal option, and creates nothing', () => {
    const cwd = workdir();
    expectUserError(sluice(cwd, ['serve', '--port', '0', '--flush-interval', '10ms']), /^sluice: --flush-interval must be at least 50 ms, got "10ms"$/);
    expectUserError(sluice(cwd, ['serve', '--port', '0', '--read-key', 'short']), /^sluice: --read-key must be a key of at least 8 characters/);
    expectUserError(sluice(cwd, ['serve', '--port', '0'], 30_000, { SLUICE_FLUSH_INTERVAL: '10' }), /^sluice: SLUICE_FLUSH_INTERVAL must be at least 50 ms, got "10"$/);
    writeFileSync(join(cwd, 'c.json'), '{"flushInterval": 20}');
    expectUserError(sluice(cwd, ['serve', '--port', '0', '--config', 'c.json']), /^sluice: "flushInterval" in config file c\.json must be at least 50 ms/);
    expect(readdirSync(cwd)).toEqual(['c.json']);
  });
});

describe('options commander refuses', () => {
  it('an unknown option or command exits 2 like a bad value (1 would read as "a check failed" for quality); --help exits 0', () => {
    const cwd = workdir();
    for (const args of [['quality', '--max-stalenes', '1h'], ['query', '--formt', 'csv', 'SELECT 1'], ['nosuchcommand']]) {
      const r = sluice(cwd, args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^error: (unknown option '--(max-stalenes|formt)'|unknown command 'nosuchcommand')/);
    }
    expect(sluice(cwd, ['quality', '--help']).status).toBe(0);
    expect(readdirSync(cwd)).toEqual([]);
  });
});

describe('flags checked before any work', () => {
  it('sluice demo with a bad --protocol starts no server and leaves no directory', () => {
    const cwd = workdir();
    const tmp = join(cwd, 'tmp');
    mkdirSync(tmp);
    expectUserError(sluice(cwd, ['demo', '--protocol', 'grpc', '--duration', '1s'], 30_000, { TMPDIR: tmp }), /--protocol must be http, ndjson or arrow-ws, got "grpc"/);
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('sluice query --metric with a misspelt name says so before asking for its other flags', () => {
    const cwd = workdir();
    mkdirSync(join(cwd, 'lake'));
    expectUserError(sluice(cwd, ['query', '--metric', 'nope']), /unknown metric "nope"; choose one of /);
  });
});

describe('sluice query --out', () => {
  it('names a --out path whose directory does not exist', () => {
    const cwd = workdir();
    mkdirSync(join(cwd, 'lake'));
    const out = join(cwd, 'nonexistent', 'dir', 'x.csv');
    expectUserError(sluice(cwd, ['query', '--out', out, '--format', 'csv', 'SELECT 1']), new RegExp(`--out ${out.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`));
    expect(readdirSync(cwd)).toEqual(['lake']);
  });
});

describe('commands on a lake or data directory that does not exist', () => {
  it('erase refuses a missing data directory or lake and creates nothing', () => {
    const cwd = workdir();
    expectUserError(sluice(cwd, ['erase', '--lake', './nonexistent', '--data', './nonexistent-data', '--user', 'u1']), /data directory \.\/nonexistent-data does not exist/);
    expect(readdirSync(cwd)).toEqual([]);
    mkdirSync(join(cwd, 'empty'));
    expectUserError(sluice(cwd, ['erase', '--lake', './nonexistent', '--data', './empty', '--user', 'u1']), /data directory \.\/empty holds no Sluice data/);
    mkdirSync(join(cwd, 'data'));
    writeFileSync(join(cwd, 'data', 'layout.json'), '{"shards": 1}\n');
    expectUserError(sluice(cwd, ['erase', '--lake', './nonexistent', '--data', './data', '--user', 'u1']), /lake directory \.\/nonexistent does not exist/);
    expectUserError(sluice(cwd, ['erase', '--status', '--lake', './nonexistent', '--data', './data']), /lake directory \.\/nonexistent does not exist/);
    expect(readdirSync(cwd).sort()).toEqual(['data', 'empty']);
    expect(readdirSync(join(cwd, 'data'))).toEqual(['layout.json']);
    expect(readdirSync(join(cwd, 'empty'))).toEqual([]);
  });

  it('compact and reconcile refuse a missing lake as query and quality do', () => {
    const cwd = workdir();
    const query = expectUserError(sluice(cwd, ['query', '--lake', './nolake', 'SELECT 1']), MISSING_LAKE);
    for (const cmd of ['compact', 'reconcile', 'quality']) expect(expectUserError(sluice(cwd, [cmd, '--lake', './nolake']), MISSING_LAKE)).toBe(query);
    expect(readdirSync(cwd)).toEqual([]);
  });
});

describe('one sluice serve per data directory', () => {
  it('a second serve on a data directory in use fails fast, naming the first one', async () => {
    const cwd = workdir();
    const first = await serve(ENTRY, cwd, ['--data', './p1', '--lake', './lake', '--shards', '1', '--workers', '1'], env);
    try {
      const started = Date.now();
      const r = sluice(cwd, ['serve', '--port', '0', '--data', './p1', '--lake', './lake'], 20_000);
      expectUserError(r, new RegExp(`^sluice: data directory \\./p1 is in use by sluice serve \\(pid ${first.pid}\\)`));
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      expect(await stop(first, 'SIGTERM')).toBe(0);
    }
    // The first serve let go of the directory: a new one starts.
    expect(readdirSync(join(cwd, 'p1'))).not.toContain('serve.pid');
    const again = await serve(ENTRY, cwd, ['--data', './p1', '--lake', './lake'], env);
    expect(await stop(again, 'SIGTERM')).toBe(0);
  });

  it('a serve with another data directory on a lake in use is refused in one line (the engine\'s own reason, not "the engine exited")', async () => {
    const cwd = workdir();
    const first = await serve(ENTRY, cwd, ['--data', './p1', '--lake', './lake', '--shards', '1', '--workers', '1'], env);
    try {
      const r = sluice(cwd, ['serve', '--port', '0', '--data', './p2', '--lake', './lake', '--shards', '1', '--workers', '1'], 30_000);
      expectUserError(r, /^sluice: .*lake .*written by another data directory/);
      expect(readdirSync(join(cwd, 'p2'))).not.toContain('serve.pid');
    } finally {
      expect(await stop(first, 'SIGTERM')).toBe(0);
    }
  });

  it('waits for an orphaned engine process only so long, then kills it and starts (a supervisor\'s restart does not loop on it)', async () => {
    const cwd = workdir();
    mkdirSync(join(cwd, 'p1'));
    writeFileSync(join(cwd, 'p1', 'layout.json'), '{"shards": 1}\n');
    // A stand-in for an engine left behind by a killed serve that does not exit: orphaned (its shell is gone), named engine-host.
    const sh = spawnSync('sh', ['-c', `"${process.execPath}" -e "setInterval(() => {}, 1000)" engine-host >/dev/null 2>&1 & echo $!`], { encoding: 'utf8' });
    const orphan = Number(sh.stdout.trim());
    expect(orphan).toBeGreaterThan(0);
    try {
      writeFileSync(join(cwd, 'p1', 'engine.pid'), `${orphan}\n`);
      const child = spawn(process.execPath, [ENTRY, 'serve', '--port', '0', '--data', './p1', '--lake', './lake'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | string>((resolve) => child.once('exit', (c, s) => resolve(c ?? s ?? -1)));
      const started = Date.now();
      for (const stop = Date.now() + 90_000; !/Sluice listening/.test(stdout) && Date.now() < stop && child.exitCode === null; ) await new Promise((r) => setTimeout(r, 100));
      expect(stdout, stderr).toMatch(/Sluice listening/);
      // Waited for (about 30 s), then killed.
      expect(Date.now() - started).toBeGreaterThan(25_000);
      expect(() => process.kill(orphan, 0)).toThrow();
      child.kill('SIGTERM');
      expect(await exited, stderr).toBe(0);
    } finally {
      try {
        process.kill(orphan, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }, 120_000);
});
