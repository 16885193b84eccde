/**
 * Drives Postfix's smtp-source(1), the load tool used for the headline messages/s against both
 * servers with identical arguments. smtp-source sends one command at a time and exits non-zero
 * at the first reply that is not the expected positive one, so a zero exit means every message
 * got its 250. Benchmark code: trusted, loopback only.
 */
import { pinned, run } from './machine.js';

export const SMTP_SOURCE = '/usr/sbin/smtp-source';

export interface SourceOptions {
  /** Where to connect; 127.0.0.1 when absent. */
  host?: string;
  port: number;
  sessions: number;
  messages: number;
  bodyBytes: number;
  from: string;
  to: string;
  /** true: -d, each session sends all its messages on one connection; false: one connection per message. */
  reuseConnections: boolean;
  timeoutMs: number;
}

export interface SourceResult {
  ok: boolean;
  /** Messages sent (all of them when ok). */
  accepted: number;
  seconds: number;
  messagesPerSecond: number;
  error: string;
  /** The command line, for the docs. */
  command: string;
}

export function sourceArgs(o: SourceOptions): string[] {
  return [
    ...(o.reuseConnections ? ['-d'] : []),
    '-s',
    String(o.sessions),
    '-m',
    String(o.messages),
    '-l',
    String(o.bodyBytes),
    '-M',
    'source.bench.local',
    '-f',
    o.from,
    '-t',
    o.to,
    `${o.host ?? '127.0.0.1'}:${o.port}`,
  ];
}

/** Runs smtp-source and times it with the wall clock (messages / elapsed seconds). */
export async function runSmtpSource(o: SourceOptions): Promise<SourceResult> {
  const args = sourceArgs(o);
  const t0 = performance.now();
  const r = await run(...pinned('load', SMTP_SOURCE, args), { timeoutMs: o.timeoutMs });
  const seconds = (performance.now() - t0) / 1000;
  const ok = r.code === 0;
  return {
    ok,
    accepted: ok ? o.messages : 0,
    seconds,
    messagesPerSecond: ok ? o.messages / seconds : 0,
    error: ok ? '' : (r.stderr.trim() || `exit ${String(r.code)}`).slice(0, 300),
    command: `smtp-source ${args.join(' ').replace(/:\d+$/, ':PORT')}`,
  };
}
