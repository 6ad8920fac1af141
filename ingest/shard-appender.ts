/**
 * Group commit at the batch level: events for a shard from all requests of one event-loop turn
 * (or up to `maxRows`) become ONE Arrow record, appended to the shard's log once. Every request
 * that contributed waits for that record's fsync; then the record is handed to the engine
 * (`onDurable`) and the waiters are released with its offset.
 */
import type { ShardLog } from './log/log.js';
import { IngestBatchBuilder } from './batch-builder.js';
import type { CanonicalEvent } from './normalize.js';

type OnDurable = (shard: number, offset: number, payload: Uint8Array, rows: number) => void;

interface Pending {
  builder: IngestBatchBuilder;
  waiters: Array<{ resolve: (offset: number) => void; reject: (err: unknown) => void }>;
}

export class ShardAppender {
  private pending: Pending | undefined;
  private scheduled = false;
  /** Appends in flight (for close). */
  private inFlight = new Set<Promise<unknown>>();

  constructor(
    readonly shard: number,
    private readonly log: ShardLog,
    private readonly maxRows: number,
    private readonly onDurable: OnDurable | undefined,
  ) {}

  /** Queues events; resolves with the offsets of the records that hold them, once durable. */
  add(events: CanonicalEvent[]): Promise<number[]> {
    const parts: Array<Promise<number>> = [];
    let i = 0;
    while (i < events.length) {
      const p = (this.pending ??= { builder: new IngestBatchBuilder(this.maxRows), waiters: [] });
      while (i < events.length && !p.builder.full) p.builder.push(events[i++]!);
      parts.push(new Promise<number>((resolve, reject) => p.waiters.push({ resolve, reject })));
      if (p.builder.full) this.flush();
    }
    if (this.pending && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    return Promise.all(parts);
  }

  private flush(): void {
    const p = this.pending;
    this.pending = undefined;
    if (!p || p.builder.length === 0) return;
    const rows = p.builder.length;
    let payload: Uint8Array;
    try {
      payload = p.builder.toIPC();
    } catch (err) {
      for (const w of p.waiters) w.reject(err);
      return;
    }
    const done = this.log.append(payload).then(
      (offset) => {
        this.onDurable?.(this.shard, offset, payload, rows);
        for (const w of p.waiters) w.resolve(offset);
      },
      (err: unknown) => {
        for (const w of p.waiters) w.reject(err);
      },
    );
    this.inFlight.add(done);
    void done.finally(() => this.inFlight.delete(done));
  }

  /** Flushes what is queued and waits for every append to settle. */
  async drain(): Promise<void> {
    this.flush();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }
}
