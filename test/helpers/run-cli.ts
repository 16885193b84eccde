/**
 * Runs the compiled `sterna` command as a child process, as an operator does, and returns its
 * exit code and output: for tests of commands that print a report and exit (diagnose, log).
 * STERNA_CONFIG is cleared so only a --config the test passes counts. Test code only.
 */
import { execFile } from 'node:child_process';
import { STERNA_CLI } from './process.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `sterna ARGS`, with `input` on stdin when given; killed after 30 s. */
export function runSterna(
  args: readonly string[],
  opts: { input?: string | Buffer } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [STERNA_CLI, ...args],
      { timeout: 30_000, env: { ...process.env, STERNA_CONFIG: '' }, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    else child.stdin?.end();
  });
}
