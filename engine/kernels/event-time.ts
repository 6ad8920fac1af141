/**
 * The watermark kernel: which rows are too late, and how far event time has advanced.
 *
 * A row is too late when its event time is behind the frontier (the watermark up to which
 * windows and sessions were already emitted): a window or session it belongs to may be out
 * already, so it cannot be counted exactly in the stream. It goes to the late side output (and
 * still to silver, without a session) and reconciliation folds it into gold later. Rows at or
 * after the frontier are never too late, so any arrival order within the allowed lateness gives
 * the same results (sessions closed at the frontier end at least a gap before any such row).
 *
 * Event time advances the watermark only as far as the row's arrival (`received_at`): a phone
 * whose clock runs ahead (up to the skew ingest allows, without a `sentAt` to correct it) would
 * otherwise move its shard's watermark — and, once all are idle, every shard's — past what the
 * server has received, and make everyone's on-time events too late. Such a row keeps its event
 * time; it only does not drive the watermark beyond now.
 */

/** The time row `i` advances the watermark to: its event time, at most its arrival time. */
const advanceOf = (times: Float64Array, received: Float64Array | undefined, i: number): number => {
  const t = times[i]!;
  const r = received === undefined ? t : received[i]!;
  return r < t ? r : t;
};

/**
 * For each row index `rows[j]`, sets `tooLate[j]` to 1 when the row's event time is before
 * `frontierMs`, else 0. Returns the largest event time among the rows, each capped at its
 * `received` time when given (−Infinity for none).
 */
export function markTooLate(times: Float64Array, rows: Int32Array, frontierMs: number, tooLate: Uint8Array, received?: Float64Array): number {
  let max = -Infinity;
  for (let j = 0; j < rows.length; j++) {
    const i = rows[j]!;
    const w = advanceOf(times, received, i);
    if (w > max) max = w;
    tooLate[j] = times[i]! < frontierMs ? 1 : 0;
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
 * largest event time among the rows (capped at `received`, as in markTooLate) and the frontier
 * after the last record.
 */
export function markTooLateByRecord(
  times: Float64Array,
  rows: Int32Array,
  recordEnds: Int32Array,
  frontierMs: number,
  maxEventTimeMs: number,
  latenessMs: number,
  tooLate: Uint8Array,
  received?: Float64Array,
): { maxEventTimeMs: number; frontierMs: number } {
  let frontier = frontierMs;
  let max = maxEventTimeMs;
  let j = 0;
  for (let r = 0; r < recordEnds.length; r++) {
    const end = recordEnds[r]!;
    for (; j < rows.length && rows[j]! < end; j++) {
      const i = rows[j]!;
      const w = advanceOf(times, received, i);
      if (w > max) max = w;
      tooLate[j] = times[i]! < frontier ? 1 : 0;
    }
    if (max - latenessMs > frontier) frontier = max - latenessMs;
  }
  return { maxEventTimeMs: max, frontierMs: frontier };
}
