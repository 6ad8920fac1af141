/**
 * Options of the live dashboard (`GET /dashboard` and its WebSocket push stream), defaults and
 * validator. They sit in the ingest options' `dashboard` object (config file `ingest.dashboard`);
 * the read key also has a flag and an environment variable (cli/config.ts).
 */
import { userError } from '../../common/errors.js';

export interface AlertThresholds {
  /** Share of late events (received more than `lateAfterMs` after their event time) above which the `late_rate` alert fires. Default 0.05. */
  lateRate: number;
  /** Share of rejected events (invalid, sent to the DLQ) among all received above which the `invalid_rate` alert fires. Default 0.01. */
  invalidRate: number;
  /** Share of duplicates among processed events above which `duplicate_rate` fires. Default 0.05. */
  duplicateRate: number;
  /** Share of too-late events among processed events above which `too_late_rate` fires. Default 0.01. */
  tooLateRate: number;
  /**
   * `anomaly`: the current hour's event rate is more than this many robust deviations
   * (1.4826 · median absolute deviation) from the median of the same hour on previous days. Default 4.
   */
  anomalyDeviations: number;
  /** Previous days needed before the anomaly rule says anything. Default 3. */
  anomalyMinDays: number;
  /** Rates are not judged on fewer events than this in the rate window (a handful of events is not a rate). Default 50. */
  minEvents: number;
}

export interface DashboardOptions {
  /**
   * Keys that may read the dashboard and its stream (never write keys). Empty: the dashboard is
   * off (its routes answer 404). `sluice serve` generates one into DATA/read-key when none is set.
   */
  readKeys: string[];
  /** Push period of the stream, ms. Default 1000. */
  tickMs: number;
  /** Events kept in the live tail (ring buffer, after PII masking). Default 200. */
  tailSize: number;
  /** At most this many accepted events per second are sampled into the tail (the rest are skipped with one comparison). Default 20. */
  tailPerSecond: number;
  /** Rows in each breakdown table (device type, app version, country). Default 8. */
  topN: number;
  /** Distinct values counted per dimension and window before the rest go to "(other)". Default 1000. */
  maxDimensionValues: number;
  /** An event received more than this many ms after its event time counts as late. Default 60 s. */
  lateAfterMs: number;
  /** Quality rates are over this trailing window, seconds. Default 60. */
  rateWindowSeconds: number;
  /** A dashboard connection with more than this many bytes unsent is disconnected (it stopped reading). Default 1 MiB. */
  maxBackpressureBytes: number;
  /** Open dashboard connections at most; more are refused with 503. Default 200. */
  maxClients: number;
  /** Origins (scheme://host[:port]) allowed besides the server's own to fetch the dashboard's JSON and open its stream. Default none. */
  allowedOrigins: string[];
  thresholds: AlertThresholds;
  /** Hourly event counts of previous days for the anomaly rule, kept across restarts in this JSON file (none: in memory only). */
  historyFile?: string;
  /** Event types counted as installs, screen views, notification views / opens: the engine's mapping (engine options `metricEventTypes`) over its defaults. */
  metricEventTypes?: Partial<Record<'installs' | 'screen_views' | 'notification_views' | 'notification_opens', string[]>>;
}

export function defaultDashboardOptions(): DashboardOptions {
  return {
    readKeys: [],
    tickMs: 1000,
    tailSize: 200,
    tailPerSecond: 20,
    topN: 8,
    maxDimensionValues: 1000,
    lateAfterMs: 60_000,
    rateWindowSeconds: 60,
    maxBackpressureBytes: 1024 * 1024,
    maxClients: 200,
    allowedOrigins: [],
    thresholds: { lateRate: 0.05, invalidRate: 0.01, duplicateRate: 0.05, tooLateRate: 0.01, anomalyDeviations: 4, anomalyMinDays: 3, minEvents: 50 },
  };
}

export type DashboardOptionsInput = Partial<Omit<DashboardOptions, 'thresholds'>> & { thresholds?: Partial<AlertThresholds> };

/** Fills defaults and checks every option; throws a user error naming the option. */
export function validateDashboardOptions(input: DashboardOptionsInput | undefined): DashboardOptions {
  const d = defaultDashboardOptions();
  const given = Object.fromEntries(Object.entries(input ?? {}).filter(([, v]) => v !== undefined)) as DashboardOptionsInput;
  const known = new Set([...Object.keys(d), 'historyFile', 'metricEventTypes']);
  for (const k of Object.keys(given)) if (!known.has(k)) throw userError('invalid_option', `unknown dashboard option "${k}" (known: ${[...known].join(', ')})`);
  const o: DashboardOptions = { ...d, ...(given as Partial<DashboardOptions>), thresholds: { ...d.thresholds, ...given.thresholds } };
  const int = (name: string, v: unknown, min: number, max: number): void => {
    if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) throw userError('invalid_option', `dashboard.${name} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  };
  const share = (name: string, v: unknown): void => {
    if (typeof v !== 'number' || !(v > 0 && v <= 1)) throw userError('invalid_option', `dashboard.thresholds.${name} must be a share in (0, 1], e.g. 0.05 for 5 %, got ${JSON.stringify(v)}`);
  };
  if (!Array.isArray(o.readKeys) || o.readKeys.some((k) => typeof k !== 'string' || k.length < 8)) {
    throw userError('invalid_option', 'dashboard.readKeys must be a list of keys of at least 8 characters');
  }
  int('tickMs', o.tickMs, 10, 60_000);
  int('tailSize', o.tailSize, 1, 10_000);
  int('tailPerSecond', o.tailPerSecond, 1, 10_000);
  int('topN', o.topN, 1, 100);
  int('maxDimensionValues', o.maxDimensionValues, 10, 100_000);
  int('lateAfterMs', o.lateAfterMs, 0, 7 * 86_400_000);
  int('rateWindowSeconds', o.rateWindowSeconds, 1, 900);
  int('maxBackpressureBytes', o.maxBackpressureBytes, 1024, 1024 * 1024 * 1024);
  int('maxClients', o.maxClients, 1, 100_000);
  if (!Array.isArray(o.allowedOrigins) || o.allowedOrigins.some((x) => typeof x !== 'string' || !/^https?:\/\/[^/\s]+$/.test(x))) {
    throw userError('invalid_option', `dashboard.allowedOrigins must be origins such as "https://grafana.example.com" (no path), got ${JSON.stringify(o.allowedOrigins)}`);
  }
  share('lateRate', o.thresholds.lateRate);
  share('invalidRate', o.thresholds.invalidRate);
  share('duplicateRate', o.thresholds.duplicateRate);
  share('tooLateRate', o.thresholds.tooLateRate);
  if (typeof o.thresholds.anomalyDeviations !== 'number' || !(o.thresholds.anomalyDeviations > 0)) {
    throw userError('invalid_option', `dashboard.thresholds.anomalyDeviations must be a number > 0, got ${JSON.stringify(o.thresholds.anomalyDeviations)}`);
  }
  int('thresholds.anomalyMinDays', o.thresholds.anomalyMinDays, 1, 60);
  int('thresholds.minEvents', o.thresholds.minEvents, 1, 1_000_000);
  if (o.historyFile !== undefined && (typeof o.historyFile !== 'string' || o.historyFile === '')) throw userError('invalid_option', 'dashboard.historyFile must be a file path');
  return o;
}
