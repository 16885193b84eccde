/**
 * A private redis-server for tests: its own port on 127.0.0.1, its own config and working
 * directory in a temporary directory, no persistence (`save ""`, no AOF), stopped by its pid.
 * Under CI=true a missing redis-server fails the test (.ci/run installs it).
 * Trust: test code only.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { freePort, sleep } from './process.js';
import { findTool, requireTool, type ToolRequirement } from './tools.js';

export interface RedisInstance {
  port: number;
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export function requireRedis(): ToolRequirement {
  if (findTool('redis-server') !== undefined) return { skip: false };
  return requireTool('redis-server');
}

/** Answers PING within timeoutMs? */
function ping(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => done(d.toString('latin1').startsWith('+PONG')));
    s.on('error', () => done(false));
  });
}

export async function startRedis(): Promise<RedisInstance> {
  const bin = findTool('redis-server');
  if (bin === undefined) throw new Error('redis-server is not installed (apt-get install redis-server)');
  const dir = await mkdtemp(path.join(tmpdir(), 'sterna-redis-'));
  const port = await freePort();
  const conf = path.join(dir, 'redis.conf');
  await writeFile(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      'protected-mode yes',
      `dir ${dir}`,
      'save ""',
      'appendonly no',
      'daemonize no',
      'loglevel warning',
      `logfile ${path.join(dir, 'redis.log')}`,
      '',
    ].join('\n'),
  );
  const child = spawn(bin, [conf], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid;
  if (pid === undefined) throw new Error('redis-server did not start');
  const deadline = Date.now() + 10_000;
  while (!(await ping(port, 500))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      await rm(dir, { recursive: true, force: true });
      throw new Error(`redis-server did not answer on 127.0.0.1:${port}`);
    }
    await sleep(25);
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid,
    async stop() {
      process.kill(pid, 'SIGTERM');
      const timer = setTimeout(() => process.kill(pid, 'SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
