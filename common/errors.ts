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

/** Node errno codes that mean a full or over-quota disk (LMDB reports the number 28, ENOSPC). */
const DISK_FULL = new Set(['ENOSPC', 'EDQUOT']);
/** Node errno codes of a failing dependency (disk, network) that may pass: worth retrying. */
const TRANSIENT_IO = new Set(['EIO', 'EAGAIN', 'EBUSY', 'EMFILE', 'ENFILE', 'ETIMEDOUT', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'EROFS', 'ENOTDIR', 'EEXIST', 'ENOENT', 'EACCES', 'EPERM']);

/**
 * The `SluiceError` an unknown thrown value stands for, so callers decide on `domain`/`retry`
 * alone: a SluiceError as is; a full disk (`ENOSPC`/`EDQUOT`, or LMDB's errno 28) →
 * external `disk_full`, backoff; another I/O errno or an LMDB commit failure → external
 * `io_failed`, backoff; anything else (TypeError, RangeError, …) → internal, no retry.
 */
export function classifyError(err: unknown, context = ''): SluiceError {
  if (err instanceof SluiceError) return err;
  const e = err as { code?: unknown; errno?: unknown; message?: unknown } | null | undefined;
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const prefix = context === '' ? '' : `${context}: `;
  const code = e?.code;
  if ((typeof code === 'string' && DISK_FULL.has(code)) || code === 28 || /No space left on device|Disk quota exceeded/i.test(message)) {
    return externalError('disk_full', `${prefix}the disk is full (${message}); free space and Sluice resumes by itself`, err);
  }
  if ((typeof code === 'string' && TRANSIENT_IO.has(code)) || typeof code === 'number' || /Input\/output error|MDB_|Commit failed/.test(message)) {
    return externalError('io_failed', `${prefix}${message}`, err);
  }
  return internalError(typeof code === 'string' && code !== '' ? code : 'unexpected_error', `${prefix}${message}`, err);
}

/** An error as plain data, for crossing a thread boundary (structured clone drops an Error's own fields). */
export interface SerializedError {
  name: string;
  message: string;
  domain: ErrorDomain;
  retry: RetryAdvice;
  code: string;
  stack?: string;
}

export function serializeError(err: unknown): SerializedError {
  const e = classifyError(err);
  return { name: e.name, message: e.message, domain: e.domain, retry: e.retry, code: e.code, stack: e.stack };
}

/** The SluiceError a {@link serializeError} result stands for (its stack is the original thread's). */
export function deserializeError(s: SerializedError): SluiceError {
  const e = new SluiceError(s.message, { domain: s.domain, retry: s.retry, code: s.code });
  if (s.stack !== undefined) e.stack = s.stack;
  return e;
}

/** True when `err` or an error in its `cause` chain is a full disk (ENOSPC, EDQUOT, LMDB's 28). */
export function isDiskFull(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (e instanceof SluiceError ? e.code === 'disk_full' : classifyError(e).code === 'disk_full') return true;
  }
  return false;
}
