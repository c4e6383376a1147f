/**
 * `lightagent-svm backup` and `lightagent-svm restore`: what an SVM keeps, into one tar.gz and
 * back (src/svm/backup.ts; docs/svm.md "Backup and restore").
 */
import { AGENT_VERSION } from '../agent/identity.js';
import { parseSize } from '../config/units.js';
import { createBackup, DEFAULT_RESTORE_ROOTS, restoreBackup, type Progress } from '../svm/backup.js';
import { defineCommand } from './command.js';
import { err, out, printJson } from './output.js';

/** Progress on stderr at most once a second, only for work that lasts. */
function progress(prefix: string, json: boolean): (p: Progress) => void {
  let last = Date.now();
  return (p) => {
    const now = Date.now();
    if (now - last < 1000) return;
    last = now;
    const mib = (p.bytes / 1048576).toFixed(1);
    err(json ? JSON.stringify({ event: 'progress', ...p }) : `${prefix}: ${p.phase} ${p.files} files, ${mib} MiB`);
  };
}

export const backupCommand = defineCommand({
  program: 'lightagent-svm',
  name: 'backup',
  summary: 'back up what the SVM keeps into one tar.gz',
  usage: '--out FILE [--config F] [--include PATH]... [--json]',
  description: `Write a tar.gz of what this SVM keeps: its config file, every file the config names (token_file
and other *_file keys, tls.cert/key/client_ca, signatures, yara_rules) and the whole state_dir
(default /var/lib/lightagent-svm), with a manifest of paths, sizes, SHA-256 and modes. The archive
holds secrets (tokens, the TLS key): it is written with mode 0600; keep it so.`,
  options: {
    config: { type: 'string', arg: 'F', help: 'the SVM config file (default /etc/lightagent/svm.yaml)' },
    out: { type: 'string', arg: 'FILE', help: 'the archive to write (.tar.gz); written whole or not at all' },
    include: {
      type: 'string',
      multiple: true,
      arg: 'PATH',
      help: 'also take this file or directory (repeatable), e.g. /etc/lightagent/svm.env',
    },
    force: { type: 'boolean', help: 'replace --out if it exists' },
    json: { type: 'boolean', help: 'print the result as JSON (progress as JSON lines on stderr)' },
  },
  footer: `A verdict cache in Redis is not in the archive: back up Redis itself (its RDB file, BGSAVE);
the memory cache is rebuilt by use. clamd's databases come from freshclam and are not taken.

Exit: 0 written, 2 nothing written (an unreadable file, a bad config, --out exists).`,
  async handler({ values: o, prefix, usage }) {
    if (!o.out) return usage('--out FILE is required');
    const r = await createBackup({
      config: o.config ?? '/etc/lightagent/svm.yaml',
      out: o.out,
      ...(o.include ? { include: o.include } : {}),
      version: AGENT_VERSION,
      force: o.force,
      onProgress: progress(prefix, o.json),
    });
    if (o.json) printJson(r);
    else {
      out(`${prefix}: wrote ${r.out} (${r.files} files, ${r.contentBytes} bytes of content, ${r.bytes} bytes compressed)`);
      for (const root of r.roots) out(`  ${root.kind === 'dir' ? 'dir ' : 'file'} ${root.path} (${root.key})`);
      for (const s of r.skipped) out(`  skipped ${s.path}: ${s.reason}`);
    }
    return 0;
  },
});

export const restoreCommand = defineCommand({
  program: 'lightagent-svm',
  name: 'restore',
  summary: 'restore what the SVM keeps from a backup archive',
  usage: 'FILE [--dry-run] [--allow-root DIR]... [--max-size SZ] [--timeout D] [--json]',
  description: `Restore the files of a backup made by \`lightagent-svm backup\` to the paths it lists. Every
member is checked against the manifest (regular file, size, SHA-256) and every path against the
manifest's roots before anything is written; the files are then written beside their targets and
renamed into place with their modes (a 0600 secret stays 0600) and, as root, their owners. Stop the
SVM first (systemctl stop lightagent-svm) and start it after.`,
  options: {
    'dry-run': { type: 'boolean', help: 'check the archive and say what would be created or overwritten;\nwrite nothing' },
    'allow-root': {
      type: 'string',
      multiple: true,
      arg: 'DIR',
      help: `a directory the archive's files may go into (repeatable), besides\n${DEFAULT_RESTORE_ROOTS.join(' and ')}`,
    },
    'max-size': { type: 'string', arg: 'SZ', help: 'refuse an archive whose files add up to more (default 1 GiB)' },
    timeout: { type: 'duration', arg: 'D', help: 'give up after this long (default 10m)', min: 1000, max: 86_400_000, default: 600_000 },
    json: { type: 'boolean', help: 'print the result as JSON (progress as JSON lines on stderr)' },
  },
  positionals: true,
  footer: `Exit: 0 restored (or, with --dry-run, the archive is sound), 2 refused or failed: a damaged or
hostile archive (LA_ERR_BACKUP_INVALID) leaves everything as it was.`,
  async handler({ values: o, positionals, prefix, usage }) {
    if (positionals.length !== 1) return usage('give one archive: lightagent-svm restore FILE');
    const maxBytes = o['max-size'] !== undefined ? parseSize(o['max-size']) : undefined;
    if (o['max-size'] !== undefined && (maxBytes === undefined || maxBytes < 1))
      return usage(`--max-size must be a size (e.g. 2 GiB), not ${JSON.stringify(o['max-size'])}`);
    const r = await restoreBackup({
      archive: positionals[0]!,
      ...(o['allow-root'] ? { allowRoots: o['allow-root'] } : {}),
      dryRun: o['dry-run'],
      ...(maxBytes !== undefined ? { maxBytes } : {}),
      timeoutMs: o.timeout,
      onProgress: progress(prefix, o.json),
    });
    if (o.json) {
      printJson(r);
      return 0;
    }
    const changes = r.actions.filter((a) => a.action !== 'same');
    out(
      `${prefix}: ${r.archive}: backup of ${r.host} at ${r.created} (version ${r.version}), ${r.actions.length} entries, ` +
        `${r.dryRun ? 'would change' : 'changed'} ${changes.length}`,
    );
    for (const a of changes)
      out(`  ${r.dryRun ? 'would ' : ''}${a.action} ${a.kind} ${a.path} (mode ${a.mode.toString(8).padStart(4, '0')})`);
    if (!r.dryRun) out(`${prefix}: restored ${r.written} files; start the SVM (systemctl start lightagent-svm)`);
    return 0;
  },
});
