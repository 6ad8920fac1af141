/**
 * `sluice query` and `sluice quality` from the command line: in-process through cli/main.ts
 * `main([...])` with stdout/stderr captured, and once spawned as `node bin/sluice.js` for the
 * real exit codes.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../cli/main.js';
import { LocalObjectStore } from '../../storage/local-store.js';
import { DAY, generateFixture, writeFixtureLake, type Fixture } from './fixture.js';

let root: string;
let lake: string;
let f: Fixture;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'sluice-query-cli-'));
  lake = join(root, 'lake');
  f = generateFixture({ seed: 5, users: 50, days: 3 });
  const store = new LocalObjectStore(lake);
  await writeFixtureLake(store, f);
  await store.close();
}, 120_000);

afterAll(() => rmSync(root, { recursive: true, force: true }));

async function cli(argv: string[]): Promise<{ out: string; err: string; code: number }> {
  const out: string[] = [];
  const err: string[] = [];
  const w1 = process.stdout.write.bind(process.stdout);
  const w2 = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((c: string | Uint8Array) => (out.push(String(c)), true)) as typeof process.stdout.write;
  process.stderr.write = ((c: string | Uint8Array) => (err.push(String(c)), true)) as typeof process.stderr.write;
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await main(argv);
  } finally {
    process.stdout.write = w1;
    process.stderr.write = w2;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { out: out.join(''), err: err.join(''), code };
}

const byDevice = (): Array<[string, number]> => {
  const m = new Map<string, number>();
  for (const e of f.events) if (e.device_type !== null) m.set(e.device_type, (m.get(e.device_type) ?? 0) + 1);
  return [...m].sort((a, b) => (a[0] < b[0] ? -1 : 1));
};
const SQL = 'SELECT device_type, count(*) AS n FROM events WHERE device_type IS NOT NULL GROUP BY 1 ORDER BY 1';

describe('sluice query', () => {
  it('prints an aligned table by default', async () => {
    const r = await cli(['query', '--lake', lake, SQL]);
    const rows = byDevice();
    const w = Math.max(1, ...rows.map(([, n]) => String(n).length));
    expect(r.out).toBe(
      [`device_type  n`, `-----------  ${'-'.repeat(w)}`, ...rows.map(([d, n]) => `${d.padEnd(11)}  ${String(n).padStart(w)}`), `(${rows.length} rows)`, ''].join('\n'),
    );
    expect(r.code).toBe(0);
  });

  it('prints CSV (quoted where needed, NULL empty) and JSON (dates, timestamps, numbers)', async () => {
    const csv = await cli(['query', '--lake', lake, '--format', 'csv', SQL]);
    expect(csv.out).toBe(['device_type,n', ...byDevice().map(([d, n]) => `${d},${n}`), ''].join('\n'));
    const odd = await cli(['query', '--lake', lake, '--format', 'csv', `SELECT 'a,b' AS x, 'say "hi"' AS y, NULL AS z, DATE '2026-03-02' AS d`]);
    expect(odd.out).toBe('x,y,z,d\n"a,b","say ""hi""",,2026-03-02\n');
    const json = await cli(['query', '--lake', lake, '--format', 'json', `SELECT min(event_time) AS first, DATE '2026-03-02' AS d, count(*) AS n, 0.5 AS half FROM events`]);
    expect(JSON.parse(json.out)).toEqual([{ first: new Date(Math.min(...f.events.map((e) => e.event_time))).toISOString(), d: '2026-03-02', n: f.events.length, half: 0.5 }]);
    expect(JSON.parse((await cli(['query', '--lake', lake, '--format', 'json', 'SELECT 1 AS x WHERE false'])).out)).toEqual([]);
  });

  it('writes Parquet with --out, for SQL and for a metric', async () => {
    const out = join(root, 'devices.parquet');
    const r = await cli(['query', '--lake', lake, '--format', 'parquet', '--out', out, SQL]);
    expect(r.err).toBe(`wrote ${byDevice().length} rows to ${out}\n`);
    const back = await cli(['query', '--lake', lake, '--format', 'csv', `SELECT sum(n) AS s FROM '${out}'`]);
    expect(back.out).toBe(`s\n${byDevice().reduce((a, [, n]) => a + n, 0)}\n`);
    const dau = join(root, 'dau.parquet');
    await cli(['query', '--lake', lake, '--metric', 'dau', '--from', '2026-03-02', '--to', '2026-03-04', '--format', 'parquet', '--out', dau]);
    const days = await cli(['query', '--lake', lake, '--format', 'csv', `SELECT day, dau FROM '${dau}' ORDER BY day`]);
    const want = [0, 1, 2].map((i) => {
      const d = Date.UTC(2026, 2, 2 + i);
      return `${new Date(d).toISOString().slice(0, 10)},${new Set(f.events.filter((e) => e.event_time >= d && e.event_time < d + DAY).map((e) => e.user_id)).size}`;
    });
    expect(days.out).toBe(['day,dau', ...want, ''].join('\n'));
  });

  it('runs canned metrics with --where/--by, --steps/--within', async () => {
    const r = await cli(['query', '--lake', lake, '--metric', 'dau', '--from', '2026-03-02', '--to', '2026-03-03', '--where', 'device_type=ios', '--by', 'country', '--format', 'csv']);
    expect(r.out.split('\n')[0]).toBe('day,country,dau');
    const ios = f.events.filter((e) => e.device_type === 'ios' && e.event_time < Date.UTC(2026, 2, 4));
    const total = r.out.trim().split('\n').slice(1).reduce((a, l) => a + Number(l.split(',')[2]), 0);
    const perDayCountry = new Set(ios.map((e) => `${Math.floor(e.event_time / DAY)}|${e.country}|${e.user_id}`)).size;
    expect(total).toBe(perDayCountry);
    const funnel = await cli(['query', '--lake', lake, '--metric', 'funnel', '--from', '2026-03-02', '--to', '2026-03-04', '--steps', 'Application Opened, screen', '--within', '1h', '--format', 'json']);
    expect((JSON.parse(funnel.out) as Array<{ step: number; event_type: string }>).map((s) => `${s.step}:${s.event_type}`)).toEqual(['1:Application Opened', '2:screen']);
  });

  it.each([
    [['SELECT nope FROM events'], /^sluice: query failed: Binder Error: Referenced column "nope" not found/],
    [['SELEC 1'], /^sluice: query failed: Parser Error: syntax error at or near "SELEC"/],
    [['--format', 'xml', 'SELECT 1'], /^sluice: --format must be table, csv, json or parquet, got "xml"\n$/],
    [['--format', 'parquet', 'SELECT 1'], /^sluice: --format parquet needs --out FILE\n$/],
    [['--metric', 'dau'], /^sluice: --metric needs --from DAY/],
    [['--metric', 'dau', '--from', '2026-03-02', '--where', 'ios'], /^sluice: --where must look like device_type=ios, got "ios"\n$/],
    [['--metric', 'funnel', '--from', '2026-03-02', '--steps', 'a,b', '--within', '1500ms'], /^sluice: --within must be whole seconds/],
    [[], /^sluice: give SQL to run, e.g. sluice query "SELECT count\(\*\) FROM events", or --metric NAME/],
  ])('%j is a clear error with exit code 2', async (args, message) => {
    const r = await cli(['query', '--lake', lake, ...args]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(message);
    expect(r.out).toBe('');
  });
});

describe('sluice quality', () => {
  it('prints the report, or JSON, and exits 1 only when a check fails', async () => {
    const now = new Date(f.lastReceived + 60_000).toISOString();
    const ok = await cli(['quality', '--lake', lake, '--now', now]);
    expect(ok.code).toBe(0);
    expect(ok.out).toMatch(new RegExp(`^Data quality of ${lake.replaceAll('\\', '\\\\')} as of ${now}: OK\n`));
    const stale = await cli(['quality', '--lake', lake, '--now', new Date(f.lastReceived + 2 * DAY).toISOString(), '--json']);
    expect(stale.code).toBe(1);
    const report = JSON.parse(stale.out) as { ok: boolean; checks: Array<{ name: string; status: string }> };
    expect(report.ok).toBe(false);
    expect(report.checks.filter((c) => c.status === 'fail').map((c) => c.name)).toEqual(['freshness']);
    const bad = await cli(['quality', '--lake', lake, '--max-late-rate', '7']);
    expect([bad.code, bad.err]).toEqual([2, 'sluice: --max-late-rate must be a fraction like 0.05 or a percentage like 5%, got "7"\n']);
  });
});

describe('bin/sluice.js', () => {
  it('exits 2 with one message and no stack trace on bad SQL', () => {
    const r = spawnSync(process.execPath, ['bin/sluice.js', 'query', '--lake', lake, 'SELECT * FROM nowhere'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^sluice: query failed: Catalog Error: Table with name nowhere does not exist!/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('a damaged lake file: query exits 1 with one line naming it, quality --json reports it (and the rest) in its JSON', () => {
    const damaged = join(root, 'damaged');
    cpSync(lake, damaged, { recursive: true });
    const dir = join(damaged, 'silver', 'events');
    const file = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((p) => p.endsWith('.parquet')).sort()[0]!;
    const bytes = readFileSync(join(dir, file));
    writeFileSync(join(dir, file), bytes.subarray(0, bytes.length - 20));
    const q = spawnSync(process.execPath, ['bin/sluice.js', 'query', '--lake', damaged, 'SELECT count(*) FROM events'], { encoding: 'utf8', timeout: 60_000 });
    expect(q.status).toBe(1);
    expect(q.stdout).toBe('');
    expect(q.stderr).toMatch(new RegExp(`^sluice: a Parquet file of the lake cannot be read \\(.*${file.replaceAll('/', '.')}.*\\); \`sluice quality --lake ${damaged}\` names every damaged file: restore it or move it away, then run again\n$`));
    const r = spawnSync(process.execPath, ['bin/sluice.js', 'quality', '--lake', damaged, '--json'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('');
    const report = JSON.parse(r.stdout) as { checks: Array<{ name: string; status: string; problems: string[] }> };
    expect(report.checks.find((c) => c.name === 'files')!.problems).toEqual([expect.stringContaining(`damaged file: silver/events/${file.replaceAll('\\', '/')} cannot be read`)]);
    expect(report.checks.find((c) => c.name === 'completeness')!.status).toBe('fail');
  });

  it('sets V8\'s heap growth from SLUICE_HEAP_GROWING_PERCENT (0: V8\'s own) and refuses a malformed value with one message', () => {
    const run = (value: string | undefined) =>
      spawnSync(process.execPath, ['bin/sluice.js', 'query', '--lake', lake, 'SELECT 1 AS one'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, SLUICE_HEAP_GROWING_PERCENT: value } });
    for (const ok of [undefined, '0', '100', '300']) {
      const r = run(ok);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
    for (const bad of ['', '-1', '1.5', '2x', '10000']) {
      const r = run(bad);
      expect(r.status).toBe(1);
      expect(r.stderr).toBe(`sluice: SLUICE_HEAP_GROWING_PERCENT must be a whole number from 0 to 9999 (0: V8's default heap growth), got ${JSON.stringify(bad)}\n`);
    }
  });
});
