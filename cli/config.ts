/**
 * Composes one configuration from, in order of precedence: command-line flags, `SLUICE_*`
 * environment variables, a JSON config file (`--config FILE` / `SLUICE_CONFIG`), defaults.
 * This is the only place (with the CLI commands) that reads process.env.
 *
 * | setting          | flag                 | environment               | default                      |
 * |------------------|----------------------|---------------------------|------------------------------|
 * | port             | --port               | SLUICE_PORT               | 8080                         |
 * | host             | --host               | SLUICE_HOST               | 127.0.0.1                    |
 * | data             | --data               | SLUICE_DATA               | ./data                       |
 * | lake             | --lake               | SLUICE_LAKE               | ./lake                       |
 * | s3Endpoint       | --s3-endpoint        | SLUICE_S3_ENDPOINT, AWS_ENDPOINT_URL_S3 | (AWS)          |
 * | shards           | --shards             | SLUICE_SHARDS             | as DATA recorded; new: cores |
 * | workers          | --workers            | SLUICE_WORKERS            | cores                        |
 * | writeKeys        | --write-key (repeat) | SLUICE_WRITE_KEYS (comma) | generated into DATA/write-key |
 * | readKeys         | --read-key (repeat)  | SLUICE_READ_KEYS (comma)  | generated into DATA/read-key (dashboard) |
 * | flushInterval    | --flush-interval     | SLUICE_FLUSH_INTERVAL     | 10s                          |
 * | allowedLateness  | --allowed-lateness   | SLUICE_ALLOWED_LATENESS   | 2h                           |
 * | sessionGap       | --session-gap        | SLUICE_SESSION_GAP        | 30m                          |
 * | dedupTtl         | --dedup-ttl          | SLUICE_DEDUP_TTL          | 24h                          |
 * | targetFileSize   | --target-file-size   | SLUICE_TARGET_FILE_SIZE   | 128MiB                       |
 * | compression      | --compression        | SLUICE_COMPRESSION        | zstd                         |
 * | rangeLinger      | --range-linger       | SLUICE_RANGE_LINGER       | 200ms (engine.rangeLingerMs; 0 = off) |
 * | log              | --log                | SLUICE_LOG                | (local segment log under DATA); nats://h:4222[,…][?replicas=N] |
 * | role             | --role               | SLUICE_ROLE               | all (ingest + engine); ingest (needs log nats://…) |
 * | maxMemory        | --max-memory         | SLUICE_MAX_MEMORY         | 75 % of RAM (ingest.maxMemoryBytes) |
 * | maxBacklog       | --max-backlog        | SLUICE_MAX_BACKLOG        | ¼ of free disk, 256 MiB–64 GiB (ingest.maxBacklogBytes) |
 * | maxLag           | --max-lag            | SLUICE_MAX_LAG            | 5s or the flush interval if longer (ingest.maxLagMs; 0 = off) |
 * | rateLimit        | --rate-limit         | SLUICE_RATE_LIMIT         | 1 M events/s per write key, burst 2 s (ingest.rateLimit) |
 */
import { readFileSync } from 'node:fs';
import { SluiceError, userError } from '../common/errors.js';
import { parseBytes, parseDuration } from '../common/duration.js';
import { resolveShards } from '../engine/data-layout.js';
import { defaultEngineOptions, engineMemoryLimits, validateEngineOptions, type EngineOptions } from '../engine/options.js';
import { defaultIngestOptions, validateIngestOptions, type IngestOptionsInput } from '../ingest/options.js';
import { parseNatsLog } from '../log/jetstream-log.js';
import { checkDataDir, localLakePath } from './check-paths.js';

export interface ServeConfig {
  host: string;
  port: number;
  writeKeys: string[];
  /** Dashboard read keys (never write keys); empty: `sluice serve` generates one into DATA/read-key. */
  readKeys?: string[];
  /** Admin keys (`POST/GET /v1/admin/erasures`); none: the admin routes answer 401. */
  adminKeys?: string[];
  engine: EngineOptions;
  /**
   * Where the engine runs: 'process' (the default of `sluice serve`: a child process, niced as a
   * whole, reading the logs ingest writes) or 'inline' (in the ingest process; what `startSluice`
   * does when this is absent, for tests that reach into the coordinator).
   */
  engineMode?: 'process' | 'inline';
  /** Extra ingest options from the config file's `ingest` object, passed through to the ingest validator. */
  ingest: Record<string, unknown>;
  /**
   * NATS servers of a JetStream log (`--log nats://h1:4222,h2:4222`); absent: the local segment
   * log. For now the engine then runs inline (see docs/SCALE-OUT.md).
   */
  logServers?: string[];
  /** Replicas of the JetStream stream (`--log nats://…?replicas=N`); default 3. */
  logReplicas?: number;
  /**
   * What this node runs: 'all' (default: ingest and the engine) or 'ingest' (an ingest node
   * appending to the JetStream log, no engine; needs `logServers`).
   */
  role?: 'all' | 'ingest';
}

/** Raw settings as strings/numbers, keyed like the table above. */
export type RawSettings = Partial<Record<SettingName, string | number | string[] | undefined>>;

type SettingName =
  | 'port'
  | 'host'
  | 'data'
  | 'lake'
  | 's3Endpoint'
  | 'shards'
  | 'workers'
  | 'writeKeys'
  | 'readKeys'
  | 'adminKeys'
  | 'flushInterval'
  | 'allowedLateness'
  | 'sessionGap'
  | 'dedupTtl'
  | 'targetFileSize'
  | 'compression'
  | 'workerNice'
  | 'rangeLinger'
  | 'engineMode'
  | 'maxMemory'
  | 'maxBacklog'
  | 'maxLag'
  | 'rateLimit'
  | 'log'
  | 'role';

const ENV: Record<SettingName, string[]> = {
  port: ['SLUICE_PORT'],
  host: ['SLUICE_HOST'],
  data: ['SLUICE_DATA'],
  lake: ['SLUICE_LAKE'],
  s3Endpoint: ['SLUICE_S3_ENDPOINT', 'AWS_ENDPOINT_URL_S3'],
  shards: ['SLUICE_SHARDS'],
  workers: ['SLUICE_WORKERS'],
  writeKeys: ['SLUICE_WRITE_KEYS'],
  readKeys: ['SLUICE_READ_KEYS'],
  adminKeys: ['SLUICE_ADMIN_KEYS'],
  flushInterval: ['SLUICE_FLUSH_INTERVAL'],
  allowedLateness: ['SLUICE_ALLOWED_LATENESS'],
  sessionGap: ['SLUICE_SESSION_GAP'],
  dedupTtl: ['SLUICE_DEDUP_TTL'],
  targetFileSize: ['SLUICE_TARGET_FILE_SIZE'],
  compression: ['SLUICE_COMPRESSION'],
  workerNice: ['SLUICE_WORKER_NICE'],
  rangeLinger: ['SLUICE_RANGE_LINGER'],
  engineMode: ['SLUICE_ENGINE_MODE'],
  maxMemory: ['SLUICE_MAX_MEMORY'],
  maxBacklog: ['SLUICE_MAX_BACKLOG'],
  maxLag: ['SLUICE_MAX_LAG'],
  rateLimit: ['SLUICE_RATE_LIMIT'],
  log: ['SLUICE_LOG'],
  role: ['SLUICE_ROLE'],
};

function fromEnv(env: NodeJS.ProcessEnv): RawSettings {
  const out: RawSettings = {};
  for (const [name, vars] of Object.entries(ENV) as Array<[SettingName, string[]]>) {
    const v = vars.map((k) => env[k]).find((x) => x !== undefined && x !== '');
    if (v === undefined) continue;
    out[name] = name === 'writeKeys' || name === 'readKeys' || name === 'adminKeys' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
  }
  return out;
}

function fromFile(path: string | undefined): { settings: RawSettings; ingest: Record<string, unknown> } {
  if (!path) return { settings: {}, ingest: {} };
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw userError('invalid_config', `cannot read config file ${path}: ${(err as Error).message}`, err);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw userError('invalid_config', `config file ${path} must hold a JSON object`);
  }
  const { ingest, ...rest } = parsed as Record<string, unknown>;
  for (const key of Object.keys(rest)) {
    if (!(key in ENV)) throw userError('invalid_config', `config file ${path}: unknown setting "${key}" (known: ${Object.keys(ENV).join(', ')}, ingest)`);
  }
  return { settings: rest as RawSettings, ingest: (ingest as Record<string, unknown>) ?? {} };
}

const int = (v: unknown, what: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n)) throw userError('invalid_option', `${what} must be an integer, got "${String(v)}"`);
  return n;
};

/** `--rate-limit N`: N events/s per write key, with a burst of two seconds' worth. */
function rateLimitOf(v: unknown, what = '--rate-limit'): { eventsPerSecond: number; burst: number } {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw userError('invalid_option', `${what} must be a number of events per second > 0, got "${String(v)}"`);
  return { eventsPerSecond: n, burst: Math.max(1, Math.ceil(2 * n)) };
}

/** The flag of each setting (`--flush-interval`), for messages about a value that came from it. */
const FLAG: Record<SettingName, string> = {
  port: '--port',
  host: '--host',
  data: '--data',
  lake: '--lake',
  s3Endpoint: '--s3-endpoint',
  shards: '--shards',
  workers: '--workers',
  writeKeys: '--write-key',
  readKeys: '--read-key',
  adminKeys: '--admin-key',
  flushInterval: '--flush-interval',
  allowedLateness: '--allowed-lateness',
  sessionGap: '--session-gap',
  dedupTtl: '--dedup-ttl',
  targetFileSize: '--target-file-size',
  compression: '--compression',
  workerNice: '--worker-nice',
  rangeLinger: '--range-linger',
  engineMode: '--engine-mode',
  maxMemory: '--max-memory',
  maxBacklog: '--max-backlog',
  maxLag: '--max-lag',
  rateLimit: '--rate-limit',
  log: '--log',
  role: '--role',
};

/** The engine option each setting becomes, so the engine validator's messages can name what the user set. */
const ENGINE_OPTION: Partial<Record<string, SettingName>> = {
  shards: 'shards',
  workers: 'workers',
  flushIntervalMs: 'flushInterval',
  allowedLatenessMs: 'allowedLateness',
  sessionGapMs: 'sessionGap',
  dedupTtlMs: 'dedupTtl',
  targetFileBytes: 'targetFileSize',
  compression: 'compression',
  workerNice: 'workerNice',
  rangeLingerMs: 'rangeLinger',
};

/** flags > environment > config file > defaults. */
export function composeServeConfig(flags: RawSettings & { config?: string }, env: NodeJS.ProcessEnv = process.env): ServeConfig {
  const configPath = flags.config ?? env.SLUICE_CONFIG;
  const file = fromFile(configPath);
  const envSettings = fromEnv(env);
  const pick = <K extends SettingName>(k: K): RawSettings[K] => flags[k] ?? envSettings[k] ?? file.settings[k];
  const has = (k: SettingName): boolean => pick(k) !== undefined;
  /** Where a setting's value came from, as the user wrote it: `--flush-interval`, `SLUICE_FLUSH_INTERVAL`, `"flushInterval" in config file c.json`. */
  const source = (k: SettingName): string => {
    if (flags[k] !== undefined) return FLAG[k];
    if (envSettings[k] !== undefined) return ENV[k].find((v) => env[v] !== undefined && env[v] !== '') ?? ENV[k][0]!;
    if (file.settings[k] !== undefined) return `"${k}" in config file ${configPath}`;
    return FLAG[k];
  };
  const duration = (k: SettingName): number => parseDuration(String(pick(k)), source(k));
  const bytes = (k: SettingName): number => parseBytes(String(pick(k)), source(k));
  const maxMemoryBytes = has('maxMemory') ? bytes('maxMemory') : typeof file.ingest.maxMemoryBytes === 'number' ? file.ingest.maxMemoryBytes : defaultIngestOptions().maxMemoryBytes;
  const dataDir = has('data') ? String(pick('data')) : defaultEngineOptions().dataDir;
  // Before anything reads or creates them: a bad lake URL or a --data that is a file is the user's typo.
  checkDataDir(dataDir, source('data'));
  if (has('lake')) localLakePath(String(pick('lake')), source('lake'));
  for (const k of ['readKeys', 'writeKeys', 'adminKeys'] as const) checkKeys(pick(k), source(k), k === 'readKeys' ? 8 : 1);
  const sized = namingSettings(source, () =>
    validateEngineOptions({
      dataDir,
      lake: has('lake') ? String(pick('lake')) : undefined,
      s3Endpoint: has('s3Endpoint') ? String(pick('s3Endpoint')) : undefined,
      // Fixed for the life of a data directory: what it recorded at its first start (engine/data-layout).
      shards: resolveShards(dataDir, has('shards') ? int(pick('shards'), source('shards')) : undefined, defaultEngineOptions().shards),
      workers: has('workers') ? int(pick('workers'), source('workers')) : undefined,
      flushIntervalMs: has('flushInterval') ? duration('flushInterval') : undefined,
      allowedLatenessMs: has('allowedLateness') ? duration('allowedLateness') : undefined,
      sessionGapMs: has('sessionGap') ? duration('sessionGap') : undefined,
      dedupTtlMs: has('dedupTtl') ? duration('dedupTtl') : undefined,
      targetFileBytes: has('targetFileSize') ? bytes('targetFileSize') : undefined,
      compression: has('compression') ? (String(pick('compression')) as EngineOptions['compression']) : undefined,
      workerNice: has('workerNice') ? int(pick('workerNice'), source('workerNice')) : undefined,
      rangeLingerMs: has('rangeLinger') ? duration('rangeLinger') : undefined,
    }),
    (k) => (has(k) ? String(pick(k)) : undefined),
  );
  // The engine's per-shard bounds (rows held until a checkpoint, dedup hot table, Parquet encode chunk
  // and call sizes) follow the memory budget (0 = no budget: the defaults; engineMemoryLimits).
  const engine = maxMemoryBytes > 0 ? namingSettings(source, () => validateEngineOptions({ ...sized, ...engineMemoryLimits(maxMemoryBytes, sized.shards, sized.targetFileBytes) }), () => undefined) : sized;
  const port = has('port') ? int(pick('port'), source('port')) : 8080;
  if (port < 0 || port > 65535) throw userError('invalid_option', `${source('port')} must be in 0..65535, got ${port}`);
  const keys = pick('writeKeys');
  const readKeys = pick('readKeys');
  const adminKeys = pick('adminKeys');
  const natsLog = has('log') ? parseNatsLog(String(pick('log'))) : undefined;
  const logServers = natsLog?.servers;
  const engineMode = has('engineMode') ? String(pick('engineMode')) : logServers !== undefined ? 'inline' : 'process';
  if (engineMode !== 'process' && engineMode !== 'inline') throw userError('invalid_option', `--engine-mode must be process or inline, got "${engineMode}"`);
  if (logServers !== undefined && engineMode !== 'inline') {
    throw userError('invalid_option', '--log nats://… runs the engine inline for now; drop --engine-mode process (or use --engine-mode inline)');
  }
  const role = has('role') ? String(pick('role')) : 'all';
  if (role !== 'all' && role !== 'ingest') throw userError('invalid_option', `--role must be all or ingest, got "${role}"`);
  if (role === 'ingest' && logServers === undefined) {
    throw userError('invalid_option', '--role ingest needs a shared log: add --log nats://host:4222[,…] (an ingest node keeps no local log; engines consume the stream)');
  }
  return {
    role,
    ...(natsLog !== undefined ? { logServers: natsLog.servers, ...(natsLog.replicas !== undefined ? { logReplicas: natsLog.replicas } : {}) } : {}),
    engineMode,
    host: has('host') ? String(pick('host')) : '127.0.0.1',
    port,
    writeKeys: Array.isArray(keys) ? keys : keys === undefined ? [] : [String(keys)],
    readKeys: Array.isArray(readKeys) ? readKeys : readKeys === undefined ? [] : [String(readKeys)],
    adminKeys: Array.isArray(adminKeys) ? adminKeys : adminKeys === undefined ? [] : [String(adminKeys)],
    engine,
    ingest: checkedIngest(
      {
        ...file.ingest,
        ...(has('maxMemory') ? { maxMemoryBytes } : {}),
        ...(has('maxBacklog') ? { maxBacklogBytes: bytes('maxBacklog') } : {}),
        ...(has('maxLag') ? { maxLagMs: duration('maxLag') } : {}),
        ...(has('rateLimit') ? { rateLimit: rateLimitOf(pick('rateLimit'), source('rateLimit')) } : {}),
      },
      configPath,
    ),
  };
}

/**
 * The ingest settings (mostly the config file's `ingest` object), checked now — before serve
 * creates its data directory or starts its engine, which is where a bad one used to be refused —
 * with a stand-in write key (the real keys are checked with them at the start; one may still be
 * generated).
 */
function checkedIngest(ingest: ServeConfig['ingest'], configPath: string | undefined): ServeConfig['ingest'] {
  try {
    validateIngestOptions({ ...(ingest as IngestOptionsInput), writeKeys: [{ key: '\u0000stand-in write key' }] });
  } catch (err) {
    if (!(err instanceof SluiceError) || err.domain !== 'user') throw err;
    throw userError(err.code, `${configPath === undefined ? 'ingest settings' : `"ingest" in config file ${configPath}`}: ${err.message}`, err);
  }
  return ingest;
}

/**
 * Runs an engine-options validation and, when it rejects an option that a setting produced
 * (`flushIntervalMs must be at least 50 ms, got 10`), names the setting as the user gave it
 * instead: `--flush-interval must be at least 50 ms, got "10ms"`.
 */
function namingSettings<T>(source: (k: SettingName) => string, validate: () => T, raw: (k: SettingName) => string | undefined): T {
  try {
    return validate();
  } catch (err) {
    if (!(err instanceof SluiceError) || err.domain !== 'user') throw err;
    const m = /^(\w+) (must .*?)(, got .*)?$/s.exec(err.message);
    const setting = m === null ? undefined : ENGINE_OPTION[m[1]!];
    if (m === null || setting === undefined) throw err;
    const given = raw(setting);
    throw userError(err.code, `${source(setting)} ${m[2]}${given !== undefined ? `, got ${JSON.stringify(given)}` : (m[3] ?? '')}`, err);
  }
}

/** Keys from flags, the environment or the config file: non-empty strings of at least `min` characters. */
function checkKeys(keys: unknown, what: string, min: number): void {
  if (keys === undefined) return;
  for (const k of Array.isArray(keys) ? keys : [keys]) {
    if (typeof k !== 'string' || k.length < min) {
      throw userError('invalid_option', min > 1 ? `${what} must be a key of at least ${min} characters, got ${JSON.stringify(k)}` : `${what} must be a non-empty key, got ${JSON.stringify(k)}`);
    }
  }
}
