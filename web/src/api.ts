/**
 * Calls to the admin API (docs/operations.md) from the dashboard: same origin, JSON, and the
 * bearer token (RFC 6750) the operator typed into the login form, kept in sessionStorage (gone
 * when the tab closes; never in a cookie, never in a URL).
 */

const TOKEN_KEY = 'sterna-admin-token';

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t: string | null): void {
  if (t === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, t);
}

/** The API answered 401: the page asks for the token. */
export class AuthError extends Error {}

/** Any other error answer: its status and the API's message. */
export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

let onAuthNeeded: () => void = () => undefined;

/** What to do when a call answers 401 (the app shows the login form). */
export function whenAuthNeeded(fn: () => void): void {
  onAuthNeeded = fn;
}

function messageOf(body: unknown, status: number): string {
  if (typeof body === 'object' && body !== null && 'message' in body && typeof body.message === 'string')
    return body.message;
  return `HTTP ${status}`;
}

/**
 * One call. The result is the server's JSON, typed by the caller as the route returns it
 * (src/admin/api-*.ts): the server is trusted for its shapes, the page only renders them.
 */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  const t = token();
  if (t !== null) headers['authorization'] = `Bearer ${t}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, {
    method,
    headers,
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const json: unknown = await res.json().catch(() => null);
  if (res.status === 401) {
    onAuthNeeded();
    throw new AuthError(messageOf(json, res.status));
  }
  if (!res.ok) throw new ApiError(res.status, messageOf(json, res.status));
  return json as T;
}

/** A query string of the set values. */
export function query(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}
