/**
 * The SVM's Prometheus metrics, served through prom-client. Each SVM has its own registry (one
 * process may run several SVMs: the tests do), so nothing goes through prom-client's global
 * default registry. What the SVM counts is kept in plain numbers that the registry reads when
 * scraped; `snapshot()` gives the same figures synchronously, for tests and the CLI.
 *
 * Label values are bounded: engine names and tiers are ours, tenants come from the SVM's own
 * token configuration, never from what an agent sends.
 */
import { collectDefaultMetrics, Counter as PromCounter, Gauge as PromGauge, Histogram as PromHistogram, Registry } from 'prom-client';
import { logger } from '../log.js';

type Labels = Readonly<Record<string, string>>;

/** Every figure by its Prometheus name (histograms as `_count` and `_sum`, labelled series as `name{label="value"}`). */
export type MetricsSnapshot = Readonly<Record<string, number>>;

/** A count the SVM keeps; the registry reads it when scraped. */
export class Counter {
  private v = 0;
  inc(n = 1): void {
    this.v += n;
  }
  get value(): number {
    return this.v;
  }
}

/** One series of a histogram (fixed label values). Keeps count and sum for snapshot(). */
export class Timing {
  private n = 0;
  private total = 0;
  constructor(
    private readonly h: PromHistogram,
    private readonly labels: Labels,
    readonly key: string,
  ) {
    // Buckets of 0 from the start, as a series that has seen nothing yet still exists.
    h.zero(labels);
  }
  observe(seconds: number): void {
    this.n++;
    this.total += seconds;
    this.h.observe(this.labels, seconds);
  }
  get count(): number {
    return this.n;
  }
  get sum(): number {
    return this.total;
  }
}

/**
 * Process metrics (CPU, memory, heap, event-loop lag, GC, file descriptors) describe the process,
 * not one SVM, and prom-client's collectors for them (an event-loop delay monitor, a GC
 * observer) cannot be stopped once started: so one set per process, shared by every SVM in it.
 */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

const log = logger('svm-metrics');
const failedReads = new Set<string>();

/** A read that throws leaves the previous sample (a counter must not drop to 0); logged once per metric. */
function tryRead<T>(name: string, read: () => T): T | undefined {
  try {
    return read();
  } catch (e) {
    if (!failedReads.has(name)) log.warn('cannot read a metric; its last value stays', { metric: name, message: (e as Error).message });
    failedReads.add(name);
    return undefined;
  }
}

const validCount = (v: number) => Number.isFinite(v) && v >= 0;

export class SvmMetrics {
  readonly contentType = Registry.PROMETHEUS_CONTENT_TYPE;
  private readonly registry = new Registry();
  private readonly readers: Array<(into: Record<string, number>) => void> = [];

  readonly bytesReceived = this.count('lightagent_svm_bytes_received_total', 'File content bytes received from agents in uploads.');
  readonly scans = this.count('lightagent_svm_scans_total', 'Files scanned by the engine (uploads not answered from the cache).');
  readonly cacheHits = this.count(
    'lightagent_svm_cache_hits_total',
    'Requests answered from the shared verdict cache or a scan of the same content in progress.',
  );
  readonly lookups = this.count('lightagent_svm_lookups_total', 'Lookups by SHA-256 received (a batch counts each of its hashes).');
  readonly lookupBatches = this.count('lightagent_svm_lookup_batches_total', 'Batches of lookups received (feature lookup-batch).');
  readonly uploads = this.count('lightagent_svm_uploads_total', 'Uploads received completely.');
  readonly detections = this.count('lightagent_svm_detections_total', 'Infected verdicts given by the engine.');
  readonly agentEvents = this.count('lightagent_svm_agent_detection_events_total', 'Detection events reported by agents.');
  readonly protocolErrors = this.count('lightagent_svm_protocol_errors_total', 'Connections closed for a protocol error.');
  readonly authFailures = this.count('lightagent_svm_auth_failures_total', 'Connections refused for a missing or unknown token.');
  readonly tlsFailures = this.count(
    'lightagent_svm_tls_failures_total',
    'TLS handshakes that failed (no or bad agent certificate, agent distrusts our certificate).',
  );
  readonly scanErrors = this.count(
    'lightagent_svm_scan_errors_total',
    'Requests answered with an error verdict (too large, busy, timeout, engine failure).',
  );
  readonly bytesScanned = this.count(
    'lightagent_svm_bytes_scanned_total',
    'File content bytes given to the engine (uploads answered from the cache are not counted).',
  );
  readonly rateLimited = this.count(
    'lightagent_svm_rate_limited_total',
    'Requests refused with LA_ERR_RATE_LIMITED (an agent over its request rate or its queue bound).',
  );
  readonly busy = this.count(
    'lightagent_svm_uploads_busy_total',
    'Uploads refused or dropped with LA_ERR_BUSY: the agent, its tenant or the SVM had its upload memory share in use, or ' +
      'the agent already had uploads_per_agent uploads receiving; the agent retries later.',
  );
  readonly busyHolds = this.count(
    'lightagent_svm_busy_holds_total',
    'Connections not read for a while (20 ms, doubling to 1 s while refused again) after an upload of theirs was refused ' +
      'with LA_ERR_BUSY: an agent that reopens uploads as fast as they are refused waits in TCP, not in the SVM.',
  );
  readonly duplicateAgentIds = this.count(
    'lightagent_svm_duplicate_agent_ids_total',
    'Hellos with an agent id that another connection of the same tenant already uses (a clone of a template that was not ' +
      'sealed and whose machine facts did not change; docs/vdi.md).',
  );
  readonly scanSeconds: Timing;
  /** SVM time per answered request, from the lookup frame or the last upload chunk to the verdict. */
  readonly lookupSeconds: Timing;
  readonly uploadSeconds: Timing;

  constructor(engine: string) {
    this.scanSeconds = this.histogram(
      'lightagent_svm_engine_scan_seconds',
      'Engine scan time per file.',
      [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      ['engine'],
    )({ engine });
    const verdict = this.histogram(
      'lightagent_svm_verdict_seconds',
      'Time from a request complete on the SVM (a lookup, or the last chunk of an upload) to its verdict sent, by kind: ' +
        'lookup or scan. Includes cache, queue wait and engine; not the upload transfer.',
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      ['kind'],
    );
    this.lookupSeconds = verdict({ kind: 'lookup' });
    this.uploadSeconds = verdict({ kind: 'scan' });
    processMetrics();
  }

  private count(name: string, help: string): Counter {
    const c = new Counter();
    this.counter(name, help, () => c.value);
    return c;
  }

  /** A gauge read when scraped. */
  gauge(name: string, help: string, read: () => number): void {
    new PromGauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        const v = tryRead(name, read);
        if (v !== undefined && Number.isFinite(v)) this.set(v);
      },
    });
    this.readers.push((into) => (into[name] = read()));
  }

  /** A counter kept elsewhere (cache evictions), read when scraped. */
  counter(name: string, help: string, read: () => number): void {
    new PromCounter({
      name,
      help,
      registers: [this.registry],
      collect() {
        const v = tryRead(name, read);
        if (v === undefined || !validCount(v)) return;
        this.reset();
        this.inc(v);
      },
    });
    this.readers.push((into) => (into[name] = read()));
  }

  /** A family read when scraped, one series per value of `label` (agents by tenant, cache hits by tier). */
  labelled(name: string, help: string, type: 'gauge' | 'counter', label: string, read: () => Readonly<Record<string, number>>): void {
    const fill = (rows: Readonly<Record<string, number>>, put: (labels: Labels, v: number) => void) => {
      for (const [k, v] of Object.entries(rows)) if (type === 'counter' ? validCount(v) : Number.isFinite(v)) put({ [label]: k }, v);
    };
    const opts = { name, help, labelNames: [label], registers: [this.registry] };
    if (type === 'gauge') {
      new PromGauge({
        ...opts,
        collect() {
          const rows = tryRead(name, read);
          if (!rows) return;
          this.reset(); // a tenant with no agent left has no series, not a stale one
          fill(rows, (l, v) => this.set(l, v));
        },
      });
    } else {
      new PromCounter({
        ...opts,
        collect() {
          const rows = tryRead(name, read);
          if (!rows) return;
          this.reset();
          fill(rows, (l, v) => this.inc(l, v));
        },
      });
    }
    this.readers.push((into) => {
      for (const [k, v] of Object.entries(read())) into[`${name}{${label}="${k}"}`] = v;
    });
  }

  /**
   * A gauge family read when scraped, with several labels: one [labels, value] per series
   * (inventory by tenant and state). `refresh`, awaited first at a scrape, brings the figures up to date.
   */
  rows(
    name: string,
    help: string,
    labelNames: readonly string[],
    read: () => ReadonlyArray<readonly [Labels, number]>,
    refresh?: () => Promise<unknown>,
  ): void {
    new PromGauge({
      name,
      help,
      labelNames: [...labelNames],
      registers: [this.registry],
      async collect() {
        await refresh?.().catch(() => {});
        const rows = tryRead(name, read);
        if (!rows) return;
        this.reset();
        for (const [l, v] of rows) if (Number.isFinite(v)) this.set(l, v);
      },
    });
    this.readers.push((into) => {
      for (const [l, v] of read())
        into[
          `${name}{${Object.entries(l)
            .map(([k, x]) => `${k}="${x}"`)
            .join(',')}}`
        ] = v;
    });
  }

  /** A histogram family; call the result with label values for one series. */
  histogram(name: string, help: string, buckets: readonly number[], labelNames: readonly string[]): (labels: Labels) => Timing {
    const h = new PromHistogram({ name, help, buckets: [...buckets], labelNames: [...labelNames], registers: [this.registry] });
    return (labels) => {
      const key = Object.entries(labels)
        .map(([k, v]) => `${k}="${v}"`)
        .join(',');
      const t = new Timing(h, labels, key ? `{${key}}` : '');
      this.readers.push((into) => {
        into[`${name}_count${t.key}`] = t.count;
        into[`${name}_sum${t.key}`] = t.sum;
      });
      return t;
    };
  }

  /** The text exposition (format 0.0.4): this SVM's metrics, then the process's. */
  async render(): Promise<string> {
    const [own, proc] = await Promise.all([this.registry.metrics(), processMetrics().metrics()]);
    // prom-client puts a blank line between families; the format allows it, but line-based readers trip on it.
    return `${own}${proc}`.replace(/\n{2,}/g, '\n');
  }

  snapshot(): MetricsSnapshot {
    const out: Record<string, number> = {};
    for (const r of this.readers) r(out);
    return Object.freeze(out);
  }
}
