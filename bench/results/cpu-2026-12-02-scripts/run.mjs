// node /tmp/cpu/run.mjs <checkout> <load: http8k|arrow35k|idle> <seconds> [node flags...]
// Prints one JSON line: server CPU (serve + engine child, /proc utime+stime) over the load window, acked events, µs/event.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const [checkout, load, secs, ...nodeFlags] = process.argv.slice(2);
const TICK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
const cpu = (pid) => {
  const t = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = t.slice(t.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICK;
};
const tree = (root) => {
  const parent = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const t = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(t.slice(t.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {}
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) for (const [p, pp] of parent) if (pp === out[i]) out.push(p);
  return out;
};
const sample = (root) => {
  const per = {};
  for (const p of tree(root)) {
    try { per[p] = cpu(p); } catch {}
  }
  return per;
};
const busy = () => {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
};

const run = mkdtempSync('/tmp/cpu/run-');
const env = { ...process.env, SLUICE_LOG_LEVEL: 'warn' };
for (const k of Object.keys(env)) if (k.startsWith('SLUICE_') && k !== 'SLUICE_LOG_LEVEL') delete env[k];
const server = spawn(process.execPath, [...nodeFlags, join(checkout, 'bin/sluice.js'), 'serve', '--host', '127.0.0.1', '--port', '0',
  '--data', join(run, 'data'), '--lake', join(run, 'lake'), '--write-key', 'K', '--shards', '4', '--workers', '2', '--flush-interval', '5s'],
  { cwd: run, env, stdio: ['ignore', 'pipe', 'inherit'] });
const url = await new Promise((resolve, reject) => {
  let out = '';
  server.stdout.setEncoding('utf8');
  server.stdout.on('data', (c) => { out += c; const m = /listening on (http:\/\/\S+)/.exec(out); if (m) resolve(m[1]); });
  server.once('exit', (c) => reject(new Error(`server exited ${c}`)));
});
server.stdout.resume();
await new Promise((r) => setTimeout(r, 3000)); // start-up settles
const seconds = Number(secs);
const c0 = sample(server.pid), b0 = busy(), t0 = Date.now();
let acked = 0, lg;
if (load === 'idle') {
  await new Promise((r) => setTimeout(r, seconds * 1000));
} else {
  const args = load === 'http8k' ? ['--protocol', 'http', '--rate', '8000'] : ['--protocol', 'arrow-ws', '--rate', '35000'];
  const out = execFileSync(process.execPath, ['/tmp/cpu-base/bin/sluice.js', 'loadgen', '--url', url, '--write-key', 'K', '--users', '20000', '--seed', '1', '--json', '--duration', `${seconds}s`, ...args],
    { encoding: 'utf8', maxBuffer: 1 << 26 });
  const line = out.trim().split('\n').filter((l) => l.startsWith('{')).pop();
  lg = JSON.parse(line);
  acked = lg.acked ?? lg.total?.acked ?? 0;
  // catch up: wait until backlog is 0 (bounded)
  for (let i = 0; i < 40; i++) {
    try {
      const live = await (await fetch(`${url}/v1/live`, { headers: { authorization: 'Bearer K' } })).json();
      if (!live.backlogEvents) break;
    } catch { break; }
    await new Promise((r) => setTimeout(r, 250));
  }
}
const c1 = sample(server.pid), b1 = busy(), t1 = Date.now();
let cpuS = 0, main = 0;
for (const [p, v] of Object.entries(c1)) { const d = v - (c0[p] ?? 0); cpuS += d; if (Number(p) === server.pid) main += d; }
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));
rmSync(run, { recursive: true, force: true });
const wall = (t1 - t0) / 1000;
console.log(JSON.stringify({ checkout, load, nodeFlags, wallS: wall, acked, cpuS: +cpuS.toFixed(2), ingestS: +main.toFixed(2), engineS: +(cpuS - main).toFixed(2),
  usPerEvent: acked ? +((cpuS * 1e6) / acked).toFixed(1) : undefined, coresServer: +(cpuS / wall).toFixed(3),
  machineBusy: +((1 - (b1.idle - b0.idle) / (b1.total - b0.total)) * 2).toFixed(2), lg: lg && { eventsPerSecond: lg.eventsPerSecond } }));
