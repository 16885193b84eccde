/**
 * A private Postfix instance for interop tests, configured by postfix-config.ts (the writer the
 * benchmark uses too): its own config, queue and data directories in a temp directory, smtpd on
 * one 127.0.0.1 port, no chroot, the maillog in the temp directory. Mail for the test's virtual domain lands in Maildirs under
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
import { postfixUser, writePostfixConfig, type PostfixConfig } from './postfix-config.js';
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

/**
 * The interop instance's configuration in `dir`: the virtual domain into Maildirs under
 * dir/vmail (owned by uid/gid, the postfix user), everything else to the relayhost.
 */
export function interopPostfixConfig(
  dir: string,
  o: PostfixOptions & { port: number },
  user: { uid: number; gid: number },
): PostfixConfig {
  const { uid, gid } = user;
  const settings = {
    relayhost: o.relayhost,
    smtp_host_lookup: 'native',
    smtp_tls_security_level: 'none',
    smtpd_tls_security_level: 'none',
    smtpd_peername_lookup: 'no',
    local_transport: 'error:no local delivery in this test instance',
    virtual_mailbox_domains: o.virtualDomain,
    virtual_mailbox_base: `${dir}/vmail`,
    virtual_mailbox_maps: `texthash:${dir}/conf/vmailbox`,
    virtual_minimum_uid: '1',
    virtual_uid_maps: `static:${uid}`,
    virtual_gid_maps: `static:${gid}`,
    queue_run_delay: '1s',
    minimal_backoff_time: '1s',
    maximal_backoff_time: '2s',
  };
  return {
    dir,
    writer: 'test/helpers/postfix.ts',
    hostname: POSTFIX_HOSTNAME,
    domain: 'pf.test',
    port: o.port,
    settings,
  };
}

/** Creates and starts the instance in a fresh temp directory. */
export async function startPostfix(o: PostfixOptions): Promise<PostfixInstance> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-postfix-'));
  // virtual(8) runs as the postfix user: it must reach vmail under the temp directory.
  await chmod(dir, 0o755);
  const port = o.port ?? (await freePort());
  const { uid, gid } = await postfixUser();
  const { configDir } = await writePostfixConfig(interopPostfixConfig(dir, { ...o, port }, { uid, gid }));
  await mkdir(path.join(dir, 'vmail'), { recursive: true, mode: 0o700 });
  await chown(path.join(dir, 'vmail'), uid, gid);
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
