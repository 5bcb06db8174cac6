export { Client, createClient, DEFAULT_SOCKET_PATH, DEFAULT_TIMEOUT, VERSION } from './client.js';
export { KvError, ErrorCodes } from './errors.js';
export { KeyvSidecar } from './keyv.js';
