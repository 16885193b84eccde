/**
 * Where a recipient goes: a local mailbox (after alias and catch-all expansion, postmaster
 * mapped to the configured mailbox) or another domain (outbound SMTP, queue/manager.ts).
 * Decides nothing about policy: every recipient here was already accepted at RCPT time. An
 * SRS address of ours routes like an alias to the original sender it encodes (forwarded).
 */
import type { Srs } from '../mailauth/srs.js';
import { expand, type AliasTable } from '../policy/aliases.js';

export type Route =
  /** Local mailboxes to deliver to; remote addresses the aliases point at (not delivered yet). */
  | { kind: 'local'; mailboxes: string[]; remote: string[] }
  | { kind: 'remote'; domain: string }
  /** Transport "discard": accepted, then thrown away. */
  | { kind: 'discard' }
  | { kind: 'failed'; reason: string };

export interface RouterDeps {
  localDomains: ReadonlySet<string>;
  discardDomains: ReadonlySet<string>;
  /** Domains routed to LMTP: delivered like a remote domain, to the LMTP next hop (no alias expansion). */
  lmtpDomains: ReadonlySet<string>;
  postmaster: string;
  isMailbox(address: string): boolean;
  aliases(): AliasTable;
  /** SRS ([forwarding] srs): a bounce to one of its addresses goes on to the original sender. */
  srs?: Srs | null;
}

function split(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf('@');
  return at === -1
    ? { local: address, domain: '' }
    : { local: address.slice(0, at), domain: address.slice(at + 1) };
}

function unquote(local: string): string {
  return local.startsWith('"') && local.endsWith('"') && local.length >= 2
    ? local.slice(1, -1).replace(/\\(.)/g, '$1')
    : local;
}

export class Router {
  readonly #deps: RouterDeps;

  constructor(deps: RouterDeps) {
    this.#deps = deps;
  }

  isLocal(domain: string): boolean {
    return this.#deps.localDomains.has(domain.toLowerCase());
  }

  /** Canonical lookup form: unquoted local part, lower-cased domain. */
  canonical(address: string): string {
    const { local, domain } = split(address);
    return domain === '' ? unquote(local) : `${unquote(local)}@${domain.toLowerCase()}`;
  }

  #isPostmaster(address: string): boolean {
    const { local, domain } = split(address);
    return unquote(local).toLowerCase() === 'postmaster' && (domain === '' || this.isLocal(domain));
  }

  route(address: string): Route {
    const { domain } = split(address);
    if (this.#deps.discardDomains.has(domain.toLowerCase())) return { kind: 'discard' };
    if (this.#deps.lmtpDomains.has(domain.toLowerCase())) return { kind: 'remote', domain };
    const srs = this.#deps.srs;
    if (srs !== undefined && srs !== null && srs.isSrsAddress(address)) {
      // Verified (age too) at RCPT; here only the hash: a retried bounce is not refused later.
      const back = srs.reverse(this.canonical(address), { checkAge: false });
      if (!back.ok) return { kind: 'failed', reason: `not a valid SRS address (${back.reason})` };
      return { kind: 'local', mailboxes: [], remote: [back.address] };
    }
    if (domain !== '' && !this.isLocal(domain) && !this.#isPostmaster(address))
      return { kind: 'remote', domain };
    const start = this.#isPostmaster(address) ? this.#deps.postmaster : this.canonical(address);
    const isMailbox = (a: string): boolean =>
      this.#deps.isMailbox(a) || a.toLowerCase() === this.#deps.postmaster.toLowerCase();
    const expansion = expand(this.#deps.aliases(), start, isMailbox);
    if (!expansion.ok) {
      return expansion.reason === 'loop'
        ? { kind: 'failed', reason: `alias loop: ${expansion.chain.join(' -> ')}` }
        : { kind: 'failed', reason: `alias expands to too many addresses (${expansion.count})` };
    }
    const mailboxes: string[] = [];
    const remote: string[] = [];
    for (const target of expansion.addresses) {
      const t = split(target);
      // A mailbox first: the postmaster mailbox may sit in a domain that is not a local one.
      if (isMailbox(target)) mailboxes.push(target);
      else if (t.domain !== '' && !this.isLocal(t.domain)) remote.push(target);
      else if (this.#isPostmaster(target)) mailboxes.push(this.#deps.postmaster);
      else return { kind: 'failed', reason: `no such mailbox: ${target}` };
    }
    return { kind: 'local', mailboxes: [...new Set(mailboxes)], remote };
  }
}
