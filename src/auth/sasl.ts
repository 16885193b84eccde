/**
 * Server side of the SASL exchanges Sterna offers in SMTP AUTH: PLAIN, LOGIN, CRAM-MD5, and the
 * bearer-token mechanisms OAUTHBEARER and XOAUTH2.
 * Pure: no I/O, no clock, no randomness — the nonce and timestamp of a CRAM-MD5 challenge
 * are injected. The session feeds it the initial response and each client line and sends
 * back what it returns; checking the credentials is the user store's job (users.ts).
 *
 * RFCs: 4954 (SMTP AUTH: "334 " challenges, "=" for an empty initial response, "*" cancels),
 * 4648 section 4 (base64, decoded strictly), 4616 (PLAIN), 2195 (CRAM-MD5), 7628 (OAUTHBEARER;
 * its GS2 header is RFC 5801 section 4), 6750 section 2.1 (the "Bearer" credentials). LOGIN has
 * no RFC; it follows draft-murchison-sasl-login-00 and what every client sends. XOAUTH2 has no
 * RFC either; it follows Google's description (developers.google.com/gmail/imap/xoauth2-protocol).
 *
 * Trust: everything here comes from an unauthenticated network peer. Decoded values are never
 * logged by this module and must not be logged by callers (they contain passwords and tokens).
 */

export type Mechanism = 'PLAIN' | 'LOGIN' | 'CRAM-MD5' | 'OAUTHBEARER' | 'XOAUTH2';

export type OAuthMechanism = 'OAUTHBEARER' | 'XOAUTH2';

export type Credentials =
  /** PLAIN and LOGIN. For LOGIN the authzid is always empty. */
  | { kind: 'password'; authcid: string; authzid: string; password: string }
  /** CRAM-MD5. `challenge` is the decoded challenge text, `<nonce.timestamp@hostname>`. */
  | { kind: 'cram-md5'; username: string; challenge: string; digestHex: string }
  /**
   * OAUTHBEARER and XOAUTH2: a bearer token, and the identity the client asks to act as
   * (OAUTHBEARER's GS2 "a=", empty when absent; XOAUTH2's "user=").
   */
  | { kind: 'oauth'; mechanism: OAuthMechanism; authzid: string; token: string };

/** The user name a client claims in its credentials (not verified): what the lock-out counts. */
export function claimedUser(creds: Credentials): string {
  switch (creds.kind) {
    case 'password':
      return creds.authcid;
    case 'cram-md5':
      return creds.username;
    case 'oauth':
      return creds.authzid;
    default:
      return assertNever(creds);
  }
}

export type SaslStep =
  /** Base64 text to send after "334 " (may be the empty string). */
  | { kind: 'challenge'; challenge: string }
  | { kind: 'done'; credentials: Credentials }
  /** The client sent "*" (RFC 4954: reply 501). */
  | { kind: 'cancelled' }
  | { kind: 'error'; reason: 'bad-base64' | 'malformed' };

export interface SaslExchange {
  /** `initialResponse` is the second argument of the AUTH command, if any ("=" means empty). */
  start(initialResponse: string | undefined): SaslStep;
  /** One line sent by the client in answer to a 334 challenge, without its CRLF. */
  next(line: string): SaslStep;
}

export interface ExchangeOptions {
  /** Our host name, used in the CRAM-MD5 challenge. */
  hostname: string;
  /** A random token, fresh for each exchange (CRAM-MD5 challenge). */
  nonce: string;
  /** Current time in milliseconds (CRAM-MD5 challenge). */
  timestampMs: number;
}

const MECHANISMS: readonly Mechanism[] = ['PLAIN', 'LOGIN', 'CRAM-MD5', 'OAUTHBEARER', 'XOAUTH2'];

/** The mechanism named by an AUTH argument, case-insensitively (RFC 4954 section 4), or null. */
export function parseMechanism(s: string): Mechanism | null {
  const upper = s.toUpperCase();
  return MECHANISMS.find((m) => m === upper) ?? null;
}

/** A fresh server-side exchange for one AUTH command. */
export function createExchange(mech: Mechanism, opts: ExchangeOptions): SaslExchange {
  switch (mech) {
    case 'PLAIN':
      // RFC 4616 2: one message, as an initial response or after an empty challenge.
      return new OneMessageExchange(parsePlain);
    case 'LOGIN':
      return new LoginExchange();
    case 'CRAM-MD5':
      return new CramMd5Exchange(opts);
    case 'OAUTHBEARER':
      return new OneMessageExchange(parseOAuthBearer);
    case 'XOAUTH2':
      return new OneMessageExchange(parseXOAuth2);
    default:
      return assertNever(mech);
  }
}

/**
 * After a failed OAUTHBEARER or XOAUTH2 token the server sends the error status in a 334 and
 * the client answers with a dummy response (RFC 7628 3.2.3: %x01; XOAUTH2: an empty line);
 * then the server fails the exchange. This exchange takes that one line: whatever it is, the
 * result is a failure ("*" is a cancellation, RFC 4954 4).
 */
export function failedTokenFollowUp(): SaslExchange {
  let done = false;
  return {
    start: () => MALFORMED,
    next(line: string): SaslStep {
      if (done) return FINISHED;
      done = true;
      return line === '*' ? CANCELLED : MALFORMED;
    },
  };
}

const CANCELLED: SaslStep = { kind: 'cancelled' };
const BAD_BASE64: SaslStep = { kind: 'error', reason: 'bad-base64' };
const MALFORMED: SaslStep = { kind: 'error', reason: 'malformed' };

/** "Username:" and "Password:", the challenges every LOGIN client expects. */
export const LOGIN_USERNAME_CHALLENGE = 'VXNlcm5hbWU6';
export const LOGIN_PASSWORD_CHALLENGE = 'UGFzc3dvcmQ6';

// RFC 4648 section 4, with padding required and nothing else allowed (no spaces, no
// line breaks, no URL-safe alphabet).
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

type Decoded = { ok: true; text: string } | { ok: false; step: SaslStep };

/**
 * Strict base64, then strict UTF-8. Non-canonical encodings (non-zero bits in the padding)
 * are refused too, so one text has exactly one accepted encoding.
 */
function decode(b64: string): Decoded {
  if (!BASE64_RE.test(b64)) return { ok: false, step: BAD_BASE64 };
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.toString('base64') !== b64) return { ok: false, step: BAD_BASE64 };
  try {
    return { ok: true, text: utf8.decode(bytes) };
  } catch {
    return { ok: false, step: MALFORMED };
  }
}

/** RFC 4954 section 4: an initial response of "=" is a present but empty response. */
function decodeInitial(ir: string): Decoded {
  return ir === '=' ? { ok: true, text: '' } : decode(ir);
}

/** RFC 4616: message = [authzid] UTF8NUL authcid UTF8NUL passwd; authcid and passwd non-empty. */
function parsePlain(text: string): SaslStep {
  const parts = text.split('\0');
  if (parts.length !== 3) return MALFORMED;
  const [authzid, authcid, password] = parts as [string, string, string];
  if (authcid === '' || password === '') return MALFORMED;
  return { kind: 'done', credentials: { kind: 'password', authcid, authzid, password } };
}

/** Answers every call after the exchange has finished. */
const FINISHED: SaslStep = MALFORMED;

class LoginExchange implements SaslExchange {
  #state: 'new' | 'awaiting-username' | 'awaiting-password' | 'finished' = 'new';
  #username = '';

  start(initialResponse: string | undefined): SaslStep {
    if (this.#state !== 'new') return FINISHED;
    if (initialResponse === undefined) {
      this.#state = 'awaiting-username';
      return { kind: 'challenge', challenge: LOGIN_USERNAME_CHALLENGE };
    }
    // Some clients send the user name as an initial response ("AUTH LOGIN dXNlcg==").
    if (initialResponse === '*') return this.#finish(CANCELLED);
    return this.#takeUsername(decodeInitial(initialResponse));
  }

  next(line: string): SaslStep {
    switch (this.#state) {
      case 'awaiting-username':
        if (line === '*') return this.#finish(CANCELLED);
        return this.#takeUsername(decode(line));
      case 'awaiting-password': {
        if (line === '*') return this.#finish(CANCELLED);
        const decoded = decode(line);
        if (!decoded.ok) return this.#finish(decoded.step);
        const password = decoded.text;
        if (password === '' || password.includes('\0')) return this.#finish(MALFORMED);
        return this.#finish({
          kind: 'done',
          credentials: { kind: 'password', authcid: this.#username, authzid: '', password },
        });
      }
      case 'new':
      case 'finished':
        return FINISHED;
      default:
        return assertNever(this.#state);
    }
  }

  #takeUsername(decoded: Decoded): SaslStep {
    if (!decoded.ok) return this.#finish(decoded.step);
    if (decoded.text === '' || decoded.text.includes('\0')) return this.#finish(MALFORMED);
    this.#username = decoded.text;
    this.#state = 'awaiting-password';
    return { kind: 'challenge', challenge: LOGIN_PASSWORD_CHALLENGE };
  }

  #finish(step: SaslStep): SaslStep {
    this.#state = 'finished';
    this.#username = '';
    return step;
  }
}

// RFC 2195 section 2: the response is the user name, a space, and the digest as 32
// lower-case hexadecimal digits.
const CRAM_RESPONSE_RE = /^([^\0]+) ([0-9a-f]{32})$/;

class CramMd5Exchange implements SaslExchange {
  #state: 'new' | 'awaiting-response' | 'finished' = 'new';
  readonly #challenge: string;

  constructor(opts: ExchangeOptions) {
    // RFC 2195 section 2: a challenge in the form of an RFC 822 msg-id, unique per exchange.
    this.#challenge = `<${opts.nonce}.${opts.timestampMs}@${opts.hostname}>`;
  }

  start(initialResponse: string | undefined): SaslStep {
    if (this.#state !== 'new') return FINISHED;
    if (initialResponse !== undefined) {
      // The server speaks first in CRAM-MD5; an initial response cannot be valid
      // (RFC 4954 section 4: reject it with 501).
      this.#state = 'finished';
      return initialResponse === '*' ? CANCELLED : MALFORMED;
    }
    this.#state = 'awaiting-response';
    return { kind: 'challenge', challenge: Buffer.from(this.#challenge, 'utf8').toString('base64') };
  }

  next(line: string): SaslStep {
    if (this.#state !== 'awaiting-response') return FINISHED;
    this.#state = 'finished';
    if (line === '*') return CANCELLED;
    const decoded = decode(line);
    if (!decoded.ok) return decoded.step;
    const m = CRAM_RESPONSE_RE.exec(decoded.text);
    if (m === null) return MALFORMED;
    return {
      kind: 'done',
      credentials: { kind: 'cram-md5', username: m[1]!, challenge: this.#challenge, digestHex: m[2]! },
    };
  }
}

// RFC 6750 2.1: credentials = "Bearer" 1*SP b64token (the scheme is case-insensitive, RFC 7235 2.1).
const BEARER_RE = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i;
// RFC 7628 3.1: key = 1*(ALPHA); value = *(VCHAR / SP / HTAB / CR / LF).
const KVPAIR_RE = /^([A-Za-z]+)=([\x21-\x7e \t\r\n]*)$/;

/** Splits "key=value" pairs; null if one is malformed or a key repeats. */
function parseKvPairs(pairs: readonly string[]): Map<string, string> | null {
  const out = new Map<string, string>();
  for (const pair of pairs) {
    const m = KVPAIR_RE.exec(pair);
    if (m === null) return null;
    const key = m[1]!.toLowerCase();
    if (out.has(key)) return null;
    out.set(key, m[2]!);
  }
  return out;
}

function bearerToken(auth: string | undefined): string | null {
  if (auth === undefined) return null;
  return BEARER_RE.exec(auth)?.[1] ?? null;
}

/**
 * RFC 7628 3.1: gs2-header kvsep *kvpair kvsep, with kvsep = %x01 and each kvpair ending in one.
 * The GS2 header (RFC 5801 4) is "n," or "y," (no channel binding: "p=" is refused), then an
 * optional "a=" authzid with "," and "=" escaped as "=2C" and "=3D", then ",".
 */
function parseOAuthBearer(text: string): SaslStep {
  const parts = text.split('\x01');
  // [gs2-header, kvpair..., '', ''] for "gs2\x01k=v\x01\x01".
  if (parts.length < 4 || parts.at(-1) !== '' || parts.at(-2) !== '') return MALFORMED;
  const gs2 = /^[ny],(?:a=((?:[^,=]|=2C|=3D)+))?,$/.exec(parts[0]!);
  if (gs2 === null) return MALFORMED;
  const authzid = (gs2[1] ?? '').replace(/=2C/g, ',').replace(/=3D/g, '=');
  const kv = parseKvPairs(parts.slice(1, -2));
  const token = bearerToken(kv?.get('auth'));
  if (token === null) return MALFORMED;
  return { kind: 'done', credentials: { kind: 'oauth', mechanism: 'OAUTHBEARER', authzid, token } };
}

/** XOAUTH2: "user=" address %x01 "auth=Bearer " token %x01 %x01. */
function parseXOAuth2(text: string): SaslStep {
  const parts = text.split('\x01');
  if (parts.length !== 4 || parts[2] !== '' || parts[3] !== '') return MALFORMED;
  const kv = parseKvPairs(parts.slice(0, 2));
  const user = kv?.get('user');
  const token = bearerToken(kv?.get('auth'));
  if (user === undefined || user === '' || token === null) return MALFORMED;
  return { kind: 'done', credentials: { kind: 'oauth', mechanism: 'XOAUTH2', authzid: user, token } };
}

/**
 * PLAIN, OAUTHBEARER and XOAUTH2: one client message, as an initial response or after an empty
 * 334 (RFC 4954 4), parsed by `parse`.
 */
class OneMessageExchange implements SaslExchange {
  #state: 'new' | 'awaiting-response' | 'finished' = 'new';
  readonly #parse: (text: string) => SaslStep;

  constructor(parse: (text: string) => SaslStep) {
    this.#parse = parse;
  }

  start(initialResponse: string | undefined): SaslStep {
    if (this.#state !== 'new') return FINISHED;
    if (initialResponse === undefined) {
      this.#state = 'awaiting-response';
      return { kind: 'challenge', challenge: '' };
    }
    this.#state = 'finished';
    if (initialResponse === '*') return CANCELLED;
    const decoded = decodeInitial(initialResponse);
    return decoded.ok ? this.#parse(decoded.text) : decoded.step;
  }

  next(line: string): SaslStep {
    if (this.#state !== 'awaiting-response') return FINISHED;
    this.#state = 'finished';
    if (line === '*') return CANCELLED;
    const decoded = decode(line);
    return decoded.ok ? this.#parse(decoded.text) : decoded.step;
  }
}

function assertNever(x: never): never {
  throw new Error(`unexpected value: ${String(x)}`);
}
