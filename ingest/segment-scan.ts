/**
 * One pass over a Segment `/v1/batch` body that validates it as JSON and picks out only what
 * normalization reads — instead of `JSON.parse` building every object of every event (the
 * properties, the whole context, the library, the network…) and a second, structural scan
 * finding the byte ranges afterwards. On the SDK path that was ≈ 7 µs of the ack thread per event.
 *
 *   {"batch":[ {"type":…,"userId":…,"context":{"device":{"type":…}…},"properties":{…}}, … ], "sentAt":…}
 *              ▲ item: the fields normalizeSegmentItem reads, decoded; every other value validated
 *                and skipped; properties / traits / integrations as a range (an object marker)
 *
 * What it hands to `normalizeItems` must be what `JSON.parse` would have given it for those fields:
 *
 *   - scalars are decoded exactly: strings without escapes straight from their bytes (short
 *     ones from an intern table), numbers by `Number` of their text (JSON's number grammar is a
 *     subset of it, same rounding), any other string or nested value by `JSON.parse` of its bytes;
 *   - duplicate keys: the last one wins (as in JSON.parse), for values and for ranges;
 *   - a key it reads spelled with escapes (`"\u0074ype"`) sends the body to the JSON.parse path;
 *   - `context` (of an item and of the batch) keeps `device.type`, `os.name`, `app.version`,
 *     `location.country` and `traits` (parsed), the parents as objects holding only those keys;
 *   - `properties`, `traits`, `integrations` objects are a shared marker; where normalization
 *     looks inside, alias properties and group traits are parsed from their bytes, and a
 *     screen/page call's properties are a stand-in that answers its questions (their `name`).
 *
 * Anything else — invalid JSON, invalid UTF-8, a body or batch that is not the usual shape, an
 * item that is not an object or that holds a `writeKey` — is not handled here (`scan` returns false) and the caller takes
 * the JSON.parse path, which words the error. So this scanner only has to be exact on what it
 * accepts: everything it accepts is valid JSON (checked against JSON.parse by property tests).
 * The whole grammar is checked iteratively; depths are reported for the caller to bound
 * (`maxJsonDepth`), and a value nested deeper than any allowed depth is left to the JSON.parse path.
 */
import { ItemRanges, wordsFor } from './json-scan.js';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const LBRACE = 0x7b;
const RBRACE = 0x7d;
const LBRACKET = 0x5b;
const RBRACKET = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;

/** JSON whitespace: space, tab, line feed, carriage return. */
const WS = new Uint8Array(256);
WS[0x20] = WS[0x09] = WS[0x0a] = WS[0x0d] = 1;
/** Bytes that stand for themselves inside a string: not '"', not '\\', not a control character. */
const PLAIN = new Uint8Array(256).fill(1);
PLAIN.fill(0, 0, 0x20);
PLAIN[QUOTE] = PLAIN[BACKSLASH] = 0;
/** Characters allowed after a backslash, other than 'u'. */
const SIMPLE_ESCAPE = new Uint8Array(256);
for (const c of '"\\/bfnrt') SIMPLE_ESCAPE[c.charCodeAt(0)] = 1;
const HEX = new Uint8Array(256);
for (const c of '0123456789abcdefABCDEF') HEX[c.charCodeAt(0)] = 1;
const DIGIT = new Uint8Array(256);
for (let c = 0x30; c <= 0x39; c++) DIGIT[c] = 1;

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

/** Set by {@link stringEnd}: the string just validated holds an escape. */
let escaped = false;
/** Set by {@link valueEnd}: nesting depth of the value just validated (scalars 0, `{}` 1). */
let deepest = 0;

function skipWs(b: Uint8Array, i: number): number {
  while (i < b.length && WS[b[i]!] === 1) i++;
  return i;
}

/** `i` at an opening quote: the index after the closing quote, or −1 when the string is invalid. Sets {@link escaped}. */
function stringEnd(b: Uint8Array, i: number): number {
  const n = b.length;
  const w32 = wordsFor(b);
  escaped = false;
  i++;
  for (;;) {
    // Four bytes at a time while none is '"', '\\' or below 0x20 (SWAR tests of each byte).
    if (w32 !== undefined) {
      while ((i & 3) !== 0 && i < n && PLAIN[b[i]!] === 1) i++;
      if ((i & 3) === 0) {
        const lim = n - 4;
        while (i <= lim) {
          const w = w32[i >> 2]!;
          const q = w ^ 0x22222222;
          const e = w ^ 0x5c5c5c5c;
          if ((((q - 0x01010101) & ~q) | ((e - 0x01010101) & ~e) | ((w - 0x20202020) & ~w)) & 0x80808080) break;
          i += 4;
        }
      }
    }
    while (i < n && PLAIN[b[i]!] === 1) i++;
    if (i >= n) return -1;
    const c = b[i]!;
    if (c === QUOTE) return i + 1;
    if (c !== BACKSLASH) return -1; // a raw control character
    escaped = true;
    const e = b[i + 1]!;
    if (SIMPLE_ESCAPE[e] === 1) i += 2;
    else if (e === 0x75 && i + 5 < n && HEX[b[i + 2]!]! & HEX[b[i + 3]!]! & HEX[b[i + 4]!]! & HEX[b[i + 5]!]!) i += 6;
    else return -1;
  }
}

/** `i` at a number's first byte: the index after it, or −1 when it is not a JSON number. */
function numberEnd(b: Uint8Array, i: number): number {
  if (b[i] === MINUS) i++;
  if (b[i] === ZERO) i++;
  else if (DIGIT[b[i]!] === 1) while (DIGIT[b[++i]!] === 1);
  else return -1;
  if (b[i] === DOT) {
    if (DIGIT[b[++i]!] !== 1) return -1;
    while (DIGIT[b[++i]!] === 1);
  }
  const e = b[i];
  if (e === 0x65 || e === 0x45) {
    const s = b[++i];
    if (s === PLUS || s === MINUS) i++;
    if (DIGIT[b[i]!] !== 1) return -1;
    while (DIGIT[b[++i]!] === 1);
  }
  return i;
}

function literalEnd(b: Uint8Array, i: number, word: Uint8Array): number {
  for (let k = 0; k < word.length; k++) if (b[i + k] !== word[k]) return -1;
  return i + word.length;
}

/**
 * Deepest nesting {@link valueEnd} follows; deeper values are left to the JSON.parse path, which
 * rejects them (`maxJsonDepth` is at most 1000), so a hostile body cannot make this module keep
 * a large stack.
 */
const MAX_DEPTH = 1024;
/** Open containers of {@link valueEnd}: 1 object, 2 array. */
const kinds = new Uint8Array(MAX_DEPTH + 1);

/**
 * `i` at a value's first byte: the index after the value, or −1 when it is not valid JSON or
 * nests deeper than {@link MAX_DEPTH}. Sets {@link deepest}. Iterative: no stack for any depth.
 */
function valueEnd(b: Uint8Array, i: number): number {
  let depth = 0;
  let max = 0;
  for (;;) {
    // A value starts at i.
    const c = b[i];
    if (c === LBRACE || c === LBRACKET) {
      if (++depth > MAX_DEPTH) return -1;
      if (depth > max) max = depth;
      i = skipWs(b, i + 1);
      if (c === LBRACE) {
        kinds[depth] = 1;
        if (b[i] === RBRACE) i++;
        else {
          i = keyThenColon(b, i);
          if (i < 0) return -1;
          continue;
        }
      } else {
        kinds[depth] = 2;
        if (b[i] === RBRACKET) i++;
        else continue;
      }
      depth--;
    } else if (c === QUOTE) i = stringEnd(b, i);
    else if (c === MINUS || DIGIT[c!] === 1) i = numberEnd(b, i);
    else if (c === 0x74) i = literalEnd(b, i, TRUE);
    else if (c === 0x66) i = literalEnd(b, i, FALSE);
    else if (c === 0x6e) i = literalEnd(b, i, NULL);
    else return -1;
    if (i < 0) return -1;
    // After a value: a comma and the next one, or the close of its container(s).
    for (;;) {
      if (depth === 0) {
        deepest = max;
        return i;
      }
      i = skipWs(b, i);
      const d = b[i];
      if (d === COMMA) {
        i = skipWs(b, i + 1);
        if (kinds[depth] === 1) {
          i = keyThenColon(b, i);
          if (i < 0) return -1;
        }
        break;
      }
      if (d !== (kinds[depth] === 1 ? RBRACE : RBRACKET)) return -1;
      i++;
      depth--;
    }
  }
}

/**
 * The nesting depth of `b` when it holds exactly one valid JSON value (whitespace around it
 * allowed; scalars 0, `{}` 1), else −1 — also past {@link MAX_DEPTH}. Validates without building
 * anything (JSON text given as a string field, e.g. NDJSON's or Arrow's `properties`).
 */
export function jsonValueDepth(b: Uint8Array): number {
  const i = valueEnd(b, skipWs(b, 0));
  return i >= 0 && skipWs(b, i) === b.length ? deepest : -1;
}

/** `i` at an object key: the index of the value after `"key" :`, or −1. */
function keyThenColon(b: Uint8Array, i: number): number {
  if (b[i] !== QUOTE) return -1;
  i = stringEnd(b, i);
  if (i < 0) return -1;
  i = skipWs(b, i);
  if (b[i] !== COLON) return -1;
  return skipWs(b, i + 1);
}

/** Marker for an object-valued field whose contents normalization does not read (its bytes are a range). */
const OBJECT_MARK: Readonly<Record<string, unknown>> = Object.freeze({});

type Json = Record<string, unknown>;

/** Stand-ins for a screen call's properties without `name` (see screenProperties). */
const EMPTY_PROPERTIES: Readonly<Json> = Object.freeze({});
const UNNAMED_PROPERTIES: Readonly<Json> = Object.freeze({ '(not name)': true });

/**
 * An item as normalization reads it: every field it looks at, undefined when absent (it never
 * asks `in`), in one fixed shape so its reads stay monomorphic.
 */
interface Item {
  type: unknown;
  event: unknown;
  userId: unknown;
  anonymousId: unknown;
  messageId: unknown;
  timestamp: unknown;
  originalTimestamp: unknown;
  sentAt: unknown;
  name: unknown;
  groupId: unknown;
  previousId: unknown;
  context: unknown;
  properties: unknown;
  traits: unknown;
  integrations: unknown;
}

const newItem = (): Item => ({
  type: undefined,
  event: undefined,
  userId: undefined,
  anonymousId: undefined,
  messageId: undefined,
  timestamp: undefined,
  originalTimestamp: undefined,
  sentAt: undefined,
  name: undefined,
  groupId: undefined,
  previousId: undefined,
  context: undefined,
  properties: undefined,
  traits: undefined,
  integrations: undefined,
});

/** Stores a scalar item field (a known key that is not an object-valued one); other keys are ignored. */
function setField(item: Item, key: string, v: unknown): void {
  switch (key) {
    case 'type':
      item.type = v;
      break;
    case 'event':
      item.event = v;
      break;
    case 'userId':
      item.userId = v;
      break;
    case 'anonymousId':
      item.anonymousId = v;
      break;
    case 'messageId':
      item.messageId = v;
      break;
    case 'timestamp':
      item.timestamp = v;
      break;
    case 'originalTimestamp':
      item.originalTimestamp = v;
      break;
    case 'sentAt':
      item.sentAt = v;
      break;
    case 'name':
      item.name = v;
      break;
    case 'groupId':
      item.groupId = v;
      break;
    case 'previousId':
      item.previousId = v;
      break;
    case 'context':
      item.context = v;
      break;
  }
}

/** Item keys normalizeSegmentItem reads as values. */
const ITEM_VALUES = new Set(['type', 'event', 'userId', 'anonymousId', 'messageId', 'timestamp', 'originalTimestamp', 'sentAt', 'name', 'groupId', 'previousId']);
/** context.<parent>.<child> read by normalization (the dimensions). */
const CONTEXT_DIMS = new Map([
  ['device', 'type'],
  ['os', 'name'],
  ['app', 'version'],
  ['location', 'country'],
]);

/**
 * The scanner: after a successful {@link scan}, the same fields JsonScanner fills (item ranges,
 * properties/traits ranges, depths, envelopeDepth) plus the decoded items and envelope fields.
 */
export class SegmentBatchScanner extends ItemRanges {
  /** The batch's items, each holding only the fields normalization reads. */
  items: Item[] = [];
  /** The envelope's `sentAt`, `context` and `writeKey` (undefined when absent). */
  sentAt: unknown;
  context: unknown;
  writeKey: unknown;

  private body: Buffer = Buffer.alloc(0);
  /** A known key was spelled with escapes: the body is left to the JSON.parse path. */
  private escapedKey = false;
  /** An item holds a `writeKey` (analytics.js puts one in each): left to the JSON.parse path, which removes it before storing. */
  private keyedItem = false;
  /** The body is all ASCII (the caller's isAscii): every string decodes as latin1, without a per-string check. */
  private ascii = false;

  /**
   * Scans a `{"batch":[…], …}` body. False when it is not valid JSON, not an object with a
   * `batch` array of objects, or its `context` is present and not an object (null allowed): the
   * caller then takes the JSON.parse path. `body` must be valid UTF-8 and `ascii` say whether it
   * is all ASCII (both checked by the caller: one simdutf pass when it is).
   */
  scan(body: Buffer, ascii: boolean): boolean {
    this.body = body;
    this.count = 0;
    this.items = [];
    this.sentAt = this.context = this.writeKey = undefined;
    this.envelopeDepth = 2;
    this.escapedKey = false;
    this.keyedItem = false;
    this.ascii = ascii;
    let sawBatch = false;
    const b = body;
    let i = skipWs(b, 0);
    if (b[i] !== LBRACE) return false;
    i = skipWs(b, i + 1);
    if (b[i] === RBRACE) return false; // no batch
    for (;;) {
      i = this.member(i);
      if (i < 0) return false;
      const key = this.key;
      const start = i;
      if (key === 'batch') {
        if (b[i] !== LBRACKET) return false; // the JSON.parse path refuses it
        i = this.scanItems(i);
        sawBatch = true;
      } else if (key === 'context' && b[i] === LBRACE) {
        i = this.readContext(i);
        this.context = this.decoded;
      } else {
        i = valueEnd(b, i);
        if (i < 0) return false;
        if (key === 'context') {
          if (b[start] !== 0x6e) return false; // null is allowed, anything else is refused by the JSON.parse path
          this.context = null;
        } else if (key === 'sentAt') this.sentAt = this.valueAt(start, i);
        else if (key === 'writeKey') this.writeKey = this.valueAt(start, i);
      }
      if (i < 0) return false;
      if (key !== 'batch' && deepest + 1 > this.envelopeDepth) this.envelopeDepth = deepest + 1;
      i = this.next(i);
      if (i < 0) return false;
      if (this.closed) return sawBatch && !this.escapedKey && !this.keyedItem && skipWs(b, i) === b.length;
    }
  }

  /** Set by {@link member}: the key just read when it is one this scanner reads, else undefined. */
  private key: string | undefined;
  /** Set by {@link next}: the object closed. */
  private closed = false;

  /** `i` at a member of an object: reads `"key" :` (sets {@link key}); the index of its value, or −1. */
  private member(i: number): number {
    const b = this.body;
    if (b[i] !== QUOTE) return -1;
    const keyEnd = stringEnd(b, i);
    if (keyEnd < 0) return -1;
    this.key = this.keyAt(i, keyEnd);
    i = skipWs(b, keyEnd);
    return b[i] === COLON ? skipWs(b, i + 1) : -1;
  }

  /**
   * `i` after a member's value: the index of the next member after a comma ({@link closed}
   * false), or the index after the object's `}` (closed true); −1 when neither follows.
   */
  private next(i: number): number {
    const b = this.body;
    i = skipWs(b, i);
    this.closed = b[i] !== COMMA;
    if (!this.closed) return skipWs(b, i + 1);
    return b[i] === RBRACE ? i + 1 : -1;
  }

  /** The items of the batch array at `open`; the index after it, or −1. */
  private scanItems(open: number): number {
    const b = this.body;
    // A repeated "batch" key: the last one wins, as in JSON.parse.
    this.count = 0;
    this.items = [];
    let i = skipWs(b, open + 1);
    if (b[i] === RBRACKET) return i + 1;
    for (;;) {
      if (b[i] !== LBRACE) return -1; // not an object: the JSON.parse path rejects it with its raw
      const n = this.count;
      this.ensure(n + 1);
      this.itemStart[n] = i;
      i = this.readItem(i, n);
      if (i < 0) return -1;
      this.itemEnd[n] = i;
      this.count = n + 1;
      i = skipWs(b, i);
      if (b[i] === COMMA) {
        i = skipWs(b, i + 1);
        continue;
      }
      return b[i] === RBRACKET ? i + 1 : -1;
    }
  }

  /** One item object at `open` into slot `n`: its decoded fields, ranges and depth; the index after it, or −1. */
  private readItem(open: number, n: number): number {
    const b = this.body;
    const item = newItem();
    this.propsStart[n] = this.propsEnd[n] = this.traitsStart[n] = this.traitsEnd[n] = -1;
    let depth = 0;
    let i = skipWs(b, open + 1);
    if (b[i] === RBRACE) i++;
    else {
      for (;;) {
        i = this.member(i);
        if (i < 0) return -1;
        const key = this.key;
        const start = i;
        if (key === 'context' && b[i] === LBRACE) {
          i = this.readContext(i);
          item.context = this.decoded;
        } else {
          i = valueEnd(b, i);
          if (i < 0) return -1;
          if (key === 'properties' || key === 'traits' || key === 'integrations') {
            const object = b[start] === LBRACE;
            const v = object ? OBJECT_MARK : this.valueAt(start, i);
            if (key === 'properties') {
              item.properties = v;
              this.propsStart[n] = start;
              this.propsEnd[n] = i;
            } else if (key === 'traits') {
              item.traits = v;
              this.traitsStart[n] = start;
              this.traitsEnd[n] = i;
            } else item.integrations = v;
          } else if (key === 'writeKey') this.keyedItem = true;
          else if (key !== undefined) setField(item, key, this.valueAt(start, i));
        }
        if (i < 0) return -1;
        if (deepest > depth) depth = deepest;
        i = this.next(i);
        if (i < 0) return -1;
        if (this.closed) break;
      }
    }
    // Where normalization reads inside properties or traits, what it reads: a screen/page call's
    // properties as a stand-in (below); alias properties (previousId is merged into them) and
    // group traits (groupId is) parsed.
    // (The ranges are the last occurrence's, as the values are.)
    const type = item.type;
    const props = this.propsStart[n]!;
    if (props >= 0 && b[props] === LBRACE) {
      if (type === 'alias') item.properties = this.parse(props, this.propsEnd[n]!);
      else if ((type === 'screen' || type === 'page') && typeof item.name === 'string') item.properties = this.screenProperties(props, this.propsEnd[n]!, item.name);
    }
    const traits = this.traitsStart[n]!;
    if (traits >= 0 && b[traits] === LBRACE && type === 'group') item.traits = this.parse(traits, this.traitsEnd[n]!);
    this.itemDepth[n] = depth + 1;
    this.items.push(item);
    return i;
  }

  /**
   * What normalization asks of a screen/page call's properties object (to put the call's `name`
   * into it without re-serializing it): its `name`, whether it has one, whether it is empty. The
   * object itself only when its `name` differs from the call's (it is then re-serialized with the
   * call's); otherwise a stand-in giving the same answers — `{}`, `{name}`, or a non-empty object
   * without `name` — while the properties are stored from their bytes. The object at `b[open,
   * end)` is valid (valueEnd checked it); a `name` key spelled with escapes leaves the body to the
   * JSON.parse path (keyAt).
   */
  private screenProperties(open: number, end: number, callName: string): unknown {
    const b = this.body;
    let keys = 0;
    let name: unknown;
    let hasName = false;
    let i = skipWs(b, open + 1);
    if (b[i] !== RBRACE) {
      do {
        i = this.member(i);
        const isName = this.key === 'name';
        const start = i;
        i = valueEnd(b, i);
        if (isName) {
          hasName = true;
          name = this.valueAt(start, i);
        }
        keys++;
        i = this.next(i);
      } while (!this.closed);
    }
    if (!hasName) return keys === 0 ? EMPTY_PROPERTIES : UNNAMED_PROPERTIES;
    return name === callName ? { name } : this.parse(open, end);
  }

  /** Set by {@link readContext} and {@link readParent}: the object they read. */
  private decoded: Json = {};

  /**
   * A context object at `open`: keeps the dimension parents (objects holding only their dimension
   * key, or the value itself when it is not an object) and `traits` (parsed). Sets `deepest`.
   */
  private readContext(open: number): number {
    const b = this.body;
    const context: Json = {};
    let depth = 0;
    let i = skipWs(b, open + 1);
    if (b[i] === RBRACE) i++;
    else {
      for (;;) {
        i = this.member(i);
        if (i < 0) return -1;
        const key = this.key;
        const start = i;
        const child = key === undefined ? undefined : CONTEXT_DIMS.get(key);
        if (child !== undefined && b[i] === LBRACE) {
          i = this.readParent(i, child);
          context[key!] = this.decoded;
        } else {
          i = valueEnd(b, i);
          if (i < 0) return -1;
          if (child !== undefined) context[key!] = this.valueAt(start, i);
          else if (key === 'traits') context.traits = this.parse(start, i);
        }
        if (i < 0) return -1;
        if (deepest > depth) depth = deepest;
        i = this.next(i);
        if (i < 0) return -1;
        if (this.closed) break;
      }
    }
    this.decoded = context;
    deepest = depth + 1;
    return i;
  }

  /** A dimension's parent object (`context.device`) at `open`, keeping only `child` (`type`). Sets `deepest`. */
  private readParent(open: number, child: string): number {
    const b = this.body;
    const parent: Json = {};
    let depth = 0;
    let i = skipWs(b, open + 1);
    if (b[i] === RBRACE) i++;
    else {
      for (;;) {
        i = this.member(i);
        if (i < 0) return -1;
        const key = this.key;
        const start = i;
        i = valueEnd(b, i);
        if (i < 0) return -1;
        if (key === child) parent[child] = this.valueAt(start, i);
        if (deepest > depth) depth = deepest;
        i = this.next(i);
        if (i < 0) return -1;
        if (this.closed) break;
      }
    }
    this.decoded = parent;
    deepest = depth + 1;
    return i;
  }

  /**
   * The key whose string (quotes included) is `b[start, end)`, when it is one this scanner reads;
   * undefined for any other. Escaped keys are unescaped first (JSON.parse compares them unescaped).
   */
  private keyAt(start: number, end: number): string | undefined {
    const b = this.body;
    if (escaped) {
      // A key this scanner reads, spelled with escapes: JSON.parse's path does not find its byte
      // ranges either (JsonScanner compares keys as bytes) and re-serializes — take that path.
      const k = JSON.parse(b.toString('utf8', start, end)) as string;
      if (KNOWN_KEYS.has(k)) this.escapedKey = true;
      return undefined;
    }
    const len = end - start - 2;
    if (len < 2 || len > 31) return undefined;
    const slot = KEY_SLOTS[keySlot(len, b[start + 1]!, b[end - 2]!)]!;
    if (slot === 0) return undefined;
    const bytes = KEY_BYTES[slot]!;
    if (bytes.length !== len) return undefined;
    for (let k = 0; k < len; k++) if (b[start + 1 + k] !== bytes[k]) return undefined;
    return KEY_NAMES[slot];
  }

  /**
   * The value of the valid JSON at `b[start, end)`, as JSON.parse gives it. Call it right after
   * {@link valueEnd} validated that value: a string's {@link escaped} is still its own.
   */
  private valueAt(start: number, end: number): unknown {
    const b = this.body;
    const c = b[start];
    if (c === QUOTE) {
      if (escaped) return this.parse(start, end);
      if (!this.ascii) return utf8Text(b, start + 1, end - 1);
      return end - start - 2 <= INTERN_MAX_BYTES ? interned(b, start + 1, end - 1) : (b as NodeBuffer).latin1Slice(start + 1, end - 1);
    }
    if (c === 0x74) return true;
    if (c === 0x66) return false;
    if (c === 0x6e) return null;
    if (c === MINUS || DIGIT[c!] === 1) return Number(b.toString('latin1', start, end));
    return this.parse(start, end);
  }

  private parse(start: number, end: number): unknown {
    return JSON.parse(this.body.toString('utf8', start, end));
  }
}

/**
 * The string of valid, unescaped UTF-8 bytes `b[start, end)`: Buffer's latin1 decoder when they are
 * ASCII (the same string, without the UTF-8 decoder's set-up), else its UTF-8 decoder.
 */
function utf8Text(b: Buffer, start: number, end: number): string {
  let bits = 0;
  for (let k = start; k < end; k++) bits |= b[k]!;
  return bits < 0x80 ? (b as NodeBuffer).latin1Slice(start, end) : (b as NodeBuffer).utf8Slice(start, end);
}

/**
 * Short ASCII values repeat from event to event (call types, event names, device types, OS names,
 * app versions, countries, a busy user's id): the string of recently seen bytes is handed out
 * again instead of decoding a new one. A direct-mapped table by a hash of the bytes; a slot keeps
 * the last string that hashed there (its bytes compared in full before it is reused).
 */
const INTERN_MAX_BYTES = 20;
const INTERN_SLOTS = 1024;
const internBytes = new Uint8Array(INTERN_SLOTS * INTERN_MAX_BYTES);
const internLength = new Int8Array(INTERN_SLOTS).fill(-1);
const internString: string[] = new Array<string>(INTERN_SLOTS).fill('');

function interned(b: Buffer, start: number, end: number): string {
  const len = end - start;
  let h = 0x811c9dc5;
  for (let k = start; k < end; k++) h = Math.imul(h ^ b[k]!, 0x01000193);
  const slot = (h ^ (h >>> 15)) & (INTERN_SLOTS - 1);
  const at = slot * INTERN_MAX_BYTES;
  if (internLength[slot] === len) {
    let k = 0;
    while (k < len && internBytes[at + k] === b[start + k]) k++;
    if (k === len) return internString[slot]!;
  }
  const s = (b as NodeBuffer).latin1Slice(start, end);
  internBytes.set(b.subarray(start, end), at);
  internLength[slot] = len;
  internString[slot] = s;
  return s;
}

/** Buffer's own decoders (skip toString's argument handling); not in @types/node. */
interface NodeBuffer extends Buffer {
  latin1Slice(start: number, end: number): string;
  utf8Slice(start: number, end: number): string;
}

/** Every key the scanner reads, at any level. */
const KNOWN_KEYS = new Set([...ITEM_VALUES, 'batch', 'context', 'sentAt', 'writeKey', 'properties', 'traits', 'integrations', ...CONTEXT_DIMS.keys(), ...CONTEXT_DIMS.values()]);
/**
 * Known keys by (length, low 5 bits of the first and last bytes) — distinct for every key above
 * (checked at load), other keys may share a slot (compared in full):
 * a key is found with one table read and a compare, whatever its position in the object.
 */
const keySlot = (len: number, first: number, last: number): number => ((len & 31) << 10) | ((first & 31) << 5) | (last & 31);
const KEY_SLOTS = new Uint8Array(1 << 15);
const KEY_BYTES: Buffer[] = [Buffer.alloc(0)];
const KEY_NAMES: string[] = [''];
for (const k of KNOWN_KEYS) {
  const bytes = Buffer.from(k);
  const slot = keySlot(bytes.length, bytes[0]!, bytes[bytes.length - 1]!);
  if (KEY_SLOTS[slot] !== 0) throw new Error(`segment-scan: keys ${KEY_NAMES[KEY_SLOTS[slot]!]} and ${k} share a slot`);
  KEY_SLOTS[slot] = KEY_BYTES.length;
  KEY_BYTES.push(bytes);
  KEY_NAMES.push(k);
}
