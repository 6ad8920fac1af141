/**
 * The long-running commands' shutdown: wait for SIGTERM or SIGINT, log `stopping` with the signal,
 * run `close`, and resolve when it is done (a failed close is logged and sets exit code 1).
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
