import { EventEmitter } from 'node:events';

/** Values the client stores: anything JSON can represent. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export interface ClientOptions {
  /** Unix socket of the daemon. Default: $KV_SOCKET, else /run/kvsidecar/kv.sock. */
  socketPath?: string;
  /** Per-call timeout in milliseconds, at most 2147483647; 0 disables it. Default 5000. */
  timeout?: number;
}

/** The daemon's limits, announced in its hello. */
export interface Limits {
  /** Longest key, in bytes. */
  maxKey: number;
  /** Largest value (its JSON text), in bytes. */
  maxValue: number;
  /** Largest request frame payload, in bytes. */
  maxFrame: number;
  /** Requests of one connection the daemon reads ahead of their responses. */
  maxInflight: number;
  /** Keys or items of one *Many request, and entries of one list page. */
  maxBatch: number;
  /** Bytes of one response (0 from a daemon that does not announce it). */
  maxResponse: number;
}

/** What the daemon answered to the hello. */
export interface HelloInfo {
  version: number;
  server: string;
  /** The caller's project, resolved by the daemon from the socket's peer credentials. */
  project: string;
  limits: Limits;
}

export interface Entry<V = unknown> {
  key: string;
  value: V;
  /** Milliseconds until the entry expires; absent or 0: never. */
  ttl?: number;
  /** Write only if the key has this version (0: only if it does not exist); see set. */
  ifVersion?: number;
}

export interface VersionedValue<V = unknown> {
  value: V;
  /** Changes on every write of the key and never repeats; compare for equality only. */
  version: number;
}

export interface SetOptions {
  /** Write only if the key's version is this (0: only if it does not exist); else reject with CONFLICT. */
  ifVersion?: number;
}

export interface ListOptions {
  /** Only keys that start with this. */
  prefix?: string;
  /** The cursor of the previous page; null or absent for the first page. */
  cursor?: string | null;
  /** At most this many keys (0 or absent: the daemon's default, 100; at most maxBatch). */
  limit?: number;
  /** Also return the values. */
  values?: boolean;
}

export interface ListPage<V = unknown> {
  /** Keys in ascending byte order. */
  keys: string[];
  /** Present when values: true was asked for; values[i] belongs to keys[i]. */
  values?: V[];
  /** Pass it to get the next page; null when there are no more. */
  cursor: string | null;
}

export interface IterateOptions {
  /** Keys fetched per request (default 1000 for keys(), 100 for entries(); at most maxBatch). */
  pageSize?: number;
}

export interface Usage {
  /** Sum of len(key) + len(value) over the project's entries. */
  bytes: number;
  entries: number;
  /** The project's quota in bytes. */
  quota: number;
}

export type ErrorCode =
  | 'BAD_FRAME'
  | 'FRAME_TOO_LARGE'
  | 'UNSUPPORTED_VERSION'
  | 'FORBIDDEN'
  | 'BAD_REQUEST'
  | 'UNKNOWN_OP'
  | 'KEY_TOO_LARGE'
  | 'VALUE_TOO_LARGE'
  | 'QUOTA_EXCEEDED'
  | 'NOT_INTEGER'
  | 'OVERFLOW'
  | 'CONFLICT'
  | 'UNAVAILABLE'
  | 'BUSY'
  | 'RESPONSE_TOO_LARGE'
  | 'INTERNAL'
  | 'TIMEOUT'
  | 'CLOSED'
  | 'NOT_JSON';

export declare const ErrorCodes: Readonly<{ [C in ErrorCode]: C }>;

/** The error every failed call rejects with. */
export declare class KvError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; op?: string; keys?: string[] });
  name: 'KvError';
  /** Stable code to branch on. */
  code: ErrorCode;
  /** The operation that failed, when known. */
  op?: string;
  /** CONFLICT: every key whose condition failed, in request order. */
  keys?: string[];
}

export declare const DEFAULT_SOCKET_PATH: '/run/kvsidecar/kv.sock';
export declare const DEFAULT_TIMEOUT: number;
export declare const VERSION: string;

/**
 * Events: 'connect' (info: HelloInfo) when a connection is established and
 * the daemon answered the hello; 'connectionError' (error: KvError) when
 * dialing fails or an established connection drops (not after close()).
 */
export declare class Client extends EventEmitter {
  constructor(options?: ClientOptions);
  on(event: 'connect', listener: (info: HelloInfo) => void): this;
  on(event: 'connectionError', listener: (error: KvError) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: 'connect', listener: (info: HelloInfo) => void): this;
  once(event: 'connectionError', listener: (error: KvError) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  readonly socketPath: string;
  readonly timeout: number;
  /** Whether close() was called. */
  readonly closed: boolean;

  /** Connects now (calls connect on their own when needed). */
  connect(): Promise<HelloInfo>;

  /** The value stored under key, or undefined when there is none. */
  get<V = any>(key: string): Promise<V | undefined>;
  /** The value with its version, or undefined when there is none. */
  getWithVersion<V = any>(key: string): Promise<VersionedValue<V> | undefined>;
  /** Stores value (JSON-encoded) under key; ttl in milliseconds, absent or 0 for none. */
  set(key: string, value: unknown, ttl?: number, options?: SetOptions): Promise<true>;
  /** Stores value only if key does not exist; resolves to whether it did. */
  setIfAbsent(key: string, value: unknown, ttl?: number): Promise<boolean>;
  /** Deletes key only if its version is version (else CONFLICT); resolves to whether it existed. */
  deleteIf(key: string, version: number): Promise<boolean>;
  /** Milliseconds left to live (0: no expiry), or undefined when the key does not exist. */
  ttl(key: string): Promise<number | undefined>;
  /** Sets a new TTL without rewriting the value (0: none); resolves to whether the key existed. */
  expire(key: string, ttl: number): Promise<boolean>;
  /** Read-modify-write retried on conflict; resolves to the value stored. */
  update<V = any, R = V>(key: string, fn: (old: V | undefined) => R | Promise<R>): Promise<R>;
  has(key: string): Promise<boolean>;
  /** Resolves to whether the key existed. */
  delete(key: string): Promise<boolean>;
  /** Deletes every entry of the project; resolves to how many were removed. */
  clear(): Promise<number>;

  getMany<V = any>(keys: string[]): Promise<Array<V | undefined>>;
  /** Atomic per request of up to maxBatch items and maxFrame bytes; larger calls are split and sent in order. */
  setMany(entries: Array<Entry>): Promise<true>;
  /** One boolean per key: whether it existed. */
  deleteMany(keys: string[]): Promise<boolean[]>;
  hasMany(keys: string[]): Promise<boolean[]>;

  list<V = any>(options?: ListOptions): Promise<ListPage<V>>;
  keys(prefix?: string, options?: IterateOptions): AsyncGenerator<string, void, undefined>;
  entries<V = any>(prefix?: string, options?: IterateOptions): AsyncGenerator<[string, V], void, undefined>;

  /** Atomically adds delta (default 1) and resolves to the new value; ttl applies when the key is created. */
  incr(key: string, delta?: number, ttl?: number): Promise<number>;
  usage(): Promise<Usage>;
  ping(): Promise<void>;
  /** New calls fail with CLOSED; calls in flight finish; then the connection closes. */
  close(): Promise<void>;
}

export declare function createClient(options?: ClientOptions): Client;

export interface KeyvSidecarOptions extends ClientOptions {
  /** Use this client instead of creating one; disconnect() then leaves it open. */
  client?: Client;
}

/** Keyv storage adapter: new Keyv({ store: new KeyvSidecar(options) }). */
export declare class KeyvSidecar extends EventEmitter {
  constructor(options?: KeyvSidecarOptions);
  readonly client: Client;
  /** Set by Keyv; keys arrive prefixed with `${namespace}:`. */
  namespace?: string | undefined;
  ttlSupport: true;
  opts: { dialect: string; socketPath: string; timeout: number; [key: string]: unknown };

  get<Value>(key: string): Promise<Value | undefined>;
  getMany<Value>(keys: string[]): Promise<Array<Value | undefined>>;
  set(key: string, value: any, ttl?: number): Promise<boolean>;
  /**
   * Resolves to one true per entry at run time, which Keyv's setMany()
   * passes on as its boolean[]; a failure rejects. Declared void because
   * that is what Keyv's KeyvStoreAdapter type asks of a store.
   */
  setMany(entries: Array<{ key: string; value: any; ttl?: number }>): Promise<void>;
  delete(key: string): Promise<boolean>;
  /** True when at least one of the keys existed. */
  deleteMany(keys: string[]): Promise<boolean>;
  has(key: string): Promise<boolean>;
  hasMany(keys: string[]): Promise<boolean[]>;
  /** Deletes the keys of this namespace; without a namespace, every entry of the project. */
  clear(): Promise<void>;
  iterator<Value>(namespace?: string): AsyncGenerator<[string, Value], void, undefined>;
  /** Closes the connection, unless the client was passed in through options.client. */
  disconnect(): Promise<void>;
}
