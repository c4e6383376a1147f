/**
 * The daemon's two local sockets, newline-delimited JSON (docs/tray.md has the protocol):
 *
 *   status.sock  (mode 0666, any local user)  read-only:
 *       {"cmd":"status"}  -> {"ok":true,"status":{...}}
 *       {"cmd":"watch"}   -> {"ok":true,"status":{...}} then one line per event:
 *                            {"event":"detection","detection":{path,threat,action,time,...}}
 *                            {"event":"degraded","protection":{state,reasons,since}}
 *                            {"event":"recovered","protection":{...}}
 *   control.sock (mode 0600, root by SO_PEERCRED)  the status commands, plus:
 *       {"cmd":"reload"}                                   re-read the config (as SIGHUP)
 *       {"cmd":"rescan","paths":["/abs/file", ...]}        scan these files now
 *       {"cmd":"scan-start","paths":["/abs", ...]}         start a scan job (paths optional:
 *                                                          every protected tree); -> {"job":{...}}
 *       {"cmd":"scan-cancel"}                              stop the running job -> {"cancelled":bool}
 *   status.sock and control.sock: {"cmd":"scan-status"} -> {"job":{...}|null} (docs/scans.md)
 *       {"cmd":"quarantine-list"}
 *       {"cmd":"quarantine-restore","item":"...","to":"/abs","force":false}
 *       {"cmd":"quarantine-delete","item":"..."}
 *
 * A request may carry "id" (short string or integer), echoed in its reply.
 *
 * Windows: the status server (same protocol) on the named pipe \\.\pipe\lightagent-status;
 * no control pipe (why: LocalSockets.start).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ServiceError } from '../errors.js';
import type { Detection } from '../store/detections.js';
import { LineServer, type LineClient } from './line-server.js';
import type { ProtectionSnapshot } from './protection-state.js';

export const STATUS_SOCKET = 'status.sock';
export const CONTROL_SOCKET = 'control.sock';
export const DEFAULT_SOCKET_DIR = '/run/lightagent';
export const DEFAULT_STATE_DIR = '/var/lib/lightagent';
/**
 * Windows: the status server's named pipe (src/tray/windows.ts and `lightagent status` connect
 * to it). There is no control pipe on Windows: see LocalSockets.start.
 */
export const WINDOWS_STATUS_PIPE = '\\\\.\\pipe\\lightagent-status';

/** Where a status client connects: the status pipe on Windows, else <socket dir>/status.sock. */
export function statusEndpoint(socketDir: string, platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32' ? WINDOWS_STATUS_PIPE : path.join(socketDir, STATUS_SOCKET);
}
const MAX_RESCAN_PATHS = 1024;
/** SCAN_JOB_LIMITS.maxPaths (src/scan/scan-jobs.ts), repeated: control/ sits below scan/. */
const MAX_SCAN_JOB_PATHS = 64;
const MAX_PATH_BYTES = 4096;

/**
 * Where the sockets live: `socket_dir`, else /run/lightagent for the standard state directory,
 * else `<state_dir>.run` (so agents on separate state directories, as in tests, never collide).
 */
export function socketDirFor(cfg: { state_dir: string; socket_dir?: string | undefined }): string {
  if (cfg.socket_dir) return cfg.socket_dir;
  return path.resolve(cfg.state_dir) === DEFAULT_STATE_DIR ? DEFAULT_SOCKET_DIR : `${path.resolve(cfg.state_dir)}.run`;
}

/** What the sockets need from the daemon. */
export interface AgentService {
  status(): Record<string, unknown>;
  /** Subscribe to detections and protection state changes; returns the unsubscribe function. */
  subscribe(on: { detection(d: Detection): void; state(now: ProtectionSnapshot, before: ProtectionSnapshot): void }): () => void;
  reload(): Promise<Record<string, unknown>>;
  rescan(paths: string[]): Promise<unknown>;
  quarantineList(): Promise<unknown[]>;
  quarantineRestore(id: string, opts: { to?: string; force?: boolean }): Promise<unknown>;
  quarantineDelete(id: string): Promise<unknown>;
  /** Scan jobs (docs/scans.md): start one (paths inside `protect`, none: all), its status, cancel. */
  scanStart?(paths: string[]): unknown;
  scanStatus?(): unknown;
  scanCancel?(): boolean;
}

const bad = (message: string) => new ServiceError('LA_ERR_CONTROL_REQUEST', message, 'see docs/tray.md for the socket protocol');

function absPathField(v: unknown, name: string): string {
  if (typeof v !== 'string' || v.length === 0 || Buffer.byteLength(v) > MAX_PATH_BYTES || !path.isAbsolute(v) || v.includes('\0')) {
    throw bad(`"${name}" must be an absolute path of at most ${MAX_PATH_BYTES} bytes`);
  }
  return v;
}

function idField(v: unknown): string {
  if (typeof v !== 'string' || !/^[0-9a-z]{8}$/.test(v)) throw bad('"item" must be a quarantine id (8 characters, see quarantine-list)');
  return v;
}

/**
 * Make the socket directory, or check one that exists: a real directory owned by this user and
 * writable by nobody else (someone who could write there could put their own socket in place).
 */
export function prepareSocketDir(dir: string): void {
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw new ServiceError(
      'LA_ERR_SOCKET_DIR',
      `cannot create the socket directory ${dir}: ${(e as Error).message}`,
      'set `socket_dir` to a directory the agent may create',
      { cause: e },
    );
  }
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.() ?? 0;
  if (!st.isDirectory())
    throw new ServiceError(
      'LA_ERR_SOCKET_DIR',
      `socket directory ${dir} is not a directory (a symlink?)`,
      'remove it, or set `socket_dir`',
    );
  if (st.uid !== uid)
    throw new ServiceError(
      'LA_ERR_SOCKET_DIR',
      `socket directory ${dir} is owned by uid ${st.uid}, not by the agent (uid ${uid})`,
      `chown it, remove it, or set \`socket_dir\``,
    );
  if ((st.mode & 0o022) !== 0)
    throw new ServiceError(
      'LA_ERR_SOCKET_DIR',
      `socket directory ${dir} is writable by group or others (mode ${(st.mode & 0o777).toString(8)})`,
      `chmod 755 ${dir}`,
    );
  // Others need to reach status.sock: the directory must be searchable.
  if ((st.mode & 0o005) !== 0o005) fs.chmodSync(dir, 0o755);
}

export class LocalSockets {
  private constructor(
    readonly status: LineServer,
    /** Absent on Windows (no control pipe). */
    readonly control: LineServer | undefined,
  ) {}

  /**
   * Linux: status.sock and control.sock in `dir`. Windows (`opts.windowsPipe`): the status server
   * only, on that named pipe. No control pipe on Windows, on purpose: a pipe server there cannot
   * learn who the client is from Node (no SO_PEERCRED; libuv does not expose the pipe handle for
   * GetNamedPipeClientProcessId/ImpersonateNamedPipeClient), Node cannot give the pipe a DACL, and
   * a shared secret would be only as safe as the state directory's ACL, which `run` from a console
   * (and Wine) leaves at ProgramData's default (Users can read). Without it: `lightagent
   * quarantine list` reads the store directly, a restart of the service applies a new
   * configuration (restore/delete on Windows: docs/windows.md).
   */
  static async start(
    dir: string,
    svc: AgentService,
    opts: { windowsPipe?: string | undefined; silentClientMs?: number | undefined } = {},
  ): Promise<LocalSockets> {
    const pipe = opts.windowsPipe;
    if (!pipe) prepareSocketDir(dir);
    const readOnly = (req: Record<string, unknown>, client: LineClient): unknown => {
      switch (req.cmd) {
        case 'status':
          return { status: svc.status() };
        case 'scan-status':
          return { job: svc.scanStatus?.() ?? null };
        case 'watch': {
          // The status first, then the stream, so a subscriber never misses a change in between.
          client.send({ ...(req.id !== undefined ? { id: req.id } : {}), ok: true, status: svc.status() });
          const off = svc.subscribe({
            detection: (d) => client.send({ event: 'detection', detection: d }),
            state: (now) => client.send({ event: now.state === 'protected' ? 'recovered' : 'degraded', protection: now }),
          });
          client.onClose(off);
          return undefined;
        }
        default:
          return undefined as unknown;
      }
    };
    const status = await LineServer.listen({
      path: pipe ?? path.join(dir, STATUS_SOCKET),
      mode: 0o666,
      name: 'status',
      rootOnly: false,
      maxLineBytes: 4096,
      // Windows: Node gives the pipe the default DACL, under which a non-admin client of the
      // LocalSystem service may only read; libuv then connects it read-only. Such a client sends
      // nothing, and after 300 ms gets what {"cmd":"watch"} answers (client.ts reads it).
      silentClient:
        opts.silentClientMs !== undefined
          ? { afterMs: opts.silentClientMs, request: { cmd: 'watch' } }
          : pipe
            ? { afterMs: 300, request: { cmd: 'watch' } }
            : undefined,
      handle: (req, client) => {
        if (req.cmd === 'status' || req.cmd === 'watch' || req.cmd === 'scan-status') return readOnly(req, client);
        if (typeof req.cmd === 'string' && CONTROL_COMMANDS.has(req.cmd)) {
          if (pipe)
            throw new ServiceError(
              'LA_ERR_CONTROL_DENIED',
              `"${req.cmd}" is not available on the read-only status pipe, and Windows has no control pipe`,
              '`lightagent quarantine list` reads the store directly; restart the service for a new configuration (docs/windows.md)',
            );
          throw new ServiceError(
            'LA_ERR_CONTROL_DENIED',
            `"${req.cmd}" is not available on the read-only status socket`,
            `use the control socket as root (${path.join(dir, CONTROL_SOCKET)})`,
          );
        }
        throw bad(`unknown command ${JSON.stringify(String(req.cmd)).slice(0, 80)}; the status socket knows "status" and "watch"`);
      },
    });
    if (pipe) return new LocalSockets(status, undefined);
    let control: LineServer;
    try {
      control = await LineServer.listen({
        path: path.join(dir, CONTROL_SOCKET),
        mode: 0o600,
        name: 'control',
        rootOnly: true,
        handle: async (req, client) => {
          switch (req.cmd) {
            case 'status':
            case 'watch':
            case 'scan-status':
              return readOnly(req, client);
            case 'scan-start': {
              const raw = req.paths ?? [];
              if (!Array.isArray(raw) || raw.length > MAX_SCAN_JOB_PATHS)
                throw bad(`"paths" must be a list of at most ${MAX_SCAN_JOB_PATHS} absolute paths`);
              if (!svc.scanStart) throw bad('this daemon runs no scan jobs');
              return { job: svc.scanStart(raw.map((p, i) => absPathField(p, `paths[${i}]`))) };
            }
            case 'scan-cancel':
              return { cancelled: svc.scanCancel?.() ?? false };
            case 'reload':
              return { reload: await svc.reload() };
            case 'rescan': {
              if (!Array.isArray(req.paths) || req.paths.length === 0 || req.paths.length > MAX_RESCAN_PATHS)
                throw bad(`"paths" must be a list of 1 to ${MAX_RESCAN_PATHS} absolute paths`);
              const paths = req.paths.map((p, i) => absPathField(p, `paths[${i}]`));
              return { rescan: await svc.rescan(paths) };
            }
            case 'quarantine-list':
              return { items: await svc.quarantineList() };
            case 'quarantine-restore': {
              const opts: { to?: string; force?: boolean } = {};
              if (req.to !== undefined) opts.to = absPathField(req.to, 'to');
              if (req.force !== undefined) {
                if (typeof req.force !== 'boolean') throw bad('"force" must be true or false');
                opts.force = req.force;
              }
              return { restored: await svc.quarantineRestore(idField(req.item), opts) };
            }
            case 'quarantine-delete':
              return { deleted: await svc.quarantineDelete(idField(req.item)) };
            default:
              throw bad(`unknown command ${JSON.stringify(String(req.cmd)).slice(0, 80)}`);
          }
        },
      });
    } catch (e) {
      await status.close();
      throw e;
    }
    return new LocalSockets(status, control);
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.status.close(), this.control?.close()]);
  }
}

const CONTROL_COMMANDS = new Set([
  'reload',
  'rescan',
  'scan-start',
  'scan-cancel',
  'quarantine-list',
  'quarantine-restore',
  'quarantine-delete',
]);
