/**
 * Golden pipeline tests: each test/engine/golden/<case>.input.jsonl is fed through one shard's
 * operator chain (ShardPipeline over a real LMDB environment) and everything it emits is compared
 * line by line with <case>.expected.jsonl.
 *
 * Input lines (times are ISO strings, UTC):
 *   {"id","user","type","t", "device"?, "version"?, "country"?, "props"?, "received"?}  an event
 *   {"flush":true}            the events so far form one batch (one log record)
 *   {"watermark":"local"|ISO} flush, then advance to the shard's own watermark or the given time
 *   {"restart":true}          flush, checkpoint (state + dedup ids in one LMDB transaction), then
 *                             continue with a new pipeline restored from that checkpoint
 * Output lines: per batch {"batch":n,"silver":[id…],"sessions":[label…],"tooLate":[id…],"duplicates":n};
 * per advance the closed sessions ({"session":label,…}) and window partials ({"hourly"|"daily":…}).
 * Session ids are hashes, so they appear as labels S1, S2, … in order of first appearance, after
 * resolving the ids silver rows were stamped with through the closed sessions' aliases (what the
 * `events` view shows an analyst); a too-late row has no session (null).
 *
 * Every case runs twice: as written, and with a checkpoint + restore after every batch; both runs
 * must give the same output (Arroyo's golden runner does the same), so every case tests recovery.
 *
 * `UPDATE_GOLDEN=1 npx vitest run test/engine/golden.test.ts` rewrites the expected files; read
 * every change before committing it.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open as openLmdb, type RootDatabase } from 'lmdb';
import { afterAll, describe, expect, it } from 'vitest';
import { ShardPipeline } from '../../engine/operators/shard-pipeline.js';
import { IngestBatchBuilder } from '../../ingest/batch-builder.js';

const GOLDEN = join(import.meta.dirname, 'golden');
const HOUR = 3_600_000;

interface InputEvent {
  id: string;
  user: string;
  type: string;
  t: string;
  received?: string;
  device?: string;
  version?: string;
  country?: string;
  props?: Record<string, unknown>;
}
type InputLine = InputEvent | { flush: true } | { watermark: string } | { restart: true };

const iso = (ms: number): string => new Date(ms).toISOString();

function run(input: InputLine[], dir: string, restartAfterEveryBatch = false): string[] {
  // Lines are rendered at the end, once every alias is known.
  const out: Array<() => string> = [];
  const labels = new Map<string, string>();
  const aliases = new Map<string, string>();
  const label = (stamped: string | null): string | null => {
    if (stamped === null) return null;
    const sessionId = aliases.get(stamped) ?? stamped;
    if (!labels.has(sessionId)) labels.set(sessionId, `S${labels.size + 1}`);
    return labels.get(sessionId)!;
  };
  const line = (value: () => unknown): void => {
    out.push(() => JSON.stringify(value()));
  };
  const env: RootDatabase = openLmdb({ path: join(dir, 'state.mdb'), maxDbs: 256, compression: false });
  const options = { shard: 0, db: env, allowedLatenessMs: 2 * HOUR, sessionGapMs: HOUR / 2, dedupTtlMs: 24 * HOUR };
  let pipeline = new ShardPipeline(options);
  const builder = new IngestBatchBuilder(1000);
  let batchNo = 0;
  const restart = (): void => {
    const state = pipeline.checkpoint();
    env.transactionSync(() => pipeline.onCheckpointTxn());
    pipeline.afterCheckpoint();
    pipeline = new ShardPipeline(options);
    pipeline.restore(state);
  };
  const flush = (): void => {
    if (builder.length === 0) return;
    const o = pipeline.processBatch(builder.build());
    builder.reset();
    const ids = o.silver.getChild('event_id')!.toArray() as string[];
    const stamped = o.silver.getChild('session_id')!.toArray() as Array<string | null>;
    const n = ++batchNo;
    line(() => ({ batch: n, silver: ids, sessions: stamped.map(label), tooLate: ids.filter((_, j) => o.tooLate[j] === 1), duplicates: o.duplicates }));
    if (restartAfterEveryBatch) restart();
  };
  try {
    for (const step of input) {
      if ('flush' in step) flush();
      else if ('restart' in step) {
        flush();
        restart();
        line(() => ({ restart: true }));
      } else if ('watermark' in step) {
        flush();
        const local = pipeline.localWatermark();
        const wm = step.watermark === 'local' ? (local.kind === 'event-time' ? local.timeMs : -Infinity) : Date.parse(step.watermark);
        const o = pipeline.advanceWatermark(wm);
        line(() => ({ watermark: iso(wm) }));
        for (const a of o.aliases?.toArray() ?? []) aliases.set(a.alias_id as string, a.session_id as string);
        for (const s of o.sessions?.toArray() ?? []) {
          const r = s.toJSON() as Record<string, unknown>;
          line(
            () => ({
              session: label(r.session_id as string),
              user: r.user_id,
              start: iso(Number(r.session_start)),
              end: iso(Number(r.session_end)),
              duration_s: r.duration_s,
              events: Number(r.event_count),
              bounce: r.bounce,
              first_screen: r.first_screen,
              last_screen: r.last_screen,
              dims: [r.device_type, r.app_version, r.country].join('/'),
            }),
          );
        }
        if (restartAfterEveryBatch) restart();
        for (const p of [...o.hourly, ...o.daily]) {
          const rows = [...p.rows].sort((a, b) => `${a.device_type}/${a.app_version}/${a.country}`.localeCompare(`${b.device_type}/${b.app_version}/${b.country}`));
          for (const r of rows) {
            const { device_type, app_version, country, ...counts } = r;
            const nonZero = Object.fromEntries(Object.entries(counts).filter(([, v]) => v !== 0));
            line(() => ({ [p.granularity]: iso(p.windowStart), dims: `${device_type}/${app_version}/${country}`, ...nonZero }));
          }
        }
      } else {
        const e = step;
        const t = Date.parse(e.t);
        builder.push({
          event_id: e.id,
          user_id: e.user,
          anonymous_id: null,
          event_type: e.type,
          event_time: t,
          received_at: e.received ? Date.parse(e.received) : t,
          device_type: e.device ?? 'ios',
          os: null,
          app_version: e.version ?? '4.0',
          country: e.country ?? 'DE',
          source: 'golden',
          properties: e.props ? JSON.stringify(e.props) : null,
          raw: null,
        });
      }
    }
    flush();
  } finally {
    env.close();
  }
  return out.map((render) => render());
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('golden pipeline', () => {
  const cases = readdirSync(GOLDEN)
    .filter((f) => f.endsWith('.input.jsonl'))
    .map((f) => f.replace('.input.jsonl', ''))
    .sort();
  it('has cases', () => expect(cases.length).toBeGreaterThanOrEqual(6));
  for (const name of cases) {
    it(name, () => {
      const input = readFileSync(join(GOLDEN, `${name}.input.jsonl`), 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '' && !l.startsWith('//'))
        .map((l) => JSON.parse(l) as InputLine);
      const dir = mkdtempSync(join(tmpdir(), `sluice-golden-${name}-`));
      dirs.push(dir);
      const actual = run(input, dir);
      const restartDir = mkdtempSync(join(tmpdir(), `sluice-golden-${name}-restarts-`));
      dirs.push(restartDir);
      const withRestarts = run(input, restartDir, true);
      expect(withRestarts).toEqual(actual);
      const expectedFile = join(GOLDEN, `${name}.expected.jsonl`);
      if (process.env.UPDATE_GOLDEN) writeFileSync(expectedFile, `${actual.join('\n')}\n`);
      const expected = readFileSync(expectedFile, 'utf8').split('\n').filter((l) => l !== '');
      expect(actual).toEqual(expected);
    });
  }
});
