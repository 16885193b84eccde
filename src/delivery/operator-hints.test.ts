import assert from 'node:assert/strict';
import { test } from 'node:test';
import { operatorHint } from './operator-hints.js';

test("Sterna's own errors get a hint naming the config key to look at", () => {
  assert.match(
    operatorHint(
      '454 4.7.4 TLS is required for mx.x.test[192.0.2.1]:25, but it does not offer STARTTLS; not sent in clear',
    ) ?? '',
    /outbound\.tls_policy/,
  );
  assert.match(
    operatorHint('454 4.7.5 TLS handshake with mx.x.test[192.0.2.1]:25 failed: self-signed certificate') ??
      '',
    /tls_ca_file/,
  );
  assert.match(
    operatorHint(
      '454 4.7.5 The certificate of relay.test[192.0.2.1]:587 failed verification: self-signed certificate; nothing sent (no AUTH, no mail)',
    ) ?? '',
    /tls_ca_file/,
  );
  assert.match(operatorHint('451 4.4.3 DNS lookup for x.test failed: timeout') ?? '', /\[dns\] servers/);
  assert.match(
    operatorHint('451 4.4.1 cannot connect to mx.x.test[192.0.2.1]:25: connect ECONNREFUSED') ?? '',
    /port 25/,
  );
  assert.match(operatorHint('451 4.4.1 no MX host of x.test could be reached') ?? '', /port 25/);
  assert.match(operatorHint('550 5.4.6 mail for x.test loops back to myself') ?? '', /local_domains/);
  assert.match(
    operatorHint('451 4.4.1 cannot read the AUTH password for relay.test: ENOENT') ?? '',
    /auth_password_file/,
  );
});

test('remote replies are classed by their enhanced status code', () => {
  assert.match(operatorHint('451 4.7.1 <a@x.test>: greylisted, come back later') ?? '', /greylisting/);
  assert.match(operatorHint('452 4.2.2 mailbox full') ?? '', /temporarily unavailable/);
  assert.match(operatorHint('550 5.7.1 rejected as spam') ?? '', /reputation/);
  assert.match(operatorHint('535 5.7.8 authentication failed') ?? '', /auth_user/);
  assert.match(operatorHint('550 5.1.1 <nobody@x.test>: no such user') ?? '', /does not exist/);
});

test('no hint suggests a TLS setting that does not verify the peer', () => {
  const errors = [
    '454 4.7.4 TLS is required for mx.x.test[192.0.2.1]:25, but it does not offer STARTTLS; not sent in clear',
    '454 4.7.5 TLS handshake with mx.x.test[192.0.2.1]:25 failed: wrong version number',
    '454 4.7.5 The certificate of relay.test[192.0.2.1]:587 failed verification: self-signed certificate; nothing sent (no AUTH, no mail)',
    '454 4.7.11 Authentication to relay.test[192.0.2.1]:587 is configured, but the connection is not encrypted; credentials not sent',
  ];
  for (const e of errors) {
    const hint = operatorHint(e) ?? '';
    assert.notEqual(hint, '', e);
    assert.doesNotMatch(hint, /"opportunistic"|"required"|"none"|auth_over_unverified_tls/, hint);
  }
});

test('no hint when nothing specific applies', () => {
  assert.equal(operatorHint('250 2.0.0 ok'), undefined);
  assert.equal(operatorHint('message expired after 5.0 days'), undefined);
});
