/**
 * A grouped bar chart as SVG, written by hand (no dependencies): one group per workload, one bar
 * per variant, bar height = ratio of medians to no agent on a log scale, 1x drawn as a line.
 */

export interface ChartSeries {
  name: string;
  color: string;
  /** ratio per category; undefined = not measured */
  values: Array<number | undefined>;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function ratioChartSvg(o: { title: string; subtitle: string; categories: string[]; series: ChartSeries[] }): string {
  const W = Math.max(760, 90 + o.categories.length * (30 + o.series.length * 34));
  const H = 440;
  const left = 64;
  const right = 16;
  const top = 78;
  const bottom = 70;
  const plotW = W - left - right;
  const plotH = H - top - bottom;
  const all = o.series.flatMap((s) => s.values).filter((v): v is number => v !== undefined && Number.isFinite(v) && v > 0);
  const ticks = [0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100, 200];
  const maxV = Math.max(2, ...all) * 1.15;
  const minV = Math.min(0.8, ...all) * 0.9;
  const lo = Math.log(minV);
  const hi = Math.log(maxV);
  const y = (v: number) => top + plotH - ((Math.log(v) - lo) / (hi - lo)) * plotH;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, Arial, sans-serif">`,
  );
  parts.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  parts.push(`<text x="${left}" y="26" font-size="17" font-weight="bold" fill="#111">${esc(o.title)}</text>`);
  parts.push(`<text x="${left}" y="46" font-size="12" fill="#444">${esc(o.subtitle)}</text>`);
  // legend
  let lx = left;
  for (const s of o.series) {
    parts.push(
      `<rect x="${lx}" y="56" width="12" height="12" fill="${s.color}"/><text x="${lx + 17}" y="66" font-size="12" fill="#111">${esc(s.name)}</text>`,
    );
    lx += 30 + s.name.length * 7.5;
  }
  parts.push(
    `<line x1="${lx}" y1="62" x2="${lx + 22}" y2="62" stroke="#111" stroke-width="2"/><text x="${lx + 27}" y="66" font-size="12" fill="#111">no agent = 1x</text>`,
  );
  // grid
  for (const t of ticks) {
    if (t < minV || t > maxV) continue;
    const yy = y(t);
    parts.push(`<line x1="${left}" y1="${yy}" x2="${W - right}" y2="${yy}" stroke="#ddd" stroke-width="1"/>`);
    parts.push(`<text x="${left - 6}" y="${yy + 4}" font-size="11" text-anchor="end" fill="#555">${t}x</text>`);
  }
  parts.push(
    `<text transform="translate(16 ${top + plotH / 2}) rotate(-90)" font-size="12" text-anchor="middle" fill="#333">time / time with no agent (median, log scale)</text>`,
  );
  // bars
  const groupW = plotW / o.categories.length;
  const barW = Math.min(34, (groupW - 18) / o.series.length);
  const base = y(1); // bars grow from 1x: up when slower than no agent, down when faster
  o.categories.forEach((cat, i) => {
    const gx = left + i * groupW + (groupW - barW * o.series.length) / 2;
    o.series.forEach((s, j) => {
      const v = s.values[i];
      const x = gx + j * barW;
      if (v === undefined || !Number.isFinite(v) || v <= 0) {
        parts.push(`<text x="${x + barW / 2}" y="${y(1) - 4}" font-size="10" text-anchor="middle" fill="#999">n/a</text>`);
        return;
      }
      const yy = y(v);
      parts.push(
        `<rect x="${x + 1}" y="${Math.min(yy, base)}" width="${barW - 2}" height="${Math.max(1, Math.abs(base - yy))}" fill="${s.color}"/>`,
      );
      const label = v >= 10 ? v.toFixed(0) : v.toFixed(2);
      parts.push(
        `<text x="${x + barW / 2}" y="${v >= 1 ? yy - 4 : yy + 12}" font-size="10" text-anchor="middle" fill="#111">${label}</text>`,
      );
    });
    parts.push(
      `<text x="${left + i * groupW + groupW / 2}" y="${top + plotH + 18}" font-size="12" text-anchor="middle" fill="#111">${esc(cat)}</text>`,
    );
  });
  parts.push(`<line x1="${left}" y1="${y(1)}" x2="${W - right}" y2="${y(1)}" stroke="#111" stroke-width="2"/>`);
  parts.push(`<line x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#333"/>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
