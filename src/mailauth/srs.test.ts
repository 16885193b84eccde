/** The Sender Rewriting Scheme (srs.ts): SRS0 and SRS1 addresses, their hash, age and reversal. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Srs } from './srs.js';

const DAY = 86_400_000;
const SECRET = Buffer.from('a secret of the test, long enough');

function srs(now: number, secrets: Buffer[] = [SECRET]): Srs {
  return new Srs({ domain: 'Fwd.Example', secrets, maxAgeDays: 21, now: () => now });
}

const T0 = Date.UTC(2026, 11, 5, 10, 0, 0);

test('an outside sender becomes SRS0=HHHHHH=TT=domain=local at the SRS domain, and back', () => {
  const s = srs(T0);
  const out = s.forward('Alice.Smith@Orig.Example');
  assert.match(out, /^SRS0=[A-Z2-7]{6}=[A-Z2-7]{2}=Orig\.Example=Alice\.Smith@fwd\.example$/);
  assert.deepEqual(s.reverse(out), { ok: true, address: 'Alice.Smith@Orig.Example' });
  // A relay may change the case of the whole address on the way back.
  assert.deepEqual(s.reverse(out.toLowerCase()), { ok: true, address: 'alice.smith@orig.example' });
  assert.deepEqual(s.reverse(out.toUpperCase()), { ok: true, address: 'ALICE.SMITH@ORIG.EXAMPLE' });
});

test('a local part holding the separator survives', () => {
  const s = srs(T0);
  const out = s.forward('a=b=c@orig.example');
  assert.deepEqual(s.reverse(out), { ok: true, address: 'a=b=c@orig.example' });
});

test('a forged hash, a changed part, a malformed address: refused', () => {
  const s = srs(T0);
  const out = s.forward('alice@orig.example');
  const hash = out.split('=')[1] ?? '';
  const forged = out.replace(`=${hash}=`, `=${hash === 'AAAAAA' ? 'BBBBBB' : 'AAAAAA'}=`);
  assert.deepEqual(s.reverse(forged), { ok: false, reason: 'bad-hash' });
  assert.deepEqual(s.reverse(out.replace('=alice@', '=mallory@')), { ok: false, reason: 'bad-hash' });
  assert.deepEqual(s.reverse(out.replace('orig.example', 'evil.example')), { ok: false, reason: 'bad-hash' });
  assert.deepEqual(s.reverse('SRS0=XXXXXX@fwd.example'), { ok: false, reason: 'malformed' });
  assert.deepEqual(s.reverse('SRS0=AAAAAA=!!=d.example=x@fwd.example'), { ok: false, reason: 'malformed' });
  // Another secret made it.
  const other = new Srs({
    domain: 'fwd.example',
    secrets: [Buffer.from('another secret, quite different')],
    maxAgeDays: 21,
    now: () => T0,
  });
  assert.deepEqual(s.reverse(other.forward('alice@orig.example')), { ok: false, reason: 'bad-hash' });
});

test('not ours: another domain, or no SRS prefix', () => {
  const s = srs(T0);
  const out = s.forward('alice@orig.example');
  assert.deepEqual(s.reverse(out.replace('@fwd.example', '@other.example')), {
    ok: false,
    reason: 'not-srs',
  });
  assert.deepEqual(s.reverse('bob@fwd.example'), { ok: false, reason: 'not-srs' });
  assert.equal(s.isSrsAddress('srs0=x@FWD.example'), true);
});

test('an address is valid for max_age_days days, then expired; the age may be skipped', () => {
  const out = srs(T0).forward('alice@orig.example');
  assert.equal(srs(T0 + 21 * DAY).reverse(out).ok, true);
  assert.deepEqual(srs(T0 + 22 * DAY).reverse(out), { ok: false, reason: 'expired' });
  assert.equal(srs(T0 + 22 * DAY).reverse(out, { checkAge: false }).ok, true);
  // The day counter wraps at 1024 days: still compared modulo.
  const late = srs(T0 + 1020 * DAY).forward('alice@orig.example');
  assert.equal(srs(T0 + 1030 * DAY).reverse(late).ok, true);
});

test("another forwarder's SRS0 address becomes SRS1; a bounce to it goes back to that forwarder", () => {
  const s = srs(T0);
  const srs0 = 'SRS0=abcd=TT=orig.example=alice@first.example';
  const srs1 = s.forward(srs0);
  assert.match(srs1, /^SRS1=[A-Z2-7]{6}=first\.example==abcd=TT=orig\.example=alice@fwd\.example$/);
  assert.deepEqual(s.reverse(srs1), { ok: true, address: srs0 });
  // Re-forwarding an SRS1 address keeps the first hop and its opaque part; only the hash is ours.
  const again = s.forward('SRS1=zzzz=first.example==abcd=TT=orig.example=alice@second.example');
  assert.match(again, /^SRS1=[A-Z2-7]{6}=first\.example==abcd=TT=orig\.example=alice@fwd\.example$/);
  assert.deepEqual(s.reverse(again), { ok: true, address: srs0 });
  // An SRS1 address whose hash is not ours.
  assert.deepEqual(s.reverse(srs1.replace(/^SRS1=[A-Z2-7]{6}/, 'SRS1=AAAAAA')).ok, false);
});

test('rotation: the first secret makes addresses, every secret is accepted', () => {
  const old = Buffer.from('the old secret, still accepted ok');
  const made = srs(T0, [old]).forward('alice@orig.example');
  const rotated = srs(T0, [SECRET, old]);
  assert.equal(rotated.reverse(made).ok, true);
  assert.equal(srs(T0, [SECRET]).reverse(made).ok, false);
  assert.notEqual(rotated.forward('alice@orig.example'), made);
});
