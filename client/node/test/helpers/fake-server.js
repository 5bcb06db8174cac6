// A minimal stand-in for the daemon's framing, used only by the protocol unit
// tests (partial reads, coalesced and reordered responses, hello handling).
// Everything else is tested against the real daemon.
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { encodeFrame, FrameReader } from '../../src/frame.js';

export const FAKE_LIMITS = { max_key: 1024, max_value: 1048576, max_frame: 2097152, max_inflight: 128, max_batch: 1000 };

/**
 * Starts a fake server. handle(req, conn) returns the response map to send
 * (without id), a Promise of one, or undefined to send nothing.
 * options.write: 'normal' | 'bytewise' (every byte its own write) |
 * 'reverse' (responses of one read are sent in reverse order, in one write).
 * options.onConnect(conn): return false to skip the default hello handling.
 */
export async function startFakeServer(handle, options = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kvfake-'));
  const socketPath = path.join(dir, 'fake.sock');
  const conns = new Set();
  const requests = [];
  const server = net.createServer((socket) => {
    const conn = { socket, helloDone: false, requests: [] };
    conns.add(conn);
    socket.on('close', () => conns.delete(conn));
    socket.on('error', () => {});
    if (options.onConnect && options.onConnect(conn) === false) return;
    const reader = new FrameReader();
    socket.on('data', async (chunk) => {
      const msgs = reader.push(chunk);
      const answers = msgs.map((req) => {
        requests.push(req);
        conn.requests.push(req);
        if (!conn.helloDone) {
          conn.helloDone = true;
          return {
            id: req.id,
            result: options.hello ?? { version: 2, server: 'fake/0', project: 'test', limits: options.limits ?? FAKE_LIMITS },
          };
        }
        return Promise.resolve(handle(req, conn)).then((resp) => (resp === undefined ? undefined : { id: req.id, ...resp }));
      });
      const out = (await Promise.all(answers)).filter((a) => a !== undefined).map((a) => encodeFrame(a));
      if (socket.destroyed) return;
      if (options.write === 'bytewise') {
        for (const b of Buffer.concat(out)) {
          socket.write(Buffer.from([b]));
          await new Promise((r) => setImmediate(r));
        }
      } else if (options.write === 'reverse') {
        socket.write(Buffer.concat(out.reverse()));
      } else {
        for (const f of out) socket.write(f);
      }
    });
  });
  await new Promise((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    requests,
    conns,
    async close() {
      for (const c of conns) c.socket.destroy();
      await new Promise((resolve) => server.close(resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A tiny in-memory implementation of a few ops, for handlers to use. */
export function memoryHandler() {
  const m = new Map();
  return (req) => {
    switch (req.op) {
      case 'ping': return { result: null };
      case 'get': return { result: m.has(req.key) ? m.get(req.key) : null };
      case 'set': m.set(req.key, req.value); return { result: null };
      case 'has': return { result: m.has(req.key) };
      case 'delete': { const had = m.delete(req.key); return { result: had }; }
      case 'getMany': return { result: req.keys.map((k) => (m.has(k) ? m.get(k) : null)) };
      case 'hasMany': return { result: req.keys.map((k) => m.has(k)) };
      case 'deleteMany': return { result: req.keys.map((k) => m.delete(k)) };
      case 'setMany': for (const it of req.items) m.set(it.key, it.value); return { result: null };
      default: return { error: { code: 'unknown_op', message: `unknown op ${req.op}` } };
    }
  };
}
