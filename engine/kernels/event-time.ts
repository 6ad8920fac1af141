/**
 * The watermark kernel: which rows are too late, and how far event time has advanced.
 *
 * A row is too late when its tumbling window [start, start + windowMs) ended at or before the
 * frontier (the watermark up to which windows were already emitted): its window's result is out,
 * so the row goes to the late side output (and still to silver).
 */

/**
 * For each row index `rows[j]`, sets `tooLate[j]` to 1 when the row's window ended at or before
 * `frontierMs`, else 0. Returns the largest event time among the rows (−Infinity for none).
 */
export function markTooLate(times: Float64Array, rows: Int32Array, frontierMs: number, windowMs: number, tooLate: Uint8Array): number {
  let max = -Infinity;
  for (let j = 0; j < rows.length; j++) {
    const t = times[rows[j]!]!;
    if (t > max) max = t;
    tooLate[j] = t - (((t % windowMs) + windowMs) % windowMs) + windowMs <= frontierMs ? 1 : 0;
  }
  return max;
}
