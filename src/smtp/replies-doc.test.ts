import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { renderRepliesDoc } from './replies-doc.js';
import { REPLIES, formatReply, reply } from './replies.js';

test('docs/replies.md is generated from the reply table (run npm run docs)', async () => {
  const doc = await readFile(new URL('../../../docs/replies.md', import.meta.url), 'utf8');
  assert.equal(doc, renderRepliesDoc());
});

test('RFC 2034: every reply but the greeting, HELO/EHLO, 334 and 354 carries an enhanced code of its class', () => {
  for (const [id, spec] of Object.entries(REPLIES)) {
    if (['GREETING', 'HELO_OK', 'AUTH_CHALLENGE', 'START_DATA'].includes(id)) continue;
    assert.ok('enhanced' in spec, `${id} has no enhanced code`);
    assert.equal(
      spec.enhanced[0],
      String(spec.code)[0],
      `${id}: class of ${spec.enhanced} differs from ${spec.code}`,
    );
  }
});

test('RFC 5321 4.2.1: multi-line replies use "-" on all but the last line', () => {
  assert.equal(formatReply({ code: 250, lines: ['a', 'b', 'c'] }), '250-a\r\n250-b\r\n250 c\r\n');
  assert.equal(formatReply(reply('QUEUED', { qid: 'ABC' })), '250 2.0.0 Ok: queued as ABC\r\n');
});
