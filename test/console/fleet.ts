/**
 * The fleet the console tests look at: a real SVM on port 0 with the console route and its real
 * admin API (/api/, src/svm/admin over the inventory), and real agents connected over
 * lightagent/1 that speak feature state-report: hello, `state` reports (on change, then a
 * heartbeat every second) and detection `event`s. This is the ONE place that sets up where the
 * console's data comes from (it was a test double of the API until the inventory branch landed).
 */
import WebSocket from 'ws';
import type { StateReport } from '../../src/protocol/index.js';
import { consoleRoute } from '../../src/svm/console/console-route.js';
import type { SvmServer } from '../../src/svm/server.js';
import { PolicyBook } from '../../src/svm/policies.js';
import { startTestSvm } from '../svm/helpers.js';
import { api, stateAgent, type StateAgent } from '../svm/inventory-helpers.js';

export const ADMIN_TOKEN = 'admin-token-console-test';
export const VIEWER_B_TOKEN = 'viewer-b-token-console-test';
export const AGENT_TOKENS = { a: 'agent-token-tenant-a', b: 'agent-token-tenant-b' } as const;
export const XSS_HOST = '<img src=x onerror=alert(1)>';
/** Short, so that one agent turns silent during the test; the others send a heartbeat every second. */
export const SILENT_AFTER_MS = 5000;
const HEARTBEAT_MS = 1000;

export type State = 'protected' | 'degraded' | 'off';

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
  /** An older agent: no feature state-report, so no state (it shows as unknown); it only scans. */
  noStateReport?: boolean;
  /** Disconnect after its first reports and turn silent. */
  silent?: boolean;
  generationCurrent?: boolean;
  deferred?: number;
  cacheEntries?: number;
  /** Local cache hits and misses since start. */
  hits?: [number, number];
  /** What the agent says it runs; `current`: the policy the SVM has for it now (FLEET_POLICIES). */
  policy?: { name: string; version: string } | 'current' | null;
  /** Detections this agent reports over the wire: [threat, path, minutes ago]. */
  detections?: Array<[string, string, number]>;
}

/** The SVM's `policies:` (docs/policies.md): tenant a's servers with a group for the CI hosts, tenant b's desktops. */
export const FLEET_POLICIES = {
  a: {
    name: 'servers',
    deadline: '3s',
    exclude: { paths: ['/var/lib/postgresql/**'] },
    groups: [{ name: 'ci', hosts: ['build-*'], on_svm_unavailable: 'deny' }],
  },
  b: { name: 'desktops', on_detect: 'deny-and-kill' },
};
/** An older version of tenant a's policy, still run by an agent that has not heard the new one. */
export const OLD_SERVERS = { name: 'servers', version: '0badc0de0badc0de' };

export const FLEET: FleetAgentSpec[] = [
  {
    tenant: 'a',
    agentId: 'a-web-01',
    host: 'web-01.prod.example',
    state: 'protected',
    cacheEntries: 48211,
    hits: [973, 27],
    policy: 'current',
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
    hits: [968, 32],
    policy: 'current',
  },
  {
    tenant: 'a',
    agentId: 'a-db-01',
    host: 'db-01.prod.example',
    state: 'degraded',
    reasons: ['svm-unreachable', 'files-queued'],
    deferred: 37,
    history: [{ state: 'protected', reasons: [] }],
    generationCurrent: false,
    hits: [71, 29],
    cacheEntries: 9120,
    policy: OLD_SERVERS,
  },
  {
    tenant: 'a',
    agentId: 'a-build-07',
    host: 'build-07.ci.example',
    state: 'off',
    reasons: ['fanotify-unavailable', 'watcher-stopped'],
    history: [
      { state: 'protected', reasons: [] },
      { state: 'degraded', reasons: ['watcher-restarting'] },
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
  { tenant: 'a', agentId: 'a-legacy-01', host: 'legacy-01.prod.example', agentVersion: '0.0.9', state: 'protected', noStateReport: true },
  {
    tenant: 'b',
    agentId: 'b-desk-01',
    host: 'desk-01.office.example',
    os: 'windows',
    agentVersion: '0.1.0',
    state: 'protected',
    policy: 'current',
    detections: [['Eicar-Test-Signature', 'C:\\Users\\ann\\Downloads\\eicar.com', 200]],
  },
  { tenant: 'b', agentId: 'b-desk-02', host: 'desk-02.office.example', os: 'windows', state: 'protected', silent: true },
  {
    tenant: 'b',
    agentId: 'b-desk-03',
    host: 'desk-03.office.example',
    os: 'windows',
    state: 'degraded',
    reasons: ['signatures-behind'],
    generationCurrent: false,
  },
];

export interface ConsoleFleet {
  svm: SvmServer;
  /** http://127.0.0.1:<port> */
  base: string;
  agents: StateAgent[];
  close(): Promise<void>;
}

const report = (s: FleetAgentSpec, generation: string, state: State, reasons: string[]): Partial<StateReport> => ({
  mode: s.os === 'windows' ? 'windows' : 'fanotify',
  state,
  reasons,
  since: new Date().toISOString(),
  agentVersion: s.agentVersion ?? '0.1.0',
  os: s.os ?? 'linux',
  osRelease: s.os === 'windows' ? '10.0.22631' : '6.1.0-28-amd64',
  generation: s.generationCurrent === false ? 'builtin-0000000000000000' : generation,
  cache: { entries: s.cacheEntries ?? 1200, hits: s.hits?.[0] ?? 900, misses: s.hits?.[1] ?? 100 },
  deferred: s.deferred ?? 0,
  detections: s.detections?.length ?? 0,
  ...(s.policy === 'current' ? { policy: BOOK.resolve(s.tenant, s.agentId, s.host)! } : s.policy ? { policy: s.policy } : {}),
});
const BOOK = new PolicyBook(FLEET_POLICIES);

/** Start the SVM with the console and the admin API, connect `specs` as real agents, wait for the silent one. */
export async function startConsoleFleet(specs: FleetAgentSpec[] = FLEET): Promise<ConsoleFleet> {
  const svm = await startTestSvm({
    tokens: [
      { tenant: 'a', token: AGENT_TOKENS.a },
      { tenant: 'b', token: AGENT_TOKENS.b },
    ],
    adminTokens: [
      { role: 'admin', token: ADMIN_TOKEN },
      { role: 'viewer', tenant: 'b', token: VIEWER_B_TOKEN },
    ],
    inventory: { silentAfterMs: SILENT_AFTER_MS },
    version: '0.1.0',
    policies: FLEET_POLICIES,
  });
  svm.addRoute(consoleRoute());
  const agents: StateAgent[] = [];
  const heartbeats: NodeJS.Timeout[] = [];
  const stop = async () => {
    for (const h of heartbeats) clearInterval(h);
    for (const a of agents) if (a.ws.readyState === WebSocket.OPEN) a.ws.close(1000);
    await svm.close();
  };
  try {
    const gen = svm.core.generation();
    for (const s of specs) {
      const a = await stateAgent(svm.url, {
        token: AGENT_TOKENS[s.tenant],
        agentId: s.agentId,
        host: s.host,
        ...(s.noStateReport ? { features: [] } : {}),
      });
      agents.push(a);
      if (s.noStateReport) {
        // What such an agent sends while idle: lookups (any frame counts as heard).
        let id = 0;
        const lookup = () => a.ws.send(JSON.stringify({ t: 'lookup', id: ++id, sha256: 'cd'.repeat(32), size: 10 }));
        heartbeats.push(setInterval(() => a.ws.readyState === WebSocket.OPEN && lookup(), HEARTBEAT_MS));
        continue;
      }
      for (const h of s.history ?? []) a.state(report(s, gen, h.state, h.reasons));
      const last = report(s, gen, s.state, s.reasons ?? []);
      a.state(last);
      for (const [threat, path, minutesAgo] of s.detections ?? []) {
        const time = new Date(Date.now() - minutesAgo * 60_000).toISOString();
        a.detection({ time, path, threat, sha256: null, process: { pid: 4242, exe: '/usr/bin/curl', uid: 1000 } });
      }
      if (s.silent)
        await waitFor(
          svm,
          `agents/${s.tenant}/${s.agentId}`,
          (b) => b.agent.detections === (s.detections?.length ?? 0) && b.agent.state === s.state,
        );
      if (s.silent) await a.close();
      else heartbeats.push(setInterval(() => a.ws.readyState === WebSocket.OPEN && a.state(last), HEARTBEAT_MS));
    }
    const detections = specs.reduce((n, s) => n + (s.detections?.length ?? 0), 0);
    const silent = specs.filter((s) => s.silent).length;
    await waitFor(svm, 'fleet', (b) => b.totals.agents === specs.length && b.totals.silent === silent, SILENT_AFTER_MS + 10_000);
    await waitFor(svm, 'detections?limit=1000', (b) => b.total === detections);
  } catch (e) {
    await stop();
    throw e;
  }
  return { svm, base: svm.httpUrl, agents, close: stop };
}

/** Poll GET /api/<path> as admin until `ok` holds (bounded). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function waitFor(svm: SvmServer, path: string, ok: (body: any) => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    const r = await api(svm.httpUrl, `/api/${path}`, ADMIN_TOKEN);
    last = r.body;
    if (r.status === 200 && ok(r.body)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`GET /api/${path} did not reach the expected state within ${ms} ms: ${JSON.stringify(last).slice(0, 1000)}`);
}
