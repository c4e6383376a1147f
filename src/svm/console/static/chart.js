// The detections timeline: one SVG bar per bucket, drawn here (no chart library).
import { html } from './vendor-html.js';

const W = 960;
const H = 220;
const PAD = { left: 40, right: 8, top: 12, bottom: 28 };

const hh = (iso) => {
  const d = new Date(iso);
  return `${String(d.getHours()).padStart(2, '0')}:00`;
};

/** Bars for `buckets` ([{start, count}]); an empty period says so instead of drawing nothing. */
export function TimelineChart({ buckets, bucketSeconds }) {
  const n = buckets.length;
  const max = Math.max(1, ...buckets.map((b) => b.count));
  const total = buckets.reduce((s, b) => s + b.count, 0);
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const slot = n ? iw / n : iw;
  const bw = Math.max(1, slot * 0.8);
  const labelEvery = Math.max(1, Math.ceil(n / 12));
  const unit = bucketSeconds === 3600 ? 'hour' : `${bucketSeconds} s`;
  const y = (v) => PAD.top + ih - (v / max) * ih;
  return html`<figure class="chart">
    <svg viewBox=${`0 0 ${W} ${H}`} role="img" aria-label=${`${total} detections in ${n} buckets of one ${unit}`} data-test="timeline">
      <line class="axis" x1=${PAD.left} y1=${PAD.top + ih} x2=${W - PAD.right} y2=${PAD.top + ih} />
      <line class="gridline" x1=${PAD.left} y1=${y(max)} x2=${W - PAD.right} y2=${y(max)} />
      <text class="tick" x=${PAD.left - 6} y=${y(max) + 4} text-anchor="end">${max}</text>
      <text class="tick" x=${PAD.left - 6} y=${PAD.top + ih + 4} text-anchor="end">0</text>
      ${buckets.map((b, i) => {
        const x = PAD.left + i * slot + (slot - bw) / 2;
        const top = y(b.count);
        return html`<g key=${b.start}>
          <rect
            class=${b.count ? 'bar' : 'bar zero'}
            x=${x}
            y=${b.count ? top : PAD.top + ih - 1}
            width=${bw}
            height=${b.count ? PAD.top + ih - top : 1}
            data-count=${b.count}
            data-start=${b.start}
          >
            <title>${`${hh(b.start)}: ${b.count} detection${b.count === 1 ? '' : 's'}`}</title>
          </rect>
          ${i % labelEvery === 0 ? html`<text class="tick" x=${x + bw / 2} y=${H - 8} text-anchor="middle">${hh(b.start)}</text>` : null}
        </g>`;
      })}
    </svg>
    <figcaption>
      ${total ? `${total} detection${total === 1 ? '' : 's'}, per ${unit} (local time)` : 'No detections in this period.'}
    </figcaption>
  </figure>`;
}
