// node --import tsx /tmp/cpu/engine-micro.mts [rounds] — ShardRuntime (one shard, in this thread) of base vs new over the same
// log records (loadgen traffic, ~20 events per record as at 8 K ev/s HTTP, or 1000 for the Arrow max shape), processRecords in
// ranges of 2 records + a checkpoint every 100 records; CPU (process.cpuUsage) per event, variants interleaved per round.
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
const rounds = Number(process.argv[2] ?? 5);
const perRecord = Number(process.argv[3] ?? 20);
const perRange = Number(process.argv[4] ?? 2);
const roots = { base: '/tmp/cpu-base', new: '/tmp/cpu-new' } as const;
const { TrafficGenerator } = await import('/tmp/cpu-new/loadgen/generator.ts');
const { canonicalRow } = await import('/tmp/cpu-new/loadgen/encode.ts');
const { IngestBatchBuilder } = await import('/tmp/cpu-new/ingest/batch-builder.ts');
const { defaultEngineOptions } = await import('/tmp/cpu-new/engine/options.ts');
const mods = { base: await import(`${roots.base}/engine/shard-runtime.ts`), new: await import(`${roots.new}/engine/shard-runtime.ts`) };
const o = defaultEngineOptions();
const tmp = mkdtempSync('/tmp/cpu/em-');
const rts: Record<string, any> = {};
for (const v of ['base', 'new'] as const) {
  rts[v] = await mods[v].ShardRuntime.open(0, { shards: 1, dataDir: join(tmp, v, 'data'), lake: join(tmp, v, 'lake'), allowedLatenessMs: o.allowedLatenessMs, sessionGapMs: o.sessionGapMs, dedupTtlMs: o.dedupTtlMs, compression: o.compression, targetFileBytes: o.targetFileBytes, metricEventTypes: o.metricEventTypes, workerNice: 0, maxRowsPerParquetCall: o.maxRowsPerParquetCall, maxBytesPerParquetCall: o.maxBytesPerParquetCall, encodeChunkRows: o.encodeChunkRows, encodeChunkBytes: o.encodeChunkBytes });
}
const g = new TrafficGenerator({ seed: 3, users: 5000, startTime: Date.now() - 3_600_000, stepMs: 1000 / 2000, duplicateRate: 0.02, jitterMs: 5000, lateRate: 0.01, tooLateRate: 0.001 });
const b = new IngestBatchBuilder(perRecord);
let offset = 0;
const cpu: Record<string, number[]> = { base: [], new: [] };
const RECORDS = Math.max(20, Math.round(12000 / perRecord));
for (let r = 0; r < rounds; r++) {
  const records: Uint8Array[] = [];
  let events = 0;
  for (let k = 0; k < RECORDS; k++) {
    for (let i = 0; i < perRecord; i++) { const e = g.next(); if (e.invalid) continue; b.push(canonicalRow(e, Date.now())); events++; }
    records.push(b.toIPC());
    b.reset();
  }
  const order = r % 2 ? ['new', 'base'] : ['base', 'new'];
  for (const v of order) {
    const rt = rts[v];
    const c0 = process.cpuUsage();
    for (let k = 0; k < records.length; k += perRange) {
      const slice = records.slice(k, k + perRange);
      rt.processRecords(slice.map((_, j) => offset + k + j), slice.map((p) => p.slice().buffer));
      if ((k + perRange) % 500 < perRange) await rt.checkpoint();
    }
    await rt.checkpoint();
    const c = process.cpuUsage(c0);
    cpu[v]!.push((c.user + c.system) / events);
  }
  offset += records.length;
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1]!;
cpu.base!.shift(); cpu.new!.shift(); // round 0 = JIT warm-up
  const ratios = cpu.base!.map((x, i) => cpu.new![i]! / x);
console.log(JSON.stringify({ perRecord, perRange, rounds, recordsPerRound: RECORDS, baseUs: cpu.base!.map((x) => +x.toFixed(1)), newUs: cpu.new!.map((x) => +x.toFixed(1)), medianBase: +med(cpu.base!).toFixed(1), medianNew: +med(cpu.new!).toFixed(1), medianRatioNewOverBase: +med(ratios).toFixed(3) }));
for (const v of ['base', 'new']) await rts[v].close();
rmSync(tmp, { recursive: true, force: true });
