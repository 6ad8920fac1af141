// node --import tsx /tmp/cpu/dlq-micro.mts — encodeDeadLetters, base (Arrow builders + tableToIPC) vs new (fixed-layout writer), interleaved
const cpuMs = (): number => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
const a = await import('/tmp/cpu-base/ingest/dead-letters.ts');
const b = await import('/tmp/cpu-new/ingest/dead-letters.ts');
const rs = [{ index: 7, code: 'missing_user', message: 'the event has neither userId nor anonymousId; send one', raw: '{"type":"track","event":"Product Viewed","messageId":"m-1","timestamp":"2026-12-02T10:00:00.000Z","properties":{"sku":"A-1","price":9.99}}' }];
const A: number[] = [], B: number[] = [];
for (let k = 0; k < 21; k++) {
  let t = cpuMs(); for (let q = 0; q < 50; q++) a.encodeDeadLetters(rs, 'http', 'K', 1764676800123); A.push(((cpuMs() - t) * 1000) / 50);
  t = cpuMs(); for (let q = 0; q < 50; q++) b.encodeDeadLetters(rs, 'http', 'K', 1764676800123); B.push(((cpuMs() - t) * 1000) / 50);
}
const med = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1]!;
const R = A.map((x, i) => x / B[i]!);
console.log(`encodeDeadLetters (1 reject): base ${med(A).toFixed(1)} µs/call, new ${med(B).toFixed(1)} µs/call, median same-slice ratio base/new ${med(R).toFixed(1)}`);
