/**
 * One error base for all of Sluice. Every error says whose fault it is (`domain`) and whether
 * retrying the same call can help (`retry`), and chains its `cause`.
 */
export type ErrorDomain = 'user' | 'external' | 'internal';
export type RetryAdvice = 'none' | 'backoff';

export interface SluiceErrorOptions {
  domain: ErrorDomain;
  retry?: RetryAdvice;
  /** A stable machine-readable code, e.g. `invalid_timestamp`, `log_fsync_failed`. */
  code: string;
  cause?: unknown;
}

export class SluiceError extends Error {
  readonly domain: ErrorDomain;
  readonly retry: RetryAdvice;
  readonly code: string;

  constructor(message: string, options: SluiceErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SluiceError';
    this.domain = options.domain;
    this.retry = options.retry ?? 'none';
    this.code = options.code;
  }
}

/** A caller's mistake (bad flag, bad config, bad input): the message says what to do. */
export function userError(code: string, message: string, cause?: unknown): SluiceError {
  return new SluiceError(message, { domain: 'user', code, cause, retry: 'none' });
}

/** A dependency failed (disk, S3, network): usually worth retrying with backoff. */
export function externalError(code: string, message: string, cause?: unknown, retry: RetryAdvice = 'backoff'): SluiceError {
  return new SluiceError(message, { domain: 'external', code, cause, retry });
}

/** A bug or broken invariant inside Sluice. */
export function internalError(code: string, message: string, cause?: unknown): SluiceError {
  return new SluiceError(message, { domain: 'internal', code, cause, retry: 'none' });
}

/** Exhaustiveness check for discriminated unions: `default: return assertNever(x)`. */
export function assertNever(value: never): never {
  throw internalError('unreachable', `unexpected variant: ${JSON.stringify(value)}`);
}
