/**
 * The long-running commands' shutdown: wait for SIGTERM or SIGINT, log `stopping` with the signal,
 * run `close`, and resolve when it is done (a failed close is logged and sets exit code 1). A
 * second signal finds no handler: it ends the process at once.
 */
import type { Logger } from 'pino';

export function untilSignal(close: () => Promise<void>, logger: Logger, stopping: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info({ signal }, stopping);
      close().then(
        () => resolve(),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          process.exitCode = 1;
          resolve();
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

/**
 * A long-running command's whole life, its stop handlers in before its start: `start` (told by
 * `stop` when a stop comes meanwhile), then `started` with what it started — unless a stop came
 * first — and, at a stop, `close` of what started (a stop during the start waits for it). Rejects
 * when the start fails.
 */
export async function runUntilSignal<T>(
  start: (stop: AbortSignal) => Promise<T>,
  close: (running: T) => Promise<void>,
  started: (running: T) => void,
  logger: Logger,
  stopping: string,
): Promise<void> {
  const stop = new AbortController();
  const starting = start(stop.signal);
  const stopped = untilSignal(async () => {
    stop.abort();
    const running = await starting.catch(() => undefined);
    if (running !== undefined) await close(running);
  }, logger, stopping);
  const running = await starting;
  if (!stop.signal.aborted) started(running);
  await stopped;
}
