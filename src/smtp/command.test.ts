/** Unit tests for src/smtp/command.ts: one command line to a verb and its argument text (RFC 5321 4.1). */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseCommand, type ParsedCommand } from './command.js';

function parse(line: string): ParsedCommand {
  return parseCommand(Buffer.from(line, 'utf8'));
}

test('RFC 5321 2.4: verbs are case-insensitive', () => {
  assert.deepEqual(parse('ehlo client.test'), { kind: 'command', verb: 'EHLO', args: 'client.test' });
  assert.deepEqual(parse('Helo client.test'), { kind: 'command', verb: 'HELO', args: 'client.test' });
  assert.deepEqual(parse('nOoP'), { kind: 'command', verb: 'NOOP', args: '' });
});

test('RFC 5321 4.1.1: every supported verb is recognised', () => {
  for (const verb of [
    'HELO',
    'EHLO',
    'DATA',
    'RSET',
    'VRFY',
    'EXPN',
    'NOOP',
    'HELP',
    'QUIT',
    'STARTTLS',
    'AUTH',
  ]) {
    assert.deepEqual(parse(verb), { kind: 'command', verb, args: '' }, verb);
  }
  assert.deepEqual(parse('BDAT 10 LAST'), { kind: 'command', verb: 'BDAT', args: '10 LAST' });
});

test('RFC 5321 4.1.1: the argument text is trimmed', () => {
  assert.deepEqual(parse('EHLO   client.test  '), { kind: 'command', verb: 'EHLO', args: 'client.test' });
  assert.deepEqual(parse('VRFY  alice '), { kind: 'command', verb: 'VRFY', args: 'alice' });
  assert.deepEqual(parse('AUTH PLAIN AGFAYg=='), { kind: 'command', verb: 'AUTH', args: 'PLAIN AGFAYg==' });
});

test('RFC 5321 4.1.1.2 / 4.1.1.3: MAIL FROM: and RCPT TO: give the text after the colon, as sent', () => {
  assert.deepEqual(parse('MAIL FROM:<a@b.test> SIZE=10'), {
    kind: 'command',
    verb: 'MAIL',
    args: '<a@b.test> SIZE=10',
  });
  assert.deepEqual(parse('mail from:<>'), { kind: 'command', verb: 'MAIL', args: '<>' });
  assert.deepEqual(parse('MAIL FROM: <a@b.test>'), { kind: 'command', verb: 'MAIL', args: ' <a@b.test>' });
  assert.deepEqual(parse('RCPT TO:<c@d.test> NOTIFY=NEVER'), {
    kind: 'command',
    verb: 'RCPT',
    args: '<c@d.test> NOTIFY=NEVER',
  });
  assert.deepEqual(parse('rcpt to:<Postmaster>'), { kind: 'command', verb: 'RCPT', args: '<Postmaster>' });
  assert.deepEqual(parse('MAIL FROM:'), { kind: 'command', verb: 'MAIL', args: '' });
});

test('RFC 5321 4.1.1.2 / 4.1.1.3: MAIL without FROM: and RCPT without TO: are syntax errors', () => {
  assert.deepEqual(parse('MAIL <a@b.test>'), {
    kind: 'syntax',
    verb: 'MAIL',
    detail: 'expected "MAIL FROM:<address>"',
  });
  assert.deepEqual(parse('MAIL TO:<a@b.test>'), {
    kind: 'syntax',
    verb: 'MAIL',
    detail: 'expected "MAIL FROM:<address>"',
  });
  assert.deepEqual(parse('MAIL'), { kind: 'syntax', verb: 'MAIL', detail: 'expected "MAIL FROM:<address>"' });
  assert.deepEqual(parse('MAIL FROM <a@b.test>'), {
    kind: 'syntax',
    verb: 'MAIL',
    detail: 'expected "MAIL FROM:<address>"',
  });
  assert.deepEqual(parse('RCPT FROM:<a@b.test>'), {
    kind: 'syntax',
    verb: 'RCPT',
    detail: 'expected "RCPT TO:<address>"',
  });
});

test('RFC 5321 4.1.1 / RFC 3207 4: DATA, RSET, QUIT and STARTTLS take no parameters', () => {
  for (const verb of ['DATA', 'RSET', 'QUIT', 'STARTTLS']) {
    assert.deepEqual(
      parse(`${verb} x`),
      { kind: 'syntax', verb, detail: `${verb} takes no parameters` },
      verb,
    );
    assert.deepEqual(parse(`${verb}  `), { kind: 'command', verb, args: '' }, `${verb} with trailing spaces`);
  }
});

test('RFC 5321 4.2.4: an unknown verb is reported, upper-cased and cut to 32 characters', () => {
  assert.deepEqual(parse('XYZZY plugh'), { kind: 'unknown', verb: 'XYZZY' });
  assert.deepEqual(parse(''), { kind: 'unknown', verb: '' });
  assert.deepEqual(parse(' NOOP'), { kind: 'unknown', verb: '' });
  assert.deepEqual(parse('EHLO\tclient.test'), { kind: 'unknown', verb: 'EHLO\tCLIENT.TEST' });
  assert.deepEqual(parse(`${'a'.repeat(40)} x`), { kind: 'unknown', verb: 'A'.repeat(32) });
  assert.deepEqual(parse('MAILFROM:<a@b.test>'), { kind: 'unknown', verb: 'MAILFROM:<A@B.TEST>' });
});

test('an HTTP request line is recognised as such (cross-protocol attack)', () => {
  assert.deepEqual(parse('GET / HTTP/1.1'), { kind: 'http', verb: 'GET' });
  assert.deepEqual(parse('post /submit http/1.0'), { kind: 'http', verb: 'POST' });
  assert.deepEqual(parse('CONNECT mx.test:25 HTTP/1.1'), { kind: 'http', verb: 'CONNECT' });
  // Without an HTTP version it is just an unknown command.
  assert.deepEqual(parse('GET /'), { kind: 'unknown', verb: 'GET' });
});

test('RFC 5321 2.3.8 / 4.1: a NUL anywhere in the line is bad bytes', () => {
  assert.deepEqual(parseCommand(Buffer.from('NOOP\0', 'latin1')), { kind: 'bad-bytes', reason: 'nul' });
  assert.deepEqual(parseCommand(Buffer.from('\0EHLO x', 'latin1')), { kind: 'bad-bytes', reason: 'nul' });
});

test('RFC 3629: a line that is not valid UTF-8 is bad bytes', () => {
  assert.deepEqual(parseCommand(Buffer.from([0x45, 0x48, 0x4c, 0x4f, 0x20, 0xc3])), {
    kind: 'bad-bytes',
    reason: 'utf8',
  });
  assert.deepEqual(parseCommand(Buffer.from([0x45, 0x48, 0x4c, 0x4f, 0x20, 0xc0, 0xaf])), {
    kind: 'bad-bytes',
    reason: 'utf8',
  });
  // Surrogates encoded in UTF-8 (CESU) are not UTF-8.
  assert.deepEqual(parseCommand(Buffer.from([0x56, 0x52, 0x46, 0x59, 0x20, 0xed, 0xa0, 0x80])), {
    kind: 'bad-bytes',
    reason: 'utf8',
  });
});

test('RFC 6531 3.3: UTF-8 arguments are kept (the session decides whether SMTPUTF8 allows them)', () => {
  assert.deepEqual(parse('MAIL FROM:<josé@exämple.test> SMTPUTF8'), {
    kind: 'command',
    verb: 'MAIL',
    args: '<josé@exämple.test> SMTPUTF8',
  });
  assert.deepEqual(parse('EHLO bücher.test'), { kind: 'command', verb: 'EHLO', args: 'bücher.test' });
});
