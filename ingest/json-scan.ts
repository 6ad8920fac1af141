/**
 * Byte ranges inside a JSON body that `JSON.parse` has already accepted, so ingest can store each
 * event's raw JSON and its `properties` exactly as received — copied as bytes, never
 * re-serialized (re-stringifying costs ~40 % of the parse; MEASUREMENTS.md).
 *
 * Only valid JSON may be scanned (parse first): the scanner checks structure, not grammar. It
 * never throws; when something is not where it expects, it reports "not found" and the caller
 * falls back to JSON.stringify of the parsed value.
 *
 *   { "batch": [ {…"properties": {…}…}, {…} ], "context": … }
 *              ▲ ▲item 0▲     ▲props 0▲   ▲  ▲item 1▲
 */

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

/** 1 for bytes that neither end nor escape a string. */
const STRING_PLAIN = new Uint8Array(256).fill(1);
STRING_PLAIN[QUOTE] = 0;
STRING_PLAIN[BACKSLASH] = 0;
/** Outside strings: 1 quote, 2 opening bracket, 3 closing bracket, 0 anything else. */
const STRUCTURAL = new Uint8Array(256);
STRUCTURAL[QUOTE] = 1;
STRUCTURAL[LBRACE] = STRUCTURAL[LBRACKET] = 2;
STRUCTURAL[RBRACE] = STRUCTURAL[RBRACKET] = 3;

const isSpace = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

/** Keys of an item whose value ranges are recorded (as they appear on the wire). */
const PROPERTIES = Buffer.from('properties');
const TRAITS = Buffer.from('traits');

/**
 * Per item of a scanned body: its byte range, its properties/traits ranges (−1 = absent) and its
 * nesting depth (a scalar 0, `{}` or `[]` 1, `{"a":[1]}` 2); grown on demand, reused across bodies.
 */
export class ItemRanges {
  count = 0;
  itemStart: Int32Array<ArrayBuffer> = new Int32Array(64);
  itemEnd: Int32Array<ArrayBuffer> = new Int32Array(64);
  propsStart: Int32Array<ArrayBuffer> = new Int32Array(64);
  propsEnd: Int32Array<ArrayBuffer> = new Int32Array(64);
  traitsStart: Int32Array<ArrayBuffer> = new Int32Array(64);
  traitsEnd: Int32Array<ArrayBuffer> = new Int32Array(64);
  itemDepth: Int32Array<ArrayBuffer> = new Int32Array(64);
  /** Deepest nesting outside the items of the last batch scanned (the envelope: `{"batch":[…]}` counts 2 before its items). */
  envelopeDepth = 0;

  /** Room for `n` items. */
  protected ensure(n: number): void {
    if (n <= this.itemStart.length) return;
    const grow = (a: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
      const b = new Int32Array(Math.max(n, a.length * 2));
      b.set(a);
      return b;
    };
    this.itemStart = grow(this.itemStart);
    this.itemEnd = grow(this.itemEnd);
    this.propsStart = grow(this.propsStart);
    this.propsEnd = grow(this.propsEnd);
    this.traitsStart = grow(this.traitsStart);
    this.traitsEnd = grow(this.traitsEnd);
    this.itemDepth = grow(this.itemDepth);
  }
}

/** Ranges found by {@link JsonScanner.scanBatch} / {@link JsonScanner.scanObject} in a body JSON.parse accepted. */
export class JsonScanner extends ItemRanges {
  /**
   * Finds the elements of the top-level object's `arrayKey` array (the last one, as JSON.parse
   * keeps the last duplicate) and, in each element that is an object, its `properties` and
   * `traits` values. Returns false when the body is not an object with such an array.
   */
  scanBatch(b: Uint8Array, arrayKey: Uint8Array): boolean {
    this.count = 0;
    this.envelopeDepth = 2;
    let i = skipSpace(b, 0);
    if (b[i] !== LBRACE) return false;
    i = skipSpace(b, i + 1);
    let found = false;
    while (i < b.length && b[i] !== RBRACE) {
      if (b[i] !== QUOTE) return false;
      const keyStart = i + 1;
      const keyEnd = skipString(b, i) - 1;
      i = skipSpace(b, keyEnd + 1);
      if (b[i] !== COLON) return false;
      i = skipSpace(b, i + 1);
      if (equalsAt(b, keyStart, keyEnd, arrayKey) && b[i] === LBRACKET) {
        found = true;
        this.count = 0;
        i = this.scanArray(b, i);
        if (i < 0) return false;
      } else {
        i = skipValue(b, i);
        if (i < 0) return false;
        if (deepest + 1 > this.envelopeDepth) this.envelopeDepth = deepest + 1;
      }
      i = skipSpace(b, i);
      if (b[i] === COMMA) i = skipSpace(b, i + 1);
    }
    return found;
  }

  /** Treats the whole body (one JSON value) as a single item: count 1, item range, props/traits ranges. */
  scanObject(b: Uint8Array, start = 0, end = b.length): boolean {
    this.count = 0;
    const s = skipSpace(b, start);
    let e = end;
    while (e > s && isSpace(b[e - 1]!)) e--;
    if (s >= e) return false;
    this.ensure(1);
    this.itemStart[0] = s;
    this.itemEnd[0] = e;
    this.propsStart[0] = this.propsEnd[0] = this.traitsStart[0] = this.traitsEnd[0] = -1;
    if (b[s] === LBRACE) {
      if (this.scanItem(b, s, 0) < 0) return false;
    } else {
      if (skipValue(b, s) < 0) return false;
      this.itemDepth[0] = deepest;
    }
    this.count = 1;
    return true;
  }

  private scanArray(b: Uint8Array, open: number): number {
    let i = skipSpace(b, open + 1);
    while (i < b.length && b[i] !== RBRACKET) {
      const n = this.count;
      this.ensure(n + 1);
      this.itemStart[n] = i;
      this.propsStart[n] = this.propsEnd[n] = this.traitsStart[n] = this.traitsEnd[n] = -1;
      let end: number;
      if (b[i] === LBRACE) end = this.scanItem(b, i, n);
      else {
        end = skipValue(b, i);
        this.itemDepth[n] = deepest;
      }
      if (end < 0) return -1;
      this.itemEnd[n] = end;
      this.count = n + 1;
      i = skipSpace(b, end);
      if (b[i] === COMMA) i = skipSpace(b, i + 1);
    }
    return i < b.length ? i + 1 : -1;
  }

  /** Scans the object at `open`, recording its properties/traits ranges in slot `n`; returns its end. */
  private scanItem(b: Uint8Array, open: number, n: number): number {
    let i = skipSpace(b, open + 1);
    let depth = 0;
    while (i < b.length && b[i] !== RBRACE) {
      if (b[i] !== QUOTE) return -1;
      const keyStart = i + 1;
      const keyEnd = skipString(b, i) - 1;
      i = skipSpace(b, keyEnd + 1);
      if (b[i] !== COLON) return -1;
      i = skipSpace(b, i + 1);
      const valueStart = i;
      i = skipValue(b, i);
      if (i < 0) return -1;
      if (deepest > depth) depth = deepest;
      const len = keyEnd - keyStart;
      if (len === 10 && equalsAt(b, keyStart, keyEnd, PROPERTIES)) {
        this.propsStart[n] = valueStart;
        this.propsEnd[n] = i;
      } else if (len === 6 && equalsAt(b, keyStart, keyEnd, TRAITS)) {
        this.traitsStart[n] = valueStart;
        this.traitsEnd[n] = i;
      }
      i = skipSpace(b, i);
      if (b[i] === COMMA) i = skipSpace(b, i + 1);
    }
    this.itemDepth[n] = depth + 1;
    return i < b.length ? i + 1 : -1;
  }
}

/**
 * Nesting depth of the JSON value in `b[start, end)` (scalars 0, `[]` 1, `[[1]]` 2), counted
 * over the bytes without recursion; −1 when the value is cut short. For bodies the scanner could
 * not map (its item depths are then unknown).
 */
export function jsonDepth(b: Uint8Array, start = 0, end = b.length): number {
  const v = end === b.length ? b : b.subarray(0, end);
  const i = skipSpace(v, start);
  if (i >= v.length) return 0;
  return skipValue(v, i) < 0 ? -1 : deepest;
}

function skipSpace(b: Uint8Array, i: number): number {
  while (i < b.length && isSpace(b[i]!)) i++;
  return i;
}

/** 32-bit view of the buffer being scanned (when 4-byte aligned), for word-at-a-time string skipping. */
let words: Uint32Array | undefined;
let wordsOf: Uint8Array | undefined;

export function wordsFor(b: Uint8Array): Uint32Array | undefined {
  if (wordsOf !== b) {
    wordsOf = b;
    words = (b.byteOffset & 3) === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.length >> 2) : undefined;
  }
  return words;
}

/** `i` at an opening quote; returns the index after the closing quote. */
function skipString(b: Uint8Array, i: number): number {
  const n = b.length;
  const w32 = wordsFor(b);
  i++;
  for (;;) {
    // Four bytes at a time while none of them is '"' or '\\' (SWAR zero-byte test).
    if (w32 !== undefined && (i & 3) === 0) {
      const lim = n - 4;
      while (i <= lim) {
        const w = w32[i >> 2]!;
        const q = w ^ 0x22222222;
        const e = w ^ 0x5c5c5c5c;
        if ((((q - 0x01010101) & ~q) | ((e - 0x01010101) & ~e)) & 0x80808080) break;
        i += 4;
      }
    }
    if (i >= n) return n;
    const c = b[i]!;
    if (c === QUOTE) return i + 1;
    i += c === BACKSLASH ? 2 : 1;
  }
}

/** Nesting depth of the value last skipped by {@link skipValue} (0 for a scalar). */
let deepest = 0;

/** Returns the index after the value starting at `i` (−1 if the input ends first); sets {@link deepest}. */
function skipValue(b: Uint8Array, i: number): number {
  const n = b.length;
  const c = b[i];
  deepest = 0;
  if (c === QUOTE) return skipString(b, i);
  if (c === LBRACE || c === LBRACKET) {
    let depth = 1;
    let max = 1;
    i++;
    while (i < n) {
      const k = STRUCTURAL[b[i]!]!;
      if (k === 0) {
        i++;
        continue;
      }
      if (k === 1) i = skipString(b, i);
      else if (k === 2) {
        if (++depth > max) max = depth;
        i++;
      } else {
        i++;
        if (--depth === 0) {
          deepest = max;
          return i;
        }
      }
    }
    return -1;
  }
  // number, true, false, null
  while (i < n) {
    const d = b[i]!;
    if (d === COMMA || d === RBRACE || d === RBRACKET || isSpace(d)) return i;
    i++;
  }
  return i;
}

function equalsAt(b: Uint8Array, start: number, end: number, key: Uint8Array): boolean {
  if (end - start !== key.length) return false;
  for (let k = 0; k < key.length; k++) if (b[start + k] !== key[k]) return false;
  return true;
}
