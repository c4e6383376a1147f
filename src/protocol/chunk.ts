/**
 * Binary frames carry upload content:
 *
 *   offset size field
 *   0      1    magic 0x4C ('L')
 *   1      1    kind: 1 = content chunk
 *   2      1    flags: bit 0 = last chunk of this request
 *   3      1    reserved, 0
 *   4      4    request id, uint32 big-endian
 *   8      4    chunk index, uint32 big-endian (0, 1, 2, ... in order)
 *   12     ..   payload
 */
import { ProtocolError } from '../errors.js';
import { FRAME_LIMITS } from './messages.js';

export const CHUNK_HEADER = 12;
const MAGIC = 0x4c;
const KIND_CHUNK = 1;

export interface Chunk {
  id: number;
  index: number;
  last: boolean;
  payload: Buffer;
}

export function encodeChunk(id: number, index: number, last: boolean, payload: Uint8Array): Buffer {
  if (payload.length > FRAME_LIMITS.maxChunk)
    throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `chunk of ${payload.length} bytes exceeds ${FRAME_LIMITS.maxChunk}`);
  const buf = Buffer.allocUnsafe(CHUNK_HEADER + payload.length);
  buf[0] = MAGIC;
  buf[1] = KIND_CHUNK;
  buf[2] = last ? 1 : 0;
  buf[3] = 0;
  buf.writeUInt32BE(id >>> 0, 4);
  buf.writeUInt32BE(index >>> 0, 8);
  buf.set(payload, CHUNK_HEADER);
  return buf;
}

/** The header as a separate buffer, for senders that pass header and payload without a copy. */
export function encodeChunkHeader(id: number, index: number, last: boolean): Buffer {
  const buf = Buffer.allocUnsafe(CHUNK_HEADER);
  buf[0] = MAGIC;
  buf[1] = KIND_CHUNK;
  buf[2] = last ? 1 : 0;
  buf[3] = 0;
  buf.writeUInt32BE(id >>> 0, 4);
  buf.writeUInt32BE(index >>> 0, 8);
  return buf;
}

/** Validate and split a binary frame. Throws ProtocolError, nothing else. The payload is a view, not a copy. */
export function decodeChunk(frame: Buffer, maxChunk: number = FRAME_LIMITS.maxChunk): Chunk {
  if (frame.length < CHUNK_HEADER)
    throw new ProtocolError(
      'LA_ERR_PROTO_MALFORMED',
      `binary frame of ${frame.length} bytes is shorter than its ${CHUNK_HEADER}-byte header`,
    );
  if (frame[0] !== MAGIC || frame[1] !== KIND_CHUNK)
    throw new ProtocolError('LA_ERR_PROTO_MALFORMED', 'binary frame has a bad magic or kind');
  const flags = frame[2]!;
  if ((flags & ~1) !== 0 || frame[3] !== 0) throw new ProtocolError('LA_ERR_PROTO_MALFORMED', 'binary frame has unknown flags');
  const payloadLen = frame.length - CHUNK_HEADER;
  if (payloadLen > maxChunk) throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `chunk of ${payloadLen} bytes exceeds ${maxChunk}`);
  return {
    id: frame.readUInt32BE(4),
    index: frame.readUInt32BE(8),
    last: (flags & 1) === 1,
    payload: frame.subarray(CHUNK_HEADER),
  };
}
