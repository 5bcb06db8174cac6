import { Encoder, Decoder } from '@msgpack/msgpack';

/** Size of a frame's big-endian uint32 length prefix. */
export const HEADER_SIZE = 4;

const encoder = new Encoder({ ignoreUndefined: true });

/**
 * Encodes one message (a map with string keys) as a frame: a 4-byte
 * big-endian payload length followed by the MessagePack payload.
 * @param {Record<string, unknown>} message
 * @returns {Buffer}
 */
export function encodeFrame(message) {
  const payload = encoder.encode(message);
  const frame = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  frame.set(payload, HEADER_SIZE);
  return frame;
}

/**
 * Splits a byte stream into frame payloads. Feed it the chunks a socket
 * delivers, however they are cut: a chunk may hold part of a frame, several
 * frames, or the end of one and the start of the next.
 */
export class FrameReader {
  #chunks = []; // unconsumed bytes, in order
  #size = 0; // total length of #chunks
  #need = HEADER_SIZE; // bytes needed before the next frame can complete
  #decoder = new Decoder();

  /**
   * The largest payload a frame may claim. A longer one is an error as soon
   * as its length prefix arrives, before its bytes are buffered.
   */
  maxPayload = Infinity;

  /**
   * Adds a chunk and returns the messages completed by it, decoded.
   * Throws on a zero-length frame, a frame longer than maxPayload, or a
   * payload that is not one MessagePack value; the stream cannot be
   * resynchronised after that.
   * @param {Buffer} chunk
   * @returns {unknown[]}
   */
  push(chunk) {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    // A large frame arrives in many chunks: gather them without copying
    // until the whole frame is here.
    if (this.#size < this.#need) return [];
    const buf = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks, this.#size);
    const out = [];
    let off = 0;
    let need = HEADER_SIZE;
    while (buf.length - off >= HEADER_SIZE) {
      const len = buf.readUInt32BE(off);
      if (len === 0) throw new Error('the daemon sent a frame with an empty payload');
      if (len > this.maxPayload) {
        throw new Error(`the daemon sent a frame of ${len} bytes, over the limit of ${this.maxPayload} bytes`);
      }
      if (buf.length - off - HEADER_SIZE < len) {
        need = HEADER_SIZE + len;
        break;
      }
      const payload = buf.subarray(off + HEADER_SIZE, off + HEADER_SIZE + len);
      off += HEADER_SIZE + len;
      out.push(this.#decoder.decode(payload));
    }
    if (off === buf.length) {
      this.#chunks = [];
      this.#size = 0;
    } else {
      // Copy a small tail rather than pin the whole chunk it came in.
      const rest = buf.length - off < 4096 && buf.length > 65536 ? Buffer.from(buf.subarray(off)) : buf.subarray(off);
      this.#chunks = [rest];
      this.#size = rest.length;
    }
    this.#need = need;
    return out;
  }

  /** Bytes received but not yet part of a complete frame. */
  get pending() {
    return this.#size;
  }
}
