/**
 * The command line of `sterna sendmail` (and of `mailq`, `newaliases` when called by those
 * names), compatible with Postfix's sendmail(1): the options scripts, cron, mail(1) and PHP's
 * mail() pass. Options come first (combined letters such as "-ti" work, and an option's value
 * may be attached, "-fuser@example.org", or follow it); "--" or the first argument that is not
 * an option ends them; the rest are recipients. Options with no meaning here (delivery and
 * error modes, -v, -n, -U ...) are accepted and ignored; an unknown one is a usage error that
 * names it. Exit codes are sysexits(3)'s. Pure. Trust: parses the caller's arguments.
 */

/** sysexits(3). */
export const EX = {
  OK: 0,
  USAGE: 64,
  DATAERR: 65,
  NOINPUT: 66,
  NOUSER: 67,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  OSERR: 71,
  CANTCREAT: 73,
  IOERR: 74,
  TEMPFAIL: 75,
  NOPERM: 77,
  CONFIG: 78,
} as const;

export type SendmailMode = 'deliver' | 'smtp' | 'list' | 'flush' | 'newaliases';

export interface SendmailOptions {
  mode: SendmailMode;
  /** -t */
  extractRecipients: boolean;
  /** -i, -oi: a line holding only "." does not end the input. */
  ignoreDots: boolean;
  /** -f / -r: the envelope sender as given. */
  sender?: string;
  /** -F */
  fullName?: string;
  /** -C: the configuration file. */
  configFile?: string;
  /** -qR: flush only this domain. */
  flushDomain?: string;
  verbose: boolean;
  recipients: string[];
}

export class SendmailUsageError extends Error {}

/** Options that take a value; the others are flags. */
const WITH_VALUE = new Set(['B', 'C', 'F', 'L', 'N', 'R', 'V', 'X', 'b', 'f', 'h', 'o', 'r']);
/** Flags accepted and ignored: -G gateway, -U initial submission, -m me too, -n no aliases, -v verbose. */
const IGNORED_FLAGS = new Set(['G', 'U', 'm', 'n', 'v']);

/**
 * Parses the arguments after the command name. `invokedAs` is the name the program was called
 * by: "mailq" lists the queue and "newaliases" checks the aliases whatever the options say.
 */
export function parseSendmailArgs(args: readonly string[], invokedAs = 'sendmail'): SendmailOptions {
  const o: SendmailOptions = {
    mode: invokedAs === 'mailq' ? 'list' : invokedAs === 'newaliases' ? 'newaliases' : 'deliver',
    extractRecipients: false,
    ignoreDots: false,
    verbose: false,
    recipients: [],
  };
  let i = 0;
  for (; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      i++;
      break;
    }
    if (!arg.startsWith('-') || arg === '-') break;
    for (let j = 1; j < arg.length; j++) {
      const letter = arg[j]!;
      if (letter === 'q') {
        // -q: flush; -qRsite: flush a domain; -q<interval> (daemon mode): nothing to do here.
        const rest = arg.slice(j + 1);
        if (rest.startsWith('R') && rest.length > 1) o.flushDomain = rest.slice(1);
        if (rest === '' || o.flushDomain !== undefined) o.mode = 'flush';
        else if (!/^\d+[smhdw]?$/.test(rest)) throw new SendmailUsageError(`unsupported option -q${rest}`);
        break;
      }
      if (WITH_VALUE.has(letter)) {
        let value = arg.slice(j + 1);
        if (value === '') {
          const next = args[i + 1];
          if (next === undefined) throw new SendmailUsageError(`option -${letter} needs a value`);
          value = next;
          i++;
        }
        applyValue(o, letter, value);
        break;
      }
      if (letter === 't') o.extractRecipients = true;
      else if (letter === 'i') o.ignoreDots = true;
      else if (letter === 'I') o.mode = 'newaliases';
      else if (IGNORED_FLAGS.has(letter)) o.verbose ||= letter === 'v';
      else throw new SendmailUsageError(`unknown option -${letter}`);
    }
  }
  o.recipients = args.slice(i);
  return o;
}

function applyValue(o: SendmailOptions, letter: string, value: string): void {
  switch (letter) {
    case 'f':
    case 'r':
      o.sender = value;
      return;
    case 'F':
      o.fullName = value;
      return;
    case 'C':
      o.configFile = value;
      return;
    case 'o':
      // -oi as -i; -odb, -odi, -oem, -oee, -om, -o7, -o8, -oA... and the rest are ignored.
      if (value === 'i') o.ignoreDots = true;
      return;
    case 'b':
      o.mode = blankMode(value, o.mode);
      return;
    // -B body type (detected), -L label, -N notify, -R return, -V envid, -X log file, -h hops.
    default:
      return;
  }
}

function blankMode(value: string, current: SendmailMode): SendmailMode {
  switch (value) {
    case 'm':
      return current === 'list' || current === 'newaliases' ? current : 'deliver';
    case 's':
      return 'smtp';
    case 'p':
      return 'list';
    case 'i':
      return 'newaliases';
    case 'd':
    case 'D':
      throw new SendmailUsageError(`-b${value} (run the daemon) is not done by sendmail: run "sterna serve"`);
    default:
      throw new SendmailUsageError(`unsupported mode -b${value} (supported: -bm, -bs, -bp, -bi)`);
  }
}
