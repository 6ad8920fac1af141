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
 * above the budget), not refused.
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

  constructor(readonly budgetBytes: number) {}

  /** The resident memory above which the server refuses (0: no budget). */
  get markBytes(): number {
    if (this.budgetBytes <= 0) return 0;
    return this.restingOver > 0 ? this.restingOver + Math.floor(this.budgetBytes * HEADROOM_FRACTION) : this.budgetBytes;
  }

  /**
   * One sample. `atRest`: nothing acknowledged is waiting for the engine (undefined when the
   * server cannot know — no engine attached — and the budget then stays the mark). Returns true
   * when this sample first finds (or finds higher than the mark allowed for) memory at rest over
   * the budget: the caller logs it once.
   */
  observe(memoryBytes: number, atRest: boolean | undefined): boolean {
    if (this.budgetBytes <= 0 || atRest !== true) return false;
    if (memoryBytes <= this.budgetBytes) {
      this.restingOver = 0;
      return false;
    }
    const news = this.restingOver === 0 || memoryBytes > this.markBytes;
    this.restingOver = memoryBytes;
    return news;
  }

  /** True when memory is above the mark: refuse. */
  over(memoryBytes: number): boolean {
    return this.budgetBytes > 0 && memoryBytes > this.markBytes;
  }
}
