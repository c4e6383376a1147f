/**
 * Windows tray: NOT BUILT YET (another engineer takes it). The plan, so the seam is clear:
 *
 * - A `WindowsTrayPresenter implements TrayPresenter` (../presenter.ts): the icon through
 *   Shell_NotifyIconW (NIM_ADD / NIM_MODIFY with an HICON per TrayState) on a message-only
 *   window, and toasts through the WinRT ToastNotificationManager (AppUserModelID
 *   "lightagent.tray", registered by the installer's Start-menu shortcut), both via koffi.
 * - TrayApp (../tray-app.ts) is shared as it is: the same status-socket protocol, reached on
 *   Windows through a named pipe (\\.\pipe\lightagent-status) instead of a Unix socket.
 * - Started per user by the installer's HKCU\Software\Microsoft\Windows\CurrentVersion\Run
 *   value (or a Startup-folder shortcut), never elevated.
 */
import { PlatformError } from '../errors.js';
import type { TrayPresenter } from './presenter.js';

export function startWindowsTrayPresenter(): Promise<TrayPresenter> {
  return Promise.reject(new PlatformError('LA_ERR_TRAY_BUS', 'the Windows tray is not built yet', 'see src/tray/windows.ts and docs/tray.md'));
}
