/**
 * Runs the compiled `sterna` command as a child process, as an operator does, and returns its
 * exit code and output: for tests of commands that print a report and exit (diagnose, log); or
 * runs a command's function in this process with its output collected (runInProcess).
 * STERNA_CONFIG is cleared so only a --config the test passes counts. Test code only.
 */
import { execFile } from 'node:child_process';
import { Writable } from 'node:stream';
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

/** A command run in this process (`sterna queue`, `sterna dmarc` …), stdout and stderr collected. */
export async function runInProcess(
  run: (io: { stdout: Writable; stderr: Writable }) => Promise<number>,
): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const collect = (add: (s: string) => void): Writable =>
    new Writable({
      write(chunk: Buffer | string, _enc, cb) {
        add(chunk.toString());
        cb();
      },
    });
  const code = await run({ stdout: collect((s) => (stdout += s)), stderr: collect((s) => (stderr += s)) });
  return { code, stdout, stderr };
}
