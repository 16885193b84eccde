/**
 * AUTH with OAuth bearer tokens on the running server, over real SMTP with STARTTLS: OAUTHBEARER
 * (RFC 7628) and XOAUTH2, JWTs (RFC 7519) signed with RS256, ES256 and EdDSA keys made here.
 * Refused tokens (expired, not yet valid, wrong audience, wrong issuer, wrong key, unknown kid,
 * alg none, another identity) get the RFC 7628 3.2.2 error status in a 334, then 535 5.7.8 after
 * the client's dummy answer; they count in the lock-out (RFC 4954 4). A message submitted after
 * OAUTHBEARER lands with the user in its Received header. Keys come from a JWKS file (re-read
 * when it changes) or from a URL on a loopback HTTP server (timeout, cache, re-fetch for an
 * unknown kid at most once per period). Tokens never reach the log. Interop: python3 smtplib.
 */
import assert from 'node:assert/strict';
import { rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { waitForMessages } from './helpers/maildir.js';
import {
  AUDIENCE,
  decodeStatus,
  ISSUER,
  jwks,
  makeKey,
  mintToken,
  oauthBearer,
  startJwksServer,
  unsignedToken,
  xoauth2,
  type JwksServer,
  type TestKey,
} from './helpers/oauth.js';
import { sleep } from './helpers/process.js';
import { dataDirsWithCert, startTestServer, type TestServer } from './helpers/server.js';
import { assertReply, startTlsSession, TestClient, type TestReply } from './helpers/smtp-client.js';
import { assertDelivered, assertRunOk, crlfMessage, requireTool, runTool } from './helpers/tools.js';

const ALICE = 'alice@sterna.test';
const BOB = 'bob@sterna.test';
const SCOPE = 'https://mail.sterna.test/';
const OPENID = `${ISSUER}/.well-known/openid-configuration`;
/** auth.oauth.jwks_refresh_min_ms of the URL server. */
const REFRESH_MIN_MS = 1500;

let rs: TestKey;
let es: TestKey;
let ed: TestKey;
/** Not in any JWKS: signs "wrong key" and "unknown kid" tokens. */
let stranger: TestKey;
let fileServer: TestServer;
let urlServer: TestServer;
let jwksServer: JwksServer;
let jwksFile: string;
/** Every line the file server logged (debug level). */
const logLines: string[] = [];

before(async () => {
  [rs, es, ed, stranger] = await Promise.all([
    makeKey('RS256', 'rs-1'),
    makeKey('ES256', 'es-1'),
    makeKey('EdDSA', 'ed-1'),
    makeKey('RS256', 'rs-stranger'),
  ]);
  jwksServer = await startJwksServer([rs]);
  const dirs = await dataDirsWithCert(2);
  jwksFile = path.join(dirs[0]!, 'jwks.json');
  await writeFile(jwksFile, JSON.stringify(jwks(rs, es, ed)));
  const capture = new Writable({
    write(chunk: Buffer, _enc, done) {
      logLines.push(chunk.toString('utf8'));
      done();
    },
  });
  const oauth = (source: string, extra = ''): string =>
    `mechanisms = ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]\nmax_failures = 2\n` +
    `[auth.oauth]\nissuer = "${ISSUER}"\naudience = ["${AUDIENCE}"]\n${source}\n` +
    `scope = "${SCOPE}"\nopenid_configuration = "${OPENID}"\n${extra}`;
  [fileServer, urlServer] = await Promise.all([
    startTestServer({
      dataDir: dirs[0]!,
      users: [
        { address: ALICE, password: 'alice password' },
        { address: BOB, password: 'bob password' },
      ],
      auth: oauth(`jwks_file = "${jwksFile}"`),
      log: pino({ level: 'debug' }, capture),
    }),
    startTestServer({
      dataDir: dirs[1]!,
      users: [],
      auth: oauth(
        `jwks_url = "${jwksServer.url}"`,
        `users = "local_domains"\njwks_timeout_ms = 300\njwks_refresh_min_ms = ${REFRESH_MIN_MS}`,
      ),
    }),
  ]);
});

after(async () => {
  await Promise.all([
    fileServer.stop({ remove: true }),
    urlServer.stop({ remove: true }),
    jwksServer.close(),
  ]);
});

/** A submission session after STARTTLS, ready for AUTH. */
async function session(s: TestServer = fileServer): Promise<TestClient> {
  return (await startTlsSession(s.ports.submission)).client;
}

/** RFC 7628 3.2.2: the error status every refused OAUTHBEARER token gets. */
const BEARER_STATUS = { status: 'invalid_token', scope: SCOPE, 'openid-configuration': OPENID };

/**
 * Sends a refused token and checks the exact exchange: 334 + JSON status, the dummy %x01
 * (RFC 7628 3.2.3), 535 5.7.8. Then logs in with a good token in the same session, which also
 * takes the failure off the network's count (so the next test starts without a delay).
 */
async function assertRefused(token: string, authzid = ALICE): Promise<void> {
  const c = await session();
  const r = await c.cmd(`AUTH OAUTHBEARER ${oauthBearer(token, authzid)}`);
  assert.equal(r.code, 334, r.text);
  assert.deepEqual(decodeStatus(r.text), BEARER_STATUS);
  const fail = await c.cmd(Buffer.from('\x01').toString('base64'));
  assertReply(fail, 535, '5.7.8');
  assert.equal(fail.text, '5.7.8 Authentication credentials invalid');
  const ok = await c.cmd(`AUTH OAUTHBEARER ${oauthBearer(await mintToken(rs, ALICE), ALICE)}`);
  assertReply(ok, 235, '2.7.0');
  await c.cmd('QUIT');
  c.close();
}

async function authOk(c: TestClient, line: string): Promise<TestReply> {
  const r = await c.cmd(line);
  assertReply(r, 235, '2.7.0');
  assert.equal(r.text, '2.7.0 Authentication successful');
  return r;
}

test('OAUTHBEARER and XOAUTH2 are offered where PLAIN is: after STARTTLS, not before (538 5.7.11 then)', async () => {
  const c = await TestClient.connect(fileServer.ports.submission);
  await c.expect(220);
  const plain = await c.cmd('EHLO client.example');
  assert.ok(!plain.lines.some((l) => l.startsWith('AUTH')), plain.text);
  assertReply(await c.cmd(`AUTH OAUTHBEARER ${oauthBearer(await mintToken(rs, ALICE), '')}`), 538, '5.7.11');
  c.close();
  const { client, ehlo } = await startTlsSession(fileServer.ports.submission);
  assert.ok(ehlo.lines.includes('AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2'), ehlo.text);
  client.close();
});

test('RFC 7628: a good RS256 token gives 235 2.7.0; the message lands with the user in its Received header', async () => {
  const c = await session();
  await authOk(c, `AUTH OAUTHBEARER ${oauthBearer(await mintToken(rs, ALICE), ALICE)}`);
  const message = crlfMessage([
    `From: Alice <${ALICE}>`,
    `To: Bob <${BOB}>`,
    'Subject: with a token',
    'Date: Sat, 05 Dec 2026 10:00:00 +0000',
    'Message-ID: <oauth-1@sterna.test>',
    '',
    'Sent after AUTH OAUTHBEARER.',
  ]);
  assertReply(await c.cmd(`MAIL FROM:<${ALICE}>`), 250, '2.1.0');
  assertReply(await c.cmd(`RCPT TO:<${BOB}>`), 250, '2.1.5');
  assert.equal((await c.cmd('DATA')).code, 354);
  c.send(Buffer.concat([message, Buffer.from('.\r\n')]));
  const queued = await c.expect(250, '2.0.0');
  const qid = /queued as ([A-Za-z0-9]+)/.exec(queued.text)?.[1];
  // RFC 6409 6.1: the token's user owns only their own addresses.
  assertReply(await c.cmd(`MAIL FROM:<${BOB}>`), 553, '5.7.1');
  await c.cmd('QUIT');
  c.close();
  const [delivered] = await waitForMessages(fileServer.dataDir, 'sterna.test', 'bob');
  assertDelivered(delivered, {
    sender: ALICE,
    recipient: BOB,
    helo: 'client.example',
    protocol: 'ESMTPSA',
    authUser: ALICE,
    message,
    ...(qid !== undefined ? { qid } : {}),
  });
});

test('RFC 7628 3.1: ES256 and EdDSA tokens, no "a=", and the message after an empty 334 are accepted', async () => {
  const c = await session();
  await authOk(c, `AUTH OAUTHBEARER ${oauthBearer(await mintToken(es, ALICE), '')}`);
  c.close();
  const d = await session();
  const ask = await d.cmd('AUTH OAUTHBEARER');
  assert.equal(ask.code, 334);
  assert.equal(ask.text, '');
  // The claim is compared case-blind with the authzid, and the user is the lower-cased claim.
  await authOk(d, oauthBearer(await mintToken(ed, 'Alice@Sterna.TEST'), 'alice@STERNA.test'));
  assertReply(await d.cmd(`MAIL FROM:<${ALICE}>`), 250, '2.1.0');
  d.close();
});

test("XOAUTH2: a good token gives 235; a bad one gets Google's status in a 334, then 535 5.7.8 after the empty answer", async () => {
  const c = await session();
  await authOk(c, `AUTH XOAUTH2 ${xoauth2(ALICE, await mintToken(rs, ALICE))}`);
  c.close();
  const d = await session();
  const r = await d.cmd(`AUTH XOAUTH2 ${xoauth2(BOB, await mintToken(rs, ALICE))}`);
  assert.equal(r.code, 334, r.text);
  assert.deepEqual(decodeStatus(r.text), { status: '401', schemes: 'bearer', scope: SCOPE });
  const fail = await d.cmd('');
  assertReply(fail, 535, '5.7.8');
  d.close();
});

test('an expired token is refused; one expired within the clock skew (30 s) is accepted', async () => {
  const now = Math.floor(Date.now() / 1000);
  await assertRefused(await mintToken(rs, ALICE, { claims: { iat: now - 700, exp: now - 120 } }));
  const c = await session();
  await authOk(
    c,
    `AUTH OAUTHBEARER ${oauthBearer(await mintToken(rs, ALICE, { claims: { exp: now - 10 } }), '')}`,
  );
  c.close();
});

test('a token not yet valid ("nbf" beyond the skew) is refused', async () => {
  const now = Math.floor(Date.now() / 1000);
  await assertRefused(await mintToken(rs, ALICE, { claims: { nbf: now + 300 } }));
});

test('a token for another audience, or from another issuer, is refused', async () => {
  await assertRefused(await mintToken(rs, ALICE, { claims: { aud: 'imap.elsewhere.test' } }));
  await assertRefused(await mintToken(rs, ALICE, { claims: { iss: 'https://evil.test' } }));
});

test('a token signed by the wrong key (a known kid), by an unknown kid, or unsigned ("alg": "none") is refused', async () => {
  await assertRefused(await mintToken(stranger, ALICE, { kid: rs.kid }));
  await assertRefused(await mintToken(stranger, ALICE));
  await assertRefused(unsignedToken(ALICE, rs.kid));
});

test("the authorization identity must be the token's user; a token user not in the users file is refused", async () => {
  await assertRefused(await mintToken(rs, ALICE), BOB);
  await assertRefused(await mintToken(rs, 'carol@sterna.test'), '');
});

test('the JWKS file is re-read when it changes: a new key works at once', async () => {
  const next = await makeKey('ES256', 'es-2');
  await writeFile(`${jwksFile}.tmp`, JSON.stringify(jwks(rs, next)));
  await rename(`${jwksFile}.tmp`, jwksFile);
  const c = await session();
  await authOk(c, `AUTH OAUTHBEARER ${oauthBearer(await mintToken(next, ALICE), ALICE)}`);
  c.close();
});

test('no token appears in the log, for good and refused ones; the refusal reason does', () => {
  const log = logLines.join('');
  // Each refusal above is logged with its own reason.
  const reasons = new Set([...log.matchAll(/"reason":"([a-z-]+)"/g)].map((m) => m[1]));
  assert.deepEqual([...reasons].sort(), [
    'algorithm-not-allowed',
    'bad-signature',
    'expired',
    'identity-mismatch',
    'not-yet-valid',
    'unknown-key',
    'unknown-user',
    'wrong-audience',
    'wrong-issuer',
  ]);
  // Every token's signature part is base64url of 64+ bytes; none may appear, nor any "eyJ" JWT header.
  assert.ok(!/eyJ[A-Za-z0-9_-]{10,}/.test(log), 'no JWT in the log');
  assert.ok(!log.includes('auth=Bearer'), 'no OAUTHBEARER message in the log');
});

test('JWKS by URL: fetched with a timeout (454 4.7.0 while it hangs, not counted), then cached', async () => {
  jwksServer.setMode('hang');
  const c = await session(urlServer);
  const r = await c.cmd(`AUTH OAUTHBEARER ${oauthBearer(await mintToken(rs, 'carol@sterna.test'), '')}`);
  assertReply(r, 454, '4.7.0');
  jwksServer.setMode('serve');
  const before = jwksServer.fetches;
  // auth.oauth.users = "local_domains": carol has no entry in the users file, her domain is local.
  await authOk(c, `AUTH OAUTHBEARER ${oauthBearer(await mintToken(rs, 'carol@sterna.test'), '')}`);
  assertReply(await c.cmd('MAIL FROM:<carol@sterna.test>'), 250, '2.1.0');
  c.close();
  assert.equal(jwksServer.fetches, before + 1);
  const d = await session(urlServer);
  await authOk(d, `AUTH XOAUTH2 ${xoauth2('dan@sterna.test', await mintToken(rs, 'dan@sterna.test'))}`);
  d.close();
  assert.equal(jwksServer.fetches, before + 1, 'the key set is cached');
});

test('JWKS by URL: an unknown kid re-fetches the set, at most once per jwks_refresh_min_ms', async () => {
  const rotated = await makeKey('EdDSA', 'ed-rotated');
  jwksServer.setKeys([rs, rotated]);
  // Once the period since the last fetch is over, the new kid is fetched and accepted. jose
  // starts the period when its fetch completes, which on a loaded machine can be well after the
  // server saw the request: a generous margin (CI once needed more than 100 ms).
  await sleep(jwksServer.lastFetchAt + REFRESH_MIN_MS + 1000 - Date.now());
  const c = await session(urlServer);
  await authOk(c, `AUTH OAUTHBEARER ${oauthBearer(await mintToken(rotated, 'erin@sterna.test'), '')}`);
  c.close();
  const fetches = jwksServer.fetches;
  // Tokens with made-up kids right after: refused, and no further fetch within the period.
  for (let i = 0; i < 2; i++) {
    const d = await session(urlServer);
    const token = await mintToken(stranger, `x${i}@sterna.test`, { kid: `made-up-${i}` });
    const bad = await d.cmd(`AUTH OAUTHBEARER ${oauthBearer(token, '')}`);
    assert.equal(bad.code, 334, bad.text);
    assertReply(await d.cmd('AQ=='), 535, '5.7.8');
    d.close();
  }
  assert.equal(jwksServer.fetches, fetches, 'no fetch for an unknown kid within jwks_refresh_min_ms');
});

test('RFC 4954 4: refused tokens count in the lock-out: after max_failures the user gets 454 4.7.0, even with a good token', async () => {
  for (let i = 0; i < 2; i++) {
    const c = await session(urlServer);
    const r = await c.cmd(
      `AUTH XOAUTH2 ${xoauth2('fay@sterna.test', await mintToken(stranger, 'fay@sterna.test'))}`,
    );
    assert.equal(r.code, 334, r.text);
    assertReply(await c.cmd(''), 535, '5.7.8');
    c.close();
  }
  const c = await session(urlServer);
  const locked = await c.cmd(
    `AUTH XOAUTH2 ${xoauth2('fay@sterna.test', await mintToken(rs, 'fay@sterna.test'))}`,
  );
  assertReply(locked, 454, '4.7.0');
  // Another user from the same address still logs in.
  await authOk(c, `AUTH XOAUTH2 ${xoauth2('gil@sterna.test', await mintToken(rs, 'gil@sterna.test'))}`);
  c.close();
});

const python = requireTool('python3');

/** smtplib's auth() with an authobject: the OAUTHBEARER message first, the dummy %x01 after a 334. */
const SMTPLIB_OAUTH = `
import json, smtplib, ssl, sys
job = json.load(sys.stdin)
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP("127.0.0.1", job["port"], local_hostname="client.python.test", timeout=15)
s.ehlo()
s.starttls(context=ctx)
s.ehlo()
def bearer(challenge=None):
    if challenge is None:
        return "n,a=%s,\\x01auth=Bearer %s\\x01\\x01" % (job["user"], job["token"])
    return "\\x01"
try:
    code, text = s.auth("OAUTHBEARER", bearer)
except smtplib.SMTPAuthenticationError as e:
    print(json.dumps({"code": e.smtp_code, "text": e.smtp_error.decode()}))
    sys.exit(0)
s.sendmail(job["user"], [job["to"]], job["message"].encode())
s.quit()
print(json.dumps({"code": code, "text": text.decode()}))
`;

test(
  'interop: python3 smtplib logs in with OAUTHBEARER (auth() and an authobject) and submits',
  python,
  async () => {
    const run = async (token: string): Promise<{ code: number; text: string }> => {
      const job = {
        port: fileServer.ports.submission,
        user: ALICE,
        to: BOB,
        token,
        message: `From: ${ALICE}\r\nTo: ${BOB}\r\nSubject: smtplib oauth\r\n\r\nhello\r\n`,
      };
      const result = await runTool('python3', ['-c', SMTPLIB_OAUTH], { input: JSON.stringify(job) });
      assertRunOk(result);
      return JSON.parse(result.stdout) as { code: number; text: string }; // the script prints one JSON object
    };
    const before = (await waitForMessages(fileServer.dataDir, 'sterna.test', 'bob', 1)).length;
    assert.deepEqual(await run(await mintToken(rs, ALICE)), {
      code: 235,
      text: '2.7.0 Authentication successful',
    });
    const msgs = await waitForMessages(fileServer.dataDir, 'sterna.test', 'bob', before + 1);
    assert.match(msgs.at(-1)!.toString('utf8'), /\(Authenticated sender: alice@sterna\.test\)\r\n/);
    // A refused token: smtplib answers the 334 with the dummy and reports the 535.
    const now = Math.floor(Date.now() / 1000);
    assert.deepEqual(await run(await mintToken(rs, ALICE, { claims: { exp: now - 600 } })), {
      code: 535,
      text: '5.7.8 Authentication credentials invalid',
    });
  },
);
