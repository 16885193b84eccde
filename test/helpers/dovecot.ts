/**
 * A private Dovecot for tests (Debian package dovecot-core): its own config directory under
 * os.tmpdir() (base_dir, state_dir, log file, a passwd-file passdb with the test's users), no
 * listeners on system ports (`protocols =` unless a test asks for more), started by the test and
 * stopped by the pid in its master.pid. Its auth client socket is what `[auth] backend =
 * "dovecot"` talks to. With `mailboxes`, it also serves mail: an LMTP Unix socket (run/lmtp),
 * IMAP on a loopback test port, a passwd-file userdb of the same users (uid and gid "dovecot"),
 * and Maildirs under its directory (home/USER/Maildir).
 *
 * Dovecot starts as root (it drops privileges for its own processes: the users "dovecot" and
 * "dovenull" made by the package). A missing dovecot, or not being root, skips the tests loudly,
 * and fails them under CI=true (.ci/run installs dovecot-core and runs as root).
 * Trust: test code; runs /usr/sbin/dovecot with a config it writes itself.
 */
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitFor } from './outbound.js';
import { sleep } from './process.js';
import { findTool, requireTool, type ToolRequirement } from './tools.js';

export interface DovecotUser {
  /** The login name: an address, or a bare name like a system user. */
  name: string;
  /** Stored as {PLAIN}; must not contain ":" or a line break. */
  password: string;
}

export interface DovecotOptions {
  users: DovecotUser[];
  /** The `protocols` setting; default none, so nothing listens on a network port. */
  protocols?: string;
  /** The userdb block; default a static userdb (auth tests never log a user in). */
  userdb?: string;
  /** More dovecot.conf text, appended (services with test ports, mail_location ...). */
  extraConfig?: string;
  /**
   * Serve mail: LMTP on run/lmtp and IMAP on 127.0.0.1:imapPort (protocols "imap lmtp").
   * mailLocation: default "maildir:~/Maildir" (homes under the instance's directory).
   */
  mailboxes?: { imapPort: number; mailLocation?: string };
}

export interface DovecotInstance {
  /** The private directory holding dovecot.conf, passwd, run/, state/ and dovecot.log. */
  dir: string;
  /** Dovecot's base_dir (its sockets). */
  baseDir: string;
  /** The auth client socket (the one Postfix's smtpd_sasl_path names). */
  authSocket: string;
  /** The LMTP socket (with `mailboxes`): what `lmtp:unix:PATH` names. */
  lmtpSocket: string;
  logFile: string;
  /** Starts Dovecot again on the same config (after stop()). */
  start(): Promise<void>;
  /** Stops Dovecot (SIGTERM to its master, SIGKILL after 10 s) and waits until it has exited. */
  stop(): Promise<void>;
  /** stop() and remove the directory. */
  cleanup(): Promise<void>;
}

/** The test options: skip (loudly) or fail under CI when Dovecot cannot run here. */
export function requireDovecot(): ToolRequirement {
  const tool = requireTool('dovecot');
  if (tool.skip !== false) return tool;
  if (process.getuid?.() !== 0) {
    if (process.env['CI'] === 'true') throw new Error('the Dovecot tests must run as root under CI');
    process.stderr.write('\n*** Dovecot tests skipped: Dovecot starts as root only ***\n\n');
    return { skip: 'not root' };
  }
  return tool;
}

export async function startDovecot(opts: DovecotOptions): Promise<DovecotInstance> {
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-dovecot-'));
  const baseDir = path.join(dir, 'run');
  const logFile = path.join(dir, 'dovecot.log');
  const configFile = path.join(dir, 'dovecot.conf');
  const passwd = path.join(dir, 'passwd');
  // Dovecot's auth process runs as the user "dovecot": it must reach and read the passwd file
  // (test passwords only).
  await chmod(dir, 0o711);
  const lines = opts.users.map((u) => `${u.name}:{PLAIN}${u.password}\n`);
  await writeFile(passwd, lines.join(''), { mode: 0o644 });
  const mail = opts.mailboxes === undefined ? '' : await mailConfig(dir, opts.users, opts.mailboxes);
  await writeFile(
    configFile,
    `# A private Dovecot for Sterna's tests.
instance_name = ${path.basename(dir)}
base_dir = ${baseDir}
state_dir = ${path.join(dir, 'state')}
log_path = ${logFile}
protocols = ${opts.protocols ?? (opts.mailboxes !== undefined ? 'imap lmtp' : '')}
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = no
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${passwd}
}
${opts.userdb ?? (mail !== '' ? '' : `userdb {\n  driver = static\n  args = uid=dovecot gid=dovecot home=${dir}/home/%u\n}`)}
service auth {
  unix_listener auth-client {
    mode = 0600
  }
}
${mail}
${opts.extraConfig ?? ''}
`,
  );
  const binary = findTool('dovecot') ?? 'dovecot';
  let pid: number | undefined;
  const instance: DovecotInstance = {
    dir,
    baseDir,
    authSocket: path.join(baseDir, 'auth-client'),
    lmtpSocket: path.join(baseDir, 'lmtp'),
    logFile,
    async start() {
      await run(binary, ['-c', configFile], logFile);
      pid = await readPid(path.join(baseDir, 'master.pid'), logFile);
      await waitForSocket(instance.authSocket, logFile);
    },
    async stop() {
      if (pid === undefined) return;
      const master = pid;
      pid = undefined;
      // A stopped master leaves its auth process serving the clients it has until they hang
      // up; "stopped" here means every process of this instance is gone, as after a crash.
      const all = [master, ...(await instanceProcesses(path.basename(dir)))];
      for (const p of all) signal(p, 'SIGTERM');
      const deadline = Date.now() + 10_000;
      while (all.some(alive)) {
        if (Date.now() > deadline) for (const p of all) signal(p, 'SIGKILL');
        await sleep(25);
      }
    },
    async cleanup() {
      await instance.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  await instance.start();
  return instance;
}

/** The message at `uid` in the user's INBOX over IMAP (curl), or null when there is none (yet). */
export function imapFetch(imapPort: number, user: DovecotUser, uid: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    execFile(
      'curl',
      [
        '-s',
        '--max-time',
        '5',
        `imap://127.0.0.1:${imapPort}/INBOX;UID=${uid}`,
        '-u',
        `${user.name}:${user.password}`,
      ],
      { encoding: 'buffer' },
      (err, stdout) => resolve(err === null && stdout.length > 0 ? stdout : null),
    );
  });
}

/** Waits (up to 10 s) for the message at `uid` in the user's INBOX over IMAP. */
export async function waitImap(imapPort: number, user: DovecotUser, uid: number): Promise<Buffer> {
  let got: Buffer | null = null;
  await waitFor(
    `IMAP UID ${uid} in ${user.name}'s INBOX`,
    async () => (got = await imapFetch(imapPort, user, uid)) !== null,
    10_000,
  );
  if (got === null) throw new Error(`no IMAP UID ${uid} for ${user.name}`);
  return got;
}

/**
 * The mail-serving part of the config: a passwd-file userdb of the same users (uid and gid
 * "dovecot"; other names are unknown users, so LMTP refuses them with 550 5.1.1), Maildirs under DIR/home (made writable for
 * the "dovecot" user), LMTP on a Unix socket, IMAP on 127.0.0.1:imapPort and no IMAPS.
 */
async function mailConfig(
  dir: string,
  users: DovecotUser[],
  { imapPort, mailLocation }: { imapPort: number; mailLocation?: string },
): Promise<string> {
  const home = path.join(dir, 'home');
  await mkdir(home);
  await chmod(home, 0o1777);
  const userdb = path.join(dir, 'userdb');
  const lines = users.map((u) => `${u.name}::dovecot:dovecot::${home}/${u.name}::\n`);
  await writeFile(userdb, lines.join(''), { mode: 0o644 });
  return `first_valid_uid = 1
mail_location = ${mailLocation ?? 'maildir:~/Maildir'}
userdb {
  driver = passwd-file
  args = username_format=%u ${userdb}
}
service lmtp {
  unix_listener lmtp {
    mode = 0600
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ${imapPort}
  }
  inet_listener imaps {
    port = 0
  }
}
`;
}

/**
 * Runs the dovecot command; it daemonizes, so it exits once the master runs. Its output goes to
 * a file, not a pipe: the daemon would hold a pipe open long after the command has exited.
 */
async function run(binary: string, args: string[], logFile: string): Promise<void> {
  const outFile = `${logFile}.stderr`;
  const out = await open(outFile, 'w');
  let exit: Promise<number | null>;
  try {
    const child = spawn(binary, args, { stdio: ['ignore', out.fd, out.fd] });
    exit = new Promise((resolve) => {
      child.once('error', () => resolve(-1));
      child.once('exit', (code) => resolve(code));
    });
  } finally {
    await out.close();
  }
  const code = await exit;
  if (code !== 0) {
    const said = await readFile(outFile, 'utf8').catch(() => '');
    const log = await readFile(logFile, 'utf8').catch(() => '');
    throw new Error(`dovecot ${args.join(' ')} exited with ${String(code)}: ${said}\n${log}`);
  }
}

/** The master's pid, once the daemon has written it (up to 10 s after the command returned). */
async function readPid(file: string, logFile: string): Promise<number> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (/^\d+\n/.test(text)) return Number(text.trim());
    if (Date.now() > deadline) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`Dovecot wrote no ${file} within 10 s\n${log}`);
    }
    await sleep(25);
  }
}

/** Waits (up to 10 s) until the auth socket accepts a connection. */
async function waitForSocket(socket: string, logFile: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(socket, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`Dovecot's auth socket ${socket} did not answer within 10 s\n${log}`);
    }
    await sleep(25);
  }
}

/**
 * The pids of this instance's child processes: Dovecot titles them "dovecot-INSTANCE/auth" and
 * so on, and INSTANCE is the unique name of this test's directory.
 */
async function instanceProcesses(instance: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.startsWith(`dovecot-${instance}/`)) pids.push(Number(entry));
  }
  return pids;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
