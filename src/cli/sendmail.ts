/**
 * `sterna sendmail`: the sendmail(1) command as scripts, cron, mail(1) and PHP's mail() call it,
 * compatible with Postfix's (docs/sendmail.md). Also `mailq` (the queue list) and `newaliases`
 * when sterna is called by those names. A message is read from stdin (or by SMTP with -bs,
 * sendmail-bs.ts), checked with the DATA body rules (LF line endings as scripts write them
 * become CRLF), and written into the maildrop (queue/maildrop-writer.ts), from which the server
 * queues it, now if it runs or at its next start. No network port and no password: the
 * submitter is the Unix user, which the kernel records as the file's owner.
 * Exit codes are sysexits(3)'s (sendmail-options.ts EX), each failure with one line saying
 * what to fix. Trust: runs with the rights of whoever calls it; the server checks everything
 * again (queue/maildrop-pickup.ts).
 */
import { constants } from 'node:fs';
import { access, readdir, stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { loadAliasFile } from '../policy/aliases.js';
import { mayUseLocalSender, originDomain, type LocalSubmitter } from '../policy/local-sender.js';
import { isQueueId } from '../queue/ids.js';
import { MAILDROP_DIR, type MaildropRecord } from '../queue/maildrop-format.js';
import { MaildropWriter } from '../queue/maildrop-writer.js';
import { formatMailbox, parseForwardPath, parseReversePath } from '../smtp/address.js';
import { BdatDecoder, type DataError } from '../smtp/data-decoder.js';
import { runQueueCommand } from './queue-command.js';
import { addressList, qualify } from './sendmail-addresses.js';
import { runStdioSmtp } from './sendmail-bs.js';
import { DotEnd, HeaderSplitter } from './sendmail-input.js';
import { EX, parseSendmailArgs, SendmailUsageError, type SendmailOptions } from './sendmail-options.js';

/** Where the configuration is looked for without -C or STERNA_CONFIG. */
export const DEFAULT_CONFIG_FILE = '/etc/sterna/sterna.toml';

export interface SendmailIo {
  stdin: AsyncIterable<Buffer | string> & { destroy?: () => void };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

const HELP = `Usage: sterna sendmail [options] [--] [recipient ...]
       sendmail, mailq, newaliases (sterna called by those names)

Reads a message from stdin and queues it for the recipients (a bare name gets @origin).
  -t            also take recipients from To, Cc and Bcc (Bcc is removed from the message)
  -i, -oi       a line holding only "." does not end the message
  -f SENDER     envelope sender (yours unless you are root, the server user or trusted)
  -F NAME       full name for the From header added when the message has none
  -C FILE       configuration file (default: $STERNA_CONFIG, else ${DEFAULT_CONFIG_FILE})
  -bs           speak SMTP on stdin and stdout
  -bp           list the queue (mailq)         -q    flush the queue (-qRdomain: one domain)
  -bi           check the aliases (newaliases)  -v    say where the message went
Ignored for compatibility: -odb -odi -odq -oem -oee -oep -oeq -oew -om -o7 -o8 -n -m -U -G -B -N -R -V -X -L -h
Exit codes (sysexits): 0 ok, 64 usage, 65 bad message, 67 bad recipient, 73 maildrop not writable,
75 try again later, 77 sender not allowed, 78 configuration. See docs/sendmail.md.
`;

class Failure extends Error {
  constructor(
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** Runs the command; `invokedAs` is "sendmail", "mailq" or "newaliases". Resolves to the exit code. */
export async function runSendmail(args: string[], invokedAs: string, io: SendmailIo): Promise<number> {
  if (args[0] === '--help' || args[0] === '-h') {
    io.stdout.write(HELP);
    return EX.OK;
  }
  try {
    let opts: SendmailOptions;
    try {
      opts = parseSendmailArgs(args, invokedAs);
    } catch (err) {
      if (err instanceof SendmailUsageError)
        throw new Failure(EX.USAGE, `${err.message} (see: sterna sendmail --help)`);
      throw err;
    }
    const config = await configFor(opts, io.env);
    switch (opts.mode) {
      case 'list':
      case 'flush':
        return await queueCommand(opts, config, io);
      case 'newaliases':
        return await newaliases(config, io);
      case 'smtp':
      case 'deliver':
        return await submit(opts, config, io);
      default: {
        const never: never = opts.mode;
        throw new Error(`unhandled mode ${String(never)}`);
      }
    }
  } catch (err) {
    if (err instanceof Failure) {
      io.stderr.write(`${invokedAs}: ${err.message}\n`);
      return err.exitCode;
    }
    io.stderr.write(
      `${invokedAs}: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    return EX.SOFTWARE;
  }
}

async function configFor(opts: SendmailOptions, env: NodeJS.ProcessEnv): Promise<Config> {
  const fromEnv = env['STERNA_CONFIG'];
  const file = opts.configFile ?? (fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_CONFIG_FILE);
  try {
    return await loadConfig(file, { env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const hint =
      opts.configFile === undefined && (fromEnv === undefined || fromEnv === '')
        ? ` (set STERNA_CONFIG or use -C FILE to name the server's configuration)`
        : '';
    throw new Failure(EX.CONFIG, `${err.source}: ${err.problems.map((p) => p.message).join('; ')}${hint}`);
  }
}

/** The calling Unix user, as the kernel knows it. */
function currentUser(): LocalSubmitter {
  try {
    const u = userInfo();
    return { login: u.username, uid: u.uid };
  } catch {
    const uid = process.getuid?.() ?? -1;
    throw new Failure(
      EX.NOUSER,
      `your uid ${uid} has no entry in the user database (/etc/passwd): add one, so that the mail can name its sender`,
    );
  }
}

/** The uid the server runs as: the owner of data_dir. */
async function serverUid(config: Config): Promise<number> {
  try {
    return (await stat(config.data_dir)).uid;
  } catch (err) {
    throw new Failure(
      EX.CANTCREAT,
      `data_dir ${config.data_dir} cannot be reached (${codeOf(err)}): start the server once ("sterna serve") to create it, or fix the configuration's data_dir`,
    );
  }
}

async function queueCommand(opts: SendmailOptions, config: Config, io: SendmailIo): Promise<number> {
  const user = currentUser();
  const owner = await serverUid(config);
  if (user.uid !== 0 && user.uid !== owner)
    throw new Failure(
      EX.NOPERM,
      `only root or the server's user (uid ${owner}) may ${opts.mode === 'list' ? 'list' : 'flush'} the queue`,
    );
  const argv =
    opts.mode === 'list'
      ? ['list']
      : ['flush', ...(opts.flushDomain !== undefined ? ['--domain', opts.flushDomain] : [])];
  const code = await runQueueCommand(argv, { stdout: io.stdout, stderr: io.stderr, config });
  if (opts.mode === 'list') {
    const waiting = (await readdir(join(config.data_dir, MAILDROP_DIR)).catch(() => [])).filter(isQueueId);
    if (waiting.length > 0)
      io.stdout.write(`${waiting.length} message(s) in the maildrop, not yet picked up by the server\n`);
  }
  return code === 0 ? EX.OK : code === 2 ? EX.USAGE : EX.TEMPFAIL;
}

async function newaliases(config: Config, io: SendmailIo): Promise<number> {
  if (config.aliases_file === '') {
    io.stdout.write('newaliases: aliases are in the configuration ([aliases]); nothing to rebuild\n');
    return EX.OK;
  }
  try {
    const table = await loadAliasFile(config.aliases_file);
    io.stdout.write(
      `newaliases: ${config.aliases_file}: ${Object.keys(table).length} aliases, ok; the server reads them again on SIGHUP (systemctl reload sterna)\n`,
    );
    return EX.OK;
  } catch (err) {
    throw new Failure(EX.DATAERR, err instanceof Error ? err.message : String(err));
  }
}

/** An address checked as a recipient (a bare name gets @origin); a bad one exits EX_NOUSER. */
function recipientAddress(text: string, config: Config, where: string): string {
  const path = parseForwardPath(`<${qualify(text, originDomain(config))}>`, { smtputf8: true });
  if (!path.ok)
    throw new Failure(EX.NOUSER, `${where}: "${text}" is not a valid address (${path.error.detail})`);
  return formatMailbox(path.mailbox);
}

/** The -f sender: '' for the null sender ("" or "<>"); a bare name gets @origin. */
function senderAddress(text: string, config: Config): string {
  const bare = text.replace(/^<(.*)>$/, '$1').trim();
  if (bare === '') return '';
  const path = parseReversePath(`<${qualify(bare, originDomain(config))}>`, { smtputf8: true });
  if (!path.ok || path.mailbox === null)
    throw new Failure(
      EX.USAGE,
      `-f "${text}" is not a valid address${path.ok ? '' : ` (${path.error.detail})`}`,
    );
  return formatMailbox(path.mailbox);
}

async function submit(opts: SendmailOptions, config: Config, io: SendmailIo): Promise<number> {
  const user = currentUser();
  const owner = await serverUid(config);
  const maildropDir = join(config.data_dir, MAILDROP_DIR);
  // Before reading a byte: a maildrop we cannot write fails now, not after the whole message.
  await access(maildropDir, constants.W_OK | constants.X_OK).catch((err: unknown) => {
    throw maildropFailure(err, maildropDir);
  });
  if (opts.mode === 'smtp') {
    return runStdioSmtp({
      config,
      user,
      serverUid: owner,
      maildropDir,
      ...(opts.fullName !== undefined ? { fullName: opts.fullName } : {}),
      input: io.stdin,
      output: io.stdout,
      stderr: io.stderr,
    });
  }
  const sender = opts.sender === undefined ? null : senderAddress(opts.sender, config);
  if (sender !== null && !mayUseLocalSender(config, user, owner, sender))
    throw new Failure(
      EX.NOPERM,
      `${user.login} may not send as <${sender}>: leave out -f (your address is ${user.login}@${originDomain(config)}), or ask the administrator to add it to [sendmail] allowed_senders`,
    );
  const recipients = opts.recipients
    .flatMap((a) => addressList(a))
    .map((a) => recipientAddress(a, config, 'recipient'));
  if (!opts.extractRecipients && recipients.length === 0)
    throw new Failure(
      EX.USAGE,
      'no recipients: name them as arguments, or use -t to take them from To, Cc and Bcc',
    );

  const writer = new MaildropWriter(maildropDir);
  try {
    const fromHeaders = await copyMessage(opts, config, io, writer);
    for (const a of fromHeaders) recipients.push(recipientAddress(a, config, 'To/Cc/Bcc header'));
    const unique = [...new Map(recipients.map((r) => [r.toLowerCase(), r])).values()];
    if (unique.length === 0)
      throw new Failure(EX.DATAERR, 'no recipients: -t found no address in the To, Cc or Bcc headers');
    if (unique.length > config.limits.recipients)
      throw new Failure(
        EX.USAGE,
        `${unique.length} recipients, more than limits.recipients (${config.limits.recipients}): send the message in parts`,
      );
    const record: MaildropRecord = {
      v: 1,
      sender,
      recipients: unique,
      via: 'sendmail',
      ...(opts.fullName !== undefined ? { full_name: opts.fullName } : {}),
    };
    await writer.commit(record).catch((err: unknown) => {
      throw maildropFailure(err, maildropDir);
    });
  } catch (err) {
    await writer.abort();
    throw err;
  }
  if (opts.verbose) io.stderr.write(`sendmail: queued in the maildrop as ${writer.id}\n`);
  return EX.OK;
}

/**
 * Reads stdin into the maildrop file: the dot rule (without -i), the body rules, the header
 * section (Bcc removed). Returns the header recipients when -t is given.
 */
async function copyMessage(
  opts: SendmailOptions,
  config: Config,
  io: SendmailIo,
  writer: MaildropWriter,
): Promise<string[]> {
  const dots = opts.ignoreDots ? null : new DotEnd();
  const decoder = new BdatDecoder({
    maxMessageBytes: config.limits.message_bytes,
    maxLineBytes: config.limits.text_line_bytes,
    bareLineEndings: 'normalize',
  });
  const splitter = new HeaderSplitter({ extractRecipients: opts.extractRecipients });
  let recipients: string[] | null = null;
  const write = async (b: Buffer): Promise<void> => {
    if (b.length === 0) return;
    await writer.write(b).catch((err: unknown) => {
      throw maildropFailure(err, join(config.data_dir, MAILDROP_DIR));
    });
  };
  const pass = async (pieces: Buffer[], end: boolean): Promise<void> => {
    if (decoder.error !== null) throw new Failure(EX.DATAERR, dataErrorText(decoder.error, config));
    for (const piece of pieces) {
      if (recipients !== null) {
        await write(piece);
        continue;
      }
      const split = splitter.push(piece);
      if (split !== null) {
        recipients = split.result.recipients;
        await write(split.result.header);
        await write(split.rest);
      }
    }
    if (end && recipients === null) {
      const split = splitter.end();
      recipients = split.result.recipients;
      await write(split.result.header);
      await write(split.rest);
    }
  };
  try {
    for await (const raw of io.stdin) {
      const chunk = typeof raw === 'string' ? Buffer.from(raw) : raw;
      const input = dots === null ? chunk : dots.push(chunk);
      await pass(decoder.write(input), false);
      if (dots?.ended === true) break;
    }
  } catch (err) {
    if (err instanceof Failure) throw err;
    throw new Failure(EX.IOERR, `cannot read the message from stdin: ${codeOf(err)}`);
  }
  dots?.end();
  await pass(decoder.end(), true);
  return recipients ?? [];
}

function dataErrorText(error: DataError, config: Config): string {
  switch (error) {
    case 'too-big':
      return `the message is larger than limits.message_bytes (${config.limits.message_bytes} octets): send a smaller one`;
    case 'line-too-long':
      return `a line is longer than limits.text_line_bytes (${config.limits.text_line_bytes} octets, line end included): wrap it, or encode the message (quoted-printable or base64)`;
    case 'nul':
      return 'the message holds a NUL octet: binary content must be encoded (base64)';
    case 'bare-lf':
      // The decoder normalises bare line endings here; kept for exhaustiveness.
      return 'the message holds a bare CR or LF';
    default: {
      const never: never = error;
      throw new Error(`unhandled data error ${String(never)}`);
    }
  }
}

function codeOf(err: unknown): string {
  return err instanceof Error && 'code' in err && typeof err.code === 'string' ? err.code : String(err);
}

/** A maildrop that cannot be written: EX_TEMPFAIL when it may pass, EX_CANTCREAT otherwise. */
function maildropFailure(err: unknown, dir: string): Failure {
  if (err instanceof Failure) return err;
  const code = codeOf(err);
  switch (code) {
    case 'ENOENT':
    case 'ENOTDIR':
      return new Failure(
        EX.CANTCREAT,
        `the maildrop ${dir} does not exist: start the server once ("sterna serve") to create it, or run sendmail with the server's configuration (-C FILE or STERNA_CONFIG)`,
      );
    case 'EACCES':
    case 'EPERM':
      return new Failure(
        EX.CANTCREAT,
        `the maildrop ${dir} is not writable for you (${code}): it must have mode 3733 and data_dir must be searchable by others (chmod o+x); see docs/sendmail.md`,
      );
    case 'ENOSPC':
    case 'EDQUOT':
      return new Failure(
        EX.TEMPFAIL,
        `no space left for the maildrop ${dir} (${code}): free some space and try again`,
      );
    default:
      return new Failure(EX.TEMPFAIL, `cannot write to the maildrop ${dir} (${code}): try again later`);
  }
}
