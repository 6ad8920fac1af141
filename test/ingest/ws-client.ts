/**
 * A WebSocket client for the Arrow stream in tests: `next()` resolves the next JSON ack (or
 * rejects after `timeoutMs`, or when the socket closes first).
 */
import WebSocket from 'ws';
import { basic } from './harness.js';

export interface WsClient {
  ws: WebSocket;
  next(timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Close code once the server closed the socket, else undefined. */
  closed(): number | undefined;
}

export async function openWs(port: number, headers: Record<string, string> = { authorization: basic() }): Promise<WsClient> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/stream`, { headers });
  const acks: Array<Record<string, unknown>> = [];
  const waiters: Array<{ resolve: (a: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];
  let closeCode: number | undefined;
  ws.on('message', (m) => {
    const a = JSON.parse(String(m)) as Record<string, unknown>;
    const w = waiters.shift();
    if (w) w.resolve(a);
    else acks.push(a);
  });
  ws.on('close', (code) => {
    closeCode = code;
    for (const w of waiters.splice(0)) w.reject(new Error(`socket closed (${code}) before an ack`));
  });
  ws.on('error', () => undefined);
  await new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  });
  return {
    ws,
    closed: () => closeCode,
    next: (timeoutMs = 10_000) => {
      if (acks.length > 0) return Promise.resolve(acks.shift()!);
      if (closeCode !== undefined) return Promise.reject(new Error(`socket closed (${closeCode})`));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ack within ${timeoutMs} ms`)), timeoutMs);
        waiters.push({
          resolve: (a) => {
            clearTimeout(timer);
            resolve(a);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
      });
    },
  };
}
