/**
 * The kernel's process events connector (Documentation/driver-api/connector.rst, <linux/cn_proc.h>):
 * a NETLINK_CONNECTOR socket bound to the CN_IDX_PROC multicast group receives one datagram per
 * fork, exec, uid change and exit of every process on the host, after PROC_CN_MCAST_LISTEN is
 * sent. Needs CAP_NET_ADMIN (root) and CONFIG_PROC_EVENTS. Pids are those of the initial pid
 * namespace.
 *
 * This file is the bindings (libc socket, bind, send, setsockopt) and the parser. The socket is
 * non-blocking; the process watcher reads it on the main thread's event loop (src/processes/
 * process-watcher.ts, through src/platform/linux/fd-stream.ts), so nothing ever blocks on it.
 *
 * Layouts (all native-endian, little on x86_64/aarch64):
 *   struct nlmsghdr   { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }          16 bytes
 *   struct cn_msg     { u32 idx; u32 val; u32 seq; u32 ack; u16 len; u16 flags; }  20 bytes
 *   struct proc_event { u32 what; u32 cpu; u64 timestamp_ns; union event_data; }  16 + data
 */
import { PlatformError } from '../../errors.js';
import { EACCES, EAGAIN, EINTR, ENOBUFS, EPERM, EPROTONOSUPPORT, closeFd, describeErrno, errno, libc, type Libc } from './libc.js';
import { readProcess, type ProcInfo } from './procfs.js';

// <linux/socket.h>, <linux/net.h>, <asm-generic/socket.h>, <linux/netlink.h>
const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_CONNECTOR = 11;
const SOL_SOCKET = 1;
const SO_RCVBUFFORCE = 33;
const NLMSG_DONE = 3;
const MSG_DONTWAIT = 0x40;
const NLMSG_HDRLEN = 16;
// <linux/connector.h>
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;
const CN_MSG_LEN = 20;
// <linux/cn_proc.h>
const PROC_CN_MCAST_LISTEN = 1;
const PROC_CN_MCAST_IGNORE = 2;
export const PROC_EVENT_FORK = 0x0000_0001;
export const PROC_EVENT_EXEC = 0x0000_0002;
export const PROC_EVENT_UID = 0x0000_0004;
export const PROC_EVENT_EXIT = 0x8000_0000;
const PROC_EVENT_HDR = 16;

/** Raw event as the kernel sends it (thread events are filtered out by toProcEvents). */
export type RawProcEvent =
  | { what: 'fork'; parentTgid: number; childPid: number; childTgid: number }
  | { what: 'exec'; pid: number; tgid: number }
  | { what: 'uid'; pid: number; tgid: number; ruid: number; euid: number }
  | { what: 'exit'; pid: number; tgid: number; code: number }
  | { what: 'other' };

/** Process-level events, enriched from /proc: what the process table takes. */
export type ProcEvent =
  | { type: 'fork'; pid: number; ppid: number; startTicks?: number | undefined }
  | { type: 'exec'; pid: number; info?: ProcInfo | undefined }
  | { type: 'uid'; pid: number; uid: number; euid: number }
  | { type: 'exit'; pid: number; code: number }
  /** The socket's receive buffer overflowed (ENOBUFS): `count` times some events were lost. */
  | { type: 'lost'; count: number };

/**
 * Parse one datagram: one or more netlink messages, each a cn_msg with a proc_event. Never reads
 * past `len`; a short or malformed record ends the parse.
 */
export function parseProcDatagram(buf: Buffer, len: number): RawProcEvent[] {
  const out: RawProcEvent[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= len) {
    const msgLen = buf.readUInt32LE(off);
    const type = buf.readUInt16LE(off + 4);
    if (msgLen < NLMSG_HDRLEN || off + msgLen > len) break;
    if (type === NLMSG_DONE && msgLen >= NLMSG_HDRLEN + CN_MSG_LEN + PROC_EVENT_HDR) {
      const cn = off + NLMSG_HDRLEN;
      const idx = buf.readUInt32LE(cn);
      const val = buf.readUInt32LE(cn + 4);
      const dataLen = buf.readUInt16LE(cn + 16);
      const ev = cn + CN_MSG_LEN;
      if (idx === CN_IDX_PROC && val === CN_VAL_PROC && dataLen >= PROC_EVENT_HDR && ev + dataLen <= off + msgLen) {
        out.push(parseProcEvent(buf, ev, dataLen));
      }
    }
    // NLMSG_NOOP, NLMSG_ERROR and other families' messages carry no process event.
    // NLMSG_ALIGN(len): 4-byte alignment
    off += (msgLen + 3) & ~3;
  }
  return out;
}

function parseProcEvent(b: Buffer, at: number, len: number): RawProcEvent {
  const what = b.readUInt32LE(at);
  const d = at + PROC_EVENT_HDR;
  const need = (n: number) => len >= PROC_EVENT_HDR + n;
  switch (what) {
    case PROC_EVENT_FORK: // parent_pid, parent_tgid, child_pid, child_tgid
      if (!need(16)) break;
      return { what: 'fork', parentTgid: b.readInt32LE(d + 4), childPid: b.readInt32LE(d + 8), childTgid: b.readInt32LE(d + 12) };
    case PROC_EVENT_EXEC: // process_pid, process_tgid
      if (!need(8)) break;
      return { what: 'exec', pid: b.readInt32LE(d), tgid: b.readInt32LE(d + 4) };
    case PROC_EVENT_UID: // process_pid, process_tgid, ruid, euid
      if (!need(16)) break;
      return { what: 'uid', pid: b.readInt32LE(d), tgid: b.readInt32LE(d + 4), ruid: b.readUInt32LE(d + 8), euid: b.readUInt32LE(d + 12) };
    case PROC_EVENT_EXIT: // process_pid, process_tgid, exit_code, exit_signal, (parent_pid, parent_tgid)
      if (!need(12)) break;
      return { what: 'exit', pid: b.readInt32LE(d), tgid: b.readInt32LE(d + 4), code: b.readUInt32LE(d + 8) };
  }
  return { what: 'other' };
}

/** The 40-byte control message: nlmsghdr + cn_msg + enum proc_cn_mcast_op. */
export function mcastMessage(op: number): Buffer {
  const b = Buffer.alloc(NLMSG_HDRLEN + CN_MSG_LEN + 4);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE(NLMSG_DONE, 4);
  b.writeUInt32LE(CN_IDX_PROC, NLMSG_HDRLEN);
  b.writeUInt32LE(CN_VAL_PROC, NLMSG_HDRLEN + 4);
  b.writeUInt16LE(4, NLMSG_HDRLEN + 16);
  b.writeUInt32LE(op, NLMSG_HDRLEN + CN_MSG_LEN);
  return b;
}

/** libc; off Linux the error says the connector is what is missing. */
function lib(): Libc {
  if (process.platform !== 'linux')
    throw new PlatformError(
      'LA_ERR_PROC_CONNECTOR',
      'the process events connector exists only on Linux',
      'the agent scans the process list instead',
    );
  return libc();
}

export function connectorError(what: string, err: number): PlatformError {
  const detail = `process events connector: ${what} failed: ${describeErrno(err)}`;
  if (err === EPERM || err === EACCES)
    return new PlatformError(
      'LA_ERR_PROC_CONNECTOR_PERM',
      detail,
      'the connector needs root (CAP_NET_ADMIN); the agent scans /proc instead',
    );
  if (err === EPROTONOSUPPORT)
    return new PlatformError(
      'LA_ERR_PROC_CONNECTOR_UNSUPPORTED',
      detail,
      'this kernel lacks CONFIG_PROC_EVENTS; the agent scans /proc instead',
    );
  return new PlatformError('LA_ERR_PROC_CONNECTOR', detail, 'the agent scans /proc instead; see the kernel log');
}

/**
 * The socket's receive buffer: what queues while the main thread is busy elsewhere. The kernel
 * doubles what is asked and charges ~840 bytes per event (a 16 KiB request held 39 events), so
 * 8 MiB holds ~20,000 events: a burst of ~6,500 short processes (fork, exec, exit each). Only
 * what is queued uses it. Beyond it the kernel drops events and the next read says ENOBUFS (the
 * watcher then re-reads /proc).
 */
export const DEFAULT_RCVBUF = 8 * 1024 * 1024;

/** Open, bind and subscribe. Returns the non-blocking socket fd. Throws a PlatformError. */
export function openProcConnector(rcvbuf = DEFAULT_RCVBUF): number {
  const n = lib();
  const fd = n.socket(AF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
  if (fd < 0) throw connectorError('socket(NETLINK_CONNECTOR)', errno());
  try {
    const v = Buffer.alloc(4);
    v.writeInt32LE(rcvbuf);
    n.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, v, 4); // best effort (root only)
    const addr = Buffer.alloc(12); // struct sockaddr_nl { u16 family; u16 pad; u32 pid; u32 groups; }
    addr.writeUInt16LE(AF_NETLINK, 0);
    addr.writeUInt32LE(0, 4); // the kernel assigns the port id
    addr.writeUInt32LE(CN_IDX_PROC, 8);
    if (n.bind(fd, addr, addr.length) < 0) throw connectorError('bind(CN_IDX_PROC)', errno());
    const m = mcastMessage(PROC_CN_MCAST_LISTEN);
    if (n.send(fd, m, m.length, 0) < 0) throw connectorError('send(PROC_CN_MCAST_LISTEN)', errno());
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  }
}

/**
 * Read every datagram queued on `fd` now (recv(2) until EAGAIN, at most `max`), passing each to
 * `take`. After a receive buffer overflow this is what ends it: the kernel drops every new event
 * for the socket until a read finds its queue empty (netlink's "congested" state), so the events
 * a reader leaves queued keep the ones that follow from being delivered. Returns the datagrams
 * read and the overflows (ENOBUFS) reported meanwhile; throws a PlatformError on another error.
 */
export function drainQueued(fd: number, take: (buf: Buffer, len: number) => void, max = 65_536): { datagrams: number; overflows: number } {
  const n = lib();
  const buf = (drainBuf ??= Buffer.allocUnsafe(64 * 1024));
  let datagrams = 0;
  let overflows = 0;
  while (datagrams < max) {
    const r = n.recv(fd, buf, buf.length, MSG_DONTWAIT);
    if (r < 0) {
      const e = errno();
      if (e === EINTR) continue;
      if (e === ENOBUFS) {
        overflows++; // reported once per overflow; what is queued is still there: read on
        continue;
      }
      if (e === EAGAIN) break;
      throw connectorError('recv', e);
    }
    datagrams++;
    take(buf, r);
  }
  return { datagrams, overflows };
}
/** One 64 KiB datagram buffer, made at the first drain (the kernel's datagrams are ~76 bytes). */
let drainBuf: Buffer | undefined;

/** Unsubscribe before the socket closes (best effort: closing it ends the subscription anyway on current kernels). */
export function unsubscribe(fd: number): void {
  try {
    const m = mcastMessage(PROC_CN_MCAST_IGNORE);
    lib().send(fd, m, m.length, 0);
  } catch {
    // closing unsubscribes anyway
  }
}

/**
 * A raw event as the process table takes it, pushed onto `out`. Thread events are dropped: only
 * thread group leaders (processes) matter here. An exec reads /proc/PID (exe, cmdline, uids) at
 * once, while the process still lives: what attribution needs once a short-lived writer is gone.
 */
export function toProcEvents(ev: RawProcEvent, out: ProcEvent[]): void {
  switch (ev.what) {
    case 'fork':
      if (ev.childPid !== ev.childTgid) return; // a new thread
      // No /proc read here: most children exec at once, and the exec read gives the start time.
      out.push({ type: 'fork', pid: ev.childTgid, ppid: ev.parentTgid });
      return;
    case 'exec':
      out.push({ type: 'exec', pid: ev.tgid, info: readProcess(ev.tgid, false) });
      return;
    case 'uid':
      if (ev.pid !== ev.tgid) return;
      out.push({ type: 'uid', pid: ev.tgid, uid: ev.ruid, euid: ev.euid });
      return;
    case 'exit':
      if (ev.pid !== ev.tgid) return;
      out.push({ type: 'exit', pid: ev.tgid, code: ev.code });
      return;
    default:
      return;
  }
}
