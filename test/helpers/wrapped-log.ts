/**
 * Test helpers for coordinator tests that put a fault in front of a real segment log: a
 * ConsumedLog that delegates everything to the log (subclasses override `read`), and a bounded
 * poll.
 */
import type { ConsumedLog } from '../../engine/coordinator.js';
import type { LogRecord } from '../../log/log.js';
import type { SegmentLog } from '../../log/segment-log.js';

export class WrappedSegmentLog implements ConsumedLog {
  /** Sparse, as the JetStream log declares: the coordinator reads rather than trusting its queue. */
  readonly denseOffsets = false;
  constructor(readonly inner: SegmentLog) {}
  get durableNextOffset(): number {
    return this.inner.durableNextOffset;
  }
  async *read(fromOffset: number): AsyncGenerator<LogRecord> {
    yield* this.inner.read(fromOffset);
  }
  truncateBefore(offset: number): Promise<void> {
    return this.inner.truncateBefore(offset);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

export { eventually } from './eventually.js';
