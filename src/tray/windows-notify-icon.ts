/**
 * The platform-free half of the Windows tray (windows.ts): which stock icon and balloon kind a
 * state or notification gets, and the NOTIFYICONDATAW structure that Shell_NotifyIconW reads,
 * built byte by byte into a Buffer (x64 layout, 976 bytes) so it can be checked on Linux.
 *
 * The text fields are fixed UTF-16 arrays in the structure: szTip 128, szInfo 256, szInfoTitle 64
 * code units, each including the terminating NUL. Text is cut to fit without splitting a
 * surrogate pair, with an ellipsis when cut, and control characters other than newline (NUL
 * above all, which would end the string early) become spaces.
 */
import type { TrayNotification, TrayState } from './presenter.js';

export const NIM_ADD = 0;
export const NIM_MODIFY = 1;
export const NIM_DELETE = 2;

export const NIF_MESSAGE = 0x1;
export const NIF_ICON = 0x2;
export const NIF_TIP = 0x4;
export const NIF_INFO = 0x10;

export const NIIF_INFO = 0x1;
export const NIIF_WARNING = 0x2;
export const NIIF_ERROR = 0x3;

/** Stock icons (LoadIconW(NULL, MAKEINTRESOURCE(id))). */
export const IDI_ERROR = 32513;
export const IDI_WARNING = 32515;
export const IDI_INFORMATION = 32516;
export const IDI_SHIELD = 32518;

export const TIP_CHARS = 128;
export const INFO_CHARS = 256;
export const INFO_TITLE_CHARS = 64;

/** sizeof(NOTIFYICONDATAW) on x64, and the offsets of its fields. */
export const NOTIFYICONDATAW_SIZE = 976;
export const NID_OFFSETS = {
  cbSize: 0,
  hWnd: 8,
  uID: 16,
  uFlags: 20,
  uCallbackMessage: 24,
  hIcon: 32,
  szTip: 40,
  dwState: 296,
  dwStateMask: 300,
  szInfo: 304,
  uTimeout: 816,
  szInfoTitle: 820,
  dwInfoFlags: 948,
  guidItem: 952,
  hBalloonIcon: 968,
} as const;

/**
 * The stock icon per state, as on Linux (security-high / -medium / -low): protected a shield,
 * degraded a warning sign, threat blocked and not running an error sign. The tooltip tells
 * threat from off. `fallback` is used where a Windows (or Wine) build has no shield icon.
 */
export function iconFor(state: TrayState): { id: number; fallback: number } {
  switch (state) {
    case 'protected':
      return { id: IDI_SHIELD, fallback: IDI_INFORMATION };
    case 'degraded':
      return { id: IDI_WARNING, fallback: IDI_WARNING };
    case 'threat':
    case 'off':
      return { id: IDI_ERROR, fallback: IDI_ERROR };
  }
}

/** The tooltip: the product name first, then the tray's detail. */
export function tooltipFor(state: TrayState, detail: string): string {
  const label =
    state === 'protected' ? 'protected' : state === 'degraded' ? 'degraded' : state === 'threat' ? 'threat blocked' : 'not running';
  const d = detail.trim();
  if (!d) return `lightagent: ${label}`;
  return /^lightagent\b/i.test(d) ? d : `lightagent: ${d}`;
}

/** The balloon's icon: a stopped agent is an error, a recovery is information, the rest warnings. */
export function balloonFlags(n: TrayNotification): number {
  if (n.kind === 'off' || n.urgency === 'critical') return NIIF_ERROR;
  if (n.kind === 'recovered' || n.urgency === 'low') return NIIF_INFO;
  return NIIF_WARNING;
}

/**
 * `s` cut to at most `chars - 1` UTF-16 code units (room for the NUL), ending in "…" when cut,
 * never ending in half a surrogate pair; control characters except \n become spaces.
 */
export function fitUtf16(s: string, chars: number): string {
  if (!(chars >= 2)) throw new RangeError('fitUtf16: chars >= 2');
  // eslint-disable-next-line no-control-regex
  let t = String(s).replace(/[\u0000-\u0009\u000b-\u001f\u007f]/g, ' ');
  // lone surrogates (invalid UTF-16) become U+FFFD
  t = t.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
  const max = chars - 1;
  if (t.length <= max) return t;
  let cut = max - 1; // one unit for the ellipsis
  const c = t.charCodeAt(cut - 1);
  if (c >= 0xd800 && c <= 0xdbff) cut--; // do not keep a high surrogate without its low half
  return `${t.slice(0, cut)}…`;
}

function writeText(buf: Buffer, offset: number, chars: number, s: string): void {
  buf.fill(0, offset, offset + chars * 2);
  buf.write(fitUtf16(s, chars), offset, (chars - 1) * 2, 'utf16le');
}

export interface NotifyIconFields {
  hWnd: number | bigint;
  uID: number;
  uFlags: number;
  uCallbackMessage?: number;
  hIcon?: number | bigint;
  tip?: string;
  info?: string;
  infoTitle?: string;
  infoFlags?: number;
}

/** NOTIFYICONDATAW (x64) for Shell_NotifyIconW; the text fields are cut to their arrays. */
export function buildNotifyIconData(f: NotifyIconFields): Buffer {
  const b = Buffer.alloc(NOTIFYICONDATAW_SIZE);
  const o = NID_OFFSETS;
  b.writeUInt32LE(NOTIFYICONDATAW_SIZE, o.cbSize);
  b.writeBigInt64LE(BigInt(f.hWnd), o.hWnd);
  b.writeUInt32LE(f.uID >>> 0, o.uID);
  b.writeUInt32LE(f.uFlags >>> 0, o.uFlags);
  b.writeUInt32LE((f.uCallbackMessage ?? 0) >>> 0, o.uCallbackMessage);
  b.writeBigInt64LE(BigInt(f.hIcon ?? 0), o.hIcon);
  if (f.tip !== undefined) writeText(b, o.szTip, TIP_CHARS, f.tip);
  if (f.info !== undefined) writeText(b, o.szInfo, INFO_CHARS, f.info);
  b.writeUInt32LE(10_000, o.uTimeout); // ignored since Vista; the shell decides
  if (f.infoTitle !== undefined) writeText(b, o.szInfoTitle, INFO_TITLE_CHARS, f.infoTitle);
  b.writeUInt32LE((f.infoFlags ?? 0) >>> 0, o.dwInfoFlags);
  return b;
}

/** Read a fixed UTF-16 text field back (up to its NUL); for tests and logs. */
export function readText(buf: Buffer, offset: number, chars: number): string {
  const s = buf.toString('utf16le', offset, offset + chars * 2);
  const nul = s.indexOf('\0');
  return nul >= 0 ? s.slice(0, nul) : s;
}
