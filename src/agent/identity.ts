/**
 * A stable agent id per install, kept in the state directory; an ephemeral one when the state
 * directory cannot be written (an unprivileged `lightagent scan`).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export function agentId(stateDir: string, hostName: string): string {
  const file = path.join(stateDir, 'agent-id');
  try {
    const id = fs.readFileSync(file, 'utf8').trim();
    if (/^[A-Za-z0-9._-]{8,128}$/.test(id)) return id;
  } catch {
    /* not there yet */
  }
  const id = `${hostName.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64)}-${crypto.randomBytes(8).toString('hex')}`;
  try {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, `${id}\n`, { mode: 0o600, flag: 'wx' });
  } catch {
    /* read-only or unprivileged: this id lives as long as the process */
  }
  return id;
}

export const AGENT_VERSION = '0.1.0';
