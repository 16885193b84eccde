/**
 * The spool's one error type. Its `code` tells the caller what to answer: the SMTP session
 * replies 452 4.3.1 for ENOSPC (RFC 3463: mail system full) and 451 4.3.0 for the others.
 * Trust level: internal.
 */

export type SpoolErrorCode = 'ENOSPC' | 'EIO' | 'CLOSED' | 'NOT_FOUND' | 'CORRUPT';

export class SpoolError extends Error {
  override readonly name = 'SpoolError';
  readonly code: SpoolErrorCode;

  constructor(code: SpoolErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null || !('code' in err)) return undefined;
  return typeof err.code === 'string' ? err.code : undefined;
}

/** True when `err` is a Node file-system error with errno `code` (ENOENT...). */
export function isErrno(err: unknown, code: string): boolean {
  return errnoCode(err) === code;
}

/** The message of an error, for a report line. */
export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Wraps a file-system error. ENOSPC (no space) and EDQUOT (quota exceeded) become 'ENOSPC';
 * every other failure is 'EIO'. A SpoolError is returned unchanged.
 */
export function toSpoolError(err: unknown, what = 'spool I/O failed'): SpoolError {
  if (err instanceof SpoolError) return err;
  const errno = errnoCode(err);
  const detail = err instanceof Error ? err.message : String(err);
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return new SpoolError('ENOSPC', `${what}: no space left for the spool (${detail})`, { cause: err });
  }
  return new SpoolError('EIO', `${what}: ${detail}`, { cause: err });
}
