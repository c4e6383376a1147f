/**
 * sd_notify(3) without libsystemd: one datagram of `KEY=VALUE` lines to the AF_UNIX socket named
 * by $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'). Node's dgram module
 * has no AF_UNIX datagrams, so the socket is made and written through libc (socket, sendto).
 *
 * The protocol is documented in sd_notify(3) and systemd's "NOTIFY_SOCKET" interface notes: one
 * datagram per message, no reply; errors are reported and otherwise ignored (the service must not
 * die because its supervisor went away).
 */
import { closeFd, describeErrno, errno, libc } from './libc.js';

/** <bits/socket.h> AF_UNIX */
const AF_UNIX = 1;
/** <bits/socket_type.h> SOCK_DGRAM | SOCK_CLOEXEC */
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
/** <bits/socket.h> MSG_NOSIGNAL: no SIGPIPE if the reader is gone. */
const MSG_NOSIGNAL = 0x4000;
/** sizeof(struct sockaddr_un): sa_family_t (u16) + char sun_path[108]. */
const SOCKADDR_UN_LEN = 110;
const SUN_PATH_MAX = 108;

/** struct sockaddr_un for `name` ('@x' is the abstract name "\0x"), and the length to pass. */
export function sockaddrUn(name: string): { addr: Buffer; len: number } {
  const abstract = name.startsWith('@');
  const bytes = Buffer.from(abstract ? name.slice(1) : name, 'utf8');
  const pathLen = bytes.length + 1; // abstract: leading NUL; path: trailing NUL
  if (bytes.length === 0 || pathLen > SUN_PATH_MAX)
    throw new Error(`NOTIFY_SOCKET ${JSON.stringify(name)} is empty or longer than ${SUN_PATH_MAX - 1} bytes`);
  const addr = Buffer.alloc(SOCKADDR_UN_LEN);
  addr.writeUInt16LE(AF_UNIX, 0); // sa_family_t is host order: little-endian on every Linux Node runs on here
  bytes.copy(addr, abstract ? 3 : 2);
  // For abstract names the length counts exactly the name (no trailing NUL), see unix(7).
  return { addr, len: 2 + (abstract ? 1 + bytes.length : pathLen) };
}

/**
 * A notifier bound to $NOTIFY_SOCKET. `send` returns false (and says why through `onError`)
 * instead of throwing; with no NOTIFY_SOCKET every call is a no-op.
 */
export class SdNotify {
  private fd = -1;
  private readonly target: { addr: Buffer; len: number } | undefined;

  constructor(
    socketName: string | undefined = process.env.NOTIFY_SOCKET,
    private readonly onError: (message: string) => void = () => {},
  ) {
    if (!socketName || process.platform !== 'linux') return;
    try {
      this.target = sockaddrUn(socketName);
    } catch (e) {
      onError((e as Error).message);
    }
  }

  get enabled(): boolean {
    return this.target !== undefined;
  }

  send(state: string): boolean {
    if (!this.target) return false;
    try {
      const l = libc();
      if (this.fd < 0) {
        this.fd = l.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (this.fd < 0) throw new Error(`socket(AF_UNIX, SOCK_DGRAM): ${describeErrno(errno())}`);
      }
      const msg = Buffer.from(state, 'utf8');
      const n = l.sendto(this.fd, msg, msg.length, MSG_NOSIGNAL, this.target.addr, this.target.len);
      if (n < 0) throw new Error(`sendto NOTIFY_SOCKET: ${describeErrno(errno())}`);
      return true;
    } catch (e) {
      this.onError(`sd_notify(${state.split('\n')[0]}) failed: ${(e as Error).message}`);
      return false;
    }
  }

  close(): void {
    closeFd(this.fd);
    this.fd = -1;
  }
}

/**
 * The watchdog period systemd asks for (WatchdogSec= in the unit), from $WATCHDOG_USEC, in ms;
 * undefined when no watchdog is asked for or it is meant for another process ($WATCHDOG_PID).
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv = process.env, pid = process.pid): number | undefined {
  const usec = Number(env.WATCHDOG_USEC);
  if (!Number.isFinite(usec) || usec <= 0) return undefined;
  if (env.WATCHDOG_PID !== undefined && Number(env.WATCHDOG_PID) !== pid) return undefined;
  return usec / 1000;
}
