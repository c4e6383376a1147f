/**
 * The admin API's one write: asking agents to scan now (feature scan-command, docs/scans.md).
 *
 *   POST /api/agents/<tenant>/<agentId>/scan   body {} or {"paths": ["/abs", ...]}
 *   POST /api/scans                            body {"tenant": "t", "agents"?: ["id", ...]}
 *                                              or {"tenant": "t", "group": "g"}: the connected
 *                                              agents that run the tenant's policy group g
 *
 * Admin tokens only: a viewer is 403 (LA_ERR_ADMIN_FORBIDDEN), whatever its tenant. Bodies are
 * JSON objects of at most 16 KiB, read within 10 s. An agent with a scan still pending is 429
 * (one per agent; a tenant scan lists it under `skipped`).
 */
import type http from 'node:http';
import type { AdminIdentity } from './auth.js';
import { ScanCommandError, type ScanCommands } from '../scan-commands.js';
import type { Inventory } from '../inventory/inventory.js';

const MAX_BODY = 16 * 1024;
const BODY_MS = 10_000;
const TENANT = /^[A-Za-z0-9._-]{1,64}$/;
const GROUP = /^[A-Za-z0-9._-]{1,63}$/;
const MAX_AGENTS = 1000;

type Send = (status: number, body: unknown) => void;
type Fail = (status: number, code: string, message: string, more?: Record<string, unknown>) => void;

class BodyError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => {
      reject(new BodyError(408, `the request body did not arrive within ${BODY_MS / 1000} s`));
      req.destroy();
    }, BODY_MS);
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        clearTimeout(timer);
        reject(new BodyError(413, `the request body is larger than ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.on('end', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') return resolve({});
      try {
        const v = JSON.parse(text) as unknown;
        if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch {
        reject(new BodyError(400, 'the request body must be a JSON object'));
      }
    });
  });
}

function who(w: AdminIdentity): string {
  return w.role === 'admin' ? 'console: admin' : `console: ${w.role}`;
}

/** Answer a POST under /api/; false when the path is not one of these (the caller answers 405). */
export async function handleScanPost(
  req: http.IncomingMessage,
  url: URL,
  identity: AdminIdentity,
  scans: ScanCommands,
  inventory: Pick<Inventory, 'get' | 'rows'>,
  send: Send,
  fail: Fail,
  /** The policy an agent runs (src/svm/policies.ts), for `group`; absent: no policies. */
  policyFor?: (tenant: string, agentId: string, host: string) => { name: string } | undefined,
  /** The group names of a tenant's policies. */
  groupsOf?: (tenant: string) => string[],
): Promise<boolean> {
  const parts = url.pathname.split('/').slice(2);
  const one = parts.length === 4 && parts[0] === 'agents' && parts[3] === 'scan';
  const many = parts.length === 1 && parts[0] === 'scans';
  if (!one && !many) return false;
  if (identity.role !== 'admin') {
    fail(403, 'LA_ERR_ADMIN_FORBIDDEN', 'starting scans needs an admin token; viewer tokens only read');
    return true;
  }
  let body: Record<string, unknown>;
  try {
    body = await readBody(req);
  } catch (e) {
    const status = e instanceof BodyError ? e.status : 400;
    fail(status, 'LA_ERR_ADMIN_BAD_REQUEST', (e as Error).message, { parameter: 'body' });
    return true;
  }
  if (one) {
    let tenant: string;
    let agentId: string;
    try {
      tenant = decodeURIComponent(parts[1]!);
      agentId = decodeURIComponent(parts[2]!);
    } catch {
      fail(400, 'LA_ERR_ADMIN_BAD_REQUEST', 'the tenant or agent id in the path is not valid URL encoding', { parameter: 'path' });
      return true;
    }
    if (!TENANT.test(tenant) || agentId.length === 0 || agentId.length > 4096) {
      fail(404, 'LA_ERR_ADMIN_NOT_FOUND', 'no such agent');
      return true;
    }
    const paths = body.paths;
    if (paths !== undefined && (!Array.isArray(paths) || paths.some((p) => typeof p !== 'string'))) {
      fail(400, 'LA_ERR_ADMIN_BAD_REQUEST', 'paths must be a list of absolute paths', { parameter: 'paths' });
      return true;
    }
    scans.settle(tenant, agentId, (await inventory.get({ tenant, agentId }))?.scan);
    try {
      send(202, { scan: scans.request(tenant, agentId, { paths: paths as string[] | undefined, reason: who(identity) }) });
    } catch (e) {
      if (!(e instanceof ScanCommandError)) throw e;
      fail(e.status, e.code, e.message, e.code === 'LA_ERR_SCAN_PATH' ? { parameter: 'paths' } : {});
    }
    return true;
  }
  const tenant = body.tenant;
  if (typeof tenant !== 'string' || !TENANT.test(tenant)) {
    fail(400, 'LA_ERR_ADMIN_BAD_REQUEST', 'tenant must be a tenant name (letters, digits, . _ -, at most 64)', { parameter: 'tenant' });
    return true;
  }
  const listed = body.agents;
  if (
    listed !== undefined &&
    (!Array.isArray(listed) || listed.length > MAX_AGENTS || listed.some((a) => typeof a !== 'string' || a.length === 0 || a.length > 4096))
  ) {
    fail(400, 'LA_ERR_ADMIN_BAD_REQUEST', `agents must be a list of at most ${MAX_AGENTS} agent ids`, { parameter: 'agents' });
    return true;
  }
  const group = body.group;
  if (group !== undefined && (typeof group !== 'string' || !GROUP.test(group) || listed !== undefined)) {
    fail(400, 'LA_ERR_ADMIN_BAD_REQUEST', 'group must be a policy group name (letters, digits, . _ -), without agents', {
      parameter: 'group',
    });
    return true;
  }
  if (group !== undefined && !(groupsOf?.(tenant) ?? []).includes(group)) {
    fail(404, 'LA_ERR_ADMIN_NOT_FOUND', `tenant ${tenant} has no policy group ${group} (GET /api/policies lists them)`, {
      parameter: 'group',
    });
    return true;
  }
  const rows = (await inventory.rows()).filter((r) => r.tenant === tenant);
  for (const row of rows) scans.settle(tenant, row.agentId, row.scan);
  let ids = listed ? [...new Set(listed as string[])] : scans.connectedIn(tenant);
  if (group !== undefined) {
    // A group's members are chosen by agent id or host glob: the policy each connected agent runs names it.
    const host = new Map(rows.map((r) => [r.agentId, r.host]));
    ids = ids.filter((id) => {
      const name = policyFor?.(tenant, id, host.get(id) ?? '')?.name ?? '';
      return name.includes('/') && name.slice(name.indexOf('/') + 1) === group;
    });
  }
  const requested: unknown[] = [];
  const skipped: Array<{ agentId: string; code: string; message: string }> = [];
  for (const agentId of ids) {
    try {
      requested.push(scans.request(tenant, agentId, { reason: `${who(identity)} (tenant ${tenant})` }));
    } catch (e) {
      if (!(e instanceof ScanCommandError)) throw e;
      skipped.push({ agentId, code: e.code, message: e.message });
    }
  }
  send(202, { tenant, ...(group !== undefined ? { group } : {}), requested, skipped });
  return true;
}
