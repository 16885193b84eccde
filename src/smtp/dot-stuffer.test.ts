/**
 * Unit tests for src/smtp/dot-stuffer.ts (RFC 5321 4.5.2): dot-stuffing, CRLF-only output, the
 * end of data, at every split point; and the round trip through the DATA decoder, which must
 * find the end exactly where we put it and give back the body with CRLF line endings.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DataDecoder } from './data-decoder.js';
import { DotStuffer } from './dot-stuffer.js';

function bytes(s: string): Buffer {
  return Buffer.from(s, 'latin1');
}

function stuff(pieces: Buffer[]): string {
  const d = new DotStuffer();
  const out = pieces.map((p) => d.push(p));
  out.push(d.end());
  return Buffer.concat(out).toString('latin1');
}

/** Every cut of `input` into three pieces (empty pieces included). */
function everySplit(input: Buffer): Buffer[][] {
  const out: Buffer[][] = [];
  for (let i = 0; i <= input.length; i++) {
    for (let j = i; j <= input.length; j++) {
      out.push([input.subarray(0, i), input.subarray(i, j), input.subarray(j)]);
    }
  }
  return out;
}

/** The body as the peer should read it: each bare LF or lone CR made CRLF, and a final line break. */
function normalized(body: string): string {
  const lines = body.replace(/\r\n|\r|\n/g, '\r\n');
  return lines === '' || lines.endsWith('\r\n') ? lines : `${lines}\r\n`;
}

/** Decodes DATA wire bytes the way a strict receiver (Sterna, 'reject' mode) does. */
function receive(wire: string): { body: string; done: boolean; rest: string; error: string | null } {
  const decoder = new DataDecoder({
    maxMessageBytes: 1 << 20,
    maxLineBytes: 1 << 16,
    bareLineEndings: 'reject',
  });
  const r = decoder.push(bytes(wire));
  return {
    body: Buffer.concat(r.body).toString('latin1'),
    done: r.done,
    rest: r.rest?.toString('latin1') ?? '',
    error: decoder.error,
  };
}

/** The stuffed wire is safe: CRLF endings only, no end of data before the last five octets. */
function assertSafe(wire: string, label: string): void {
  assert.doesNotMatch(wire, /\r(?!\n)|(?<!\r)\n/, `${label}: a bare CR or LF was sent`);
  const end = wire === '.\r\n' ? -1 : wire.indexOf('\r\n.\r\n');
  assert.equal(end, wire === '.\r\n' ? -1 : wire.length - 5, `${label}: an early end of data`);
}

test('RFC 5321 4.5.2: dot-stuffing at every split point, CRLF.CRLF appended', () => {
  const input = bytes('.a\r\nb.\r\n..c\r\n.\r\nd');
  const expected = '..a\r\nb.\r\n...c\r\n..\r\nd\r\n.\r\n';
  for (const pieces of everySplit(input)) assert.equal(stuff(pieces), expected, pieces.join('|'));
});

test('DATA end: nothing added after a final CRLF; a final CR or LF is completed; an empty body is just "."', () => {
  assert.equal(stuff([bytes('a\r\n')]), 'a\r\n.\r\n');
  assert.equal(stuff([bytes('a\r'), bytes('\n')]), 'a\r\n.\r\n');
  assert.equal(stuff([bytes('a\r')]), 'a\r\n.\r\n');
  assert.equal(stuff([bytes('a')]), 'a\r\n.\r\n');
  assert.equal(stuff([bytes('a\n')]), 'a\r\n.\r\n');
  assert.equal(stuff([]), '.\r\n');
  assert.equal(stuff([Buffer.alloc(0)]), '.\r\n');
});

test('smuggling: bare LF and lone CR around a "." line are sent as CRLF and the "." is stuffed, at every split point', () => {
  const cases: [string, string][] = [
    ['hello\n.\nMAIL FROM:<e@x>\r\n', 'hello\r\n..\r\nMAIL FROM:<e@x>\r\n.\r\n'],
    ['hello\r.\rworld\r\n', 'hello\r\n..\r\nworld\r\n.\r\n'],
    ['a\r\n.\nb\r\n', 'a\r\n..\r\nb\r\n.\r\n'],
    ['a\n.\r\nb\r\n', 'a\r\n..\r\nb\r\n.\r\n'],
    ['a\r\n.\rb', 'a\r\n..\r\nb\r\n.\r\n'],
    ['a\r\r\n.\r\n', 'a\r\n\r\n..\r\n.\r\n'],
    ['\n.', '\r\n..\r\n.\r\n'],
    ['\r.\r', '\r\n..\r\n.\r\n'],
  ];
  for (const [body, expected] of cases) {
    for (const pieces of everySplit(bytes(body))) {
      const label = `${JSON.stringify(body)} cut ${pieces.map((p) => p.length).join(',')}`;
      const wire = stuff(pieces);
      assert.equal(wire, expected, label);
      assertSafe(wire, label);
    }
  }
});

test('round trip: a strict DATA decoder ends exactly at our end and reads the body with CRLF endings', () => {
  // A small deterministic generator (mulberry32) so failures reproduce.
  let seed = 5321;
  const next = (): number => {
    seed = (seed + 0x6d2b79f5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const tokens = ['a', '.', '..', '\r', '\n', '\r\n', '\r\n.\r\n', '\0', '\xe9', ' '];
  for (let round = 0; round < 3000; round++) {
    let body = '';
    const count = Math.floor(next() * 12);
    for (let k = 0; k < count; k++) body += tokens[Math.floor(next() * tokens.length)]!;
    const input = bytes(body);
    const cuts = [Math.floor(next() * (input.length + 1)), Math.floor(next() * (input.length + 1))].sort(
      (x, y) => x - y,
    );
    const pieces = [input.subarray(0, cuts[0]), input.subarray(cuts[0], cuts[1]), input.subarray(cuts[1])];
    const wire = stuff(pieces);
    const label = JSON.stringify(body);
    assertSafe(wire, label);
    const got = receive(wire);
    // A NUL is the receiver's rule, not ours: it is passed on unchanged (and refused there).
    assert.equal(got.error, body.includes('\0') ? 'nul' : null, label);
    assert.equal(got.done, true, label);
    assert.equal(got.rest, '', label);
    if (got.error === null) assert.equal(got.body, normalized(body), label);
  }
});

test('a chunk with CRLF endings only and no line-initial dot is returned unchanged (no copy)', () => {
  const d = new DotStuffer();
  const chunk = bytes('a.b\r\nc\r\n');
  assert.equal(d.push(chunk), chunk);
  const split = new DotStuffer();
  split.push(bytes('a\r'));
  const rest = bytes('\nb\r\n');
  assert.equal(split.push(rest), rest);
});
