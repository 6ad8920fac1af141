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
