/**
 * The one writer of private Postfix instances' configuration, for the interop tests
 * (test/helpers/postfix.ts) and the side-by-side benchmark (bench/postfix.ts): its own
 * config_directory, queue_directory and data_directory under one directory, smtpd on one
 * 127.0.0.1 port, no chroot, the maillog in that directory. The system instance and /etc/postfix
 * are never touched. Each caller adds its own main.cf settings (where mail goes) to the common
 * ones; master.cf is the same for both.
 * Lives with the test helpers because the tests and the benchmark both import it (tsconfig
 * compiles src/, test/ and bench/ together). Trust: test and benchmark code only.
 */
import { execFile } from 'node:child_process';
import { chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface PostfixConfig {
  /** The instance's directory: conf/, queue/, data/ and the maillog go in it. */
  dir: string;
  /** The program that writes the config, named in main.cf's first line. */
  writer: string;
  /** myhostname; mydomain and myorigin are `domain`. */
  hostname: string;
  domain: string;
  /** smtpd listens on 127.0.0.1 at this port. */
  port: number;
  /** main.cf settings on top of the common ones: a key given here replaces the common value. */
  settings: Readonly<Record<string, string>>;
}

/**
 * Daemons an instance needs; "n" in the chroot column for every one of them. relay and virtual
 * are there for the callers that route mail to them; unused, they cost nothing.
 */
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

/** main.cf: the common settings, then the caller's (a key the caller gives takes that place). */
export function postfixMainCf(c: PostfixConfig): string {
  const settings: Record<string, string> = {
    compatibility_level: '3.6',
    config_directory: `${c.dir}/conf`,
    queue_directory: `${c.dir}/queue`,
    data_directory: `${c.dir}/data`,
    maillog_file_prefixes: c.dir,
    maillog_file: `${c.dir}/maillog`,
    mail_owner: 'postfix',
    setgid_group: 'postdrop',
    myhostname: c.hostname,
    mydomain: c.domain,
    myorigin: c.domain,
    mydestination: '',
    inet_interfaces: '127.0.0.1',
    inet_protocols: 'ipv4',
    mynetworks: '127.0.0.0/8',
    relay_domains: '',
    alias_maps: '',
    alias_database: '',
    smtpd_relay_restrictions: 'permit_mynetworks, reject_unauth_destination',
    smtpd_recipient_restrictions: 'permit_mynetworks, reject_unauth_destination',
    biff: 'no',
    ...c.settings,
  };
  const lines = Object.entries(settings).map(([k, v]) => (v === '' ? `${k} =` : `${k} = ${v}`));
  return `# Written by ${c.writer} for one run.\n${lines.join('\n')}\n`;
}

/** master.cf: smtpd on 127.0.0.1:port, then the daemons. */
export function postfixMasterCf(port: number): string {
  return `127.0.0.1:${port} inet n - n - - smtpd\n${MASTER_SERVICES.trimStart()}`;
}

/** The uid and gid of the postfix user (mail_owner). */
export function postfixUser(): Promise<{ uid: number; gid: number }> {
  const id = (flag: string): Promise<number> =>
    new Promise((resolve, reject) => {
      execFile('id', [flag, 'postfix'], { timeout: 10_000 }, (err, stdout) => {
        if (err !== null) reject(new Error(`id ${flag} postfix: ${err.message}`));
        else resolve(Number(stdout.trim()));
      });
    });
  return Promise.all([id('-u'), id('-g')]).then(([uid, gid]) => ({ uid, gid }));
}

/**
 * Creates the instance's directories (data/ owned by the postfix user, as master requires) and
 * writes main.cf and master.cf. Returns the config directory and the postfix user's ids.
 */
export async function writePostfixConfig(
  c: PostfixConfig,
): Promise<{ configDir: string; uid: number; gid: number }> {
  const configDir = join(c.dir, 'conf');
  const { uid, gid } = await postfixUser();
  await mkdir(configDir, { recursive: true });
  await mkdir(join(c.dir, 'queue'), { recursive: true, mode: 0o755 });
  await mkdir(join(c.dir, 'data'), { recursive: true, mode: 0o700 });
  await chown(join(c.dir, 'data'), uid, 0);
  await writeFile(join(configDir, 'main.cf'), postfixMainCf(c));
  await writeFile(join(configDir, 'master.cf'), postfixMasterCf(c.port));
  return { configDir, uid, gid };
}
