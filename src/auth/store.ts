/**
 * What the server asks of an authentication backend, whichever it is: Sterna's users file
 * (users.ts) or Dovecot's auth socket (dovecot.ts), plus the sender-ownership rule they share.
 * A backend answers "this user" or "no"; a check that could not be made at all (Dovecot down,
 * the OAuth key set unreachable) throws TemporaryAuthError, which the session answers with
 * 454 4.7.0 (RFC 4954 section 6) and which does not count as a failed attempt.
 *
 * RFCs: 4954 sections 5-6; 6409 section 6.1 (sender ownership on submission).
 * Trust: credentials come from the network and are never logged.
 */
import type { Credentials } from './sasl.js';
import type { VerifyResult } from './users.js';

/** The check could not be made; try again later. The message is for the log (no secrets). */
export class TemporaryAuthError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TemporaryAuthError';
  }
}

/** Facts about the connection that a backend may pass on (Dovecot's rip, secured). */
export interface AuthContext {
  /** The client's IP address. */
  ip: string;
  /** The connection is encrypted (TLS). */
  secured: boolean;
}

/** A backend that checks passwords (PLAIN, LOGIN) and, for the users file, CRAM-MD5. */
export interface PasswordBackend {
  verify(creds: Credentials, ctx: AuthContext): Promise<VerifyResult>;
}

export interface SenderOwnership {
  /** The users file's answer for users it holds (own address, sendAs), or undefined for others. */
  fromUsersFile(user: string, sender: string): boolean | undefined;
  /** The local domains, lower case (for a Dovecot user name without "@"). */
  localDomains: ReadonlySet<string>;
}

/**
 * May the authenticated `user` use `sender` as MAIL FROM? The null sender always; a user of the
 * users file as that file says (own address, sendAs); any other user (a Dovecot or an OAuth
 * user not in the file) only their own address, and a bare Dovecot user name "alice" owns
 * alice@ in each local domain. Case-insensitive, like logins.
 */
export function mayUseSender(own: SenderOwnership, user: string, sender: string): boolean {
  if (sender === '') return true;
  const fromFile = own.fromUsersFile(user, sender);
  if (fromFile !== undefined) return fromFile;
  const wanted = sender.toLowerCase();
  const name = user.toLowerCase();
  if (name.includes('@')) return wanted === name;
  const at = wanted.lastIndexOf('@');
  return at > 0 && wanted.slice(0, at) === name && own.localDomains.has(wanted.slice(at + 1));
}
