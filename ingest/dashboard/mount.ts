/**
 * The dashboard's routes on the ingest server's uWS app, and the tap the ingest path feeds.
 *
 *   GET /                         → 302 /dashboard
 *   GET /dashboard?key=READ_KEY   → 303 /dashboard + HttpOnly SameSite=Strict cookie (the key leaves the URL)
 *   GET /dashboard?key=OTHER      → 303 /dashboard?wrong-key (no cookie; that key leaves the URL too) → 401 + the form, saying so
 *   GET /dashboard                → the page (read key from the cookie or `Authorization: Bearer`), else 401 + a key form
 *   GET /dashboard/snapshot       → the last tick frame as JSON (read key)
 *   GET /dashboard/assets/<file>  → app.js, style.css, uPlot (from node_modules); no data, no key
 *   WS  /dashboard/stream         → init frame, then one shared frame per tick (read key; same-origin or allowedOrigins)
 *
 * Only read keys open these (write keys get 401, and no write key is ever in the page). Every
 * HTML and JSON answer carries a strict Content-Security-Policy (scripts, styles and the stream
 * from this server only) and no wildcard CORS.
 */
import { timingSafeEqual } from 'node:crypto';
import uws from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { IngestRow } from '../batch-builder.js';
import type { IngestOptions } from '../options.js';
import { DEFAULT_METRIC_EVENT_TYPES } from '../../engine/gold-sql.js';
import { loadDashboardAssets, type Asset } from './assets.js';
import { DashboardHub, type DashboardClient } from './hub.js';
import { IngestTap } from './tap.js';

const TOPIC = 'sluice/dashboard';
const COOKIE = 'sluice_read';

/** What the ingest server holds of a mounted dashboard. */
export interface Dashboard {
  readonly hub: DashboardHub;
  /** Per acknowledged request, after its fsync: its accepted rows (O(1) per row). */
  tap(rows: readonly IngestRow[]): void;
  /** Stops the ticks and closes every dashboard connection. */
  close(): void;
}

interface SocketData {
  client?: DashboardClient;
  closed: boolean;
}

const same = (a: string, b: string): boolean => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

function cookieValue(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1).trim());
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

/** A Host header we are willing to echo into the CSP (host[:port], IPv6 in brackets). */
const SAFE_HOST = /^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

function securityHeaders(host: string): Record<string, string> {
  const ws = SAFE_HOST.test(host) ? ` ws://${host} wss://${host}` : '';
  return {
    'Content-Security-Policy': `default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'${ws}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'`,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Cache-Control': 'no-store',
  };
}

const login = (wrongKey: boolean): string => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice dashboard — read key needed</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/dashboard/assets/style.css"></head>
<body class="login"><main><h1>Sluice</h1>${wrongKey ? '<p><b>That key does not open this dashboard.</b></p>' : ''}<p>This dashboard needs a <b>read key</b> (not a write key): <code>sluice serve</code> prints it, or see <code>DATA/read-key</code>.</p>
<form method="get" action="/dashboard"><label>Read key <input name="key" type="password" autocomplete="current-password" required></label> <button type="submit">Open</button></form></main></body></html>`;
const LOGIN = login(false);
const LOGIN_WRONG_KEY = login(true);

type Res = uws.HttpResponse;

function answer(res: Res, status: string, headers: Record<string, string>, body: string | Buffer = ''): void {
  res.cork(() => {
    res.writeStatus(status);
    for (const k in headers) res.writeHeader(k, headers[k]!);
    res.end(body);
  });
}

/**
 * Mounts the dashboard when `options.dashboard.readKeys` is non-empty (else returns undefined
 * and mounts nothing). Call before the server's catch-all route.
 */
export function mountDashboard(app: uws.TemplatedApp, options: IngestOptions, deps: { live?: () => unknown; log: Logger }): Dashboard | undefined {
  const o = options.dashboard;
  if (o.readKeys.length === 0) return undefined;
  const assets = loadDashboardAssets();
  const tap = new IngestTap({
    lateAfterMs: o.lateAfterMs,
    maxDimensionValues: o.maxDimensionValues,
    tailSize: o.tailSize,
    tailPerSecond: o.tailPerSecond,
    metricTypes: { ...DEFAULT_METRIC_EVENT_TYPES, ...o.metricEventTypes },
  });
  const hub = new DashboardHub(o, { tap, live: deps.live, log: deps.log, publish: (frame) => app.publish(TOPIC, frame, false) });
  void hub.start().catch((err: unknown) => deps.log.error({ err }, 'dashboard failed to start'));
  const sockets = new Set<uws.WebSocket<SocketData>>();

  const isReadKey = (k: string | undefined): boolean => k !== undefined && k !== '' && o.readKeys.some((rk) => same(rk, k));
  /** The read key of a request: `Authorization: Bearer`, else the cookie. Read synchronously (uWS request objects die after the handler). */
  const keyOf = (req: uws.HttpRequest): string | undefined => {
    const auth = req.getHeader('authorization');
    if (auth.length > 7 && auth.slice(0, 7).toLowerCase() === 'bearer ') return auth.slice(7).trim();
    return cookieValue(req.getHeader('cookie'), COOKIE);
  };
  const unauthorized = (res: Res, host: string, json: boolean, wrongKey = false): void => {
    if (json) answer(res, '401 Unauthorized', { 'Content-Type': 'application/json', ...securityHeaders(host) }, '{"ok":false,"code":"read_key_required","message":"send a dashboard read key as Authorization: Bearer KEY (write keys do not open the dashboard)"}');
    else answer(res, '401 Unauthorized', { 'Content-Type': 'text/html; charset=utf-8', ...securityHeaders(host) }, wrongKey ? LOGIN_WRONG_KEY : LOGIN);
  };
  /** CORS for the JSON endpoint: only configured origins, never a wildcard. */
  const cors = (origin: string): Record<string, string> => (origin !== '' && o.allowedOrigins.includes(origin) ? { 'Access-Control-Allow-Origin': origin, Vary: 'Origin' } : { Vary: 'Origin' });
  /** Same origin as the Host header, a configured origin, or no Origin at all (not a browser). */
  const originAllowed = (origin: string, host: string): boolean => origin === '' || origin === `http://${host}` || origin === `https://${host}` || o.allowedOrigins.includes(origin);

  app.get('/', (res, req) => {
    const host = req.getHeader('host');
    answer(res, '302 Found', { Location: '/dashboard', ...securityHeaders(host) });
  });
  app.get('/dashboard', (res, req) => {
    const host = req.getHeader('host');
    const query = new URLSearchParams(req.getQuery() ?? '');
    const given = query.get('key');
    if (given !== null) {
      // A key that does not open it leaves the URL too (a write key pasted by mistake must not stay in the history).
      if (!isReadKey(given)) return answer(res, '303 See Other', { Location: '/dashboard?wrong-key', ...securityHeaders(host) });
      answer(res, '303 See Other', {
        Location: '/dashboard',
        'Set-Cookie': `${COOKIE}=${encodeURIComponent(given)}; Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=2592000`,
        ...securityHeaders(host),
      });
      return;
    }
    if (!isReadKey(keyOf(req))) return unauthorized(res, host, false, query.has('wrong-key'));
    const page = assets.get('index.html')!;
    answer(res, '200 OK', { 'Content-Type': page.contentType, ...securityHeaders(host) }, page.body);
  });
  app.get('/dashboard/snapshot', (res, req) => {
    const host = req.getHeader('host');
    const origin = req.getHeader('origin');
    if (!isReadKey(keyOf(req))) return unauthorized(res, host, true);
    const frame = hub.snapshot();
    answer(res, frame ? '200 OK' : '503 Service Unavailable', { 'Content-Type': 'application/json', ...securityHeaders(host), ...cors(origin) }, frame ? JSON.stringify(frame) : '{"ok":false,"code":"starting","message":"the dashboard is starting; retry in a second"}');
  });
  app.get('/dashboard/assets/:name', (res, req) => {
    const asset: Asset | undefined = assets.get(req.getParameter(0) ?? '');
    if (!asset || req.getParameter(0) === 'index.html') return answer(res, '404 Not Found', { 'Content-Type': 'text/plain' }, 'no such asset');
    if (req.getHeader('if-none-match') === asset.etag) return answer(res, '304 Not Modified', { ETag: asset.etag });
    answer(res, '200 OK', { 'Content-Type': asset.contentType, ETag: asset.etag, 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff', 'Cross-Origin-Resource-Policy': 'same-origin' }, asset.body);
  });

  app.ws<SocketData>('/dashboard/stream', {
    compression: uws.DISABLED,
    maxPayloadLength: 1024,
    // The hub cuts a client past maxBackpressureBytes at its next tick; uWS is the backstop in between.
    maxBackpressure: 2 * o.maxBackpressureBytes,
    closeOnBackpressureLimit: 1,
    idleTimeout: 120,
    upgrade: (res, req, context) => {
      const host = req.getHeader('host');
      const origin = req.getHeader('origin');
      const key = keyOf(req);
      const secKey = req.getHeader('sec-websocket-key');
      const protocol = req.getHeader('sec-websocket-protocol');
      const extensions = req.getHeader('sec-websocket-extensions');
      if (!isReadKey(key)) return unauthorized(res, host, true);
      if (!originAllowed(origin, host)) {
        return answer(res, '403 Forbidden', { 'Content-Type': 'application/json' }, '{"ok":false,"code":"origin_not_allowed","message":"this origin may not open the dashboard stream; add it to dashboard.allowedOrigins"}');
      }
      if (hub.clientCount >= o.maxClients) {
        return answer(res, '503 Service Unavailable', { 'Content-Type': 'application/json', 'Retry-After': '5' }, '{"ok":false,"code":"too_many_dashboards","message":"too many open dashboards; retry later"}');
      }
      res.upgrade<SocketData>({ closed: false }, secKey, protocol, extensions, context);
    },
    open: (ws) => {
      const data = ws.getUserData();
      const client: DashboardClient = {
        getBufferedAmount: () => ws.getBufferedAmount(),
        close: () => {
          if (!data.closed) ws.close();
        },
      };
      data.client = client;
      sockets.add(ws);
      hub.addClient(client);
      ws.subscribe(TOPIC);
      if (hub.snapshot()) ws.send(hub.initFrame(), false);
    },
    message: (ws, message) => {
      // The page may ask for the whole state again (e.g. after its tab was hidden): {"type":"resync"}.
      if (message.byteLength < 64 && Buffer.from(message).toString('utf8').includes('"resync"') && hub.snapshot()) ws.send(hub.initFrame(), false);
    },
    close: (ws) => {
      const data = ws.getUserData();
      data.closed = true;
      sockets.delete(ws);
      if (data.client) hub.removeClient(data.client);
    },
  });

  return {
    hub,
    tap: (rows) => tap.add(rows, Date.now()),
    close: () => {
      hub.stop();
      for (const ws of [...sockets]) ws.end(1001, 'server shutting down');
    },
  };
}
