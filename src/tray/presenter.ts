/**
 * What a desktop shell offers the tray, per platform: an icon with a state, and notifications.
 * Linux: linux/presenter.ts (StatusNotifierItem + org.freedesktop.Notifications over D-Bus).
 * Windows: windows.ts (a note; not built yet).
 */
export type TrayState = 'protected' | 'degraded' | 'threat' | 'off';

export interface TrayNotification {
  /** What it is about: threat (a blocked file), summary (N more), degraded, recovered, off. */
  kind: 'threat' | 'summary' | 'degraded' | 'recovered' | 'off';
  summary: string;
  body: string;
  urgency: 'low' | 'normal' | 'critical';
}

export interface TrayPresenter {
  /** Show the state in the icon; `detail` is the tooltip text. */
  setState(state: TrayState, detail: string): Promise<void>;
  notify(n: TrayNotification): Promise<void>;
  close(): Promise<void>;
}
