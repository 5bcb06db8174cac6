// Starts one real daemon for the Keyv suites and hands its socket to them.
import { startDaemon } from '../helpers/daemon.js';

let daemon;

export async function setup(project) {
  daemon = await startDaemon();
  project.provide('socketPath', daemon.socketPath);
}

export async function teardown() {
  await daemon?.destroy();
}
