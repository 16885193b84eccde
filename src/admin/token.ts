/**
 * The admin listener's bearer token (RFC 6750): read from `[admin] token_file` (its first line),
 * compared in constant time. Both sides are hashed with SHA-256 first, so the comparison takes
 * the same time whatever the length of the token a client sends, and no prefix of the secret
 * leaks through timing.
 * Trust: the token file is the operator's; a request's Authorization header is untrusted.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';

/** Shortest token accepted: a guessable token on a network listener is no protection. */
export const MIN_TOKEN_LENGTH = 16;

export class AdminTokenError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdminTokenError';
  }
}

/** The token of `file`: its first line, trimmed. Throws AdminTokenError naming the key and what to do. */
export async function readAdminToken(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new AdminTokenError(`admin.token_file: cannot read ${file}: ${why}`);
  }
  const token = (text.split(/\r?\n/, 1)[0] ?? '').trim();
  if (token.length < MIN_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token))
    throw new AdminTokenError(
      `admin.token_file: the first line of ${file} must be a token of at least ${MIN_TOKEN_LENGTH} visible ASCII characters (e.g. the output of: openssl rand -hex 32)`,
    );
  return token;
}

/** Checks "Authorization: Bearer TOKEN" headers against one token. */
export class TokenCheck {
  readonly #digest: Buffer;

  constructor(token: string) {
    this.#digest = sha256(token);
  }

  /** Whether the header carries the token (scheme name case-insensitive, RFC 6750 2.1). */
  matches(header: string | undefined): boolean {
    const m = /^Bearer +([\x21-\x7e]+) *$/i.exec(header ?? '');
    // The comparison runs even without a well-formed header: same work either way.
    const given = sha256(m?.[1] ?? '');
    return timingSafeEqual(given, this.#digest) && m !== null;
  }
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}
