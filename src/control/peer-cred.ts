/**
 * Who is at the other end of an accepted AF_UNIX stream socket: getsockopt(SO_PEERCRED), see
 * unix(7). The kernel fills it at connect() time; a client cannot forge it. Node has no API for
 * it, so the call goes through libc on the socket's fd (`socket._handle.fd`, Linux only).
 * Returns undefined when the credentials cannot be had: callers that need them must refuse.
 */
import type net from 'node:net';
import { tryLibc } from '../platform/linux/libc.js';

/** <asm-generic/socket.h> SOL_SOCKET, SO_PEERCRED */
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
/** struct ucred { pid_t pid; uid_t uid; gid_t gid; } */
const UCRED_LEN = 12;

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** The fd behind a net.Socket (a libuv pipe handle), or undefined. */
export function socketFd(sock: net.Socket): number | undefined {
  const fd = (sock as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export function peerCred(sock: net.Socket): PeerCred | undefined {
  const fd = socketFd(sock);
  if (fd === undefined) return undefined;
  const l = tryLibc(); // null off Linux
  if (!l) return undefined;
  const buf = Buffer.alloc(UCRED_LEN);
  const len = new Uint32Array([UCRED_LEN]);
  if (l.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0 || len[0] !== UCRED_LEN) return undefined;
  return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
}
