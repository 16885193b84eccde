/**
 * Relay hosts (smarthosts) from the `transport` configuration: each domain (or "*") whose value
 * is a relay table becomes a RelayRoute for delivery/remote.ts, and so does each domain routed
 * to LMTP ("lmtp:unix:/path" or "lmtp:[host]:port", RFC 2033: the same client in LMTP mode, the
 * same queue, retry and bounce rules). The AUTH password file is read
 * at each attempt (first line, so a rotated password is picked up without a restart); a CA file
 * is read once, at start. Trust: configuration is trusted; passwords never reach a log.
 */
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Config, RelayTransport } from '../config/schema.js';
import { parseRelayHost, type RelayRoute } from './remote.js';

/** The relays by lower-case domain ("*" for every other domain). Throws on an unreadable CA file. */
export function buildRelays(
  transport: Config['transport'],
  defaultTls: RelayRoute['tls'],
): Map<string, RelayRoute> {
  const out = new Map<string, RelayRoute>();
  for (const [domain, t] of Object.entries(transport)) {
    if (typeof t === 'string') {
      const lmtp = parseLmtpTransport(t);
      if (lmtp !== null) out.set(domain.toLowerCase(), lmtp);
      continue;
    }
    out.set(domain.toLowerCase(), relayRoute(domain, t, defaultTls));
  }
  return out;
}

function relayRoute(domain: string, t: RelayTransport, defaultTls: RelayRoute['tls']): RelayRoute {
  const parsed = parseRelayHost(t.relay);
  // The schema and config/load.ts checked the form already; this guards direct callers.
  if (parsed === null)
    throw new Error(`transport.${JSON.stringify(domain)}.relay: not a relay host: ${t.relay}`);
  const unverifiedOk = t.auth_over_unverified_tls === true;
  const route: RelayRoute = {
    host: parsed.host,
    port: parsed.port,
    // Implicit TLS with credentials verifies the certificate unless opted out (config/load.ts
    // refuses a STARTTLS relay with credentials and a weaker policy, without the opt-out).
    tls:
      t.tls ??
      (t.implicit_tls && t.auth_user !== undefined && !unverifiedOk ? 'required-verify' : defaultTls),
    implicitTls: t.implicit_tls,
    label: t.relay,
    authOverUnverifiedTls: unverifiedOk,
  };
  if (t.auth_user !== undefined) {
    const inline = t.auth_password;
    const file = t.auth_password_file;
    route.auth = {
      username: t.auth_user,
      password:
        inline !== undefined
          ? (): Promise<string> => Promise.resolve(inline)
          : async (): Promise<string> => firstLine(await readFile(file ?? '', 'utf8')),
    };
  }
  if (t.tls_ca_file !== undefined) route.tlsOptions = { ca: readFileSync(t.tls_ca_file, 'utf8') };
  return route;
}

/** "lmtp:unix:/path" or "lmtp:[host]:port" as a route (no TLS, no AUTH); null for any other value. */
export function parseLmtpTransport(value: string): RelayRoute | null {
  if (!value.startsWith('lmtp:')) return null;
  const rest = value.slice('lmtp:'.length);
  const common = { tls: 'none' as const, implicitTls: false, label: value, lmtp: true };
  if (rest.startsWith('unix:/')) {
    const path = rest.slice('unix:'.length);
    return { ...common, host: path, port: 0, path };
  }
  const parsed = parseRelayHost(rest);
  // The schema requires the port: LMTP has no well-known one (RFC 2033 5).
  if (parsed === null || !/:\d{1,5}$/.test(rest)) return null;
  return { ...common, host: parsed.host, port: parsed.port };
}

/** A password file's first line, without its line ending. */
function firstLine(text: string): string {
  return text.split(/\r?\n/, 1)[0] ?? '';
}
