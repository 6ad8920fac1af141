/**
 * `properties.name` of a screen event, read from the properties JSON text as stored (UTF-8
 * bytes of an Arrow Utf8 column). SDKs put the screen name first (`{"name":"Home",…}`): that
 * common case is read straight from the bytes when the value has no escapes and `"name"` occurs
 * once; anything else is parsed, so the answer is JSON.parse(text).name when a string (the fast
 * path does not re-validate JSON that ingest already accepted).
 */
import type { Data, Utf8 } from 'apache-arrow';

const decoder = new TextDecoder();
const PREFIX = [0x7b, 0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22, 0x3a, 0x22]; // {"name":"
const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** The name of row `i`'s properties, or null (no properties, no string `name`, invalid JSON). */
export function screenName(props: Data<Utf8>, i: number): string | null {
  if (!props.getValid(i)) return null;
  const bytes = props.values;
  const start = props.valueOffsets[i]!;
  const end = props.valueOffsets[i + 1]!;
  let fast = end - start > PREFIX.length;
  for (let k = 0; fast && k < PREFIX.length; k++) fast = bytes[start + k] === PREFIX[k];
  if (fast) {
    const from = start + PREFIX.length;
    let q = from;
    while (q < end && bytes[q] !== QUOTE && bytes[q] !== BACKSLASH) q++;
    if (q < end && bytes[q] === QUOTE) {
      if (indexOfName(bytes, q, end) < 0) return decoder.decode(bytes.subarray(from, q));
    }
  }
  const text = decoder.decode(bytes.subarray(start, end));
  if (!text.includes('"name"')) return null;
  try {
    const name = (JSON.parse(text) as { name?: unknown }).name;
    return typeof name === 'string' ? name : null;
  } catch {
    return null;
  }
}

const NAME_KEY = [0x22, 0x6e, 0x61, 0x6d, 0x65, 0x22]; // "name"

/** Position of the bytes `"name"` in bytes[from, end), or −1. */
function indexOfName(bytes: Uint8Array, from: number, end: number): number {
  outer: for (let p = from; p + NAME_KEY.length <= end; p++) {
    for (let k = 0; k < NAME_KEY.length; k++) if (bytes[p + k] !== NAME_KEY[k]) continue outer;
    return p;
  }
  return -1;
}
