/** What ARC set a forwarded copy gets (arc-seal.ts plan): instance, cv, the AAR, the key, or none. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ArcSealer, type SealPlan } from './arc-seal.js';
import { generateKeyPairSync } from 'node:crypto';
import type { DkimKey, DkimKeyStore } from './dkim-keys.js';

const { privateKey } = generateKeyPairSync('ed25519');

function key(domain: string, algorithm: 'rsa' | 'ed25519' = 'rsa'): DkimKey {
  return {
    domain,
    selector: 's1',
    algorithm,
    state: 'active',
    file: '',
    configKey: '',
    privateKey,
    pem: '',
    record: '',
  };
}

/** A key store answering keysFor() from a table (only what the sealer asks). */
function store(keys: Record<string, DkimKey[]>): Pick<DkimKeyStore, 'keysFor'> {
  return { keysFor: (d) => keys[d] ?? [] };
}

const sealer = new ArcSealer({
  keys: store({
    'example.org': [key('example.org', 'ed25519'), key('example.org')],
    'mx.example.net': [key('mx.example.net')],
  }),
  hostname: 'mx.example.net',
  authservId: 'mx.example.net',
});

const AR = 'Authentication-Results: mx.example.net;\r\n spf=pass smtp.mailfrom=a@b.example;\r\n arc=ARC\r\n';

function header(arc: string, sets: string[] = []): Buffer {
  return Buffer.from(
    `${AR.replace('ARC', arc)}${sets.join('')}Received: x\r\nFrom: a@b.example\r\n\r\nbody\r\n`,
  );
}

function set(i: number, cv: string): string {
  return `ARC-Seal: i=${i}; a=rsa-sha256; cv=${cv}; d=x.example; s=s; b=AAAA\r\nARC-Message-Signature: i=${i}; a=rsa-sha256; d=x.example; s=s; h=from; bh=x; b=y\r\nARC-Authentication-Results: i=${i}; x.example; spf=pass\r\n`;
}

/** Why no set is added ('' when one is). */
function skipped(p: SealPlan): string {
  return p.kind === 'skip' ? p.reason : '';
}

function sealed(p: SealPlan): { i: number; cv: string; d: string } | string {
  return p.kind === 'seal' ? { i: p.instance, cv: p.cv, d: p.key.domain } : p.reason;
}

test('first hop: i=1 cv=none, the AAR is our field, the RSA key of the alias domain', () => {
  const p = sealer.plan(header('none'), 'example.org');
  assert.deepEqual(sealed(p), { i: 1, cv: 'none', d: 'example.org' });
  assert.equal(
    p.kind === 'seal' ? p.authResults : '',
    'mx.example.net;\r\n spf=pass smtp.mailfrom=a@b.example;\r\n arc=none',
  );
});

test('an incoming chain: i=N+1, cv=pass when our check passed it, fail otherwise', () => {
  assert.deepEqual(
    sealed(sealer.plan(header('pass (i=2)', [set(2, 'pass'), set(1, 'none')]), 'example.org')),
    {
      i: 3,
      cv: 'pass',
      d: 'example.org',
    },
  );
  assert.deepEqual(sealed(sealer.plan(header('fail (bad)', [set(1, 'none')]), 'example.org')), {
    i: 2,
    cv: 'fail',
    d: 'example.org',
  });
  // A chain we did not verify (arc=none beside ARC fields) is not vouched for.
  assert.deepEqual(sealed(sealer.plan(header('none', [set(1, 'none')]), 'example.org')), {
    i: 2,
    cv: 'fail',
    d: 'example.org',
  });
});

test('no set: a chain already failed, 50 sets, no field of ours, no RSA key, a header too large', () => {
  assert.match(
    skipped(sealer.plan(header('fail', [set(2, 'fail'), set(1, 'none')]), 'example.org')),
    /cv=fail/,
  );
  const fifty = Array.from({ length: 50 }, (_, k) => set(50 - k, k === 49 ? 'none' : 'pass'));
  assert.match(skipped(sealer.plan(header('pass (i=50)', fifty), 'example.org')), /at most 50/);
  const foreign = Buffer.from('Authentication-Results: other.example; spf=pass\r\nFrom: a@b.example\r\n\r\n');
  assert.match(skipped(sealer.plan(foreign, 'example.org')), /no Authentication-Results field of ours/);
  const none = new ArcSealer({
    keys: store({ 'x.example': [key('x.example', 'ed25519')] }),
    hostname: 'mx.x.example',
    authservId: 'mx.example.net',
  });
  assert.match(skipped(none.plan(header('none'), 'x.example')), /no active RSA key/);
  assert.match(skipped(sealer.plan(null, 'example.org')), /too large/);
});

test('another domain without a key: the hostname seals', () => {
  assert.deepEqual(sealed(sealer.plan(header('none'), 'other.example')), {
    i: 1,
    cv: 'none',
    d: 'mx.example.net',
  });
});
