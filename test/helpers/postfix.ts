/**
 * A private Postfix instance for interop tests, adapted from bench/postfix.ts: its own
 * config_directory, queue_directory and data_directory in a temp directory, smtpd on one
 * 127.0.0.1 port, no chroot, the maillog in the temp directory. The system instance and
 * /etc/postfix are never touched. Mail for the test's virtual domain lands in Maildirs under
 * the temp directory (virtual(8), owned by the postfix user); everything else goes out by smtp(8)
 * to the relayhost given.
 *
 * Needs Debian's postfix and root (master starts as root). When either is missing the test is
 * skipped loudly, or fails under CI=true (.ci/run installs postfix and runs as root).
 * Trust: test code only; runs Postfix's programs with arguments it builds, never via a shell.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort } from './process.js';

const POSTFIX = '/usr/sbin/postfix';
const POSTQUEUE = '/usr/sbin/postqueue';

/** A skip reason for node:test, or false; throws under CI=true when Postfix cannot run. */
export function requirePostfix(): { skip: string | false } {
  let reason: string | undefined;
  try {
    accessSync(POSTFIX, constants.X_OK);
    accessSync('/usr/lib/postfix/sbin/master', constants.X_OK);
  } catch {
    reason = 'postfix not installed (apt-get install postfix)';
  }
  if (reason === undefined && process.getuid?.() !== 0)
    reason = 'Postfix interop needs root (its master starts as root)';
  if (reason === undefined) return { skip: false };
  if (process.env['CI'] === 'true')
    throw new Error(`interop test cannot run: ${reason}; .ci/run must provide it`);
  process.stderr.write(`\n*** interop test skipped: ${reason} ***\n\n`);
  return { skip: reason };
}

/** Daemons the instance needs; "n" in the chroot column for every one of them. */
const MASTER_SERVICES = `
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`;

export interface PostfixOptions {
  /** The domain whose mailboxes Postfix keeps (virtual_mailbox_domains). */
  virtualDomain: string;
  /** Local parts of its mailboxes. */
  mailboxes: string[];
  /** Where everything else goes: "[127.0.0.1]:2525". */
  relayhost: string;
  /** smtpd's port; default a free one. */
  port?: number;
}

export interface PostfixInstance {
  dir: string;
  port: number;
  hostname: string;
  /** The messages in a virtual mailbox's Maildir/new, oldest name first. */
  maildir(local: string): Promise<Buffer[]>;
  /** postqueue -f: try every queued message now. */
  flush(): Promise<void>;
  /** Postfix's maillog so far (for assertion messages). */
  log(): Promise<string>;
  /** postfix stop, then the temp directory goes. */
  stop(): Promise<void>;
}

export const POSTFIX_HOSTNAME = 'pf-mx.pf.test';

function run(file: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

/** A port free on 127.0.0.1 right now, never one handed out before in this process. */
export { freePort };

function mainCf(dir: string, o: PostfixOptions, uid: number, gid: number): string {
  return `# Written by test/helpers/postfix.ts for one test run.
compatibility_level = 3.6
config_directory = ${dir}/conf
queue_directory = ${dir}/queue
data_directory = ${dir}/data
maillog_file_prefixes = ${dir}
maillog_file = ${dir}/maillog
mail_owner = postfix
setgid_group = postdrop
myhostname = ${POSTFIX_HOSTNAME}
mydomain = pf.test
myorigin = pf.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
relayhost = ${o.relayhost}
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_peername_lookup = no
local_transport = error:no local delivery in this test instance
alias_maps =
alias_database =
virtual_mailbox_domains = ${o.virtualDomain}
virtual_mailbox_base = ${dir}/vmail
virtual_mailbox_maps = texthash:${dir}/conf/vmailbox
virtual_minimum_uid = 1
virtual_uid_maps = static:${uid}
virtual_gid_maps = static:${gid}
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
biff = no
`;
}

/** Creates and starts the instance in a fresh temp directory. */
export async function startPostfix(o: PostfixOptions): Promise<PostfixInstance> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-postfix-'));
  // virtual(8) runs as the postfix user: it must reach vmail under the temp directory.
  await chmod(dir, 0o755);
  const port = o.port ?? (await freePort());
  const ids = await run('id', ['-u', 'postfix']);
  const gids = await run('id', ['-g', 'postfix']);
  const uid = Number(ids.output.trim());
  const gid = Number(gids.output.trim());
  const configDir = path.join(dir, 'conf');
  await mkdir(configDir, { recursive: true });
  await mkdir(path.join(dir, 'queue'), { recursive: true, mode: 0o755 });
  await mkdir(path.join(dir, 'data'), { recursive: true, mode: 0o700 });
  await mkdir(path.join(dir, 'vmail'), { recursive: true, mode: 0o700 });
  await chown(path.join(dir, 'data'), uid, 0);
  await chown(path.join(dir, 'vmail'), uid, gid);
  await writeFile(path.join(configDir, 'main.cf'), mainCf(dir, o, uid, gid));
  await writeFile(
    path.join(configDir, 'master.cf'),
    `127.0.0.1:${port} inet n - n - - smtpd\n${MASTER_SERVICES.trimStart()}`,
  );
  await writeFile(
    path.join(configDir, 'vmailbox'),
    o.mailboxes.map((m) => `${m}@${o.virtualDomain} ${o.virtualDomain}/${m}/\n`).join(''),
  );
  const started = await run(POSTFIX, ['-c', configDir, 'start']);
  if (started.code !== 0) {
    await run(POSTFIX, ['-c', configDir, 'stop']);
    await rm(dir, { recursive: true, force: true });
    throw new Error(`postfix start failed (exit ${started.code}): ${started.output}`);
  }
  let running = true;
  const instance: PostfixInstance = {
    dir,
    port,
    hostname: POSTFIX_HOSTNAME,
    async maildir(local) {
      const newDir = path.join(dir, 'vmail', o.virtualDomain, local, 'new');
      const names = (await readdir(newDir).catch(() => [] as string[])).sort();
      return Promise.all(names.map((n) => readFile(path.join(newDir, n))));
    },
    async flush() {
      await run(POSTQUEUE, ['-c', configDir, '-f'], 15_000);
    },
    log: () => readFile(path.join(dir, 'maillog'), 'utf8').catch(() => ''),
    async stop() {
      if (!running) return;
      running = false;
      try {
        await run(POSTFIX, ['-c', configDir, 'stop']);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
  await waitListening(port, instance);
  return instance;
}

/** Waits (bounded) until smtpd's port accepts connections: master binds it just after start. */
async function waitListening(port: number, pf: PostfixInstance): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) {
      await pf.stop();
      throw new Error(`postfix smtpd did not listen on 127.0.0.1:${port} within 15 s`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
