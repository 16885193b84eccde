import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  cramSecret,
  hashPassword,
  parseStoredHash,
  SCRYPT_DEFAULTS,
  verifyCram,
  verifyPassword,
} from './passwords.js';

test('hashPassword encodes scrypt, its parameters, a 16-byte salt and a 32-byte hash', async () => {
  const stored = await hashPassword('correct horse');
  const parts = stored.split('$');
  assert.equal(parts.length, 6);
  assert.deepEqual(parts.slice(0, 4), ['scrypt', '16384', '8', '1']);
  assert.equal(Buffer.from(parts[4]!, 'base64').length, 16);
  assert.equal(Buffer.from(parts[5]!, 'base64').length, 32);
  assert.equal(SCRYPT_DEFAULTS.N, 16384);
});

test('hashPassword salts: the same password hashes differently twice', async () => {
  assert.notEqual(await hashPassword('pw'), await hashPassword('pw'));
});

test('verifyPassword accepts the right password and refuses a wrong one', async () => {
  const stored = await hashPassword('correct horse');
  assert.equal(await verifyPassword('correct horse', stored), true);
  assert.equal(await verifyPassword('correct horsE', stored), false);
  assert.equal(await verifyPassword('', stored), false);
});

test('verifyPassword treats NFC and NFD forms of a password as the same', async () => {
  const stored = await hashPassword('caf\u00e9');
  assert.equal(await verifyPassword('cafe\u0301', stored), true);
});

test('verifyPassword honours the parameters stored in the string', async () => {
  // A cheaper hash made by hand (N = 1024) still verifies.
  const { scryptSync } = await import('node:crypto');
  const salt = Buffer.from('0123456789abcdef');
  const hash = scryptSync('pw', salt, 32, { N: 1024, r: 8, p: 1 });
  const stored = `scrypt$1024$8$1$${salt.toString('base64')}$${hash.toString('base64')}`;
  assert.equal(await verifyPassword('pw', stored), true);
  assert.equal(await verifyPassword('px', stored), false);
});

test('verifyPassword returns false, without throwing, for malformed stored strings', async () => {
  const good = await hashPassword('pw');
  const [, , , , salt, hash] = good.split('$') as [string, string, string, string, string, string];
  const malformed = [
    '',
    'pw',
    '$2b$10$abcdefghijklmnopqrstuu', // bcrypt: not ours
    `argon2$16384$8$1$${salt}$${hash}`,
    `scrypt$16384$8$1$${salt}`, // missing field
    `scrypt$16384$8$1$${salt}$${hash}$extra`,
    `scrypt$16385$8$1$${salt}$${hash}`, // N not a power of two
    `scrypt$1$8$1$${salt}$${hash}`, // N too small
    `scrypt$${2 ** 21}$8$1$${salt}$${hash}`, // N too large
    `scrypt$16384$0$1$${salt}$${hash}`,
    `scrypt$16384$64$1$${salt}$${hash}`, // r too large
    `scrypt$16384$8$x$${salt}$${hash}`,
    `scrypt$16384$8$1$$${hash}`, // empty salt
    `scrypt$16384$8$1$${salt}$not*base64`,
    `scrypt$16384$8$1$${salt}$AAAA`, // hash too short
    `scrypt$016384$8$1$${salt}$${hash}`,
  ];
  for (const stored of malformed) {
    assert.equal(await verifyPassword('pw', stored), false, stored);
    assert.equal(parseStoredHash(stored), null, stored);
  }
});

test('cramSecret stores the password reversibly, tagged "plain$"', () => {
  assert.equal(cramSecret('tanstaaftanstaaf'), 'plain$dGFuc3RhYWZ0YW5zdGFhZg==');
});

test('RFC 2195 2: verifyCram accepts the example digest from the RFC', () => {
  const secret = cramSecret('tanstaaftanstaaf');
  const challenge = '<1896.697170952@postoffice.reston.mci.net>';
  assert.equal(verifyCram(secret, challenge, 'b913a602c7eda7a495b4e6e7334d3890'), true);
});

test('RFC 2195 2: verifyCram refuses a wrong digest, another challenge, or a wrong key', () => {
  const challenge = '<1896.697170952@postoffice.reston.mci.net>';
  const digest = 'b913a602c7eda7a495b4e6e7334d3890';
  assert.equal(
    verifyCram(cramSecret('tanstaaftanstaaf'), challenge, 'b913a602c7eda7a495b4e6e7334d3891'),
    false,
  );
  assert.equal(verifyCram(cramSecret('tanstaaftanstaaf'), '<1897.697170952@x>', digest), false);
  assert.equal(verifyCram(cramSecret('tanstaaftanstaaF'), challenge, digest), false);
});

test('verifyCram returns false for a malformed secret or digest', () => {
  const challenge = '<1896.697170952@postoffice.reston.mci.net>';
  const digest = 'b913a602c7eda7a495b4e6e7334d3890';
  for (const secret of ['', 'dGFuc3RhYWZ0YW5zdGFhZg==', 'plain$', 'plain$not base64', 'scrypt$1$2$3$4$5']) {
    assert.equal(verifyCram(secret, challenge, digest), false, secret);
  }
  const secret = cramSecret('tanstaaftanstaaf');
  for (const bad of ['', digest.toUpperCase(), digest.slice(1), `${digest}00`, 'z'.repeat(32)]) {
    assert.equal(verifyCram(secret, challenge, bad), false, bad);
  }
});
