import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LineReader, type LineEvent, type LineReaderOptions } from './line-reader.js';

type Policy = LineReaderOptions['bareLineEndings'];

/** An event as a comparable value: lines as latin1 strings. */
type Seen = string | { kind: 'too-long' } | { kind: 'bare-lf' };

function seen(event: LineEvent): Seen {
  return event.kind === 'line' ? event.line.toString('latin1') : { kind: event.kind };
}

const TOO_LONG: Seen = { kind: 'too-long' };
const BARE: Seen = { kind: 'bare-lf' };

interface Outcome {
  events: Seen[];
  remainder: string;
}

/** Feeds `pieces` one push each; lines are compared only at the end, so a line overwritten later shows. */
function feed(opts: LineReaderOptions, pieces: Buffer[]): Outcome {
  const reader = new LineReader(opts);
  const events: LineEvent[] = [];
  for (const piece of pieces) events.push(...reader.push(piece));
  return { events: events.map(seen), remainder: reader.takeRemainder().toString('latin1') };
}

function bytes(wire: string): Buffer {
  return Buffer.from(wire, 'latin1');
}

function splitAt(wire: Buffer, ...cuts: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    pieces.push(wire.subarray(from, cut));
    from = cut;
  }
  pieces.push(wire.subarray(from));
  return pieces;
}

function byteByByte(wire: Buffer): Buffer[] {
  return Array.from(wire, (b) => Buffer.from([b]));
}

/** Asserts that every two-piece split and the byte-by-byte feed give the one-push outcome. */
function assertSplitInvariant(opts: LineReaderOptions, wire: Buffer): Outcome {
  const whole = feed(opts, [wire]);
  for (let i = 0; i <= wire.length; i++) {
    assert.deepEqual(
      feed(opts, splitAt(wire, i)),
      whole,
      `split at ${i} of ${JSON.stringify(wire.toString('latin1'))}`,
    );
  }
  assert.deepEqual(feed(opts, byteByByte(wire)), whole, 'byte by byte');
  return whole;
}

const reject: LineReaderOptions = { maxLineBytes: 512, bareLineEndings: 'reject' };
const normalize: LineReaderOptions = { maxLineBytes: 512, bareLineEndings: 'normalize' };

test('RFC 5321 2.3.8: CRLF ends a command line; the line is delivered without its CRLF', () => {
  const reader = new LineReader(reject);
  assert.deepEqual(reader.push(bytes('EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n')).map(seen), [
    'EHLO client.example',
    'MAIL FROM:<a@b.example>',
  ]);
  assert.equal(reader.buffered, 0);
});

test('an empty line (CRLF alone) is delivered as an empty line', () => {
  assert.deepEqual(feed(reject, [bytes('\r\nNOOP\r\n')]).events, ['', 'NOOP']);
});

test('bytes after the last CRLF are kept for the next push', () => {
  const reader = new LineReader(reject);
  assert.deepEqual(reader.push(bytes('NOOP\r\nRSE')).map(seen), ['NOOP']);
  assert.equal(reader.buffered, 3);
  assert.deepEqual(reader.push(bytes('T\r')).map(seen), []);
  assert.equal(reader.buffered, 5);
  assert.deepEqual(reader.push(bytes('\nQUIT\r\n')).map(seen), ['RSET', 'QUIT']);
  assert.equal(reader.buffered, 0);
});

test('NUL and 8-bit octets are passed through inside the line', () => {
  const reader = new LineReader(reject);
  const events = reader.push(Buffer.from([0x48, 0x00, 0xff, 0x49, 0x0d, 0x0a]));
  assert.equal(events.length, 1);
  const [event] = events;
  assert.equal(event?.kind, 'line');
  if (event?.kind === 'line') assert.deepEqual([...event.line], [0x48, 0x00, 0xff, 0x49]);
});

test("'reject': a line ended by a bare LF is one bare-lf event, and the next line is read normally", () => {
  assert.deepEqual(feed(reject, [bytes('NOOP\nMAIL FROM:<a@b>\r\n')]).events, [BARE, 'MAIL FROM:<a@b>']);
});

test("'reject': a line holding a lone CR is dropped whole as one bare-lf event", () => {
  assert.deepEqual(feed(reject, [bytes('NOOP\rMAIL FROM:<a@b>\r\nQUIT\r\n')]).events, [BARE, 'QUIT']);
  assert.deepEqual(feed(reject, [bytes('A\r\r\nB\r\n')]).events, [BARE, 'B']);
  assert.deepEqual(feed(reject, [bytes('\n\r\n')]).events, [BARE, '']);
});

test("'normalize': a bare LF ends a line like CRLF", () => {
  assert.deepEqual(feed(normalize, [bytes('NOOP\nMAIL FROM:<a@b>\r\n\n')]).events, [
    'NOOP',
    'MAIL FROM:<a@b>',
    '',
  ]);
});

test("'normalize': a lone CR followed by another octet ends a line; CR CR LF is a line then an empty line", () => {
  assert.deepEqual(feed(normalize, [bytes('NOOP\rQUIT\r\n')]).events, ['NOOP', 'QUIT']);
  assert.deepEqual(feed(normalize, [bytes('A\r\r\nB\r\n')]).events, ['A', '', 'B']);
});

test("'normalize': a CR at the end of a push waits for the next octet", () => {
  const reader = new LineReader(normalize);
  assert.deepEqual(reader.push(bytes('NOOP\r')).map(seen), []);
  assert.equal(reader.buffered, 5);
  assert.deepEqual(reader.push(bytes('\n')).map(seen), ['NOOP']);
  assert.deepEqual(reader.push(bytes('RSET\r')).map(seen), []);
  assert.deepEqual(reader.push(bytes('X\r\n')).map(seen), ['RSET', 'X']);
});

test('RFC 5321 4.5.3.1.4: a line of exactly maxLineBytes including CRLF is accepted, one more is too long', () => {
  const fits = 'A'.repeat(510);
  const over = 'B'.repeat(511);
  for (const opts of [reject, normalize]) {
    assert.deepEqual(feed(opts, [bytes(`${fits}\r\n${over}\r\nQUIT\r\n`)]).events, [fits, TOO_LONG, 'QUIT']);
  }
  // With a bare LF the length still counts the CRLF the line should have had.
  assert.deepEqual(feed(normalize, [bytes(`${'C'.repeat(510)}\n${'D'.repeat(511)}\nQUIT\n`)]).events, [
    'C'.repeat(510),
    TOO_LONG,
    'QUIT',
  ]);
  // In 'reject' mode a too-long line is reported as too long even if it is also bare.
  assert.deepEqual(feed(reject, [bytes(`${'D'.repeat(511)}\nQUIT\r\n`)]).events, [TOO_LONG, 'QUIT']);
});

test('a 1 MB line fed in 64 KiB chunks is one too-long event, memory stays bounded, the next line is read', () => {
  const reader = new LineReader(reject);
  const chunk = Buffer.alloc(64 * 1024, 0x41);
  const events: LineEvent[] = [];
  let maxBuffered = 0;
  for (let sent = 0; sent < 1024 * 1024; sent += chunk.length) {
    events.push(...reader.push(chunk));
    maxBuffered = Math.max(maxBuffered, reader.buffered);
  }
  events.push(...reader.push(bytes('AAAA\r\nQUIT\r\n')));
  maxBuffered = Math.max(maxBuffered, reader.buffered);
  assert.deepEqual(events.map(seen), [TOO_LONG, 'QUIT']);
  assert.ok(maxBuffered < 512, `buffered reached ${maxBuffered}`);
  assert.equal(reader.buffered, 0);
});

test('a too-long line fed byte by byte never holds more than maxLineBytes', () => {
  for (const opts of [reject, normalize]) {
    const reader = new LineReader(opts);
    const events: LineEvent[] = [];
    for (const piece of byteByByte(bytes(`${'x'.repeat(2000)}\r\nNOOP\r\n`))) {
      events.push(...reader.push(piece));
      assert.ok(reader.buffered < 512);
    }
    assert.deepEqual(events.map(seen), [TOO_LONG, 'NOOP']);
  }
});

test("'normalize': discarding a too-long line stops at a lone CR or bare LF too", () => {
  const long = 'x'.repeat(600);
  assert.deepEqual(feed(normalize, [bytes(`${long}\rNOOP\r\n${long}\nQUIT\r\n`)]).events, [
    TOO_LONG,
    'NOOP',
    TOO_LONG,
    'QUIT',
  ]);
});

test("'reject': discarding a too-long line stops at the next LF, whatever precedes it", () => {
  const long = 'x'.repeat(600);
  assert.deepEqual(feed(reject, [bytes(`${long}\rNOOP\nQUIT\r\n`)]).events, [TOO_LONG, 'QUIT']);
});

test('next() returns one event at a time, and takeRemainder() hands over the bytes after DATA', () => {
  const reader = new LineReader(reject);
  reader.append(bytes('MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQU'));
  assert.deepEqual(seen(reader.next()!), 'MAIL FROM:<a@b>');
  assert.deepEqual(seen(reader.next()!), 'RCPT TO:<c@d>');
  assert.deepEqual(seen(reader.next()!), 'DATA');
  assert.equal(reader.takeRemainder().toString('latin1'), 'Subject: x\r\n\r\nbody\r\n.\r\nQU');
  assert.equal(reader.buffered, 0);
  assert.equal(reader.next(), null);
  assert.equal(reader.takeRemainder().length, 0);
  // The reader is usable again afterwards (e.g. after the message, or after the TLS handshake).
  reader.append(bytes('QUIT\r\n'));
  assert.deepEqual(seen(reader.next()!), 'QUIT');
  assert.equal(reader.next(), null);
});

test('next() returns null until a line is complete, without consuming the partial line', () => {
  const reader = new LineReader(reject);
  assert.equal(reader.next(), null);
  reader.append(bytes('STARTTLS\r'));
  assert.equal(reader.next(), null);
  assert.equal(reader.buffered, 9);
  reader.append(bytes('\nEHLO injected\r\n'));
  assert.deepEqual(seen(reader.next()!), 'STARTTLS');
  // RFC 3207 4: the shell discards what was pipelined after STARTTLS.
  assert.equal(reader.takeRemainder().toString('latin1'), 'EHLO injected\r\n');
  assert.equal(reader.next(), null);
});

test("'normalize': takeRemainder() returns a pending CR as well", () => {
  const reader = new LineReader(normalize);
  reader.append(bytes('DATA\r\n\r'));
  assert.deepEqual(seen(reader.next()!), 'DATA');
  assert.equal(reader.next(), null);
  assert.equal(reader.takeRemainder().toString('latin1'), '\r');
});

test('takeRemainder() after a too-long report ends the discarding', () => {
  const reader = new LineReader(reject);
  reader.append(Buffer.alloc(600, 0x41));
  assert.deepEqual(seen(reader.next()!), TOO_LONG);
  assert.equal(reader.takeRemainder().length, 0);
  reader.append(bytes('NOOP\r\n'));
  assert.deepEqual(seen(reader.next()!), 'NOOP');
});

test('lines already returned are not changed by later pushes (no buffer reuse)', () => {
  const reader = new LineReader(normalize);
  const lines: Buffer[] = [];
  const wire = bytes('first line\r\nsecond\r\nthird\nfourth\rfifth\r\n');
  for (const piece of byteByByte(wire)) {
    for (const event of reader.push(piece)) if (event.kind === 'line') lines.push(event.line);
  }
  reader.push(Buffer.alloc(300, 0x5a));
  assert.deepEqual(
    lines.map((line) => line.toString('latin1')),
    ['first line', 'second', 'third', 'fourth', 'fifth'],
  );
});

test('every split point and byte-by-byte feeding give the same events and remainder as one push', () => {
  const small = { maxLineBytes: 8 };
  const wires = [
    'EHLO a\r\nMAIL FROM:<a@b>\r\nDATA\r\nrest',
    'A\nB\rC\r\r\n\n\rD\r\n\r',
    '123456\r\n1234567\r\n12345678\r\nabc\r\n',
    '1234567\rX\r\n12345\n123456\n1234567890abc\r\nok\r\n',
    'x\0y\r\n\r\n\r\n\r',
    'overlong line here\rok\r\n',
  ];
  for (const wire of wires) {
    for (const bareLineEndings of ['reject', 'normalize'] satisfies Policy[]) {
      assertSplitInvariant({ ...small, bareLineEndings }, bytes(wire));
    }
  }
  assert.deepEqual(assertSplitInvariant({ ...small, bareLineEndings: 'reject' }, bytes(wires[1]!)), {
    events: [BARE, BARE, BARE, BARE],
    remainder: '\r',
  });
  assert.deepEqual(assertSplitInvariant({ ...small, bareLineEndings: 'normalize' }, bytes(wires[1]!)), {
    events: ['A', 'B', 'C', '', '', '', 'D'],
    remainder: '\r',
  });
  assert.deepEqual(assertSplitInvariant({ ...small, bareLineEndings: 'reject' }, bytes(wires[2]!)), {
    events: ['123456', TOO_LONG, TOO_LONG, 'abc'],
    remainder: '',
  });
});

/** The line rules written the plain way, over the whole input at once, to compare against. */
function reference(opts: LineReaderOptions, wire: Buffer): Outcome {
  const events: Seen[] = [];
  const max = opts.maxLineBytes;
  let pos = 0;
  for (;;) {
    let at = -1;
    let endingLength = 0;
    for (let j = pos; j < wire.length; j++) {
      const b = wire[j];
      if (b === 0x0a) {
        at = j;
        endingLength = 1;
        break;
      }
      if (b === 0x0d && opts.bareLineEndings === 'normalize') {
        if (j + 1 === wire.length) break;
        at = j;
        endingLength = wire[j + 1] === 0x0a ? 2 : 1;
        break;
      }
    }
    if (at === -1) {
      const tail = wire.subarray(pos);
      if (tail.length >= max) {
        events.push(TOO_LONG);
        const pendingCR = opts.bareLineEndings === 'normalize' && tail[tail.length - 1] === 0x0d;
        return { events, remainder: pendingCR ? '\r' : '' };
      }
      return { events, remainder: tail.toString('latin1') };
    }
    let content = wire.subarray(pos, at);
    pos = at + endingLength;
    if (opts.bareLineEndings === 'normalize') {
      events.push(content.length + 2 > max ? TOO_LONG : content.toString('latin1'));
      continue;
    }
    const crlf = content[content.length - 1] === 0x0d;
    if (crlf) content = content.subarray(0, -1);
    if (content.length + 2 > max) events.push(TOO_LONG);
    else if (!crlf || content.includes(0x0d)) events.push(BARE);
    else events.push(content.toString('latin1'));
  }
}

/** A small deterministic generator (mulberry32) so failures reproduce. */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('random inputs split at random points agree with a plain reference of the line rules', () => {
  const next = random(5321);
  const tokens = ['a', 'b', '\r', '\n', '\r\n', '\0', 'xyz', '\r\r'];
  for (let round = 0; round < 3000; round++) {
    const parts: string[] = [];
    const count = Math.floor(next() * 16);
    for (let k = 0; k < count; k++) parts.push(tokens[Math.floor(next() * tokens.length)]!);
    const wire = bytes(parts.join(''));
    const opts: LineReaderOptions = {
      maxLineBytes: 3 + Math.floor(next() * 5),
      bareLineEndings: next() < 0.5 ? 'reject' : 'normalize',
    };
    const cuts: number[] = [];
    for (let c = 0; c < wire.length; c++) if (next() < 0.3) cuts.push(c);
    const label = `${JSON.stringify(wire.toString('latin1'))} ${JSON.stringify(opts)} cuts ${cuts.join(',')}`;
    assert.deepEqual(feed(opts, splitAt(wire, ...cuts)), reference(opts, wire), label);
  }
});

test('many small pushes of a long allowed line stay linear (completes quickly)', () => {
  const opts: LineReaderOptions = { maxLineBytes: 64 * 1024, bareLineEndings: 'reject' };
  const reader = new LineReader(opts);
  const piece = Buffer.from('a');
  const started = process.hrtime.bigint();
  for (let k = 0; k < 64 * 1024 - 2; k++) assert.equal(reader.push(piece).length, 0);
  const events = reader.push(bytes('\r\n'));
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  assert.equal(events.length, 1);
  const [event] = events;
  assert.equal(event?.kind === 'line' ? event.line.length : -1, 64 * 1024 - 2);
  assert.ok(elapsedMs < 2000, `took ${elapsedMs} ms`);
});

test('the constructor refuses a maxLineBytes that cannot hold a CRLF', () => {
  assert.throws(() => new LineReader({ maxLineBytes: 2, bareLineEndings: 'reject' }), RangeError);
  assert.throws(() => new LineReader({ maxLineBytes: 1.5, bareLineEndings: 'reject' }), RangeError);
});
