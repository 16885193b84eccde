/**
 * Local Unix users by uid, for the maildrop pick-up: the kernel records a file's owner as a
 * number; the Received header, the logs and the sender rule need the login name, and the From
 * header the server adds uses the full name (the GECOS field's first part, as sendmail does).
 * Asks the system's user database through `getent passwd UID` (so NSS sources such as LDAP
 * count), and falls back to /etc/passwd when getent is missing. Results are cached per uid for
 * the life of the process. Trust: the system's user database is trusted.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';

export interface LocalUser {
  login: string;
  uid: number;
  /** The GECOS field's first comma-separated part; '' when none. */
  fullName: string;
}

export type UserLookup = (uid: number) => Promise<LocalUser | null>;

/** Parses one passwd(5) line; null when it is not one. */
export function parsePasswdLine(line: string): LocalUser | null {
  const f = line.split(':');
  if (f.length < 7 || f[0] === undefined || f[0] === '' || !/^\d+$/.test(f[2] ?? '')) return null;
  return { login: f[0], uid: Number(f[2]), fullName: (f[4] ?? '').split(',')[0] ?? '' };
}

function getent(uid: number): Promise<LocalUser | null | 'no-getent'> {
  return new Promise((resolve) => {
    execFile('getent', ['passwd', String(uid)], { timeout: 10_000 }, (err, stdout) => {
      if (err !== null && 'code' in err && err.code === 'ENOENT') {
        resolve('no-getent');
        return;
      }
      // getent exits 2 when the uid has no entry.
      resolve(err === null ? parsePasswdLine(stdout.trim().split('\n')[0] ?? '') : null);
    });
  });
}

async function fromEtcPasswd(uid: number): Promise<LocalUser | null> {
  const text = await readFile('/etc/passwd', 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const u = parsePasswdLine(line);
    if (u !== null && u.uid === uid) return u;
  }
  return null;
}

/** A lookup with a per-process cache (a user renamed meanwhile is seen after a restart). */
export function systemUserLookup(): UserLookup {
  const cache = new Map<number, Promise<LocalUser | null>>();
  return (uid) => {
    let hit = cache.get(uid);
    if (hit === undefined) {
      hit = getent(uid).then((r) => (r === 'no-getent' ? fromEtcPasswd(uid) : r));
      cache.set(uid, hit);
      // Only found users are remembered: an account created later is seen at once.
      void hit.then((u) => {
        if (u === null) cache.delete(uid);
      });
    }
    return hit;
  };
}
