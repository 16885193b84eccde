import assert from 'node:assert/strict';
import { test } from 'node:test';
import { localOutcome, remoteOutcome, type LocalReason, type Outcome } from '../message/outcome.js';
import { operatorHint } from './operator-hints.js';

const PEER = { host: 'mx.x.test', address: '192.0.2.1' };

function remote(code: number, enhanced: string, text: string, stage: Outcome['stage'] = 'rcpt'): Outcome {
  return remoteOutcome({ code, enhanced, lines: [`${enhanced} ${text}`] }, stage, PEER);
}

test("Sterna's own outcomes get a hint naming the config key to look at, chosen by reason id", () => {
  const hint = (reason: LocalReason, vars: Record<string, string> = {}): string =>
    operatorHint(localOutcome(reason, 'connect', vars)) ?? '';
  assert.match(hint('tls-not-offered', { peer: 'mx.x.test[192.0.2.1]:25' }), /outbound\.tls_policy/);
  assert.match(hint('tls-certificate-unverified'), /tls_ca_file/);
  assert.match(hint('tls-failed'), /tls_ca_file/);
  assert.match(hint('dns-failure'), /\[dns\] servers/);
  assert.match(hint('connection-failed'), /port 25/);
  assert.match(hint('unreachable'), /port 25/);
  assert.match(hint('loop'), /local_domains/);
  assert.match(hint('auth-password-unreadable'), /auth_password_file/);
  assert.match(hint('lost-after-end-of-data'), /twice/);
});

test('the hint does not depend on the words: a reworded text keeps its hint, a look-alike text gets none', () => {
  const o = localOutcome('tls-certificate-unverified', 'tls', { peer: 'p', reason: 'r' });
  const reworded: Outcome = { ...o, text: 'entirely different words' };
  assert.equal(operatorHint(reworded), operatorHint(o));
  // A remote server that writes Sterna's own words gets no Sterna hint.
  const mimic = remote(451, '4.4.3', 'DNS lookup for x.test failed: timeout', 'mail');
  assert.doesNotMatch(operatorHint(mimic) ?? '', /\[dns\] servers/);
});

test('remote replies are classed by their stage and enhanced status code', () => {
  assert.match(operatorHint(remote(451, '4.7.1', '<a@x.test>: greylisted')) ?? '', /greylisting/);
  assert.match(operatorHint(remote(452, '4.2.2', 'mailbox full')) ?? '', /temporarily unavailable/);
  assert.match(operatorHint(remote(550, '5.7.1', 'rejected as spam')) ?? '', /reputation/);
  assert.match(operatorHint(remote(535, '5.7.8', 'authentication failed', 'auth')) ?? '', /auth_user/);
  assert.match(operatorHint(remote(550, '5.1.1', '<nobody@x.test>: no such user')) ?? '', /does not exist/);
});

test('no hint suggests a TLS setting that does not verify the peer', () => {
  const reasons: LocalReason[] = [
    'tls-not-offered',
    'tls-failed',
    'tls-certificate-unverified',
    'auth-needs-tls',
  ];
  for (const reason of reasons) {
    const hint = operatorHint(localOutcome(reason, 'tls')) ?? '';
    assert.notEqual(hint, '', reason);
    assert.doesNotMatch(hint, /"opportunistic"|"required"|"none"|auth_over_unverified_tls/, hint);
  }
});

test('no hint when nothing specific applies', () => {
  assert.equal(operatorHint(remote(250, '2.0.0', 'ok')), undefined);
  assert.equal(operatorHint(localOutcome('expired', 'queue', { days: '5.0', last: 'x' })), undefined);
});
