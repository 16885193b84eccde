/**
 * Password hashes and the CRAM-MD5 secret, with node:crypto only.
 *
 * Hashes are scrypt (RFC 7914), stored as `scrypt$N$r$p$saltB64$hashB64`, so the cost can be
 * raised later without breaking old entries. CRAM-MD5 (RFC 2195) needs the HMAC key on the
 * server, which is the password itself: `cramSecret` stores it reversibly and says so in its
 * format tag; docs/authentication.md explains the trade-off.
 *
 * Trust: `password` arguments come from the network (SASL) or the operator (CLI); stored
 * strings come from the users file, which may have been edited by hand, so every field is
 * checked and bounded before use. Nothing here logs.
 */

import { createHmac, randomBytes, scrypt, timingSafeEqual } from 'node:crypto';

/**
 * Cost chosen to take about 50 ms on a small (2-core) server: N = 2^14, r = 8 (16 MiB), p = 1.
 * Raising it only affects new hashes; verifyPassword reads the parameters from the string.
 */
export const SCRYPT_DEFAULTS = { N: 2 ** 14, r: 8, p: 1, saltBytes: 16, hashBytes: 32 } as const;

// Limits for parameters read from a stored string, so a hand-edited file cannot make one
// verification take seconds or gigabytes.
const MAX_N = 2 ** 20;
const MAX_R = 32;
const MAX_P = 16;
const MAX_MEMORY_BYTES = 1024 * 1024 * 1024;
const MIN_HASH_BYTES = 16;
const MAX_HASH_BYTES = 128;

interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

function scryptAsync(password: string, salt: Buffer, keylen: number, params: ScryptParams): Promise<Buffer> {
  // scrypt needs 128 * N * r bytes, plus a little; node's default limit (32 MiB) is too low for
  // some accepted parameters.
  const maxmem = 128 * params.N * params.r * params.p + 128 * params.N * params.r + 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keylen, { ...params, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

/**
 * Hashes a password with a fresh random salt. The password is NFC-normalised first (RFC 8265
 * OpaqueString does the same), so the same password typed on different systems matches.
 */
export async function hashPassword(password: string): Promise<string> {
  const { N, r, p, saltBytes, hashBytes } = SCRYPT_DEFAULTS;
  const salt = randomBytes(saltBytes);
  const hash = await scryptAsync(password, salt, hashBytes, { N, r, p });
  return ['scrypt', N, r, p, salt.toString('base64'), hash.toString('base64')].join('$');
}

const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const POSITIVE_INT_RE = /^[1-9][0-9]{0,9}$/;

interface ParsedHash extends ScryptParams {
  salt: Buffer;
  hash: Buffer;
}

/** Parses a stored scrypt string, or null when it is malformed or its cost is out of bounds. */
export function parseStoredHash(stored: string): ParsedHash | null {
  const parts = stored.split('$');
  if (parts.length !== 6) return null;
  const [alg, nText, rText, pText, saltB64, hashB64] = parts as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  if (alg !== 'scrypt') return null;
  if (![nText, rText, pText].every((t) => POSITIVE_INT_RE.test(t))) return null;
  const N = Number(nText);
  const r = Number(rText);
  const p = Number(pText);
  // N must be a power of two greater than 1 (RFC 7914 section 2).
  if (N < 2 || N > MAX_N || (N & (N - 1)) !== 0) return null;
  if (r > MAX_R || p > MAX_P || 128 * N * r * p > MAX_MEMORY_BYTES) return null;
  if (!B64_RE.test(saltB64) || !B64_RE.test(hashB64) || saltB64 === '') return null;
  const salt = Buffer.from(saltB64, 'base64');
  const hash = Buffer.from(hashB64, 'base64');
  if (hash.length < MIN_HASH_BYTES || hash.length > MAX_HASH_BYTES) return null;
  return { N, r, p, salt, hash };
}

/**
 * True when `password` matches the stored hash. A malformed stored string gives false, never
 * an exception. The final comparison is constant-time.
 */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parseStoredHash(stored);
  if (parsed === null) return false;
  let computed: Buffer;
  try {
    computed = await scryptAsync(password, parsed.salt, parsed.hash.length, parsed);
  } catch {
    return false;
  }
  return timingSafeEqual(computed, parsed.hash);
}

const CRAM_PREFIX = 'plain$';

/**
 * The CRAM-MD5 secret stored for a user: the password itself, base64-encoded and tagged
 * `plain$` so that nobody mistakes it for a hash. HMAC-MD5 needs the key; node:crypto cannot
 * resume an MD5 state precomputed from the key pads, so any stored form would be as good as
 * the password for CRAM-MD5 anyway. Encoding is not protection: keep the users file 0600.
 */
export function cramSecret(password: string): string {
  return CRAM_PREFIX + Buffer.from(password.normalize('NFC'), 'utf8').toString('base64');
}

const DIGEST_RE = /^[0-9a-f]{32}$/;

/**
 * RFC 2195 section 2: the client's digest must equal HMAC-MD5(key = password, text =
 * challenge), in lower-case hex. `challenge` is the decoded challenge text, brackets included.
 * False for a malformed secret or digest; constant-time comparison.
 */
export function verifyCram(secret: string, challenge: string, digestHex: string): boolean {
  if (!secret.startsWith(CRAM_PREFIX)) return false;
  const keyB64 = secret.slice(CRAM_PREFIX.length);
  if (!B64_RE.test(keyB64) || keyB64 === '') return false;
  if (!DIGEST_RE.test(digestHex)) return false;
  const key = Buffer.from(keyB64, 'base64');
  const expected = createHmac('md5', key).update(challenge, 'utf8').digest();
  return timingSafeEqual(expected, Buffer.from(digestHex, 'hex'));
}
