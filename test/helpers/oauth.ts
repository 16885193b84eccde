/**
 * An OAuth issuer for tests: signing keys the tests create (RS256, ES256, EdDSA), their JWKS
 * (RFC 7517 5), signed JWTs (RFC 7519) with chosen claims, the OAUTHBEARER (RFC 7628 3.1) and
 * XOAUTH2 client messages, and a loopback HTTP server that serves the JWKS and counts its
 * fetches. Test-only code: binds 127.0.0.1 only.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

export const ISSUER = 'https://id.sterna.test';
export const AUDIENCE = 'smtp.sterna.test';

export type TestAlg = 'RS256' | 'ES256' | 'EdDSA';

export interface TestKey {
  kid: string;
  alg: TestAlg;
  privateKey: CryptoKey;
  /** The public key as published in the JWKS. */
  jwk: JWK;
}

export async function makeKey(alg: TestAlg, kid: string): Promise<TestKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, jwk };
}

export function jwks(...keys: TestKey[]): { keys: JWK[] } {
  return { keys: keys.map((k) => k.jwk) };
}

export interface TokenOptions {
  /** Claims beyond (or replacing) iss, aud, iat, exp (now + 10 minutes) and email. */
  claims?: JWTPayload & Record<string, unknown>;
  /** Sign with this key but put another "kid" in the header. */
  kid?: string;
}

/** A JWT for `email` from ISSUER to AUDIENCE, valid for 10 minutes, signed with `key`. */
export function mintToken(key: TestKey, email: string, opts: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 600, email, ...opts.claims })
    .setProtectedHeader({ alg: key.alg, kid: opts.kid ?? key.kid, typ: 'JWT' })
    .sign(key.privateKey);
}

/** An unsigned token ("alg": "none", RFC 7519 6) claiming to be from ISSUER for `email`. */
export function unsignedToken(email: string, kid: string): string {
  const now = Math.floor(Date.now() / 1000);
  const part = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${part({ alg: 'none', kid })}.${part({ iss: ISSUER, aud: AUDIENCE, exp: now + 600, email })}.`;
}

/** The OAUTHBEARER client message (RFC 7628 3.1), base64; `authzid` '' leaves "a=" out. */
export function oauthBearer(token: string, authzid: string): string {
  const gs2 = authzid === '' ? 'n,,' : `n,a=${authzid.replace(/=/g, '=3D').replace(/,/g, '=2C')},`;
  return Buffer.from(`${gs2}\x01host=mx.sterna.test\x01port=587\x01auth=Bearer ${token}\x01\x01`).toString(
    'base64',
  );
}

/** The XOAUTH2 client message, base64. */
export function xoauth2(user: string, token: string): string {
  return Buffer.from(`user=${user}\x01auth=Bearer ${token}\x01\x01`).toString('base64');
}

/** The JSON status of a failed token's 334 (RFC 7628 3.2.2), decoded. */
export function decodeStatus(challenge: string): unknown {
  return JSON.parse(Buffer.from(challenge, 'base64').toString('utf8'));
}

export interface JwksServer {
  url: string;
  /** GET requests served so far. */
  readonly fetches: number;
  /** Time of the last fetch (Date.now()). */
  readonly lastFetchAt: number;
  setKeys(keys: TestKey[]): void;
  /** "hang": accept requests and never answer (a JWKS endpoint that times out). */
  setMode(mode: 'serve' | 'hang'): void;
  close(): Promise<void>;
}

/** Serves the JWKS at http://127.0.0.1:PORT/jwks.json. */
export async function startJwksServer(keys: TestKey[]): Promise<JwksServer> {
  let current = keys;
  let mode: 'serve' | 'hang' = 'serve';
  let fetches = 0;
  let lastFetchAt = 0;
  const server = http.createServer((_req, res) => {
    fetches++;
    lastFetchAt = Date.now();
    if (mode === 'hang') return; // closed by closeAllConnections()
    res.writeHead(200, { 'content-type': 'application/jwk-set+json' });
    res.end(JSON.stringify(jwks(...current)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo; // listen() on a TCP port: always an AddressInfo
  return {
    url: `http://127.0.0.1:${port}/jwks.json`,
    get fetches() {
      return fetches;
    },
    get lastFetchAt() {
      return lastFetchAt;
    },
    setKeys(k) {
      current = k;
    },
    setMode(m) {
      mode = m;
      if (m === 'serve') server.closeAllConnections();
    },
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
