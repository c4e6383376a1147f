/**
 * The SVM's SIEM export: every destination of `siem:` hears `core.events`, keeps the classes and
 * tenants it was given, formats each event once per format, and queues it on its own exporter.
 * Metrics per destination on the SVM's registry; the families exist with no destination too.
 */
import fs from 'node:fs';
import os from 'node:os';
import tls from 'node:tls';
import { ConfigError } from '../../errors.js';
import type { SvmEvent, SvmEventBus } from '../events.js';
import type { SvmMetrics } from '../metrics.js';
import { SiemExporter } from './exporter.js';
import { eventClass, eventTenant, formatEvent, type FormatOptions, type SiemEventClass, type SiemFormat } from './format.js';
import type { SiemProtocol } from './transport.js';

/** One `siem:` entry, as the config schema gives it (src/svm/config.ts). */
export interface SiemDestination {
  name: string;
  protocol: SiemProtocol;
  host: string;
  port: number;
  format: SiemFormat;
  events: readonly SiemEventClass[];
  /** Only these tenants' events (and those of every tenant: signatures); all when absent. */
  tenants?: readonly string[] | undefined;
  /** Paths of PEM files (tls only); `ca` pinned. */
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  buffer: { events: number; bytes: number };
  facility: number;
  appName: string;
  maxMessage: number;
}

export interface SiemExportOptions {
  /** HOSTNAME of every message (default os.hostname()). */
  hostname?: string;
  /** Where the destinations came from, for errors about their files. */
  source?: string;
  backoffMs?: { min: number; max: number };
  connectTimeoutMs?: number;
}

function readPem(d: SiemDestination, i: number, key: 'ca' | 'cert' | 'key', issues: string[]): Buffer | undefined {
  const file = d[key];
  if (!file) return undefined;
  try {
    const b = fs.readFileSync(file);
    if (b.length > 1 << 20) issues.push(`siem.${i}.${key}: ${file} is over 1 MiB; is it really a PEM file?`);
    else if (!b.includes('-----BEGIN ')) issues.push(`siem.${i}.${key}: ${file} is not PEM (no -----BEGIN line)`);
    return b;
  } catch (e) {
    issues.push(`siem.${i}.${key}: ${file}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    return undefined;
  }
}

interface Route {
  dest: SiemDestination;
  exporter: SiemExporter;
  format: FormatOptions;
  formatKey: string;
}

export class SiemExport {
  private readonly routes: Route[] = [];
  private unsubscribe: (() => void) | undefined;

  /** Reads the TLS files now: a ConfigError names every one that cannot be used. */
  constructor(
    destinations: readonly SiemDestination[],
    private readonly bus: SvmEventBus,
    metrics: SvmMetrics,
    o: SiemExportOptions = {},
  ) {
    const issues: string[] = [];
    const hostname = o.hostname ?? os.hostname();
    destinations.forEach((d, i) => {
      const ca = readPem(d, i, 'ca', issues);
      const cert = readPem(d, i, 'cert', issues);
      const key = readPem(d, i, 'key', issues);
      if (ca && !issues.length) {
        try {
          // Caught here, not on each connect: a key that does not match its certificate, a PEM that is not one.
          tls.createSecureContext({ ca, ...(cert && key ? { cert, key } : {}) });
        } catch (e) {
          issues.push(`siem.${i}: the TLS files cannot be used (${(e as Error).message}); check ca, cert and key`);
        }
      }
      const exporter = new SiemExporter({
        name: d.name,
        target: { protocol: d.protocol, host: d.host, port: d.port, ...(ca ? { tls: { ca, cert, key } } : {}) },
        maxEvents: d.buffer.events,
        maxBytes: d.buffer.bytes,
        ...(o.backoffMs ? { backoffMs: o.backoffMs } : {}),
        ...(o.connectTimeoutMs ? { connectTimeoutMs: o.connectTimeoutMs } : {}),
      });
      const format = { format: d.format, facility: d.facility, appName: d.appName, maxMessage: d.maxMessage, hostname };
      this.routes.push({ dest: d, exporter, format, formatKey: JSON.stringify(format) });
    });
    if (issues.length) throw new ConfigError(o.source ?? 'the SVM configuration', issues);
    const per = (read: (e: SiemExporter) => number) => () => Object.fromEntries(this.routes.map((r) => [r.dest.name, read(r.exporter)]));
    metrics.labelled(
      'lightagent_svm_siem_sent_total',
      'Events handed to the SIEM receiver (the kernel took them), by destination.',
      'counter',
      'destination',
      per((e) => e.sent),
    );
    metrics.labelled(
      'lightagent_svm_siem_dropped_total',
      'Events not delivered to the SIEM receiver, by destination: queue full (siem.buffer) while it was down or slow, a ' +
        'datagram refused, or still queued when the SVM stopped.',
      'counter',
      'destination',
      per((e) => e.dropped),
    );
    metrics.labelled(
      'lightagent_svm_siem_queue_events',
      'Events waiting for the SIEM receiver, by destination.',
      'gauge',
      'destination',
      per((e) => e.queuedEvents),
    );
    metrics.labelled(
      'lightagent_svm_siem_queue_bytes',
      'Bytes of events waiting for the SIEM receiver, by destination.',
      'gauge',
      'destination',
      per((e) => e.queuedBytes),
    );
    metrics.labelled(
      'lightagent_svm_siem_connected',
      'Is the SVM connected to the SIEM receiver (1) or not (0), by destination (udp: 1 once its socket is set up).',
      'gauge',
      'destination',
      per((e) => (e.connected ? 1 : 0)),
    );
  }

  get exporters(): readonly SiemExporter[] {
    return this.routes.map((r) => r.exporter);
  }

  /** Connect every destination and hear the bus. */
  start(): void {
    if (this.routes.length === 0 || this.unsubscribe) return;
    for (const r of this.routes) r.exporter.start();
    this.unsubscribe = this.bus.subscribe((e) => this.onEvent(e));
  }

  /** Stop hearing the bus, flush every destination for at most `flushMs` together, close. */
  async close(flushMs: number): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = undefined;
    await Promise.all(this.routes.map((r) => r.exporter.close(flushMs)));
  }

  private onEvent(e: SvmEvent): void {
    const cls = eventClass(e);
    const tenant = eventTenant(e);
    const formatted = new Map<string, Buffer>();
    for (const r of this.routes) {
      if (!r.dest.events.includes(cls)) continue;
      if (r.dest.tenants && tenant !== '*' && !r.dest.tenants.includes(tenant)) continue;
      let msg = formatted.get(r.formatKey);
      if (!msg) formatted.set(r.formatKey, (msg = formatEvent(e, r.format)));
      r.exporter.enqueue(tenant, msg);
    }
  }
}
