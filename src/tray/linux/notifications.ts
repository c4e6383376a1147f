/**
 * Desktop notifications on Linux: org.freedesktop.Notifications.Notify (the Desktop
 * Notifications Specification 1.2), served by the desktop (GNOME Shell, Plasma, dunst, mako...).
 * The proxy is made at first use and again after a failure, so a notification server that
 * starts after the tray (or restarts) is found.
 */
import dbus from 'dbus-next';
import type { TrayNotification } from '../presenter.js';

const NAME = 'org.freedesktop.Notifications';
const PATH = '/org/freedesktop/Notifications';
const URGENCY = { low: 0, normal: 1, critical: 2 } as const;
const ICON = {
  threat: 'security-low',
  summary: 'security-low',
  degraded: 'security-medium',
  recovered: 'security-high',
  off: 'security-low',
} as const;

export class DesktopNotifications {
  private iface: dbus.ClientInterface | undefined;
  /** degraded / recovered / off replace each other instead of stacking up. */
  private stateId = 0;

  constructor(
    private readonly bus: dbus.MessageBus,
    private readonly expireMs = 10_000,
  ) {}

  async notify(n: TrayNotification): Promise<number> {
    if (!this.iface) {
      const obj = await this.bus.getProxyObject(NAME, PATH);
      this.iface = obj.getInterface(NAME);
    }
    const stateful = n.kind === 'degraded' || n.kind === 'recovered' || n.kind === 'off';
    const hints = {
      urgency: new dbus.Variant('y', URGENCY[n.urgency]),
      category: new dbus.Variant('s', n.kind === 'threat' || n.kind === 'summary' ? 'device.error' : 'device'),
      'desktop-entry': new dbus.Variant('s', 'lightagent-tray'),
    };
    try {
      const id = (await this.iface.Notify(
        'lightagent',
        stateful ? this.stateId : 0,
        ICON[n.kind],
        n.summary,
        n.body,
        [],
        hints,
        n.urgency === 'critical' ? 0 : this.expireMs,
      )) as number;
      if (stateful) this.stateId = id;
      return id;
    } catch (e) {
      this.iface = undefined;
      throw e;
    }
  }
}
