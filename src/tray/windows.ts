/**
 * The Windows tray presenter, through koffi (user32, shell32, kernel32):
 *
 * - A hidden top-level window (never shown) of our own class, whose window procedure is a
 *   koffi.register'ed JS callback. Hidden top-level rather than message-only (HWND_MESSAGE):
 *   message-only windows get no broadcasts, and the shell broadcasts "TaskbarCreated" when
 *   Explorer (re)starts, after which every icon must be added again; `taskkill` (without /f)
 *   and logoff also reach a top-level window (WM_CLOSE, WM_ENDSESSION), which end the tray cleanly.
 * - The message pump is PeekMessageW(PM_REMOVE) + TranslateMessage + DispatchMessageW on a
 *   100 ms timer of the JS thread, which owns the window (a window's messages can only be
 *   retrieved by the thread that created it). The window procedure therefore runs on the JS
 *   thread, synchronously inside DispatchMessageW, and may call back into user32/shell32 at once.
 *   A GetMessageW loop would block: it would need the window created and pumped on a thread of
 *   its own (koffi's .async runs one foreign call on a worker, not a create-then-loop sequence),
 *   with every Shell_NotifyIconW request handed over to that thread. The tray's messages are
 *   rare (mouse over the icon, TaskbarCreated, WM_CLOSE), so 10 wake-ups a second cost nothing
 *   measurable and keep everything on one thread.
 * - The icon: Shell_NotifyIconW NIM_ADD on the first state, NIM_MODIFY (icon + tooltip) on each
 *   change, NIM_DELETE at close; every return value is checked and logged. Icons are the stock
 *   ones (LoadIconW: shield / warning / error, windows-notify-icon.ts), shared by the system,
 *   so nothing is drawn or freed here. A NIM_ADD refused (no taskbar yet at logon) is tried
 *   again on TaskbarCreated, on the next state change, and after 5 s doubling to a minute (a
 *   session without Explorer's taskbar would otherwise log a warning every 5 s for hours).
 * - Notifications are balloons (NIM_MODIFY with NIF_INFO, NIIF_WARNING / ERROR / INFO): Windows
 *   10 and 11 show a balloon as a toast in the Action Center by themselves. WinRT toasts
 *   (ToastNotificationManager) would need COM activation of WinRT classes, HSTRINGs, the XML
 *   template interfaces and an AppUserModelID registered through a Start-menu shortcut: a
 *   WinRT projection that koffi does not have, for the same popup.
 *
 * Loaded only on Windows (tray command); the pure half is windows-notify-icon.ts.
 */
import koffi from 'koffi';
import { Backoff } from '../backoff.js';
import { PlatformError, describeError } from '../errors.js';
import { logger } from '../log.js';
import type { TrayNotification, TrayPresenter, TrayState } from './presenter.js';
import {
  NIF_ICON,
  NIF_INFO,
  NIF_MESSAGE,
  NIF_TIP,
  NIM_ADD,
  NIM_DELETE,
  NIM_MODIFY,
  balloonFlags,
  buildNotifyIconData,
  iconFor,
  tooltipFor,
} from './windows-notify-icon.js';

const WM_CLOSE = 0x0010;
const WM_QUERYENDSESSION = 0x0011;
const WM_ENDSESSION = 0x0016;
const WM_APP = 0x8000;
/** The icon's callback message (mouse over / click on the icon, balloon shown / clicked). */
const WM_TRAY_CALLBACK = WM_APP + 1;
/** Posted to ourselves once at start: its arrival proves the pump dispatches. */
const WM_TRAY_PING = WM_APP + 2;
const PM_REMOVE = 0x1;
const PUMP_MS = 100;
/** At most this many messages per pump tick (the JS thread is never held long). */
const PUMP_BATCH = 64;
const ICON_ID = 1;
const CLASS_NAME = 'lightagent.tray';

type Handle = number | bigint;

interface Api {
  registerClass: (wc: Record<string, unknown>) => number;
  unregisterClass: (name: string, inst: Handle) => number;
  createWindow: (
    ex: number,
    cls: string,
    name: string,
    style: number,
    x: number,
    y: number,
    w: number,
    h: number,
    parent: Handle,
    menu: Handle,
    inst: Handle,
    param: Handle,
  ) => Handle;
  destroyWindow: (hwnd: Handle) => number;
  defWindowProc: (hwnd: Handle, msg: number, w: Handle, l: Handle) => Handle;
  peekMessage: (msg: Buffer, hwnd: Handle, min: number, max: number, remove: number) => number;
  translateMessage: (msg: Buffer) => number;
  dispatchMessage: (msg: Buffer) => Handle;
  postMessage: (hwnd: Handle, msg: number, w: Handle, l: Handle) => number;
  registerWindowMessage: (name: string) => number;
  loadIcon: (inst: Handle, id: number) => Handle;
  getModuleHandle: (name: null) => Handle;
  shellNotifyIcon: (msg: number, data: Buffer) => number;
  getLastError: () => number;
  wndProcType: ReturnType<typeof koffi.pointer>;
}

let api: Api | undefined;
function bind(): Api {
  if (api) return api;
  if (process.platform !== 'win32')
    throw new PlatformError(
      'LA_ERR_PLATFORM',
      'the Windows tray runs only on Windows',
      'use `lightagent tray` on a Linux desktop (StatusNotifierItem)',
    );
  const user32 = koffi.load('user32.dll');
  const shell32 = koffi.load('shell32.dll');
  const kernel32 = koffi.load('kernel32.dll');
  const wndProc = koffi.proto('intptr_t __stdcall LaTrayWndProc(intptr_t hwnd, uint32_t msg, uintptr_t wParam, intptr_t lParam)');
  const wndProcType = koffi.pointer(wndProc);
  koffi.struct('LA_WNDCLASSEXW', {
    cbSize: 'uint32_t',
    style: 'uint32_t',
    lpfnWndProc: wndProcType,
    cbClsExtra: 'int32_t',
    cbWndExtra: 'int32_t',
    hInstance: 'intptr_t',
    hIcon: 'intptr_t',
    hCursor: 'intptr_t',
    hbrBackground: 'intptr_t',
    lpszMenuName: 'intptr_t',
    lpszClassName: 'const char16_t *',
    hIconSm: 'intptr_t',
  });
  api = {
    registerClass: user32.func('uint16_t __stdcall RegisterClassExW(const LA_WNDCLASSEXW *wc)'),
    unregisterClass: user32.func('int __stdcall UnregisterClassW(const char16_t *cls, intptr_t inst)'),
    createWindow: user32.func(
      'intptr_t __stdcall CreateWindowExW(uint32_t ex, const char16_t *cls, const char16_t *name, uint32_t style, int x, ' +
        'int y, int w, int h, intptr_t parent, intptr_t menu, intptr_t inst, intptr_t param)',
    ),
    destroyWindow: user32.func('int __stdcall DestroyWindow(intptr_t hwnd)'),
    defWindowProc: user32.func('intptr_t __stdcall DefWindowProcW(intptr_t hwnd, uint32_t msg, uintptr_t w, intptr_t l)'),
    peekMessage: user32.func('int __stdcall PeekMessageW(void *msg, intptr_t hwnd, uint32_t min, uint32_t max, uint32_t remove)'),
    translateMessage: user32.func('int __stdcall TranslateMessage(void *msg)'),
    dispatchMessage: user32.func('intptr_t __stdcall DispatchMessageW(void *msg)'),
    postMessage: user32.func('int __stdcall PostMessageW(intptr_t hwnd, uint32_t msg, uintptr_t w, intptr_t l)'),
    registerWindowMessage: user32.func('uint32_t __stdcall RegisterWindowMessageW(const char16_t *name)'),
    loadIcon: user32.func('intptr_t __stdcall LoadIconW(intptr_t inst, uintptr_t id)'),
    getModuleHandle: kernel32.func('intptr_t __stdcall GetModuleHandleW(const char16_t *name)'),
    shellNotifyIcon: shell32.func('int __stdcall Shell_NotifyIconW(uint32_t msg, void *data)'),
    getLastError: kernel32.func('uint32_t __stdcall GetLastError()'),
    wndProcType,
  };
  return api;
}

export interface WindowsTrayOptions {
  /** Called when Windows asks the tray to end (WM_CLOSE from taskkill, WM_ENDSESSION at logoff). */
  onExit?: (why: string) => void;
}

export class WindowsTrayPresenter implements TrayPresenter {
  private readonly log = logger('tray');
  private readonly a: Api;
  private readonly inst: Handle;
  private readonly hwnd: Handle;
  private readonly proc: unknown;
  private readonly taskbarCreated: number;
  private readonly icons = new Map<TrayState, Handle>();
  private readonly msg = Buffer.alloc(48); // MSG (x64)
  private pump: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private readonly addRetry = new Backoff(5_000, 60_000);
  private added = false;
  private closed = false;
  private state: TrayState = 'off';
  private tip = tooltipFor('off', '');
  /** Counters for logs and tests. */
  readonly counts = { add: 0, modify: 0, balloons: 0, failures: 0, dispatched: 0 };

  private constructor(private readonly o: WindowsTrayOptions) {
    const a = (this.a = bind());
    this.inst = a.getModuleHandle(null);
    this.proc = koffi.register((hwnd: Handle, msg: number, w: Handle, l: Handle) => this.wndProc(hwnd, msg, w, l), a.wndProcType);
    const atom = a.registerClass({
      cbSize: 80,
      style: 0,
      lpfnWndProc: this.proc,
      cbClsExtra: 0,
      cbWndExtra: 0,
      hInstance: this.inst,
      hIcon: 0,
      hCursor: 0,
      hbrBackground: 0,
      lpszMenuName: 0,
      lpszClassName: CLASS_NAME,
      hIconSm: 0,
    });
    if (!atom) {
      const e = a.getLastError();
      koffi.unregister(this.proc as never);
      throw new PlatformError(
        'LA_ERR_TRAY_SHELL',
        `RegisterClassExW failed (error ${e})`,
        'check the tray log; is another lightagent tray running in this process?',
      );
    }
    // WS_OVERLAPPED, 0 x 0, never shown: top-level so broadcasts and WM_CLOSE reach it.
    this.hwnd = a.createWindow(0, CLASS_NAME, 'lightagent tray', 0, 0, 0, 0, 0, 0, 0, this.inst, 0);
    if (!this.hwnd) {
      const e = a.getLastError();
      a.unregisterClass(CLASS_NAME, this.inst);
      koffi.unregister(this.proc as never);
      throw new PlatformError(
        'LA_ERR_TRAY_SHELL',
        `CreateWindowExW failed (error ${e})`,
        'run `lightagent tray` inside an interactive desktop session',
      );
    }
    this.taskbarCreated = a.registerWindowMessage('TaskbarCreated');
    for (const s of ['protected', 'degraded', 'threat', 'off'] as TrayState[]) {
      const { id, fallback } = iconFor(s);
      let h = a.loadIcon(0, id);
      if (!h && fallback !== id) h = a.loadIcon(0, fallback);
      if (!h) this.log.warn('no stock icon', { state: s, id, error: a.getLastError() });
      this.icons.set(s, h ?? 0);
    }
    this.pump = setInterval(() => this.pumpMessages(), PUMP_MS);
    if (!a.postMessage(this.hwnd, WM_TRAY_PING, 0, 0)) this.log.warn('PostMessageW to the tray window failed', { error: a.getLastError() });
    this.log.info('tray window created', { hwnd: String(this.hwnd), taskbarCreated: this.taskbarCreated });
  }

  static async start(o: WindowsTrayOptions = {}): Promise<WindowsTrayPresenter> {
    return new WindowsTrayPresenter(o);
  }

  private pumpMessages(): void {
    for (let i = 0; i < PUMP_BATCH; i++) {
      let got: number;
      try {
        got = this.a.peekMessage(this.msg, 0, 0, 0, PM_REMOVE);
      } catch (e) {
        this.log.error('PeekMessageW failed', describeError(e));
        return;
      }
      if (!got) return;
      this.a.translateMessage(this.msg);
      this.a.dispatchMessage(this.msg);
    }
  }

  private wndProc(hwnd: Handle, msg: number, w: Handle, l: Handle): Handle {
    try {
      this.counts.dispatched++;
      if (msg === WM_TRAY_PING) {
        this.log.info('tray message pump running');
        return 0;
      }
      if (msg === WM_TRAY_CALLBACK) {
        this.log.debug('tray icon event', { event: Number(BigInt.asUintN(16, BigInt(l))) });
        return 0;
      }
      if (this.taskbarCreated && msg === this.taskbarCreated) {
        this.log.info('the taskbar was (re)created: adding the icon again');
        this.added = false;
        this.add();
        return 0;
      }
      if (msg === WM_QUERYENDSESSION) return 1;
      if (msg === WM_CLOSE || (msg === WM_ENDSESSION && BigInt(w) !== 0n)) {
        this.log.info('asked to close', { via: msg === WM_CLOSE ? 'WM_CLOSE' : 'WM_ENDSESSION' });
        setImmediate(() => this.o.onExit?.(msg === WM_CLOSE ? 'WM_CLOSE' : 'WM_ENDSESSION'));
        return 0; // the window is destroyed by close(), after NIM_DELETE
      }
    } catch (e) {
      this.log.error('tray window procedure failed', describeError(e));
    }
    return this.a.defWindowProc(hwnd, msg, w, l);
  }

  private data(flags: number, extra: { info?: string; infoTitle?: string; infoFlags?: number } = {}): Buffer {
    return buildNotifyIconData({
      hWnd: this.hwnd,
      uID: ICON_ID,
      uFlags: flags,
      uCallbackMessage: WM_TRAY_CALLBACK,
      hIcon: this.icons.get(this.state) ?? 0,
      tip: this.tip,
      ...extra,
    });
  }

  /** NIM_ADD with the current state; on failure, retried with backoff (and on TaskbarCreated). */
  private add(): boolean {
    if (this.closed || this.added) return this.added;
    const ok = this.a.shellNotifyIcon(NIM_ADD, this.data(NIF_MESSAGE | NIF_ICON | NIF_TIP)) !== 0;
    if (ok) {
      this.added = true;
      this.counts.add++;
      clearTimeout(this.retry);
      this.retry = undefined;
      this.addRetry.reset();
      this.log.info('Shell_NotifyIconW NIM_ADD ok', { state: this.state, tip: this.tip });
    } else {
      this.counts.failures++;
      const error = this.a.getLastError();
      if (this.retry) {
        this.log.warn('Shell_NotifyIconW NIM_ADD failed; a retry is pending', { state: this.state, error });
      } else {
        const retryInMs = this.addRetry.next();
        this.log.warn('Shell_NotifyIconW NIM_ADD failed; retrying', { state: this.state, error, retryInMs });
        this.retry = setTimeout(() => {
          this.retry = undefined;
          this.add();
        }, retryInMs);
      }
    }
    return ok;
  }

  async setState(state: TrayState, detail: string): Promise<void> {
    if (this.closed) return;
    this.state = state;
    this.tip = tooltipFor(state, detail);
    if (!this.added) {
      this.add();
      return;
    }
    if (this.a.shellNotifyIcon(NIM_MODIFY, this.data(NIF_ICON | NIF_TIP)) !== 0) {
      this.counts.modify++;
      this.log.info('Shell_NotifyIconW NIM_MODIFY ok', { state, tip: this.tip });
      return;
    }
    // The shell forgot the icon (Explorer restarted before TaskbarCreated arrived): add it again.
    this.counts.failures++;
    this.log.warn('Shell_NotifyIconW NIM_MODIFY failed; adding the icon again', { state, error: this.a.getLastError() });
    this.added = false;
    this.add();
  }

  async notify(n: TrayNotification): Promise<void> {
    if (this.closed) return;
    if (!this.added && !this.add()) {
      throw new PlatformError(
        'LA_ERR_TRAY_SHELL',
        `no tray icon to show a balloon from: ${n.summary}`,
        'the taskbar is not running yet; the icon is added when it starts',
      );
    }
    const flags = balloonFlags(n);
    const ok = this.a.shellNotifyIcon(NIM_MODIFY, this.data(NIF_INFO, { info: n.body, infoTitle: n.summary, infoFlags: flags })) !== 0;
    if (!ok) {
      this.counts.failures++;
      throw new PlatformError(
        'LA_ERR_TRAY_SHELL',
        `Shell_NotifyIconW (NIF_INFO) failed (error ${this.a.getLastError()})`,
        'check that the taskbar runs',
      );
    }
    this.counts.balloons++;
    this.log.info('balloon shown', { kind: n.kind, title: n.summary, niif: flags });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.pump);
    clearTimeout(this.retry);
    if (this.added) {
      const t0 = performance.now();
      const ok = this.a.shellNotifyIcon(NIM_DELETE, this.data(0)) !== 0;
      const error = ok ? 0 : this.a.getLastError();
      const ms = Math.round(performance.now() - t0); // 2 s under Wine (inside its explorer), see docs/tray.md
      if (ok) this.log.info('Shell_NotifyIconW NIM_DELETE ok', { ms });
      else this.log.warn('Shell_NotifyIconW NIM_DELETE failed', { error, ms });
      this.added = false;
    }
    if (!this.a.destroyWindow(this.hwnd)) this.log.warn('DestroyWindow failed', { error: this.a.getLastError() });
    this.a.unregisterClass(CLASS_NAME, this.inst);
    koffi.unregister(this.proc as never);
    this.log.info('tray window closed', this.counts);
  }
}

export function startWindowsTrayPresenter(o: WindowsTrayOptions = {}): Promise<TrayPresenter> {
  return WindowsTrayPresenter.start(o);
}
