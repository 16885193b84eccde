/**
 * Building replies from the table (replies.ts): placeholders filled from the values given, left
 * as written when a value is missing, and the same reply built twice is the same.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatReply, reply } from './replies.js';

test('a reply fills every placeholder, each time it is built', () => {
  for (let i = 0; i < 2; i++) {
    const r = reply('RATE_LIMIT_CONNECTIONS', {
      hostname: 'mx.example',
      limit: 30,
      name: 'conn',
      seconds: 12,
    });
    assert.deepEqual(r, {
      code: 421,
      enhanced: '4.7.0',
      lines: [
        'mx.example too many connections from your network (30 per minute, rate_limits.conn); try again in 12 seconds',
      ],
      close: true,
    });
  }
});

test('a placeholder without a value stays as written; a text without placeholders is unchanged', () => {
  assert.equal(
    reply('RATE_LIMIT_CONNECTIONS', { hostname: 'mx.example', limit: 30 }).lines[0],
    'mx.example too many connections from your network (30 per minute, rate_limits.{name}); try again in {seconds} seconds',
  );
  assert.equal(
    formatReply(reply('POLICY_STATE_UNAVAILABLE')),
    '451 4.3.0 Policy check temporarily unavailable; please try again later\r\n',
  );
});
