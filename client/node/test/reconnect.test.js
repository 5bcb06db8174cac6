// Connection failures against the real daemon: restart, crash, stall.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createClient } from '../src/index.js';
import { startDaemon } from './helpers/daemon.js';

const daemons = [];
after(async () => {
  for (const d of daemons) await d.destroy();
});

async function daemon() {
  const d = await startDaemon();
  daemons.push(d);
  return d;
}

test('after the daemon is stopped (SIGTERM) and restarted on the same socket, the next call re-dials', async () => {
  const d = await daemon();
  const kv = createClient({ socketPath: d.socketPath });
  const dropped = [];
  kv.on('connectionError', (e) => dropped.push(e));
  try {
    await kv.set('persisted', { v: 1 });
    await d.stop('SIGTERM');
    // The dropped connection is reported, and calls fail fast meanwhile.
    await assert.rejects(kv.get('persisted'), (err) => err.code === 'UNAVAILABLE' && err.message.includes(d.socketPath));
    assert.ok(dropped.length >= 1);
    assert.ok(dropped.every((e) => e.code === 'UNAVAILABLE'));
    await d.start();
    assert.deepEqual(await kv.get('persisted'), { v: 1 }, 'acknowledged writes survive the restart');
    assert.equal(await kv.set('after', 2), true);
    assert.equal(await kv.get('after'), 2);
  } finally {
    await kv.close();
  }
});

test('calls in flight when the daemon dies fail with UNAVAILABLE, none hangs', async () => {
  const d = await daemon();
  const kv = createClient({ socketPath: d.socketPath, timeout: 10000 });
  try {
    await kv.ping();
    const calls = Array.from({ length: 2000 }, (_, i) => kv.set(`k${i}`, i));
    setImmediate(() => d.proc.kill('SIGKILL'));
    const results = await Promise.allSettled(calls);
    const rejected = results.filter((r) => r.status === 'rejected');
    assert.ok(rejected.length > 0, 'some calls were in flight when the daemon died');
    for (const r of rejected) {
      assert.equal(r.reason.code, 'UNAVAILABLE', r.reason.message);
      assert.match(r.reason.message, /may or may not have been applied|cannot connect|closed/);
    }
    await new Promise((resolve) => (d.proc.exitCode !== null || d.proc.signalCode !== null ? resolve() : d.proc.once('exit', resolve)));
    await d.start();
    assert.equal(await kv.set('again', true), true);
  } finally {
    await kv.close();
  }
});

test('a SIGTERM while calls are in flight: each either completes or fails with UNAVAILABLE', async () => {
  const d = await daemon();
  const kv = createClient({ socketPath: d.socketPath });
  try {
    await kv.ping();
    const calls = Array.from({ length: 1000 }, (_, i) => kv.set(`t${i}`, i));
    const stopping = d.stop('SIGTERM');
    const results = await Promise.allSettled(calls);
    await stopping;
    for (const r of results) {
      if (r.status === 'rejected') assert.equal(r.reason.code, 'UNAVAILABLE', r.reason.message);
    }
    await d.start();
    // Every set that was acknowledged is there.
    const values = await kv.getMany(results.map((_, i) => `t${i}`));
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') assert.equal(values[i], i);
    });
  } finally {
    await kv.close();
  }
});

test('a call the daemon does not answer in time fails with TIMEOUT; the connection recovers', async () => {
  const d = await daemon();
  const kv = createClient({ socketPath: d.socketPath, timeout: 300 });
  try {
    await kv.set('k', 'v');
    await d.pause(); // the daemon stops answering
    try {
      const started = Date.now();
      await assert.rejects(kv.get('k'), (err) => {
        assert.equal(err.code, 'TIMEOUT');
        assert.match(err.message, /get timed out after 300 ms/);
        return true;
      });
      assert.ok(Date.now() - started >= 290);
    } finally {
      d.resume();
    }
    // The same client recovers (retrying only TIMEOUTs while the resumed
    // daemon catches up on a loaded machine).
    assert.equal(await retryTimeouts(() => kv.get('k')), 'v');
  } finally {
    await kv.close();
  }
});

test('the timeout also bounds waiting for the hello of a stalled daemon', async () => {
  const d = await daemon();
  const kv = createClient({ socketPath: d.socketPath, timeout: 300 });
  await d.pause();
  try {
    await assert.rejects(kv.ping(), (err) => err.code === 'TIMEOUT');
  } finally {
    d.resume();
  }
  await retryTimeouts(() => kv.ping());
  await kv.close();
});

async function retryTimeouts(fn) {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (err.code !== 'TIMEOUT' || i >= 20) throw err;
    }
  }
}

test('a call made while the daemon\'s listen backlog is full dials again until it drains', async () => {
  // Room for the connections that fill the backlog: they are admitted once
  // the daemon runs again.
  const d = await startDaemon({ args: ['--max-conns', '8192', '--max-conns-per-project', '8192'] });
  daemons.push(d);
  const kv = createClient({ socketPath: d.socketPath, timeout: 10000 });
  const fillers = [];
  try {
    // A stopped daemon accepts nothing; connect until the kernel refuses.
    process.kill(d.proc.pid, 'SIGSTOP');
    let full = false;
    for (let i = 0; i < 8192 && !full; i++) {
      full = await new Promise((resolve) => {
        const s = net.createConnection({ path: d.socketPath });
        s.once('connect', () => { fillers.push(s); resolve(false); });
        s.once('error', (err) => resolve(err.code === 'EAGAIN'));
      });
    }
    assert.ok(full, 'the listen backlog never filled');
    const answer = kv.ping();
    let settled = false;
    answer.then(() => { settled = true; }, () => { settled = true; });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(settled, false, 'the call settled while the backlog was full');
    process.kill(d.proc.pid, 'SIGCONT');
    await answer;
  } finally {
    process.kill(d.proc.pid, 'SIGCONT');
    for (const s of fillers) s.destroy();
    await kv.close();
  }
});
