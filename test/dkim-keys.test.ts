/**
 * DKIM keys as an operator handles them, through the real `sterna` command: `dkim keygen`
 * writes a 0600 key and prints the record; `dkim show` checks every configured key against the
 * test DNS server (published and matching, missing, a different key); a key file that is
 * missing, open to others or not a key stops `check-config` with exit 2, naming the key.
 */
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { recordValue } from '../src/mailauth/dkim-keys.js';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server.js';
import { STERNA_CLI } from './helpers/process.js';
import { describeRun, makeTempDir, runTool, type ToolRun } from './helpers/tools.js';

let dns: TestDnsServer;
let tmp: { dir: string; cleanup(): Promise<void> };

before(async () => {
  dns = await startDnsServer({});
  tmp = await makeTempDir('sterna-dkim-keys-');
});

after(async () => {
  await dns.close();
  await tmp.cleanup();
});

/** A configuration file in its own data directory, with these [[dkim.keys]] tables. */
async function configFile(name: string, keys: string): Promise<{ file: string; dataDir: string }> {
  const dataDir = path.join(tmp.dir, name);
  const file = path.join(tmp.dir, `${name}.toml`);
  await writeFile(
    file,
    `hostname = "mx.sterna.test"\ndata_dir = ${JSON.stringify(dataDir)}\n[dns]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout_ms = 1000\ntries = 1\n${keys}`,
  );
  return { file, dataDir };
}

function sterna(args: string[]): Promise<ToolRun> {
  return runTool(process.execPath, [STERNA_CLI, ...args], { env: { STERNA_CONFIG: '' } });
}

function keyTable(domain: string, selector: string, algorithm: string, state = 'active'): string {
  return `[[dkim.keys]]\ndomain = "${domain}"\nselector = "${selector}"\nalgorithm = "${algorithm}"\nstate = "${state}"\n`;
}

/** The record value in keygen's output: the quoted strings of the TXT line, joined. */
function printedRecord(stdout: string): { name: string; value: string; strings: string[] } {
  const m = /^(\S+) IN TXT (?:\( )?((?:"[^"]*"\s*)+)\)?$/m.exec(stdout);
  assert.ok(m !== null, stdout);
  const strings = [...(m[2] ?? '').matchAll(/"([^"]*)"/g)].map((x) => x[1] ?? '');
  return { name: m[1] ?? '', value: strings.join(''), strings };
}

test('keygen writes a 0600 RSA key and prints its record in 255-octet strings; the key matches the record', async () => {
  const { file, dataDir } = await configFile('keygen-rsa', '');
  const run = await sterna(['dkim', 'keygen', 'example.org', '--selector', 's1', '--config', file]);
  assert.equal(run.code, 0, describeRun(run));
  const keyFile = path.join(dataDir, 'dkim', 'example.org.s1.key');
  assert.ok(run.stdout.includes(`to ${keyFile} (mode 0600)`), run.stdout);
  assert.equal((await stat(keyFile)).mode & 0o777, 0o600);
  assert.equal((await stat(path.dirname(keyFile))).mode & 0o777, 0o700);
  const key = createPrivateKey(await readFile(keyFile));
  assert.equal(key.asymmetricKeyType, 'rsa');
  assert.equal(key.asymmetricKeyDetails?.modulusLength, 2048);
  const printed = printedRecord(run.stdout);
  assert.equal(printed.name, 's1._domainkey.example.org.');
  assert.equal(printed.value, recordValue(createPublicKey(key), 'rsa'));
  assert.ok(printed.strings.length >= 2, 'a 2048-bit key needs two strings');
  assert.ok(printed.strings.every((s) => s.length <= 255));
  assert.ok(
    run.stdout.includes(
      '[[dkim.keys]]\ndomain = "example.org"\nselector = "s1"\nalgorithm = "rsa"\nstate = "publish"',
    ),
    run.stdout,
  );

  // Never over an existing key.
  const again = await sterna(['dkim', 'keygen', 'example.org', '--selector', 's1', '--config', file]);
  assert.equal(again.code, 1, describeRun(again));
  assert.ok(again.stderr.includes('already exists'), again.stderr);
});

test('keygen --algorithm ed25519 prints the raw 32-octet key (RFC 8463); bad arguments exit 2', async () => {
  const { file, dataDir } = await configFile('keygen-ed', '');
  const run = await sterna(['dkim', 'keygen', 'example.org', '--algorithm', 'ed25519', '--config', file]);
  assert.equal(run.code, 0, describeRun(run));
  const printed = printedRecord(run.stdout);
  assert.match(printed.name, /^e\d{6}\._domainkey\.example\.org\.$/);
  assert.match(printed.value, /^v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=$/);
  const selector = printed.name.split('.')[0] ?? '';
  const key = createPrivateKey(await readFile(path.join(dataDir, 'dkim', `example.org.${selector}.key`)));
  assert.equal(printed.value, recordValue(createPublicKey(key), 'ed25519'));

  const bad = await sterna(['dkim', 'keygen', 'example.org', '--algorithm', 'dsa', '--config', file]);
  assert.equal(bad.code, 2, describeRun(bad));
  assert.ok(bad.stderr.includes('--algorithm must be "rsa" or "ed25519"'), bad.stderr);
  const none = await sterna(['dkim', 'keygen', '--config', file]);
  assert.equal(none.code, 2, describeRun(none));
});

test('show checks every key against the DNS: published and matching, missing, a different key', async () => {
  const keys =
    keyTable('match.test', 'rsa1', 'rsa') +
    keyTable('match.test', 'ed1', 'ed25519') +
    keyTable('missing.test', 's1', 'rsa', 'publish') +
    keyTable('other.test', 's1', 'rsa') +
    keyTable('old.test', 's0', 'rsa', 'retired');
  const { file } = await configFile('show', keys);
  const records = new Map<string, string>();
  for (const [domain, selector, algorithm] of [
    ['match.test', 'rsa1', 'rsa'],
    ['match.test', 'ed1', 'ed25519'],
    ['missing.test', 's1', 'rsa'],
    ['other.test', 's1', 'rsa'],
    ['other.test', 'spare', 'rsa'],
    ['old.test', 's0', 'rsa'],
  ] as const) {
    const run = await sterna([
      'dkim',
      'keygen',
      domain,
      '--selector',
      selector,
      '--algorithm',
      algorithm,
      '--config',
      file,
    ]);
    assert.equal(run.code, 0, describeRun(run));
    records.set(`${selector}._domainkey.${domain}`, printedRecord(run.stdout).value);
  }
  const published = (name: string): string[] => {
    const v = records.get(name) ?? '';
    return [v.slice(0, 200), v.slice(200)]; // split oddly: receivers join the strings
  };
  dns.setZone({
    'rsa1._domainkey.match.test': { TXT: [published('rsa1._domainkey.match.test')] },
    'ed1._domainkey.match.test': { TXT: [[records.get('ed1._domainkey.match.test') ?? '']] },
    // other.test publishes the key of another selector under s1.
    's1._domainkey.other.test': { TXT: [published('spare._domainkey.other.test')] },
  });
  const run = await sterna(['dkim', 'show', '--config', file]);
  assert.equal(run.code, 1, describeRun(run));
  const block = (domain: string, selector: string): string => {
    const at = run.stdout.indexOf(`${domain}  selector ${selector}`);
    assert.ok(at >= 0, run.stdout);
    const end = run.stdout.indexOf('\n\n', at);
    return run.stdout.slice(at, end);
  };
  assert.match(
    block('match.test', 'rsa1'),
    /rsa-sha256 {2}active\n[^]*DNS: {6}ok: the published record matches this key$/,
  );
  assert.match(
    block('match.test', 'ed1'),
    /ed25519-sha256 {2}active[^]*DNS: {6}ok: the published record matches this key$/,
  );
  assert.ok(
    block('missing.test', 's1').endsWith(
      'DNS:      MISSING: there is no TXT record at s1._domainkey.missing.test; publish the record above',
    ),
    run.stdout,
  );
  assert.ok(
    block('other.test', 's1').endsWith(
      'DNS:      DIFFERENT: the record at s1._domainkey.other.test holds another public key than the key file: publish the record above in its place (or check key_file)',
    ),
    run.stdout,
  );
  assert.ok(
    block('old.test', 's0').endsWith(
      'no record at s0._domainkey.old.test (the key is retired: nothing to do)',
    ),
  );
  assert.ok(
    run.stdout.endsWith(
      '2 keys must be published or corrected before receivers can verify their signatures.\n',
    ),
  );
  // The record show prints is the one keygen printed.
  assert.ok(
    block('missing.test', 's1').includes(
      `"${(records.get('s1._domainkey.missing.test') ?? '').slice(0, 255)}"`,
    ),
  );

  // Everything published: exit 0.
  dns.setZone({
    'rsa1._domainkey.match.test': { TXT: [published('rsa1._domainkey.match.test')] },
    'ed1._domainkey.match.test': { TXT: [[records.get('ed1._domainkey.match.test') ?? '']] },
    's1._domainkey.missing.test': { TXT: [published('s1._domainkey.missing.test')] },
    's1._domainkey.other.test': { TXT: [published('s1._domainkey.other.test')] },
  });
  const ok = await sterna(['dkim', 'show', '--config', file]);
  assert.equal(ok.code, 0, describeRun(ok));
  assert.ok(ok.stdout.endsWith('Every active and "publish" key is published as configured.\n'), ok.stdout);
});

test('a key file missing, open to others, or not a key is a configuration error naming the key: exit 2', async () => {
  const { file, dataDir } = await configFile('bad', keyTable('bad.test', 's1', 'rsa'));
  const keyFile = path.join(dataDir, 'dkim', 'bad.test.s1.key');
  const missing = await sterna(['check-config', '--config', file]);
  assert.equal(missing.code, 2, describeRun(missing));
  assert.ok(
    missing.stderr.includes(
      `dkim.keys[0] (bad.test, selector s1): the key file ${keyFile} does not exist; create it with "sterna dkim keygen" or set key_file`,
    ),
    missing.stderr,
  );
  const gen = await sterna(['dkim', 'keygen', 'bad.test', '--selector', 's1', '--config', file]);
  assert.equal(gen.code, 0, describeRun(gen));
  const good = await sterna(['check-config', '--config', file]);
  assert.equal(good.code, 0, describeRun(good));

  await chmod(keyFile, 0o644);
  const open = await sterna(['check-config', '--config', file]);
  assert.equal(open.code, 2, describeRun(open));
  assert.ok(
    open.stderr.includes(
      `dkim.keys[0] (bad.test, selector s1): the key file ${keyFile} has mode 0644, open to other users; a private key must be mode 0600 (chmod 600 ${keyFile})`,
    ),
    open.stderr,
  );
  // serve refuses to start the same way.
  const serve = await sterna(['serve', '--config', file]);
  assert.equal(serve.code, 2, describeRun(serve));
  assert.ok(serve.stderr.includes('has mode 0644'), serve.stderr);

  await chmod(keyFile, 0o600);
  await writeFile(keyFile, 'not a key\n');
  const garbage = await sterna(['check-config', '--config', file]);
  assert.equal(garbage.code, 2, describeRun(garbage));
  assert.ok(
    garbage.stderr.includes(
      `dkim.keys[0] (bad.test, selector s1): the key file ${keyFile} does not hold a private key in PEM form`,
    ),
    garbage.stderr,
  );
});

test('two active keys of one algorithm in a domain, or one selector twice, are configuration errors', async () => {
  const { file } = await configFile(
    'dup',
    keyTable('dup.test', 'a', 'rsa') +
      keyTable('dup.test', 'b', 'rsa') +
      keyTable('dup.test', 'a', 'ed25519'),
  );
  for (const s of ['a', 'b']) {
    const gen = await sterna(['dkim', 'keygen', 'dup.test', '--selector', s, '--config', file]);
    assert.equal(gen.code, 0, describeRun(gen));
  }
  const run = await sterna(['check-config', '--config', file]);
  assert.equal(run.code, 2, describeRun(run));
  assert.ok(
    run.stderr.includes(
      'dkim.keys[1].state: dkim.keys[0] is already the active rsa key of dup.test; a domain signs with one key per algorithm (set the old one to "retired")',
    ),
    run.stderr,
  );
  assert.ok(
    run.stderr.includes(
      'dkim.keys[2].selector: dkim.keys[0] already uses selector "a" for dup.test; each key needs its own selector',
    ),
    run.stderr,
  );
});
