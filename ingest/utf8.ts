/**
 * UTF-8 checks for bytes ingest stores verbatim (request bodies' raw/properties ranges, Arrow
 * Utf8 columns). Parquet refuses invalid UTF-8 in string columns, so an invalid byte that
 * reached the log would fail every later flush of its shard (a poison pill): it is found here,
 * before the ack, and the event is rejected with `invalid_utf8` (docs/VALIDATION.md). Its DLQ
 * `raw` is the bytes decoded with U+FFFD for each invalid sequence (valid UTF-8 by construction).
 *
 * `isUtf8` (node:buffer) is simdutf: ~10 GB/s, so the common all-valid case costs one pass.
 */
import { isUtf8 } from 'node:buffer';

/** True when `b[start, end)` is valid UTF-8. */
export function utf8Valid(b: Uint8Array, start = 0, end = b.length): boolean {
  return isUtf8(start === 0 && end === b.length ? b : b.subarray(start, end));
}

/** `b[start, end)` decoded, each invalid sequence replaced by U+FFFD (for dead letters). */
export function utf8Repaired(b: Uint8Array, start = 0, end = b.length): string {
  return Buffer.from(b.buffer, b.byteOffset + start, end - start).toString('utf8');
}

/** A UTF-8 continuation byte (10xxxxxx): no value may start with one. */
const continuation = (c: number): boolean => (c & 0xc0) === 0x80;

/**
 * Which values of a Utf8 column (Int32 `offsets`, `n` values, `data` bytes) are invalid UTF-8:
 * undefined when all are valid, else a 0/1 flag per value. One isUtf8 pass over the data plus a
 * look at each value's first byte (a valid concatenation may still split a character between
 * two values); per-value checks only when something is wrong.
 */
export function invalidUtf8Values(offsets: Int32Array, data: Uint8Array, n: number): Uint8Array | undefined {
  if (n === 0) return undefined;
  const first = offsets[0]!;
  const last = offsets[n]!;
  let ok = isUtf8(data.subarray(first, last));
  if (ok) {
    for (let i = 1; i < n; i++) {
      const at = offsets[i]!;
      if (at < last && continuation(data[at]!)) {
        ok = false;
        break;
      }
    }
  }
  if (ok) return undefined;
  const bad = new Uint8Array(n);
  for (let i = 0; i < n; i++) if (!isUtf8(data.subarray(offsets[i]!, offsets[i + 1]!))) bad[i] = 1;
  return bad;
}
