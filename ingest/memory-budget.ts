/**
 * Admission on memory (ingest.maxMemoryBytes).
 *
 * Refusing events lowers memory only while the engine has work in hand: events acknowledged and
 * not yet committed, whose buffers the next checkpoint frees. Once it has caught up, what is
 * resident stays resident (V8's and parquet-wasm's heaps do not give their pages back), and a
 * server that refused on resident memory alone would refuse for ever, idle (soak 2026-12-02c:
 * 1 GiB budget, the engine's ~750 MiB never shrank, every request 503 with no load at all).
 *
 * So the server refuses above a mark: the budget, or — when memory at rest is already above the
 * budget — memory at rest plus a quarter of the budget (what the engine's buffer bounds, derived
 * from the same budget in engineMemoryLimits, let load add). Being over the budget at rest is the
 * budget being too small for this server: reported (a log line, sluice_memory_admission_mark_bytes
 * above the budget), not refused. The mark follows memory at rest, so while the engine's memory
 * at rest keeps growing (soak 2026-12-03 d1: malloc's heap, +~10 MiB a minute at 2,500 ev/s) the
 * budget does not cap it: each rise of an eighth of the budget is logged again.
 *
 * "At rest" is the local log's uncommitted count at zero and no backlog. A JetStream stream keeps
 * each shard subject's newest record (log/jetstream-log.ts truncateBefore), so its backlog never
 * reads zero: with `--log nats://…` the budget stays the mark, as before.
 */

/** Growth above memory at rest still admitted when the rest is over the budget: this fraction of the budget. */
const HEADROOM_FRACTION = 0.25;

export class MemoryBudget {
  /** Memory at the last sample at rest that was over the budget; 0 while at rest under it. */
  private restingOver = 0;
  /** The mark when `observe` last returned true; 0 while at rest under the budget. */
  private reported = 0;

  constructor(readonly budgetBytes: number) {}

  /** The resident memory above which the server refuses (0: no budget). */
  get markBytes(): number {
    if (this.budgetBytes <= 0) return 0;
    return this.restingOver > 0 ? this.restingOver + Math.floor(this.budgetBytes * HEADROOM_FRACTION) : this.budgetBytes;
  }

  /**
   * One sample. `atRest`: nothing acknowledged is waiting for the engine (undefined when the
   * server cannot know — no engine attached — and the budget then stays the mark). Returns true
   * when this sample first finds memory at rest over the budget, or has moved the mark up by an
   * eighth of the budget or more since it last returned true: the caller logs it, so memory at
   * rest that keeps growing is reported as it grows, not only the first time.
   */
  observe(memoryBytes: number, atRest: boolean | undefined): boolean {
    if (this.budgetBytes <= 0 || atRest !== true) return false;
    if (memoryBytes <= this.budgetBytes) {
      this.restingOver = 0;
      this.reported = 0;
      return false;
    }
    this.restingOver = memoryBytes;
    if (this.reported > 0 && this.markBytes < this.reported + this.budgetBytes / 8) return false;
    this.reported = this.markBytes;
    return true;
  }

  /** True when memory is above the mark: refuse. */
  over(memoryBytes: number): boolean {
    return this.budgetBytes > 0 && memoryBytes > this.markBytes;
  }
}
