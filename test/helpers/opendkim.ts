/**
 * A private opendkim in sign mode for the milter tests (Debian's opendkim + opendkim-tools): a
 * key made by opendkim-genkey in a temporary directory, a configuration of our own (Mode s, one
 * domain and selector, simple/simple canonicalization (the strictest: every stored octet of the signed fields and body counts), 127.0.0.1 as an internal host, so mail
 * from the test client is signed), listening as a milter on a free loopback port
 * (Socket inet:PORT@127.0.0.1), in the foreground, stopped by its pid. The DNS record the key
 * needs is returned as text, for a verifier given it directly (nothing asks a resolver).
 * Trust: test code only; binds 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './process.js';
import { runDaemon, type Daemon } from './filters.js';
import { describeRun, findTool, runTool } from './tools.js';

export interface OpenDkim extends Daemon {
  domain: string;
  selector: string;
  /** The TXT record of selector._domainkey.domain, as one string. */
  record: string;
}

export async function startOpenDkim(domain: string, selector: string): Promise<OpenDkim> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-opendkim-'));
  const gen = await runTool('opendkim-genkey', ['-D', dir, '-d', domain, '-s', selector, '-b', '2048']);
  assert.equal(gen.code, 0, describeRun(gen));
  const keyFile = path.join(dir, `${selector}.private`);
  await chmod(keyFile, 0o600);
  // test.txt: `test._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=..." "..." ) ; comment`
  const txt = await readFile(path.join(dir, `${selector}.txt`), 'utf8');
  const record = [...txt.matchAll(/"([^"]*)"/g)].map((m) => m[1] ?? '').join('');
  const port = await freePort();
  const conf = path.join(dir, 'opendkim.conf');
  await writeFile(
    conf,
    `# A private opendkim for Sterna's tests.
Syslog no
Background no
Mode s
Domain ${domain}
Selector ${selector}
KeyFile ${keyFile}
Canonicalization simple/simple
InternalHosts 127.0.0.1
RequireSafeKeys no
Socket inet:${port}@127.0.0.1
PidFile ${path.join(dir, 'opendkim.pid')}
`,
  );
  const daemon = await runDaemon({
    command: findTool('opendkim') ?? '/usr/sbin/opendkim',
    args: ['-f', '-x', conf],
    dir,
    port,
  });
  return { ...daemon, domain, selector, record };
}

/** Verifies every DKIM signature of message with python3's dkim module, the key record given. */
export async function verifyDkim(message: Buffer, name: string, record: string): Promise<boolean> {
  const script = `
import sys, dkim
msg = sys.stdin.buffer.read()
def dns(qname, timeout=5):
    return ${JSON.stringify(record)}.encode() if qname.decode().rstrip('.') == ${JSON.stringify(name)} else None
print('pass' if dkim.verify(msg, dnsfunc=dns) else 'fail')
`;
  const run = await runTool('python3', ['-c', script], { input: message });
  assert.equal(run.code, 0, describeRun(run));
  return run.stdout.trim() === 'pass';
}
