/**
 * Prometheus text exposition (format 0.0.4) without a client library: a handful of counters,
 * gauges and one histogram are all the SVM needs. `snapshot()` gives the same figures as plain
 * numbers for tests and the CLI.
 */
type Labels = Readonly<Record<string, string>>;

function renderLabels(l: Labels, extra?: string): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  if (extra) parts.push(extra);
  return parts.length ? `{${parts.join(',')}}` : '';
}

interface Metric {
  readonly name: string;
  render(): string;
  snapshot(into: Record<string, number>): void;
}

export class Counter implements Metric {
  private v = 0;
  constructor(readonly name: string, readonly help: string) {}
  inc(n = 1): void {
    this.v += n;
  }
  get value(): number {
    return this.v;
  }
  render(): string {
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} counter\n${this.name} ${this.v}\n`;
  }
  snapshot(into: Record<string, number>): void {
    into[this.name] = this.v;
  }
}

/** A value read when scraped: a gauge, or a counter kept by someone else (cache evictions). */
export class Sampled implements Metric {
  constructor(readonly name: string, readonly help: string, private readonly type: 'gauge' | 'counter', private readonly read: () => number) {}
  get value(): number {
    return this.read();
  }
  render(): string {
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${this.type}\n${this.name} ${this.read()}\n`;
  }
  snapshot(into: Record<string, number>): void {
    into[this.name] = this.read();
  }
}

/** A family read when scraped, one sample per label value (agents by tenant, cache hits by tier). */
export class LabelledSampled implements Metric {
  constructor(readonly name: string, readonly help: string, private readonly type: 'gauge' | 'counter', private readonly label: string, private readonly read: () => Readonly<Record<string, number>>) {}
  render(): string {
    const rows = Object.entries(this.read()).map(([k, v]) => `${this.name}${renderLabels({ [this.label]: k })} ${v}\n`);
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} ${this.type}\n${rows.join('')}`;
  }
  snapshot(into: Record<string, number>): void {
    for (const [k, v] of Object.entries(this.read())) into[`${this.name}{${this.label}="${k}"}`] = v;
  }
}

export class Histogram implements Metric {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(readonly name: string, readonly help: string, private readonly buckets: readonly number[], private readonly labels: Labels = {}) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
  render(): string {
    const l = this.labels;
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${renderLabels(l, `le="${b}"`)} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket${renderLabels(l, 'le="+Inf"')} ${this.count}`, `${this.name}_sum${renderLabels(l)} ${this.sum}`, `${this.name}_count${renderLabels(l)} ${this.count}`);
    return `${lines.join('\n')}\n`;
  }
  snapshot(into: Record<string, number>): void {
    into[`${this.name}_count`] = this.count;
    into[`${this.name}_sum`] = this.sum;
  }
}

/** Every figure by its Prometheus name (histograms as `_count` and `_sum`). */
export type MetricsSnapshot = Readonly<Record<string, number>>;

export class SvmMetrics {
  readonly bytesReceived = new Counter('lightagent_svm_bytes_received_total', 'File content bytes received from agents in uploads.');
  readonly scans = new Counter('lightagent_svm_scans_total', 'Files scanned by the engine (uploads not answered from the cache).');
  readonly cacheHits = new Counter('lightagent_svm_cache_hits_total', 'Requests answered from the shared verdict cache or a scan of the same content in progress.');
  readonly lookups = new Counter('lightagent_svm_lookups_total', 'Lookups by SHA-256 received.');
  readonly uploads = new Counter('lightagent_svm_uploads_total', 'Uploads received completely.');
  readonly detections = new Counter('lightagent_svm_detections_total', 'Infected verdicts given by the engine.');
  readonly agentEvents = new Counter('lightagent_svm_agent_detection_events_total', 'Detection events reported by agents.');
  readonly protocolErrors = new Counter('lightagent_svm_protocol_errors_total', 'Connections closed for a protocol error.');
  readonly authFailures = new Counter('lightagent_svm_auth_failures_total', 'Connections refused for a missing or unknown token.');
  readonly tlsFailures = new Counter('lightagent_svm_tls_failures_total', 'TLS handshakes that failed (no or bad agent certificate, agent distrusts our certificate).');
  readonly scanErrors = new Counter('lightagent_svm_scan_errors_total', 'Requests answered with an error verdict (too large, busy, timeout, engine failure).');
  readonly scanSeconds: Histogram;
  readonly bytesScanned = new Counter('lightagent_svm_bytes_scanned_total', 'File content bytes given to the engine (uploads answered from the cache are not counted).');
  readonly busy = new Counter('lightagent_svm_uploads_busy_total', 'Uploads refused or dropped with LA_ERR_BUSY: the agent, its tenant or the SVM had its upload memory share in use, or the agent its uploads_per_agent; the agent retries later.');
  readonly rateLimited = new Counter('lightagent_svm_rate_limited_total', 'Requests refused with LA_ERR_RATE_LIMITED (an agent over its request rate or its queue bound).');
  private readonly sampled: Metric[] = [];

  constructor(engine: string) {
    this.scanSeconds = new Histogram('lightagent_svm_engine_scan_seconds', 'Engine scan time per file.', [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], { engine });
  }

  gauge(name: string, help: string, read: () => number): void {
    this.sampled.push(new Sampled(name, help, 'gauge', read));
  }

  counter(name: string, help: string, read: () => number): void {
    this.sampled.push(new Sampled(name, help, 'counter', read));
  }

  labelled(name: string, help: string, type: 'gauge' | 'counter', label: string, read: () => Readonly<Record<string, number>>): void {
    this.sampled.push(new LabelledSampled(name, help, type, label, read));
  }

  /** Another histogram (e.g. queue wait), rendered with the rest. */
  histogram(h: Histogram): Histogram {
    this.sampled.push(h);
    return h;
  }

  private all(): Metric[] {
    return [this.bytesReceived, this.scans, this.cacheHits, this.lookups, this.uploads, this.detections, this.agentEvents, this.protocolErrors, this.authFailures, this.tlsFailures, this.scanErrors, this.bytesScanned, this.rateLimited, this.busy, this.scanSeconds, ...this.sampled];
  }

  render(): string {
    return this.all().map((m) => m.render()).join('');
  }

  snapshot(): MetricsSnapshot {
    const out: Record<string, number> = {};
    for (const m of this.all()) m.snapshot(out);
    return Object.freeze(out);
  }
}
