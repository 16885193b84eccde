/**
 * Allow and deny lists ([[lists]], docs/abuse.md): the client's IP address (IPv4 and IPv6
 * addresses and CIDR networks), the HELO name, the sender, a recipient. Entries come from the
 * configuration and from files (one entry a line, `#` comments) that are re-read when they
 * change (a stat every second) and on SIGHUP (reload()). Lookups are sets and a walk up the
 * domain's labels, so a list of a million entries costs the same per lookup as one of ten.
 *
 * A bad entry in the configuration stops start-up (fail closed); a file that cannot be read or
 * holds a bad line keeps the entries read before, with an error in the log.
 * Trust: entries are the operator's; the values matched are the client's (untrusted) and are
 * only compared, never parsed into anything else.
 */
import { unwatchFile, watchFile, type Stats } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { BlockList, isIP } from 'node:net';
import type { Logger } from '../observability/log.js';

export type ListMatch = 'client' | 'helo' | 'sender' | 'recipient';
export type ListAction = 'allow' | 'deny';

export interface ListSpec {
  name: string;
  match: ListMatch;
  action: ListAction;
  entries: readonly string[];
  file: string;
  reason: string;
}

/** A list's answer for one value: which list matched, with its action and reason. */
export interface ListHit {
  list: string;
  action: ListAction;
  reason: string;
}

/** The compiled entries of one list. */
interface Compiled {
  networks: BlockList;
  /** Exact values: addresses, HELO names, domains (lower case), "<>" for the null sender. */
  exact: Set<string>;
  /** Domains whose subdomains match (".example.org" stored as "example.org"). */
  parents: Set<string>;
}

/** Why an entry is not one this kind of list can hold, or null when it is fine. */
function entryError(match: ListMatch, entry: string): string | null {
  const e = entry.trim();
  if (e === '') return 'empty entry';
  if (match === 'client') {
    const [addr = '', bits, extra] = e.split('/');
    const family = isIP(addr);
    if (family === 0 || extra !== undefined) return `"${e}" is not an IP address or CIDR network`;
    if (bits !== undefined) {
      const n = Number(bits);
      if (!/^\d{1,3}$/.test(bits) || n > (family === 4 ? 32 : 128)) return `"${e}" has a bad prefix length`;
    }
    return null;
  }
  if (match === 'helo')
    return /^(\.?[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.IPv]+\])$/.test(e) ? null : `"${e}" is not a host name`;
  if (e === '<>') return null;
  return /^(@|\.)?[^\s@<>]+(@[^\s@<>]+)?$/.test(e) ? null : `"${e}" is not an address or domain`;
}

function compile(match: ListMatch, entries: readonly string[]): Compiled {
  const c: Compiled = { networks: new BlockList(), exact: new Set(), parents: new Set() };
  for (const raw of entries) {
    const e = raw.trim().toLowerCase();
    if (match === 'client') {
      const [addr = '', bits] = e.split('/');
      const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
      const v4 = mappedIpv4(addr);
      if (bits === undefined) c.networks.addAddress(v4 ?? addr, v4 !== null ? 'ipv4' : family);
      else c.networks.addSubnet(addr, Number(bits), family);
    } else if (e.startsWith('.')) {
      c.parents.add(e.slice(1));
    } else if (e.startsWith('@')) {
      c.exact.add(e.slice(1));
    } else {
      c.exact.add(e);
    }
  }
  return c;
}

/** The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d), or null. */
function mappedIpv4(ip: string): string | null {
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1] ?? null;
}

/** Does a domain (lower case) or one of its parents appear in `parents`? */
function underParent(domain: string, parents: ReadonlySet<string>): boolean {
  if (parents.size === 0) return false;
  let d = domain;
  for (let dot = d.indexOf('.'); dot >= 0; dot = d.indexOf('.')) {
    d = d.slice(dot + 1);
    if (parents.has(d)) return true;
  }
  return false;
}

function matches(c: Compiled, match: ListMatch, value: string): boolean {
  if (match === 'client') {
    const v4 = mappedIpv4(value);
    const addr = v4 ?? value;
    const family = isIP(addr);
    if (family === 0) return false;
    return c.networks.check(addr, family === 6 ? 'ipv6' : 'ipv4');
  }
  const v = value.toLowerCase();
  if (match === 'helo') return c.exact.has(v) || underParent(v, c.parents);
  // sender, recipient: "" is the null sender.
  if (v === '') return c.exact.has('<>');
  if (c.exact.has(v)) return true;
  const at = v.lastIndexOf('@');
  const domain = at >= 0 ? v.slice(at + 1) : v;
  return c.exact.has(domain) || underParent(domain, c.parents);
}

/** Reads a list file: entries, one a line; `#` starts a comment. Throws on a bad line. */
async function readListFile(spec: ListSpec): Promise<string[]> {
  const text = await readFile(spec.file, 'utf8');
  const out: string[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    const entry = line.replace(/#.*$/, '').trim();
    if (entry === '') return;
    const err = entryError(spec.match, entry);
    if (err !== null) throw new Error(`${spec.file} line ${i + 1}: ${err}`);
    out.push(entry);
  });
  return out;
}

class PolicyList {
  readonly spec: ListSpec;
  readonly #fromConfig: Compiled;
  #fromFile: Compiled | null = null;

  constructor(spec: ListSpec) {
    this.spec = spec;
    for (const e of spec.entries) {
      const err = entryError(spec.match, e);
      if (err !== null) throw new Error(`lists "${spec.name}": ${err}`);
    }
    this.#fromConfig = compile(spec.match, spec.entries);
  }

  has(value: string): boolean {
    const m = this.spec.match;
    return (
      matches(this.#fromConfig, m, value) || (this.#fromFile !== null && matches(this.#fromFile, m, value))
    );
  }

  /** Reads the file again; on failure the entries read before stay. */
  async reload(log: Logger): Promise<void> {
    if (this.spec.file === '') return;
    try {
      const entries = await readListFile(this.spec);
      this.#fromFile = compile(this.spec.match, entries);
      log.info({ list: this.spec.name, file: this.spec.file, entries: entries.length }, 'list file read');
    } catch (err) {
      log.error(
        { err, list: this.spec.name, file: this.spec.file },
        'list file not read; keeping the entries read before',
      );
    }
  }
}

export class PolicyLists {
  readonly #lists: PolicyList[];
  readonly #log: Logger;
  readonly #watched: { file: string; listener: (cur: Stats, prev: Stats) => void }[] = [];

  private constructor(specs: readonly ListSpec[], log: Logger) {
    this.#lists = specs.map((s) => new PolicyList(s));
    this.#log = log;
  }

  /** Compiles the lists (a bad configured entry throws), reads their files and watches them. */
  static async open(specs: readonly ListSpec[], log: Logger, pollMs = 1000): Promise<PolicyLists> {
    const lists = new PolicyLists(specs, log);
    await lists.reload();
    for (const l of lists.#lists) {
      const file = l.spec.file;
      if (file === '') continue;
      const listener = (cur: Stats, prev: Stats): void => {
        if (cur.mtimeMs !== prev.mtimeMs || cur.size !== prev.size || cur.ino !== prev.ino)
          void l.reload(log);
      };
      watchFile(file, { interval: pollMs, persistent: false }, listener);
      lists.#watched.push({ file, listener });
    }
    return lists;
  }

  get empty(): boolean {
    return this.#lists.length === 0;
  }

  /** Has a list of this kind: a lookup of the other kinds is skipped. */
  uses(match: ListMatch): boolean {
    return this.#lists.some((l) => l.spec.match === match);
  }

  /** The first allow list that holds value, else the first deny list, else null. */
  check(match: ListMatch, value: string): ListHit | null {
    let deny: ListHit | null = null;
    for (const l of this.#lists) {
      if (l.spec.match !== match) continue;
      if (l.spec.action === 'deny' && deny !== null) continue;
      if (!l.has(value)) continue;
      const hit = { list: l.spec.name, action: l.spec.action, reason: l.spec.reason };
      if (hit.action === 'allow') return hit;
      deny = hit;
    }
    return deny;
  }

  /** Re-reads every list file (SIGHUP). */
  async reload(): Promise<void> {
    await Promise.all(this.#lists.map((l) => l.reload(this.#log)));
  }

  close(): void {
    for (const w of this.#watched) unwatchFile(w.file, w.listener);
    this.#watched.length = 0;
  }
}
