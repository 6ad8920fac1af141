/**
 * The watermark kernel: which rows are too late, and how far event time has advanced.
 *
 * A row is too late when its event time is behind the frontier (the watermark up to which
 * windows and sessions were already emitted): a window or session it belongs to may be out
 * already, so it cannot be counted exactly in the stream. It goes to the late side output (and
 * still to silver, without a session) and reconciliation folds it into gold later. Rows at or
 * after the frontier are never too late, so any arrival order within the allowed lateness gives
 * the same results (sessions closed at the frontier end at least a gap before any such row).
 */

/**
 * For each row index `rows[j]`, sets `tooLate[j]` to 1 when the row's event time is before
 * `frontierMs`, else 0. Returns the largest event time among the rows (−Infinity for none).
 */
export function markTooLate(times: Float64Array, rows: Int32Array, frontierMs: number, tooLate: Uint8Array): number {
  let max = -Infinity;
  for (let j = 0; j < rows.length; j++) {
    const t = times[rows[j]!]!;
    if (t > max) max = t;
    tooLate[j] = t < frontierMs ? 1 : 0;
  }
  return max;
}

/**
 * markTooLate over rows that are several log records concatenated: `rows` (ascending row
 * indices) falls into records ending at `recordEnds` (ascending row indices, the last one past
 * every row). Each record's rows are marked against the frontier as it stood before that record
 * — the frontier after each record follows the local watermark, max event time so far −
 * `latenessMs`, as it does when every record is processed on its own and the watermark advanced
 * after it — so a range of records gives the marks its records give one at a time. Returns the
 * largest event time among the rows and the frontier after the last record.
 */
export function markTooLateByRecord(
  times: Float64Array,
  rows: Int32Array,
  recordEnds: Int32Array,
  frontierMs: number,
  maxEventTimeMs: number,
  latenessMs: number,
  tooLate: Uint8Array,
): { maxEventTimeMs: number; frontierMs: number } {
  let frontier = frontierMs;
  let max = maxEventTimeMs;
  let j = 0;
  for (let r = 0; r < recordEnds.length; r++) {
    const end = recordEnds[r]!;
    for (; j < rows.length && rows[j]! < end; j++) {
      const t = times[rows[j]!]!;
      if (t > max) max = t;
      tooLate[j] = t < frontier ? 1 : 0;
    }
    if (max - latenessMs > frontier) frontier = max - latenessMs;
  }
  return { maxEventTimeMs: max, frontierMs: frontier };
}
