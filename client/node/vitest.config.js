import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/keyv/**/*.spec.js'],
    globalSetup: ['test/keyv/global-setup.js'],
    // The suites share one daemon and clear it between tests.
    fileParallelism: false,
    testTimeout: 20000,
    hookTimeout: 60000,
  },
});
