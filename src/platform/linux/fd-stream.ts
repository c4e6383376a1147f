/**
 * Read a file descriptor on the main thread's event loop, for fds Node has no handle for.
 *
 * `new net.Socket({ fd })` takes only what libuv can classify (a TCP or Unix socket, a pipe, a
 * tty); a netlink socket is none of these (uv_guess_handle: UNKNOWN), so the only public way to
 * read one without blocking the event loop or the threadpool is a worker thread of its own
 * blocked in poll(2), and a worker costs ~10 MB of RSS for its V8 isolate before it runs a line
 * (docs/architecture.md, "Memory"). Instead this adopts the fd into libuv's pipe handle
 * (`uv_pipe_open`: it only makes the fd non-blocking and registers it with the loop's epoll), the
 * handle Node itself wraps child processes' stdio pipes in, and reads it with read(2) whenever
 * epoll says it is readable. The handle comes from the `pipe_wrap` binding, which Node 20 and 24
 * keep reachable through `process.binding` (DEP0111, documentation-only); where a later Node
 * drops it this throws, and the caller falls back (the process watcher scans /proc).
 *
 * Each read(2) is one 'data' chunk of at most 64 KiB: on a datagram socket, one datagram. A read
 * error (ENOBUFS: a netlink socket's receive buffer overflowed) is an 'error' event, after which
 * the stream and its fd are closed; a caller that wants to go on adopts a dup of the fd it kept.
 * The fd passed in belongs to the stream from then on: destroy() closes it.
 */
import net from 'node:net';
import util from 'node:util';
import { PlatformError } from '../../errors.js';

interface PipeHandle {
  open(fd: number): number;
  close(cb?: () => void): void;
}
interface PipeWrap {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

let pipeWrap: PipeWrap | Error | undefined;

function binding(): PipeWrap {
  if (pipeWrap === undefined) {
    try {
      const b = (process as unknown as { binding(name: string): PipeWrap }).binding('pipe_wrap');
      pipeWrap = typeof b?.Pipe === 'function' && typeof b.constants?.SOCKET === 'number' ? b : new Error('pipe_wrap has no Pipe');
    } catch (e) {
      pipeWrap = e as Error;
    }
  }
  if (pipeWrap instanceof Error)
    throw new PlatformError(
      'LA_ERR_FD_STREAM',
      `Node ${process.version} has no pipe handle to read a raw fd with (${pipeWrap.message})`,
      'run a Node this agent supports (>= 20.19, or the single binary); meanwhile the agent uses its fallback',
    );
  return pipeWrap;
}

/** A read-only stream over `fd` (non-blocking, readable per poll(2)); flowing, so attach 'data' at once. */
export function readableFdStream(fd: number): net.Socket {
  const b = binding();
  const handle = new b.Pipe(b.constants.SOCKET);
  const err = handle.open(fd);
  if (err !== 0) {
    handle.close();
    throw new PlatformError(
      'LA_ERR_FD_STREAM',
      `the event loop cannot watch fd ${fd}: uv_pipe_open failed: ${util.getSystemErrorName(err)}`,
      'see the agent log; the agent uses its fallback',
    );
  }
  return new net.Socket({ handle, readable: true, writable: false } as net.SocketConstructorOpts);
}
