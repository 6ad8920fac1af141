/**
 * Acknowledged events/s per UTC hour of previous days, for the anomaly rule ("more than k
 * robust deviations from the same hour of previous days"). Bounded: {@link MAX_DAYS} days × 24
 * hours. Kept across restarts in a small JSON file when one is configured
 * (`{"days": {"2026-12-01": [rate or null × 24]}}`).
 */
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';

export const MAX_DAYS = 28;
const HOUR = 3_600_000;
const DAY = 86_400_000;

const dayKey = (ms: number): string => new Date(ms - (ms % DAY)).toISOString().slice(0, 10);

export class HourlyHistory {
  private readonly days = new Map<string, Array<number | null>>();

  /** Records the rate (events/s) of the hour starting at `hourStartMs`. */
  record(hourStartMs: number, perSecond: number): void {
    const key = dayKey(hourStartMs);
    let hours = this.days.get(key);
    if (!hours) this.days.set(key, (hours = new Array<number | null>(24).fill(null)));
    hours[Math.floor((hourStartMs % DAY) / HOUR)] = perSecond;
    if (this.days.size > MAX_DAYS) {
      const keys = [...this.days.keys()].sort();
      for (const k of keys.slice(0, keys.length - MAX_DAYS)) this.days.delete(k);
    }
  }

  /** Rates of the same UTC hour as `nowMs` on the days before it (those known). */
  sameHour(nowMs: number): number[] {
    const today = dayKey(nowMs);
    const h = Math.floor((nowMs % DAY) / HOUR);
    const out: number[] = [];
    for (const [k, hours] of this.days) if (k < today && hours[h] !== null && hours[h] !== undefined) out.push(hours[h]!);
    return out;
  }

  toJSON(): { days: Record<string, Array<number | null>> } {
    return { days: Object.fromEntries(this.days) };
  }

  /** Reads `path`; a missing or unreadable file is an empty history (returned with the reason). */
  static load(path: string | undefined): { history: HourlyHistory; problem?: string } {
    const history = new HourlyHistory();
    if (path === undefined) return { history };
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch {
      return { history };
    }
    try {
      const parsed = JSON.parse(text) as { days?: Record<string, unknown> };
      for (const [k, hours] of Object.entries(parsed.days ?? {})) {
        if (!/^\d{4}-\d{2}-\d{2}$/.test(k) || !Array.isArray(hours) || hours.length !== 24) continue;
        history.days.set(k, hours.map((x) => (typeof x === 'number' && Number.isFinite(x) && x >= 0 ? x : null)));
      }
      return { history };
    } catch (err) {
      return { history, problem: `dashboard history ${path} is not valid JSON (${(err as Error).message}); starting empty` };
    }
  }

  save(path: string): Promise<void> {
    return writeFile(path, JSON.stringify(this.toJSON()));
  }
}
