/**
 * The API's errors: a stable `code` (for programs), a `message` that says what to fix (for
 * people), and the HTTP status. Every refusal the API sends is built here. Pure data.
 */
export interface ApiError {
  status: 400 | 401 | 403 | 404 | 409 | 413 | 415 | 422 | 429 | 503;
  code: string;
  message: string;
  /** Seconds, for 429 and a draining server's 503 (Retry-After). */
  retryAfter?: number;
}

export function apiError(status: ApiError['status'], code: string, message: string): ApiError {
  return { status, code, message };
}

export function isApiError(v: unknown): v is ApiError {
  return typeof v === 'object' && v !== null && 'status' in v && 'code' in v && 'message' in v;
}
