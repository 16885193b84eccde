/** Unit tests for src/cli/sendmail-options.ts: the options of sendmail(1) as Postfix takes them. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSendmailArgs, SendmailUsageError } from './sendmail-options.js';

test('flags, combined letters, attached and separate values, then recipients', () => {
  const o = parseSendmailArgs([
    '-ti',
    '-falice@example.org',
    '-F',
    'Alice A',
    '-odi',
    '-oem',
    '-v',
    'bob',
    'carol',
  ]);
  assert.equal(o.mode, 'deliver');
  assert.equal(o.extractRecipients, true);
  assert.equal(o.ignoreDots, true);
  assert.equal(o.sender, 'alice@example.org');
  assert.equal(o.fullName, 'Alice A');
  assert.equal(o.verbose, true);
  assert.deepEqual(o.recipients, ['bob', 'carol']);
});

test('-oi is -i; the ignored options are accepted silently; -- ends the options', () => {
  const o = parseSendmailArgs([
    '-oi',
    '-oee',
    '-om',
    '-odb',
    '-n',
    '-U',
    '-B',
    '8BITMIME',
    '-N',
    'never',
    '--',
    '-not-an-option',
  ]);
  assert.equal(o.ignoreDots, true);
  assert.deepEqual(o.recipients, ['-not-an-option']);
});

test('modes: -bs, -bp, -q, -qRdomain, -bi; mailq and newaliases by name', () => {
  assert.equal(parseSendmailArgs(['-bs']).mode, 'smtp');
  assert.equal(parseSendmailArgs(['-bp']).mode, 'list');
  assert.equal(parseSendmailArgs(['-q']).mode, 'flush');
  const r = parseSendmailArgs(['-qRexample.org']);
  assert.equal(r.mode, 'flush');
  assert.equal(r.flushDomain, 'example.org');
  assert.equal(parseSendmailArgs(['-q30m']).mode, 'deliver');
  assert.equal(parseSendmailArgs(['-bi']).mode, 'newaliases');
  assert.equal(parseSendmailArgs([], 'mailq').mode, 'list');
  assert.equal(parseSendmailArgs([], 'newaliases').mode, 'newaliases');
});

test('an unknown option, a missing value or an unsupported mode names itself', () => {
  assert.throws(() => parseSendmailArgs(['-Z']), new SendmailUsageError('unknown option -Z'));
  assert.throws(() => parseSendmailArgs(['-tZ']), new SendmailUsageError('unknown option -Z'));
  assert.throws(() => parseSendmailArgs(['-f']), new SendmailUsageError('option -f needs a value'));
  assert.throws(() => parseSendmailArgs(['-bv']), /unsupported mode -bv/);
  assert.throws(() => parseSendmailArgs(['-bd']), /sterna serve/);
});
