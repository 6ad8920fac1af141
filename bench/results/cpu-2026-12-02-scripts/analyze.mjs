// node analyze.mjs file.cpuprofile [topN] — self time by function and by file; inclusive by function for our files
import { readFileSync } from 'node:fs';
const [file, topN = '30', events] = process.argv.slice(2);
const p = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const dt = new Map();
for (let i = 0; i < p.samples.length; i++) dt.set(p.samples[i], (dt.get(p.samples[i]) ?? 0) + (p.timeDeltas[i + 1] ?? 0));
const total = [...dt.values()].reduce((a, b) => a + b, 0);
const short = (u) => (u || '').replace(/^file:\/\/.*?\/(dist|node_modules)\//, '$1/').replace(/^node:/, 'node:');
const selfF = new Map(), selfFile = new Map(), incl = new Map();
for (const [id, t] of dt) {
  const n = byId.get(id);
  const cf = n.callFrame;
  const key = `${cf.functionName || '(anon)'} ${short(cf.url)}:${cf.lineNumber + 1}`;
  selfF.set(key, (selfF.get(key) ?? 0) + t);
  const fk = short(cf.url) || cf.functionName;
  selfFile.set(fk, (selfFile.get(fk) ?? 0) + t);
  // inclusive: walk up, count each distinct key once
  const seen = new Set();
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const c = byId.get(x).callFrame;
    const k = `${c.functionName || '(anon)'} ${short(c.url)}:${c.lineNumber + 1}`;
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + t);
  }
}
const ms = (t) => (t / 1000).toFixed(0).padStart(7);
const ev = events ? Number(events) : 0;
const fmt = (t) => `${ms(t)} ms ${((100 * t) / total).toFixed(1).padStart(5)}%` + (ev ? ` ${(t / ev).toFixed(2).padStart(6)} µs/ev` : '');
console.log(`total ${ms(total)} ms sampled`);
console.log('--- self by file');
for (const [k, t] of [...selfFile].sort((a, b) => b[1] - a[1]).slice(0, Number(topN))) console.log(fmt(t), k);
console.log('--- self by function');
for (const [k, t] of [...selfF].sort((a, b) => b[1] - a[1]).slice(0, Number(topN))) console.log(fmt(t), k);
console.log('--- inclusive (dist/ only)');
for (const [k, t] of [...incl].filter(([k]) => k.includes('dist/')).sort((a, b) => b[1] - a[1]).slice(0, Number(topN))) console.log(fmt(t), k);
