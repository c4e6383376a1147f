/**
 * The tray icon on Linux desktops: an org.kde.StatusNotifierItem object on the session bus
 * (the freedesktop "StatusNotifierItem" spec, which KDE, GNOME's AppIndicator extension, XFCE,
 * waybar and others host), registered with org.kde.StatusNotifierWatcher when one is running,
 * and again whenever a watcher appears (a panel restarted). Icons are freedesktop icon-theme
 * names, so the desktop's own theme draws them.
 */
import dbus from 'dbus-next';
import type { TrayState } from '../presenter.js';

const ITEM_PATH = '/StatusNotifierItem';
const WATCHER = 'org.kde.StatusNotifierWatcher';

const ICONS: Record<TrayState, { icon: string; status: 'Active' | 'NeedsAttention' | 'Passive'; title: string }> = {
  protected: { icon: 'security-high', status: 'Active', title: 'lightagent: protected' },
  degraded: { icon: 'security-medium', status: 'NeedsAttention', title: 'lightagent: protection degraded' },
  threat: { icon: 'security-low', status: 'NeedsAttention', title: 'lightagent: threat blocked' },
  off: { icon: 'security-low', status: 'NeedsAttention', title: 'lightagent: not protected' },
};

/** The D-Bus object. Property getters are read by dbus-next on Get/GetAll. */
class ItemInterface extends dbus.interface.Interface {
  state: TrayState = 'off';
  detail = '';

  get Category(): string {
    return 'SystemServices';
  }
  get Id(): string {
    return 'lightagent';
  }
  get Title(): string {
    return ICONS[this.state].title;
  }
  get Status(): string {
    return ICONS[this.state].status;
  }
  get WindowId(): number {
    return 0;
  }
  get IconName(): string {
    return ICONS[this.state].icon;
  }
  get AttentionIconName(): string {
    return ICONS[this.state].icon;
  }
  get OverlayIconName(): string {
    return '';
  }
  get IconPixmap(): unknown[] {
    return [];
  }
  get ToolTip(): unknown[] {
    return [ICONS[this.state].icon, [], ICONS[this.state].title, this.detail];
  }
  get ItemIsMenu(): boolean {
    return false;
  }
  get Menu(): string {
    return '/NO_DBUSMENU';
  }
  Activate(): void {}
  SecondaryActivate(): void {}
  ContextMenu(): void {}
  Scroll(): void {}
  NewTitle(): void {}
  NewIcon(): void {}
  NewAttentionIcon(): void {}
  NewToolTip(): void {}
  NewStatus(status: string): string {
    return status;
  }
}

const read = { access: 'read' as const };
ItemInterface.configureMembers({
  properties: {
    Category: { signature: 's', ...read },
    Id: { signature: 's', ...read },
    Title: { signature: 's', ...read },
    Status: { signature: 's', ...read },
    WindowId: { signature: 'i', ...read },
    IconName: { signature: 's', ...read },
    AttentionIconName: { signature: 's', ...read },
    OverlayIconName: { signature: 's', ...read },
    IconPixmap: { signature: 'a(iiay)', ...read },
    ToolTip: { signature: '(sa(iiay)ss)', ...read },
    ItemIsMenu: { signature: 'b', ...read },
    Menu: { signature: 'o', ...read },
  },
  methods: {
    Activate: { inSignature: 'ii' },
    SecondaryActivate: { inSignature: 'ii' },
    ContextMenu: { inSignature: 'ii' },
    Scroll: { inSignature: 'is' },
  },
  signals: {
    NewTitle: { signature: '' },
    NewIcon: { signature: '' },
    NewAttentionIcon: { signature: '' },
    NewToolTip: { signature: '' },
    NewStatus: { signature: 's' },
  },
});

export class StatusNotifierItem {
  private readonly iface = new ItemInterface('org.kde.StatusNotifierItem');
  readonly busName: string;
  private registered = false;

  private constructor(private readonly bus: dbus.MessageBus) {
    this.busName = `org.kde.StatusNotifierItem-${process.pid}-1`;
  }

  /** Export the item and register it with the watcher if there is one (and whenever one appears). */
  static async start(bus: dbus.MessageBus, onError: (e: unknown) => void): Promise<StatusNotifierItem> {
    const item = new StatusNotifierItem(bus);
    bus.export(ITEM_PATH, item.iface);
    await bus.requestName(item.busName, 0);
    const dbusObj = await bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus');
    const dbusIface = dbusObj.getInterface('org.freedesktop.DBus');
    dbusIface.on('NameOwnerChanged', (name: string, _old: string, owner: string) => {
      if (name === WATCHER && owner) {
        item.registered = false;
        item.register().catch(onError);
      }
    });
    if (await dbusIface.NameHasOwner(WATCHER)) await item.register().catch(onError);
    return item;
  }

  /** Whether a StatusNotifierWatcher accepted the item. */
  get isRegistered(): boolean {
    return this.registered;
  }

  private async register(): Promise<void> {
    const w = await this.bus.getProxyObject(WATCHER, '/StatusNotifierWatcher');
    await w.getInterface(WATCHER).RegisterStatusNotifierItem(this.busName);
    this.registered = true;
  }

  setState(state: TrayState, detail: string): void {
    const before = this.iface.state;
    this.iface.state = state;
    this.iface.detail = detail;
    if (ICONS[before].status !== ICONS[state].status) this.iface.NewStatus(ICONS[state].status);
    this.iface.NewIcon();
    this.iface.NewAttentionIcon();
    this.iface.NewTitle();
    this.iface.NewToolTip();
  }
}
