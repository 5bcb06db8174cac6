// Starts the real kvsidecar daemon built from this repository on a temporary
// socket. The binary comes from $KVSIDECAR_BIN, or is built once per test
// run with `go build` (test/run.js builds it before the test processes
// start and passes it on in KVSIDECAR_BIN).
import { spawn, execFileSync } from 'node:child_process';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

/** Builds the daemon into dir and returns the binary's path. */
export function buildDaemon(dir) {
  const bin = path.join(dir, 'kvsidecar');
  execFileSync('go', ['build', '-o', bin, './cmd/kvsidecar'], { cwd: REPO_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  return bin;
}

let built = null;
/** The daemon binary: $KVSIDECAR_BIN, or one built for this process. */
export function daemonBinary() {
  if (process.env.KVSIDECAR_BIN) return process.env.KVSIDECAR_BIN;
  if (built === null) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsidecar-bin-'));
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    built = buildDaemon(dir);
  }
  return built;
}

function canConnect(socketPath) {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: socketPath });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * Starts a daemon. Options: quota (bytes, --default-quota), identity (flags
 * replacing `--project test`), args (extra flags). Returns { socketPath, dir, proc, logs(), stop(), start() }.
 */
export async function startDaemon(options = {}) {
  const bin = daemonBinary();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvsidecar-test-'));
  const socketPath = path.join(dir, 'kv.sock');
  const dataDir = path.join(dir, 'data');
  const args = [
    '--socket', socketPath,
    '--data-dir', dataDir,
    ...(options.identity ?? ['--project', 'test']),
    '--log-format', 'console',
    '--default-quota', String(options.quota ?? 1024 * 1024 * 1024),
    // No metrics listener: several daemons run at once during the tests.
    '--metrics-addr', '',
    ...(options.args ?? []),
  ];
  let output = '';
  const d = {
    socketPath,
    dir,
    dataDir,
    proc: null,
    logs: () => output,
    async start() {
      const proc = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      d.proc = proc;
      proc.stdout.on('data', (b) => { output += b; });
      proc.stderr.on('data', (b) => { output += b; });
      let exited = null;
      proc.once('exit', (code, signal) => { exited = { code, signal }; });
      const deadline = Date.now() + 20000;
      for (;;) {
        if (exited) throw new Error(`kvsidecar exited during startup (${JSON.stringify(exited)}):\n${output}`);
        if (await canConnect(socketPath)) return d;
        if (Date.now() > deadline) {
          proc.kill('SIGKILL');
          throw new Error(`kvsidecar did not accept connections on ${socketPath} within 20 s:\n${output}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    /** Sends signal (default SIGTERM) and waits for the process to exit. */
    async stop(signal = 'SIGTERM') {
      const proc = d.proc;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const done = new Promise((resolve) => proc.once('exit', resolve));
      proc.kill(signal);
      const timer = setTimeout(() => proc.kill('SIGKILL'), 10000);
      await done;
      clearTimeout(timer);
    },
    /** Freezes the daemon (SIGSTOP) and waits until it is stopped. */
    async pause() {
      d.proc.kill('SIGSTOP');
      const stat = `/proc/${d.proc.pid}/stat`;
      const deadline = Date.now() + 5000;
      while (Date.now() < deadline) {
        let state = null;
        try {
          // pid (comm) state ...; comm may contain spaces, so split after ')'.
          state = fs.readFileSync(stat, 'utf8').split(') ')[1]?.[0];
        } catch {
          await new Promise((r) => setTimeout(r, 200)); // no /proc: just wait
          return;
        }
        if (state === 'T' || state === 't') return;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error('the daemon did not stop on SIGSTOP');
    },
    /** Lets a paused daemon run again. */
    resume() {
      d.proc.kill('SIGCONT');
    },
    /** Stops the daemon and removes its files. */
    async destroy() {
      await d.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await d.start();
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return d;
}
