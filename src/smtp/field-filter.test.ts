/**
 * The header field filter: removes the Authentication-Results fields that claim our
 * authserv-id (RFC 8601 5), whatever the chunking, and nothing else.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AUTH_RESULTS_NAME, claimsAuthservId } from '../mailauth/authserv-id.js';
import { FieldFilter } from './field-filter.js';

function filter(maxHold = 64 * 1024): FieldFilter {
  return new FieldFilter({
    name: AUTH_RESULTS_NAME,
    drop: (f) => claimsAuthservId(f, 'mx.example'),
    maxHold,
  });
}

function run(input: string, cuts: number[], maxHold?: number): string {
  const f = filter(maxHold);
  const buf = Buffer.from(input);
  const out: Buffer[] = [];
  let at = 0;
  for (const cut of [...cuts, buf.length]) {
    out.push(...f.push(buf.subarray(at, cut)));
    at = cut;
  }
  out.push(...f.end());
  return Buffer.concat(out).toString();
}

const INPUT =
  'Authentication-Results: mx.example; dmarc=pass\r\n' +
  'From: a@example.org\r\n' +
  'Authentication-Results: (c) MX.Example;\r\n' +
  '\tspf=pass\r\n' +
  'authentication-results : other.example; spf=pass\r\n' +
  'Authentication-Results: "mx.example"; dkim=pass\r\n' +
  'Authentication-Results: (unterminated\r\n' +
  'Subject: s\r\n' +
  '\r\n' +
  'Authentication-Results: mx.example; in the body, untouched\r\n';

const WANT =
  'From: a@example.org\r\n' +
  'authentication-results : other.example; spf=pass\r\n' +
  'Subject: s\r\n' +
  '\r\n' +
  'Authentication-Results: mx.example; in the body, untouched\r\n';

test('RFC 8601 5: fields claiming our authserv-id (any case, quoted, after a comment, folded) and malformed ones go; the rest stays', () => {
  assert.equal(run(INPUT, []), WANT);
});

test('the same output at every cut of the input into two chunks, and one octet at a time', () => {
  for (let cut = 0; cut <= INPUT.length; cut++) assert.equal(run(INPUT, [cut]), WANT, `cut at ${cut}`);
  assert.equal(
    run(
      INPUT,
      Array.from({ length: INPUT.length }, (_, i) => i),
    ),
    WANT,
  );
});

test('a held field never grows past maxHold: a forged field stuffed with a long comment is removed, a foreign long one kept', () => {
  const stuffed = `Authentication-Results: (${'x'.repeat(500)}) mx.example; dmarc=pass\r\n`;
  const foreign = `Authentication-Results: other.example; ${'y'.repeat(500)}\r\n continued\r\n`;
  const input = `${stuffed}${foreign}From: a@example.org\r\n\r\nbody\r\n`;
  assert.equal(run(input, [], 64), `${foreign}From: a@example.org\r\n\r\nbody\r\n`);
  assert.equal(run(input, [100, 300, 700], 64), `${foreign}From: a@example.org\r\n\r\nbody\r\n`);
});

test('a message that is only a forged field without a final line end, and a first line that is not a field', () => {
  assert.equal(run('Authentication-Results: mx.example; spf=pass', []), '');
  assert.equal(
    run(' leading space\r\nAuthentication-Results: mx.example;\r\n', [3]),
    ' leading space\r\nAuthentication-Results: mx.example;\r\n',
  );
});
