import assert from 'node:assert/strict';
import { test } from 'node:test';
import { explainOutcome } from '../queue/dsn-explanations.js';
import { REPLIES } from '../smtp/replies.js';
import {
  legacyOutcome,
  localOutcome,
  outcomeStatus,
  remoteAnswer,
  remoteOutcome,
  renderOutcome,
  toOutcome,
} from './outcome.js';

const PEER = { host: 'mx1.example.net', address: '192.0.2.1' };

test('a local outcome takes its code, enhanced code and text from the reply table', () => {
  const o = localOutcome('dns-failure', 'dns', { domain: 'x.test', reason: 'timeout' });
  assert.deepEqual(o, {
    code: REPLIES.OUT_DNS_FAILURE.code,
    enhanced: REPLIES.OUT_DNS_FAILURE.enhanced,
    text: 'DNS lookup for x.test failed: timeout',
    origin: 'local',
    stage: 'dns',
    reason: 'dns-failure',
  });
  assert.equal(renderOutcome(o), '451 4.4.3 DNS lookup for x.test failed: timeout');
  assert.equal(outcomeStatus(o), '4.4.3');
});

test("a remote outcome keeps the peer's words exactly, with its origin", () => {
  const o = remoteOutcome(
    { code: 550, enhanced: '5.1.1', lines: ['5.1.1 <a@x.test>:', 'no such user  '] },
    'rcpt',
    PEER,
  );
  assert.equal(o.text, '5.1.1 <a@x.test>: no such user');
  assert.deepEqual(o.origin, PEER);
  assert.equal(renderOutcome(o), '550 5.1.1 <a@x.test>: no such user');
  // A reply without an enhanced code: rendered as sent; the DSN status falls back to the class.
  const bare = remoteOutcome({ code: 554, lines: ['go away'] }, 'mail', PEER);
  assert.equal(renderOutcome(bare), '554 go away');
  assert.equal(outcomeStatus(bare), '5.0.0');
});

test('an expiry wraps the last answer: status 4.4.7, the remote answer still found', () => {
  const last = remoteOutcome({ code: 450, enhanced: '4.2.1', lines: ['4.2.1 busy'] }, 'rcpt', PEER);
  const o = localOutcome('expired', 'queue', { days: '5.0', last: renderOutcome(last) }, last);
  assert.equal(outcomeStatus(o), '4.4.7');
  assert.equal(remoteAnswer(o), last);
  assert.equal(
    renderOutcome(o),
    '451 4.4.7 message expired after 5.0 days in the queue; last error: 450 4.2.1 busy',
  );
});

test('legacy strings from an old spool: codes read once, rendered as they were', () => {
  const o = legacyOutcome('550 5.1.1 <a@x.test>: no such user');
  assert.equal(o.reason, 'legacy');
  assert.equal(o.code, 550);
  assert.equal(o.enhanced, '5.1.1');
  assert.equal(renderOutcome(o), '550 5.1.1 <a@x.test>: no such user');
  assert.equal(
    legacyOutcome('message expired after 5.0 days in the queue (4.4.7); last error: x').enhanced,
    '4.4.7',
  );
  assert.equal(legacyOutcome('no such mailbox: a@b').enhanced, '');
});

test('toOutcome accepts what the spool stored and refuses anything else', () => {
  const last = remoteOutcome({ code: 450, enhanced: '4.2.1', lines: ['4.2.1 busy'] }, 'rcpt', PEER);
  const o = localOutcome('expired', 'queue', { days: '1', last: 'x' }, last);
  assert.deepEqual(toOutcome(JSON.parse(JSON.stringify(o))), o);
  assert.equal(toOutcome({ ...o, reason: 'made-up' }), null);
  assert.equal(toOutcome({ ...o, stage: 'nowhere' }), null);
  assert.equal(toOutcome({ ...o, origin: { host: 1 } }), null);
  assert.equal(toOutcome('451 4.4.3 text'), null);
});

test('DSN explanations come from the reason id: rewording the text changes nothing', () => {
  const o = localOutcome('nxdomain', 'dns', { domain: 'x.test' });
  const reworded = { ...o, text: 'completely different words' };
  assert.deepEqual(explainOutcome(reworded), explainOutcome(o));
  assert.match(explainOutcome(o).meaning, /does not exist/);
  const lost = localOutcome('lost-after-end-of-data', 'end-of-data', { peer: 'p', when: 'w', reason: 'r' });
  assert.match(explainOutcome(lost).advice, /twice/);
});
