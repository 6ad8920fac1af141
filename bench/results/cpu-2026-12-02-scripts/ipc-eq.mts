const root = process.argv[2] ?? '/tmp/cpu-new';
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const { TrafficGenerator } = await import(`${root}/loadgen/generator.ts`);
const { canonicalRow } = await import(`${root}/loadgen/encode.ts`);
const { IngestBatchBuilder } = await import(`${root}/ingest/batch-builder.ts`);
const { readFlatIpc } = await import(`${root}/common/ipc-read.ts`);
const { tableFromIPC } = await import('/work/main/node_modules/apache-arrow/Arrow.node.mjs');
const g = new TrafficGenerator({ seed: 1, users: 20000, startTime: Date.now() - 60_000, stepMs: 1, duplicateRate: 0.02 });
const dump = (schema, batches) => JSON.stringify({ f: schema.fields.map((f) => `${f.name}:${f.type}:${f.nullable}`), rows: batches.flatMap((b) => b.toArray().map((r) => r.toJSON())) }, (k, v) => (typeof v === 'bigint' ? String(v) : v));
for (const rows of [1, 20, 200, 2000]) {
  const b = new IngestBatchBuilder(rows);
  for (let i = 0; i < rows; i++) { const r = canonicalRow(g.next(), Date.now()); if (i % 3 === 0) { r.anonymous_id = null; r.country = null; } if (i % 7 === 0) r.properties = '{"x":"é😀"}'; b.push(r); }
  const bytes = b.toIPC();
  const t0 = tableFromIPC(bytes);
  const mine = readFlatIpc(bytes);
  if (!mine) throw new Error('undefined');
  const same = dump(t0.schema, t0.batches) === dump(mine.schema, mine.batches);
  const A: number[] = [], C: number[] = [], Q: number[] = [];
  for (let k = 0; k < 15; k++) {
    let t = cpuMs(); for (let q = 0; q < 20; q++) tableFromIPC(bytes); A.push((cpuMs() - t) * 50);
    t = cpuMs(); for (let q = 0; q < 20; q++) readFlatIpc(bytes); C.push((cpuMs() - t) * 50); Q.push(A[A.length - 1]! / C[C.length - 1]!);
  }
  const med = (x: number[]) => x.sort((p, q) => p - q)[x.length >> 1];
  const a = med(A), c = med(C);
  console.log(rows, 'rows', bytes.length, 'B; equal', same, '; tableFromIPC', a.toFixed(1), 'µs; readFlatIpc', c.toFixed(1), 'µs; median same-slice ratio', med(Q).toFixed(2));
}
