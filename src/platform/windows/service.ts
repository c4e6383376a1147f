/**
 * The Service Control Manager side of the Windows service, through koffi (advapi32):
 *
 *   StartServiceCtrlDispatcherW blocks the thread that calls it until the service has stopped, so
 *   it is called with koffi's `.async` (one of koffi's worker threads blocks in it; the JS event
 *   loop stays free). The SCM then runs ServiceMain on a thread of its own and the control handler
 *   on the dispatcher thread: both are koffi.register'ed callbacks, which koffi queues to the JS
 *   main thread (the foreign thread waits for the JS result). ServiceMain registers the handler
 *   (RegisterServiceCtrlHandlerExW), reports START_PENDING, starts the agent, reports RUNNING;
 *   stop and shutdown report STOP_PENDING with a wait hint, stop the agent, report STOPPED, and
 *   the dispatcher call returns.
 *
 *   Event log: RegisterEventSourceW + ReportEventW under the source "lightagent" (the MSI
 *   registers it under HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\lightagent).
 *
 * Loaded only on Windows (the import of this module binds advapi32).
 */
import koffi from 'koffi';
import { PlatformError } from '../../errors.js';

export const SERVICE_NAME = 'lightagent';

const SERVICE_WIN32_OWN_PROCESS = 0x10;
export const SERVICE_STOPPED = 1;
export const SERVICE_START_PENDING = 2;
export const SERVICE_STOP_PENDING = 3;
export const SERVICE_RUNNING = 4;
const SERVICE_ACCEPT_STOP = 0x1;
const SERVICE_ACCEPT_SHUTDOWN = 0x4;
const SERVICE_CONTROL_STOP = 1;
const SERVICE_CONTROL_INTERROGATE = 4;
const SERVICE_CONTROL_SHUTDOWN = 5;
const NO_ERROR = 0;
const ERROR_CALL_NOT_IMPLEMENTED = 120;
/** StartServiceCtrlDispatcherW's error when the process was not started by the SCM. */
export const ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063;
const ERROR_SERVICE_SPECIFIC_ERROR = 1066;

export const EVENTLOG_ERROR_TYPE = 0x1;
export const EVENTLOG_WARNING_TYPE = 0x2;
export const EVENTLOG_INFORMATION_TYPE = 0x4;

interface Api {
  dispatcher: { async: (table: unknown, cb: (err: unknown, res: number) => void) => void };
  registerHandler: (name: string, handler: unknown, ctx: null) => unknown;
  setStatus: (handle: unknown, status: Record<string, number>) => number;
  getLastError: () => number;
  registerEventSource: (server: null, source: string) => unknown;
  reportEvent: (
    h: unknown,
    type: number,
    category: number,
    id: number,
    sid: null,
    n: number,
    size: number,
    strings: string[],
    data: null,
  ) => number;
  serviceMainProto: ReturnType<typeof koffi.proto>;
  handlerProto: ReturnType<typeof koffi.proto>;
}

let api: Api | undefined;
function bind(): Api {
  if (api) return api;
  if (process.platform !== 'win32')
    throw new PlatformError('LA_ERR_PLATFORM', 'the Windows service runs only on Windows', 'use `lightagent run` (systemd unit) on Linux');
  const advapi = koffi.load('advapi32.dll');
  const kernel = koffi.load('kernel32.dll');
  const serviceMainProto = koffi.proto('void __stdcall LaServiceMain(uint32_t argc, void *argv)');
  const handlerProto = koffi.proto('uint32_t __stdcall LaHandlerEx(uint32_t control, uint32_t eventType, void *eventData, void *context)');
  const entry = koffi.struct('LA_SERVICE_TABLE_ENTRYW', { name: 'const char16_t *', proc: koffi.pointer(serviceMainProto) });
  koffi.struct('LA_SERVICE_STATUS', {
    dwServiceType: 'uint32_t',
    dwCurrentState: 'uint32_t',
    dwControlsAccepted: 'uint32_t',
    dwWin32ExitCode: 'uint32_t',
    dwServiceSpecificExitCode: 'uint32_t',
    dwCheckPoint: 'uint32_t',
    dwWaitHint: 'uint32_t',
  });
  void entry;
  api = {
    dispatcher: advapi.func('bool __stdcall StartServiceCtrlDispatcherW(LA_SERVICE_TABLE_ENTRYW *table)') as unknown as Api['dispatcher'],
    registerHandler: advapi.func(
      'void * __stdcall RegisterServiceCtrlHandlerExW(const char16_t *name, LaHandlerEx *handler, void *context)',
    ),
    setStatus: advapi.func('bool __stdcall SetServiceStatus(void *handle, LA_SERVICE_STATUS *status)'),
    getLastError: kernel.func('uint32_t __stdcall GetLastError()'),
    registerEventSource: advapi.func('void * __stdcall RegisterEventSourceW(const char16_t *server, const char16_t *source)'),
    reportEvent: advapi.func(
      'bool __stdcall ReportEventW(void *h, uint16_t type, uint16_t category, uint32_t id, void *sid, uint16_t n, uint32_t ' +
        'size, const char16_t **strings, void *data)',
    ),
    serviceMainProto,
    handlerProto,
  };
  return api;
}

/** The Windows event log (Application), source "lightagent". Never throws: logging must not stop the agent. */
export class EventLog {
  private handle: unknown;
  constructor(source = SERVICE_NAME) {
    try {
      this.handle = bind().registerEventSource(null, source);
    } catch {
      this.handle = null;
    }
  }
  get open(): boolean {
    return !!this.handle;
  }
  report(type: number, message: string, id = 1): boolean {
    if (!this.handle) return false;
    try {
      return !!bind().reportEvent(this.handle, type, 0, id, null, 1, 0, [message.slice(0, 31_000)], null);
    } catch {
      return false;
    }
  }
}

export interface ServiceHooks {
  /** Start the agent; resolves once protecting. A rejection reports STOPPED with an exit code. */
  start(): Promise<void>;
  /** Stop the agent (answers and flushes what it holds). */
  stop(reason: 'stop' | 'shutdown'): Promise<void>;
  /** Messages for the log file and the event log. */
  log(level: 'info' | 'warn' | 'error', message: string): void;
}

/**
 * Run as the service `name` until the SCM stops it. Resolves with the process exit code; rejects
 * with LA_ERR_NOT_A_SERVICE when this process was not started by the SCM (error 1063).
 */
export function runService(hooks: ServiceHooks, name = SERVICE_NAME): Promise<number> {
  const a = bind();
  let handle: unknown = null;
  let checkpoint = 0;
  let state = SERVICE_START_PENDING;
  let exitCode = 0;
  let stopping: Promise<void> | undefined;
  const report = (s: number, waitHint = 0, specific = 0) => {
    state = s;
    const pending = s === SERVICE_START_PENDING || s === SERVICE_STOP_PENDING;
    const ok = a.setStatus(handle, {
      dwServiceType: SERVICE_WIN32_OWN_PROCESS,
      dwCurrentState: s,
      dwControlsAccepted: s === SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0,
      dwWin32ExitCode: specific ? ERROR_SERVICE_SPECIFIC_ERROR : NO_ERROR,
      dwServiceSpecificExitCode: specific,
      dwCheckPoint: pending ? ++checkpoint : 0,
      dwWaitHint: waitHint,
    });
    if (!ok) hooks.log('warn', `SetServiceStatus(${s}) failed: error ${a.getLastError()}`);
  };
  const stop = (reason: 'stop' | 'shutdown') => {
    if (stopping) return;
    hooks.log('info', `service ${reason} requested`);
    report(SERVICE_STOP_PENDING, 30_000);
    // keep the SCM's wait hint fresh while the agent drains
    const tick = setInterval(() => report(SERVICE_STOP_PENDING, 30_000), 5_000);
    stopping = hooks.stop(reason).then(
      () => {
        clearInterval(tick);
        hooks.log('info', 'service stopped');
        report(SERVICE_STOPPED);
      },
      (e: unknown) => {
        clearInterval(tick);
        exitCode = 2;
        hooks.log('error', `stopping failed: ${(e as Error).message}`);
        report(SERVICE_STOPPED, 0, 2);
      },
    );
  };
  const handler = koffi.register((control: number): number => {
    switch (control) {
      case SERVICE_CONTROL_STOP:
        stop('stop');
        return NO_ERROR;
      case SERVICE_CONTROL_SHUTDOWN:
        stop('shutdown');
        return NO_ERROR;
      case SERVICE_CONTROL_INTERROGATE:
        report(state);
        return NO_ERROR;
      default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
  }, koffi.pointer(a.handlerProto));
  let mainCalled = false;
  const serviceMain = koffi.register((): void => {
    mainCalled = true;
    handle = a.registerHandler(name, handler, null);
    if (!handle) {
      hooks.log('error', `RegisterServiceCtrlHandlerExW failed: error ${a.getLastError()}`);
      return;
    }
    report(SERVICE_START_PENDING, 60_000);
    hooks.start().then(
      () => {
        if (!stopping) {
          report(SERVICE_RUNNING);
          hooks.log('info', 'service running');
        }
      },
      (e: unknown) => {
        exitCode = 2;
        hooks.log('error', `start-up failed: ${(e as Error).message}`);
        report(SERVICE_STOPPED, 0, 2);
      },
    );
  }, koffi.pointer(a.serviceMainProto));
  return new Promise<number>((resolve, reject) => {
    const table = [
      { name, proc: serviceMain },
      { name: null, proc: null },
    ];
    a.dispatcher.async(table, (e: unknown, ok: number) => {
      koffi.unregister(serviceMain);
      koffi.unregister(handler);
      if (e) return reject(e as Error);
      if (!ok) {
        // GetLastError here would read the JS thread's, not the worker's that made the call: a
        // dispatcher that failed before ever calling ServiceMain is error 1063 in practice.
        if (!mainCalled) {
          return reject(
            new PlatformError(
              'LA_ERR_NOT_A_SERVICE',
              'this process was not started by the Service Control Manager',
              'start it with `sc start lightagent` (or `net start lightagent`); `lightagent run` runs in a console',
            ),
          );
        }
        return reject(
          new PlatformError(
            'LA_ERR_PLATFORM',
            'StartServiceCtrlDispatcherW failed after the service had started',
            'see the Windows event log and the log file',
          ),
        );
      }
      void (stopping ?? Promise.resolve()).then(() => resolve(exitCode));
    });
  });
}
