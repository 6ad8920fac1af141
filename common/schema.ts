/**
 * The canonical event and the Arrow schemas built on it. Every stage agrees on these:
 * ingest builds `ingestSchema` batches and writes them to the log; the engine reads them and
 * writes `silverSchema` rows; storage writes them as Parquet.
 *
 * Times are epoch milliseconds, UTC (`TimestampMillisecond` with timezone 'UTC').
 * Low-cardinality strings are `Dictionary<Utf8, Int32>`.
 */
import {
  Dictionary,
  Field,
  Int32,
  Int64,
  Schema,
  TimestampMillisecond,
  TimeUnit,
  Timestamp,
  Utf8,
  Float64,
  Bool,
} from 'apache-arrow';

export const utcMillis = (): Timestamp => new Timestamp(TimeUnit.MILLISECOND, 'UTC');

let nextDictId = 0;
/** A fresh dictionary type (each dictionary field needs its own id within a schema). */
export const dictUtf8 = (): Dictionary<Utf8, Int32> => new Dictionary(new Utf8(), new Int32(), nextDictId++);

/** Column names of the canonical event, in silver column order. */
export const EVENT_COLUMNS = [
  'event_id',
  'user_id',
  'anonymous_id',
  'event_type',
  'event_time',
  'received_at',
  'session_id',
  'device_type',
  'os',
  'app_version',
  'country',
  'source',
  'properties',
] as const;
export type EventColumn = (typeof EVENT_COLUMNS)[number];

/** Dimension columns the aggregates group by (configurable later; these are the defaults). */
export const DEFAULT_DIMENSIONS = ['device_type', 'app_version', 'country'] as const;

function eventFields(): Field[] {
  return [
    new Field('event_id', new Utf8(), false),
    new Field('user_id', new Utf8(), false),
    new Field('anonymous_id', new Utf8(), true),
    new Field('event_type', dictUtf8(), false),
    new Field('event_time', utcMillis(), false),
    new Field('received_at', utcMillis(), false),
    new Field('session_id', new Utf8(), true),
    new Field('device_type', dictUtf8(), true),
    new Field('os', dictUtf8(), true),
    new Field('app_version', dictUtf8(), true),
    new Field('country', dictUtf8(), true),
    new Field('source', dictUtf8(), false),
    new Field('properties', new Utf8(), true),
  ];
}

/**
 * What ingest appends to a shard's log (one Arrow IPC stream per log record) and what the
 * Arrow WebSocket path accepts: the canonical event plus `raw`, the event's JSON as received
 * (null when the producer sent Arrow). `session_id` is null until the engine stamps it.
 */
export const ingestSchema = new Schema([...eventFields(), new Field('raw', new Utf8(), true)]);

/** Silver events: the canonical event, deduplicated, with `session_id` stamped. */
export const silverSchema = new Schema(eventFields());

/** Bronze: every accepted event as received, with where it came from. Partitioned by receive time. */
export const bronzeSchema = new Schema([
  ...eventFields(),
  new Field('raw', new Utf8(), true),
  new Field('shard', new Int32(), false),
  new Field('log_offset', new Int64(), false),
]);

/** Dead-letter queue: a rejected event's raw payload and why. */
export const dlqSchema = new Schema([
  new Field('received_at', utcMillis(), false),
  new Field('source', new Utf8(), false),
  new Field('write_key_id', new Utf8(), true),
  new Field('code', new Utf8(), false),
  new Field('message', new Utf8(), false),
  new Field('raw', new Utf8(), false),
]);

/** Gold sessions (design: start/end are first/last event times; duration_s = (end − start)/1000). */
export const sessionsSchema = new Schema([
  new Field('session_id', new Utf8(), false),
  new Field('user_id', new Utf8(), false),
  new Field('session_start', utcMillis(), false),
  new Field('session_end', utcMillis(), false),
  new Field('duration_s', new Float64(), false),
  new Field('event_count', new Int64(), false),
  new Field('bounce', new Bool(), false),
  new Field('first_screen', new Utf8(), true),
  new Field('last_screen', new Utf8(), true),
  new Field('device_type', new Utf8(), true),
  new Field('app_version', new Utf8(), true),
  new Field('country', new Utf8(), true),
]);

/**
 * Gold session aliases: an id that silver rows were stamped with while their session was open,
 * and the id of the session it became (a session's id follows its start, which a late event or a
 * merge can move). The `events` view resolves silver's session_id through it. Partitioned like
 * gold/sessions, by session start.
 */
export const sessionAliasesSchema = new Schema([
  new Field('alias_id', new Utf8(), false),
  new Field('session_id', new Utf8(), false),
  new Field('user_id', new Utf8(), false),
  new Field('session_start', utcMillis(), false),
]);

const metricFields = (): Field[] => [
  new Field('window_start', utcMillis(), false),
  new Field('device_type', new Utf8(), false),
  new Field('app_version', new Utf8(), false),
  new Field('country', new Utf8(), false),
  new Field('events', new Int64(), false),
  new Field('active_users', new Int64(), false),
  new Field('installs', new Int64(), false),
  new Field('sessions', new Int64(), false),
  new Field('screen_views', new Int64(), false),
  new Field('notification_views', new Int64(), false),
  new Field('notification_opens', new Int64(), false),
];

export const hourlyMetricsSchema = new Schema(metricFields());
export const dailyMetricsSchema = new Schema([
  ...metricFields(),
  new Field('avg_session_s', new Float64(), true),
  new Field('bounce_rate', new Float64(), true),
  new Field('notification_ctr', new Float64(), true),
]);

/** The value that stands for "all values" of a dimension in roll-up rows. */
export const ALL = 'ALL';

/** What a missing dimension value is grouped as in gold (silver keeps it null). */
export const UNKNOWN = 'unknown';
