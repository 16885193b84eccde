/**
 * `sterna apikey …`: add, list and delete the HTTP submission API's keys (api/keys.ts,
 * docs/http-api.md). A new key is printed once, on stdout, and never stored: only its hash is.
 * A running server sees changes at once (it re-reads the file when it changes).
 * Trust: run by the operator; the arguments are checked anyway (exit code 2 on misuse).
 */
import { parseArgs } from 'node:util';
import { listUsers, normalizeAddress } from '../auth/users.js';
import { addApiKey, ApiKeyFileError, deleteApiKey, listApiKeys } from '../api/keys.js';

export interface ApiKeyCommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** [http_api] keys_file, resolved. */
  keysFile: string;
  /** auth.users_file, resolved: a key is only made for an existing user. */
  usersFile: string;
}

const USAGE = `Usage: sterna apikey COMMAND ...

Commands:
  add USER [--sender ADDR]...   create a key for USER (a user of "sterna user"); prints it once
  list                          list keys: id, user, senders, creation time (never the key)
  delete ID                     delete the key with this id

--sender ADDR binds the key to a sender address (or "@domain"); repeat for several. Without it
the key may use every address the user may send as. See docs/http-api.md.
`;

export async function runApiKeyCommand(argv: string[], io: ApiKeyCommandIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    (command === undefined ? io.stderr : io.stdout).write(USAGE);
    return command === undefined ? 2 : 0;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: { sender: { type: 'string', multiple: true }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
    });
  } catch (err) {
    io.stderr.write(`sterna apikey ${command}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  if (parsed.values.help === true) {
    io.stdout.write(USAGE);
    return 0;
  }
  const args = parsed.positionals;
  try {
    switch (command) {
      case 'add': {
        const user = args[0];
        if (user === undefined || args.length !== 1) return usage(io, 'add needs exactly one USER');
        const users = await listUsers(io.usersFile);
        if (!users.includes(normalizeAddress(user))) {
          io.stderr.write(
            `sterna apikey add: no user ${user} in ${io.usersFile}; add it first with "sterna user add"\n`,
          );
          return 1;
        }
        const { id, key } = await addApiKey(io.keysFile, user, parsed.values.sender ?? []);
        io.stderr.write(
          `key ${id} created for ${normalizeAddress(user)}; it is shown only now, store it safely:\n`,
        );
        io.stdout.write(`${key}\n`);
        return 0;
      }
      case 'list': {
        if (args.length !== 0 || parsed.values.sender !== undefined)
          return usage(io, 'list takes no arguments');
        for (const k of await listApiKeys(io.keysFile)) {
          io.stdout.write(
            `${k.id}  ${k.user}  ${k.senders.length === 0 ? '-' : k.senders.join(',')}  ${k.created}\n`,
          );
        }
        return 0;
      }
      case 'delete': {
        const id = args[0];
        if (id === undefined || args.length !== 1 || parsed.values.sender !== undefined)
          return usage(io, 'delete needs exactly one key ID (see "sterna apikey list")');
        if (!(await deleteApiKey(io.keysFile, id))) {
          io.stderr.write(`sterna apikey delete: no key ${id}\n`);
          return 1;
        }
        io.stderr.write(`key ${id} deleted\n`);
        return 0;
      }
      default:
        return usage(io, `unknown command "${command}"`);
    }
  } catch (err) {
    if (err instanceof ApiKeyFileError) {
      io.stderr.write(`sterna apikey ${command}: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

function usage(io: ApiKeyCommandIo, why: string): number {
  io.stderr.write(`sterna apikey: ${why}\n\n${USAGE}`);
  return 2;
}
