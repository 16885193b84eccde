/**
 * `sterna user …`: add, delete, re-password and list the users who may authenticate.
 * Changes go through the users file writers (lock, atomic replace); a running server picks
 * them up by itself. Passwords are read from stdin (first line) when it is not a terminal, or
 * asked twice without echo on a terminal, and are never printed.
 *
 * Trust: run by the operator; the arguments are checked anyway (exit code 2 on misuse).
 */

import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import {
  addUser,
  deleteUser,
  isValidAddress,
  isValidSendAs,
  listUsers,
  setPassword,
  UserFileError,
} from '../auth/users.js';

export interface UserCommandIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** Resolved path of the users file (auth.users_file, or data_dir/users.json). */
  usersFile: string;
}

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

const USAGE = `Usage: sterna user COMMAND ...

Commands:
  add ADDRESS [--cram-md5] [--send-as ADDR]...   add a user; password from stdin or prompted
  del ADDRESS                                    delete a user
  passwd ADDRESS                                 change a user's password
  list                                           list users, one per line

Run "sterna user COMMAND --help" for details.
`;

const HELP: Record<string, string> = {
  add: `Usage: sterna user add ADDRESS [--cram-md5] [--send-as ADDR]...

Adds ADDRESS as a user. The password is the first line of standard input, or is asked
twice when standard input is a terminal.

  --cram-md5       also store a CRAM-MD5 secret; it is password-equivalent (see
                   docs/authentication.md), so only use it for clients that need it
  --send-as ADDR   the user may also send as ADDR (an address, or "@domain" for any
                   address in that domain); repeat for several
`,
  del: `Usage: sterna user del ADDRESS

Deletes the user ADDRESS.
`,
  passwd: `Usage: sterna user passwd ADDRESS

Sets a new password for ADDRESS (and a new CRAM-MD5 secret if the user has one). The
password is the first line of standard input, or is asked twice on a terminal.
`,
  list: `Usage: sterna user list

Lists the users, one address per line.
`,
};

class UsageError extends Error {}
class InputError extends Error {}

/** Runs `sterna user ARGV...`; resolves to the exit code (0 ok, 1 failure, 2 usage). */
export async function runUserCommand(argv: string[], io: UserCommandIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined) {
    io.stderr.write(USAGE);
    return EXIT_USAGE;
  }
  if (command === '--help' || command === '-h' || command === 'help') {
    io.stdout.write(USAGE);
    return EXIT_OK;
  }
  const help = HELP[command];
  if (help === undefined) {
    io.stderr.write(`sterna user: unknown command "${command}"\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  try {
    const args = parseCommandArgs(command, rest);
    if (args.help) {
      io.stdout.write(help);
      return EXIT_OK;
    }
    return await runParsed(command, args, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`sterna user ${command}: ${err.message}\n\n${help}`);
      return EXIT_USAGE;
    }
    if (err instanceof UserFileError) {
      const hint = err.code === 'BAD_FILE' ? ` (in ${io.usersFile})` : '';
      io.stderr.write(`sterna user ${command}: ${err.message}${hint}\n`);
      return err.code === 'BAD_ADDRESS' ? EXIT_USAGE : EXIT_FAILURE;
    }
    if (err instanceof InputError) {
      io.stderr.write(`sterna user ${command}: ${err.message}\n`);
      return EXIT_FAILURE;
    }
    io.stderr.write(`sterna user ${command}: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT_FAILURE;
  }
}

interface ParsedArgs {
  help: boolean;
  address: string;
  cram: boolean;
  sendAs: string[];
}

function parseCommandArgs(command: string, rest: string[]): ParsedArgs {
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        help: { type: 'boolean', short: 'h' },
        'cram-md5': { type: 'boolean' },
        'send-as': { type: 'string', multiple: true },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const values = parsed.values;
  if (command !== 'add' && (values['cram-md5'] !== undefined || values['send-as'] !== undefined)) {
    throw new UsageError('--cram-md5 and --send-as only go with "add"');
  }
  const help = values.help === true;
  const positionals = parsed.positionals;
  const wanted = command === 'list' ? 0 : 1;
  if (!help && positionals.length !== wanted) {
    throw new UsageError(wanted === 0 ? 'takes no arguments' : 'expects exactly one ADDRESS');
  }
  const address = positionals[0] ?? '';
  if (!help && wanted === 1 && !isValidAddress(address)) {
    throw new UsageError(`"${address}" is not an address of the form local@domain`);
  }
  const sendAs = values['send-as'] ?? [];
  for (const entry of sendAs) {
    if (!isValidSendAs(entry))
      throw new UsageError(`--send-as "${entry}" is neither an address nor "@domain"`);
  }
  return { help, address, cram: values['cram-md5'] === true, sendAs };
}

async function runParsed(command: string, args: ParsedArgs, io: UserCommandIo): Promise<number> {
  switch (command) {
    case 'list': {
      const users = await listUsers(io.usersFile);
      io.stdout.write(users.map((u) => `${u}\n`).join(''));
      return EXIT_OK;
    }
    case 'del':
      await deleteUser(io.usersFile, args.address);
      io.stdout.write(`deleted user ${args.address.toLowerCase()}\n`);
      return EXIT_OK;
    case 'add': {
      // Check before asking for a password, so the operator is not made to type it for nothing;
      // addUser checks again under the lock.
      if ((await listUsers(io.usersFile)).includes(args.address.toLowerCase())) {
        throw new UserFileError('USER_EXISTS', `user ${args.address.toLowerCase()} already exists`);
      }
      const password = await readPassword(io);
      await addUser(io.usersFile, args.address, password, { cram: args.cram, sendAs: args.sendAs });
      io.stdout.write(`added user ${args.address.toLowerCase()}\n`);
      return EXIT_OK;
    }
    case 'passwd': {
      if (!(await listUsers(io.usersFile)).includes(args.address.toLowerCase())) {
        throw new UserFileError('USER_NOT_FOUND', `no user ${args.address.toLowerCase()}`);
      }
      const password = await readPassword(io);
      await setPassword(io.usersFile, args.address, password);
      io.stdout.write(`changed password of ${args.address.toLowerCase()}\n`);
      return EXIT_OK;
    }
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

const MAX_PASSWORD_BYTES = 1024;

/** What is wrong with a new password, or null: for `sterna user` and the admin API alike. */
export function passwordProblem(password: string): string | null {
  if (password === '') return 'the password must not be empty';
  if (password.includes('\0')) return 'the password must not contain a NUL character';
  if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES)
    return `the password is longer than ${MAX_PASSWORD_BYTES} bytes`;
  return null;
}

async function readPassword(io: UserCommandIo): Promise<string> {
  const password = io.stdin.isTTY === true ? await promptTwice(io) : await readFirstLine(io.stdin);
  const problem = passwordProblem(password);
  if (problem !== null) throw new InputError(problem);
  return password;
}

/** The first line of a non-terminal stdin, without its line ending. */
async function readFirstLine(stdin: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of stdin) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    const nl = buf.indexOf(0x0a);
    chunks.push(nl >= 0 ? buf.subarray(0, nl) : buf);
    length += nl >= 0 ? nl : buf.length;
    if (length > MAX_PASSWORD_BYTES)
      throw new InputError(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`);
    if (nl >= 0) break;
  }
  if (chunks.length === 0) throw new InputError('no password on standard input');
  return Buffer.concat(chunks).toString('utf8').replace(/\r$/, '');
}

/** Asks for the password twice on the terminal, echo off. */
async function promptTwice(io: UserCommandIo): Promise<string> {
  // readline echoes what is typed to its output: give it one that swallows everything.
  const muted = new Writable({
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
  const rl = createInterface({ input: io.stdin, output: muted, terminal: true });
  const lines = rl[Symbol.asyncIterator]();
  // Ctrl-C with echo off arrives as a readline event, not as a signal.
  const interrupted = new Promise<never>((_resolve, reject) => {
    rl.on('SIGINT', () => reject(new InputError('interrupted')));
  });
  interrupted.catch(() => undefined);
  const ask = async (prompt: string): Promise<string> => {
    io.stderr.write(prompt);
    const line = await Promise.race([lines.next(), interrupted]);
    io.stderr.write('\n');
    if (line.done === true) throw new InputError('no password given');
    return line.value;
  };
  try {
    const first = await ask('Password: ');
    const second = await ask('Retype password: ');
    if (first !== second) throw new InputError('the passwords do not match');
    return first;
  } finally {
    rl.close();
  }
}
