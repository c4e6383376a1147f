/**
 * The Linux tray: one session-bus connection carrying the StatusNotifierItem and the
 * notifications. Needs DBUS_SESSION_BUS_ADDRESS (set in every desktop session).
 */
import dbus from 'dbus-next';
import { PlatformError, describeError } from '../../errors.js';
import { logger } from '../../log.js';
import type { TrayNotification, TrayPresenter, TrayState } from '../presenter.js';
import { DesktopNotifications } from './notifications.js';
import { StatusNotifierItem } from './status-notifier-item.js';

export class LinuxTrayPresenter implements TrayPresenter {
  private constructor(
    private readonly bus: dbus.MessageBus,
    readonly item: StatusNotifierItem,
    private readonly notes: DesktopNotifications,
  ) {}

  static async start(opts: { expireMs?: number } = {}): Promise<LinuxTrayPresenter> {
    const log = logger('tray');
    if (!process.env.DBUS_SESSION_BUS_ADDRESS) {
      throw new PlatformError(
        'LA_ERR_TRAY_BUS',
        'no session bus: DBUS_SESSION_BUS_ADDRESS is not set',
        'run `lightagent tray` inside the desktop session (the XDG autostart entry does this)',
      );
    }
    let bus: dbus.MessageBus;
    try {
      bus = dbus.sessionBus();
      // dbus-next connects lazily; a bad address shows up on the first call.
      bus.on('error', (e) => log.error('session bus error', describeError(e)));
      const item = await StatusNotifierItem.start(bus, (e) =>
        log.warn('could not register with the StatusNotifierWatcher', describeError(e)),
      );
      if (!item.isRegistered) log.info('no StatusNotifierWatcher on the session bus (yet): the icon is shown once a tray host starts');
      return new LinuxTrayPresenter(bus, item, new DesktopNotifications(bus, opts.expireMs));
    } catch (e) {
      throw new PlatformError(
        'LA_ERR_TRAY_BUS',
        `cannot use the session bus at ${process.env.DBUS_SESSION_BUS_ADDRESS}: ${(e as Error).message}`,
        'run `lightagent tray` inside the desktop session',
        { cause: e },
      );
    }
  }

  async setState(state: TrayState, detail: string): Promise<void> {
    this.item.setState(state, detail);
  }

  async notify(n: TrayNotification): Promise<void> {
    await this.notes.notify(n);
  }

  async close(): Promise<void> {
    this.bus.disconnect();
  }
}
