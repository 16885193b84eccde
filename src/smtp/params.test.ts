/** Unit tests for src/smtp/params.ts: ESMTP parameters of MAIL and RCPT, and xtext. */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MailParams, RcptParams } from '../message/envelope.js';
import { decodeXtext, encodeXtext, parseMailParams, parseRcptParams, type ParamError } from './params.js';

const OPTS = { maxSize: 1000 };

function mail(text: string): MailParams {
  const r = parseMailParams(text, OPTS);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(text)} to parse, got ${JSON.stringify(r.error)}`);
  return r.params;
}

function mailError(text: string): ParamError {
  const r = parseMailParams(text, OPTS);
  if (r.ok) assert.fail(`expected ${JSON.stringify(text)} to fail, got ${JSON.stringify(r.params)}`);
  return r.error;
}

function rcpt(text: string): RcptParams {
  const r = parseRcptParams(text);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(text)} to parse, got ${JSON.stringify(r.error)}`);
  return r.params;
}

function rcptError(text: string): ParamError {
  const r = parseRcptParams(text);
  if (r.ok) assert.fail(`expected ${JSON.stringify(text)} to fail, got ${JSON.stringify(r.params)}`);
  return r.error;
}

function syntax(detail: string): ParamError {
  return { kind: 'syntax', detail };
}

// --- general grammar -----------------------------------------------------------------------

void test('RFC 5321 4.1.2: no parameters give {}', () => {
  assert.deepEqual(parseMailParams('', OPTS), { ok: true, params: {} });
  assert.deepEqual(parseRcptParams(''), { ok: true, params: {} });
});

void test('RFC 5321 4.1.2: keywords are case-insensitive', () => {
  assert.deepEqual(mail('size=10 Body=8bitmime smtputf8 ret=hdrs envid=x'), {
    size: 10,
    body: '8BITMIME',
    smtputf8: true,
    ret: 'HDRS',
    envid: 'x',
  });
  assert.deepEqual(rcpt('notify=success orcpt=RFC822;a@b.test'), {
    notify: ['SUCCESS'],
    orcpt: { type: 'rfc822', address: 'a@b.test' },
  });
});

void test('RFC 5321 4.1.2: runs of spaces between parameters are tolerated', () => {
  assert.deepEqual(mail('SIZE=1   BODY=7BIT'), { size: 1, body: '7BIT' });
});

void test('RFC 5321 4.1.1.11: an unknown MAIL keyword is reported as unknown, upper-cased', () => {
  assert.deepEqual(mailError('AUTH=<>'), { kind: 'unknown', param: 'AUTH' });
  assert.deepEqual(mailError('x-foo'), { kind: 'unknown', param: 'X-FOO' });
  assert.deepEqual(mailError('SIZE=1 HOLDFOR=10'), { kind: 'unknown', param: 'HOLDFOR' });
});

void test('RFC 5321 4.1.1.11: RCPT keywords are unknown on MAIL and MAIL keywords unknown on RCPT', () => {
  assert.deepEqual(mailError('NOTIFY=NEVER'), { kind: 'unknown', param: 'NOTIFY' });
  assert.deepEqual(mailError('ORCPT=rfc822;a@b.test'), { kind: 'unknown', param: 'ORCPT' });
  assert.deepEqual(rcptError('SIZE=1'), { kind: 'unknown', param: 'SIZE' });
  assert.deepEqual(rcptError('SMTPUTF8'), { kind: 'unknown', param: 'SMTPUTF8' });
  assert.deepEqual(rcptError('x-foo=bar'), { kind: 'unknown', param: 'X-FOO' });
});

void test('RFC 5321 4.1.2: a malformed keyword is a syntax error', () => {
  const e = syntax('invalid parameter keyword');
  assert.deepEqual(mailError('=1'), e);
  assert.deepEqual(mailError('-SIZE=1'), e);
  assert.deepEqual(mailError('SI_ZE=1'), e);
  assert.deepEqual(mailError('SIZÉ=1'), e);
  assert.deepEqual(rcptError('NOTIFY\t=NEVER'), e);
});

void test('RFC 5321 4.1.2: an empty or malformed esmtp-value is a syntax error', () => {
  assert.deepEqual(mailError('SIZE='), syntax('SIZE has an empty value'));
  assert.deepEqual(mailError('X-FOO=a=b'), syntax('X-FOO has an invalid value'));
  assert.deepEqual(mailError('ENVID=a\x00b'), syntax('ENVID has an invalid value'));
  assert.deepEqual(mailError('ENVID=a\x7fb'), syntax('ENVID has an invalid value'));
  assert.deepEqual(mailError('ENVID=a\u0085b'), syntax('ENVID has an invalid value'));
  assert.deepEqual(rcptError('ORCPT=rfc822;a\tb'), syntax('ORCPT has an invalid value'));
});

void test('the first problem from the left is the one reported', () => {
  assert.deepEqual(mailError('X-FOO SIZE=abc'), { kind: 'unknown', param: 'X-FOO' });
  assert.deepEqual(mailError('SIZE=abc X-FOO'), syntax('SIZE must be 1 to 20 digits'));
});

void test('a parameter given twice is a syntax error', () => {
  assert.deepEqual(mailError('SIZE=1 SIZE=2'), syntax('SIZE given more than once'));
  assert.deepEqual(mailError('SMTPUTF8 smtputf8'), syntax('SMTPUTF8 given more than once'));
  assert.deepEqual(mailError('BODY=7BIT body=8BITMIME'), syntax('BODY given more than once'));
  assert.deepEqual(mailError('RET=FULL RET=FULL'), syntax('RET given more than once'));
  assert.deepEqual(mailError('ENVID=a ENVID=b'), syntax('ENVID given more than once'));
  assert.deepEqual(rcptError('NOTIFY=NEVER NOTIFY=NEVER'), syntax('NOTIFY given more than once'));
  assert.deepEqual(rcptError('ORCPT=rfc822;a ORCPT=rfc822;b'), syntax('ORCPT given more than once'));
});

// --- SIZE (RFC 1870) -----------------------------------------------------------------------

void test('RFC 1870: SIZE returns the declared number, not compared with maxSize here', () => {
  assert.deepEqual(mail('SIZE=0'), { size: 0 });
  assert.deepEqual(mail('SIZE=1000'), { size: 1000 });
  assert.deepEqual(mail('SIZE=1000000'), { size: 1000000 });
  assert.deepEqual(mail('SIZE=007'), { size: 7 });
  assert.deepEqual(mail(`SIZE=${'9'.repeat(20)}`), { size: 1e20 });
});

void test('RFC 1870: SIZE must be 1 to 20 digits', () => {
  const e = syntax('SIZE must be 1 to 20 digits');
  assert.deepEqual(mailError(`SIZE=${'1'.repeat(21)}`), e);
  assert.deepEqual(mailError('SIZE=-1'), e);
  assert.deepEqual(mailError('SIZE=1.5'), e);
  assert.deepEqual(mailError('SIZE=1e3'), e);
  assert.deepEqual(mailError('SIZE=0x10'), e);
  assert.deepEqual(mailError('SIZE=+1'), e);
  assert.deepEqual(mailError('SIZE=١٢'), e);
  assert.deepEqual(mailError('SIZE'), syntax('SIZE needs a value'));
});

// --- BODY (RFC 6152, RFC 3030) -------------------------------------------------------------

void test('RFC 6152 / RFC 3030: BODY accepts 7BIT, 8BITMIME and BINARYMIME', () => {
  assert.deepEqual(mail('BODY=7BIT'), { body: '7BIT' });
  assert.deepEqual(mail('BODY=8BITMIME'), { body: '8BITMIME' });
  assert.deepEqual(mail('BODY=BINARYMIME'), { body: 'BINARYMIME' });
  assert.deepEqual(mail('BODY=binarymime'), { body: 'BINARYMIME' });
});

void test('RFC 6152: any other BODY value is a syntax error', () => {
  const e = syntax('BODY must be 7BIT, 8BITMIME or BINARYMIME');
  assert.deepEqual(mailError('BODY=8BIT'), e);
  assert.deepEqual(mailError('BODY=QUOTED-PRINTABLE'), e);
  assert.deepEqual(mailError('BODY'), syntax('BODY needs a value'));
});

// --- SMTPUTF8 (RFC 6531) -------------------------------------------------------------------

void test('RFC 6531 3.4: SMTPUTF8 takes no value', () => {
  assert.deepEqual(mail('SMTPUTF8'), { smtputf8: true });
  assert.deepEqual(mailError('SMTPUTF8=yes'), syntax('SMTPUTF8 takes no value'));
});

// --- RET and ENVID (RFC 3461) --------------------------------------------------------------

void test('RFC 3461 4.3: RET accepts FULL and HDRS', () => {
  assert.deepEqual(mail('RET=FULL'), { ret: 'FULL' });
  assert.deepEqual(mail('RET=HDRS'), { ret: 'HDRS' });
  assert.deepEqual(mail('RET=full'), { ret: 'FULL' });
});

void test('RFC 3461 4.3: any other RET value is a syntax error', () => {
  assert.deepEqual(mailError('RET=NONE'), syntax('RET must be FULL or HDRS'));
  assert.deepEqual(mailError('RET'), syntax('RET needs a value'));
});

void test('RFC 3461 4.4: ENVID is decoded from xtext', () => {
  assert.deepEqual(mail('ENVID=QQ314159'), { envid: 'QQ314159' });
  assert.deepEqual(mail('ENVID=a+2Bb+3Dc+20d'), { envid: 'a+b=c d' });
});

void test('RFC 3461 4.4: ENVID of 100 characters is accepted, 101 refused', () => {
  assert.deepEqual(mail(`ENVID=${'x'.repeat(100)}`), { envid: 'x'.repeat(100) });
  assert.deepEqual(mailError(`ENVID=${'x'.repeat(101)}`), syntax('ENVID longer than 100 characters'));
  // The limit counts the value as sent: 34 escapes are 102 characters.
  assert.deepEqual(mailError(`ENVID=${'+20'.repeat(34)}`), syntax('ENVID longer than 100 characters'));
});

void test('RFC 3461 4.4: malformed ENVID xtext is a syntax error', () => {
  const e = syntax('ENVID is not valid xtext');
  assert.deepEqual(mailError('ENVID=a+2'), e);
  assert.deepEqual(mailError('ENVID=a+2b'), e);
  assert.deepEqual(mailError('ENVID=a+ZZ'), e);
  assert.deepEqual(mailError('ENVID=é'), e);
  assert.deepEqual(mailError('ENVID'), syntax('ENVID needs a value'));
});

void test('RFC 3461 4.4: a decoded ENVID must be printable ASCII (no CR, LF, NUL, UTF-8)', () => {
  const e = syntax('ENVID must be printable ASCII');
  assert.deepEqual(mailError('ENVID=a+0D+0AX-Injected:+20yes'), e);
  assert.deepEqual(mailError('ENVID=a+00'), e);
  assert.deepEqual(mailError('ENVID=a+09'), e);
  assert.deepEqual(mailError('ENVID=+C3+A9'), e);
});

void test('all MAIL parameters together', () => {
  assert.deepEqual(mail('SIZE=12345 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1'), {
    size: 12345,
    body: '8BITMIME',
    smtputf8: true,
    ret: 'HDRS',
    envid: 'id+1',
  });
});

// --- NOTIFY (RFC 3461 4.1) -----------------------------------------------------------------

void test('RFC 3461 4.1: NOTIFY=NEVER', () => {
  assert.deepEqual(rcpt('NOTIFY=NEVER'), { notify: ['NEVER'] });
  assert.deepEqual(rcpt('NOTIFY=never'), { notify: ['NEVER'] });
});

void test('RFC 3461 4.1: NOTIFY lists SUCCESS, FAILURE and DELAY in the order given', () => {
  assert.deepEqual(rcpt('NOTIFY=SUCCESS'), { notify: ['SUCCESS'] });
  assert.deepEqual(rcpt('NOTIFY=FAILURE'), { notify: ['FAILURE'] });
  assert.deepEqual(rcpt('NOTIFY=DELAY'), { notify: ['DELAY'] });
  assert.deepEqual(rcpt('NOTIFY=FAILURE,DELAY'), { notify: ['FAILURE', 'DELAY'] });
  assert.deepEqual(rcpt('NOTIFY=delay,Success,FAILURE'), { notify: ['DELAY', 'SUCCESS', 'FAILURE'] });
});

void test('RFC 3461 4.1: NEVER combined with other values is a syntax error', () => {
  const e = syntax('NOTIFY=NEVER cannot be combined with other values');
  assert.deepEqual(rcptError('NOTIFY=NEVER,SUCCESS'), e);
  assert.deepEqual(rcptError('NOTIFY=FAILURE,NEVER'), e);
  assert.deepEqual(rcptError('NOTIFY=NEVER,NEVER'), e);
});

void test('RFC 3461 4.1: unknown or empty NOTIFY values are syntax errors', () => {
  const e = syntax('NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY');
  assert.deepEqual(rcptError('NOTIFY=ALWAYS'), e);
  assert.deepEqual(rcptError('NOTIFY=SUCCESS,'), e);
  assert.deepEqual(rcptError('NOTIFY=,SUCCESS'), e);
  assert.deepEqual(rcptError('NOTIFY=SUCCESS,,DELAY'), e);
  assert.deepEqual(rcptError('NOTIFY'), syntax('NOTIFY needs a value'));
});

void test('RFC 3461 4.1: a NOTIFY value listed twice is a syntax error', () => {
  assert.deepEqual(rcptError('NOTIFY=SUCCESS,success'), syntax('NOTIFY lists SUCCESS twice'));
});

// --- ORCPT (RFC 3461 4.2) ------------------------------------------------------------------

void test('RFC 3461 4.2: ORCPT is addr-type;xtext, decoded, type lower-cased', () => {
  assert.deepEqual(rcpt('ORCPT=rfc822;user+40example.com'), {
    orcpt: { type: 'rfc822', address: 'user@example.com' },
  });
  assert.deepEqual(rcpt('ORCPT=rfc822;user@example.com'), {
    orcpt: { type: 'rfc822', address: 'user@example.com' },
  });
  assert.deepEqual(rcpt('ORCPT=RFC822;a+2Bb@example.com'), {
    orcpt: { type: 'rfc822', address: 'a+b@example.com' },
  });
  assert.deepEqual(rcpt('ORCPT=x-local;a;b'), { orcpt: { type: 'x-local', address: 'a;b' } });
});

void test('RFC 3461 4.2: a malformed ORCPT is a syntax error', () => {
  assert.deepEqual(rcptError('ORCPT=user@example.com'), syntax('ORCPT must be addr-type;address'));
  assert.deepEqual(rcptError('ORCPT=;user@example.com'), syntax('ORCPT has an invalid address type'));
  assert.deepEqual(rcptError('ORCPT=rf(c;user@example.com'), syntax('ORCPT has an invalid address type'));
  assert.deepEqual(rcptError('ORCPT=rfc822;'), syntax('ORCPT address is empty'));
  assert.deepEqual(rcptError('ORCPT=rfc822;user+4'), syntax('ORCPT address is not valid xtext'));
  assert.deepEqual(rcptError('ORCPT=rfc822;user+40exa+6dple'), syntax('ORCPT address is not valid xtext'));
  assert.deepEqual(rcptError('ORCPT=rfc822;üser@example.com'), syntax('ORCPT address is not valid xtext'));
  assert.deepEqual(rcptError('ORCPT'), syntax('ORCPT needs a value'));
});

void test('RFC 3461 4.2: a decoded ORCPT must be printable ASCII', () => {
  const e = syntax('ORCPT address must be printable ASCII');
  assert.deepEqual(rcptError('ORCPT=rfc822;a+0D+0Ab@example.com'), e);
  assert.deepEqual(rcptError('ORCPT=rfc822;+C3+BCser@example.com'), e);
});

void test('RFC 3461 5: ORCPT values longer than 500 characters are refused', () => {
  const ok = `rfc822;${'a'.repeat(493)}`;
  assert.equal(ok.length, 500);
  assert.deepEqual(rcpt(`ORCPT=${ok}`), { orcpt: { type: 'rfc822', address: 'a'.repeat(493) } });
  assert.deepEqual(rcptError(`ORCPT=${ok}a`), syntax('ORCPT longer than 500 characters'));
});

void test('both RCPT parameters together', () => {
  assert.deepEqual(rcpt('NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+40example.test'), {
    notify: ['SUCCESS', 'FAILURE'],
    orcpt: { type: 'rfc822', address: 'bob@example.test' },
  });
});

// --- xtext (RFC 3461 4) --------------------------------------------------------------------

void test('RFC 3461 4: decodeXtext decodes "+XX" and keeps xchar', () => {
  assert.equal(decodeXtext(''), '');
  assert.equal(decodeXtext('abc!~'), 'abc!~');
  assert.equal(decodeXtext('+2B+3D+20'), '+= ');
  assert.equal(decodeXtext('+C3+A9t+C3+A9'), 'été');
});

void test('RFC 3461 4: decodeXtext returns null for malformed xtext', () => {
  assert.equal(decodeXtext('+'), null);
  assert.equal(decodeXtext('+4'), null);
  assert.equal(decodeXtext('+4g'), null);
  assert.equal(decodeXtext('+2b'), null); // hex must be upper case
  assert.equal(decodeXtext('a=b'), null);
  assert.equal(decodeXtext('a b'), null);
  assert.equal(decodeXtext('a\x7fb'), null);
  assert.equal(decodeXtext('é'), null);
  assert.equal(decodeXtext('+C3'), null); // not UTF-8
  assert.equal(decodeXtext('+FF'), null);
});

void test('RFC 3461 4: encodeXtext escapes "+", "=", spaces, controls and non-ASCII octets', () => {
  assert.equal(encodeXtext('user@example.com'), 'user@example.com');
  assert.equal(encodeXtext('a+b=c d'), 'a+2Bb+3Dc+20d');
  assert.equal(encodeXtext('\r\n\0\x7f'), '+0D+0A+00+7F');
  assert.equal(encodeXtext('é'), '+C3+A9');
  assert.equal(encodeXtext(''), '');
});

void test('RFC 3461 4: encodeXtext and decodeXtext round-trip', () => {
  for (const s of ['', 'plain', 'a+b=c d', '\x01\x02~!', 'ünïcødé 用户', '+++===']) {
    assert.equal(decodeXtext(encodeXtext(s)), s);
  }
});
