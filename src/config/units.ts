/** Human sizes and durations for config files and flags: `64 MiB`, `2s`, `500ms`, `1.5 GB`. */

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  '': 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1000 ** 4,
  tib: 1024 ** 4,
};
const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  '': 1000,
  s: 1000,
  sec: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** Bytes from a number (bytes) or a string like `64 MiB`. Returns undefined if it does not parse. */
export function parseSize(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
  if (!m) return undefined;
  const mult = SIZE_UNITS[m[2]!.toLowerCase()];
  if (mult === undefined) return undefined;
  const n = Math.round(Number(m[1]) * mult);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Milliseconds from a number (seconds, as in YAML `deadline: 2`) or a string like `2s`, `500ms`.
 * Undefined if it does not parse, or if the milliseconds are not a safe integer (`1e308` seconds
 * would otherwise become an Infinity deadline).
 */
export function parseDuration(v: unknown): number | undefined {
  let ms: number;
  if (typeof v === 'number') {
    if (!(v >= 0)) return undefined;
    ms = Math.round(v * 1000);
  } else {
    if (typeof v !== 'string') return undefined;
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v);
    if (!m) return undefined;
    const mult = DURATION_UNITS[m[2]!.toLowerCase()];
    if (mult === undefined) return undefined;
    ms = Math.round(Number(m[1]) * mult);
  }
  return Number.isSafeInteger(ms) ? ms : undefined;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${units[i]}`;
}

export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '--';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}
