/**
 * Checks the bearer tokens of OAUTHBEARER (RFC 7628) and XOAUTH2: each token is a JWT (RFC 7519)
 * signed by the configured issuer (JWS, RFC 7515, with keys from oauth-jwks.ts). A token is
 * accepted when its signature verifies with an allowed algorithm, "iss" is the issuer, "aud"
 * holds one of the audiences, "exp" (required) and "nbf" hold within the clock skew, and the
 * user claim names an address; the identity the client asks for (GS2 "a=" / XOAUTH2 "user=")
 * must be that same address. Whether the address may log in at all is the caller's decision.
 *
 * Also builds the error status a failed exchange sends in its 334 (RFC 7628 3.2.2; Google's
 * format for XOAUTH2).
 *
 * Trust: tokens come from unauthenticated clients and are never logged, not even in part; the
 * reason ids returned are safe to log.
 */
import { errors, jwtVerify } from 'jose';
import type { OAuthMechanism } from './sasl.js';
import { isValidAddress, normalizeAddress } from './users.js';
import type { KeySource } from './oauth-jwks.js';
import { TemporaryAuthError } from './store.js';

export interface OAuthOptions {
  issuer: string;
  audience: readonly string[];
  /** The claim holding the user's address, e.g. "email". */
  userClaim: string;
  algorithms: readonly string[];
  clockSkewMs: number;
  /** For the error status; '' leaves it out. */
  scope: string;
  /** For the error status; '' leaves it out. */
  openidConfiguration: string;
  keys: KeySource;
  /** The current time (tests move it). Default: the clock. */
  now?: () => number;
}

/** Why a token was refused: a stable id for logs. */
export type TokenRefusal =
  | 'malformed'
  | 'bad-signature'
  | 'unknown-key'
  | 'algorithm-not-allowed'
  | 'expired'
  | 'not-yet-valid'
  | 'wrong-issuer'
  | 'wrong-audience'
  | 'claim-missing'
  | 'no-user-claim'
  | 'email-not-verified'
  | 'identity-mismatch';

export type TokenResult = { ok: true; user: string } | { ok: false; reason: TokenRefusal };

/** jose errors that mean "the keys could not be had", not "the token is bad". */
const KEY_FETCH_ERRORS = new Set(['ERR_JWKS_TIMEOUT', 'ERR_JWKS_INVALID', 'ERR_JOSE_GENERIC']);

export class OAuthVerifier {
  readonly #o: OAuthOptions;

  constructor(opts: OAuthOptions) {
    this.#o = opts;
  }

  /**
   * Verifies `token` for a client that asks to act as `authzid` ('' when it did not say).
   * Throws TemporaryAuthError when the key set cannot be fetched or read (reply 454).
   */
  async verify(token: string, authzid: string): Promise<TokenResult> {
    const o = this.#o;
    let payload: Record<string, unknown>;
    try {
      const result = await jwtVerify(token, o.keys.getKey, {
        issuer: o.issuer,
        audience: [...o.audience],
        algorithms: [...o.algorithms],
        clockTolerance: Math.round(o.clockSkewMs / 1000),
        requiredClaims: ['exp'],
        ...(o.now !== undefined ? { currentDate: new Date(o.now()) } : {}),
      });
      payload = result.payload;
    } catch (err) {
      return { ok: false, reason: refusalOf(err) };
    }
    const claim = payload[o.userClaim];
    if (typeof claim !== 'string' || !isValidAddress(claim)) return { ok: false, reason: 'no-user-claim' };
    // OpenID Connect Core 5.1: an "email" the provider has not verified names no one for sure.
    if (o.userClaim === 'email' && payload['email_verified'] === false) {
      return { ok: false, reason: 'email-not-verified' };
    }
    const user = normalizeAddress(claim);
    if (authzid !== '' && normalizeAddress(authzid) !== user)
      return { ok: false, reason: 'identity-mismatch' };
    return { ok: true, user };
  }

  /**
   * The base64 of the JSON status sent in the 334 after a failed token. OAUTHBEARER:
   * RFC 7628 3.2.2 ({"status":"invalid_token", "scope", "openid-configuration"}); XOAUTH2:
   * Google's {"status":"401","schemes":"bearer","scope"}.
   */
  errorChallenge(mechanism: OAuthMechanism): string {
    const o = this.#o;
    const status: Record<string, string> =
      mechanism === 'OAUTHBEARER' ? { status: 'invalid_token' } : { status: '401', schemes: 'bearer' };
    if (o.scope !== '') status['scope'] = o.scope;
    if (mechanism === 'OAUTHBEARER' && o.openidConfiguration !== '') {
      status['openid-configuration'] = o.openidConfiguration;
    }
    return Buffer.from(JSON.stringify(status), 'utf8').toString('base64');
  }
}

function refusalOf(err: unknown): TokenRefusal {
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
      case 'iat':
        return 'not-yet-valid';
      case 'iss':
        return 'wrong-issuer';
      case 'aud':
        return 'wrong-audience';
      default:
        return 'claim-missing';
    }
  }
  if (err instanceof errors.JOSEAlgNotAllowed) return 'algorithm-not-allowed';
  if (err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys)
    return 'unknown-key';
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad-signature';
  if (err instanceof errors.JOSEError && !KEY_FETCH_ERRORS.has(err.code)) return 'malformed';
  // The key set could not be fetched (timeout, HTTP error, not JSON) or read: not the token's fault.
  throw new TemporaryAuthError(
    `OAuth key set (JWKS) not available: ${err instanceof Error ? err.message : String(err)}`,
  );
}
