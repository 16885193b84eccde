import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createExchange, failedTokenFollowUp, parseMechanism, type SaslStep } from './sasl.js';

const opts = { hostname: 'mx.example.org', nonce: '1896', timestampMs: 697170952 };
const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

const BAD_BASE64: SaslStep = { kind: 'error', reason: 'bad-base64' };
const MALFORMED: SaslStep = { kind: 'error', reason: 'malformed' };

test('RFC 4954 4: mechanism names are case-insensitive; unknown names give null', () => {
  assert.equal(parseMechanism('plain'), 'PLAIN');
  assert.equal(parseMechanism('Login'), 'LOGIN');
  assert.equal(parseMechanism('cram-md5'), 'CRAM-MD5');
  assert.equal(parseMechanism('DIGEST-MD5'), null);
  assert.equal(parseMechanism(''), null);
});

// PLAIN

test('RFC 4616 2: PLAIN initial response with empty authzid gives the credentials', () => {
  const ex = createExchange('PLAIN', opts);
  assert.deepEqual(ex.start(b64('\0alice@example.org\0s3cret')), {
    kind: 'done',
    credentials: { kind: 'password', authcid: 'alice@example.org', authzid: '', password: 's3cret' },
  });
});

test('RFC 4616 2: PLAIN keeps the authzid for the store to check', () => {
  const ex = createExchange('PLAIN', opts);
  assert.deepEqual(ex.start(b64('bob@example.org\0alice@example.org\0pw')), {
    kind: 'done',
    credentials: {
      kind: 'password',
      authcid: 'alice@example.org',
      authzid: 'bob@example.org',
      password: 'pw',
    },
  });
});

test('RFC 4616 2: PLAIN decodes UTF-8 user names and passwords', () => {
  const ex = createExchange('PLAIN', opts);
  assert.deepEqual(ex.start(b64('\0jörg@exämple.org\0pässwörd✓')), {
    kind: 'done',
    credentials: { kind: 'password', authcid: 'jörg@exämple.org', authzid: '', password: 'pässwörd✓' },
  });
});

test('RFC 4616 2: PLAIN without initial response sends an empty challenge, then reads the response', () => {
  const ex = createExchange('PLAIN', opts);
  assert.deepEqual(ex.start(undefined), { kind: 'challenge', challenge: '' });
  assert.deepEqual(ex.next(b64('\0alice@example.org\0pw')), {
    kind: 'done',
    credentials: { kind: 'password', authcid: 'alice@example.org', authzid: '', password: 'pw' },
  });
});

test('RFC 4954 4: PLAIN initial response "=" is an empty response, which is malformed', () => {
  assert.deepEqual(createExchange('PLAIN', opts).start('='), MALFORMED);
});

test('RFC 4616 2: PLAIN with empty authcid, empty password or the wrong number of NULs is malformed', () => {
  for (const text of [
    '\0\0pw',
    '\0alice@example.org\0',
    'alice@example.org\0pw',
    'a\0b\0c\0d',
    'no-nul-at-all',
  ]) {
    assert.deepEqual(createExchange('PLAIN', opts).start(b64(text)), MALFORMED, JSON.stringify(text));
  }
});

test('RFC 4616 2: PLAIN with invalid UTF-8 is malformed', () => {
  const bytes = Buffer.concat([Buffer.from('\0alice\0'), Buffer.from([0xff, 0xfe])]);
  assert.deepEqual(createExchange('PLAIN', opts).start(bytes.toString('base64')), MALFORMED);
});

test('RFC 4954 4: "*" cancels PLAIN as initial response or as a response', () => {
  assert.deepEqual(createExchange('PLAIN', opts).start('*'), { kind: 'cancelled' });
  const ex = createExchange('PLAIN', opts);
  ex.start(undefined);
  assert.deepEqual(ex.next('*'), { kind: 'cancelled' });
});

test('RFC 4648 4: PLAIN refuses characters outside the alphabet, missing or bad padding, spaces', () => {
  const good = b64('\0alice\0pw'); // "AGFsaWNlAHB3"
  for (const bad of [
    good.slice(0, -1), // length not a multiple of 4
    'AGFsaWNlAHB3=', // padding where none belongs
    'AGFsaWNlAHA=x', // data after padding
    'AGFsaWNl AHB3', // space
    'AGFsaWNlAHB3\t',
    'AGFsaWNl-HB3', // URL-safe alphabet
    'AGFsaWNlAHB=', // non-canonical: padding bits set
    '=',
    '====',
  ]) {
    const ex = createExchange('PLAIN', opts);
    ex.start(undefined);
    assert.deepEqual(ex.next(bad), BAD_BASE64, bad);
  }
  assert.deepEqual(createExchange('PLAIN', opts).start('not base64!'), BAD_BASE64);
});

test('PLAIN answers any line after the exchange finished with an error', () => {
  const ex = createExchange('PLAIN', opts);
  ex.start(b64('\0alice\0pw'));
  assert.deepEqual(ex.next(b64('\0alice\0pw')), MALFORMED);
  assert.deepEqual(ex.start(undefined), MALFORMED);
});

// LOGIN

test('LOGIN asks "Username:" then "Password:" and gives the credentials with an empty authzid', () => {
  const ex = createExchange('LOGIN', opts);
  assert.deepEqual(ex.start(undefined), { kind: 'challenge', challenge: 'VXNlcm5hbWU6' });
  assert.deepEqual(ex.next(b64('alice@example.org')), { kind: 'challenge', challenge: 'UGFzc3dvcmQ6' });
  assert.deepEqual(ex.next(b64('s3cret')), {
    kind: 'done',
    credentials: { kind: 'password', authcid: 'alice@example.org', authzid: '', password: 's3cret' },
  });
  assert.equal(Buffer.from('VXNlcm5hbWU6', 'base64').toString(), 'Username:');
  assert.equal(Buffer.from('UGFzc3dvcmQ6', 'base64').toString(), 'Password:');
});

test('LOGIN takes an initial response as the user name and asks only for the password', () => {
  const ex = createExchange('LOGIN', opts);
  assert.deepEqual(ex.start(b64('alice@example.org')), { kind: 'challenge', challenge: 'UGFzc3dvcmQ6' });
  assert.deepEqual(ex.next(b64('pw')), {
    kind: 'done',
    credentials: { kind: 'password', authcid: 'alice@example.org', authzid: '', password: 'pw' },
  });
});

test('LOGIN with an empty user name or password is malformed', () => {
  assert.deepEqual(createExchange('LOGIN', opts).start('='), MALFORMED);
  const ex1 = createExchange('LOGIN', opts);
  ex1.start(undefined);
  assert.deepEqual(ex1.next(''), MALFORMED);
  const ex2 = createExchange('LOGIN', opts);
  ex2.start(undefined);
  ex2.next(b64('alice'));
  assert.deepEqual(ex2.next(''), MALFORMED);
});

test('LOGIN refuses NUL in the user name or password', () => {
  const ex1 = createExchange('LOGIN', opts);
  ex1.start(undefined);
  assert.deepEqual(ex1.next(b64('al\0ice')), MALFORMED);
  const ex2 = createExchange('LOGIN', opts);
  ex2.start(b64('alice'));
  assert.deepEqual(ex2.next(b64('p\0w')), MALFORMED);
});

test('RFC 4954 4: "*" cancels LOGIN at every step', () => {
  assert.deepEqual(createExchange('LOGIN', opts).start('*'), { kind: 'cancelled' });
  const ex1 = createExchange('LOGIN', opts);
  ex1.start(undefined);
  assert.deepEqual(ex1.next('*'), { kind: 'cancelled' });
  const ex2 = createExchange('LOGIN', opts);
  ex2.start(undefined);
  ex2.next(b64('alice'));
  assert.deepEqual(ex2.next('*'), { kind: 'cancelled' });
  assert.deepEqual(ex2.next(b64('pw')), MALFORMED);
});

test('RFC 4648 4: LOGIN refuses bad base64 for the user name and for the password', () => {
  const ex1 = createExchange('LOGIN', opts);
  ex1.start(undefined);
  assert.deepEqual(ex1.next('YWxpY2U'), BAD_BASE64);
  assert.deepEqual(createExchange('LOGIN', opts).start('YW$pY2U='), BAD_BASE64);
  const ex2 = createExchange('LOGIN', opts);
  ex2.start(undefined);
  ex2.next(b64('alice'));
  assert.deepEqual(ex2.next('cHc=='), BAD_BASE64);
});

// CRAM-MD5

const CRAM_CHALLENGE = '<1896.697170952@mx.example.org>';

test('RFC 2195 2: CRAM-MD5 challenge is base64 of <nonce.timestamp@hostname>', () => {
  const ex = createExchange('CRAM-MD5', opts);
  const step = ex.start(undefined);
  assert.deepEqual(step, { kind: 'challenge', challenge: b64(CRAM_CHALLENGE) });
});

test('RFC 2195 2: CRAM-MD5 response "user SP digest" gives the credentials with the challenge text', () => {
  const ex = createExchange('CRAM-MD5', opts);
  ex.start(undefined);
  assert.deepEqual(ex.next(b64('tim b913a602c7eda7a495b4e6e7334d3890')), {
    kind: 'done',
    credentials: {
      kind: 'cram-md5',
      username: 'tim',
      challenge: CRAM_CHALLENGE,
      digestHex: 'b913a602c7eda7a495b4e6e7334d3890',
    },
  });
});

test('RFC 2195 2: CRAM-MD5 response without a 32-digit lower-case hex digest is malformed', () => {
  for (const text of [
    'tim',
    'tim b913a602c7eda7a495b4e6e7334d389', // 31 digits
    'tim B913A602C7EDA7A495B4E6E7334D3890', // upper case
    ' b913a602c7eda7a495b4e6e7334d3890', // empty user name
    'tim  b913a602c7eda7a495b4e6e7334d3890x',
    '',
  ]) {
    const ex = createExchange('CRAM-MD5', opts);
    ex.start(undefined);
    assert.deepEqual(ex.next(b64(text)), MALFORMED, text);
  }
});

test('RFC 4954 4: CRAM-MD5 refuses an initial response; "*" cancels', () => {
  assert.deepEqual(createExchange('CRAM-MD5', opts).start(b64('tim')), MALFORMED);
  assert.deepEqual(createExchange('CRAM-MD5', opts).start('*'), { kind: 'cancelled' });
  const ex = createExchange('CRAM-MD5', opts);
  ex.start(undefined);
  assert.deepEqual(ex.next('*'), { kind: 'cancelled' });
});

test('RFC 4648 4: CRAM-MD5 refuses a response that is not base64', () => {
  const ex = createExchange('CRAM-MD5', opts);
  ex.start(undefined);
  assert.deepEqual(ex.next('tim b913a602c7eda7a495b4e6e7334d3890'), BAD_BASE64);
});

// OAUTHBEARER (RFC 7628) and XOAUTH2

const TOKEN = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_';

test('RFC 7628 3.1: OAUTHBEARER initial response with a GS2 authzid, host and port gives the token', () => {
  const ex = createExchange('OAUTHBEARER', opts);
  const msg = `n,a=alice@example.org,\x01host=mx.example.org\x01port=587\x01auth=Bearer ${TOKEN}\x01\x01`;
  assert.deepEqual(ex.start(b64(msg)), {
    kind: 'done',
    credentials: { kind: 'oauth', mechanism: 'OAUTHBEARER', authzid: 'alice@example.org', token: TOKEN },
  });
});

test('RFC 7628 3.1 / RFC 5801 4: no authzid is allowed; "=2C" and "=3D" are unescaped; "bearer" is case-blind', () => {
  assert.deepEqual(createExchange('OAUTHBEARER', opts).start(b64(`n,,\x01auth=bearer ${TOKEN}\x01\x01`)), {
    kind: 'done',
    credentials: { kind: 'oauth', mechanism: 'OAUTHBEARER', authzid: '', token: TOKEN },
  });
  assert.deepEqual(
    createExchange('OAUTHBEARER', opts).start(b64(`y,a=a=2Cb=3Dc@x.org,\x01auth=Bearer ${TOKEN}\x01\x01`)),
    {
      kind: 'done',
      credentials: { kind: 'oauth', mechanism: 'OAUTHBEARER', authzid: 'a,b=c@x.org', token: TOKEN },
    },
  );
});

test('RFC 7628 3.1: OAUTHBEARER without an initial response gets an empty 334, then takes the message', () => {
  const ex = createExchange('OAUTHBEARER', opts);
  assert.deepEqual(ex.start(undefined), { kind: 'challenge', challenge: '' });
  assert.deepEqual(ex.next(b64(`n,,\x01auth=Bearer ${TOKEN}\x01\x01`)), {
    kind: 'done',
    credentials: { kind: 'oauth', mechanism: 'OAUTHBEARER', authzid: '', token: TOKEN },
  });
});

test('RFC 7628 3.1: malformed OAUTHBEARER messages are refused', () => {
  const bad = [
    `p=tls-unique,,\x01auth=Bearer ${TOKEN}\x01\x01`, // channel binding: not offered
    `n,a=x=y,\x01auth=Bearer ${TOKEN}\x01\x01`, // "=" not escaped
    `n,,\x01auth=Bearer ${TOKEN}\x01`, // missing the final kvsep
    `n,,\x01host=x\x01\x01`, // no auth
    `n,,\x01auth=Basic YWxpY2U6cHc=\x01\x01`, // not a bearer token
    `n,,\x01auth=Bearer ${TOKEN}\x01auth=Bearer ${TOKEN}\x01\x01`, // auth twice
    `n,,\x01auth=Bearer to ken\x01\x01`,
    '\x01', // the dummy response is not a first message
  ];
  for (const m of bad) assert.deepEqual(createExchange('OAUTHBEARER', opts).start(b64(m)), MALFORMED, m);
  assert.deepEqual(createExchange('OAUTHBEARER', opts).start('='), MALFORMED);
  assert.deepEqual(createExchange('OAUTHBEARER', opts).start('not base64!'), BAD_BASE64);
});

test('XOAUTH2: user= and auth=Bearer, as an initial response or after an empty 334', () => {
  const msg = `user=alice@example.org\x01auth=Bearer ${TOKEN}\x01\x01`;
  const want = {
    kind: 'done',
    credentials: { kind: 'oauth', mechanism: 'XOAUTH2', authzid: 'alice@example.org', token: TOKEN },
  };
  assert.deepEqual(createExchange('XOAUTH2', opts).start(b64(msg)), want);
  const ex = createExchange('XOAUTH2', opts);
  assert.deepEqual(ex.start(undefined), { kind: 'challenge', challenge: '' });
  assert.deepEqual(ex.next(b64(msg)), want);
  for (const m of [
    `auth=Bearer ${TOKEN}\x01\x01`,
    `user=\x01auth=Bearer ${TOKEN}\x01\x01`,
    `user=a@b\x01\x01`,
  ]) {
    assert.deepEqual(createExchange('XOAUTH2', opts).start(b64(m)), MALFORMED, m);
  }
});

test('RFC 7628 3.2.3: after the error status, any dummy answer fails the exchange; "*" cancels it', () => {
  const a = failedTokenFollowUp();
  assert.deepEqual(a.next('AQ=='), MALFORMED);
  assert.deepEqual(a.next('AQ=='), MALFORMED, 'finished');
  assert.deepEqual(failedTokenFollowUp().next(''), MALFORMED);
  assert.deepEqual(failedTokenFollowUp().next('*'), { kind: 'cancelled' });
});
