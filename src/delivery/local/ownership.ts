/**
 * The owner, group and modes of Sterna's Maildir deliveries from `[local_delivery]` owner, group,
 * dir_mode and file_mode: names looked up in /etc/passwd and /etc/group (or given as numbers), once,
 * at start. Dovecot refuses a Maildir its mail user does not own, so a site whose Dovecot reads
 * Sterna's Maildirs sets owner and group to that user. Trust: configuration and system files.
 */
import { readFileSync } from 'node:fs';
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
