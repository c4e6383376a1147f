/**
 * The tray's logic, platform-free: follow the daemon's status socket (`watch`), keep the icon's
 * state (protected / degraded / threat blocked / off), and raise notifications for blocked
 * threats (rate-limited) and for protection going degraded and coming back. It holds no
 * privilege and talks to nothing but the status socket; a daemon that goes away is retried with
 * jittered backoff (500 ms doubling to 30 s: the trays of every user of a terminal server then
 * do not all knock on a restarted daemon's socket at once), and the icon says "off" meanwhile.
 */
import { Backoff } from '../backoff.js';
import { watch } from '../control/client.js';
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import { NotificationLimiter } from './notification-limiter.js';
import type { TrayNotification, TrayPresenter, TrayState } from './presenter.js';

export interface TrayAppOptions {
  socketPath: string;
  presenter: TrayPresenter;
  /** Threat notifications: at most `max` per `windowMs`, then one summary (default 3 per 10 s). */
  rate?: { max: number; windowMs: number };
  /** How long the icon shows "threat blocked" after the last detection (default 60 s). */
  threatIconMs?: number;
  /** Delays between attempts to reach the status socket (default 500 ms doubling to 30 s, jittered). */
  reconnect?: Backoff;
}

interface DetectionLine {
  path?: unknown;
  threat?: unknown;
  action?: unknown;
}

const REASONS: Record<string, string> = {
  'svm-unreachable': 'the Security VM cannot be reached',
  'files-queued': 'files were allowed without a scan and wait for one',
  'protection-off': 'on-access protection is off',
};

const clip = (v: unknown, n = 300): string => {
  const s = typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : (JSON.stringify(v) ?? '?');
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
};

/** What each detection action tells the person at the desktop. */
const ACTION_TEXT: Record<string, string> = {
  quarantined: 'quarantined',
  denied: 'access denied',
  killed: 'the program was stopped',
  reported: 'left in place and reported to your administrator',
};

/**
 * The notification for one detected threat. `reported` (an excluded threat, or a file that could
 * not be moved) was not blocked, and the summary does not say it was.
 */
export function threatNotification(d: DetectionLine): TrayNotification {
  const action = typeof d.action === 'string' && Object.hasOwn(ACTION_TEXT, d.action) ? ACTION_TEXT[d.action]! : clip(d.action, 40);
  return {
    kind: 'threat',
    summary: `${d.action === 'reported' ? 'Threat found' : 'Threat blocked'}: ${clip(d.threat, 120)}`,
    body: `File: ${clip(d.path, 500)}\nThreat: ${clip(d.threat, 120)}\nAction: ${action}`,
    urgency: 'normal',
  };
}

export class TrayApp {
  private readonly log = logger('tray');
  private readonly limiter: NotificationLimiter<DetectionLine>;
  private readonly threatIconMs: number;
  private closeWatch: (() => void) | undefined;
  private retry: NodeJS.Timeout | undefined;
  private threatTimer: NodeJS.Timeout | undefined;
  private readonly reconnect: Backoff;
  private stopped = false;
  private connected = false;
  private everConnected = false;
  private protection: { state: string; reasons: string[] } = { state: 'off', reasons: [] };
  private threatUntil = 0;
  private shown: TrayState | undefined;
  private mode = 'off';
  /** Counters for tests and logs. */
  readonly counts = { detections: 0, notifications: 0, summaries: 0 };

  constructor(private readonly o: TrayAppOptions) {
    const rate = o.rate ?? { max: 3, windowMs: 10_000 };
    this.threatIconMs = o.threatIconMs ?? 60_000;
    this.reconnect = o.reconnect ?? new Backoff(500, 30_000);
    this.limiter = new NotificationLimiter<DetectionLine>(
      rate.max,
      rate.windowMs,
      (d) => this.notify(threatNotification(d)),
      (n, last) => {
        this.counts.summaries++;
        this.notify({
          kind: 'summary',
          summary: `${n} more threat${n === 1 ? '' : 's'} blocked`,
          body: `Last: ${clip(last.path, 300)} (${clip(last.threat, 80)}).\nRun \`lightagent status\` for the list.`,
          urgency: 'normal',
        });
      },
    );
  }

  start(): void {
    void this.render();
    this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    clearTimeout(this.threatTimer);
    this.limiter.flush();
    this.limiter.stop();
    this.closeWatch?.();
    await this.o.presenter.close();
  }

  private connect(): void {
    if (this.stopped) return;
    this.closeWatch = watch(this.o.socketPath, {
      onStatus: (s) => {
        this.reconnect.reset();
        this.connected = true;
        this.everConnected = true;
        this.mode = typeof s.mode === 'string' ? s.mode : 'off';
        const p = (s.protection ?? {}) as { state?: unknown; reasons?: unknown };
        this.protection = {
          state: typeof p.state === 'string' ? p.state : 'protected',
          reasons: Array.isArray(p.reasons) ? p.reasons.map(clip) : [],
        };
        this.log.info('following the agent', { socket: this.o.socketPath, mode: this.mode, protection: this.protection.state });
        void this.render();
      },
      onEvent: (ev) => this.onEvent(ev),
      onEnd: (e) => {
        const wasConnected = this.connected;
        this.connected = false;
        if (wasConnected) {
          this.log.warn('lost the agent', e ? describeError(e) : {});
          this.notify({
            kind: 'off',
            summary: 'Protection agent stopped',
            body: 'lightagent is not running: files on this computer are not checked.',
            urgency: 'critical',
          });
        } else if (!this.everConnected && this.reconnect.attempts === 0) {
          this.log.warn('agent not reachable yet; retrying', e ? describeError(e) : {});
        }
        void this.render();
        if (this.stopped) return;
        this.retry = setTimeout(() => this.connect(), this.reconnect.next());
        this.retry.unref?.();
      },
    });
  }

  private onEvent(ev: Record<string, unknown>): void {
    if (ev.event === 'detection' && typeof ev.detection === 'object' && ev.detection !== null) {
      this.counts.detections++;
      this.threatUntil = Date.now() + this.threatIconMs;
      clearTimeout(this.threatTimer);
      this.threatTimer = setTimeout(() => void this.render(), this.threatIconMs + 10);
      this.threatTimer.unref?.();
      this.limiter.push(ev.detection as DetectionLine);
      void this.render();
    } else if (ev.event === 'degraded' || ev.event === 'recovered') {
      const p = (ev.protection ?? {}) as { state?: unknown; reasons?: unknown };
      const before = this.protection.state;
      this.protection = {
        state: typeof p.state === 'string' ? p.state : ev.event === 'recovered' ? 'protected' : 'degraded',
        reasons: Array.isArray(p.reasons) ? p.reasons.map((r) => clip(r)) : [],
      };
      if (ev.event === 'recovered') {
        this.notify({
          kind: 'recovered',
          summary: 'Protection restored',
          body: 'Files are checked by the Security VM again.',
          urgency: 'low',
        });
      } else if (before !== this.protection.state || ev.event === 'degraded') {
        const why = this.protection.reasons.map((r) => REASONS[r] ?? r).join('; ') || 'see `lightagent status`';
        this.notify({
          kind: 'degraded',
          summary: 'Protection degraded',
          body: `${why.charAt(0).toUpperCase()}${why.slice(1)}.`,
          urgency: 'normal',
        });
      }
      void this.render();
    }
  }

  private state(): TrayState {
    if (!this.connected) return 'off';
    if (Date.now() < this.threatUntil) return 'threat';
    if (this.protection.state === 'protected') return 'protected';
    return this.protection.state === 'off' ? 'off' : 'degraded';
  }

  private async render(): Promise<void> {
    const s = this.state();
    if (s === this.shown) return;
    this.shown = s;
    const detail =
      s === 'off'
        ? 'lightagent is not running: not protected'
        : s === 'threat'
          ? `Threat blocked (${this.counts.detections} since the tray started)`
          : s === 'degraded'
            ? `Protection degraded: ${this.protection.reasons.map((r) => REASONS[r] ?? r).join('; ')}`
            : `Protected (${this.mode})`;
    try {
      await this.o.presenter.setState(s, detail);
    } catch (e) {
      this.log.error('could not update the tray icon', describeError(e));
    }
  }

  private notify(n: TrayNotification): void {
    this.counts.notifications++;
    this.o.presenter.notify(n).catch((e) => this.log.error('could not show a notification', { summary: n.summary, ...describeError(e) }));
  }
}
