/**
 * Alert rules of the dashboard, evaluated once per tick over the trailing rate window:
 *
 *   invalid_rate    rejected / (acknowledged + rejected)        > thresholds.invalidRate (1 %)
 *   late_rate       late at arrival / acknowledged               > thresholds.lateRate (5 %)
 *   duplicate_rate  duplicates / processed                       > thresholds.duplicateRate
 *   too_late_rate   too late / processed                         > thresholds.tooLateRate
 *   anomaly         acknowledged events/s more than k robust deviations from the same UTC hour
 *                   of previous days (median, 1.4826 · MAD), once anomalyMinDays days are known
 *
 * A rate is judged only over at least `minEvents` events. {@link evaluateAlerts} is pure;
 * {@link AlertBoard} keeps the episodes (firing since when) and reports transitions, so the log
 * gets one line when an alert fires and one when it resolves, not one per tick.
 */
import type { AlertThresholds } from './options.js';

export type AlertName = 'invalid_rate' | 'late_rate' | 'duplicate_rate' | 'too_late_rate' | 'anomaly';
export const ALERT_NAMES: readonly AlertName[] = ['invalid_rate', 'late_rate', 'duplicate_rate', 'too_late_rate', 'anomaly'];

/** Sums over the trailing rate window (events), and the anomaly rule's inputs. */
export interface AlertInputs {
  acked: number;
  rejected: number;
  late: number;
  processed: number;
  duplicates: number;
  tooLate: number;
  /** Acknowledged events/s over the window. */
  ackedPerSecond: number;
  /** The same UTC hour's events/s on previous days (any order). */
  sameHourHistory: readonly number[];
}

export interface AlertState {
  name: AlertName;
  firing: boolean;
  /** The measured value (a share, or robust deviations for `anomaly`); null when not judged (too few events or days). */
  value: number | null;
  threshold: number;
  message: string;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * |x − median| in robust deviations: 1.4826 · MAD estimates σ for normal data. The scale has a
 * floor of 5 % of the median (and 0.01 events/s) so a perfectly flat history does not turn any
 * wobble into an infinite deviation.
 */
export function robustDeviations(x: number, history: readonly number[]): number {
  const med = median(history);
  const mad = median(history.map((h) => Math.abs(h - med)));
  const scale = Math.max(1.4826 * mad, 0.05 * Math.abs(med), 0.01);
  return Math.abs(x - med) / scale;
}

const pct = (x: number): string => `${(x * 100).toFixed(x < 0.1 ? 2 : 1)} %`;

/** Evaluates every rule (pure). */
export function evaluateAlerts(i: AlertInputs, t: AlertThresholds): AlertState[] {
  const share = (name: AlertName, part: number, whole: number, threshold: number, what: string): AlertState => {
    if (whole < t.minEvents) return { name, firing: false, value: null, threshold, message: `${what}: fewer than ${t.minEvents} events in the window` };
    const v = part / whole;
    return { name, firing: v > threshold, value: v, threshold, message: `${what} ${pct(v)} (${part} of ${whole}; threshold ${pct(threshold)})` };
  };
  const out = [
    share('invalid_rate', i.rejected, i.acked + i.rejected, t.invalidRate, 'invalid events'),
    share('late_rate', i.late, i.acked, t.lateRate, 'late events'),
    share('duplicate_rate', i.duplicates, i.processed, t.duplicateRate, 'duplicates'),
    share('too_late_rate', i.tooLate, i.processed, t.tooLateRate, 'too-late events'),
  ];
  if (i.sameHourHistory.length < t.anomalyMinDays) {
    out.push({ name: 'anomaly', firing: false, value: null, threshold: t.anomalyDeviations, message: `event rate: ${i.sameHourHistory.length} of ${t.anomalyMinDays} previous days known for this hour` });
  } else {
    const dev = robustDeviations(i.ackedPerSecond, i.sameHourHistory);
    const med = median(i.sameHourHistory);
    out.push({
      name: 'anomaly',
      firing: dev > t.anomalyDeviations,
      value: dev,
      threshold: t.anomalyDeviations,
      message: `event rate ${i.ackedPerSecond.toFixed(1)}/s vs ${med.toFixed(1)}/s usual at this hour (${dev.toFixed(1)} robust deviations; threshold ${t.anomalyDeviations})`,
    });
  }
  return out;
}

/** One alert while it fires. */
export interface FiringAlert extends AlertState {
  /** Epoch ms it started firing. */
  since: number;
}

/** Firing episodes across ticks. */
export class AlertBoard {
  private readonly since = new Map<AlertName, number>();

  /** Applies one evaluation; returns the alerts that started and stopped firing now. */
  update(states: readonly AlertState[], nowMs: number): { fired: AlertState[]; resolved: AlertState[] } {
    const fired: AlertState[] = [];
    const resolved: AlertState[] = [];
    for (const s of states) {
      const was = this.since.has(s.name);
      if (s.firing && !was) {
        this.since.set(s.name, nowMs);
        fired.push(s);
      } else if (!s.firing && was) {
        this.since.delete(s.name);
        resolved.push(s);
      }
    }
    return { fired, resolved };
  }

  /** The firing alerts of `states` with their start times. */
  firing(states: readonly AlertState[]): FiringAlert[] {
    return states.filter((s) => s.firing).map((s) => ({ ...s, since: this.since.get(s.name) ?? 0 }));
  }
}
