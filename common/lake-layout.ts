/**
 * The lake layout (design: "Lake layout"), in one place. Paths are object keys relative to the
 * lake root, '/'-separated, the same on disk and on S3.
 *
 *   bronze/events/year=YYYY/month=MM/day=DD/hour=HH/part-….parquet   raw, by receive time
 *   silver/events/year=…/hour=HH/part-….parquet                       clean, by event time
 *   gold/sessions/year=…/day=DD/part-….parquet                        by session start
 *   gold/session_aliases/year=…/day=DD/part-….parquet                 earlier ids → session id
 *   gold/hourly_metrics/year=…/hour=HH/part-….parquet
 *   gold/daily_metrics/year=…/day=DD/part-….parquet
 *   dlq/year=…/hour=HH/part-….parquet
 *   late/year=…/hour=HH/part-….parquet
 *   _sluice/                                                          commit records
 */

export type Granularity = 'hour' | 'day';

export interface TableSpec {
  /** Key prefix of the table, without trailing slash. */
  readonly prefix: string;
  /** Partition depth. */
  readonly granularity: Granularity;
}

export const TABLES = {
  bronze_events: { prefix: 'bronze/events', granularity: 'hour' },
  events: { prefix: 'silver/events', granularity: 'hour' },
  sessions: { prefix: 'gold/sessions', granularity: 'day' },
  session_aliases: { prefix: 'gold/session_aliases', granularity: 'day' },
  hourly_metrics: { prefix: 'gold/hourly_metrics', granularity: 'hour' },
  daily_metrics: { prefix: 'gold/daily_metrics', granularity: 'day' },
  dlq: { prefix: 'dlq', granularity: 'hour' },
  late_events: { prefix: 'late', granularity: 'hour' },
} as const satisfies Record<string, TableSpec>;

export type TableName = keyof typeof TABLES;

/** Where commit records and other Sluice metadata live; no reader globs this. */
export const META_PREFIX = '_sluice';

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** `year=YYYY/month=MM/day=DD[/hour=HH]` for an epoch-ms time, in UTC. */
export function partitionOf(timeMs: number, granularity: Granularity): string {
  const d = new Date(timeMs);
  const day = `year=${d.getUTCFullYear()}/month=${pad2(d.getUTCMonth() + 1)}/day=${pad2(d.getUTCDate())}`;
  return granularity === 'day' ? day : `${day}/hour=${pad2(d.getUTCHours())}`;
}

/** Start (epoch ms) of the partition containing `timeMs`. */
export function partitionStart(timeMs: number, granularity: Granularity): number {
  const size = granularity === 'day' ? 86_400_000 : 3_600_000;
  return Math.floor(timeMs / size) * size;
}

/** Parses `year=…/month=…/day=…[/hour=…]` found anywhere in a key back into its start time. */
export function partitionTimeOfKey(key: string): number | undefined {
  const m = /year=(\d{4})\/month=(\d{2})\/day=(\d{2})(?:\/hour=(\d{2}))?/.exec(key);
  if (!m) return undefined;
  return Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), m[4] === undefined ? 0 : Number(m[4]));
}

/** Deterministic part name (design: Kafka Connect naming) so a repeated publish overwrites itself. */
export function partName(shard: number, firstOffset: number, lastOffset: number, suffix = ''): string {
  return `part-s${shard}-${firstOffset}-${lastOffset}${suffix}.parquet`;
}

/**
 * The shard whose rows a part file holds, from its name: a flush's `part-s{shard}-…` or a
 * compaction's `part-c{hash}-s{shard}` (compaction merges one shard's files at a time, so a user,
 * who lives in one shard, stays in that shard's files: erasure rewrites only those). Undefined for
 * files of no single shard (dlq/, gold windows, compactions of lakes written before that rule).
 */
export function shardOfPart(key: string): number | undefined {
  const m = /\/part-(?:s(\d+)-|c[0-9a-f]+-s(\d+)\.parquet$)/.exec(key);
  if (!m) return undefined;
  return Number(m[1] ?? m[2]);
}

/** Full key of a part file. */
export function partKey(table: TableName, timeMs: number, name: string): string {
  const spec = TABLES[table];
  return `${spec.prefix}/${partitionOf(timeMs, spec.granularity)}/${name}`;
}
