import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { planRewrite } from './message-edits.js';
import { combine, safeFieldValue, safeReplyText, verdict } from './verdict.js';
import type { MessageEdit } from './verdict.js';

const MESSAGE =
  'Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam: old\r\nTo: bob\r\nX-Spam: older\r\n\r\nbody\r\n';

/** The stored message in small pieces, as the spool hands it back. */
function pieces(text: string, size = 7): AsyncIterable<Buffer> {
  const b = Buffer.from(text);
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return Readable.from(out);
}

async function rewrite(edits: MessageEdit[], text = MESSAGE): Promise<string | null> {
  const out = await planRewrite(pieces(text), edits, 1024);
  if (out === null) return null;
  const parts: Buffer[] = [];
  for await (const p of out) parts.push(p);
  return Buffer.concat(parts).toString();
}

test('append, insert, change and delete fields; folded fields count as one', async () => {
  assert.equal(
    await rewrite([
      { op: 'append', name: 'X-Last', value: 'z' },
      { op: 'insert', index: 1, name: 'X-Second', value: ' y' },
      { op: 'change', name: 'subject', index: 1, value: '[SPAM] hi' },
      { op: 'change', name: 'X-Spam', index: 2, value: null },
    ]),
    'Received: from a\r\n\tby b\r\nX-Second: y\r\nSubject: [SPAM] hi\r\nX-Spam: old\r\nTo: bob\r\nX-Last: z\r\n\r\nbody\r\n',
  );
});

test('index 0 deletes every field of the name; a change of an absent field adds it', async () => {
  assert.equal(
    await rewrite([
      { op: 'change', name: 'X-Spam', index: 0, value: null },
      { op: 'change', name: 'X-New', index: 1, value: 'n' },
    ]),
    'Received: from a\r\n\tby b\r\nSubject: hi\r\nTo: bob\r\nX-New: n\r\n\r\nbody\r\n',
  );
});

test('edits that change nothing (deleting an absent field) need no rewrite', async () => {
  assert.equal(await rewrite([{ op: 'change', name: 'X-Absent', index: 0, value: null }]), null);
  assert.equal(await rewrite([]), null);
});

test('a replaced body; a message without a body gets one', async () => {
  assert.equal(
    await rewrite([{ op: 'body', body: Buffer.from('new\r\n') }], 'Subject: x\r\n\r\nold\r\n'),
    'Subject: x\r\n\r\nnew\r\n',
  );
  assert.equal(
    await rewrite([{ op: 'body', body: Buffer.from('new\r\n') }], 'Subject: x\r\n'),
    'Subject: x\r\n\r\nnew\r\n',
  );
});

test('a header section over the bound is refused', async () => {
  await assert.rejects(
    planRewrite(
      pieces(`X-Big: ${'a'.repeat(2000)}\r\n\r\n`),
      [{ op: 'append', name: 'A', value: 'b' }],
      1024,
    ),
  );
});

test('filter text is one safe line; field values cannot start a field or end the header', () => {
  assert.equal(safeReplyText('Gtube\r\n250 ok\x00 pattern', 'x'), 'Gtube 250 ok pattern');
  assert.equal(safeReplyText(' \r\n', 'fallback'), 'fallback');
  assert.equal(safeFieldValue('a\r\n\tb'), 'a\r\n\tb');
  assert.equal(safeFieldValue('a\nBcc: x\r\n\r\nbody'), 'a Bcc: x  body');
});

test('the strongest action wins; edits of every filter are kept in order', () => {
  const a = verdict({ kind: 'junk' }, 'a', [{ op: 'prepend', name: 'A', value: '1' }]);
  const b = verdict({ kind: 'tempfail', text: 't' }, 'b', [{ op: 'prepend', name: 'B', value: '2' }]);
  const c = verdict({ kind: 'reply', code: 550, enhanced: '5.7.0', text: 'no' }, 'c');
  assert.deepEqual(combine([a, b]).action, { kind: 'tempfail', text: 't' });
  assert.deepEqual(combine([a, b, c]).action.kind, 'reply');
  assert.deepEqual(
    combine([a, b]).edits.map((e) => (e.op === 'prepend' ? e.name : '')),
    ['A', 'B'],
  );
});
