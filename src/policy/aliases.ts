/**
 * Alias expansion: one recipient address -> the addresses mail for it really goes to.
 *
 * Keys are "local@domain" or "@domain" (that domain's catch-all). Local parts are matched
 * case-insensitively for aliases and for mailboxes, although RFC 5321 2.4 lets a host treat them as
 * case-sensitive: "Bob@" and "bob@" are one person here, as in most mail systems. Domains are
 * case-insensitive everywhere (RFC 5321 2.4). Targets keep the case of their local part, because
 * a remote host may care about it. An expansion that loops or grows too big is refused, not
 * truncated (RFC 5321 3.9 asks to detect and stop forwarding loops). docs/local-delivery.md
 * describes the rules for administrators.
 *
 * Trust: the table comes from the administrator's configuration (trusted); the address being
 * expanded comes from the network, so expansion is bounded in depth, count and work.
 */
import { readFile } from 'node:fs/promises';
import { parse, TomlError } from 'smol-toml';

export interface AliasTable {
  /** key "local@domain" or "@domain" (catch-all) -> target addresses; keys fully lower-cased. */
  entries: ReadonlyMap<string, readonly string[]>;
}

export type Expansion =
  | { ok: true; addresses: string[] }
  | { ok: false; reason: 'loop'; chain: string[] }
  | { ok: false; reason: 'too-many'; count: number };

export interface ExpandOptions {
  /** Alias steps allowed from the original address to a final one. Beyond it: reason 'loop'. Default 10. */
  maxDepth?: number;
  /** Distinct final addresses one address may expand to. Beyond it: reason 'too-many'. Default 1000. */
  maxAddresses?: number;
}

export const DEFAULT_MAX_DEPTH = 10;
export const DEFAULT_MAX_ADDRESSES = 1000;

export type AliasErrorCode =
  | 'ALIAS_KEY_INVALID'
  | 'ALIAS_KEY_DUPLICATE'
  | 'ALIAS_TARGET_INVALID'
  | 'ALIAS_FILE_UNREADABLE'
  | 'ALIAS_FILE_SYNTAX';

/** A bad alias table or file. The message names the file (when there is one) and the key. */
export class AliasError extends Error {
  override readonly name = 'AliasError';
  constructor(
    readonly code: AliasErrorCode,
    message: string,
    readonly file?: string,
    readonly key?: string,
  ) {
    super(message);
  }
}

/**
 * Builds the table from the `[aliases]` record (and/or an aliases file). Keys are lower-cased.
 * Throws AliasError for a key that is not "local@domain" or "@domain", two keys that differ only in
 * case, a key without targets, or a target that is not "local@domain".
 */
export function buildAliasTable(record: Readonly<Record<string, readonly string[]>>): AliasTable {
  const entries = new Map<string, readonly string[]>();
  const original = new Map<string, string>();
  for (const [key, targets] of Object.entries(record)) {
    const problem = checkEntry(key, targets);
    if (problem !== undefined) throw new AliasError(problem.code, problem.message, undefined, key);
    const normalized = key.toLowerCase();
    const earlier = original.get(normalized);
    if (earlier !== undefined) {
      throw new AliasError(
        'ALIAS_KEY_DUPLICATE',
        `aliases "${earlier}" and "${key}" are the same address (local parts are matched case-insensitively)`,
        undefined,
        key,
      );
    }
    original.set(normalized, key);
    entries.set(normalized, Object.freeze(targets.map(normalizeTarget)));
  }
  return { entries };
}

/**
 * Expands one address. Order for each address met on the way: an exact alias; else an existing
 * mailbox (final); else the domain's catch-all "@domain"; else the address itself (unknown: the
 * caller decides). An alias listing itself delivers to that address too (final, not a loop).
 * Results are deduplicated (mailboxes case-insensitively, other addresses on the domain only) and
 * keep the order in which they were first reached.
 */
export function expand(
  table: AliasTable,
  address: string,
  isMailbox: (address: string) => boolean,
  opts: ExpandOptions = {},
): Expansion {
  const maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
  const maxAddresses = opts.maxAddresses ?? DEFAULT_MAX_ADDRESSES;
  const results = new Map<string, string>(); // dedup key -> address
  // Alias and catch-all keys fully expanded: expanding one again adds nothing. This keeps the work
  // linear in the size of the table, whatever its shape. (Final addresses are deduplicated by emit.)
  const done = new Set<string>();
  const chain: string[] = []; // addresses being expanded, outermost first
  const onChain = new Set<string>();

  const emit = (addr: string): void => {
    const key = dedupKey(addr, isMailbox(addr));
    if (!results.has(key)) results.set(key, addr);
  };

  // Returns a failed Expansion, or undefined when `addr` was expanded into `results`.
  const visit = (addr: string, depth: number): Expansion | undefined => {
    const key = lookupKey(addr);
    if (onChain.has(key)) return { ok: false, reason: 'loop', chain: [...chain, addr] };
    if (done.has(key)) return undefined;
    let targets = table.entries.get(key);
    if (targets === undefined && !isMailbox(addr))
      targets = table.entries.get(lookupKey(`@${domainOf(addr)}`));
    if (targets === undefined) {
      emit(addr);
      return undefined;
    }
    // Too deep is reported as a loop: a chain this long is almost always one (RFC 3463 X.4.6).
    if (depth >= maxDepth) return { ok: false, reason: 'loop', chain: [...chain, addr] };
    chain.push(addr);
    onChain.add(key);
    for (const target of targets) {
      if (lookupKey(target) === key) {
        emit(addr); // "user: user, other": also deliver to the address itself
        continue;
      }
      const failure = visit(target, depth + 1);
      if (failure !== undefined) return failure;
    }
    chain.pop();
    onChain.delete(key);
    done.add(key);
    return undefined;
  };

  const failure = visit(normalizeTarget(address), 0);
  if (failure !== undefined) return failure;
  if (results.size > maxAddresses) return { ok: false, reason: 'too-many', count: results.size };
  return { ok: true, addresses: [...results.values()] };
}

/** For RCPT TO: true if the address is a mailbox, an alias, or covered by its domain's catch-all. */
export function isKnownRecipient(
  table: AliasTable,
  address: string,
  isMailbox: (address: string) => boolean,
): boolean {
  return (
    table.entries.has(lookupKey(address)) ||
    isMailbox(address) ||
    table.entries.has(`@${domainOf(address).toLowerCase()}`)
  );
}

/**
 * Reads an aliases file: TOML whose top-level keys are the entries of `[aliases]`, e.g.
 * `"info@example.com" = ["alice@example.com", "bob@example.org"]`. Keys must be quoted (TOML bare
 * keys cannot hold '@'). Throws AliasError naming the file, and the key when one is at fault.
 */
export async function loadAliasFile(file: string): Promise<Record<string, string[]>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new AliasError(
      'ALIAS_FILE_UNREADABLE',
      `${file}: cannot read the aliases file: ${errorText(err)}`,
      file,
    );
  }
  let doc: Record<string, unknown>;
  try {
    doc = parse(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` at line ${err.line}, column ${err.column}` : '';
    throw new AliasError(
      'ALIAS_FILE_SYNTAX',
      `${file}: invalid TOML${where}: ${firstLine(errorText(err))}`,
      file,
    );
  }
  const record: Record<string, string[]> = {};
  for (const [key, value] of Object.entries(doc)) {
    if (!Array.isArray(value) || !value.every((v): v is string => typeof v === 'string')) {
      const hint =
        typeof value === 'object' && value !== null && !Array.isArray(value)
          ? ' (write the entries at the top level, without an [aliases] header)'
          : '';
      throw new AliasError(
        'ALIAS_TARGET_INVALID',
        `${file}: key "${key}": expected an array of addresses${hint}`,
        file,
        key,
      );
    }
    const problem = checkEntry(key, value);
    if (problem !== undefined) throw new AliasError(problem.code, `${file}: ${problem.message}`, file, key);
    record[key] = value;
  }
  try {
    buildAliasTable(record); // same-address keys that differ in case
  } catch (err) {
    if (err instanceof AliasError) throw new AliasError(err.code, `${file}: ${err.message}`, file, err.key);
    throw err;
  }
  return record;
}

// ---------------------------------------------------------------------------------------------

function splitAddress(address: string): { local: string; domain: string } {
  // The last '@': a quoted local part may contain one.
  const at = address.lastIndexOf('@');
  return at < 0
    ? { local: address, domain: '' }
    : { local: address.slice(0, at), domain: address.slice(at + 1) };
}

function domainOf(address: string): string {
  return splitAddress(address).domain;
}

/** Key into the table: the whole address lower-cased. */
function lookupKey(address: string): string {
  return address.toLowerCase();
}

/** Targets and results: domain lower-cased, local part as written. */
function normalizeTarget(address: string): string {
  const { local, domain } = splitAddress(address);
  return domain === '' ? address : `${local}@${domain.toLowerCase()}`;
}

/** Local mailboxes are one regardless of case; elsewhere the local part may be case-sensitive. */
function dedupKey(address: string, mailbox: boolean): string {
  return mailbox ? address.toLowerCase() : normalizeTarget(address);
}

function checkEntry(
  key: string,
  targets: readonly string[],
): { code: AliasErrorCode; message: string } | undefined {
  // An empty local part is the catch-all "@domain".
  if (domainOf(key) === '' || /[\s<>]/.test(key)) {
    return {
      code: 'ALIAS_KEY_INVALID',
      message: `alias "${key}": expected "local@domain" or "@domain" (catch-all)`,
    };
  }
  if (targets.length === 0) {
    return {
      code: 'ALIAS_TARGET_INVALID',
      message: `alias "${key}": no target addresses (remove the alias instead)`,
    };
  }
  for (const target of targets) {
    const t = splitAddress(target);
    if (t.local === '' || t.domain === '' || /[\s<>]/.test(target)) {
      return {
        code: 'ALIAS_TARGET_INVALID',
        message: `alias "${key}": target "${target}" is not an address of the form "local@domain"`,
      };
    }
  }
  return undefined;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function firstLine(text: string): string {
  return text.split('\n', 1)[0] ?? text;
}
