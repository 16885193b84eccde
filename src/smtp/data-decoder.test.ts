import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  BdatDecoder,
  ChunkReader,
  DataDecoder,
  type DataDecoderOptions,
  type DataError,
} from './data-decoder.js';

type Policy = DataDecoderOptions['bareLineEndings'];

interface Outcome {
  body: string;
  done: boolean;
  /** Bytes after the end of data, including pieces never pushed; '' while not done. */
  rest: string;
  error: DataError | null;
  size: number;
}

function bytes(wire: string): Buffer {
  return Buffer.from(wire, 'latin1');
}

/** Pushes `pieces` until the end of data; body chunks are concatenated only at the end. */
function feed(opts: DataDecoderOptions, pieces: Buffer[]): Outcome & { donePush: number } {
  const decoder = new DataDecoder(opts);
  const body: Buffer[] = [];
  let rest: Buffer[] = [];
  let done = false;
  let donePush = -1;
  for (const [index, piece] of pieces.entries()) {
    if (done) {
      rest.push(piece);
      continue;
    }
    const result = decoder.push(piece);
    body.push(...result.body);
    if (result.done) {
      done = true;
      donePush = index;
      assert.ok(result.rest !== undefined, 'rest is present when done');
      rest = [result.rest];
    } else {
      assert.equal(result.rest, undefined, 'no rest before done');
    }
  }
  assert.equal(decoder.done, done);
  const decodedBody = Buffer.concat(body);
  assert.equal(decodedBody.length, decoder.size, 'size counts the octets produced');
  return {
    body: decodedBody.toString('latin1'),
    done,
    rest: Buffer.concat(rest).toString('latin1'),
    error: decoder.error,
    size: decoder.size,
    donePush,
  };
}

function decode(opts: DataDecoderOptions, wire: string): Outcome {
  const { donePush: _, ...outcome } = feed(opts, [bytes(wire)]);
  return outcome;
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

/** Asserts that every two-piece split, every three-piece split and the byte-by-byte feed match one push. */
function assertSplitInvariant(opts: DataDecoderOptions, text: string): Outcome {
  const wire = bytes(text);
  const whole = decode(opts, text);
  const strip = ({ donePush: _, ...outcome }: Outcome & { donePush: number }): Outcome => outcome;
  const label = (what: string): string => `${what} of ${JSON.stringify(text)} ${JSON.stringify(opts)}`;
  for (let i = 0; i <= wire.length; i++) {
    assert.deepEqual(strip(feed(opts, splitAt(wire, i))), whole, label(`split at ${i}`));
    for (let j = i; j <= wire.length && wire.length <= 64; j++) {
      assert.deepEqual(strip(feed(opts, splitAt(wire, i, j))), whole, label(`split at ${i},${j}`));
    }
  }
  const single = feed(opts, byteByByte(wire));
  assert.deepEqual(strip(single), whole, label('byte by byte'));
  if (whole.done) {
    // The end is found at the LF of the real CRLF.CRLF and nowhere earlier.
    assert.equal(single.donePush, wire.length - whole.rest.length - 1, label('end position'));
  }
  return whole;
}

const reject: DataDecoderOptions = {
  maxMessageBytes: 1 << 20,
  maxLineBytes: 1000,
  bareLineEndings: 'reject',
};
const normalize: DataDecoderOptions = { ...reject, bareLineEndings: 'normalize' };

test('RFC 5321 4.1.1.4: the body ends at CRLF.CRLF; the final CRLF belongs to the last line', () => {
  assert.deepEqual(decode(reject, 'Subject: hi\r\n\r\nhello\r\n.\r\n'), {
    body: 'Subject: hi\r\n\r\nhello\r\n',
    done: true,
    rest: '',
    error: null,
    size: 22,
  });
});

test('RFC 5321 4.1.1.4: "." CRLF right after the 354 is an empty message', () => {
  assert.deepEqual(decode(reject, '.\r\n'), { body: '', done: true, rest: '', error: null, size: 0 });
});

test('RFC 2920: bytes after the end of data are returned as rest (pipelined QUIT)', () => {
  assert.deepEqual(decode(reject, 'a\r\n.\r\nQUIT\r\n'), {
    body: 'a\r\n',
    done: true,
    rest: 'QUIT\r\n',
    error: null,
    size: 3,
  });
  assert.deepEqual(
    decode(reject, '.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n').rest,
    'MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n',
  );
});

test('a push after the end of data returns the whole chunk as rest', () => {
  const decoder = new DataDecoder(reject);
  assert.deepEqual(decoder.push(bytes('.\r\n')), { body: [], done: true, rest: Buffer.alloc(0) });
  const later = bytes('NOOP\r\n');
  assert.deepEqual(decoder.push(later), { body: [], done: true, rest: later });
});

test('RFC 5321 4.5.2: a leading dot is removed from every other line', () => {
  assert.deepEqual(decode(reject, '..\r\n..x\r\n.x\r\n...\r\nx.\r\n.\r\n'), {
    body: '.\r\n.x\r\nx\r\n..\r\nx.\r\n',
    done: true,
    rest: '',
    error: null,
    size: 18,
  });
});

test('a dot not at the start of a line is not an end: "abc.\\r\\n"', () => {
  assert.deepEqual(decode(reject, 'abc.\r\n'), {
    body: 'abc.\r\n',
    done: false,
    rest: '',
    error: null,
    size: 6,
  });
  assert.deepEqual(decode(reject, 'abc.\r\n.\r\n').body, 'abc.\r\n');
  assert.deepEqual(decode(reject, 'a\r\n .\r\n.\r\n').body, 'a\r\n .\r\n');
});

test('a body that never reaches CRLF.CRLF is not done, and holds no pending dot or CR', () => {
  assert.deepEqual(decode(reject, 'line\r\n.'), {
    body: 'line\r\n',
    done: false,
    rest: '',
    error: null,
    size: 6,
  });
  assert.deepEqual(decode(reject, 'line\r\n.\r'), {
    body: 'line\r\n',
    done: false,
    rest: '',
    error: null,
    size: 6,
  });
  assert.deepEqual(decode(reject, 'line\r'), { body: 'line', done: false, rest: '', error: null, size: 4 });
});

/**
 * SMTP smuggling (CVE-2023-51764/51765/51766): a fake end of data followed by a smuggled
 * transaction, then the real end. The smuggled text must stay inside the one message.
 */
const SMUGGLE_TAIL = 'MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.org>\r\n';
const SMUGGLING_CASES: { name: string; wire: string; rejectBody: string; normalizedBody: string }[] = [
  {
    name: '\\n.\\n',
    wire: `hello\n.\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello',
    normalizedBody: `hello\r\n.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\r.\\r',
    wire: `hello\r.\r${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello',
    normalizedBody: `hello\r\n.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\n.\\r\\n',
    wire: `hello\n.\r\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello',
    normalizedBody: `hello\r\n.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\r\\n.\\n',
    wire: `hello\r\n.\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello\r\n',
    normalizedBody: `hello\r\n.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\r\\n.\\r',
    wire: `hello\r\n.\r${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello\r\n',
    normalizedBody: `hello\r\n.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\r.\\r\\n',
    wire: `hello\r.\r\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello',
    normalizedBody: `hello\r\n.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\r\\n.\\r\\r\\n',
    wire: `hello\r\n.\r\r\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'hello\r\n',
    normalizedBody: `hello\r\n.\r\n\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '.\\n at the start',
    wire: `.\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: '',
    normalizedBody: `.\r\n${SMUGGLE_TAIL}`,
  },
  {
    name: '\\n.\\n then \\n.\\r\\n',
    wire: `a\n.\n${SMUGGLE_TAIL}\n.\r\n${SMUGGLE_TAIL}.\r\nQUIT\r\n`,
    rejectBody: 'a',
    normalizedBody: `a\r\n.\r\n${SMUGGLE_TAIL}\r\n.\r\n${SMUGGLE_TAIL}`,
  },
];

for (const { name, wire, rejectBody, normalizedBody } of SMUGGLING_CASES) {
  test(`smuggling ${name}: 'reject' finds one end, the real one, and reports bare-lf`, () => {
    const outcome = assertSplitInvariant(reject, wire);
    assert.deepEqual(outcome, {
      body: rejectBody,
      done: true,
      rest: 'QUIT\r\n',
      error: 'bare-lf',
      size: rejectBody.length,
    });
  });

  test(`smuggling ${name}: 'normalize' finds one end, the real one, and keeps the smuggled text in the body`, () => {
    const outcome = assertSplitInvariant(normalize, wire);
    assert.deepEqual(outcome, {
      body: normalizedBody,
      done: true,
      rest: 'QUIT\r\n',
      error: null,
      size: normalizedBody.length,
    });
  });
}

test('smuggling without a real end: the decoder is still waiting after a fake end', () => {
  for (const fake of ['\n.\n', '\r.\r', '\n.\r\n', '\r\n.\n', '\r\n.\r', '\r.\r\n', '\r\n.\r\r\n']) {
    for (const opts of [reject, normalize]) {
      const outcome = assertSplitInvariant(opts, `hello${fake}${SMUGGLE_TAIL}`);
      assert.equal(outcome.done, false, JSON.stringify(fake));
    }
  }
});

test("'reject': any bare LF or lone CR in the body sets bare-lf and stops the output", () => {
  assert.deepEqual(decode(reject, 'one\r\ntwo\nthree\r\n.\r\n'), {
    body: 'one\r\ntwo',
    done: true,
    rest: '',
    error: 'bare-lf',
    size: 8,
  });
  assert.deepEqual(decode(reject, 'one\rtwo\r\n.\r\n').error, 'bare-lf');
  assert.deepEqual(decode(reject, 'one\r\r\n.\r\n').error, 'bare-lf');
});

test("'normalize': a bare LF or lone CR becomes CRLF; a real CRLF after a lone CR still ends the message", () => {
  assert.deepEqual(decode(normalize, 'one\ntwo\rthree\r\r\n.\r\n'), {
    body: 'one\r\ntwo\r\nthree\r\n\r\n',
    done: true,
    rest: '',
    error: null,
    size: 19,
  });
});

test("'normalize': dot-unstuffing applies after a bare line ending too; a bare '.' line stays literal", () => {
  assert.deepEqual(decode(normalize, 'a\n..b\n.\n..\n.\r\n').body, 'a\r\n.b\r\n.\r\n.\r\n.\r\n');
  assert.equal(decode(normalize, 'a\n..b\n.\n..\n.\r\n').done, false);
  assert.deepEqual(decode(normalize, 'a\n.\r\n.\r\n'), {
    body: 'a\r\n.\r\n',
    done: true,
    rest: '',
    error: null,
    size: 6,
  });
});

test('RFC 5321 4.5.3.1.6: a text line of 1000 octets with CRLF is accepted, 1001 sets line-too-long', () => {
  const fits = 'x'.repeat(998);
  assert.deepEqual(decode(reject, `${fits}\r\n.\r\n`), {
    body: `${fits}\r\n`,
    done: true,
    rest: '',
    error: null,
    size: 1000,
  });
  assert.deepEqual(decode(reject, `ok\r\n${fits}y\r\nmore\r\n.\r\nQUIT\r\n`), {
    body: `ok\r\n${fits}`,
    done: true,
    rest: 'QUIT\r\n',
    error: 'line-too-long',
    size: 1002,
  });
});

test('RFC 5321 4.5.3.1.6: the transparency dot is not counted in the line length', () => {
  const content = `.${'x'.repeat(997)}`;
  assert.deepEqual(decode(reject, `.${content}\r\n.\r\n`), {
    body: `${content}\r\n`,
    done: true,
    rest: '',
    error: null,
    size: 1000,
  });
});

test('a NUL octet sets error nul; decoding continues to the real end', () => {
  assert.deepEqual(decode(reject, 'ab\0cd\r\n.\r\nQUIT\r\n'), {
    body: 'ab',
    done: true,
    rest: 'QUIT\r\n',
    error: 'nul',
    size: 2,
  });
  assert.deepEqual(decode(normalize, '.\0\r\n.\r\n').error, 'nul');
});

test('only the first error is kept', () => {
  assert.equal(decode(reject, 'a\0b\nc\r\n.\r\n').error, 'nul');
  assert.equal(decode(reject, 'a\nb\0c\r\n.\r\n').error, 'bare-lf');
  assert.equal(decode({ ...reject, maxLineBytes: 4 }, 'abc\0\r\n.\r\n').error, 'line-too-long');
  assert.equal(decode({ ...reject, maxLineBytes: 4, maxMessageBytes: 1 }, 'abc\r\n.\r\n').error, 'too-big');
  // An octet that breaks both the line and the size limit counts as line-too-long; a NUL as nul.
  assert.equal(
    decode({ ...reject, maxLineBytes: 4, maxMessageBytes: 2 }, 'abc\r\n.\r\n').error,
    'line-too-long',
  );
  assert.equal(decode({ ...reject, maxLineBytes: 4, maxMessageBytes: 2 }, 'ab\0\r\n.\r\n').error, 'nul');
});

test('maxMessageBytes: a body of exactly the limit is accepted, one octet more sets too-big', () => {
  const limit = { ...reject, maxMessageBytes: 10 };
  assert.deepEqual(decode(limit, '12345678\r\n.\r\n'), {
    body: '12345678\r\n',
    done: true,
    rest: '',
    error: null,
    size: 10,
  });
  assert.deepEqual(decode(limit, '123456789\r\n.\r\nQUIT\r\n'), {
    body: '123456789\r',
    done: true,
    rest: 'QUIT\r\n',
    error: 'too-big',
    size: 10,
  });
  assert.deepEqual(decode({ ...reject, maxMessageBytes: 0 }, '.\r\n').error, null);
  assert.deepEqual(decode({ ...reject, maxMessageBytes: 0 }, '\r\n.\r\n').error, 'too-big');
});

test('a too-big message produces no body after the limit and keeps no memory for it', () => {
  const decoder = new DataDecoder({ ...reject, maxMessageBytes: 1000 });
  const block = `${'y'.repeat(60)}\r\n`.repeat(1000);
  let produced = 0;
  for (let k = 0; k < 16; k++) {
    const result = decoder.push(bytes(block));
    produced += result.body.reduce((sum, b) => sum + b.length, 0);
    assert.equal(result.done, false);
  }
  assert.equal(produced, 1000);
  assert.equal(decoder.error, 'too-big');
  const last = decoder.push(bytes('.\r\nQUIT\r\n'));
  assert.deepEqual(last.body, []);
  assert.equal(last.done, true);
  assert.equal(last.rest?.toString('latin1'), 'QUIT\r\n');
});

test('body chunks are subarrays of the input when no rewriting is needed', () => {
  const decoder = new DataDecoder(reject);
  const wire = bytes('line one\r\nline two\r\n..dot\r\n');
  const result = decoder.push(wire);
  assert.equal(result.body.length, 2);
  assert.equal(result.body[0]?.buffer, wire.buffer);
  assert.deepEqual(
    result.body.map((b) => b.toString('latin1')),
    ['line one\r\nline two\r\n', '.dot\r\n'],
  );
});

test('every split point and byte-by-byte feeding decode like one push', () => {
  const wires = [
    'Subject: x\r\n\r\nbody\r\n..stuffed\r\n.\r\nQUIT\r\n',
    '.\r\nRSET\r\n',
    '..\r\n.\r\n',
    'a\r\r\n\r\n.\r\r\n.\r\n',
    'x\0y\r\nz\n.\r\nNOOP',
    '1234567\r\n12345678\r\n.\r\n',
    '\r\n\r\n\r\n.\r\n.\r\n',
    'no end here\r\n.x\r\n',
  ];
  for (const wire of wires) {
    for (const bareLineEndings of ['reject', 'normalize'] satisfies Policy[]) {
      assertSplitInvariant({ maxMessageBytes: 1000, maxLineBytes: 1000, bareLineEndings }, wire);
      assertSplitInvariant({ maxMessageBytes: 12, maxLineBytes: 9, bareLineEndings }, wire);
    }
  }
});

/** The body rules written the plain way, line by line over the whole input, to compare against. */
function reference(opts: DataDecoderOptions, text: string): Outcome {
  const wire = bytes(text);
  const normalizeMode = opts.bareLineEndings === 'normalize';
  const out: number[] = [];
  let error: DataError | null = null;
  let eligible = true;
  let lineLength = 0;
  const fail = (e: DataError): void => {
    error ??= e;
  };
  const emit = (octet: number, content: boolean): void => {
    if (error !== null) return;
    if (content && octet === 0) return fail('nul');
    if (content && lineLength + 1 > opts.maxLineBytes - 2) return fail('line-too-long');
    if (out.length + 1 > opts.maxMessageBytes) return fail('too-big');
    out.push(octet);
    if (content) lineLength += 1;
  };
  let pos = 0;
  for (;;) {
    // Find the next line ending: CRLF (real), LF or CR + other (bare), or none yet.
    let at = wire.length;
    let ending: 'crlf' | 'bare' | 'none' = 'none';
    for (let j = pos; j < wire.length; j++) {
      if (wire[j] === 0x0a) {
        at = j;
        ending = 'bare';
        break;
      }
      if (wire[j] === 0x0d) {
        at = j;
        if (j + 1 < wire.length) ending = wire[j + 1] === 0x0a ? 'crlf' : 'bare';
        break;
      }
    }
    let line = wire.subarray(pos, at);
    const isDotLine = line.length === 1 && line[0] === 0x2e;
    if (isDotLine && ending === 'crlf' && eligible) {
      return {
        body: Buffer.from(out).toString('latin1'),
        done: true,
        rest: text.slice(at + 2),
        error,
        size: out.length,
      };
    }
    lineLength = 0;
    if (isDotLine && ending === 'none') {
      // Pending: nothing emitted yet.
    } else if (isDotLine) {
      // Not an end: kept literally in 'normalize' mode; in 'reject' mode the bare ending fails.
      if (normalizeMode) emit(0x2e, true);
      else if (ending === 'bare') fail('bare-lf');
    } else {
      if (line[0] === 0x2e) line = line.subarray(1);
      for (const octet of line) emit(octet, true);
    }
    if (ending === 'none') {
      return { body: Buffer.from(out).toString('latin1'), done: false, rest: '', error, size: out.length };
    }
    if (ending === 'bare' && !normalizeMode) fail('bare-lf');
    emit(0x0d, false);
    emit(0x0a, false);
    eligible = ending === 'crlf';
    pos = at + (ending === 'crlf' ? 2 : 1);
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

test('random inputs split at random points agree with a plain line-by-line reference', () => {
  const next = random(3030);
  const tokens = ['a', 'bc', '.', '..', '\r', '\n', '\r\n', '\r\n.\r\n', '\0', '\r\n.', '.\r', 'Q\r\n'];
  for (let round = 0; round < 5000; round++) {
    const parts: string[] = [];
    const count = Math.floor(next() * 14);
    for (let k = 0; k < count; k++) parts.push(tokens[Math.floor(next() * tokens.length)]!);
    const text = parts.join('');
    const opts: DataDecoderOptions = {
      maxMessageBytes: Math.floor(next() * 30),
      maxLineBytes: 3 + Math.floor(next() * 6),
      bareLineEndings: next() < 0.5 ? 'reject' : 'normalize',
    };
    const wire = bytes(text);
    const cuts: number[] = [];
    for (let c = 0; c < wire.length; c++) if (next() < 0.3) cuts.push(c);
    const { donePush: _, ...outcome } = feed(opts, splitAt(wire, ...cuts));
    const label = `${JSON.stringify(text)} ${JSON.stringify(opts)} cuts ${cuts.join(',')}`;
    assert.deepEqual(outcome, reference(opts, text), label);
  }
});

test('the constructor refuses impossible limits', () => {
  assert.throws(() => new DataDecoder({ ...reject, maxLineBytes: 2 }), RangeError);
  assert.throws(() => new DataDecoder({ ...reject, maxMessageBytes: -1 }), RangeError);
});

test('RFC 3030: a BDAT chunk is exactly its size, across pushes, with no dot or line-ending handling', () => {
  const reader = new ChunkReader(10);
  const first = reader.push(bytes('.\r\n\n.'));
  assert.deepEqual(first, { body: bytes('.\r\n\n.'), done: false });
  assert.equal(reader.remaining, 5);
  const second = reader.push(bytes('\r\n.\r\nBDAT 3 LAST\r\n'));
  assert.deepEqual(second, { body: bytes('\r\n.\r\n'), done: true, rest: bytes('BDAT 3 LAST\r\n') });
  assert.equal(reader.done, true);
});

test('RFC 3030: a chunk that ends exactly at the end of a push has an empty rest', () => {
  const reader = new ChunkReader(3);
  assert.deepEqual(reader.push(bytes('abc')), { body: bytes('abc'), done: true, rest: Buffer.alloc(0) });
});

test('RFC 3030: BDAT 0 is complete at once', () => {
  const reader = new ChunkReader(0);
  assert.equal(reader.done, true);
  assert.deepEqual(reader.push(bytes('QUIT\r\n')), {
    body: Buffer.alloc(0),
    done: true,
    rest: bytes('QUIT\r\n'),
  });
  assert.throws(() => new ChunkReader(-1), RangeError);
});

// ---- BDAT bodies: the same rules as DATA, across chunks --------------------------------------

interface BdatOutcome {
  body: string;
  error: DataError | null;
  size: number;
}

/** Feeds `chunks` to one BdatDecoder, then ends it (the LAST chunk). */
function bdatDecode(opts: DataDecoderOptions, chunks: Buffer[]): BdatOutcome {
  const decoder = new BdatDecoder(opts);
  const body: Buffer[] = [];
  for (const chunk of chunks) body.push(...decoder.write(chunk));
  assert.equal(decoder.done, false);
  body.push(...decoder.end());
  assert.equal(decoder.done, true);
  const decoded = Buffer.concat(body);
  assert.equal(decoded.length, decoder.size, 'size counts the octets produced');
  return { body: decoded.toString('latin1'), error: decoder.error, size: decoder.size };
}

/**
 * The DATA wire for a body: a "." doubled at the start of every line (after CRLF, a bare LF or a
 * lone CR, as the DATA decoder reads lines), then the end of data.
 */
function dataWireFor(body: string): string {
  return `${body.replace(/(^|\r\n|\n|\r(?!\n))\./g, '$1..')}.\r\n`;
}

/** What DATA makes of the same body: the BDAT decoder must agree, octet for octet and error for error. */
function viaData(opts: DataDecoderOptions, body: string): BdatOutcome {
  const { body: decoded, error, size, done } = decode(opts, dataWireFor(body));
  assert.ok(done || error !== null, `DATA did not end for ${JSON.stringify(body)}`);
  return { body: decoded, error, size };
}

test('RFC 3030 + DESIGN rule 10: a BDAT body gets the DATA rules at every split point (bare LF, bare CR, NUL, long line, size)', () => {
  const bodies = [
    'Subject: x\r\n\r\nhello\r\n',
    'hello\n.\nMAIL FROM:<evil@x>\r\n', // bare LF around a "." line (smuggling)
    'hello\r.\rworld\r\n', // bare CR
    'a\r\r\n\r\n', // a lone CR right before a CRLF
    'x\0y\r\n', // NUL
    '1234567\r\n12345678\r\n', // 8 octets + CRLF: over a 9-octet line limit
    '.leading dot\r\n.\r\n..\r\n', // dots are content in BDAT, never stuffing or an end
    '\r\n\r\n\r\n',
  ];
  const limits = [
    { maxMessageBytes: 1000, maxLineBytes: 1000 },
    { maxMessageBytes: 12, maxLineBytes: 9 },
  ];
  for (const body of bodies) {
    const wire = bytes(body);
    for (const bareLineEndings of ['reject', 'normalize'] satisfies Policy[]) {
      for (const limit of limits) {
        const opts = { ...limit, bareLineEndings };
        const expected = viaData(opts, body);
        const label = (what: string): string => `${what} of ${JSON.stringify(body)} ${JSON.stringify(opts)}`;
        assert.deepEqual(bdatDecode(opts, [wire]), expected, label('one chunk'));
        assert.deepEqual(bdatDecode(opts, byteByByte(wire)), expected, label('byte by byte'));
        for (let i = 0; i <= wire.length; i++) {
          for (let j = i; j <= wire.length; j++) {
            assert.deepEqual(
              bdatDecode(opts, splitAt(wire, i, j)),
              expected,
              label(`chunks cut at ${i},${j}`),
            );
          }
        }
      }
    }
  }
});

test('RFC 3030: the BDAT smuggling bodies of issue 8 are refused in reject mode, normalized to CRLF otherwise', () => {
  const smuggled = bytes('hello\n.\nMAIL FROM:<evil@x>\r\n');
  assert.equal(bdatDecode(reject, [smuggled]).error, 'bare-lf');
  assert.deepEqual(bdatDecode(normalize, [smuggled]), {
    body: 'hello\r\n.\r\nMAIL FROM:<evil@x>\r\n',
    error: null,
    size: 30,
  });
  assert.equal(bdatDecode(reject, [bytes('hello\r.\rworld')]).error, 'bare-lf');
  assert.equal(bdatDecode(reject, [bytes('a\0b\r\n')]).error, 'nul');
});

test('RFC 3030: a CR that ends one chunk and the LF that starts the next are one CRLF; a CR ending the LAST chunk is bare', () => {
  assert.deepEqual(bdatDecode(reject, [bytes('a\r'), bytes('\nb\r\n')]), {
    body: 'a\r\nb\r\n',
    error: null,
    size: 6,
  });
  assert.equal(bdatDecode(reject, [bytes('a\r\n'), bytes('b\r')]).error, 'bare-lf');
  assert.deepEqual(bdatDecode(normalize, [bytes('a\r\n'), bytes('b\r')]), {
    body: 'a\r\nb\r\n',
    error: null,
    size: 6,
  });
  // A last line without any ending is kept as sent; an empty body stays empty.
  assert.deepEqual(bdatDecode(reject, [bytes('a\r\nb')]), { body: 'a\r\nb', error: null, size: 4 });
  assert.deepEqual(bdatDecode(reject, []), { body: '', error: null, size: 0 });
});

test('RFC 3030: random BDAT bodies in random chunks agree with DATA', () => {
  const next = random(8030);
  const tokens = ['a', 'bc', '.', '..', '\r', '\n', '\r\n', '\r\n.\r\n', '\0', '\r\n.', '.\r', 'Q\r\n'];
  for (let round = 0; round < 3000; round++) {
    const parts: string[] = [];
    const count = Math.floor(next() * 14);
    for (let k = 0; k < count; k++) parts.push(tokens[Math.floor(next() * tokens.length)]!);
    const body = `${parts.join('')}\r\n`;
    const opts: DataDecoderOptions = {
      maxMessageBytes: Math.floor(next() * 30),
      maxLineBytes: 3 + Math.floor(next() * 6),
      bareLineEndings: next() < 0.5 ? 'reject' : 'normalize',
    };
    const wire = bytes(body);
    const cuts: number[] = [];
    for (let c = 0; c < wire.length; c++) if (next() < 0.3) cuts.push(c);
    const label = `${JSON.stringify(body)} ${JSON.stringify(opts)} cuts ${cuts.join(',')}`;
    assert.deepEqual(bdatDecode(opts, splitAt(wire, ...cuts)), viaData(opts, body), label);
  }
});
