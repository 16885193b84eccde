/**
 * Interop with Debian's Postfix on loopback, both ways (RFC 5321): Sterna delivers into a private
 * Postfix through a bracketed relay in its transport table (Postfix keeps the mail in a virtual
 * Maildir), and Postfix relays to Sterna through its relayhost (Sterna keeps it in its Maildir).
 * The message arrives byte for byte after the trace headers each hop adds; Postfix stores a
 * mailbox file with LF line ends, so that side is compared with CRLF turned into LF.
 * Skipped loudly without Postfix or root; fails under CI=true.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { benchPostfixConfig } from '../bench/postfix.js';
import { pollUntil } from './helpers/interop.js';
import { sendMessage } from './helpers/outbound.js';
import {
  freePort,
  interopPostfixConfig,
  requirePostfix,
  startPostfix,
  type PostfixInstance,
} from './helpers/postfix.js';
import { postfixMainCf, postfixMasterCf, type PostfixConfig } from './helpers/postfix-config.js';
import { waitForMessages } from './helpers/maildir.js';
import { makeTempDir } from './helpers/tools.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const need = requirePostfix();

let pf: PostfixInstance | undefined;
let server: TestServer | undefined;

before(async () => {
  if (need.skip !== false) return;
  const pfPort = await freePort();
  server = await startTestServer({
    users: [{ address: 'dora@sterna.test', password: 'pw-dora-1' }],
    toml: `[relay]
trusted_networks = ["127.0.0.1/32"]
[outbound]
connect_timeout_ms = 5000
greeting_timeout_ms = 10000
command_timeout_ms = 10000
data_end_timeout_ms = 10000
[queue]
first_retry_ms = 1000
jitter = 0
[transport]
"pf.test" = { relay = "[127.0.0.1]:${pfPort}" }
`,
  });
  pf = await startPostfix({
    virtualDomain: 'pf.test',
    mailboxes: ['bob'],
    relayhost: `[127.0.0.1]:${server.ports.smtp}`,
    port: pfPort,
  });
});

after(async () => {
  await server?.stop({ remove: true });
  await pf?.stop();
});

/** A message with every header Postfix would otherwise add, a dot-stuffed line and 8-bit-free text. */
function message(to: string, tag: string): string {
  return [
    'From: Alice <alice@sterna.test>',
    `To: <${to}>`,
    `Subject: interop ${tag}`,
    'Date: Sun, 29 Nov 2026 12:00:00 +0000',
    `Message-ID: <${tag}.interop@sterna.test>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `Hello across the ${tag} hop.`,
    '.a line that starts with a dot',
    '..two dots',
    'trailing spaces   ',
    '\tleading tab',
    '',
    'last line',
    '',
  ].join('\r\n');
}

/** Sends one message from alice@sterna.test to 127.0.0.1:port (250 2.0.0 expected); returns the queue id. */
function sendTo(port: number, to: string, body: string): Promise<string> {
  return sendMessage(port, { from: 'alice@sterna.test', to: [to], body });
}

/**
 * What the hops added before the message: asserts that the delivered file, read as latin1 text,
 * ends with `expected` byte for byte, and returns the text before it.
 */
function addedBefore(delivered: Buffer | undefined, expected: string): string {
  const text = delivered?.toString('latin1') ?? '';
  assert.ok(text.endsWith(expected), `byte for byte after the trace headers:\n${text}`);
  return text.slice(0, text.length - expected.length);
}

/** Only trace and delivery headers before the message: Return-Path, Received, Delivered-To. */
const TRACE_ONLY = /^(?:(?:Return-Path|Received|Delivered-To|X-Original-To):[^\n]*\n(?:[ \t][^\n]*\n)*)*$/;

test(
  'interop: Sterna delivers into Postfix through a bracketed relay; the body arrives byte for byte',
  { skip: need.skip },
  async () => {
    assert.ok(server !== undefined && pf !== undefined);
    const body = message('bob@pf.test', 'sterna-to-postfix');
    await sendTo(server.ports.smtp, 'bob@pf.test', body);
    const postfix = pf; // a const keeps the narrowing inside the closure below
    const got = await pollUntil(
      () => postfix.maildir('bob'),
      (files) => files.length > 0,
      20_000,
    );
    assert.equal(got.length, 1, `Postfix's Maildir got the message; maillog:\n${await pf.log()}`);
    // Postfix writes mailbox files with LF line ends.
    const added = addedBefore(got[0], body.replace(/\r\n/g, '\n'));
    assert.match(added, TRACE_ONLY);
    assert.match(added, /^Delivered-To: bob@pf\.test\n/m);
    assert.match(added, /by pf-mx\.pf\.test \(Postfix\)/);
    assert.match(added, /by mx\.sterna\.test/);
  },
);

test(
  'interop: Postfix relays to Sterna through its relayhost; the body arrives byte for byte',
  { skip: need.skip },
  async () => {
    assert.ok(server !== undefined && pf !== undefined);
    const body = message('dora@sterna.test', 'postfix-to-sterna');
    await sendTo(pf.port, 'dora@sterna.test', body);
    await pf.flush();
    const got = await waitForMessages(server.dataDir, 'sterna.test', 'dora', 1, 20_000);
    assert.equal(got.length, 1, `Sterna's Maildir got the message; Postfix maillog:\n${await pf.log()}`);
    const added = addedBefore(got[0], body).replace(/\r\n/g, '\n');
    assert.match(added, TRACE_ONLY);
    assert.match(added, /by pf-mx\.pf\.test \(Postfix\)/);
    assert.match(added, /from pf-mx\.pf\.test/);
  },
);

/** `postconf -c DIR ARGS`: exit code and output. */
function postconf(
  configDir: string,
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('/usr/sbin/postconf', ['-c', configDir, ...args], { timeout: 20_000 }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr }),
    );
  });
}

test(
  'the one Postfix config writer: the interop and both benchmark configs are read by postconf without a warning',
  { skip: need.skip },
  async () => {
    const tmp = await makeTempDir('sterna-postfix-config-');
    try {
      const configs: [string, PostfixConfig, string[]][] = [
        [
          'interop',
          interopPostfixConfig(
            path.join(tmp.dir, 'interop'),
            { virtualDomain: 'pf.test', mailboxes: ['bob'], relayhost: '[127.0.0.1]:2525', port: 2526 },
            { uid: 100, gid: 100 },
          ),
          ['relayhost = [127.0.0.1]:2525', 'virtual_mailbox_domains = pf.test', 'myhostname = pf-mx.pf.test'],
        ],
        [
          'bench',
          benchPostfixConfig(path.join(tmp.dir, 'bench'), 2527, undefined),
          [
            'default_transport = discard',
            'relay_transport = discard',
            'relay_domains = bench.test, sink.test',
          ],
        ],
        [
          'bench outbound',
          benchPostfixConfig(path.join(tmp.dir, 'outbound'), 2528, '[127.0.0.2]:2529'),
          ['default_transport = smtp', 'relayhost = [127.0.0.2]:2529', 'smtp_tls_security_level = none'],
        ],
      ];
      for (const [name, config, want] of configs) {
        const conf = path.join(config.dir, 'conf');
        await mkdir(conf, { recursive: true });
        await writeFile(path.join(conf, 'main.cf'), postfixMainCf(config));
        await writeFile(path.join(conf, 'master.cf'), postfixMasterCf(config.port));
        const main = await postconf(conf, ['-n']);
        assert.equal(main.code, 0, `${name}: ${main.stderr}`);
        assert.equal(main.stderr, '', `${name}: postconf warns`);
        const lines = main.stdout.split('\n');
        for (const w of [...want, `config_directory = ${conf}`, 'inet_interfaces = 127.0.0.1'])
          assert.ok(lines.includes(w), `${name}: no "${w}" in\n${main.stdout}`);
        const master = await postconf(conf, ['-M']);
        assert.equal(master.code, 0, `${name}: ${master.stderr}`);
        assert.equal(master.stderr, '', `${name}: postconf -M warns`);
        assert.match(
          master.stdout,
          new RegExp(`^127\\.0\\.0\\.1:${config.port} +inet +n +- +n +- +- +smtpd$`, 'm'),
        );
      }
    } finally {
      await tmp.cleanup();
    }
  },
);
