/** Error codes, as DESIGN.md 4 lists them. */
export type SeqkernErrorCode =
  | 'SHAPE_MISMATCH'
  | 'BAD_DTYPE'
  | 'OUT_OF_RANGE'
  | 'NON_FINITE'
  | 'NO_CUDA'
  | 'TOO_LARGE'
  | 'CUDA_ERROR'
  | 'OUT_OF_MEMORY'
  | 'BAD_ARGUMENT'
  | 'NATIVE_ERROR';

/**
 * Every failure seqkern reports on purpose. `argument` names the offending argument; `expected` and `got`
 * say what was wanted and what arrived, so the message reads "expected beta of shape [2,150,3], got [2,150]".
 */
export class SeqkernError extends Error {
  readonly code: SeqkernErrorCode;
  readonly argument?: string;
  readonly expected?: string;
  readonly got?: string;

  constructor(code: SeqkernErrorCode, message: string, detail: { argument?: string; expected?: string; got?: string } = {}) {
    super(message);
    this.name = 'SeqkernError';
    this.code = code;
    this.argument = detail.argument;
    this.expected = detail.expected;
    this.got = detail.got;
  }
}

/** Throws a SeqkernError worded "op: expected <expected> for <argument>, got <got>". */
export function fail(code: SeqkernErrorCode, op: string, argument: string, expected: string, got: string): never {
  throw new SeqkernError(code, `${op}: expected ${argument} ${expected}, got ${got}`, { argument, expected, got });
}

/**
 * The error an aborted async call rejects with: an AbortError whose `cause` is `signal.reason` (Node core's
 * convention, as in `fs.readFile` or `timers/promises`), so `abort(new Error('client disconnected'))` and
 * `AbortSignal.timeout()` keep their reason.
 */
export function abortError(signal?: AbortSignal): Error {
  const reason: unknown = signal?.reason;
  const e = new DOMException('The operation was aborted', 'AbortError');
  if (reason !== undefined) Object.defineProperty(e, 'cause', { value: reason, writable: true, configurable: true });
  return e;
}
