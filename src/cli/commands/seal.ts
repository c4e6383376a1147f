/**
 * `lightagent seal` — prepare a VM template for cloning (docs/vdi.md): scan what the template
 * protects so that its verdict cache travels into every clone, then drop the instance identity
 * so that each clone makes its own agent id at first boot.
 * Exit codes: 0 sealed, 1 infected files found (not sealed unless --allow-infected), 2 error.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadAgentConfig, requireSvm, type AgentConfig } from '../../config/agent.js';
import { ServiceError } from '../../errors.js';
import { configureLogging } from '../../log.js';
import { dropIdentity, SEALED_FILE } from '../../agent/identity.js';
import { openLocalCache } from '../../agent/local-cache.js';
import { svmLinkFor } from '../../agent/svm-connection.js';
import { lockStateDir } from '../../agent/steps/lock.js';
import { resolveProtect } from '../../watchers/backend.js';
import { ProgressBar } from '../progress.js';
import { defineCommand } from '../command.js';
import { err, out, printJson } from '../output.js';
import { runScan, type ScanSummary } from './scan.js';

export interface SealSummary {
  sealed: boolean;
  stateDir: string;
  protect: string[];
  scan?: Pick<ScanSummary, 'files' | 'bytes' | 'clean' | 'infected' | 'errors' | 'uploadedBytes' | 'seconds' | 'svm'> | undefined;
  cacheEntries?: number | undefined;
  generation?: string | undefined;
  removed: string[];
  quarantined: number;
}

export const sealCommand = defineCommand({
  name: 'seal',
  summary: 'prepare this VM as a template for cloning (docs/vdi.md)',
  usage: '[options]',
  description: [
    'Prepare this VM as a template for cloning. Run it with the daemon stopped, as the last step before the template is shut down:',
    "  1. scans every protected path through the SVM and writes the verdict cache, so that clones answer the template's " +
      'unchanged files from it at first boot, with no SVM round trip;',
    '  2. drops the instance identity (agent id, instance facts, events, deferred queue), so that each clone makes its own ' +
      'agent id at its first start.',
    'Files infected in the template stop the seal (exit 1) unless --allow-infected: the cache then keeps them as infected ' +
      'and every clone refuses them.',
  ].join('\n\n'),
  options: {
    config: { type: 'string', arg: 'F', help: 'agent config file (default /etc/lightagent/agent.yaml if it exists)' },
    svm: { type: 'string', arg: 'URL', help: 'SVM to use; default from the config file' },
    token: { type: 'string', arg: 'T', help: 'tenant token; default from the config file' },
    'identity-only': { type: 'boolean', help: 'drop the identity without scanning (clones then judge every file anew)' },
    'allow-infected': { type: 'boolean', help: 'seal even if infected files were found' },
    jobs: { type: 'integer', arg: 'N', min: 1, max: 64, default: 16, help: 'files scanned in parallel (default 16)' },
    json: { type: 'boolean', help: 'print one JSON document instead of text' },
  },
  footer:
    'Exit status: 0 sealed, 1 infected files found (not sealed), 2 error, 3 sealed but some files could not be judged ' +
    '(listed; each clone judges them at first open: run seal again to include them).',
  async handler({ values: o }) {
    const cfg: AgentConfig = loadAgentConfig({ file: o.config, flags: { svm: o.svm, token: o.token } });
    if (!o['identity-only']) requireSvm(cfg);
    configureLogging({ level: cfg.log.level, ...(cfg.log.file ? { file: cfg.log.file } : {}) });
    // The daemon's own lock: a running daemon would keep writing the identity and the cache.
    fs.mkdirSync(cfg.state_dir, { recursive: true, mode: 0o700 });
    const release = await lockStateDir(cfg.state_dir, 'stop it first (systemctl stop lightagent), then seal, then shut the template down');
    try {
      const summary = await seal(cfg, {
        jobs: o.jobs,
        identityOnly: o['identity-only'],
        allowInfected: o['allow-infected'],
        progress: !o.json,
      });
      if (o.json) printJson(summary);
      else printSummary(summary);
      if (!summary.sealed) return 1;
      return summary.scan && summary.scan.errors.length > 0 ? 3 : 0;
    } finally {
      await release();
    }
  },
});

interface SealOptions {
  jobs: number;
  identityOnly: boolean;
  allowInfected: boolean;
  progress: boolean;
}

async function seal(cfg: AgentConfig, o: SealOptions): Promise<SealSummary> {
  const protect = resolveProtect(cfg, undefined);
  const summary: SealSummary = {
    sealed: false,
    stateDir: cfg.state_dir,
    protect,
    removed: [],
    quarantined: countQuarantined(cfg.state_dir),
  };
  if (!o.identityOnly) {
    const link = svmLinkFor(cfg, { maxInFlight: Math.max(o.jobs * 2, 8) });
    try {
      await link.connect();
      const cache = await openLocalCache(cfg, undefined, link.generation!);
      if (!cache.persistent) {
        await cache.close();
        throw new ServiceError(
          'LA_ERR_SEAL',
          `the verdict cache cannot be written under ${cfg.state_dir}`,
          'run seal as the user the daemon runs as (root)',
        );
      }
      try {
        const s = await runScan(protect, {
          link,
          cfg,
          cache: cache.store,
          jobs: o.jobs,
          followSymlinks: false,
          exclude: [cfg.state_dir], // beside the config's own exclusions (runScan applies them)
          progress: o.progress ? new ProgressBar() : undefined,
        });
        summary.scan = {
          files: s.files,
          bytes: s.bytes,
          clean: s.clean,
          infected: s.infected,
          errors: s.errors,
          uploadedBytes: s.uploadedBytes,
          seconds: s.seconds,
          svm: s.svm,
        };
        summary.generation = link.generation;
        summary.cacheEntries = cache.stats()['entries'];
      } finally {
        await cache.close(); // saves the cache file the clones inherit
      }
    } finally {
      link.close();
    }
    if (summary.scan!.infected.length > 0 && !o.allowInfected) return summary;
  }
  summary.removed = dropIdentity(cfg.state_dir);
  const record = {
    sealedAt: new Date().toISOString(),
    generation: summary.generation,
    files: summary.scan?.files,
    cacheEntries: summary.cacheEntries,
    infected: summary.scan?.infected.length,
  };
  fs.writeFileSync(path.join(cfg.state_dir, SEALED_FILE), `${JSON.stringify(record)}\n`, { mode: 0o600 });
  summary.sealed = true;
  return summary;
}

function countQuarantined(stateDir: string): number {
  try {
    return fs.readdirSync(path.join(stateDir, 'quarantine', 'data')).length;
  } catch {
    return 0;
  }
}

function printSummary(s: SealSummary): void {
  if (s.scan) {
    for (const i of s.scan.infected) out(`INFECTED  ${i.path}  ${i.threat}`);
    for (const e of s.scan.errors) err(`ERROR     ${e.path}: ${e.message} (${e.code})`);
    out(
      `Scanned ${s.scan.files} files in ${s.scan.seconds.toFixed(1)} s: clean ${s.scan.clean}, infected ` +
        `${s.scan.infected.length}, not judged ${s.scan.errors.length}`,
    );
    out(`  verdict cache: ${s.cacheEntries ?? 0} entries at signatures ${s.generation ?? '-'} (clones answer these files without the SVM)`);
  }
  if (!s.sealed) {
    err(
      'NOT sealed: infected files in the template. Remove them (or pass --allow-infected to seal them in as infected) and run seal again.',
    );
    return;
  }
  out(`Sealed ${s.stateDir}: removed ${s.removed.length ? s.removed.join(', ') : 'no instance files (none yet)'}`);
  if (s.quarantined > 0)
    out(`  note: ${s.quarantined} quarantined file(s) stay in the template and travel into every clone (lightagent quarantine list)`);
  const notJudged = s.scan?.errors.length ?? 0;
  if (notJudged > 0)
    err(`  ${notJudged} file(s) could not be judged (ERROR lines above): clones judge them at first open; run seal again to include them.`);
  out('Shut the template down now and clone it; each clone makes its own agent id at its first start.');
}
