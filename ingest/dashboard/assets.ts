/**
 * The dashboard's static files, read once at startup and served from memory: the page
 * (ingest/dashboard/page/) and uPlot from its npm package (resolved with createRequire, so it is
 * whatever `npm ci` installed — nothing comes from the internet). From dist/ the page is found
 * in the sources next to it (dist/ lives in the package root; tsc does not copy .html/.js/.css).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { internalError } from '../../common/errors.js';

export interface Asset {
  body: Buffer;
  contentType: string;
  etag: string;
}

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
};

function pageDir(): string {
  const candidates = [new URL('./page/', import.meta.url), new URL('../../../ingest/dashboard/page/', import.meta.url)].map((u) => fileURLToPath(u));
  const dir = candidates.find((d) => existsSync(`${d}index.html`));
  if (!dir) throw internalError('dashboard_assets_missing', `the dashboard page is missing (looked in ${candidates.join(', ')})`);
  return dir;
}

function load(path: string): Asset {
  const body = readFileSync(path);
  const ext = path.slice(path.lastIndexOf('.') + 1);
  return { body, contentType: TYPES[ext] ?? 'application/octet-stream', etag: `"${createHash('sha1').update(body).digest('base64url')}"` };
}

/** name (as in /dashboard/assets/<name>) → asset; plus the page itself under "index.html". */
export function loadDashboardAssets(): Map<string, Asset> {
  const require = createRequire(import.meta.url);
  const uplotDir = join(dirname(require.resolve('uplot/package.json')), 'dist', '/');
  const dir = pageDir();
  return new Map([
    ['index.html', load(`${dir}index.html`)],
    ['app.js', load(`${dir}app.js`)],
    ['style.css', load(`${dir}style.css`)],
    ['uPlot.iife.min.js', load(`${uplotDir}uPlot.iife.min.js`)],
    ['uPlot.min.css', load(`${uplotDir}uPlot.min.css`)],
  ]);
}
