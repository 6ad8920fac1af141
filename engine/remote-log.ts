/**
 * A shard log as the engine process sees it: the files, read with a SegmentLogReader below the
 * durable mark that ingest (the writer, in the parent process) reports; truncation is asked of
 * ingest, which owns the files.
 */
import type { LogRecord } from '../log/log.js';
import { SegmentLogReader } from '../log/segment-reader.js';
import type { ConsumedLog } from './coordinator.js';

/** Records per read from the files (a range reads on until its own bounds). */
const READ_CHUNK_RECORDS = 256;
const READ_CHUNK_BYTES = 8 * 1024 * 1024;

export class RemoteLog implements ConsumedLog {
  /** Every record below it is durable: the last mark ingest reported. */
  durableNextOffset: number;
  private readonly reader: SegmentLogReader;
  /**
   * Read ahead: what the last chunk held past the record a consumer stopped at (a range ends at
   * its own bounds, mid-chunk). The next read that starts there takes them from here instead of
   * reading, copying and checking them again: with ranges of a few records a chunk was otherwise
   * read several times over (profiled: the engine's main thread busy with re-read CRCs and
   * fstats). Only durable records are read, and a durable record never changes, so what is kept
   * stays true.
   */
  private ahead: LogRecord[] = [];
  private aheadAt = 0;
  /** The newest read owns `ahead`: an older one still suspended (a pump given up) ends at its next step. */
  private reading = 0;

  constructor(
    dir: string,
    durableNext: number,
    private readonly askTruncate: (before: number) => void,
  ) {
    this.reader = new SegmentLogReader(dir);
    this.durableNextOffset = durableNext;
  }

  async *read(fromOffset: number): AsyncGenerator<LogRecord, void, undefined> {
    const me = ++this.reading;
    // Kept records serve a read that starts at the first of them; any other start drops them.
    while (this.aheadAt < this.ahead.length && this.ahead[this.aheadAt]!.offset < fromOffset) this.aheadAt++;
    if (this.aheadAt < this.ahead.length && this.ahead[this.aheadAt]!.offset !== fromOffset) this.dropAhead();
    let next = fromOffset;
    for (;;) {
      if (this.aheadAt >= this.ahead.length) {
        this.dropAhead();
        if (next >= this.durableNextOffset) return;
        const records = await this.readRange(next, this.durableNextOffset);
        if (me !== this.reading || records.length === 0) return;
        this.ahead = records;
      }
      if (me !== this.reading) return;
      // Taken before it is yielded: a consumer that stops after this record has it, the rest stay.
      const r = this.ahead[this.aheadAt++]!;
      next = r.offset + 1;
      yield r;
    }
  }

  /**
   * The reader keeps its position between calls, so its reads go one at a time: a read given up
   * (its generator abandoned mid-range) and a new one, or two consumers, interleaved on it and
   * reported sound records as damaged.
   */
  private readRange(from: number, until: number): Promise<LogRecord[]> {
    const run = this.readQueue.then(() => this.reader.readRange(from, until, READ_CHUNK_RECORDS, READ_CHUNK_BYTES));
    this.readQueue = run.catch(() => undefined);
    return run;
  }

  private readQueue: Promise<unknown> = Promise.resolve();

  private dropAhead(): void {
    this.ahead = [];
    this.aheadAt = 0;
  }

  truncateBefore(offset: number): Promise<void> {
    this.askTruncate(offset);
    return Promise.resolve();
  }

  close(): Promise<void> {
    return this.reader.close();
  }
}
