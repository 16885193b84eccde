/** Unit tests for src/cli/sendmail-input.ts and sendmail-addresses.ts: the dot rule, -t, Bcc. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { addressList } from './sendmail-addresses.js';
import { DotEnd, HeaderSplitter } from './sendmail-input.js';

function dots(parts: string[]): { text: string; ended: boolean } {
  const d = new DotEnd();
  let text = '';
  for (const p of parts) text += d.push(Buffer.from(p)).toString();
  d.end();
  return { text, ended: d.ended };
}

test('a line holding only "." ends the input, whatever the chunking; other dots stay', () => {
  assert.deepEqual(dots(['a\n.\nb\n']), { text: 'a\n', ended: true });
  assert.deepEqual(dots(['a\r\n.', '\r', '\nb']), { text: 'a\r\n', ended: true });
  assert.deepEqual(dots(['.\n']), { text: '', ended: true });
  assert.deepEqual(dots(['a\n..\n.b\nx.\n']), { text: 'a\n..\n.b\nx.\n', ended: false });
  assert.deepEqual(dots(['a\n.']), { text: 'a\n', ended: true });
});

function split(text: string, extract = true): { header: string; rest: string; recipients: string[] } {
  const s = new HeaderSplitter({ extractRecipients: extract });
  const r = s.push(Buffer.from(text)) ?? s.end();
  return { header: r.result.header.toString(), rest: r.rest.toString(), recipients: r.result.recipients };
}

test('-t takes To, Cc and Bcc (folded, groups, comments, quoted names); Bcc is removed', () => {
  const r = split(
    'To: "Doe, J" <j@example.org>, k@example.org (Kay)\r\nCc: team: a@example.org, b@example.org;\r\n' +
      'Bcc: hidden@example.org,\r\n\tother@example.org\r\nSubject: s\r\n\r\nbody\r\n',
  );
  assert.deepEqual(r.recipients, [
    'j@example.org',
    'k@example.org',
    'a@example.org',
    'b@example.org',
    'hidden@example.org',
    'other@example.org',
  ]);
  assert.equal(
    r.header,
    'To: "Doe, J" <j@example.org>, k@example.org (Kay)\r\nCc: team: a@example.org, b@example.org;\r\nSubject: s\r\n\r\n',
  );
  assert.equal(r.rest, 'body\r\n');
});

test('Resent-* replace the others for -t; a body without header gets an empty line before it', () => {
  assert.deepEqual(split('To: a@x.test\r\nResent-To: r@x.test\r\n\r\n').recipients, ['r@x.test']);
  const r = split('just text\r\nmore\r\n');
  assert.equal(r.header, '\r\n');
  assert.equal(r.rest, 'just text\r\nmore\r\n');
});

test('command-line address lists', () => {
  assert.deepEqual(addressList('a@x.test, Bob <b@x.test>'), ['a@x.test', 'b@x.test']);
  assert.deepEqual(addressList('root'), ['root']);
  assert.deepEqual(addressList('<@relay.test:c@x.test>'), ['c@x.test']);
});
