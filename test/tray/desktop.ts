/**
 * A real, headless desktop for tray tests: Xvfb, a private dbus-daemon session bus, dunst as the
 * org.freedesktop.Notifications server, and dbus-monitor recording every Notify call. Each part
 * runs under a watchdog and is killed when the test process exits.
 *
 * Debian packages: dbus (dbus-daemon, dbus-monitor), dunst, xvfb, imagemagick (import), fonts-dejavu-core.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { inCi } from '../helpers/procs.js';

const TOOLS = ['Xvfb', 'dbus-daemon', 'dbus-monitor', 'dunst', 'import', 'setpriv'];

/** Skip reason when a tool is missing; under CI=true a missing tool fails instead. */
export function needDesktopTools(): string | undefined {
  const missing = TOOLS.filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
  if (missing.length === 0) return undefined;
  const msg = `tray tests need ${missing.join(', ')} (apt-get install dbus dunst xvfb imagemagick fonts-dejavu-core util-linux)`;
  if (inCi) throw new Error(`CI=true: ${msg}`);
  process.stderr.write(`\n*** SKIPPING: ${msg} ***\n\n`);
  return msg;
}

export interface NotifyCall {
  appName: string;
  icon: string;
  summary: string;
  body: string;
}

const procs = new Set<ChildProcess>();
process.on('exit', () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

function start(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}, watchdogMs = 300_000): ChildProcess & { text: () => string } {
  const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  procs.add(c);
  let text = '';
  c.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  c.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  const t = setTimeout(() => c.kill('SIGKILL'), watchdogMs);
  t.unref();
  c.once('exit', () => {
    clearTimeout(t);
    procs.delete(c);
  });
  return Object.assign(c, { text: () => text });
}

async function until<T>(fn: () => T | undefined, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Parse dbus-monitor's text for Notify method calls (app, replaces id, icon, summary, body, ...). */
export function parseNotifyCalls(text: string): NotifyCall[] {
  const calls: NotifyCall[] = [];
  const blocks = text.split(/\n(?=method call |signal |method return |error )/);
  for (const b of blocks) {
    if (!b.startsWith('method call ') || !/member=Notify\b/.test(b.split('\n')[0]!)) continue;
    // Top-level string arguments: `   string "..."` (3 spaces); strings may span lines.
    const strs: string[] = [];
    const re = /^ {3}string "((?:[^"\\]|\\.)*)"/gms;
    let m: RegExpExecArray | null;
    while ((m = re.exec(b))) strs.push(m[1]!.replace(/\\"/g, '"').replace(/\\\\/g, '\\'));
    if (strs.length >= 4) calls.push({ appName: strs[0]!, icon: strs[1]!, summary: strs[2]!, body: strs[3]! });
  }
  return calls;
}

export interface Desktop {
  display: string;
  busAddress: string;
  /** Every Notify call seen on the bus so far. */
  notifyCalls(): NotifyCall[];
  screenshot(file: string): void;
  stop(): Promise<void>;
}

export async function startDesktop(dir: string): Promise<Desktop> {
  fs.mkdirSync(dir, { recursive: true });
  fs.chmodSync(dir, 0o755);
  // Xvfb picks a free display and prints its number on fd 1.
  const x = start('Xvfb', ['-displayfd', '1', '-screen', '0', '1024x600x24', '-nolisten', 'tcp']);
  const display = `:${await until(() => /^(\d+)\s*$/m.exec(x.text())?.[1], 15_000, 'Xvfb')}`;
  // A session bus both root (the test, the monitor) and the unprivileged tray may use.
  const sock = path.join(dir, 'bus');
  fs.writeFileSync(
    path.join(dir, 'bus.conf'),
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=${sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`,
  );
  const bus = start('dbus-daemon', [`--config-file=${path.join(dir, 'bus.conf')}`, '--nofork', '--print-address=1']);
  const busAddress = await until(() => /^(unix:\S+)/m.exec(bus.text())?.[1], 15_000, 'dbus-daemon');
  fs.chmodSync(sock, 0o777);
  const env = { DISPLAY: display, DBUS_SESSION_BUS_ADDRESS: busAddress, HOME: dir, XDG_CONFIG_HOME: dir, XDG_RUNTIME_DIR: dir };
  const monitor = start(
    'dbus-monitor',
    ['--address', busAddress, "type='method_call',interface='org.freedesktop.Notifications',member='Notify'"],
    env,
  );
  await until(() => (/NameAcquired|signal/.test(monitor.text()) ? true : undefined), 10_000, 'dbus-monitor').catch(() => undefined);
  // Notifications stay on screen (timeout 0) so the screenshot catches them.
  fs.writeFileSync(
    path.join(dir, 'dunstrc'),
    `[global]
    font = DejaVu Sans 12
    width = 560
    height = 200
    origin = top-right
    offset = 16x16
    frame_width = 2
    frame_color = "#aa3333"
    padding = 10
    horizontal_padding = 12
    format = "<b>%s</b>\\n%b"
    markup = full
    word_wrap = yes
    notification_limit = 6
    show_indicators = no
[urgency_low]
    background = "#1f2a1f"
    foreground = "#ffffff"
    timeout = 0
[urgency_normal]
    background = "#2b1f1f"
    foreground = "#ffffff"
    timeout = 0
[urgency_critical]
    background = "#550000"
    foreground = "#ffffff"
    timeout = 0
`,
  );
  const dunst = start('dunst', ['-config', path.join(dir, 'dunstrc')], env);
  await until(
    () => {
      const r = spawnSync(
        'dbus-send',
        [
          '--bus=' + busAddress,
          '--print-reply',
          '--dest=org.freedesktop.DBus',
          '/org/freedesktop/DBus',
          'org.freedesktop.DBus.NameHasOwner',
          'string:org.freedesktop.Notifications',
        ],
        { timeout: 2000 },
      );
      return /boolean true/.test(r.stdout?.toString() ?? '') ? true : undefined;
    },
    15_000,
    'dunst to own org.freedesktop.Notifications',
  );
  return {
    display,
    busAddress,
    notifyCalls: () => parseNotifyCalls(monitor.text()),
    screenshot: (file) => {
      const r = spawnSync('import', ['-display', display, '-window', 'root', file], { timeout: 20_000 });
      if (r.status !== 0) throw new Error(`import failed: ${String(r.stderr)}`);
    },
    stop: async () => {
      for (const p of [monitor, dunst, bus, x]) {
        if (p.exitCode === null && p.signalCode === null) {
          p.kill('SIGTERM');
          await Promise.race([new Promise((r) => p.once('exit', r)), new Promise((r) => setTimeout(r, 3000))]);
          if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
        }
      }
    },
  };
}
