/**
 * A one-line progress bar for terminals (stderr): files, bytes, rate, ETA. Redraws at most
 * every 100 ms; prints nothing when stderr is not a TTY.
 */
import { formatBytes, formatDuration } from '../config/units.js';

export class ProgressBar {
  private last = 0;
  private readonly start = performance.now();
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly enabled: boolean = Boolean(process.stderr.isTTY),
  ) {}

  update(
    s: { files: number; totalFiles: number; bytes: number; totalBytes: number; totalKnown: boolean; infected: number },
    force = false,
  ): void {
    if (!this.enabled) return;
    const now = performance.now();
    if (!force && now - this.last < 100) return;
    this.last = now;
    const elapsed = (now - this.start) / 1000;
    const rate = elapsed > 0 ? s.bytes / elapsed : 0;
    const frac = s.totalBytes > 0 ? Math.min(1, s.bytes / s.totalBytes) : s.totalFiles > 0 ? s.files / s.totalFiles : 0;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(width - filled)}`;
    const eta = s.totalKnown && rate > 0 ? formatDuration(((s.totalBytes - s.bytes) / rate) * 1000) : '--';
    const pct = s.totalKnown ? `${Math.floor(frac * 100)}%` : '..%';
    const line =
      `[${bar}] ${pct} ${s.files}/${s.totalFiles}${s.totalKnown ? '' : '+'} files ` +
      `${formatBytes(s.bytes)}/${formatBytes(s.totalBytes)} ${formatBytes(rate)}/s ETA ` +
      `${eta}${s.infected ? ` infected: ${s.infected}` : ''}`;
    const cols = this.stream.columns || 100;
    this.stream.write(`\r${line.slice(0, cols - 1).padEnd(Math.min(cols - 1, line.length))}\x1b[K`);
    this.drawn = true;
  }

  done(): void {
    if (this.enabled && this.drawn) this.stream.write('\r\x1b[K');
  }
}
