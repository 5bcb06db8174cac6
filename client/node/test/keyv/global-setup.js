// Starts one real daemon for the Keyv suites and hands its socket to them.
// The binary is built here once (unless KVSIDECAR_BIN names one) and passed
// on to the test files, which may start daemons of their own.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildDaemon, startDaemon } from '../helpers/daemon.js';

let daemon;
let binDir = null;

export async function setup(project) {
  if (!process.env.KVSIDECAR_BIN) {
    binDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsidecar-bin-'));
    process.env.KVSIDECAR_BIN = buildDaemon(binDir);
  }
  project.provide('kvsidecarBin', process.env.KVSIDECAR_BIN);
  daemon = await startDaemon();
  project.provide('socketPath', daemon.socketPath);
}

export async function teardown() {
  await daemon?.destroy();
  if (binDir !== null) fs.rmSync(binDir, { recursive: true, force: true });
}
