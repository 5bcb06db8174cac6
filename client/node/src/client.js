import net from 'node:net';
import { EventEmitter } from 'node:events';
import { encodeFrame, FrameReader, HEADER_SIZE } from './frame.js';
import { KvError, ErrorCodes, errorFromWire } from './errors.js';

/** Where the daemon listens unless told otherwise (same default as the daemon). */
export const DEFAULT_SOCKET_PATH = '/run/kvsidecar/kv.sock';
/** Default per-call timeout in milliseconds. */
export const DEFAULT_TIMEOUT = 5000;
/** This library's version; sent in the hello for the daemon's logs. */
export const VERSION = '0.1.0';

const PROTOCOL_VERSION = 2;
// The longest delay setTimeout honours; Node turns a longer one into 1 ms.
const MAX_TIMEOUT = 2 ** 31 - 1;
const HELLO_ID = 0;
// Ids stay below 2^53 (PROTOCOL.md §4); 0 is the hello's.
const MAX_ID = Number.MAX_SAFE_INTEGER;

// Used when the hello result leaves a limit out (an absent field reads as 0).
const FALLBACK_LIMITS = Object.freeze({
  maxKey: 1024,
  maxValue: 1024 * 1024,
  maxFrame: 2 * 1024 * 1024,
  maxInflight: 128,
  maxBatch: 1000,
  maxResponse: 0,
});
// Room for everything in a *Many frame that is not a key or value.
const FRAME_OVERHEAD = 1024;
const ITEM_OVERHEAD = 32;
// Default page sizes of keys() and entries().
const KEYS_PAGE = 1000;
const ENTRIES_PAGE = 100;

// The largest frame read before the hello result: a hello result or a
// refusal is a few hundred bytes. Anything claiming more is not a kvsidecar
// daemon speaking this protocol (an HTTP server's "HTTP" reads as 1.2 GB).
const HELLO_MAX_PAYLOAD = 64 * 1024;
// Room in a response for everything that is not a key or a value.
const RESPONSE_ITEM_OVERHEAD = 16;

/**
 * The largest response the daemon can send with these limits: the
 * announced max_response (PROTOCOL.md §2), or, from a daemon that does not
 * announce it, a list page of max_batch keys with their values, plus room
 * for the rest of the frame.
 */
function maxResponse(limits) {
  if (limits.maxResponse > 0) return Math.max(limits.maxResponse, limits.maxFrame) + FRAME_OVERHEAD;
  return limits.maxBatch * (limits.maxKey + limits.maxValue + RESPONSE_ITEM_OVERHEAD) + limits.maxFrame;
}

// How long a listen-first connection waits for a refusal before its hello.
const LISTEN_FIRST_MS = 500;
// The pause before dialing again when the daemon's listen backlog is full
// (EAGAIN): shorter than most calls take, long enough not to spin.
const BACKLOG_PAUSE_MS = 5;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function positiveInt(v, fallback) {
  return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : fallback;
}

function helloInfo(result) {
  const r = result && typeof result === 'object' ? result : {};
  const l = r.limits && typeof r.limits === 'object' ? r.limits : {};
  return Object.freeze({
    version: typeof r.version === 'number' ? r.version : 0,
    server: typeof r.server === 'string' ? r.server : '',
    project: typeof r.project === 'string' ? r.project : '',
    limits: Object.freeze({
      maxKey: positiveInt(l.max_key, FALLBACK_LIMITS.maxKey),
      maxValue: positiveInt(l.max_value, FALLBACK_LIMITS.maxValue),
      maxFrame: positiveInt(l.max_frame, FALLBACK_LIMITS.maxFrame),
      maxInflight: positiveInt(l.max_inflight, FALLBACK_LIMITS.maxInflight),
      maxBatch: positiveInt(l.max_batch, FALLBACK_LIMITS.maxBatch),
      maxResponse: positiveInt(l.max_response, FALLBACK_LIMITS.maxResponse),
    }),
  });
}

function checkKey(key, op) {
  if (typeof key !== 'string') {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: key must be a string, got ${key === null ? 'null' : typeof key}`, { op });
  }
  if (key === '') {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: key must not be empty`, { op });
  }
  checkWellFormed(key, 'key', op);
  return key;
}

/**
 * A string with a lone surrogate has no UTF-8 form: the encoder would send
 * invalid bytes or, for longer strings, U+FFFD in its place, which names a
 * different key.
 */
function checkWellFormed(s, what, op) {
  if (!s.isWellFormed()) {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: ${what} is not valid UTF-8: it contains a lone surrogate`, { op });
  }
}

function checkKeys(keys, op) {
  if (!Array.isArray(keys)) {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: keys must be an array of strings`, { op });
  }
  for (const k of keys) checkKey(k, op);
  return keys;
}

// update's bounds: attempts before it gives up, and the pause between them
// (doubling from the minimum to the maximum, each drawn at random below it
// so that writers that collided do not collide again in step).
const UPDATE_ATTEMPTS = 1000;
const UPDATE_BACKOFF_MIN = 0.5;
const UPDATE_BACKOFF_MAX = 50;

function checkIfVersion(v, op) {
  if (v === undefined || v === null) return undefined;
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: ifVersion must be a non-negative integer (a version from getWithVersion, or 0), got ${String(v)}`, { op });
  }
  return v;
}

/** A version from the wire as a number (versions stay below 2^53). */
function wireVersion(v) {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return 0;
}

function checkTTL(ttl, op) {
  if (ttl === undefined || ttl === null || ttl === 0) return undefined;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl < 0) {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: ttl must be a non-negative number of milliseconds, got ${String(ttl)}`, { op });
  }
  // The wire carries whole milliseconds; never round a TTL down to "no expiry".
  return Math.ceil(ttl);
}

/**
 * The timeout a request carries (protocol `timeout`): what is left of the
 * call's own timeout, less a margin for the answer's trip back, so the
 * daemon gives up first and answers UNAVAILABLE, saying why, instead of the
 * call ending with a bare TIMEOUT when the daemon's store hangs.
 * @param {number} deadline epoch ms
 */
function requestTimeout(deadline) {
  const left = deadline - Date.now();
  return Math.max(1, Math.floor(left - Math.min(left / 10, 50)));
}

function encodeValue(value, op) {
  if (typeof value === 'number' && !Number.isFinite(value)) {
    // JSON has no such number; JSON.stringify would write null.
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: the number ${value} cannot be JSON-encoded (JSON would store null)`, { op });
  }
  let json;
  try {
    json = JSON.stringify(value);
  } catch (cause) {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: value cannot be JSON-encoded: ${cause.message}`, { op, cause });
  }
  if (json === undefined) {
    throw new KvError(ErrorCodes.BAD_REQUEST, `${op}: a value of type ${typeof value} cannot be JSON-encoded; store null instead, or delete the key`, { op });
  }
  return Buffer.from(json, 'utf8');
}

function decodeValue(bytes, key, op) {
  if (bytes === null || bytes === undefined) return undefined;
  let text;
  try {
    text = typeof bytes === 'string' ? bytes : utf8.decode(bytes);
    return JSON.parse(text);
  } catch (cause) {
    throw new KvError(
      ErrorCodes.NOT_JSON,
      `${op}: the value of key ${JSON.stringify(key)} is not UTF-8 JSON text (${bytes.length} bytes): ${cause.message}`,
      { op, cause },
    );
  }
}

function byteLength(s) {
  return Buffer.byteLength(s, 'utf8');
}

/**
 * Splits items into runs that fit one request: at most maxBatch items and a
 * frame no larger than maxFrame.
 */
function chunk(items, size, limits) {
  const budget = limits.maxFrame - FRAME_OVERHEAD;
  const out = [];
  let cur = [];
  let bytes = 0;
  for (const item of items) {
    const n = size(item) + ITEM_OVERHEAD;
    if (cur.length > 0 && (cur.length >= limits.maxBatch || bytes + n > budget)) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(item);
    bytes += n;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/**
 * One connection to the daemon: the socket, the frame reader, the calls
 * waiting for the hello result and the calls waiting for their responses.
 */
class Connection {
  /**
   * @param {Client} client
   * @param {string} socketPath
   * @param {number} timeout
   * @param {boolean} listenFirst wait briefly for a refusal before sending
   *   the hello (used after a refusal was lost to a failed hello write)
   */
  constructor(client, socketPath, timeout, listenFirst = false) {
    this.client = client;
    this.socketPath = socketPath;
    this.listenFirst = listenFirst;
    this.successor = null; // the connection that took over this one's queued calls
    this.hello = null; // HelloInfo once the hello result arrived
    this.failure = null; // KvError that ended the hello, or the connection
    this.queued = []; // calls waiting for the hello result
    this.pending = new Map(); // id → call, sent and waiting for a response
    this.active = 0; // calls queued or pending: the socket is ref'd while > 0
    this.corked = false;
    this.done = false;
    this.reader = new FrameReader();
    this.reader.maxPayload = HELLO_MAX_PAYLOAD;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed through the calls

    const socket = net.createConnection({ path: socketPath });
    this.socket = socket;
    socket.on('data', (chunk) => this.onData(chunk));
    socket.on('error', (err) => this.onError(err));
    socket.on('close', () => this.onClose());
    socket.on('end', () => socket.destroy());
    socket.unref();

    // The hello goes first; requests follow once its result says what the
    // daemon's limits are.
    const hello = encodeFrame({ id: HELLO_ID, op: 'hello', version: PROTOCOL_VERSION, client: `kvsidecar-node/${VERSION}` });
    if (!listenFirst) {
      socket.write(hello);
    } else {
      // A daemon that refuses a caller sends its error frame and closes at
      // once, without reading. If the hello is written after that close,
      // the write fails (EPIPE) and Node discards the socket before the
      // refusal is read. So: listen first. A daemon that accepts the
      // caller sends nothing before the hello, so after a short wait (or
      // as soon as the daemon has spoken) the hello goes out.
      const wait = Math.min(LISTEN_FIRST_MS, timeout > 0 ? timeout / 2 : LISTEN_FIRST_MS);
      socket.once('connect', () => {
        const t = setTimeout(() => {
          if (!this.done && this.reader.pending === 0) socket.write(hello);
        }, wait);
        t.unref();
      });
    }
    if (timeout > 0) {
      this.helloTimer = setTimeout(() => {
        // Give up on this connection. The calls waiting for it were never
        // sent, so they move to a fresh one; their own timers still run.
        const waiting = this.queued.filter((call) => !call.settled);
        this.queued = [];
        for (const call of waiting) {
          call.conn = null;
          this.release();
        }
        this.fail(new KvError(
          ErrorCodes.TIMEOUT,
          `no hello result from the kvsidecar daemon at ${socketPath} within ${timeout} ms`,
          { op: 'hello' },
        ));
        for (const call of waiting) client.submit(call);
      }, timeout);
      this.helloTimer.unref();
    }
  }

  /** Resolves to the hello result; keeps the process alive meanwhile. */
  waitReady() {
    if (this.hello !== null) return this.ready;
    this.hold();
    return this.ready
      .catch((err) => (this.successor !== null ? this.successor.waitReady() : Promise.reject(err)))
      .finally(() => this.release());
  }

  /** Counts a call as active; the socket keeps the process alive while any is. */
  hold() {
    if (this.active++ === 0 && !this.done) this.socket.ref();
  }

  release() {
    if (--this.active === 0 && !this.done) this.socket.unref();
  }

  write(frame) {
    if (!this.corked) {
      // Gather the frames of this tick into as few writes as possible.
      this.corked = true;
      this.socket.cork();
      process.nextTick(() => {
        this.corked = false;
        this.socket.uncork();
      });
    }
    this.socket.write(frame);
  }

  onData(chunk) {
    let messages;
    try {
      messages = this.reader.push(chunk);
    } catch (cause) {
      this.fail(new KvError(
        ErrorCodes.UNAVAILABLE,
        this.hello === null
          ? `the program at ${this.socketPath} does not answer like a kvsidecar daemon: before its hello result, ${cause.message}; the connection was closed`
          : `the kvsidecar daemon at ${this.socketPath} sent a malformed frame (${cause.message}); the connection was closed`,
        { cause },
      ));
      return;
    }
    for (const msg of messages) {
      if (this.done) return;
      this.onMessage(msg);
    }
  }

  onMessage(msg) {
    if (msg === null || typeof msg !== 'object' || typeof msg.id !== 'number') {
      this.fail(new KvError(
        ErrorCodes.UNAVAILABLE,
        `the kvsidecar daemon at ${this.socketPath} sent a response without an id; the connection was closed`,
      ));
      return;
    }
    if (msg.id === HELLO_ID) {
      this.onHelloFrame(msg);
      return;
    }
    const call = this.pending.get(msg.id);
    if (call === undefined) return; // timed out already
    this.pending.delete(msg.id);
    if (msg.error !== undefined && msg.error !== null) {
      call.settle(errorFromWire(msg.error, call.op));
    } else {
      call.settleResult(msg.result, msg);
    }
  }

  onHelloFrame(msg) {
    const hasError = msg.error !== undefined && msg.error !== null;
    if (this.hello === null) {
      clearTimeout(this.helloTimer);
      if (hasError) {
        // forbidden, unsupported_version…: the daemon closes the connection.
        this.fail(errorFromWire(msg.error, 'hello'));
        return;
      }
      const hello = helloInfo(msg.result);
      if (hello.version !== PROTOCOL_VERSION) {
        this.fail(new KvError(
          ErrorCodes.UNSUPPORTED_VERSION,
          `the kvsidecar daemon at ${this.socketPath} answered with protocol version ${hello.version}; this client speaks version ${PROTOCOL_VERSION}`,
          { op: 'hello' },
        ));
        return;
      }
      this.hello = hello;
      this.reader.maxPayload = maxResponse(hello.limits);
      this.resolveReady(this.hello);
      const queued = this.queued;
      this.queued = [];
      for (const call of queued) {
        if (!call.settled) this.send(call);
      }
      this.client.emit('connect', this.hello);
      return;
    }
    if (hasError) {
      // A connection-level error after the hello (bad_frame, frame_too_large
      // of an unreadable request): the daemon closes the connection next.
      const e = errorFromWire(msg.error);
      this.failure ??= new KvError(
        ErrorCodes.UNAVAILABLE,
        `the kvsidecar daemon at ${this.socketPath} closed the connection after an error: ${e.code}: ${e.message}`,
        { cause: e },
      );
    }
  }

  /** Sends the call now if the hello is done, else queues it. */
  submit(call) {
    if (this.done) {
      call.settle(this.failure);
      return;
    }
    call.conn = this;
    this.hold();
    if (this.hello === null) {
      this.queued.push(call);
    } else {
      this.send(call);
    }
  }

  send(call) {
    const limits = this.hello.limits;
    if (call.run !== undefined) {
      // Work that needed the limits (a batch to split): it submits its
      // requests now, in the order it was queued.
      call.run(limits);
      return;
    }
    const problem = call.check?.(limits);
    if (problem) {
      call.settle(problem);
      return;
    }
    const id = this.client.nextId();
    let frame;
    try {
      frame = encodeFrame(call.deadline === undefined
        ? { id, op: call.op, ...call.args }
        : { id, op: call.op, timeout: requestTimeout(call.deadline), ...call.args });
    } catch (cause) {
      call.settle(new KvError(ErrorCodes.BAD_REQUEST, `${call.op}: cannot encode the request: ${cause.message}`, { op: call.op, cause }));
      return;
    }
    if (frame.length - HEADER_SIZE > limits.maxFrame) {
      call.settle(new KvError(
        ErrorCodes.FRAME_TOO_LARGE,
        `${call.op}: the request is ${frame.length - HEADER_SIZE} bytes, over the daemon's max_frame of ${limits.maxFrame} bytes`,
        { op: call.op },
      ));
      return;
    }
    call.id = id;
    this.pending.set(id, call);
    this.write(frame);
  }

  /** Forgets a call that settled before its response (timeout). */
  forget(call) {
    if (call.id !== undefined) this.pending.delete(call.id);
  }

  onError(err) {
    if (this.hello === null) {
      this.failure ??= new KvError(
        ErrorCodes.UNAVAILABLE,
        `cannot connect to the kvsidecar daemon at ${this.socketPath}: ${err.message}`,
        { cause: err },
      );
    } else {
      this.failure ??= new KvError(
        ErrorCodes.UNAVAILABLE,
        `the connection to the kvsidecar daemon at ${this.socketPath} failed: ${err.message}`,
        { cause: err },
      );
    }
  }

  onClose() {
    this.fail(null);
  }

  /** Ends the connection: every queued and pending call fails. */
  fail(err) {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.helloTimer);
    if (err !== null) this.failure ??= err;
    this.socket.destroy();
    const wasReady = this.hello !== null;
    const cause = this.failure?.cause;
    if (!wasReady && cause?.code === 'EAGAIN' && !this.client.closing) {
      // The daemon's listen backlog is full (PROTOCOL.md §3): a flood of
      // connections outpaces its accepting, which drains the backlog
      // within moments. Nothing was sent: after a pause, hand the waiting
      // calls to the client's connection, dialed anew. Each call's own
      // timeout still bounds how long it waits.
      const waiting = this.queued.filter((call) => !call.settled);
      this.queued = [];
      for (const call of waiting) {
        call.conn = null;
        this.release();
      }
      this.client.connectionEnded(this, null);
      if (waiting.length === 0 && this.active === 0) {
        // Nobody waits for this connection (connect() holds it while it
        // waits): let the next call dial.
        this.rejectReady(this.failure);
        return;
      }
      setTimeout(() => {
        if (this.client.closing) {
          this.rejectReady(this.failure);
          for (const call of waiting) call.settle(this.failure);
          return;
        }
        this.successor = this.client.connection();
        this.rejectReady(this.failure);
        for (const call of waiting) if (!call.settled) this.successor.submit(call);
      }, BACKLOG_PAUSE_MS);
      return;
    }
    if (!wasReady && !this.listenFirst && (cause?.code === 'EPIPE' || cause?.code === 'ECONNRESET')) {
      // The daemon closed while the hello was being written: most likely
      // it refused this caller, and its reason was lost with the socket.
      // Nothing was sent but the hello, so hand the waiting calls to a new
      // connection that listens before it speaks.
      const waiting = this.queued.filter((call) => !call.settled);
      this.queued = [];
      for (const call of waiting) {
        call.conn = null;
        this.release();
      }
      this.client.connectionEnded(this, null);
      this.successor = this.client.redial(true);
      this.rejectReady(this.failure);
      for (const call of waiting) this.successor.submit(call);
      return;
    }
    const failure = this.failure ?? new KvError(
      ErrorCodes.UNAVAILABLE,
      wasReady
        ? `the kvsidecar daemon at ${this.socketPath} closed the connection`
        : `the kvsidecar daemon at ${this.socketPath} closed the connection before answering the hello`,
    );
    this.failure = failure;
    this.client.connectionEnded(this, this.client.closing ? null : failure);
    if (!wasReady) this.rejectReady(failure);
    for (const call of this.queued) call.settle(failure);
    this.queued = [];
    for (const call of this.pending.values()) call.settle(this.closedError(call.op));
    this.pending.clear();
  }

  /** The error of a call that was sent but got no response. */
  closedError(op) {
    const f = this.failure;
    return new KvError(
      ErrorCodes.UNAVAILABLE,
      `${op}: ${f.message}, before the response arrived; a write may or may not have been applied`,
      { op, cause: f },
    );
  }
}

/**
 * A client of the kvsidecar daemon. Create it with createClient(); it
 * connects on first use, pipelines every call over one connection, and
 * re-dials when a call finds the connection gone.
 */
export class Client extends EventEmitter {
  #socketPath;
  #timeout;
  #conn = null;
  #id = 0;
  #inflight = 0;
  #closing = false;
  #idle = null; // resolves close() when #inflight drops to 0
  #closed = null; // the promise close() returns

  /**
   * @param {{ socketPath?: string, timeout?: number }} [options]
   */
  constructor(options = {}) {
    super();
    const socketPath = options.socketPath || process.env.KV_SOCKET || DEFAULT_SOCKET_PATH;
    const timeout = options.timeout ?? DEFAULT_TIMEOUT;
    if (typeof timeout !== 'number' || !(timeout >= 0) || !Number.isFinite(timeout)) {
      throw new KvError(ErrorCodes.BAD_REQUEST, `timeout must be a non-negative number of milliseconds, got ${String(options.timeout)}`);
    }
    if (timeout > MAX_TIMEOUT) {
      throw new KvError(ErrorCodes.BAD_REQUEST, `timeout must be at most ${MAX_TIMEOUT} ms (about 24.8 days), got ${timeout}; 0 disables it`);
    }
    this.#socketPath = socketPath;
    this.#timeout = timeout;
  }

  /** The Unix socket path this client dials. */
  get socketPath() {
    return this.#socketPath;
  }

  /** The per-call timeout in milliseconds (0: none). */
  get timeout() {
    return this.#timeout;
  }

  /** Whether close() was called. */
  get closed() {
    return this.#closing;
  }

  /** @internal */
  get closing() {
    return this.#closing;
  }

  /** @internal */
  nextId() {
    this.#id = this.#id >= MAX_ID ? 1 : this.#id + 1;
    return this.#id;
  }

  /** @internal called by a Connection when it ends. */
  connectionEnded(conn, failure) {
    if (this.#conn === conn) this.#conn = null;
    if (failure !== null && this.listenerCount('connectionError') > 0) {
      this.emit('connectionError', failure);
    }
  }

  /** @internal sends a call on the current connection, dialing if needed. */
  submit(call) {
    this.#connection().submit(call);
  }

  #connection() {
    if (this.#conn === null) this.#conn = new Connection(this, this.#socketPath, this.#timeout);
    return this.#conn;
  }

  /** @internal the current connection, dialing if needed. */
  connection() {
    return this.#connection();
  }

  /** @internal replaces the current connection with a new one. */
  redial(listenFirst) {
    this.#conn = new Connection(this, this.#socketPath, this.#timeout, listenFirst);
    return this.#conn;
  }

  /**
   * Connects now (calls connect on their own when needed) and resolves to
   * what the daemon said in its hello: protocol version, server, project
   * and limits.
   * @returns {Promise<import('../index.js').HelloInfo>}
   */
  async connect() {
    if (this.#closing) throw new KvError(ErrorCodes.CLOSED, 'connect: the client was closed', { op: 'connect' });
    return this.#connection().waitReady();
  }

  #enter() {
    this.#inflight++;
  }

  #leave() {
    if (--this.#inflight === 0 && this.#idle !== null) this.#idle();
  }

  /**
   * A call record: settles once, clears its timer, releases its connection.
   * @param {string} op
   * @param {(err: Error | null, value?: unknown) => void} done
   */
  #newCall(op, done) {
    const timeout = this.#timeout;
    const call = {
      op,
      id: undefined,
      conn: null,
      timer: undefined,
      settled: false,
      settle: (err, value) => {
        if (call.settled) return;
        call.settled = true;
        clearTimeout(call.timer);
        if (call.conn !== null) {
          call.conn.forget(call);
          call.conn.release();
        }
        done(err, value);
      },
    };
    if (timeout > 0) {
      call.deadline = Date.now() + timeout;
      call.timer = setTimeout(() => {
        call.settle(new KvError(
          ErrorCodes.TIMEOUT,
          `${op} timed out after ${timeout} ms waiting for the kvsidecar daemon at ${this.#socketPath}; a write may or may not have been applied`,
          { op },
        ));
      }, timeout);
    }
    return call;
  }

  /**
   * Sends one request and resolves to its decoded result.
   * @param {string} op
   * @param {Record<string, unknown>} args
   * @param {(result: unknown) => unknown} decode
   * @param {(limits: object) => KvError | null} [check]
   * @param {boolean} [internal] part of a call already admitted (not refused after close())
   */
  #call(op, args, decode, check, internal = false) {
    if (this.#closing && !internal) {
      return Promise.reject(new KvError(ErrorCodes.CLOSED, `${op}: the client was closed`, { op }));
    }
    return new Promise((resolve, reject) => {
      this.#enter();
      const call = this.#newCall(op, (err, value) => {
        this.#leave();
        if (err) reject(err);
        else resolve(value);
      });
      call.args = args;
      call.check = check;
      call.settleResult = (result, msg) => {
        let value;
        try {
          value = decode(result, msg);
        } catch (err) {
          call.settle(err);
          return;
        }
        call.settle(null, value);
      };
      this.#connection().submit(call);
    });
  }

  /**
   * Runs fn with the daemon's limits, in call order: at once when the
   * connection's hello is done, else queued behind it like a request, so
   * the requests fn submits keep their place among the calls made before
   * and after it. The call counts as in flight until fn's promise settles.
   * @template T
   * @param {string} op
   * @param {(limits: object) => Promise<T>} fn
   * @returns {Promise<T>}
   */
  #withLimits(op, fn) {
    if (this.#closing) {
      return Promise.reject(new KvError(ErrorCodes.CLOSED, `${op}: the client was closed`, { op }));
    }
    this.#enter();
    const conn = this.#connection();
    let p;
    if (conn.hello !== null) {
      p = (async () => fn(conn.hello.limits))();
    } else {
      p = new Promise((resolve, reject) => {
        const call = this.#newCall(op, (err, value) => (err ? reject(err) : resolve(value)));
        call.run = (limits) => {
          call.settle(null, (async () => fn(limits))());
        };
        conn.submit(call);
      });
    }
    return p.finally(() => this.#leave());
  }

  /**
   * Returns the value stored under key, or undefined when there is none.
   * @param {string} key
   */
  async get(key) {
    checkKey(key, 'get');
    return this.#call('get', { key }, (r) => decodeValue(r, key, 'get'));
  }

  /**
   * The value stored under key with its version, or undefined when there
   * is none. Pass the version to set's ifVersion or to deleteIf.
   * @param {string} key
   * @returns {Promise<{ value: unknown, version: number } | undefined>}
   */
  async getWithVersion(key) {
    checkKey(key, 'get');
    return this.#call('get', { key }, (r, msg) => {
      const value = decodeValue(r, key, 'get');
      if (value === undefined) return undefined;
      return { value, version: wireVersion(msg.version) };
    });
  }

  /**
   * Stores value (JSON-encoded) under key, replacing any entry and its TTL.
   * With options.ifVersion the write happens only if the key's version is
   * that (0: only if the key does not exist); otherwise nothing is written
   * and the call rejects with a KvError of code CONFLICT.
   * @param {string} key
   * @param {unknown} value
   * @param {number} [ttl] milliseconds until the entry expires; absent or 0: never
   * @param {{ ifVersion?: number }} [options]
   * @returns {Promise<true>}
   */
  async set(key, value, ttl, options) {
    checkKey(key, 'set');
    const bytes = encodeValue(value, 'set');
    const t = checkTTL(ttl, 'set');
    const args = t === undefined ? { key, value: bytes } : { key, value: bytes, ttl: t };
    const ifVersion = checkIfVersion(options?.ifVersion, 'set');
    if (ifVersion !== undefined) args.if_version = ifVersion;
    return this.#call('set', args, () => true, (limits) => (
      bytes.length > limits.maxValue
        ? new KvError(ErrorCodes.VALUE_TOO_LARGE, `value too large: value is ${bytes.length} bytes, the limit is ${limits.maxValue} bytes`, { op: 'set' })
        : null
    ));
  }

  /**
   * Whether key exists (and has not expired).
   * @param {string} key
   */
  async has(key) {
    checkKey(key, 'has');
    return this.#call('has', { key }, (r) => r === true);
  }

  /**
   * Deletes key; resolves to whether it existed.
   * @param {string} key
   */
  async delete(key) {
    checkKey(key, 'delete');
    return this.#call('delete', { key }, (r) => r === true);
  }

  /**
   * Stores value under key only if the key does not exist (or has
   * expired); resolves to whether it did. With a ttl it is a lock that
   * frees itself.
   * @param {string} key
   * @param {unknown} value
   * @param {number} [ttl]
   * @returns {Promise<boolean>}
   */
  async setIfAbsent(key, value, ttl) {
    try {
      return await this.set(key, value, ttl, { ifVersion: 0 });
    } catch (err) {
      if (err instanceof KvError && err.code === ErrorCodes.CONFLICT) return false;
      throw err;
    }
  }

  /**
   * Deletes key only if its version is version; resolves to whether it
   * existed. When the key has another version, or none, nothing is deleted
   * and the call rejects with CONFLICT.
   * @param {string} key
   * @param {number} version
   */
  async deleteIf(key, version) {
    checkKey(key, 'delete');
    const v = checkIfVersion(version, 'deleteIf');
    if (v === undefined) {
      throw new KvError(ErrorCodes.BAD_REQUEST, 'deleteIf: version is required', { op: 'delete' });
    }
    return this.#call('delete', { key, if_version: v }, (r) => r === true);
  }

  /**
   * The milliseconds key has left to live (0 when it does not expire), or
   * undefined when it does not exist.
   * @param {string} key
   * @returns {Promise<number | undefined>}
   */
  async ttl(key) {
    checkKey(key, 'ttl');
    return this.#call('ttl', { key }, (r) => {
      if (r === null || r === undefined) return undefined;
      if (typeof r === 'number') return r;
      if (typeof r === 'bigint') return Number(r);
      throw this.#badResult('ttl', r);
    });
  }

  /**
   * Gives key a new TTL from now (0: no expiry) without rewriting its value;
   * resolves to whether the key existed (a missing key is left alone).
   * @param {string} key
   * @param {number} ttl milliseconds
   */
  async expire(key, ttl) {
    checkKey(key, 'expire');
    const t = checkTTL(ttl, 'expire');
    return this.#call('expire', t === undefined ? { key } : { key, ttl: t }, (r) => r === true);
  }

  /**
   * Applies fn to the value of key and stores what it returns, without
   * losing a concurrent write: the write is conditional on the version read,
   * and on a conflict update reads again and calls fn again after a short
   * random pause, at most UPDATE_ATTEMPTS times (then it rejects with
   * CONFLICT). fn(old) gets the current value, or undefined when the key
   * does not exist; it may be async and may run several times, so it must
   * only compute. An existing key keeps what is left of its TTL. Resolves to
   * the value stored.
   * @template T
   * @param {string} key
   * @param {(old: unknown) => T | Promise<T>} fn
   * @returns {Promise<T>}
   */
  async update(key, fn) {
    if (typeof fn !== 'function') {
      throw new KvError(ErrorCodes.BAD_REQUEST, 'update: fn must be a function', { op: 'update' });
    }
    let backoff = UPDATE_BACKOFF_MIN;
    for (let attempt = 1; ; attempt++) {
      const current = await this.getWithVersion(key);
      let ttl;
      if (current !== undefined) {
        // A key that expired or changed since fails the condition below.
        ttl = await this.ttl(key);
      }
      const next = await fn(current?.value);
      try {
        await this.set(key, next, ttl, { ifVersion: current?.version ?? 0 });
        return next;
      } catch (err) {
        if (!(err instanceof KvError) || err.code !== ErrorCodes.CONFLICT) throw err;
        if (attempt === UPDATE_ATTEMPTS) {
          throw new KvError(ErrorCodes.CONFLICT, `update ${JSON.stringify(key)}: gave up after ${attempt} conflicting writes`, { op: 'update', cause: err, keys: [key] });
        }
      }
      await new Promise((r) => setTimeout(r, Math.random() * backoff));
      backoff = Math.min(backoff * 2, UPDATE_BACKOFF_MAX);
    }
  }

  /**
   * Deletes every entry of the project; resolves to how many were removed.
   */
  async clear() {
    return this.#call('clear', {}, (r) => (typeof r === 'number' ? r : 0));
  }

  /**
   * Values of several keys, in order; undefined for a missing key.
   * Requests are split to respect the daemon's max_batch and max_frame, and
   * a request whose values the daemon refuses as over its max_response is
   * split in two and sent again.
   * @param {string[]} keys
   */
  async getMany(keys) {
    checkKeys(keys, 'getMany');
    if (keys.length === 0) return [];
    return this.#withLimits('getMany', async (limits) => {
      const parts = await Promise.all(chunk(keys, byteLength, limits).map((part) => this.#getManyPart(part)));
      return parts.flat();
    });
  }

  /** One getMany request, halved while the daemon answers RESPONSE_TOO_LARGE. */
  async #getManyPart(keys) {
    try {
      return await this.#call('getMany', { keys }, (r) => {
        if (!Array.isArray(r) || r.length !== keys.length) throw this.#badResult('getMany', r);
        return r.map((v, i) => decodeValue(v, keys[i], 'getMany'));
      }, undefined, true);
    } catch (err) {
      if (!(err instanceof KvError) || err.code !== ErrorCodes.RESPONSE_TOO_LARGE || keys.length < 2) throw err;
      const half = Math.ceil(keys.length / 2);
      const parts = await Promise.all([this.#getManyPart(keys.slice(0, half)), this.#getManyPart(keys.slice(half))]);
      return parts.flat();
    }
  }

  /**
   * Stores several entries. One request (max_batch items, max_frame bytes) is
   * atomic: all of its items are written or none. A larger call is split
   * into requests sent one after another; if one fails, those before it stay
   * written and those after it are not sent.
   * An entry's ifVersion makes the request conditional (as set's): if any
   * condition fails, nothing of the request is written and the call rejects
   * with CONFLICT, err.keys listing every failing key. Entries with
   * conditions must fit in one request.
   * @param {Array<{ key: string, value: unknown, ttl?: number, ifVersion?: number }>} entries
   * @returns {Promise<true>}
   */
  async setMany(entries) {
    if (!Array.isArray(entries)) {
      throw new KvError(ErrorCodes.BAD_REQUEST, 'setMany: entries must be an array of { key, value, ttl? }', { op: 'setMany' });
    }
    const items = entries.map((e, i) => {
      if (e === null || typeof e !== 'object') {
        throw new KvError(ErrorCodes.BAD_REQUEST, `setMany: entry ${i} must be an object { key, value, ttl? }`, { op: 'setMany' });
      }
      const key = checkKey(e.key, 'setMany');
      const value = encodeValue(e.value, 'setMany');
      const ttl = checkTTL(e.ttl, 'setMany');
      const item = ttl === undefined ? { key, value } : { key, value, ttl };
      const ifVersion = checkIfVersion(e.ifVersion, 'setMany');
      if (ifVersion !== undefined) item.if_version = ifVersion;
      return item;
    });
    if (items.length === 0) return true;
    return this.#withLimits('setMany', async (limits) => {
      for (const it of items) {
        if (it.value.length > limits.maxValue) {
          throw new KvError(
            ErrorCodes.VALUE_TOO_LARGE,
            `value too large: value of key ${JSON.stringify(it.key)} is ${it.value.length} bytes, the limit is ${limits.maxValue} bytes`,
            { op: 'setMany' },
          );
        }
      }
      const parts = chunk(items, (it) => byteLength(it.key) + it.value.length, limits);
      if (parts.length > 1 && items.some((it) => it.if_version !== undefined)) {
        throw new KvError(
          ErrorCodes.BAD_REQUEST,
          `setMany: ${items.length} entries with ifVersion conditions do not fit in one request (max_batch ${limits.maxBatch}, max_frame ${limits.maxFrame} bytes), and conditions are all or nothing only within one`,
          { op: 'setMany' },
        );
      }
      for (const part of parts) {
        await this.#call('setMany', { items: part }, () => true, undefined, true);
      }
      return true;
    });
  }

  /**
   * Deletes several keys; resolves to one boolean per key: whether it existed.
   * @param {string[]} keys
   */
  async deleteMany(keys) {
    return this.#bools('deleteMany', keys);
  }

  /**
   * One boolean per key: whether it exists.
   * @param {string[]} keys
   */
  async hasMany(keys) {
    return this.#bools('hasMany', keys);
  }

  async #bools(op, keys) {
    checkKeys(keys, op);
    if (keys.length === 0) return [];
    return this.#withLimits(op, async (limits) => {
      const parts = await Promise.all(chunk(keys, byteLength, limits).map((part) => (
        this.#call(op, { keys: part }, (r) => {
          if (!Array.isArray(r) || r.length !== part.length) throw this.#badResult(op, r);
          return r.map((b) => b === true);
        }, undefined, true)
      )));
      return parts.flat();
    });
  }

  /**
   * One page of the keys that start with prefix, in ascending byte order.
   * Pass the returned cursor to get the next page; null means no more pages.
   * @param {{ prefix?: string, cursor?: string | null, limit?: number, values?: boolean }} [options]
   */
  async list(options = {}) {
    const { prefix = '', cursor = null, limit = 0, values = false } = options;
    if (typeof prefix !== 'string') {
      throw new KvError(ErrorCodes.BAD_REQUEST, 'list: prefix must be a string', { op: 'list' });
    }
    checkWellFormed(prefix, 'prefix', 'list');
    if (cursor !== null && typeof cursor !== 'string') {
      throw new KvError(ErrorCodes.BAD_REQUEST, 'list: cursor must be a string or null', { op: 'list' });
    }
    if (!Number.isInteger(limit) || limit < 0) {
      throw new KvError(ErrorCodes.BAD_REQUEST, `list: limit must be a non-negative integer, got ${String(limit)}`, { op: 'list' });
    }
    const args = {};
    if (prefix !== '') args.prefix = prefix;
    if (cursor) args.cursor = cursor;
    if (limit > 0) args.limit = limit;
    if (values) args.values = true;
    return this.#call('list', args, (r) => {
      if (r === null || typeof r !== 'object' || !Array.isArray(r.keys)) throw this.#badResult('list', r);
      const page = {
        keys: r.keys,
        cursor: typeof r.cursor === 'string' && r.cursor !== '' ? r.cursor : null,
      };
      if (values) {
        if (!Array.isArray(r.values) || r.values.length !== r.keys.length) throw this.#badResult('list', r);
        page.values = r.values.map((v, i) => decodeValue(v, r.keys[i], 'list'));
      }
      return page;
    });
  }

  async #pageSize(pageSize, fallback) {
    if (pageSize !== undefined && (!Number.isInteger(pageSize) || pageSize <= 0)) {
      throw new KvError(ErrorCodes.BAD_REQUEST, `pageSize must be a positive integer, got ${String(pageSize)}`);
    }
    const { limits } = await this.connect();
    return Math.min(pageSize ?? fallback, limits.maxBatch);
  }

  /**
   * Iterates over the keys that start with prefix, in ascending byte order,
   * fetching them page by page.
   * @param {string} [prefix]
   * @param {{ pageSize?: number }} [options]
   * @returns {AsyncGenerator<string>}
   */
  async *keys(prefix = '', options = {}) {
    const limit = await this.#pageSize(options.pageSize, KEYS_PAGE);
    let cursor = null;
    do {
      const page = await this.list({ prefix, cursor, limit });
      yield* page.keys;
      cursor = page.cursor;
    } while (cursor !== null);
  }

  /**
   * Iterates over [key, value] of the entries whose keys start with prefix,
   * in ascending key order, fetching them page by page.
   * @param {string} [prefix]
   * @param {{ pageSize?: number }} [options]
   * @returns {AsyncGenerator<[string, unknown]>}
   */
  async *entries(prefix = '', options = {}) {
    const limit = await this.#pageSize(options.pageSize, ENTRIES_PAGE);
    let cursor = null;
    do {
      const page = await this.list({ prefix, cursor, limit, values: true });
      for (let i = 0; i < page.keys.length; i++) yield [page.keys[i], page.values[i]];
      cursor = page.cursor;
    } while (cursor !== null);
  }

  /**
   * Atomically adds delta to the integer stored under key and resolves to
   * the new value. A missing key counts as 0 and is created with ttl; an
   * existing key keeps its expiry.
   * @param {string} key
   * @param {number} [delta=1]
   * @param {number} [ttl] milliseconds, applied only when the key is created
   */
  async incr(key, delta = 1, ttl) {
    checkKey(key, 'incr');
    if (!Number.isSafeInteger(delta)) {
      throw new KvError(ErrorCodes.BAD_REQUEST, `incr: delta must be an integer within ±2^53, got ${String(delta)}`, { op: 'incr' });
    }
    const t = checkTTL(ttl, 'incr');
    const args = t === undefined ? { key, delta } : { key, delta, ttl: t };
    return this.#call('incr', args, (r) => {
      if (typeof r === 'number') return r;
      if (typeof r === 'bigint') return Number(r);
      throw this.#badResult('incr', r);
    });
  }

  /**
   * The project's storage: bytes used (keys plus values), entries, quota.
   * @returns {Promise<{ bytes: number, entries: number, quota: number }>}
   */
  async usage() {
    return this.#call('usage', {}, (r) => {
      if (r === null || typeof r !== 'object') throw this.#badResult('usage', r);
      const n = (v) => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : 0);
      return { bytes: n(r.bytes), entries: n(r.entries), quota: n(r.quota) };
    });
  }

  /** Resolves when the daemon answers. */
  async ping() {
    await this.#call('ping', {}, () => undefined);
  }

  /**
   * Stops the client: new calls fail with CLOSED at once, calls in flight
   * get their responses (or time out), then the connection is closed.
   */
  close() {
    if (this.#closed === null) {
      this.#closing = true;
      this.#closed = (async () => {
        if (this.#inflight > 0) {
          await new Promise((resolve) => {
            this.#idle = resolve;
          });
          this.#idle = null;
        }
        const conn = this.#conn;
        this.#conn = null;
        if (conn !== null) conn.fail(null);
      })();
    }
    return this.#closed;
  }

  #badResult(op, r) {
    return new KvError(
      ErrorCodes.INTERNAL,
      `${op}: the daemon's result does not match the protocol (got ${r === null ? 'nil' : Array.isArray(r) ? 'array' : typeof r})`,
      { op },
    );
  }
}

/**
 * Creates a client. The socket is options.socketPath, else $KV_SOCKET,
 * else /run/kvsidecar/kv.sock.
 * @param {{ socketPath?: string, timeout?: number }} [options]
 */
export function createClient(options) {
  return new Client(options);
}
