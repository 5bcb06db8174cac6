// Keyv's official compliance suite (@keyv/test-suite) against KeyvSidecar,
// invoked the way Keyv's own adapters invoke it.
import * as test from 'vitest';
import Keyv from 'keyv';
import keyvTestSuite, { keyvIteratorTests } from '@keyv/test-suite';
import { KeyvSidecar } from 'kvsidecar/keyv';

const socketPath = test.inject('socketPath');
const stores = [];
const store = () => {
  const s = new KeyvSidecar({ socketPath });
  stores.push(s);
  return s;
};

test.afterAll(async () => {
  await Promise.all(stores.map((s) => s.disconnect()));
});

keyvTestSuite(test, Keyv, store);
keyvIteratorTests(test, Keyv, store);
