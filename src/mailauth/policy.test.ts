/** The policy decisions (policy.ts) and the A-R rendering of untrusted values (results.ts). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { authservIdOf } from './authserv-id.js';
import { pctOf } from './dmarc.js';
import { decide, type EnforcementConfig } from './policy.js';
import { arValue, formatAuthResults, type AuthResults } from './results.js';

const DEFAULTS: EnforcementConfig = {
  dmarcRejectAction: 'reject',
  dmarcQuarantineAction: 'junk',
  spfFailAction: 'mark',
  temperrorAction: 'accept',
};

function results(over: Partial<AuthResults> = {}): AuthResults {
  return {
    spf: {
      result: 'pass',
      identity: 'mailfrom',
      value: 'a@example.org',
      domain: 'example.org',
      reason: 'ok',
    },
    dkim: [{ result: 'none' }],
    dmarc: { result: 'pass', fromDomain: 'example.org', p: 'reject', disposition: 'none' },
    arc: { result: 'none' },
    ...over,
  };
}

const FAIL_SPF = {
  result: 'fail',
  identity: 'mailfrom',
  value: 'a@example.org',
  domain: 'example.org',
  reason: 'no',
} as const;

test('defaults: DMARC reject refuses, quarantine goes to Junk, SPF fail marks, temperror accepts', () => {
  const rejectFail = results({
    dmarc: { result: 'fail', p: 'reject', disposition: 'reject' },
    spf: FAIL_SPF,
  });
  assert.deepEqual(decide(rejectFail, DEFAULTS, false), {
    kind: 'refuse',
    reason: 'dmarc-reject',
    policy: 'reject',
  });
  assert.deepEqual(decide(rejectFail, DEFAULTS, true), { kind: 'accept', reason: 'exempt', marked: true });
  const quarantine = results({ dmarc: { result: 'fail', p: 'quarantine', disposition: 'quarantine' } });
  assert.deepEqual(decide(quarantine, DEFAULTS, false), { kind: 'junk', reason: 'dmarc-quarantine' });
  // The allow list: an exempt source is only marked, not sent to Junk.
  assert.deepEqual(decide(quarantine, DEFAULTS, true), { kind: 'accept', reason: 'exempt', marked: true });
  assert.deepEqual(decide(quarantine, { ...DEFAULTS, dmarcQuarantineAction: 'mark' }, false), {
    kind: 'accept',
    reason: 'dmarc-quarantine',
    marked: true,
  });
  // dmarc_reject_action = "junk": p=reject failing goes to Junk instead of a 550.
  assert.deepEqual(decide(rejectFail, { ...DEFAULTS, dmarcRejectAction: 'junk' }, false), {
    kind: 'junk',
    reason: 'dmarc-reject',
  });
  assert.deepEqual(
    decide(results({ spf: FAIL_SPF, dmarc: { result: 'none', disposition: 'none' } }), DEFAULTS, false),
    {
      kind: 'accept',
      reason: 'spf-fail',
      marked: true,
    },
  );
  const temp = results({
    spf: { ...FAIL_SPF, result: 'temperror' },
    dmarc: { result: 'temperror', disposition: 'none' },
  });
  assert.deepEqual(decide(temp, DEFAULTS, false), {
    kind: 'accept',
    reason: 'dmarc-temperror',
    marked: true,
  });
  assert.deepEqual(decide(temp, { ...DEFAULTS, temperrorAction: 'defer' }, false), {
    kind: 'defer',
    reason: 'dmarc-temperror',
  });
});

test('SPF fail with spf_fail_action = reject: refused unless DMARC passes (RFC 7489 10.1)', () => {
  const cfg = { ...DEFAULTS, spfFailAction: 'reject' } as const;
  assert.deepEqual(decide(results({ spf: FAIL_SPF }), cfg, false), {
    kind: 'accept',
    reason: 'pass',
    marked: false,
  });
  assert.deepEqual(
    decide(results({ spf: FAIL_SPF, dmarc: { result: 'none', disposition: 'none' } }), cfg, false),
    {
      kind: 'refuse',
      reason: 'spf-fail',
    },
  );
});

test('RFC 7489 6.3 pct: 1*3DIGIT up to 100, absent or malformed is 100', () => {
  assert.equal(pctOf('v=DMARC1; p=reject; pct=0'), 0);
  assert.equal(pctOf('v=DMARC1; p=reject; pct=50;'), 50);
  assert.equal(pctOf('v=DMARC1; p=reject; pct=250'), 100);
  assert.equal(pctOf('v=DMARC1; p=reject; pct=abc'), 100);
  assert.equal(pctOf('v=DMARC1; p=reject'), 100);
});

test('RFC 8601 2.2: authserv-id as token, quoted-string, after comments and folding; none when malformed', () => {
  assert.equal(authservIdOf(' mx.example; spf=pass'), 'mx.example');
  assert.equal(authservIdOf(' (a (nested) comment)\r\n mx.example 1; none'), 'mx.example');
  assert.equal(authservIdOf(' "mx.exa\\"mple"; none'), 'mx.exa"mple');
  assert.equal(authservIdOf(' (unclosed mx.example;'), null);
  assert.equal(authservIdOf(' ; spf=pass'), null);
  assert.equal(authservIdOf(''), null);
});

test('untrusted values cannot break out of the field: quoted, control characters and comment ends removed', () => {
  assert.equal(arValue('example.org'), 'example.org');
  assert.equal(arValue('a/b=c'), '"a/b=c"');
  assert.equal(arValue('evil"\r\nX-Injected: 1'), '"evil\\"  X-Injected: 1"');
  const field = formatAuthResults(
    'mx.example',
    results({
      dkim: [{ result: 'fail', domain: 'd.example\r\nX: y', selector: 's;1', reason: 'bad) (sig\r\nX: y' }],
    }),
  );
  assert.ok(!/\r\n[^ ]/.test(field.slice(0, -2)), field);
  assert.match(field, /dkim=fail \(bad sig X: y\) header\.d="d\.example {2}X: y" header\.s="s;1"/);
});
