/**
 * Compare two V8 heap snapshots of the same isolate (bench-only; for bench/mem-probe.mjs's output).
 *
 *   node --max-old-space-size=6000 bench/mem-heapsnap.mjs A.heapsnapshot B.heapsnapshot [--top 25] [--paths 8]
 *
 * Prints, for A and B: totals (self size of all nodes; ArrayBuffer backing stores), the classes
 * (node type + name) by self size and count, with B − A; the classes by retained size (dominator
 * tree, weak edges ignored) in B; and for B the objects that are NEW (node id absent in A — ids are
 * stable across snapshots of one isolate) grouped by class, with the retainer paths (up to 7 hops
 * towards the root, through the first non-weak retainer of each node) that hold the most new bytes.
 * ArrayBuffer backing stores (native "system / JSArrayBufferData" nodes) count as their own class.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: flags, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, paths: { type: 'string', default: '8' } } });
const TOP = Number(flags.top);
const PATHS = Number(flags.paths);
const mib = (b) => (b / 2 ** 20).toFixed(2);

function load(path) {
  const s = JSON.parse(readFileSync(path, 'utf8'));
  const m = s.snapshot.meta;
  const NF = m.node_fields.length;
  const EF = m.edge_fields.length;
  const nTypes = m.node_types[0];
  const eTypes = m.edge_types[0];
  const fType = m.node_fields.indexOf('type');
  const fName = m.node_fields.indexOf('name');
  const fId = m.node_fields.indexOf('id');
  const fSize = m.node_fields.indexOf('self_size');
  const fEc = m.node_fields.indexOf('edge_count');
  const nodes = s.nodes;
  const edges = s.edges;
  const strings = s.strings;
  const N = nodes.length / NF;
  const firstEdge = new Uint32Array(N + 1);
  for (let i = 0, e = 0; i < N; i++) {
    firstEdge[i] = e;
    e += nodes[i * NF + fEc] * EF;
  }
  firstEdge[N] = edges.length;
  const weak = eTypes.indexOf('weak');
  const shortcut = eTypes.indexOf('shortcut');
  const cls = (i) => {
    const t = nTypes[nodes[i * NF + fType]];
    const name = strings[nodes[i * NF + fName]];
    if (t === 'object' || t === 'native' || t === 'closure' || t === 'hidden' || t === 'synthetic') return `${t}:${name.length > 80 ? name.slice(0, 80) + '…' : name}`;
    return `(${t})`;
  };
  // Reverse edges (non-weak): the first retainer of each node, and the retainer count.
  const retainers = Array.from({ length: 0 });
  const firstRet = new Int32Array(N).fill(-1);
  const firstRetEdge = new Int32Array(N).fill(-1);
  const retCount = new Uint32Array(N);
  const revStart = new Uint32Array(N + 1);
  for (let i = 0; i < N; i++)
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += EF) {
      const et = edges[e];
      if (et === weak || et === shortcut) continue;
      revStart[edges[e + 2] / NF + 1]++;
    }
  for (let i = 0; i < N; i++) revStart[i + 1] += revStart[i];
  const rev = new Uint32Array(revStart[N]);
  const revEdge = new Uint32Array(revStart[N]);
  const fill = revStart.slice(0, N);
  for (let i = 0; i < N; i++)
    for (let e = firstEdge[i]; e < firstEdge[i + 1]; e += EF) {
      const et = edges[e];
      if (et === weak || et === shortcut) continue;
      const to = edges[e + 2] / NF;
      revEdge[fill[to]] = e;
      rev[fill[to]++] = i;
      retCount[to]++;
      if (firstRet[to] === -1 && nTypes[nodes[i * NF + fType]] !== 'synthetic') {
        firstRet[to] = i;
        firstRetEdge[to] = e;
      }
    }
  void retainers;
  // BFS distance from the root: a path goes through the retainer nearest the root (as DevTools shows).
  const dist = new Int32Array(N).fill(-1);
  const queue = new Int32Array(N);
  let qh = 0;
  let qt = 0;
  queue[qt++] = 0;
  dist[0] = 0;
  while (qh < qt) {
    const n = queue[qh++];
    for (let e = firstEdge[n]; e < firstEdge[n + 1]; e += EF) {
      const et = edges[e];
      if (et === weak || et === shortcut) continue;
      const to = edges[e + 2] / NF;
      if (dist[to] === -1) {
        dist[to] = dist[n] + 1;
        queue[qt++] = to;
      }
    }
  }
  for (let n = 0; n < N; n++) {
    let best = -1;
    for (let r = revStart[n]; r < revStart[n + 1]; r++) {
      const from = rev[r];
      if (dist[from] < 0) continue;
      if (best === -1 || dist[from] < dist[rev[best]]) best = r;
    }
    if (best >= 0) {
      firstRet[n] = rev[best];
      firstRetEdge[n] = revEdge[best];
    }
  }
  const edgeName = (e) => {
    const t = eTypes[edges[e]];
    const n = edges[e + 1];
    return t === 'element' || t === 'hidden' ? '[]' : t === 'internal' || t === 'property' || t === 'context' ? `.${strings[n]}` : `${t}:${n}`;
  };
  return { N, NF, EF, nodes, edges, strings, nTypes, fType, fName, fId, fSize, firstEdge, rev, revStart, firstRet, firstRetEdge, cls, edgeName, weak, shortcut };
}

function dominators(g) {
  // Cooper–Harvey–Kennedy over a DFS postorder from the root (node 0), weak/shortcut edges ignored.
  const { N, NF, edges, firstEdge, rev, revStart, weak, shortcut } = g;
  const post = new Int32Array(N).fill(-1);
  const order = new Int32Array(N);
  let k = 0;
  const stack = new Int32Array(N * 2 + 2);
  const visited = new Uint8Array(N);
  let sp = 0;
  stack[sp++] = 0;
  stack[sp++] = firstEdge[0];
  visited[0] = 1;
  while (sp > 0) {
    const e = stack[sp - 1];
    const n = stack[sp - 2];
    if (e < firstEdge[n + 1]) {
      stack[sp - 1] = e + 3;
      const et = edges[e];
      if (et === weak || et === shortcut) continue;
      const to = edges[e + 2] / NF;
      if (!visited[to]) {
        visited[to] = 1;
        stack[sp++] = to;
        stack[sp++] = firstEdge[to];
      }
    } else {
      sp -= 2;
      post[n] = k;
      order[k++] = n;
    }
  }
  const idom = new Int32Array(N).fill(-1);
  idom[0] = 0;
  const intersect = (a, b) => {
    while (a !== b) {
      while (post[a] < post[b]) a = idom[a];
      while (post[b] < post[a]) b = idom[b];
    }
    return a;
  };
  let changed = true;
  while (changed) {
    changed = false;
    for (let p = k - 2; p >= 0; p--) {
      const n = order[p];
      let nd = -1;
      for (let r = revStart[n]; r < revStart[n + 1]; r++) {
        const pred = rev[r];
        if (post[pred] === -1 || idom[pred] === -1) continue;
        nd = nd === -1 ? pred : intersect(pred, nd);
      }
      if (nd !== -1 && idom[n] !== nd) {
        idom[n] = nd;
        changed = true;
      }
    }
  }
  const retained = new Float64Array(N);
  for (let i = 0; i < N; i++) retained[i] = g.nodes[i * NF + g.fSize];
  for (let p = 0; p < k; p++) {
    const n = order[p];
    if (n !== 0 && idom[n] >= 0 && idom[n] !== n) retained[idom[n]] += retained[n];
  }
  return { idom, retained, reachable: k };
}

function byClass(g) {
  const out = new Map();
  for (let i = 0; i < g.N; i++) {
    const c = g.cls(i);
    const a = out.get(c) ?? { count: 0, self: 0 };
    a.count++;
    a.self += g.nodes[i * g.NF + g.fSize];
    out.set(c, a);
  }
  return out;
}

function path(g, i, hops = 7) {
  const parts = [g.cls(i)];
  let n = i;
  for (let h = 0; h < hops; h++) {
    const r = g.firstRet[n];
    if (r < 0) break;
    parts.push(`${g.edgeName(g.firstRetEdge[n])} ← ${g.cls(r)}`);
    n = r;
  }
  return parts.join(' ');
}

const [aPath, bPath] = positionals;
console.log(`A = ${aPath}\nB = ${bPath}`);
const A = load(aPath);
const ca = byClass(A);
const idsA = new Set();
for (let i = 0; i < A.N; i++) idsA.add(A.nodes[i * A.NF + A.fId]);
const totA = [...ca.values()].reduce((s, x) => s + x.self, 0);
const abA = ca.get('native:system / JSArrayBufferData')?.self ?? 0;
A.nodes = null;
A.edges = null;
const B = load(bPath);
const cb = byClass(B);
const totB = [...cb.values()].reduce((s, x) => s + x.self, 0);
const abB = cb.get('native:system / JSArrayBufferData')?.self ?? 0;
console.log(`nodes A ${A.N} B ${B.N}; self total MiB A ${mib(totA)} B ${mib(totB)}; ArrayBuffer backing stores MiB A ${mib(abA)} B ${mib(abB)}`);

const keys = new Set([...ca.keys(), ...cb.keys()]);
const rows = [...keys].map((c) => ({ c, a: ca.get(c) ?? { count: 0, self: 0 }, b: cb.get(c) ?? { count: 0, self: 0 } }));
console.log(`\n== classes by growth of self size (B − A), top ${TOP}`);
for (const r of rows.sort((x, y) => y.b.self - y.a.self - (x.b.self - x.a.self)).slice(0, TOP))
  console.log(`${mib(r.b.self - r.a.self).padStart(9)} MiB  count ${String(r.a.count).padStart(8)} → ${String(r.b.count).padStart(8)}  self ${mib(r.a.self)} → ${mib(r.b.self)}  ${r.c}`);
console.log(`\n== classes by growth of count, top ${TOP}`);
for (const r of rows.sort((x, y) => y.b.count - y.a.count - (x.b.count - x.a.count)).slice(0, TOP))
  console.log(`${String(r.b.count - r.a.count).padStart(9)}  count ${String(r.a.count).padStart(8)} → ${String(r.b.count).padStart(8)}  self MiB ${mib(r.a.self)} → ${mib(r.b.self)}  ${r.c}`);

const { retained } = dominators(B);
const retByClass = new Map();
const topNodes = [];
for (let i = 0; i < B.N; i++) {
  const c = B.cls(i);
  if (c.startsWith('(') || c.startsWith('synthetic:')) continue;
  retByClass.set(c, (retByClass.get(c) ?? 0) + retained[i]);
  topNodes.push(i);
}
topNodes.sort((x, y) => retained[y] - retained[x]);
console.log(`\n== B: single objects with the largest retained size (dominator tree), top ${TOP}`);
for (const i of topNodes.slice(0, TOP)) console.log(`${mib(retained[i]).padStart(9)} MiB  id ${B.nodes[i * B.NF + B.fId]}  ${path(B, i, 5)}`);

console.log(`\n== B: NEW live objects (ids not in A) by class, top ${TOP} by self size`);
const fresh = new Map();
for (let i = 0; i < B.N; i++) {
  if (idsA.has(B.nodes[i * B.NF + B.fId])) continue;
  const c = B.cls(i);
  const a = fresh.get(c) ?? { count: 0, self: 0, nodes: [] };
  a.count++;
  a.self += B.nodes[i * B.NF + B.fSize];
  a.nodes.push(i);
  fresh.set(c, a);
}
const freshRows = [...fresh.entries()].sort((x, y) => y[1].self - x[1].self).slice(0, TOP);
for (const [c, a] of freshRows) console.log(`${mib(a.self).padStart(9)} MiB  ${String(a.count).padStart(8)}×  ${c}`);
console.log(`\n== B: retainer paths of the new objects of the ${PATHS} biggest new classes (by new self bytes held)`);
for (const [c, a] of freshRows.slice(0, PATHS)) {
  const paths = new Map();
  for (const i of a.nodes) {
    const p = path(B, i, 7).slice(c.length);
    const x = paths.get(p) ?? { count: 0, self: 0 };
    x.count++;
    x.self += B.nodes[i * B.NF + B.fSize];
    paths.set(p, x);
  }
  console.log(`-- ${c}: ${a.count} new, ${mib(a.self)} MiB`);
  for (const [p, x] of [...paths.entries()].sort((u, v) => v[1].self - u[1].self).slice(0, 5)) console.log(`   ${mib(x.self).padStart(8)} MiB ${String(x.count).padStart(7)}×  ${p}`);
}

// ArrayBuffer backing stores of B by owner: the first labelled hop on the path towards the root.
const OWNERS = [
  [/\.hot ← object:DedupOperator/, 'dedup hot table (DedupTable)'],
  [/\.pending\w* ← object:DedupOperator/, 'dedup pending ids'],
  [/\.buffers ← object:ShardRuntime/, 'ShardRuntime.buffers (uncommitted batches)'],
  [/\.encoded ← object:ShardRuntime|\.partials ← object:ShardRuntime/, 'ShardRuntime encoded/partials'],
  [/Memory0 ← /, 'parquet-wasm memory'],
  [/getValueBytes/, 'lmdb-js getValueBytes'],
  [/object:ShardRuntime/, 'ShardRuntime (other)'],
  [/object:SegmentLogReader|object:RemoteLog/, 'log readers'],
  [/object:Coordinator/, 'Coordinator'],
];
const owners = new Map();
for (let i = 0; i < B.N; i++) {
  if (B.cls(i) !== 'native:system / JSArrayBufferData') continue;
  const p = path(B, i, 14);
  const hit = OWNERS.find(([re]) => re.test(p));
  const k = hit ? hit[1] : `other: ${p.split(' ← ').slice(1, 5).join(' ← ')}`;
  const x = owners.get(k) ?? { count: 0, self: 0 };
  x.count++;
  x.self += B.nodes[i * B.NF + B.fSize];
  owners.set(k, x);
}
console.log(`\n== B: ArrayBuffer backing stores by owner`);
for (const [k, x] of [...owners.entries()].sort((u, v) => v[1].self - u[1].self).slice(0, TOP)) console.log(`${mib(x.self).padStart(9)} MiB ${String(x.count).padStart(6)}×  ${k}`);
