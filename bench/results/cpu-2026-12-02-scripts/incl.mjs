import { readFileSync } from 'node:fs';
const [file, events, ...names] = process.argv.slice(2);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const dt = new Map();
for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i + 1] ?? 0));
const res = Object.fromEntries(names.map((n) => [n, 0]));
let total = 0;
for (const [id, t] of dt) {
  total += t;
  const seen = new Set();
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const fn = byId.get(x).callFrame.functionName;
    if (names.includes(fn) && !seen.has(fn)) { seen.add(fn); res[fn] += t; }
  }
}
for (const [k, v] of Object.entries(res)) console.log((v / Number(events)).toFixed(2).padStart(8), 'µs/ev', k);
