import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, FrameReader } from '../src/frame.js';

test('encodes the ping frame of PROTOCOL.md §7 byte for byte', () => {
  const frame = encodeFrame({ id: 1, op: 'ping' });
  assert.equal(frame.toString('hex'), '0000000d82a2696401a26f70a470696e67');
});

test('values are msgpack bin, keys and ops str', () => {
  const frame = encodeFrame({ id: 2, op: 'set', key: 'k', value: Buffer.from('1') });
  const payload = frame.subarray(4);
  // ... a3 "key" a1 "k" a5 "value" c4 01 "1"
  assert.ok(payload.includes(Buffer.from([0xa1, 0x6b])), 'key is fixstr');
  assert.ok(payload.includes(Buffer.from([0xc4, 0x01, 0x31])), 'value is bin 8');
});

function stream(messages) {
  return Buffer.concat(messages.map((m) => encodeFrame(m)));
}

const messages = [
  { id: 1, result: null },
  { id: 2, result: Buffer.from('{"name":"John","age":30}') },
  { id: 3, error: { code: 'quota_exceeded', message: 'quota exceeded: 10 of 10 bytes used' } },
  { id: 4, result: Buffer.alloc(70000, 0x61) }, // larger than one socket read
  { id: 5, result: [true, false] },
];

function normalize(list) {
  return list.map((m) => JSON.parse(JSON.stringify(m, (k, v) => (v && v.type === 'Buffer' ? Buffer.from(v.data).toString() : v))));
}

test('reassembles frames delivered one byte at a time', () => {
  const bytes = stream(messages);
  const r = new FrameReader();
  const out = [];
  for (let i = 0; i < bytes.length; i++) out.push(...r.push(bytes.subarray(i, i + 1)));
  assert.deepEqual(normalize(out), normalize(messages));
  assert.equal(r.pending, 0);
});

test('splits coalesced frames delivered in one chunk', () => {
  const r = new FrameReader();
  const out = r.push(stream(messages));
  assert.deepEqual(normalize(out), normalize(messages));
  assert.equal(r.pending, 0);
});

test('handles every cut point of a two-frame stream, including inside the length prefix', () => {
  const bytes = stream([messages[0], messages[2]]);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const r = new FrameReader();
    const out = [...r.push(bytes.subarray(0, cut)), ...r.push(bytes.subarray(cut))];
    assert.deepEqual(normalize(out), normalize([messages[0], messages[2]]), `cut at ${cut}`);
  }
});

test('random chunkings of a long stream', () => {
  const many = [];
  for (let i = 0; i < 300; i++) many.push({ id: i, result: Buffer.alloc(i * 37, i & 0xff) });
  const bytes = stream(many);
  for (let round = 0; round < 20; round++) {
    const r = new FrameReader();
    const out = [];
    let off = 0;
    while (off < bytes.length) {
      const n = 1 + Math.floor(Math.random() * 9000);
      out.push(...r.push(bytes.subarray(off, off + n)));
      off += n;
    }
    assert.equal(out.length, many.length);
    out.forEach((m, i) => {
      assert.equal(m.id, i);
      assert.equal(m.result.length, i * 37);
    });
  }
});

test('a zero-length frame is an error', () => {
  const r = new FrameReader();
  assert.throws(() => r.push(Buffer.from([0, 0, 0, 0])), /empty payload/);
});

test('a length prefix over maxPayload is an error before its bytes are buffered', () => {
  const r = new FrameReader();
  r.maxPayload = 100;
  const ok = encodeFrame({ id: 1, result: 'x'.repeat(50) });
  assert.equal(r.push(ok).length, 1);
  const header = Buffer.alloc(4);
  header.writeUInt32BE(101, 0);
  // Split inside the prefix: the check happens once all four bytes are here.
  assert.deepEqual(r.push(header.subarray(0, 2)), []);
  assert.throws(() => r.push(header.subarray(2)), /frame of 101 bytes, over the limit of 100 bytes/);
});
