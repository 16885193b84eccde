#!/usr/bin/env -S node --max-semi-space-size=16
// The V8 flag sets the young generation's semi-spaces to at most 16 MiB (V8's own default on
// 64-bit, stated so that it holds across Node versions). Every message allocates ~250 KB of
// short-lived objects; with 1 MiB semi-spaces the scavenger ran so often that garbage collection
// took 15 % of the CPU of Maildir delivery, against 5 % with 16 MiB, for ~25 MiB more resident
// memory per process and still ~2 KiB per idle connection (docs/benchmarks.md). Workers inherit it.
/**
 * The `sterna` command: serve, check-config, user, queue. Parses arguments, prints help, maps errors
 * to exit codes (0 ok, 1 operational failure, 2 usage or configuration error).
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { ConfigError, configWarnings, formatConfigError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ownershipProblems } from '../delivery/local/ownership.js';
import type { runSendmail } from './sendmail.js';

const HELP = `sterna — an SMTP server: submission, transfer and local delivery

Usage:
  sterna serve [--config FILE]         run the server (embedded defaults without --config)
  sterna check-config [--config FILE]  validate a configuration file and exit
  sterna user add|del|passwd|list ...  manage the users file (see: sterna user --help)
  sterna queue list|show|flush|...     inspect and manage the queue (see: sterna queue --help)
  sterna limits [--json]               the rate-limit counts (users, sender domains, networks)
  sterna apikey add|list|delete ...    keys of the HTTP submission API (see: sterna apikey --help)
  sterna dkim keygen|show ...          DKIM signing keys and their DNS records (see: sterna dkim --help)
  sterna dmarc report --now            send the DMARC aggregate reports now (see: sterna dmarc --help)
  sterna diagnose [DOMAIN]             check DNS, TLS and blocklists for delivery (see: sterna diagnose --help)
  sterna log QID|--sender A|--rcpt A the story of messages from the JSON log (see: sterna log --help)
  sterna sendmail [options] [rcpt ...] the sendmail command; also as sendmail, mailq, newaliases
  sterna --version                     print the version
  sterna COMMAND --help                help for one command

Exit codes: 0 success, 1 failure, 2 usage or configuration error.
`;

const SERVE_HELP = `Usage: sterna serve [--config FILE]

Runs the server. Without --config it uses the embedded defaults: listeners on 127.0.0.1
(smtp 2525, submission 2587, submissions 2465), data directory ./data, a generated test
certificate, local domains "localhost" and this machine's hostname.
Signals: SIGHUP reloads certificates and aliases; SIGTERM/SIGINT shut down cleanly.
`;

const CHECK_HELP = `Usage: sterna check-config [--config FILE]

Loads and validates the configuration exactly as "serve" would, prints the problems and
exits with 2 if there are any, or prints "configuration ok" and exits with 0.
`;

function version(): string {
  const pkg: unknown = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg ? String(pkg.version) : 'unknown';
}

/** Takes "--config FILE" / "--config=FILE" out of args; returns the file or undefined. */
function takeConfig(args: string[]): string | undefined | Error {
  let file: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--config' || a === '-c') {
      file = args[i + 1];
      if (file === undefined) return new Error('--config needs a file name');
      args.splice(i, 2);
      i--;
    } else if (a.startsWith('--config=')) {
      file = a.slice('--config='.length);
      args.splice(i, 1);
      i--;
    }
  }
  return file;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined ? 2 : 0;
  }
  if (command === '--version' || command === '-V') {
    process.stdout.write(`sterna ${version()}\n`);
    return 0;
  }
  switch (command) {
    case 'serve':
    case 'check-config': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(command === 'serve' ? SERVE_HELP : CHECK_HELP);
        return 0;
      }
      const file = takeConfig(rest);
      if (file instanceof Error || rest.length > 0) {
        process.stderr.write(
          `sterna ${command}: ${file instanceof Error ? file.message : `unexpected argument "${rest[0] ?? ''}"`}\n`,
        );
        return 2;
      }
      let config;
      try {
        config = await loadConfig(file);
        // The DKIM key files are part of the configuration: missing, open or unreadable stops here.
        const { DkimKeyStore } = await import('../mailauth/dkim-keys.js');
        await DkimKeyStore.load(config, (file ?? process.env['STERNA_CONFIG']) || '(embedded defaults)');
        // So are the [tls] files: unreadable, unparsable or mismatched stops here, naming the key.
        const { checkTlsFiles, tlsFilesConfig } = await import('../server/tls.js');
        await checkTlsFiles(tlsFilesConfig(config));
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(`${formatConfigError(err)}\n`);
          return 2;
        }
        throw err;
      }
      const source = file ?? process.env['STERNA_CONFIG'];
      const machineProblems = ownershipProblems(config.local_delivery);
      if (machineProblems.length > 0) {
        const from = source === undefined || source === '' ? '(embedded defaults)' : source;
        process.stderr.write(`${formatConfigError(new ConfigError(from, machineProblems))}\n`);
        return 2;
      }
      if (command === 'check-config') {
        for (const w of configWarnings(config)) process.stderr.write(`sterna check-config: warning: ${w}\n`);
        process.stdout.write(
          `configuration ok${source === undefined || source === '' ? ' (embedded defaults)' : `: ${source}`}\n`,
        );
        return 0;
      }
      return (await import('../main.js')).serve(config, file);
    }
    case 'user': {
      let usersFile: string;
      const file = takeConfig(rest);
      if (file instanceof Error) {
        process.stderr.write(`sterna user: ${file.message}\n`);
        return 2;
      }
      try {
        usersFile = (await loadConfig(file)).auth.users_file;
      } catch (err) {
        if (err instanceof ConfigError) {
          process.stderr.write(`${formatConfigError(err)}\n`);
          return 2;
        }
        throw err;
      }
      return (await import('./user-command.js')).runUserCommand(rest, {
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
        usersFile,
      });
    }
    case 'queue': {
      const config = await commandConfig('queue', rest);
      if (typeof config === 'number') return config;
      return (await import('./queue-command.js')).runQueueCommand(rest, {
        stdout: process.stdout,
        stderr: process.stderr,
        config,
      });
    }
    case 'limits': {
      const config = await commandConfig('limits', rest);
      if (typeof config === 'number') return config;
      return (await import('./queue-command.js')).runQueueCommand(['limits', ...rest], {
        stdout: process.stdout,
        stderr: process.stderr,
        config,
      });
    }
    case 'apikey': {
      const config = await commandConfig('apikey', rest);
      if (typeof config === 'number') return config;
      return (await import('./apikey-command.js')).runApiKeyCommand(rest, {
        stdout: process.stdout,
        stderr: process.stderr,
        keysFile: config.http_api.keys_file,
        usersFile: config.auth.users_file,
      });
    }
    case 'diagnose': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write((await import('./diagnose-command.js')).DIAGNOSE_HELP);
        return 0;
      }
      const config = await commandConfig('diagnose', rest);
      if (typeof config === 'number') return config;
      return (await import('./diagnose-command.js')).runDiagnoseCommand(rest, {
        stdout: process.stdout,
        stderr: process.stderr,
        config,
      });
    }
    case 'log':
      return (await import('./log-command.js')).runLogCommand(rest, {
        stdin: process.stdin,
        stdout: process.stdout,
        stderr: process.stderr,
      });
    case 'dkim': {
      const config = await commandConfig('dkim', rest);
      if (typeof config === 'number') return config;
      return (await import('./dkim-command.js')).runDkimCommand(rest, {
        stdout: process.stdout,
        stderr: process.stderr,
        config,
      });
    }
    case 'dmarc': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write((await import('./dmarc-command.js')).DMARC_HELP);
        return 0;
      }
      const config = await commandConfig('dmarc', rest);
      if (typeof config === 'number') return config;
      return (await import('./dmarc-command.js')).runDmarcCommand(rest, {
        stdout: process.stdout,
        stderr: process.stderr,
        config,
      });
    }
    case 'sendmail':
      return (await import('./sendmail.js')).runSendmail(rest, 'sendmail', sendmailIo());
    default:
      process.stderr.write(`sterna: unknown command "${command}"\n\n${HELP}`);
      return 2;
  }
}

function sendmailIo(): Parameters<typeof runSendmail>[2] {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env };
}

// Each command's module is loaded when that command runs, so that `sterna sendmail` (from cron,
// once per message) and `sterna queue` do not load the server, mailauth and fastify first.
// Installed as /usr/sbin/sendmail (a symbolic link, docs/sendmail.md), or as mailq / newaliases,
// sterna is that command.
const invokedAs = basename(process.argv[1] ?? '');
const run = ['sendmail', 'mailq', 'newaliases'].includes(invokedAs)
  ? import('./sendmail.js').then((m) => m.runSendmail(process.argv.slice(2), invokedAs, sendmailIo()))
  : main(process.argv.slice(2));

run.then(
  (code) => {
    // serve keeps running: it resolves only on shutdown, with its exit code.
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`sterna: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);

/**
 * The configuration a subcommand runs with (--config FILE taken out of `args`), or exit code 2
 * after saying what is wrong with the option or the file.
 */
async function commandConfig(command: string, args: string[]): Promise<Config | number> {
  const file = takeConfig(args);
  if (file instanceof Error) {
    process.stderr.write(`sterna ${command}: ${file.message}\n`);
    return 2;
  }
  try {
    return await loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${formatConfigError(err)}\n`);
      return 2;
    }
    throw err;
  }
}
