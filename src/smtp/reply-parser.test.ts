import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyParseError, ReplyParser, type ParsedReply, type ReplyParserOptions } from './reply-parser.js';

function bytes(wire: string): Buffer {
  return Buffer.from(wire, 'utf8');
}

/** Feeds the pieces one push each and returns every reply. */
function parse(pieces: Buffer[], opts?: ReplyParserOptions): ParsedReply[] {
  const parser = new ReplyParser(opts);
  const out: ParsedReply[] = [];
  for (const piece of pieces) out.push(...parser.push(piece));
  assert.equal(parser.idle, true, 'nothing left over');
  return out;
}

/** The error thrown while feeding `pieces`, with the replies returned before it. */
function parseError(
  pieces: Buffer[],
  opts?: ReplyParserOptions,
): { error: ReplyParseError; before: ParsedReply[] } {
  const parser = new ReplyParser(opts);
  const before: ParsedReply[] = [];
  for (const piece of pieces) {
    try {
      before.push(...parser.push(piece));
    } catch (err) {
      assert.ok(err instanceof ReplyParseError);
      before.push(...err.parsed);
      return { error: err, before };
    }
  }
  assert.fail('expected a ReplyParseError');
}

const EHLO_WIRE = '250-mx.example.org Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n';
const EHLO: ParsedReply = {
  code: 250,
  lines: ['mx.example.org Hello', 'PIPELINING', 'SIZE 1000', '8BITMIME'],
};
const MIXED_WIRE = `220 mx ready\r\n${EHLO_WIRE}550 5.1.1 <a@b>: no such user\r\n250\r\n`;
const MIXED: ParsedReply[] = [
  { code: 220, lines: ['mx ready'] },
  EHLO,
  { code: 550, enhanced: '5.1.1', lines: ['5.1.1 <a@b>: no such user'] },
  { code: 250, lines: [''] },
];

test('RFC 5321 4.2: single-line and multi-line replies, text kept as sent', () => {
  assert.deepEqual(parse([bytes(MIXED_WIRE)]), MIXED);
});

test('incremental: the same replies whatever the split point (one and two cuts)', () => {
  const wire = bytes(MIXED_WIRE);
  for (let i = 0; i <= wire.length; i++) {
    assert.deepEqual(parse([wire.subarray(0, i), wire.subarray(i)]), MIXED, `cut at ${i}`);
  }
  for (let i = 0; i <= wire.length; i += 3) {
    for (let j = i; j <= wire.length; j += 5) {
      const pieces = [wire.subarray(0, i), wire.subarray(i, j), wire.subarray(j)];
      assert.deepEqual(parse(pieces), MIXED, `cuts at ${i}, ${j}`);
    }
  }
});

test('incremental: one byte at a time', () => {
  const wire = bytes(MIXED_WIRE);
  const pieces = [...wire].map((b) => Buffer.from([b]));
  assert.deepEqual(parse(pieces), MIXED);
});

test('a push returns only completed replies; a partial reply is held', () => {
  const parser = new ReplyParser();
  assert.deepEqual(parser.push(bytes('250-first\r\n250-sec')), []);
  assert.equal(parser.idle, false);
  assert.deepEqual(parser.push(bytes('ond\r\n250 last\r\n')), [
    { code: 250, lines: ['first', 'second', 'last'] },
  ]);
  assert.equal(parser.idle, true);
});

test('RFC 5321 4.2: the last line may be the bare code; continuation lines may be empty', () => {
  assert.deepEqual(parse([bytes('250-\r\n250\r\n354 \r\n')]), [
    { code: 250, lines: ['', ''] },
    { code: 354, lines: [''] },
  ]);
});

test('RFC 2034: enhanced code read from the first line when its class matches the reply code', () => {
  assert.deepEqual(parse([bytes('451-4.3.0 first\r\n451 4.3.0 second\r\n')]), [
    { code: 451, enhanced: '4.3.0', lines: ['4.3.0 first', '4.3.0 second'] },
  ]);
  assert.deepEqual(parse([bytes('250 2.0.0\r\n')]), [{ code: 250, enhanced: '2.0.0', lines: ['2.0.0'] }]);
  assert.deepEqual(parse([bytes('552 5.3.4 too big\r\n')]), [
    { code: 552, enhanced: '5.3.4', lines: ['5.3.4 too big'] },
  ]);
  assert.deepEqual(parse([bytes('250 2.123.456 ok\r\n')]), [
    { code: 250, enhanced: '2.123.456', lines: ['2.123.456 ok'] },
  ]);
});

test('RFC 3463: no enhanced code on a class mismatch, a malformed code, or a later line only', () => {
  const cases = [
    '550 4.1.1 class differs\r\n',
    '250 2.0 short\r\n',
    '250 2.0.0000 long detail\r\n',
    '250 2.0.0ok no space after\r\n',
    '354 3.0.0 class 3 is not an enhanced class\r\n',
    '250-first\r\n250 2.0.0 second\r\n',
  ];
  for (const wire of cases) {
    const [r] = parse([bytes(wire)]);
    assert.ok(r !== undefined);
    assert.equal(r.enhanced, undefined, wire);
  }
});

test('RFC 6531: UTF-8 reply text is decoded, also when a character is split across pushes', () => {
  const wire = bytes('550 5.1.1 <ü@例え.jp> unknown\r\n');
  for (let i = 0; i <= wire.length; i++) {
    assert.deepEqual(parse([wire.subarray(0, i), wire.subarray(i)]), [
      { code: 550, enhanced: '5.1.1', lines: ['5.1.1 <ü@例え.jp> unknown'] },
    ]);
  }
});

test('strict: a line that does not start with a reply code and separator is a protocol error', () => {
  const bad = [
    'hello\r\n',
    '25 short\r\n',
    '2500 four digits\r\n',
    '250_underscore\r\n',
    '650 first digit above 5\r\n',
    '150 first digit below 2\r\n',
    '260 second digit above 5\r\n',
    ' 250 leading space\r\n',
    '\r\n',
  ];
  for (const wire of bad) {
    const { error, before } = parseError([bytes(wire)]);
    assert.equal(error.kind, 'bad-line', wire);
    assert.deepEqual(before, []);
  }
});

test('RFC 5321 4.2.1: a multi-line reply whose codes differ is a protocol error', () => {
  const { error } = parseError([bytes('250-first\r\n251 second\r\n')]);
  assert.equal(error.kind, 'code-mismatch');
  assert.equal(error.message, 'multi-line reply changes its code from 250 to 251 (RFC 5321 4.2.1)');
});

test('replies completed before the error are carried on it', () => {
  const { error, before } = parseError([bytes('250 ok\r\n251 ok too\r\ngarbage\r\n250 never\r\n')]);
  assert.equal(error.kind, 'bad-line');
  assert.deepEqual(before, [
    { code: 250, lines: ['ok'] },
    { code: 251, lines: ['ok too'] },
  ]);
});

test('a failed parser stays failed', () => {
  const parser = new ReplyParser();
  assert.throws(() => parser.push(bytes('nonsense\r\n')), { kind: 'bad-line' });
  assert.throws(() => parser.push(bytes('250 ok\r\n')), { name: 'ReplyParseError', kind: 'bad-line' });
  assert.equal(parser.error?.kind, 'bad-line');
});

test('RFC 5321 2.3.8: a bare LF or a lone CR is a protocol error by default', () => {
  assert.equal(parseError([bytes('250 ok\n')]).error.kind, 'bare-lf');
  assert.equal(parseError([bytes('250 o\rk\r\n')]).error.kind, 'bare-lf');
  assert.equal(parseError([bytes('250 ok\r\r\n')]).error.kind, 'bare-lf');
});

test('allowBareLf: LF alone ends a line, a CR before it is removed', () => {
  assert.deepEqual(parse([bytes('250-a\n250 b\r\n')], { allowBareLf: true }), [
    { code: 250, lines: ['a', 'b'] },
  ]);
});

test('bounded memory: a line over maxLineBytes (CRLF included) fails as soon as it is known', () => {
  const opts = { maxLineBytes: 16 };
  // 14 octets + CRLF = 16: accepted.
  assert.deepEqual(parse([bytes('250 0123456789\r\n')], opts), [{ code: 250, lines: ['0123456789'] }]);
  // 15 octets + CRLF = 17: refused.
  assert.equal(parseError([bytes('250 01234567890\r\n')], opts).error.kind, 'line-too-long');
  // Without any LF: refused once 16 octets are held, before the line ends.
  const parser = new ReplyParser(opts);
  assert.deepEqual(parser.push(bytes('250 0123456789A')), []);
  assert.throws(() => parser.push(bytes('B')), { kind: 'line-too-long' });
});

test('bounded memory: a reply with more than maxLines lines fails', () => {
  const opts = { maxLines: 3 };
  assert.deepEqual(parse([bytes('250-1\r\n250-2\r\n250 3\r\n')], opts), [
    { code: 250, lines: ['1', '2', '3'] },
  ]);
  const { error } = parseError([bytes('250-1\r\n250-2\r\n250-3\r\n')], opts);
  assert.equal(error.kind, 'too-many-lines');
});

test('default limits: 4096-octet lines and 1000 lines per reply', () => {
  const text = 'x'.repeat(4096 - 6);
  assert.deepEqual(parse([bytes(`250 ${text}\r\n`)]), [{ code: 250, lines: [text] }]);
  assert.equal(parseError([bytes(`250 ${text}x\r\n`)]).error.kind, 'line-too-long');
  const many = '250-l\r\n'.repeat(999) + '250 l\r\n';
  assert.equal(parse([bytes(many)])[0]?.lines.length, 1000);
  assert.equal(parseError([bytes('250-l\r\n'.repeat(1000) + '250 l\r\n')]).error.kind, 'too-many-lines');
});

test('options are validated', () => {
  assert.throws(() => new ReplyParser({ maxLineBytes: 5 }), RangeError);
  assert.throws(() => new ReplyParser({ maxLines: 0 }), RangeError);
});
