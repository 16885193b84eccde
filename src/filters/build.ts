/**
 * Builds the content filters of the configuration ([[filters]], docs/filters.md): one client per
 * entry, with its common settings. Wiring only.
 * Trust level: the configuration is trusted.
 */
import type { FilterConfig } from '../config/schema.js';
import { ContentFilters, type FilterClient, type FilterSettings } from './pipeline.js';
import { RspamdClient } from './rspamd.js';

function clientFor(f: FilterConfig): FilterClient {
  switch (f.type) {
    case 'rspamd':
      return new RspamdClient({ url: f.url, password: f.password, junk: f.junk });
    default:
      throw new Error(`filter type ${f.type} is not built yet`);
  }
}

export function buildContentFilters(filters: readonly FilterConfig[]): ContentFilters {
  const settings: FilterSettings[] = filters.map((f) => ({
    name: f.name ?? f.type,
    listeners: f.listeners,
    timeoutMs: f.timeout_ms,
    onFailure: f.on_failure,
    maxSize: f.max_size,
    client: clientFor(f),
  }));
  return new ContentFilters(settings);
}
