/**
 * One command line -> a Command (RFC 5321 4.1, RFC 3030, 3207, 4954). Pure; untrusted input.
 * The argument text is kept as a string; the session parses paths and parameters with
 * address.ts and params.ts, because their meaning depends on session state (SMTPUTF8).
 */

export type Verb =
  | 'HELO'
  | 'EHLO'
  | 'MAIL'
  | 'RCPT'
  | 'DATA'
  | 'BDAT'
  | 'RSET'
  | 'VRFY'
  | 'EXPN'
  | 'NOOP'
  | 'HELP'
  | 'QUIT'
  | 'STARTTLS'
  | 'AUTH';

const VERBS: ReadonlySet<string> = new Set<Verb>([
  'HELO',
  'EHLO',
  'MAIL',
  'RCPT',
  'DATA',
  'BDAT',
  'RSET',
  'VRFY',
  'EXPN',
  'NOOP',
  'HELP',
  'QUIT',
  'STARTTLS',
  'AUTH',
]);

/** Verbs that take no argument (RFC 5321 4.1.1: a parameter is a syntax error). */
const NO_ARGS: ReadonlySet<Verb> = new Set<Verb>(['DATA', 'RSET', 'QUIT', 'STARTTLS']);

export type ParsedCommand =
  | { kind: 'command'; verb: Verb; args: string }
  | { kind: 'unknown'; verb: string }
  | { kind: 'http'; verb: string }
  | { kind: 'syntax'; verb: Verb; detail: string }
  | { kind: 'bad-bytes'; reason: 'nul' | 'utf8' };

const HTTP_VERBS = new Set(['GET', 'POST', 'HEAD', 'PUT', 'CONNECT', 'OPTIONS', 'DELETE', 'PATCH']);
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Parses one command line (without its CRLF). */
export function parseCommand(line: Buffer): ParsedCommand {
  if (line.includes(0)) return { kind: 'bad-bytes', reason: 'nul' };
  let text: string;
  try {
    text = utf8.decode(line);
  } catch {
    return { kind: 'bad-bytes', reason: 'utf8' };
  }
  const space = text.indexOf(' ');
  const word = (space === -1 ? text : text.slice(0, space)).toUpperCase();
  const rest = space === -1 ? '' : text.slice(space + 1);
  if (!VERBS.has(word)) {
    if (HTTP_VERBS.has(word) && /\bHTTP\/\d/i.test(rest)) return { kind: 'http', verb: word };
    return { kind: 'unknown', verb: word.slice(0, 32) };
  }
  const verb = word as Verb; // checked against VERBS just above
  const args = rest.trim();
  if (NO_ARGS.has(verb) && args !== '') {
    return { kind: 'syntax', verb, detail: `${verb} takes no parameters` };
  }
  if (verb === 'MAIL' || verb === 'RCPT') {
    const prefix = verb === 'MAIL' ? 'FROM:' : 'TO:';
    if (rest.slice(0, prefix.length).toUpperCase() !== prefix) {
      return { kind: 'syntax', verb, detail: `expected "${verb} ${prefix}<address>"` };
    }
    return { kind: 'command', verb, args: rest.slice(prefix.length) };
  }
  return { kind: 'command', verb, args };
}
