import { EventEmitter } from 'node:events';
import { Client } from './client.js';

/**
 * A Keyv storage adapter backed by the kvsidecar daemon:
 *
 *   new Keyv({ store: new KeyvSidecar({ socketPath }) })
 *
 * Keyv hands the adapter keys already prefixed with `namespace:` and values
 * already serialized; the adapter stores them as they are (JSON-encoded like
 * any value), so they come back exactly.
 */
export class KeyvSidecar extends EventEmitter {
  /**
   * @param {{ socketPath?: string, timeout?: number, client?: Client }} [options]
   */
  constructor(options = {}) {
    super();
    const { client, ...rest } = options;
    this.client = client ?? new Client(rest);
    this._ownsClient = client === undefined;
    this.namespace = undefined; // set by Keyv
    this.ttlSupport = true;
    // Keyv 5 exposes keyv.iterator() only for adapters whose opts.dialect is
    // on its built-in list; the daemon's durable store is PostgreSQL, and
    // this adapter iterates the way @keyv/postgres does (by key prefix, in
    // key order, page by page).
    this.opts = { dialect: 'postgres', socketPath: this.client.socketPath, timeout: this.client.timeout, ...rest };
    this._onConnectionError = (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', err);
    };
    this.client.on('connectionError', this._onConnectionError);
  }

  /** @returns {Promise<unknown>} the stored value, or undefined */
  async get(key) {
    return this.client.get(key);
  }

  async getMany(keys) {
    return this.client.getMany(keys);
  }

  /** ttl in milliseconds, as Keyv passes it; undefined: no expiry. */
  async set(key, value, ttl) {
    return this.client.set(key, value, ttl);
  }

  /**
   * Resolves to one true per entry: Keyv's setMany() returns what this
   * returns, and promises a boolean per entry. A failure rejects.
   * @param {Array<{ key: string, value: unknown, ttl?: number }>} entries
   */
  async setMany(entries) {
    await this.client.setMany(entries);
    return entries.map(() => true);
  }

  async delete(key) {
    return this.client.delete(key);
  }

  /** Resolves to true when at least one of the keys existed. */
  async deleteMany(keys) {
    const existed = await this.client.deleteMany(keys);
    return existed.some(Boolean);
  }

  async has(key) {
    return this.client.has(key);
  }

  async hasMany(keys) {
    return this.client.hasMany(keys);
  }

  /**
   * Deletes the keys of this adapter's namespace (those starting with
   * `namespace:`), page by page. Without a namespace it deletes every entry
   * of the project.
   */
  async clear() {
    if (!this.namespace) {
      await this.client.clear();
      return;
    }
    const prefix = `${this.namespace}:`;
    const { limits } = await this.client.connect();
    let cursor = null;
    do {
      const page = await this.client.list({ prefix, cursor, limit: limits.maxBatch });
      if (page.keys.length > 0) await this.client.deleteMany(page.keys);
      cursor = page.cursor;
    } while (cursor !== null);
  }

  /**
   * Yields [key, value] for every entry of the namespace (keys as stored,
   * with their `namespace:` prefix), in key order.
   * @param {string} [namespace]
   */
  async *iterator(namespace) {
    const prefix = namespace ? `${namespace}:` : '';
    yield* this.client.entries(prefix);
  }

  /** Closes the connection, unless the client was passed in by the caller. */
  async disconnect() {
    this.client.off('connectionError', this._onConnectionError);
    if (this._ownsClient) await this.client.close();
  }
}

export default KeyvSidecar;
