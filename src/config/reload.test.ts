import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseConfigText } from './load.js';
import { changedKeys, classifyChanges } from './reload.js';

test('changedKeys names each differing leaf by its dotted path', () => {
  assert.deepEqual(
    changedKeys({ a: 1, t: { x: [1], y: 'same' } }, { a: 2, t: { x: [1, 2], y: 'same', z: true } }),
    ['a', 't.x', 't.z'],
  );
  assert.deepEqual(changedKeys({ a: { b: 1 } }, { a: { b: 1 } }), []);
});

test('SIGHUP: the log level and aliases apply at once; anything else needs a restart', () => {
  const base = 'hostname = "mx.example.org"\ndata_dir = "/var/lib/sterna"\n';
  const running = parseConfigText(`${base}[log]\nlevel = "info"\n`, 'a.toml');
  const next = parseConfigText(
    `${base}[aliases]\n"info@example.org" = ["bob@example.org"]\n[log]\nlevel = "debug"\n[limits]\nmessage_bytes = 1000000\n`,
    'a.toml',
  );
  assert.deepEqual(classifyChanges(running, next), {
    applied: ['aliases.info@example.org', 'log.level'],
    needRestart: ['limits.message_bytes'],
  });
  assert.deepEqual(classifyChanges(running, running), { applied: [], needRestart: [] });
});
