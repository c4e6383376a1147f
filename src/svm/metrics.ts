/**
 * Prometheus text exposition (version 0.0.4) without a client library: a handful of counters,
 * gauges and one histogram are all the SVM needs.
 */
export class Counter {
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
}

export class Gauge {
  constructor(readonly name: string, readonly help: string, private readonly read: () => number) {}
  get value(): number {
    return this.read();
  }
  render(): string {
    return `# HELP ${this.name} ${this.help}\n# TYPE ${this.name} gauge\n${this.name} ${this.read()}\n`;
  }
}

export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(readonly name: string, readonly help: string, private readonly buckets: readonly number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return `${lines.join('\n')}\n`;
  }
}

export class SvmMetrics {
  readonly bytesReceived = new Counter('lightagent_svm_bytes_received_total', 'File content bytes received from agents in uploads.');
  readonly scans = new Counter('lightagent_svm_scans_total', 'Files scanned by the engine (uploads not answered from the cache).');
  readonly cacheHits = new Counter('lightagent_svm_cache_hits_total', 'Requests answered from the shared verdict cache (lookups and uploads).');
  readonly lookups = new Counter('lightagent_svm_lookups_total', 'Lookups by SHA-256 received.');
  readonly uploads = new Counter('lightagent_svm_uploads_total', 'Uploads completed.');
  readonly detections = new Counter('lightagent_svm_detections_total', 'Infected verdicts given by the engine.');
  readonly agentEvents = new Counter('lightagent_svm_agent_detection_events_total', 'Detection events reported by agents.');
  readonly protocolErrors = new Counter('lightagent_svm_protocol_errors_total', 'Connections closed for a protocol error.');
  readonly authFailures = new Counter('lightagent_svm_auth_failures_total', 'Connections refused for a missing or unknown token.');
  readonly scanErrors = new Counter('lightagent_svm_scan_errors_total', 'Requests answered with an error verdict.');
  readonly scanSeconds = new Histogram('lightagent_svm_engine_scan_seconds', 'Engine scan time per file.', [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5]);
  private readonly gauges: Gauge[] = [];

  gauge(name: string, help: string, read: () => number): Gauge {
    const g = new Gauge(name, help, read);
    this.gauges.push(g);
    return g;
  }

  render(): string {
    const parts = [this.bytesReceived, this.scans, this.cacheHits, this.lookups, this.uploads, this.detections, this.agentEvents, this.protocolErrors, this.authFailures, this.scanErrors, this.scanSeconds, ...this.gauges];
    return parts.map((p) => p.render()).join('');
  }
}
