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

const BACKSLASH = 0x5c;
const hex = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : (c | 0x20) >= 0x61 && (c | 0x20) <= 0x66 ? (c | 0x20) - 0x57 : -1);
/** The code unit of a `\uXXXX` escape whose backslash is at `at`, or −1. */
function escapeAt(b: Uint8Array, at: number, end: number): number {
  if (at + 6 > end || b[at] !== BACKSLASH || b[at + 1] !== 0x75) return -1;
  let v = 0;
  for (let k = 2; k < 6; k++) {
    const h = hex(b[at + k]!);
    if (h < 0) return -1;
    v = (v << 4) | h;
  }
  return v;
}

/** The reject message for a lone surrogate escape (code `invalid_utf8`). */
export const LONE_SURROGATE =
  'the event escapes a lone UTF-16 surrogate (such as "\\ud83d": text cut inside a character, an emoji); that is not Unicode text, and DuckDB refuses it in JSON — send whole characters';

/**
 * Where JSON text `b[start, end)` escapes a lone UTF-16 surrogate (`"\ud83d"`: a high surrogate
 * without its low half, or a low one alone), or −1. Such text is valid UTF-8 and valid to
 * JSON.parse, but not Unicode: DuckDB's JSON functions refuse it ("no low surrogate in string"),
 * so one such `properties` made every `properties->>'$.x'` query over the lake fail, and a string
 * field holding one was written with U+FFFD in its place. JavaScript writes it for a string cut
 * inside an emoji (`"😀".slice(0, 1)`). Escaped backslashes (`\\ud83d`) are not escapes.
 */
export function loneSurrogateEscape(b: Uint8Array, start = 0, end = b.length): number {
  for (let i = start; i < end; i++) {
    if (b[i] !== BACKSLASH) continue;
    const v = escapeAt(b, i, end);
    if (v < 0) {
      i++; // `\\`, `\"`, `\n`, …: the escaped character is not a backslash that starts an escape
      continue;
    }
    if (v >= 0xd800 && v <= 0xdbff) {
      const low = escapeAt(b, i + 6, end);
      if (low < 0xdc00 || low > 0xdfff) return i;
      i += 11;
    } else if (v >= 0xdc00 && v <= 0xdfff) return i;
    else i += 5;
  }
  return -1;
}
