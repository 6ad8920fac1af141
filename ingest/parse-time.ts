/**
 * Strict, allocation-free timestamp parsing for ingest. `Date.parse` is both slow on the hot path
 * and lenient (it reads "2024-01-02 10:00" as local time and accepts prose like "Tue, 1 Jan").
 *
 * Accepted: a finite number (epoch milliseconds; a fraction is dropped: floored), or an ISO-8601 string
 *   YYYY-MM-DD[(T|' ')hh:mm[:ss[.fraction]]][Z|±hh:mm|±hhmm|±hh]
 * A string without an offset is UTC. Fractions beyond milliseconds are truncated.
 * Everything else is NaN.
 */

const d = (s: string, i: number): number => {
  const c = s.charCodeAt(i) - 48;
  return c >= 0 && c <= 9 ? c : -1000; // a negative sum marks "not a digit"
};
const two = (s: string, i: number): number => d(s, i) * 10 + d(s, i + 1);

const DAYS = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Epoch ms of a timestamp (see module doc), or NaN. */
export function parseTime(v: unknown): number {
  // Floored, as ISO fractions beyond milliseconds are truncated: …123.7 is …123, like ".123789".
  if (typeof v === 'number') return Number.isFinite(v) ? Math.floor(v) : NaN;
  if (typeof v !== 'string') return NaN;
  return parseIso(v);
}

export function parseIso(s: string): number {
  const n = s.length;
  if (n < 10 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45) return NaN;
  const year = d(s, 0) * 1000 + d(s, 1) * 100 + two(s, 2);
  const month = two(s, 5);
  const day = two(s, 8);
  if (year < 0 || month < 1 || month > 12 || day < 1 || day > DAYS[month - 1]!) return NaN;
  if (month === 2 && day === 29 && !(year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0))) return NaN;
  let ms = 0;
  let i = 10;
  if (i < n) {
    const sep = s.charCodeAt(i);
    if (sep !== 84 && sep !== 32 && sep !== 116) return NaN; // 'T', ' ', 't'
    if (n < i + 6 || s.charCodeAt(i + 3) !== 58) return NaN;
    const hh = two(s, i + 1);
    const mm = two(s, i + 4);
    if (hh < 0 || hh > 23 || mm < 0 || mm > 59) return NaN;
    ms = hh * 3_600_000 + mm * 60_000;
    i += 6;
    if (i < n && s.charCodeAt(i) === 58) {
      const ss = two(s, i + 1);
      if (ss < 0 || ss > 60) return NaN; // 60: a leap second, folded into the next minute
      ms += ss * 1000;
      i += 3;
      if (i < n && (s.charCodeAt(i) === 46 || s.charCodeAt(i) === 44)) {
        i++;
        let scale = 100;
        const start = i;
        while (i < n) {
          const c = d(s, i);
          if (c < 0) break;
          ms += c * scale;
          scale /= 10;
          i++;
        }
        if (i === start) return NaN;
        ms = Math.floor(ms);
      }
    }
    if (i < n) {
      const z = s.charCodeAt(i);
      if (z === 90 || z === 122) i++; // 'Z'
      else if (z === 43 || z === 45) {
        const sign = z === 43 ? 1 : -1;
        const oh = two(s, i + 1);
        let om = 0;
        i += 3;
        if (i < n && s.charCodeAt(i) === 58) i++;
        if (i < n) {
          om = two(s, i);
          i += 2;
        }
        if (oh < 0 || oh > 23 || om < 0 || om > 59) return NaN;
        ms -= sign * (oh * 3_600_000 + om * 60_000);
      } else return NaN;
    }
    if (i !== n) return NaN;
  }
  return daysFromCivil(year, month, day) * 86_400_000 + ms;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
function daysFromCivil(y: number, m: number, d: number): number {
  y -= m <= 2 ? 1 : 0;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}
