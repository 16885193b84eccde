/**
 * Which envelope senders a local Unix user may use with `sterna sendmail -f` (docs/sendmail.md).
 * The same rule as submission's enforce_sender, for users the kernel authenticated: a user may
 * send as their own address (login@origin), as the addresses [sendmail] allowed_senders gives
 * them ("@domain" for any address in a domain), and nothing else; root, the server's own user
 * and [sendmail] trusted_users may use any sender, the null sender included (as Postfix lets
 * them, for bounces and list software). Used twice: by the sendmail command (to refuse early,
 * with a useful exit code) and by the server's maildrop pick-up (which alone is trusted).
 * Trust: the login comes from the kernel (process uid or file owner); the sender is untrusted.
 */
import type { Config } from '../config/schema.js';

export interface LocalSubmitter {
  login: string;
  uid: number;
}

/** The domain added to bare local names: [sendmail] origin, or the server's hostname. */
export function originDomain(config: Config): string {
  return (config.sendmail.origin === '' ? config.hostname : config.sendmail.origin).toLowerCase();
}

/** The user's own address: login@origin. */
export function ownAddress(config: Config, login: string): string {
  return `${login}@${originDomain(config)}`;
}

/**
 * True when `user` may set any sender: root, the user the server runs as (`serverUid`, the
 * owner of data_dir), or a name in [sendmail] trusted_users.
 */
export function isTrustedSubmitter(config: Config, user: LocalSubmitter, serverUid: number): boolean {
  return user.uid === 0 || user.uid === serverUid || config.sendmail.trusted_users.includes(user.login);
}

/** May `user` use `sender` ('' is the null sender) as the envelope sender? */
export function mayUseLocalSender(
  config: Config,
  user: LocalSubmitter,
  serverUid: number,
  sender: string,
): boolean {
  if (isTrustedSubmitter(config, user, serverUid)) return true;
  if (sender === '') return false;
  const wanted = sender.toLowerCase();
  if (wanted === ownAddress(config, user.login).toLowerCase()) return true;
  const at = wanted.lastIndexOf('@');
  const domain = at === -1 ? '' : wanted.slice(at);
  return (config.sendmail.allowed_senders[user.login] ?? []).some((a) => {
    const allowed = a.toLowerCase();
    return allowed.startsWith('@') ? allowed === domain : allowed === wanted;
  });
}
