/**
 * The fleet the console tests look at: a real SVM on port 0 with the console route, real agents
 * connected over lightagent/1, and the admin API (/api/) they feed. This is the ONE place that
 * chooses where /api/ comes from: until the inventory branch's admin API is on this branch, a
 * test double (`ApiDouble` below) serves the same JSON contract from what the agents sent
 * (hello, detection events) plus the protection states the agents' state reports will carry.
 */
import http from 'node:http';
import WebSocket from 'ws';
import type { SvmMessage } from '../../src/protocol/index.js';
import { consoleRoute } from '../../src/svm/console/console-route.js';
import type { DetectionSvmEvent } from '../../src/svm/events.js';
import type { HttpRoute, SvmServer } from '../../src/svm/server.js';
import { rawAgent, startTestSvm, type RawAgent } from '../svm/helpers.js';

export const ADMIN_TOKEN = 'admin-token-console-test';
export const VIEWER_B_TOKEN = 'viewer-b-token-console-test';
export const AGENT_TOKENS = { a: 'agent-token-tenant-a', b: 'agent-token-tenant-b' } as const;
export const XSS_HOST = '<img src=x onerror=alert(1)>';
export const SILENT_AFTER_SECONDS = 300;

export type State = 'protected' | 'degraded' | 'off' | 'unknown';

/** One agent of the test fleet: what it says in hello, and the state it reports. */
export interface FleetAgentSpec {
  tenant: 'a' | 'b';
  agentId: string;
  host: string;
  os?: 'linux' | 'windows';
  agentVersion?: string;
  state: State;
  reasons?: string[];
  /** Earlier states, oldest first, before `state`. */
  history?: Array<{ state: State; reasons: string[] }>;
  /** Disconnect after the hello and look silent (last seen an hour ago). */
  silent?: boolean;
  generationCurrent?: boolean;
  deferred?: number;
  cacheEntries?: number;
  hitRate?: number | null;
  policy?: { name: string; version: string } | null;
  /** Detections this agent reports over the wire: [threat, path, minutes ago]. */
  detections?: Array<[string, string, number]>;
}

export const FLEET: FleetAgentSpec[] = [
  {
    tenant: 'a',
    agentId: 'a-web-01',
    host: 'web-01.prod.example',
    state: 'protected',
    cacheEntries: 48211,
    hitRate: 0.973,
    policy: { name: 'servers', version: '7' },
    detections: [
      ['Eicar-Test-Signature', '/var/www/uploads/eicar.com', 5],
      ['Win.Trojan.Agent-1', '/tmp/x/payload.exe', 130],
    ],
  },
  {
    tenant: 'a',
    agentId: 'a-web-02',
    host: 'web-02.prod.example',
    state: 'protected',
    cacheEntries: 47002,
    hitRate: 0.968,
    policy: { name: 'servers', version: '7' },
  },
  {
    tenant: 'a',
    agentId: 'a-db-01',
    host: 'db-01.prod.example',
    state: 'degraded',
    reasons: ['svm-unreachable: scans deferred'],
    deferred: 37,
    history: [{ state: 'protected', reasons: [] }],
    generationCurrent: false,
    hitRate: 0.71,
    cacheEntries: 9120,
    policy: { name: 'servers', version: '6' },
  },
  {
    tenant: 'a',
    agentId: 'a-build-07',
    host: 'build-07.ci.example',
    state: 'off',
    reasons: ['fanotify unavailable', 'watcher stopped'],
    history: [
      { state: 'protected', reasons: [] },
      { state: 'degraded', reasons: ['watcher restarting'] },
    ],
    detections: [['Eicar-Test-Signature', '/home/ci/eicar.txt', 30]],
  },
  {
    tenant: 'a',
    agentId: 'a-xss',
    host: XSS_HOST,
    state: 'protected',
    detections: [['<script>alert(2)</script>', '/tmp/<b>bold</b>.bin', 65]],
  },
  {
    tenant: 'b',
    agentId: 'b-desk-01',
    host: 'desk-01.office.example',
    os: 'windows',
    agentVersion: '0.1.0',
    state: 'protected',
    policy: { name: 'desktops', version: '3' },
    detections: [['Eicar-Test-Signature', 'C:\\Users\\ann\\Downloads\\eicar.com', 200]],
  },
  { tenant: 'b', agentId: 'b-desk-02', host: 'desk-02.office.example', os: 'windows', state: 'protected', silent: true },
  {
    tenant: 'b',
    agentId: 'b-desk-03',
    host: 'desk-03.office.example',
    os: 'windows',
    state: 'degraded',
    reasons: ['signatures behind'],
    generationCurrent: false,
  },
];

export interface ConsoleFleet {
  svm: SvmServer;
  /** http://127.0.0.1:<port> */
  base: string;
  agents: RawAgent[];
  /** Which API is mounted: 'double' until the inventory's admin API is merged. */
  api: 'double' | 'inventory';
  close(): Promise<void>;
}

/** Start the SVM, mount the console and the admin API, connect `specs` as real agents. */
export async function startConsoleFleet(specs: FleetAgentSpec[] = FLEET): Promise<ConsoleFleet> {
  const svm = await startTestSvm({
    tokens: [
      { tenant: 'a', token: AGENT_TOKENS.a },
      { tenant: 'b', token: AGENT_TOKENS.b },
    ],
  });
  const double = new ApiDouble(svm, specs);
  svm.addRoute(consoleRoute());
  svm.addRoute(double.route);
  const agents: RawAgent[] = [];
  try {
    for (const s of specs) {
      const a = await rawAgent(svm.url, null, false);
      a.ws.send(
        JSON.stringify({
          t: 'hello',
          v: 1,
          agentId: s.agentId,
          token: AGENT_TOKENS[s.tenant],
          host: s.host,
          os: s.os ?? 'linux',
          agentVersion: s.agentVersion ?? '0.1.0',
        }),
      );
      await a.next((m: SvmMessage) => m.t === 'welcome');
      for (const [threat, path, minutesAgo] of s.detections ?? []) {
        const time = new Date(Date.now() - minutesAgo * 60_000).toISOString();
        a.ws.send(
          JSON.stringify({
            t: 'event',
            kind: 'detection',
            time,
            path,
            threat,
            action: 'quarantined',
            process: { pid: 4242, exe: '/usr/bin/curl', uid: 1000 },
          }),
        );
      }
      agents.push(a);
    }
    await double.waitForDetections(specs.reduce((n, s) => n + (s.detections?.length ?? 0), 0));
    double.observe();
    for (const [i, s] of specs.entries()) {
      if (!s.silent) continue;
      agents[i]!.ws.close(1000);
      await agents[i]!.closed;
    }
  } catch (e) {
    await svm.close();
    throw e;
  }
  return {
    svm,
    base: svm.httpUrl,
    agents,
    api: 'double',
    close: async () => {
      for (const a of agents) if (a.ws.readyState === WebSocket.OPEN) a.ws.close(1000);
      await svm.close();
    },
  };
}

interface Known {
  spec: FleetAgentSpec;
  firstSeen: string;
  lastSeen: string;
  history: Array<{ time: string; state: string; reasons: string[] }>;
}

/** The admin API contract of issue #24, answered from the agents the SVM saw. Test-only. */
class ApiDouble {
  private readonly detections: DetectionSvmEvent[] = [];
  private readonly known = new Map<string, Known>();
  private readonly started = Date.now();
  private readonly waiters: Array<() => void> = [];

  constructor(
    private readonly svm: SvmServer,
    private readonly specs: FleetAgentSpec[],
  ) {
    svm.core.events.subscribe((e) => {
      if (e.kind === 'detection') {
        this.detections.push(e);
        this.detections.sort((x, y) => Date.parse(y.time) - Date.parse(x.time));
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }

  async waitForDetections(n: number): Promise<void> {
    const end = Date.now() + 5000;
    while (this.detections.length < n) {
      if (Date.now() > end) throw new Error(`only ${this.detections.length} of ${n} detections reached the SVM`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  /** Note the agents connected now (what the inventory learns from their hello). */
  observe(): void {
    this.rows();
  }

  /** Every agent seen (connected now, or before: silent). */
  private rows() {
    const now = Date.now();
    const connected = new Set<string>();
    for (const s of this.svm.agentSessions) {
      const info = s.info;
      if (!info) continue;
      const key = `${info.tenant}/${info.agentId}`;
      connected.add(key);
      const spec = this.specs.find((x) => x.tenant === info.tenant && x.agentId === info.agentId);
      if (!spec) continue;
      if (!this.known.has(key)) {
        const hist = [...(spec.history ?? []), { state: spec.state, reasons: spec.reasons ?? [] }];
        this.known.set(key, {
          spec,
          firstSeen: new Date(now - 86_400_000 * 3).toISOString(),
          lastSeen: new Date(now).toISOString(),
          history: hist.map((h, i) => ({ time: new Date(now - (hist.length - 1 - i) * 3_600_000 * 5).toISOString(), ...h })).reverse(),
        });
      }
      if (!spec.silent) this.known.get(key)!.lastSeen = new Date(now).toISOString();
    }
    const gen = this.svm.core.generation();
    return [...this.known.entries()].map(([key, k]) => {
      const s = k.spec;
      const lastSeen = s.silent ? new Date(now - 3_600_000).toISOString() : k.lastSeen;
      const silent = now - Date.parse(lastSeen) > SILENT_AFTER_SECONDS * 1000;
      return {
        agentId: s.agentId,
        tenant: s.tenant,
        host: s.host,
        os: s.os ?? 'linux',
        agentVersion: s.agentVersion ?? '0.1.0',
        connected: connected.has(key),
        svmId: connected.has(key) ? this.svm.core.opts.svmId : null,
        firstSeen: k.firstSeen,
        lastSeen,
        silent,
        state: s.state,
        reasons: s.reasons ?? [],
        mode: 'fanotify',
        generation: s.generationCurrent === false ? 'builtin:0' : gen,
        generationCurrent: s.generationCurrent !== false,
        cache: { entries: s.cacheEntries ?? 1200, hitRate: s.hitRate === undefined ? 0.9 : s.hitRate },
        deferred: s.deferred ?? 0,
        detections: this.detections.filter((d) => d.tenant === s.tenant && d.agentId === s.agentId).length,
        policy: s.policy ?? null,
        history: k.history,
      };
    });
  }

  readonly route: HttpRoute = {
    prefix: '/api/',
    handle: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => {
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
        res.end(JSON.stringify(body));
      };
      const fail = (status: number, code: string, message: string) => send(status, { error: { code, message } });
      const auth = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      let who: { role: 'admin' | 'viewer'; tenant: string | null };
      if (auth === ADMIN_TOKEN) who = { role: 'admin', tenant: null };
      else if (auth === VIEWER_B_TOKEN) who = { role: 'viewer', tenant: 'b' };
      else if (auth && Object.values(AGENT_TOKENS).includes(auth as never))
        return fail(403, 'LA_ERR_ADMIN_FORBIDDEN', 'an agent token cannot use the admin API');
      else return fail(401, 'LA_ERR_ADMIN_AUTH', 'no or unknown admin token');
      const p = url.pathname.slice('/api/'.length);
      const q = url.searchParams;
      const mine = <T extends { tenant: string }>(xs: T[]) => xs.filter((x) => who.tenant === null || x.tenant === who.tenant);
      const rows = mine(this.rows());
      const stateOf = (r: (typeof rows)[number]) => (r.silent ? 'silent' : r.state);
      const counts = (xs: typeof rows) => ({
        agents: xs.length,
        protected: xs.filter((r) => stateOf(r) === 'protected').length,
        degraded: xs.filter((r) => stateOf(r) === 'degraded').length,
        off: xs.filter((r) => stateOf(r) === 'off').length,
        silent: xs.filter((r) => r.silent).length,
      });
      const strip = ({ history: _h, ...r }: (typeof rows)[number]) => r;
      if (p === 'whoami') return send(200, who);
      if (p === 'fleet') {
        const tenants = [...new Set(rows.map((r) => r.tenant))].sort();
        return send(200, {
          generatedAt: new Date().toISOString(),
          silentAfterSeconds: SILENT_AFTER_SECONDS,
          totals: counts(rows),
          tenants: tenants.map((t) => ({ tenant: t, ...counts(rows.filter((r) => r.tenant === t)) })),
        });
      }
      if (p === 'agents') {
        let xs = rows;
        if (q.get('tenant')) xs = xs.filter((r) => r.tenant === q.get('tenant'));
        if (q.get('state')) xs = xs.filter((r) => stateOf(r) === q.get('state'));
        const needle = (q.get('q') ?? '').toLowerCase();
        if (needle) xs = xs.filter((r) => r.host.toLowerCase().includes(needle) || r.agentId.toLowerCase().includes(needle));
        const key = (q.get('sort') ?? 'host') as 'host' | 'lastSeen' | 'state' | 'detections' | 'tenant';
        const dir = q.get('order') === 'desc' ? -1 : 1;
        xs = [...xs].sort((x, y) => {
          const a = key === 'state' ? stateOf(x) : x[key];
          const b = key === 'state' ? stateOf(y) : y[key];
          return (a < b ? -1 : a > b ? 1 : x.agentId < y.agentId ? -1 : 1) * dir;
        });
        const limit = Math.min(500, Math.max(1, Number(q.get('limit') ?? 100) || 100));
        const offset = Math.max(0, Number(q.get('offset') ?? 0) || 0);
        return send(200, { total: xs.length, agents: xs.slice(offset, offset + limit).map(strip) });
      }
      const one = /^agents\/([^/]+)\/([^/]+)$/.exec(p);
      if (one) {
        const [t, id] = [decodeURIComponent(one[1]!), decodeURIComponent(one[2]!)];
        const r = rows.find((x) => x.tenant === t && x.agentId === id);
        if (!r) return fail(404, 'LA_ERR_ADMIN_NOT_FOUND', 'no such agent');
        return send(200, {
          agent: strip(r),
          history: r.history,
          detections: this.detections.filter((d) => d.tenant === t && d.agentId === id),
        });
      }
      if (p === 'detections') {
        const ds = mine(this.detections);
        const limit = Math.min(1000, Math.max(1, Number(q.get('limit') ?? 100) || 100));
        return send(200, {
          total: ds.length,
          detections: ds.slice(0, limit).map((d) => ({ sha256: null, process: null, ...d, kind: undefined })),
        });
      }
      if (p === 'detections/timeline') {
        const hours = Math.min(720, Math.max(1, Number(q.get('hours') ?? 24) || 24));
        const end = Math.floor(Date.now() / 3_600_000) * 3_600_000 + 3_600_000;
        const buckets = Array.from({ length: hours }, (_, i) => ({
          start: new Date(end - (hours - i) * 3_600_000).toISOString(),
          count: 0,
        }));
        for (const d of mine(this.detections)) {
          const i = hours - Math.ceil((end - Date.parse(d.time)) / 3_600_000);
          if (i >= 0 && i < hours) buckets[i]!.count++;
        }
        return send(200, { bucketSeconds: 3600, buckets });
      }
      if (p === 'svm') {
        const h = this.svm.health();
        return send(200, {
          svmId: h.svmId,
          version: '0.1.0',
          engine: h.engine,
          engineHealthy: h.engineHealthy,
          generation: h.generation,
          signatureAgeSeconds: 2 * 86_400 + 3 * 3600,
          signaturesStale: true,
          cache: h.cache,
          load: 0.12,
          queue: 0,
          agentsConnected: h.agents,
          uptimeSeconds: Math.round((Date.now() - this.started) / 1000) + 3 * 86_400 + 4 * 3600,
          status: 'degraded',
        });
      }
      return fail(404, 'LA_ERR_ADMIN_NOT_FOUND', 'no such API');
    },
  };
}
