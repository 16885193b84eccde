/**
 * Builds the content filters of the configuration ([[filters]], docs/filters.md): one client per
 * entry, with its common settings. Wiring only.
 * Trust level: the configuration is trusted.
 */
import type { FilterConfig } from '../config/schema.js';
import { ContentFilters, type FilterClient, type FilterSettings } from './pipeline.js';
import { MilterClient, parseMilterAddress } from './milter.js';
import { RspamdClient } from './rspamd.js';
import { SpamdClient } from './spamd.js';

/** "host:port" or "[v6]:port" from the configuration (already validated by the schema). */
export function splitHostPort(address: string): { host: string; port: number } {
  const colon = address.lastIndexOf(':');
  const host = address.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  return { host, port: Number(address.slice(colon + 1)) };
}

function clientFor(f: FilterConfig, hostname: string): FilterClient {
  switch (f.type) {
    case 'rspamd':
      return new RspamdClient({ url: f.url, password: f.password, junk: f.junk });
    case 'spamd':
      return new SpamdClient({
        ...splitHostPort(f.address),
        user: f.user,
        rejectScore: f.reject_score,
        junkScore: f.junk_score,
        addHeaders: f.add_headers,
      });
    case 'milter':
      return new MilterClient({ address: parseMilterAddress(f.address), hostname, maxBodyBytes: f.max_size });
    default: {
      const never: never = f;
      throw new Error(`unhandled filter type ${JSON.stringify(never)}`);
    }
  }
}

export function buildContentFilters(filters: readonly FilterConfig[], hostname: string): ContentFilters {
  const settings: FilterSettings[] = filters.map((f) => ({
    name: f.name ?? f.type,
    listeners: f.listeners,
    timeoutMs: f.timeout_ms,
    onFailure: f.on_failure,
    maxSize: f.max_size,
    client: clientFor(f, hostname),
  }));
  return new ContentFilters(settings);
}
