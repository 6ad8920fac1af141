// `npm run build` (also run by `npm ci` through `prepare`): compiles the runtime sources to dist/
// with tsconfig.build.json, then copies what tsc does not emit — the metric SQL files and the
// `sluice` entry point (dist/bin/sluice.js, which bench/e2e-server.js starts). Not a sluice command.
//
// The compile is incremental (dist/.tsbuildinfo), so an up-to-date dist/ is left untouched and a
// server or test already running from it is not disturbed. `npm run clean` starts over.
'use strict';
const { spawnSync } = require('node:child_process');
const { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } = require('node:fs');
const { join } = require('node:path');

const root = join(__dirname, '..');
const dist = join(root, 'dist');

// tsc trusts its build info even when the files it emitted were deleted since.
if (!existsSync(join(dist, 'cli', 'main.js'))) rmSync(join(dist, '.tsbuildinfo'), { force: true });
const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
if (tsc.status !== 0) {
  process.stderr.write(`build: tsc failed (${tsc.status ?? tsc.signal})\n`);
  process.exit(1);
}

/** Makes `to` hold exactly the files of `from` whose names end with `ext`, rewriting only changed ones. */
function mirror(from, to, ext) {
  mkdirSync(to, { recursive: true });
  const want = readdirSync(from).filter((n) => n.endsWith(ext));
  for (const name of readdirSync(to)) if (!want.includes(name)) rmSync(join(to, name), { force: true });
  for (const name of want) copyIfChanged(join(from, name), join(to, name));
}

function copyIfChanged(from, to) {
  if (existsSync(to) && readFileSync(to).equals(readFileSync(from))) return;
  copyFileSync(from, to);
}

mirror(join(root, 'analytics', 'metrics'), join(dist, 'analytics', 'metrics'), '.sql');
mkdirSync(join(dist, 'bin'), { recursive: true });
for (const name of ['sluice.js', 'package.json']) copyIfChanged(join(root, 'bin', name), join(dist, 'bin', name));
