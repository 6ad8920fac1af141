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

  constructor(
    dir: string,
    durableNext: number,
    private readonly askTruncate: (before: number) => void,
  ) {
    this.reader = new SegmentLogReader(dir);
    this.durableNextOffset = durableNext;
  }

  async *read(fromOffset: number): AsyncGenerator<LogRecord, void, undefined> {
    let next = fromOffset;
    while (next < this.durableNextOffset) {
      const records = await this.reader.readRange(next, this.durableNextOffset, READ_CHUNK_RECORDS, READ_CHUNK_BYTES);
      if (records.length === 0) return;
      for (const r of records) yield r;
      next = records[records.length - 1]!.offset + 1;
    }
  }

  truncateBefore(offset: number): Promise<void> {
    this.askTruncate(offset);
    return Promise.resolve();
  }

  close(): Promise<void> {
    return this.reader.close();
  }
}
