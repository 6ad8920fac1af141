/**
 * Native NDJSON: `POST /v1/events`, one canonical event per line (blank lines ignored):
 *
 *   {"event_id":"…","user_id":"…","event_type":"screen_view","event_time":"2024-05-01T12:00:00Z",
 *    "anonymous_id":…,"device_type":…,"os":…,"app_version":…,"country":…,"source":…,"properties":{…}}
 *
 * event_time: ISO-8601 or epoch ms; properties: an object or its JSON text. A line that is not
 * JSON is rejected on its own (`malformed_json`); `index` counts non-blank lines from 0. A line
 * with bytes that are not UTF-8 is rejected (`invalid_utf8`), one nested deeper than
 * maxJsonDepth too (`too_deep`), before anything recursive touches it.
 * Auth: the write key in the Authorization header (Basic user name or Bearer).
 */
import type { IngestRow } from '../batch-builder.js';
import { jsonDepth, JsonScanner } from '../json-scan.js';
import { DEFAULT_MAX_JSON_DEPTH, normalizeCanonical, type ItemBytes, type NormalizeContext } from '../normalize.js';
import { LONE_SURROGATE, loneSurrogateEscape, utf8Repaired, utf8Valid } from '../utf8.js';
import type { WriteKey } from '../options.js';
import type { Admission, DeadLetter, Decoded, Refusal } from './decoded.js';

const NL = 0x0a;
const scanner = new JsonScanner();

const blank = (b: Uint8Array, s: number, e: number): boolean => {
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (c !== 0x20 && c !== 0x09 && c !== 0x0d) return false;
  }
  return true;
};

export function decodeNdjson(body: Buffer, admission: Admission, context: (key: WriteKey) => NormalizeContext): Decoded | Refusal {
  const key = admission.authenticate(undefined);
  if ('kind' in key) return key;
  const starts: number[] = [];
  const ends: number[] = [];
  for (let s = 0; s < body.length; ) {
    let e = body.indexOf(NL, s);
    if (e < 0) e = body.length;
    if (!blank(body, s, e)) {
      starts.push(s);
      ends.push(e);
    }
    s = e + 1;
  }
  const refused = admission.admit(key, starts.length);
  if (refused) return refused;
  const ctx = context(key);
  const maxDepth = ctx.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  // One simdutf pass over the body; per-line checks only when it finds something.
  const allUtf8 = utf8Valid(body);
  const lone = body.indexOf('\\u') >= 0 && loneSurrogateEscape(body) >= 0;
  const rows: IngestRow[] = [];
  const rejects: DeadLetter[] = [];
  for (let i = 0; i < starts.length; i++) {
    const s = starts[i]!;
    let e = ends[i]!;
    if (body[e - 1] === 0x0d) e--;
    if (!allUtf8 && !utf8Valid(body, s, e)) {
      rejects.push({ index: i, code: 'invalid_utf8', message: 'the line holds bytes that are not valid UTF-8 (replaced by U+FFFD in the dead letter); send UTF-8', raw: utf8Repaired(body, s, e) });
      continue;
    }
    if (lone && loneSurrogateEscape(body, s, e) >= 0) {
      rejects.push({ index: i, code: 'invalid_utf8', message: LONE_SURROGATE, raw: body.toString('utf8', s, e) });
      continue;
    }
    const text = body.toString('utf8', s, e);
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      rejects.push({ index: i, code: 'malformed_json', message: 'line is not valid JSON', raw: text });
      continue;
    }
    let src: ItemBytes | undefined;
    let depth: number;
    if (scanner.scanObject(body, s, e)) {
      depth = scanner.itemDepth[0]!;
      src = {
        bytes: body,
        rawStart: scanner.itemStart[0]!,
        rawEnd: scanner.itemEnd[0]!,
        propsStart: scanner.propsStart[0]!,
        propsEnd: scanner.propsEnd[0]!,
        traitsStart: -1,
        traitsEnd: -1,
      };
    } else depth = jsonDepth(body, s, e);
    if (depth > maxDepth) {
      rejects.push({ index: i, code: 'too_deep', message: `the line nests JSON deeper than ${maxDepth} levels; flatten its properties`, raw: text });
      continue;
    }
    const r = normalizeCanonical(parsed, ctx, undefined, src);
    if (r.ok) rows.push(r.event);
    else rejects.push({ index: i, code: r.code, message: r.message, raw: r.raw });
  }
  return { kind: 'decoded', key, rows, rejects };
}
