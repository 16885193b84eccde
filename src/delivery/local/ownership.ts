/**
 * The owner, group and modes of Sterna's Maildir deliveries from `[local_delivery]` owner, group,
 * dir_mode and file_mode: names looked up in /etc/passwd and /etc/group (or given as numbers), once,
 * at start. Dovecot refuses a Maildir its mail user does not own, so a site whose Dovecot reads
 * Sterna's Maildirs sets owner and group to that user. Trust: configuration and system files.
 */
import { readFileSync } from 'node:fs';
import type { ConfigProblem } from '../../config/load.js';
import type { Config } from '../../config/schema.js';
import type { MaildirOwnership } from './maildir.js';

/** Throws when a name is not found: a start-up error that names the key. */
export function maildirOwnership(
  c: Config['local_delivery'],
  files: { passwd: string; group: string } = { passwd: '/etc/passwd', group: '/etc/group' },
): MaildirOwnership {
  return {
    uid: lookupId(c.owner, files.passwd, 'local_delivery.owner', 2),
    gid: lookupId(c.group, files.group, 'local_delivery.group', 2),
    dirMode: parseInt(c.dir_mode, 8),
    fileMode: parseInt(c.file_mode, 8),
  };
}

/**
 * The owner and group names that this machine does not know, as configuration problems: checked by
 * `sterna check-config` and before `sterna serve` starts, so a typo is a config error (exit 2)
 * that names the key rather than a failed start.
 */
export function ownershipProblems(
  c: Config['local_delivery'],
  files: { passwd: string; group: string } = { passwd: '/etc/passwd', group: '/etc/group' },
): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const checks = [
    { key: 'local_delivery.owner', value: c.owner, file: files.passwd, what: 'user' },
    { key: 'local_delivery.group', value: c.group, file: files.group, what: 'group' },
  ];
  for (const { key, value, file, what } of checks) {
    try {
      lookupId(value, file, key, 2);
    } catch (err) {
      const detail = err instanceof Error ? err.message : String(err);
      out.push({
        key,
        message: `${detail} (expected the name or number of a ${what} on this machine, e.g. the user Dovecot runs its mail as)`,
      });
    }
  }
  return out;
}

/** '' → -1 (unchanged); a number → itself; a name → its id (field `idField` of its line). */
function lookupId(value: string, file: string, key: string, idField: number): number {
  if (value === '') return -1;
  if (/^\d+$/.test(value)) return Number(value);
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const fields = line.split(':');
    if (fields[0] === value && /^\d+$/.test(fields[idField] ?? '')) return Number(fields[idField]);
  }
  throw new Error(`${key}: no such name in ${file}: ${JSON.stringify(value)}`);
}
