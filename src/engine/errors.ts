/**
 * One error type for everything the engine refuses. `file` names what was being read (a path, a hook, a setting)
 * and `message` says the problem and, where possible, the fix — the extension and the CLI show both verbatim.
 */
export class ResidualError extends Error {
  constructor(
    message: string,
    readonly file?: string,
    readonly code: ResidualErrorCode = 'invalid',
  ) {
    super(file ? `${file}: ${message}` : message);
    this.name = 'ResidualError';
  }
}

export type ResidualErrorCode =
  | 'invalid' // a file or argument is malformed
  | 'missing' // a file or folder does not exist
  | 'unsupported' // well-formed but not something we run (pickle, unknown architecture)
  | 'cancelled' // the caller cancelled
  | 'provider' // no execution provider could start
  | 'numeric' // the model produced NaN/Inf
  | 'memory'; // the model would not fit in memory (see memory.ts)

export function isCancelled(e: unknown): boolean {
  return e instanceof ResidualError && e.code === 'cancelled';
}

/** Minimal cancellation token so the engine needs no `vscode` import; the host adapts VS Code's token to it. */
export interface CancelToken {
  readonly isCancellationRequested: boolean;
}

export function throwIfCancelled(token: CancelToken | undefined): void {
  if (token?.isCancellationRequested) throw new ResidualError('cancelled', undefined, 'cancelled');
}

/**
 * The one line to show for an error: a ResidualError's own message, "Cancelled." for a cancellation, and anything
 * else marked as an internal error (a bug, not the user's input).
 */
export function errorMessage(e: unknown): string {
  if (isCancelled(e)) return 'Cancelled.';
  if (e instanceof ResidualError) return e.message;
  return `internal error: ${e instanceof Error ? e.message : String(e)}`;
}
