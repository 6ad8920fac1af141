/**
 * The live event tail: a ring buffer of the last N accepted events, sampled at ingest (at most
 * `perSecond` a second; the rest cost one comparison). Rows come from the normalizer, so the
 * configured PII hashing and dropping has already happened; only the canonical columns are
 * kept (never the raw payload), properties cut to {@link MAX_PROPS_CHARS}.
 */
import type { IngestRow } from '../batch-builder.js';

/** Characters of `properties` kept per tail entry. */
export const MAX_PROPS_CHARS = 300;

/** One event of the tail as the page receives it (times: epoch ms). */
export interface TailEntry {
  /** Position in the tail since the server started (increasing; the page uses it to append only new entries). */
  seq: number;
  eventTime: number;
  receivedAt: number;
  type: string;
  user: string;
  anonymousId: string | null;
  device: string | null;
  os: string | null;
  version: string | null;
  country: string | null;
  source: string;
  properties: string | null;
}

const decoder = new TextDecoder();

/** The properties JSON of a row, whether a string or a byte range of the request body; cut to MAX_PROPS_CHARS. */
function propertiesOf(row: IngestRow): string | null {
  if (row.properties !== null && row.properties !== undefined) return row.properties.slice(0, MAX_PROPS_CHARS);
  if (row.bytes !== undefined && row.propsStart !== undefined && row.propsStart >= 0 && row.propsEnd !== undefined) {
    const end = Math.min(row.propsEnd, row.propsStart + MAX_PROPS_CHARS * 4);
    return ((row.propsPrefix ?? '') + decoder.decode(row.bytes.subarray(row.propsStart, end))).slice(0, MAX_PROPS_CHARS);
  }
  return null;
}

export class TailRing {
  private readonly entries: Array<TailEntry | undefined>;
  private next = 0;
  private budgetUntil = 0;
  private taken = 0;

  constructor(
    readonly size: number,
    private readonly perSecond: number,
  ) {
    this.entries = new Array<TailEntry | undefined>(size);
  }

  /** Called once per accepted request (not per row): opens a new one-second sampling budget when the last one ended. */
  startBatch(nowMs: number): void {
    if (nowMs >= this.budgetUntil) {
      this.budgetUntil = nowMs + 1000;
      this.taken = 0;
    }
  }

  /** Per accepted row: keeps it while this second's budget lasts. */
  offer(row: IngestRow): void {
    if (this.taken >= this.perSecond) return;
    this.taken++;
    const seq = this.next++;
    this.entries[seq % this.size] = {
      seq,
      eventTime: row.event_time,
      receivedAt: row.received_at,
      type: row.event_type,
      user: row.user_id,
      anonymousId: row.anonymous_id,
      device: row.device_type,
      os: row.os,
      version: row.app_version,
      country: row.country,
      source: row.source,
      properties: propertiesOf(row),
    };
  }

  /** Sequence number the next entry will get. */
  get nextSeq(): number {
    return this.next;
  }

  /** Entries with seq ≥ `fromSeq` still in the ring, oldest first (a new array; entries are shared, do not mutate). */
  since(fromSeq: number): TailEntry[] {
    const from = Math.max(fromSeq, this.next - this.size, 0);
    const out: TailEntry[] = [];
    for (let s = from; s < this.next; s++) out.push(this.entries[s % this.size]!);
    return out;
  }
}
