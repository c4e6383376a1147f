/**
 * The admin API: JSON over GET on the SVM's port (same TLS), mounted at /api/ with
 * SvmServer.addRoute. The contract is docs/console.md; the web console is built against it.
 *
 *   GET /api/whoami | /api/fleet | /api/agents | /api/agents/<tenant>/<agentId> | /api/detections |
 *       /api/detections/timeline | /api/svm | /api/policies
 *   POST /api/agents/<tenant>/<agentId>/scan | /api/scans   (admin tokens only: scan-api.ts)
 *
 * Every request needs `Authorization: Bearer <admin or viewer token>` (auth.ts): none or unknown
 * 401, an agent token 403. A viewer sees its own tenant only: another tenant's rows are filtered
 * out of lists and its agents are 404, never 403 (no oracle for what exists). GET and HEAD, and POST
 * for scans.
 * Query values are checked, each bad one answered 400 naming the parameter. Responses are JSON
 * with `<`, `>` and `&` escaped, `cache-control: no-store`, `x-content-type-options: nosniff`.
 */
import type http from 'node:http';
import { describeError } from '../../errors.js';
import { logger } from '../../log.js';
import type { TokenStore } from '../tokens.js';
import { countRows, emptyCounts, type AgentView, type Counts, type Inventory } from '../inventory/inventory.js';
import type { DetectionRecord, StoredAgent } from '../inventory/types.js';
import { authenticate, type AdminIdentity, type AdminTokenStore } from './auth.js';
import type { ScanCommands } from '../scan-commands.js';
import { handleScanPost } from './scan-api.js';

export interface SvmInfo {
  svmId: string;
  version: string;
  engine: string;
  engineHealthy: boolean;
  generation: string;
  signatureAgeSeconds: number | null;
  signaturesStale: boolean;
  cache: { kind: string; healthy: boolean; entries: number };
  load: number;
  queue: number;
  agentsConnected: number;
  uptimeSeconds: number;
  status: 'ok' | 'degraded' | 'unhealthy';
}

export interface AdminApiDeps {
  inventory: Inventory;
  admins: AdminTokenStore;
  agentTokens: TokenStore;
  /** The SVM's generation now (AgentRow.generationCurrent). */
  generation: () => string;
  svm: () => SvmInfo;
  /** The policy an agent should run now (src/svm/policies.ts); absent: none. */
  policyFor?: (tenant: string, agentId: string, host: string) => PolicyRef | undefined;
  /** Every policy of the tenants given (all when undefined), with its settings as written. */
  policies?: (tenant: string | undefined) => PolicyInfo[];
  /** Scan commands (POST, admin tokens only: scan-api.ts); absent: read only. */
  scans?: ScanCommands | undefined;
  now?: () => number;
}

export interface PolicyRef {
  name: string;
  version: string;
}
export interface PolicyInfo extends PolicyRef {
  tenant: string;
  /** null: the tenant's own policy; else the group's name. */
  group: string | null;
  settings: Record<string, unknown>;
}

/** An agent row with the policy it should run, and whether it runs that one. */
export type AgentPolicyView = AgentView & { policyExpected: PolicyRef | null; policyCurrent: boolean };

/** What SvmServer.addRoute takes (server.ts HttpRoute; not imported: the server imports this file). */
export interface AdminRoute {
  readonly prefix: string;
  handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void>;
}

const MAX_URL = 4096;
const TENANT = /^[A-Za-z0-9._-]{1,64}$/;
const STATES = ['protected', 'degraded', 'off', 'silent'] as const;
const SORTS = ['host', 'lastSeen', 'state', 'detections', 'tenant'] as const;

class BadRequest extends Error {
  constructor(
    readonly parameter: string,
    message: string,
  ) {
    super(message);
  }
}

/** JSON with <, >, & escaped: data stays data even if someone pastes it into HTML. */
function json(v: unknown): string {
  return JSON.stringify(v).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function one(url: URL, name: string): string | undefined {
  const all = url.searchParams.getAll(name);
  if (all.length > 1) throw new BadRequest(name, `${name} is given ${all.length} times`);
  const v = all[0];
  return v === undefined || v === '' ? undefined : v;
}

function intParam(url: URL, name: string, min: number, max: number, dflt: number): number {
  const v = one(url, name);
  if (v === undefined) return dflt;
  if (!/^\d{1,9}$/.test(v) || Number(v) < min || Number(v) > max)
    throw new BadRequest(name, `${name} must be an integer from ${min} to ${max}`);
  return Number(v);
}

function enumParam<T extends string>(url: URL, name: string, allowed: readonly T[]): T | undefined {
  const v = one(url, name);
  if (v === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(v)) throw new BadRequest(name, `${name} must be one of ${allowed.join(', ')}`);
  return v as T;
}

function tenantParam(url: URL, name = 'tenant'): string | undefined {
  const v = one(url, name);
  if (v !== undefined && !TENANT.test(v)) throw new BadRequest(name, `${name} must be a tenant name (letters, digits, . _ -, at most 64)`);
  return v;
}

function strParam(url: URL, name: string, max: number): string | undefined {
  const v = one(url, name);
  if (v !== undefined && v.length > max) throw new BadRequest(name, `${name} must be at most ${max} characters`);
  return v;
}

function timeParam(url: URL, name: string): number | undefined {
  const v = one(url, name);
  if (v === undefined) return undefined;
  const t = v.length <= 64 && /^\d{4}-\d{2}-\d{2}/.test(v) ? Date.parse(v) : NaN;
  if (!Number.isFinite(t)) throw new BadRequest(name, `${name} must be an ISO 8601 time, e.g. 2026-01-31T12:00:00Z`);
  return t;
}

const stateOf = (v: AgentView): string => (v.silent ? 'silent' : v.state);

export function createAdminApi(d: AdminApiDeps): AdminRoute {
  const log = logger('svm-admin');
  const now = d.now ?? Date.now;

  const visible = (who: AdminIdentity, rows: StoredAgent[]) => (who.tenant === null ? rows : rows.filter((r) => r.tenant === who.tenant));
  const withPolicy = (v: AgentView): AgentPolicyView => {
    const want = d.policyFor?.(v.tenant, v.agentId, v.host);
    return {
      ...v,
      policyExpected: want ? { name: want.name, version: want.version } : null,
      policyCurrent: want ? v.policy?.version === want.version && v.policy.name === want.name : v.policy === null,
    };
  };

  async function fleet(who: AdminIdentity) {
    const t = now();
    const rows = visible(who, await d.inventory.rows());
    const by = new Map<string, StoredAgent[]>();
    for (const r of rows) by.set(r.tenant, [...(by.get(r.tenant) ?? []), r]);
    const tenants: Array<{ tenant: string } & Counts> = [...by.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([tenant, rs]) => ({ tenant, ...countRows(rs, t, d.inventory.silentAfterMs) }));
    if (who.tenant !== null && !by.has(who.tenant)) tenants.push({ tenant: who.tenant, ...emptyCounts() });
    return {
      generatedAt: new Date(t).toISOString(),
      silentAfterSeconds: Math.round(d.inventory.silentAfterMs / 1000),
      totals: countRows(rows, t, d.inventory.silentAfterMs),
      tenants,
    };
  }

  async function agents(who: AdminIdentity, url: URL) {
    const tenant = tenantParam(url);
    const state = enumParam(url, 'state', STATES);
    const q = strParam(url, 'q', 256)?.toLowerCase();
    const sort = enumParam(url, 'sort', SORTS) ?? 'tenant';
    const order = enumParam(url, 'order', ['asc', 'desc'] as const) ?? 'asc';
    const limit = intParam(url, 'limit', 1, 500, 100);
    const offset = intParam(url, 'offset', 0, 10_000_000, 0);
    const t = now();
    const g = d.generation();
    let views = visible(who, await d.inventory.rows())
      .filter((r) => tenant === undefined || r.tenant === tenant)
      .map((r) => withPolicy(d.inventory.view(r, g, t)));
    if (state) views = views.filter((v) => stateOf(v) === state);
    if (q) views = views.filter((v) => v.host.toLowerCase().includes(q) || v.agentId.toLowerCase().includes(q));
    const key = (v: AgentView): string | number =>
      sort === 'lastSeen'
        ? Date.parse(v.lastSeen)
        : sort === 'detections'
          ? v.detections
          : sort === 'state'
            ? stateOf(v)
            : v[sort].toLowerCase();
    const dir = order === 'asc' ? 1 : -1;
    views.sort((a, b) => {
      const x = key(a);
      const y = key(b);
      if (x !== y) return (x < y ? -1 : 1) * dir;
      return a.tenant < b.tenant
        ? -1
        : a.tenant > b.tenant
          ? 1
          : a.host < b.host
            ? -1
            : a.host > b.host
              ? 1
              : a.agentId < b.agentId
                ? -1
                : 1;
    });
    return { total: views.length, agents: views.slice(offset, offset + limit) };
  }

  async function agent(who: AdminIdentity, tenantRaw: string, idRaw: string) {
    let tenant: string;
    let agentId: string;
    try {
      tenant = decodeURIComponent(tenantRaw);
      agentId = decodeURIComponent(idRaw);
    } catch {
      throw new BadRequest('path', 'the tenant or agent id in the path is not valid URL encoding');
    }
    if (!TENANT.test(tenant) || agentId.length === 0 || agentId.length > 4096) return undefined;
    if (who.tenant !== null && who.tenant !== tenant) return undefined;
    const row = await d.inventory.get({ tenant, agentId });
    if (!row) return undefined;
    const [history, dets] = await Promise.all([d.inventory.history(row), d.inventory.detections([row])]);
    return {
      agent: withPolicy(d.inventory.view(row, d.generation(), now())),
      history: history.slice(0, 100),
      detections: dets.slice(0, 100),
    };
  }

  async function detectionsOf(who: AdminIdentity, tenant: string | undefined, agentId: string | undefined): Promise<DetectionRecord[]> {
    const rows = visible(who, await d.inventory.rows()).filter(
      (r) => (tenant === undefined || r.tenant === tenant) && (agentId === undefined || r.agentId === agentId) && r.detections > 0,
    );
    return d.inventory.detections(rows);
  }

  async function detections(who: AdminIdentity, url: URL) {
    const tenant = tenantParam(url);
    const agentId = strParam(url, 'agent', 4096);
    const since = timeParam(url, 'since');
    const limit = intParam(url, 'limit', 1, 1000, 100);
    let all = await detectionsOf(who, tenant, agentId);
    if (since !== undefined) all = all.filter((x) => Date.parse(x.time) >= since);
    return { total: all.length, detections: all.slice(0, limit) };
  }

  async function timeline(who: AdminIdentity, url: URL) {
    const hours = intParam(url, 'hours', 1, 720, 24);
    const hour = 3600_000;
    const end = Math.floor(now() / hour) * hour + hour; // the current hour is the last bucket
    const start = end - hours * hour;
    const counts = new Array<number>(hours).fill(0);
    for (const x of await detectionsOf(who, undefined, undefined)) {
      const t = Date.parse(x.time);
      if (t >= start && t < end) counts[Math.floor((t - start) / hour)]!++;
    }
    return { bucketSeconds: 3600, buckets: counts.map((count, i) => ({ start: new Date(start + i * hour).toISOString(), count })) };
  }

  async function answer(who: AdminIdentity, url: URL): Promise<unknown> {
    const parts = url.pathname.split('/').slice(2); // '', 'api', ...
    const [a, b, c, extra] = parts;
    if (parts.length === 1 && a === 'whoami') return { role: who.role, tenant: who.tenant };
    if (parts.length === 1 && a === 'fleet') return fleet(who);
    if (parts.length === 1 && a === 'agents') return agents(who, url);
    if (a === 'agents' && b && c && extra === undefined) return agent(who, b, c);
    if (parts.length === 1 && a === 'detections') return detections(who, url);
    if (parts.length === 2 && a === 'detections' && b === 'timeline') return timeline(who, url);
    if (parts.length === 1 && a === 'svm') return d.svm();
    if (parts.length === 1 && a === 'policies') {
      const tenant = tenantParam(url);
      if (who.tenant !== null && tenant !== undefined && tenant !== who.tenant) return { policies: [] };
      return { policies: d.policies?.(who.tenant ?? tenant) ?? [] };
    }
    return undefined;
  }

  return {
    prefix: '/api/',
    async handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
      const send = (status: number, body: unknown, extra: Record<string, string> = {}) => {
        const text = `${json(body)}\n`;
        res.writeHead(status, {
          'content-type': 'application/json; charset=utf-8',
          'cache-control': 'no-store',
          'x-content-type-options': 'nosniff',
          'content-length': String(Buffer.byteLength(text)),
          ...extra,
        });
        res.end(req.method === 'HEAD' ? undefined : text);
      };
      const error = (status: number, code: string, message: string, more: Record<string, unknown> = {}, extra?: Record<string, string>) =>
        send(status, { error: { code, message, ...more } }, extra);
      const auth = authenticate(req.headers.authorization, d.admins, d.agentTokens);
      if (!auth.ok) {
        if (auth.status === 401) log.debug('admin API: refused', { path: url.pathname.slice(0, 200), remote: req.socket.remoteAddress });
        else log.warn('admin API: an agent token was presented', { path: url.pathname.slice(0, 200), remote: req.socket.remoteAddress });
        return error(auth.status, auth.code, auth.message, {}, auth.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
      }
      if (req.method === 'POST' && d.scans && (req.url ?? '').length <= MAX_URL) {
        try {
          const groupsOf = (t: string) => (d.policies?.(t) ?? []).map((p) => p.group).filter((g): g is string => typeof g === 'string');
          if (await handleScanPost(req, url, auth.who, d.scans, d.inventory, send, error, d.policyFor, groupsOf)) return;
        } catch (e) {
          log.error('admin API: a scan request failed', { path: url.pathname.slice(0, 200), ...describeError(e) });
          return error(503, 'LA_ERR_ADMIN_UNAVAILABLE', 'the inventory cannot be read now (is its Redis reachable?); see the SVM log');
        }
      }
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return error(405, 'LA_ERR_ADMIN_METHOD', 'only GET and HEAD (POST only to start scans)', {}, { allow: 'GET, HEAD' });
      if ((req.url ?? '').length > MAX_URL)
        return error(400, 'LA_ERR_ADMIN_BAD_REQUEST', `the URL is longer than ${MAX_URL}`, { parameter: 'url' });
      try {
        const body = await answer(auth.who, url);
        if (body === undefined) return error(404, 'LA_ERR_ADMIN_NOT_FOUND', 'no such resource');
        send(200, body);
      } catch (e) {
        if (e instanceof BadRequest) return error(400, 'LA_ERR_ADMIN_BAD_REQUEST', e.message, { parameter: e.parameter });
        log.error('admin API: the inventory could not be read', { path: url.pathname.slice(0, 200), ...describeError(e) });
        error(503, 'LA_ERR_ADMIN_UNAVAILABLE', 'the inventory cannot be read now (is its Redis reachable?); see the SVM log');
      }
    },
  };
}
