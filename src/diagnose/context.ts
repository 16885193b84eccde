/**
 * What every check of `sterna diagnose` is given: the domain, this server's host name and public
 * addresses, the resolver (Sterna's own, over the [dns] servers), and the settings the checks
 * read. Trust: the settings come from the operator; everything the resolver returns is untrusted.
 */
import type { DnsResolver } from '../delivery/dns.js';

/** Sterna's resolver with every lookup diagnose needs (NodeDnsResolver has them all). */
export type DiagnoseDns = Required<DnsResolver>;

export interface HostContext {
  /** This server's name: greeting, EHLO, what PTR records should name. */
  hostname: string;
  /** This server's public addresses, as receivers see them. */
  addresses: readonly string[];
  dns: DiagnoseDns;
  now: Date;
}

export interface DomainContext extends HostContext {
  /** The mail domain checked. */
  domain: string;
  dkimSelectors: readonly string[];
}
