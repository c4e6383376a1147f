/**
 * `lightagent quarantine list | restore ID | delete ID` — the quarantine store on this machine.
 * Exit codes: 0 done, 2 error (bad arguments, unknown id, refused restore, not root).
 */
import { Quarantine, type QuarantineRecord } from '../../store/quarantine.js';
import { QuarantineError } from '../../errors.js';
import { configureLogging } from '../../log.js';
import { defineCommand } from '../command.js';
import { fail, out, printJson } from '../output.js';

const DEFAULT_STATE_DIR = '/var/lib/lightagent';

function needRoot(action: string): void {
  // Windows has no uid: the store under ProgramData is guarded by its ACL (Administrators and
  // SYSTEM, set by the MSI); a user without access gets the filesystem's EPERM, named.
  if (process.platform === 'win32') return;
  if (process.getuid?.() !== 0) {
    throw new QuarantineError(
      'LA_ERR_NOT_ROOT',
      `quarantine ${action} needs root (the store is readable and writable by root only)`,
      `run it as root: sudo lightagent quarantine ${action} ...`,
    );
  }
}

function row(r: QuarantineRecord): string {
  const state = r.state === 'stored' ? '' : `  [${r.state}]`;
  return `${r.id}  ${r.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}  ${r.threat}  ${r.originalPath}${state}`;
}

export const quarantineCommand = defineCommand({
  name: 'quarantine',
  summary: 'list, restore or delete quarantined files',
  usage: '<list|restore|delete> [options]',
  description: `  list [--json]                   list quarantined files (id, time, threat, original path)
  restore ID [--force] [--to PATH]
                                  put a file back with its owner and mode, and remove it from
                                  quarantine; never follows symbolic links on the way
  delete ID                       remove a quarantined file for good`,
  options: {
    'state-dir': { type: 'string', arg: 'DIR', help: "the agent's state directory (default /var/lib/lightagent)" },
    json: { type: 'boolean', help: 'list: print JSON' },
    force: { type: 'boolean', help: 'restore: replace an existing file at the target' },
    to: { type: 'string', arg: 'PATH', help: 'restore: restore to PATH instead of the original path' },
  },
  positionals: true,
  footer: 'restore and delete need root (on Windows: access to the store, Administrators). Exit status: 0 done, 2 error.',
  async handler({ values: o, positionals, prefix, usage }) {
    const [action, id, ...extra] = positionals;
    if (!action) return usage('name an action: list, restore or delete');
    if (action === 'list' ? id !== undefined : id === undefined || extra.length > 0) {
      return usage(action === 'list' ? 'list takes no arguments' : `${action} takes exactly one ID`);
    }
    if ((o.force || o.to !== undefined) && action !== 'restore') return usage('--force and --to apply to restore only');
    configureLogging({ level: 'error' });
    const q = new Quarantine({ stateDir: o['state-dir'] ?? DEFAULT_STATE_DIR });
    try {
      switch (action) {
        case 'list': {
          const items = await q.list();
          if (o.json) printJson(items);
          else if (items.length === 0) out('quarantine is empty');
          else for (const r of items) out(row(r));
          return 0;
        }
        case 'restore': {
          needRoot('restore');
          const r = await q.restore(id!, { force: o.force, ...(o.to !== undefined ? { to: o.to } : {}) });
          out(`restored ${r.record.id} to ${r.path} (${r.record.threat})`);
          return 0;
        }
        case 'delete': {
          needRoot('delete');
          const r = await q.delete(id!);
          out(`deleted ${r.id} (${r.originalPath}, ${r.threat})`);
          return 0;
        }
        default:
          return usage(`unknown action "${action}"`);
      }
    } catch (e) {
      const errno = (x: unknown) => (x as NodeJS.ErrnoException | undefined)?.code;
      if (errno(e) === 'EACCES' || errno((e as Error).cause) === 'EACCES') {
        return fail(
          new QuarantineError('LA_ERR_NOT_ROOT', `cannot read the quarantine in ${q.dir}: permission denied`, 'run it as root'),
          prefix,
        );
      }
      return fail(e, prefix);
    }
  },
});
