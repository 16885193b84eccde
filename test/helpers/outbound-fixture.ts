/**
 * The one set-up of the outbound end-to-end tests (test/outbound-*.test.ts): a DNS server of
 * the test's own on 127.0.0.1 serving `zone`, receiving SMTP servers (sinks) on 127.0.0.2,
 * 127.0.0.3 … that all listen on one port (so `[outbound] port` reaches every MX), and, with
 * startOutboundFixture, a Sterna whose resolver and outbound port point at them. close() stops
 * whatever was started, in reverse order, even after a failed start. Trust: test code only; it
 * binds loopback addresses and never asks the system's resolver.
 */
import { pino } from 'pino';
import type { Logger } from '../../src/observability/log.js';
import { startDnsServer, type TestDnsServer, type Zone } from './dns-server.js';
import { outboundToml, sendMessage, type OutboundMessage } from './outbound.js';
import { startSmtpSink, type SinkOptions, type SmtpSink } from './smtp-sink.js';
import { startTestServer, type TestServer, type TestServerOptions } from './server.js';

/** A sink: its options; `ownPort` gives it a port of its own (a relay named with its port). */
export type FixtureSink = Omit<SinkOptions, 'port'> & { host: string; ownPort?: boolean };

/** [outbound] and [queue] keys (strings are quoted), and more TOML tables after them. */
export interface FixtureConfig {
  /** [outbound] keys besides `port` (the sinks' shared port). */
  outbound?: Record<string, string | number>;
  /** [queue] keys; `jitter = 0` unless given. */
  queue?: Record<string, string | number>;
  /** Further tables ([transport], [aliases], [outbound.tls_policy] …), verbatim. */
  tables?: string;
}

export interface OutboundPeers<K extends string> {
  dns: TestDnsServer;
  sinks: Record<K, SmtpSink>;
  /** The port the sinks share (those without ownPort); 0 when every sink has its own. */
  port: number;
  /** The TOML of a Sterna that delivers to these peers. */
  config(c?: FixtureConfig): string;
  close(): Promise<void>;
}

/** Starts the DNS server and the sinks, in the order given; the first sink chooses the shared port. */
export async function startOutboundPeers<K extends string>(o: {
  zone: Zone;
  sinks: Record<K, FixtureSink>;
}): Promise<OutboundPeers<K>> {
  const started: { close(): Promise<void> }[] = [];
  const closeAll = async (): Promise<void> => {
    for (const s of started.splice(0).reverse()) await s.close();
  };
  try {
    const dns = await startDnsServer(o.zone);
    started.push(dns);
    const sinks: Partial<Record<K, SmtpSink>> = {};
    let port = 0;
    // Object.keys loses the key type; the keys are exactly those of o.sinks, i.e. K.
    for (const name of Object.keys(o.sinks) as K[]) {
      const spec: FixtureSink = o.sinks[name];
      const { ownPort, ...opts } = spec;
      const shared = ownPort !== true;
      const sink = await startSmtpSink(shared && port !== 0 ? { ...opts, port } : opts);
      started.push(sink);
      if (shared && port === 0) port = sink.port;
      sinks[name] = sink;
    }
    // Every key of o.sinks was filled in the loop above.
    const all = sinks as Record<K, SmtpSink>;
    return {
      dns,
      sinks: all,
      port,
      config: (c = {}) => {
        const queue = { jitter: 0, ...c.queue };
        const keys = Object.entries(queue).map(
          ([k, v]) => `${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}`,
        );
        return `${outboundToml({ dnsPort: dns.port, outbound: { ...(port !== 0 ? { port } : {}), ...c.outbound } })}[queue]
${keys.join('\n')}
${c.tables ?? ''}`;
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll();
    throw err;
  }
}

export interface OutboundFixture<K extends string> extends OutboundPeers<K> {
  server: TestServer;
  /** Submits a message through the server's smtp listener (a trusted network); returns its queue id. */
  send(m: OutboundMessage): Promise<string>;
}

/**
 * The peers and a Sterna delivering to them. `tables` may be a function of the started sinks,
 * for TOML that names a sink's own port (a relay in [transport]).
 */
export async function startOutboundFixture<K extends string>(
  o: {
    zone: Zone;
    sinks: Record<K, FixtureSink>;
    tables?: string | ((sinks: Record<K, SmtpSink>) => string);
  } & Omit<FixtureConfig, 'tables'> &
    Omit<TestServerOptions, 'toml'>,
): Promise<OutboundFixture<K>> {
  const { zone, sinks, outbound, queue, tables, ...serverOptions } = o;
  const peers = await startOutboundPeers({ zone, sinks });
  let server: TestServer;
  try {
    server = await startTestServer({
      ...serverOptions,
      toml: peers.config({
        ...(outbound !== undefined ? { outbound } : {}),
        ...(queue !== undefined ? { queue } : {}),
        ...(tables !== undefined
          ? { tables: typeof tables === 'string' ? tables : tables(peers.sinks) }
          : {}),
      }),
    });
  } catch (err) {
    await peers.close();
    throw err;
  }
  return {
    ...peers,
    server,
    send: (m) => sendMessage(server.ports.smtp, m),
    close: async () => {
      await server.stop({ remove: true });
      await peers.close();
    },
  };
}

/** A JSON logger for a test server whose lines (parsed) the test reads back. */
export function capturedLog(level = 'info'): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level },
    {
      write(line: string): void {
        const parsed: unknown = JSON.parse(line);
        if (typeof parsed === 'object' && parsed !== null) lines.push({ ...parsed });
      },
    },
  );
  return { log, lines };
}
