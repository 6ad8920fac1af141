/**
 * Segment-compatible tracking API: `POST /v1/batch` (and `/v1/import`) with
 * `{"batch":[…], "context"?, "sentAt"?, "writeKey"?}`, and the single calls `/v1/track`,
 * `/v1/screen`, `/v1/page`, `/v1/identify`, `/v1/alias`, `/v1/group` whose body is one message.
 *
 * The body is parsed once (JSON.parse); a structural scan of the same bytes then finds each
 * item's byte range (and its properties/traits), so raw and properties are stored verbatim
 * without re-serializing. The content type is ignored (RudderStack labels JSON as
 * application/x-www-form-urlencoded).
 */
import type { IngestRow } from '../batch-builder.js';
import { JsonScanner } from '../json-scan.js';
import { normalizeSegmentItem, type ItemBytes, type NormalizeContext } from '../normalize.js';
import type { WriteKey } from '../options.js';
import { refuse, type Admission, type DeadLetter, type Decoded, type Refusal } from './decoded.js';

export const SEGMENT_CALLS = ['track', 'screen', 'page', 'identify', 'alias', 'group'] as const;

const BATCH = Buffer.from('batch');
const scanner = new JsonScanner();

/**
 * Decodes one Segment request body (already gunzipped). `call` is the endpoint's call type, or
 * undefined for /v1/batch. `context(key)` gives the normalization context for the resolved key.
 */
export function decodeSegment(body: Buffer, call: string | undefined, admission: Admission, context: (key: WriteKey) => NormalizeContext): Decoded | Refusal {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return refuse(400, 'malformed_json', 'the body is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return refuse(400, 'malformed_body', 'the body must be a JSON object');
  const b = parsed as Record<string, unknown>;
  const key = admission.authenticate(b.writeKey);
  if ('kind' in key) return key;
  let items: unknown[];
  let ranges = false;
  if (call === undefined) {
    if (!Array.isArray(b.batch)) return refuse(400, 'malformed_body', 'a batch body needs a "batch" array of messages');
    items = b.batch;
    const refused = admission.admit(key, items.length);
    if (refused) return refused;
    ranges = scanner.scanBatch(body, BATCH) && scanner.count === items.length;
  } else {
    items = [b];
    const refused = admission.admit(key, 1);
    if (refused) return refused;
    if ('writeKey' in b) delete b.writeKey; // never store the key: this message is re-serialized
    else ranges = scanner.scanObject(body);
  }
  const { rows, rejects } = normalizeItems(items, body, ranges ? scanner : undefined, call, call === undefined ? b.sentAt : undefined, call === undefined ? b.context : undefined, context(key));
  return { kind: 'decoded', key, rows, rejects };
}

/**
 * Normalizes parsed Segment messages. With `scanned` (a scanner that found every item's byte
 * ranges in `body`), raw and properties are taken verbatim from those ranges.
 */
export function normalizeItems(
  items: unknown[],
  body: Buffer,
  scanned: JsonScanner | undefined,
  call: string | undefined,
  batchSentAt: unknown,
  batchContext: unknown,
  ctx: NormalizeContext,
): { rows: IngestRow[]; rejects: DeadLetter[] } {
  const rows: IngestRow[] = [];
  const rejects: DeadLetter[] = [];
  const src: ItemBytes | undefined = scanned ? { bytes: body, rawStart: 0, rawEnd: 0, propsStart: -1, propsEnd: -1, traitsStart: -1, traitsEnd: -1 } : undefined;
  for (let i = 0; i < items.length; i++) {
    if (src) {
      src.rawStart = scanned!.itemStart[i]!;
      src.rawEnd = scanned!.itemEnd[i]!;
      src.propsStart = scanned!.propsStart[i]!;
      src.propsEnd = scanned!.propsEnd[i]!;
      src.traitsStart = scanned!.traitsStart[i]!;
      src.traitsEnd = scanned!.traitsEnd[i]!;
    }
    const r = normalizeSegmentItem(items[i], call, batchSentAt, batchContext, ctx, src);
    if (r.ok) rows.push(r.event);
    else rejects.push({ index: i, code: r.code, message: r.message, raw: r.raw });
  }
  return { rows, rejects };
}
