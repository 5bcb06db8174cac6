/**
 * Error codes a call can fail with. The protocol's codes (PROTOCOL.md §6),
 * upper-cased, plus the ones this client raises itself.
 */
export const ErrorCodes = Object.freeze({
  // From the daemon.
  BAD_FRAME: 'BAD_FRAME',
  FRAME_TOO_LARGE: 'FRAME_TOO_LARGE',
  UNSUPPORTED_VERSION: 'UNSUPPORTED_VERSION',
  FORBIDDEN: 'FORBIDDEN',
  BAD_REQUEST: 'BAD_REQUEST',
  UNKNOWN_OP: 'UNKNOWN_OP',
  KEY_TOO_LARGE: 'KEY_TOO_LARGE',
  VALUE_TOO_LARGE: 'VALUE_TOO_LARGE',
  QUOTA_EXCEEDED: 'QUOTA_EXCEEDED',
  NOT_INTEGER: 'NOT_INTEGER',
  OVERFLOW: 'OVERFLOW',
  CONFLICT: 'CONFLICT',
  UNAVAILABLE: 'UNAVAILABLE',
  BUSY: 'BUSY',
  RESPONSE_TOO_LARGE: 'RESPONSE_TOO_LARGE',
  INTERNAL: 'INTERNAL',
  // Raised by the client.
  TIMEOUT: 'TIMEOUT',
  CLOSED: 'CLOSED',
  NOT_JSON: 'NOT_JSON',
});

const serverCodes = new Set([
  'bad_frame', 'frame_too_large', 'unsupported_version', 'forbidden',
  'bad_request', 'unknown_op', 'key_too_large', 'value_too_large',
  'quota_exceeded', 'not_integer', 'overflow', 'conflict', 'unavailable', 'busy', 'response_too_large', 'internal',
]);

/**
 * The error every failed call rejects with. Programs branch on `code`;
 * `message` is for people and names what was wrong.
 */
export class KvError extends Error {
  /**
   * @param {string} code one of ErrorCodes
   * @param {string} message
   * @param {{ cause?: unknown, op?: string, keys?: string[] }} [options]
   */
  constructor(code, message, options = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KvError';
    this.code = code;
    if (options.op !== undefined) this.op = options.op;
    // CONFLICT: every key whose condition failed, in request order.
    if (options.keys !== undefined) this.keys = options.keys;
  }
}

/**
 * Builds a KvError from the `error` map of a response frame. A code the
 * protocol does not define is treated as INTERNAL (PROTOCOL.md §6).
 */
export function errorFromWire(err, op) {
  const wireCode = err && typeof err.code === 'string' ? err.code : '';
  let message = err && typeof err.message === 'string' && err.message !== '' ? err.message : wireCode;
  let code;
  if (serverCodes.has(wireCode)) {
    code = wireCode.toUpperCase();
  } else {
    code = ErrorCodes.INTERNAL;
    message = `${message || 'error'} (the daemon sent the unknown error code ${JSON.stringify(wireCode)})`;
  }
  const keys = Array.isArray(err?.keys) ? err.keys.filter((k) => typeof k === 'string') : undefined;
  return new KvError(code, message, keys === undefined ? { op } : { op, keys });
}
