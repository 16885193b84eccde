/** Unit tests for src/smtp/address.ts: RFC 5321 4.1.2 paths, limits, RFC 6531, relay tricks. */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  domainToAscii,
  formatMailbox,
  isAsciiOnly,
  normalizeDomain,
  parseForwardPath,
  parseReversePath,
  splitPathAndParams,
  unquoteLocal,
  type AddressError,
  type Mailbox,
} from './address.js';

const ASCII = { smtputf8: false };
const UTF8 = { smtputf8: true };

function forward(text: string, opts = ASCII): Mailbox {
  const r = parseForwardPath(text, opts);
  if (!r.ok) assert.fail(`expected ${JSON.stringify(text)} to parse, got ${JSON.stringify(r.error)}`);
  return r.mailbox;
}

function forwardError(text: string, opts = ASCII): AddressError {
  const r = parseForwardPath(text, opts);
  if (r.ok) assert.fail(`expected ${JSON.stringify(text)} to fail, got ${JSON.stringify(r.mailbox)}`);
  return r.error;
}

function syntaxError(detail: string): AddressError {
  return { kind: 'syntax', detail };
}

// --- basic paths ---------------------------------------------------------------------------

void test('RFC 5321 4.1.2: a simple forward-path gives local part and domain', () => {
  assert.deepEqual(forward('<user@example.test>'), { local: 'user', domain: 'example.test' });
});

void test('RFC 5321 4.1.2: the null reverse-path <> gives mailbox null', () => {
  assert.deepEqual(parseReversePath('<>', ASCII), { ok: true, mailbox: null });
});

void test('RFC 5321 4.1.2: a reverse-path with a mailbox parses like a forward-path', () => {
  assert.deepEqual(parseReversePath('<Bob.Smith@Example.TEST>', ASCII), {
    ok: true,
    mailbox: { local: 'Bob.Smith', domain: 'example.test' },
  });
});

void test('RFC 5321 4.1.2: <> is not a valid forward-path', () => {
  assert.deepEqual(forwardError('<>'), syntaxError('empty forward-path'));
});

void test('RFC 5321 4.1.1.3: <Postmaster> without domain is accepted as a forward-path, any case', () => {
  assert.deepEqual(forward('<Postmaster>'), { local: 'postmaster', domain: '' });
  assert.deepEqual(forward('<POSTMASTER>'), { local: 'postmaster', domain: '' });
  assert.deepEqual(forward('<postmaster>'), { local: 'postmaster', domain: '' });
});

void test('RFC 5321 4.1.1.3: <Postmaster> without domain is not a valid reverse-path', () => {
  assert.deepEqual(parseReversePath('<Postmaster>', ASCII), {
    ok: false,
    error: syntaxError('missing domain'),
  });
});

void test('RFC 5321 4.1.1.3: <Postmaster@domain> keeps the local part as sent', () => {
  assert.deepEqual(forward('<PostMaster@Local.Test>'), { local: 'PostMaster', domain: 'local.test' });
});

void test('RFC 5321 2.4: local part case is kept, domain is lower-cased', () => {
  assert.deepEqual(forward('<USER@Local.TEST>'), { local: 'USER', domain: 'local.test' });
});

void test('RFC 5321 4.1.2: every atext character is accepted in a dot-string', () => {
  const local = "a!#$%&'*+-/=?^_`{|}~9.Z";
  assert.deepEqual(forward(`<${local}@example.test>`), { local, domain: 'example.test' });
});

// --- source routes -------------------------------------------------------------------------

void test('RFC 5321 4.1.1.3: a source route is accepted and ignored', () => {
  assert.deepEqual(forward('<@a.test,@b.test:user@dom.test>'), { local: 'user', domain: 'dom.test' });
  assert.deepEqual(parseReversePath('<@a.test:user@dom.test>', ASCII), {
    ok: true,
    mailbox: { local: 'user', domain: 'dom.test' },
  });
});

void test('RFC 5321 4.1.1.3: a malformed source route is a syntax error', () => {
  assert.deepEqual(forwardError('<@a.test,b.test:user@dom.test>'), syntaxError('invalid source route'));
  assert.deepEqual(forwardError('<@:user@dom.test>'), syntaxError('invalid source route'));
  assert.deepEqual(forwardError('<@a_b.test:user@dom.test>'), syntaxError('invalid source route'));
  assert.deepEqual(forwardError('<@[1.2.3.4]:user@dom.test>'), syntaxError('invalid source route'));
  assert.deepEqual(forwardError('<@a.test,:user@dom.test>'), syntaxError('invalid source route'));
});

void test('RFC 5321 4.1.1.3: a source route with nothing after the colon is an empty local part', () => {
  assert.deepEqual(forwardError('<@a.test:>'), syntaxError('empty local part'));
});

// --- relay tricks (local.test is the local domain) -----------------------------------------

void test('relay trick: user%other.test@local.test stays a literal local part at local.test', () => {
  assert.deepEqual(forward('<user%other.test@local.test>'), {
    local: 'user%other.test',
    domain: 'local.test',
  });
});

void test('relay trick: "user@other.test"@local.test keeps the quoted local part at local.test', () => {
  const m = forward('<"user@other.test"@local.test>');
  assert.deepEqual(m, { local: '"user@other.test"', domain: 'local.test' });
  assert.equal(unquoteLocal(m.local), 'user@other.test');
});

void test('relay trick: @local.test:user@other.test goes to other.test, never local.test', () => {
  assert.deepEqual(forward('<@local.test:user@other.test>'), { local: 'user', domain: 'other.test' });
});

void test('relay trick: other.test!user@local.test is a literal bang-path local part at local.test', () => {
  assert.deepEqual(forward('<other.test!user@local.test>'), {
    local: 'other.test!user',
    domain: 'local.test',
  });
});

void test('relay trick: user@other.test@local.test is a syntax error', () => {
  assert.deepEqual(forwardError('<user@other.test@local.test>'), syntaxError('invalid character in domain'));
});

void test('relay trick: a trailing dot in the domain (user@local.test.) is a syntax error', () => {
  assert.deepEqual(forwardError('<user@local.test.>'), syntaxError('domain ends with a dot'));
});

void test('relay trick: USER@Local.TEST gives local USER at local.test', () => {
  assert.deepEqual(forward('<USER@Local.TEST>'), { local: 'USER', domain: 'local.test' });
});

void test('relay trick: a full-width look-alike of the local domain is refused, not silently mapped', () => {
  // UTS #46 would map these to "local.test"; returning the Unicode text would hide that.
  assert.deepEqual(
    forwardError('<user@ｌｏｃａｌ.test>', UTF8),
    syntaxError('invalid internationalized domain label'),
  );
  assert.deepEqual(
    forwardError('<user@local。test>', UTF8),
    syntaxError('invalid internationalized domain label'),
  );
});

// --- malformed paths -----------------------------------------------------------------------

void test('RFC 5321 4.1.2: a path without angle brackets is a syntax error', () => {
  const e = syntaxError('address must be enclosed in angle brackets');
  assert.deepEqual(forwardError('user@example.test'), e);
  assert.deepEqual(forwardError(''), e);
  assert.deepEqual(forwardError('<'), e);
  assert.deepEqual(forwardError('>'), e);
});

void test('RFC 5321 4.1.2: unbalanced angle brackets are a syntax error', () => {
  assert.deepEqual(
    forwardError('<user@example.test'),
    syntaxError('address must be enclosed in angle brackets'),
  );
  assert.deepEqual(
    forwardError('user@example.test>'),
    syntaxError('address must be enclosed in angle brackets'),
  );
  assert.deepEqual(forwardError('<<user@example.test>'), syntaxError('empty local part'));
  assert.deepEqual(forwardError('<user@example.test>>'), syntaxError('invalid character in domain'));
  assert.deepEqual(forwardError('<user<x@example.test>'), syntaxError('invalid character in local part'));
});

void test('RFC 5321 4.1.2: spaces inside the path are a syntax error', () => {
  assert.deepEqual(forwardError('< user@example.test>'), syntaxError('empty local part'));
  assert.deepEqual(forwardError('<user @example.test>'), syntaxError('invalid character in local part'));
  assert.deepEqual(forwardError('<user@ example.test>'), syntaxError('invalid character in domain'));
  assert.deepEqual(forwardError('<user@example.test >'), syntaxError('invalid character in domain'));
  assert.deepEqual(forwardError('<us er@example.test>'), syntaxError('invalid character in local part'));
});

void test('RFC 6531: Unicode spaces are not atext even with SMTPUTF8', () => {
  assert.deepEqual(
    forwardError('<us\u00a0er@example.test>', UTF8),
    syntaxError('invalid character in local part'),
  );
  assert.deepEqual(
    forwardError('<us\u3000er@example.test>', UTF8),
    syntaxError('invalid character in local part'),
  );
});

void test('RFC 5321 4.1.2: an empty local part is a syntax error', () => {
  assert.deepEqual(forwardError('<@example.test>'), syntaxError('empty local part'));
  assert.deepEqual(forwardError('<""@example.test>'), syntaxError('empty local part'));
});

void test('RFC 5321 4.1.2: a mailbox without a domain is a syntax error (except <Postmaster>)', () => {
  assert.deepEqual(forwardError('<user>'), syntaxError('missing domain'));
  assert.deepEqual(forwardError('<user@>'), syntaxError('missing domain'));
  assert.deepEqual(forwardError('<postmaster@>'), syntaxError('missing domain'));
  assert.deepEqual(parseReversePath('<user>', ASCII), { ok: false, error: syntaxError('missing domain') });
});

void test('RFC 5321 4.1.2: NUL, CR, LF, TAB, DEL and C1 controls are syntax errors', () => {
  const e = syntaxError('control character in address');
  for (const c of ['\0', '\r', '\n', '\t', '\x7f', '\x1b', '\u0085']) {
    assert.deepEqual(forwardError(`<us${c}er@example.test>`, UTF8), e, JSON.stringify(c));
    assert.deepEqual(forwardError(`<"us${c}er"@example.test>`, UTF8), e, JSON.stringify(c));
    assert.deepEqual(forwardError(`<user@exa${c}mple.test>`, UTF8), e, JSON.stringify(c));
  }
});

void test('unpaired UTF-16 surrogates are refused as control characters', () => {
  assert.deepEqual(
    forwardError('<us\ud800er@example.test>', UTF8),
    syntaxError('control character in address'),
  );
});

void test('RFC 5321 4.1.2: dot-string dots must separate atoms', () => {
  const e = syntaxError('misplaced dot in local part');
  assert.deepEqual(forwardError('<.user@example.test>'), e);
  assert.deepEqual(forwardError('<user.@example.test>'), e);
  assert.deepEqual(forwardError('<us..er@example.test>'), e);
  assert.deepEqual(forwardError('<.@example.test>'), e);
});

void test('RFC 5321 4.1.2: characters outside atext in a dot-string are refused', () => {
  const e = syntaxError('invalid character in local part');
  for (const c of ['(', ')', ',', ':', ';', '[', ']', '\\', '<']) {
    assert.deepEqual(forwardError(`<us${c}er@example.test>`), e, c);
  }
  assert.deepEqual(forwardError('<us"er"@example.test>'), e);
});

// --- quoted strings ------------------------------------------------------------------------

void test('RFC 5321 4.1.2: a quoted-string local part is kept exactly as received', () => {
  assert.deepEqual(forward('<"john smith"@example.test>'), { local: '"john smith"', domain: 'example.test' });
  assert.deepEqual(forward('<"a\\"b\\\\c"@example.test>'), { local: '"a\\"b\\\\c"', domain: 'example.test' });
  assert.deepEqual(forward('<"user"@example.test>'), { local: '"user"', domain: 'example.test' });
  assert.deepEqual(forward('<"a>b"@example.test>'), { local: '"a>b"', domain: 'example.test' });
});

void test('RFC 5321 4.1.2: quoted-pairSMTP must escape a printable ASCII character', () => {
  assert.deepEqual(
    forwardError('<"a\\é"@example.test>', UTF8),
    syntaxError('invalid quoted pair in local part'),
  );
  assert.deepEqual(forwardError('<"a\\'), syntaxError('address must be enclosed in angle brackets'));
});

void test('RFC 5321 4.1.2: an unterminated quoted string is a syntax error', () => {
  assert.deepEqual(forwardError('<"user@example.test>'), syntaxError('unterminated quoted string'));
  assert.deepEqual(forwardError('<"user\\"@example.test>'), syntaxError('unterminated quoted string'));
});

void test('RFC 5321 4.1.2: text between a quoted-string and "@" is a syntax error', () => {
  assert.deepEqual(forwardError('<"a"b@example.test>'), syntaxError('text after quoted local part'));
  assert.deepEqual(forwardError('<"a".b@example.test>'), syntaxError('text after quoted local part'));
});

void test('unquoteLocal gives the semantic value of a quoted local part', () => {
  assert.equal(unquoteLocal('"john smith"'), 'john smith');
  assert.equal(unquoteLocal('"a\\"b\\\\c"'), 'a"b\\c');
  assert.equal(unquoteLocal('"user"'), 'user');
  assert.equal(unquoteLocal('user.name'), 'user.name');
  assert.equal(unquoteLocal('"'), '"');
});

// --- domains -------------------------------------------------------------------------------

void test('RFC 5321 4.1.2: domain labels are letters, digits and inner hyphens', () => {
  assert.deepEqual(forward('<u@a-b.c9.test>'), { local: 'u', domain: 'a-b.c9.test' });
  assert.deepEqual(forward('<u@localhost>'), { local: 'u', domain: 'localhost' });
  assert.deepEqual(forward('<u@123.test>'), { local: 'u', domain: '123.test' });
  const e = syntaxError('invalid character in domain');
  assert.deepEqual(forwardError('<u@-ab.test>'), e);
  assert.deepEqual(forwardError('<u@ab-.test>'), e);
  assert.deepEqual(forwardError('<u@a_b.test>'), e);
  assert.deepEqual(forwardError('<u@a b.test>'), e);
});

void test('RFC 5321 4.1.2: empty domain labels are a syntax error', () => {
  const e = syntaxError('empty label in domain');
  assert.deepEqual(forwardError('<u@.example.test>'), e);
  assert.deepEqual(forwardError('<u@example..test>'), e);
});

void test('RFC 5321 4.1.2: invalid A-labels are refused, valid ones accepted', () => {
  assert.deepEqual(forward('<u@XN--BCHER-KVA.test>'), { local: 'u', domain: 'xn--bcher-kva.test' });
  assert.deepEqual(forwardError('<u@xn--zz.test>'), syntaxError('invalid internationalized domain label'));
});

void test('RFC 5321 4.5.3.1.2: a domain label longer than 63 octets is a syntax error', () => {
  assert.deepEqual(forward(`<u@${'a'.repeat(63)}.test>`), { local: 'u', domain: `${'a'.repeat(63)}.test` });
  assert.deepEqual(
    forwardError(`<u@${'a'.repeat(64)}.test>`),
    syntaxError('domain label longer than 63 octets'),
  );
});

void test('RFC 5321 4.5.3.1.2: a domain longer than 255 octets (as A-labels) is a syntax error', () => {
  // 40 labels "ü": 119 UTF-8 octets in the path, but as A-labels ("xn--tda") 40 * 8 - 1 = 319.
  const domain = Array.from({ length: 40 }, () => 'ü').join('.');
  assert.deepEqual(forwardError(`<u@${domain}>`, UTF8), syntaxError('domain longer than 255 octets'));
});

void test('RFC 5321 4.1.3: IPv4 address literals are accepted', () => {
  assert.deepEqual(forward('<u@[192.0.2.1]>'), { local: 'u', domain: '[192.0.2.1]' });
});

void test('RFC 5321 4.1.3: IPv6 address literals are accepted and normalised', () => {
  assert.deepEqual(forward('<u@[IPv6:2001:DB8::1]>'), { local: 'u', domain: '[IPv6:2001:db8::1]' });
  assert.deepEqual(forward('<u@[ipv6:::ffff:192.0.2.1]>'), { local: 'u', domain: '[IPv6:::ffff:192.0.2.1]' });
});

void test('RFC 5321 4.1.3: invalid address literals are syntax errors', () => {
  assert.deepEqual(forwardError('<u@[256.1.1.1]>'), syntaxError('invalid address literal'));
  assert.deepEqual(forwardError('<u@[1.2.3]>'), syntaxError('invalid address literal'));
  assert.deepEqual(forwardError('<u@[01.2.3.4]>'), syntaxError('invalid address literal'));
  assert.deepEqual(forwardError('<u@[]>'), syntaxError('invalid address literal'));
  assert.deepEqual(forwardError('<u@[1.2.3.4>'), syntaxError('invalid address literal'));
  assert.deepEqual(forwardError('<u@[1.2.3.4].test>'), syntaxError('invalid address literal'));
  assert.deepEqual(forwardError('<u@[IPv6:2001:db8::g]>'), syntaxError('invalid IPv6 address literal'));
  assert.deepEqual(forwardError('<u@[IPv6:fe80::1%eth0]>'), syntaxError('invalid IPv6 address literal'));
  assert.deepEqual(forwardError('<u@[IPv6:1.2.3.4]>'), syntaxError('invalid IPv6 address literal'));
  assert.deepEqual(forwardError('<u@[2001:db8::1]>'), syntaxError('unsupported address literal'));
  assert.deepEqual(forwardError('<u@[x400:c=fr;a=b]>'), syntaxError('unsupported address literal'));
});

// --- limits --------------------------------------------------------------------------------

void test('RFC 5321 4.5.3.1.1: a local part of 64 octets is accepted, 65 is refused', () => {
  assert.equal(forward(`<${'a'.repeat(64)}@example.test>`).local, 'a'.repeat(64));
  assert.deepEqual(
    forwardError(`<${'a'.repeat(65)}@example.test>`),
    syntaxError('local part longer than 64 octets'),
  );
  assert.deepEqual(
    forwardError(`<"${'a'.repeat(63)}"@example.test>`),
    syntaxError('local part longer than 64 octets'),
  );
});

void test('RFC 5321 4.5.3.1.1: the local-part limit counts UTF-8 octets, not characters', () => {
  assert.equal(forward(`<${'é'.repeat(32)}@example.test>`, UTF8).local, 'é'.repeat(32));
  assert.deepEqual(
    forwardError(`<${'é'.repeat(33)}@example.test>`, UTF8),
    syntaxError('local part longer than 64 octets'),
  );
});

void test('RFC 5321 4.5.3.1.3: a path of 256 octets is accepted, 257 is refused', () => {
  // "<" + "u@" + domain + ">" = 256 with a 252-octet domain of 63-octet labels.
  const label = 'a'.repeat(63);
  const domain = `${label}.${label}.${label}.${'b'.repeat(60)}`;
  assert.equal(domain.length, 252);
  assert.equal(forward(`<u@${domain}>`).domain, domain);
  assert.deepEqual(forwardError(`<uu@${domain}>`), syntaxError('path longer than 256 octets'));
});

void test('RFC 5321 4.5.3.1.3: the path limit includes a source route', () => {
  const route = `@${'r'.repeat(60)}.test,`.repeat(4);
  assert.deepEqual(
    forwardError(`<${route}@x.test:u@example.test>`),
    syntaxError('path longer than 256 octets'),
  );
});

// --- SMTPUTF8 ------------------------------------------------------------------------------

void test('RFC 6531 3.3: a UTF-8 local part is accepted with SMTPUTF8', () => {
  assert.deepEqual(forward('<用户@example.test>', UTF8), { local: '用户', domain: 'example.test' });
  assert.deepEqual(forward('<"jöhn dœ"@example.test>', UTF8), { local: '"jöhn dœ"', domain: 'example.test' });
});

void test('RFC 6531 3.3: a U-label domain is accepted with SMTPUTF8, NFC-normalised and lower-cased', () => {
  assert.deepEqual(forward('<user@Bücher.TEST>', UTF8), { local: 'user', domain: 'bücher.test' });
  // "u" + COMBINING DIAERESIS composes to "ü" under NFC.
  assert.deepEqual(forward('<user@bu\u0308cher.test>', UTF8), { local: 'user', domain: 'bücher.test' });
  assert.deepEqual(forward('<user@例え.テスト>', UTF8), { local: 'user', domain: '例え.テスト' });
});

void test('RFC 6531 3.4: non-ASCII without SMTPUTF8 is refused with kind needs-smtputf8', () => {
  const e: AddressError = { kind: 'needs-smtputf8', detail: 'non-ASCII address requires SMTPUTF8' };
  assert.deepEqual(forwardError('<用户@example.test>'), e);
  assert.deepEqual(forwardError('<user@bücher.test>'), e);
  assert.deepEqual(forwardError('<"jöhn"@example.test>'), e);
  assert.deepEqual(forwardError('<@bücher.test:user@example.test>'), e);
  assert.deepEqual(parseReversePath('<用户@example.test>', ASCII), { ok: false, error: e });
});

void test('RFC 6531: a malformed non-ASCII path without SMTPUTF8 is reported as a syntax error', () => {
  assert.deepEqual(forwardError('<用户@example.test.>'), syntaxError('domain ends with a dot'));
});

void test('RFC 6531: U-labels that IDNA refuses or rewrites are syntax errors', () => {
  const e = syntaxError('invalid internationalized domain label');
  assert.deepEqual(forwardError('<user@\u0301a.test>', UTF8), e); // leading combining mark
  assert.deepEqual(forwardError('<user@ẞ.test>', UTF8), e); // maps to "ss"
});

// --- helpers -------------------------------------------------------------------------------

void test('splitPathAndParams separates the path from the parameters', () => {
  assert.deepEqual(splitPathAndParams('<user@example.test>'), { path: '<user@example.test>', params: '' });
  assert.deepEqual(splitPathAndParams('<user@example.test> SIZE=100 BODY=8BITMIME'), {
    path: '<user@example.test>',
    params: 'SIZE=100 BODY=8BITMIME',
  });
  assert.deepEqual(splitPathAndParams('<> SIZE=1  '), { path: '<>', params: 'SIZE=1' });
  assert.deepEqual(splitPathAndParams('<a@b.test>   NOTIFY=NEVER'), {
    path: '<a@b.test>',
    params: 'NOTIFY=NEVER',
  });
});

void test('splitPathAndParams tolerates one space before "<", not two', () => {
  assert.deepEqual(splitPathAndParams(' <user@example.test>'), { path: '<user@example.test>', params: '' });
  assert.equal(splitPathAndParams('  <user@example.test>'), null);
});

void test('splitPathAndParams finds the closing ">" outside quoted strings', () => {
  assert.deepEqual(splitPathAndParams('<"a> b"@example.test> SIZE=1'), {
    path: '<"a> b"@example.test>',
    params: 'SIZE=1',
  });
  assert.deepEqual(splitPathAndParams('<"a\\"> b"@example.test>'), {
    path: '<"a\\"> b"@example.test>',
    params: '',
  });
});

void test('splitPathAndParams returns null when there is no complete <...>', () => {
  assert.equal(splitPathAndParams('user@example.test'), null);
  assert.equal(splitPathAndParams(''), null);
  assert.equal(splitPathAndParams('<user@example.test'), null);
  assert.equal(splitPathAndParams('<"user>@example.test'), null);
  assert.equal(splitPathAndParams('x<user@example.test>'), null);
});

void test('splitPathAndParams returns null when the ">" is not followed by a space', () => {
  assert.equal(splitPathAndParams('<user@example.test>SIZE=1'), null);
  assert.equal(splitPathAndParams('<user@example.test>>'), null);
});

void test('formatMailbox writes local@domain, or the local part alone for <Postmaster>', () => {
  assert.equal(formatMailbox({ local: 'user', domain: 'example.test' }), 'user@example.test');
  assert.equal(formatMailbox({ local: '"a b"', domain: 'example.test' }), '"a b"@example.test');
  assert.equal(formatMailbox({ local: 'postmaster', domain: '' }), 'postmaster');
});

void test('isAsciiOnly is true only for U+0000-U+007F', () => {
  assert.equal(isAsciiOnly(''), true);
  assert.equal(isAsciiOnly('user@example.test\x7f'), true);
  assert.equal(isAsciiOnly('é'), false);
  assert.equal(isAsciiOnly('a\u0080'), false);
});

void test('normalizeDomain lower-cases ASCII and NFC-normalises U-labels', () => {
  assert.equal(normalizeDomain('Example.TEST'), 'example.test');
  assert.equal(normalizeDomain('BU\u0308CHER.test'), 'bücher.test');
  assert.equal(normalizeDomain('[ipv6:2001:DB8::1]'), '[IPv6:2001:db8::1]');
  assert.equal(normalizeDomain('[192.0.2.1]'), '[192.0.2.1]');
});

void test('domainToAscii gives the A-label form for comparison and DNS', () => {
  assert.equal(domainToAscii('bücher.test'), 'xn--bcher-kva.test');
  assert.equal(domainToAscii('XN--BCHER-KVA.test'), 'xn--bcher-kva.test');
  assert.equal(domainToAscii('Example.TEST'), 'example.test');
  assert.equal(domainToAscii('[192.0.2.1]'), '[192.0.2.1]');
  assert.equal(domainToAscii('bad_domain.test'), null);
  assert.equal(domainToAscii('ｌｏｃａｌ.test'), null);
});

void test('a parsed mailbox formats back to the canonical address', () => {
  assert.equal(formatMailbox(forward('<@r.test:"A b"@Example.TEST>')), '"A b"@example.test');
});
