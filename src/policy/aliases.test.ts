import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AliasError, buildAliasTable, expand, isKnownRecipient, loadAliasFile } from './aliases.js';

/** Mailboxes match case-insensitively, as the user store is asked to. */
function mailboxes(...names: string[]): (address: string) => boolean {
  const set = new Set(names.map((n) => n.toLowerCase()));
  return (address) => set.has(address.toLowerCase());
}

const boxes = mailboxes('alice@example.com', 'bob@example.com', 'carol@example.com', 'admin@example.com');

test('buildAliasTable lower-cases keys (local part and domain) and the domains of targets', () => {
  const table = buildAliasTable({
    'Info@Example.COM': ['Alice@Example.com', 'Ext@Remote.ORG'],
    '@Example.NET': ['bob@example.com'],
  });
  assert.deepEqual(
    [...table.entries],
    [
      ['info@example.com', ['Alice@example.com', 'Ext@remote.org']],
      ['@example.net', ['bob@example.com']],
    ],
  );
});

test('buildAliasTable refuses bad keys, empty target lists, bad targets and keys equal but for case', () => {
  const cases: [Record<string, string[]>, string, string][] = [
    [
      { postmaster: ['a@b'] },
      'ALIAS_KEY_INVALID',
      'alias "postmaster": expected "local@domain" or "@domain" (catch-all)',
    ],
    [{ 'a@': ['a@b'] }, 'ALIAS_KEY_INVALID', 'alias "a@": expected "local@domain" or "@domain" (catch-all)'],
    [
      { 'a b@x': ['a@b'] },
      'ALIAS_KEY_INVALID',
      'alias "a b@x": expected "local@domain" or "@domain" (catch-all)',
    ],
    [{ 'a@x': [] }, 'ALIAS_TARGET_INVALID', 'alias "a@x": no target addresses (remove the alias instead)'],
    [
      { 'a@x': ['b'] },
      'ALIAS_TARGET_INVALID',
      'alias "a@x": target "b" is not an address of the form "local@domain"',
    ],
    [
      { 'a@x': ['@y'] },
      'ALIAS_TARGET_INVALID',
      'alias "a@x": target "@y" is not an address of the form "local@domain"',
    ],
    [
      { 'Bob@x': ['a@b'], 'bob@X': ['c@d'] },
      'ALIAS_KEY_DUPLICATE',
      'aliases "Bob@x" and "bob@X" are the same address (local parts are matched case-insensitively)',
    ],
  ];
  for (const [record, code, message] of cases) {
    assert.throws(() => buildAliasTable(record), { name: 'AliasError', code, message });
  }
});

test('an exact alias expands to its targets', () => {
  const table = buildAliasTable({ 'info@example.com': ['alice@example.com', 'friend@remote.org'] });
  assert.deepEqual(expand(table, 'info@example.com', boxes), {
    ok: true,
    addresses: ['alice@example.com', 'friend@remote.org'],
  });
});

test('aliases match the local part and domain case-insensitively', () => {
  const table = buildAliasTable({ 'info@example.com': ['alice@example.com'] });
  assert.deepEqual(expand(table, 'INFO@Example.Com', boxes), { ok: true, addresses: ['alice@example.com'] });
});

test('an existing mailbox is final, and its domain is lower-cased', () => {
  const table = buildAliasTable({ '@example.com': ['admin@example.com'] });
  assert.deepEqual(expand(table, 'bob@EXAMPLE.com', boxes), { ok: true, addresses: ['bob@example.com'] });
});

test('an alias wins over a mailbox of the same name', () => {
  const table = buildAliasTable({ 'bob@example.com': ['carol@example.com'] });
  assert.deepEqual(expand(table, 'bob@example.com', boxes), { ok: true, addresses: ['carol@example.com'] });
});

test('the catch-all "@domain" takes addresses that are neither alias nor mailbox', () => {
  const table = buildAliasTable({
    '@example.com': ['admin@example.com'],
    'sales@example.com': ['carol@example.com'],
  });
  assert.deepEqual(expand(table, 'nobody@example.com', boxes), {
    ok: true,
    addresses: ['admin@example.com'],
  });
  assert.deepEqual(expand(table, 'sales@example.com', boxes), { ok: true, addresses: ['carol@example.com'] });
  assert.deepEqual(expand(table, 'alice@example.com', boxes), { ok: true, addresses: ['alice@example.com'] });
});

test('an unknown address without a catch-all comes back as itself (the caller decides)', () => {
  const table = buildAliasTable({ '@example.net': ['admin@example.com'] });
  assert.deepEqual(expand(table, 'Nobody@Example.COM', boxes), {
    ok: true,
    addresses: ['Nobody@example.com'],
  });
  assert.deepEqual(expand(table, 'someone@remote.org', boxes), {
    ok: true,
    addresses: ['someone@remote.org'],
  });
});

test('aliases expand recursively, through catch-alls too', () => {
  const table = buildAliasTable({
    'all@example.com': ['team@example.com', 'x@example.net'],
    'team@example.com': ['alice@example.com', 'bob@example.com'],
    '@example.net': ['carol@example.com'],
  });
  assert.deepEqual(expand(table, 'all@example.com', boxes), {
    ok: true,
    addresses: ['alice@example.com', 'bob@example.com', 'carol@example.com'],
  });
});

test('an alias that lists itself also delivers to that address, and is not a loop', () => {
  const table = buildAliasTable({ 'bob@example.com': ['Bob@Example.com', 'carol@example.com'] });
  assert.deepEqual(expand(table, 'bob@example.com', boxes), {
    ok: true,
    addresses: ['bob@example.com', 'carol@example.com'],
  });
  // The same one step down.
  const nested = buildAliasTable({
    'list@example.com': ['bob@example.com'],
    'bob@example.com': ['bob@example.com', 'x@remote.org'],
  });
  assert.deepEqual(expand(nested, 'list@example.com', boxes), {
    ok: true,
    addresses: ['bob@example.com', 'x@remote.org'],
  });
});

test('a real loop a -> b -> a is refused with the chain', () => {
  const table = buildAliasTable({
    'a@example.com': ['b@example.com'],
    'b@example.com': ['alice@example.com', 'A@example.com'],
  });
  assert.deepEqual(expand(table, 'a@example.com', boxes), {
    ok: false,
    reason: 'loop',
    chain: ['a@example.com', 'b@example.com', 'A@example.com'],
  });
});

test('a catch-all whose target is unknown comes back as that target, not a loop', () => {
  const table = buildAliasTable({ '@example.com': ['missing@example.com'] });
  assert.deepEqual(expand(table, 'nobody@example.com', boxes), {
    ok: true,
    addresses: ['missing@example.com'],
  });
});

test('a loop through a catch-all is refused', () => {
  const table = buildAliasTable({ '@example.com': ['x@example.net'], '@example.net': ['y@example.com'] });
  assert.deepEqual(expand(table, 'nobody@example.com', boxes), {
    ok: false,
    reason: 'loop',
    chain: ['nobody@example.com', 'x@example.net', 'y@example.com', 'x@example.net'],
  });
});

test('results are deduplicated: mailboxes case-insensitively, other addresses on the domain only', () => {
  const table = buildAliasTable({
    'l1@example.com': ['alice@example.com', 'Ext@Remote.org', 'l2@example.com'],
    'l2@example.com': ['ALICE@example.com', 'Ext@remote.ORG', 'ext@remote.org', 'alice@example.com'],
  });
  assert.deepEqual(expand(table, 'l1@example.com', boxes), {
    ok: true,
    addresses: ['alice@example.com', 'Ext@remote.org', 'ext@remote.org'],
  });
});

test('a shared sub-list (diamond) is expanded once and is not a loop', () => {
  const table = buildAliasTable({
    'top@example.com': ['left@example.com', 'right@example.com'],
    'left@example.com': ['shared@example.com'],
    'right@example.com': ['shared@example.com'],
    'shared@example.com': ['alice@example.com'],
  });
  assert.deepEqual(expand(table, 'top@example.com', boxes), { ok: true, addresses: ['alice@example.com'] });
});

test('depth limit: maxDepth alias steps are allowed, one more is reported as a loop', () => {
  // d0 -> d1 -> d2 -> d3 -> alice: four alias steps.
  const table = buildAliasTable({
    'd0@example.com': ['d1@example.com'],
    'd1@example.com': ['d2@example.com'],
    'd2@example.com': ['d3@example.com'],
    'd3@example.com': ['alice@example.com'],
  });
  assert.deepEqual(expand(table, 'd0@example.com', boxes, { maxDepth: 4 }), {
    ok: true,
    addresses: ['alice@example.com'],
  });
  assert.deepEqual(expand(table, 'd0@example.com', boxes, { maxDepth: 3 }), {
    ok: false,
    reason: 'loop',
    chain: ['d0@example.com', 'd1@example.com', 'd2@example.com', 'd3@example.com'],
  });
});

test('default depth limit is 10', () => {
  const record: Record<string, string[]> = {};
  for (let i = 0; i < 11; i++) record[`d${i}@example.com`] = [`d${i + 1}@example.com`];
  const table = buildAliasTable(record);
  // d0 .. d9: ten steps reach d10, whose own alias is the eleventh.
  const result = expand(table, 'd0@example.com', boxes);
  assert.equal(result.ok, false);
  assert.deepEqual(result.ok ? undefined : result.reason, 'loop');
  const ten = buildAliasTable(Object.fromEntries(Object.entries(record).slice(0, 10)));
  assert.deepEqual(expand(ten, 'd0@example.com', boxes), { ok: true, addresses: ['d10@example.com'] });
});

test('count limit: more distinct addresses than maxAddresses -> too-many with the count', () => {
  const targets = Array.from({ length: 5 }, (_, i) => `u${i}@remote.org`);
  const table = buildAliasTable({ 'list@example.com': targets });
  assert.deepEqual(expand(table, 'list@example.com', boxes, { maxAddresses: 5 }), {
    ok: true,
    addresses: targets,
  });
  assert.deepEqual(expand(table, 'list@example.com', boxes, { maxAddresses: 4 }), {
    ok: false,
    reason: 'too-many',
    count: 5,
  });
});

test('default count limit is 1000, counted after deduplication', () => {
  const many = Array.from({ length: 1001 }, (_, i) => `u${i}@remote.org`);
  const table = buildAliasTable({
    'big@example.com': many,
    // 999 remote + u0 again (domain case differs) + a mailbox twice (local case differs) = 1000 distinct.
    'ok@example.com': [...many.slice(0, 999), 'u0@REMOTE.org', 'alice@example.com', 'ALICE@example.com'],
  });
  assert.deepEqual(expand(table, 'big@example.com', boxes), { ok: false, reason: 'too-many', count: 1001 });
  const ok = expand(table, 'ok@example.com', boxes);
  assert.deepEqual(ok, { ok: true, addresses: [...many.slice(0, 999), 'alice@example.com'] });
});

test('expansion work stays bounded on a wide, deep table', () => {
  // 10 levels of 10 aliases each pointing at all 10 of the next level: 10^10 paths, 100 keys.
  const record: Record<string, string[]> = {};
  for (let level = 0; level < 10; level++) {
    for (let i = 0; i < 10; i++) {
      record[`l${level}n${i}@example.com`] = Array.from(
        { length: 10 },
        (_, j) => `l${level + 1}n${j}@example.com`,
      );
    }
  }
  const table = buildAliasTable(record);
  const started = process.hrtime.bigint();
  const result = expand(table, 'l0n0@example.com', boxes);
  const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
  assert.deepEqual(result, {
    ok: true,
    addresses: Array.from({ length: 10 }, (_, j) => `l10n${j}@example.com`),
  });
  assert.ok(elapsedMs < 1000, `took ${elapsedMs} ms`);
});

test('isKnownRecipient: mailbox, alias or catch-all', () => {
  const table = buildAliasTable({
    'info@example.com': ['alice@example.com'],
    '@example.net': ['bob@example.com'],
  });
  assert.equal(isKnownRecipient(table, 'alice@example.com', boxes), true);
  assert.equal(isKnownRecipient(table, 'INFO@EXAMPLE.COM', boxes), true);
  assert.equal(isKnownRecipient(table, 'anyone@Example.NET', boxes), true);
  assert.equal(isKnownRecipient(table, 'nobody@example.com', boxes), false);
  assert.equal(isKnownRecipient(table, 'someone@remote.org', boxes), false);
});

async function withFile(content: string, fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sterna-aliases-'));
  try {
    const file = path.join(dir, 'aliases.toml');
    await fsp.writeFile(file, content);
    await fn(file);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

test('loadAliasFile reads top-level "address" = [targets] entries', async () => {
  const toml = [
    '# aliases',
    '"info@example.com" = ["alice@example.com", "bob@example.org"]',
    '"@example.net" = ["admin@example.com"]',
    '',
  ].join('\n');
  await withFile(toml, async (file) => {
    const record = await loadAliasFile(file);
    assert.deepEqual(record, {
      'info@example.com': ['alice@example.com', 'bob@example.org'],
      '@example.net': ['admin@example.com'],
    });
    assert.deepEqual(expand(buildAliasTable(record), 'x@example.net', boxes), {
      ok: true,
      addresses: ['admin@example.com'],
    });
  });
});

test('loadAliasFile errors name the file and the key', async () => {
  const cases: [string, string, (file: string) => string][] = [
    ['"a@x" = "b@y"', 'ALIAS_TARGET_INVALID', (f) => `${f}: key "a@x": expected an array of addresses`],
    ['"a@x" = [1]', 'ALIAS_TARGET_INVALID', (f) => `${f}: key "a@x": expected an array of addresses`],
    [
      '[aliases]\n"a@x" = ["b@y"]',
      'ALIAS_TARGET_INVALID',
      (f) =>
        `${f}: key "aliases": expected an array of addresses (write the entries at the top level, without an [aliases] header)`,
    ],
    [
      '"a@x" = []',
      'ALIAS_TARGET_INVALID',
      (f) => `${f}: alias "a@x": no target addresses (remove the alias instead)`,
    ],
    [
      '"ax" = ["b@y"]',
      'ALIAS_KEY_INVALID',
      (f) => `${f}: alias "ax": expected "local@domain" or "@domain" (catch-all)`,
    ],
    [
      '"A@x" = ["b@y"]\n"a@X" = ["c@y"]',
      'ALIAS_KEY_DUPLICATE',
      (f) =>
        `${f}: aliases "A@x" and "a@X" are the same address (local parts are matched case-insensitively)`,
    ],
  ];
  for (const [toml, code, message] of cases) {
    await withFile(toml, async (file) => {
      await assert.rejects(loadAliasFile(file), (err: unknown) => {
        assert.ok(err instanceof AliasError);
        assert.deepEqual([err.code, err.message, err.file], [code, message(file), file]);
        return true;
      });
    });
  }
});

test('loadAliasFile: a TOML syntax error names the file and the position', async () => {
  await withFile('"a@x" = ["b@y"]\nbob@example.com = ["c@y"]\n', async (file) => {
    await assert.rejects(loadAliasFile(file), (err: unknown) => {
      assert.ok(err instanceof AliasError);
      assert.equal(err.code, 'ALIAS_FILE_SYNTAX');
      assert.ok(err.message.startsWith(`${file}: invalid TOML at line 2, column `), err.message);
      return true;
    });
  });
});

test('loadAliasFile: a missing file names the file', async () => {
  const file = path.join(os.tmpdir(), 'sterna-no-such-dir-xyz', 'aliases.toml');
  await assert.rejects(loadAliasFile(file), (err: unknown) => {
    assert.ok(err instanceof AliasError);
    assert.equal(err.code, 'ALIAS_FILE_UNREADABLE');
    assert.ok(err.message.startsWith(`${file}: cannot read the aliases file: ENOENT`), err.message);
    return true;
  });
});
