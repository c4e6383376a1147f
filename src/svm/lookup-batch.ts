/**
 * Feature lookup-batch on the SVM: many hashes answered in one frame, from the shared verdict
 * cache only. Like `lookup`, it reads and never writes, and never starts an engine run: the
 * agent's signature refresh must cost the SVM cache reads, not scans.
 */
import { logger } from '../log.js';
import type { LookupBatch } from '../protocol/index.js';
import type { SvmCore } from './core.js';

/** Cache reads of one batch in flight at once (a Redis cache pipelines them; the memory one answers at once). */
const READS_AT_ONCE = 64;
const log = logger('svm');

/** One letter per entry under the SVM's generation now: c clean, i infected, u unknown. A failing cache read is `u`. */
export async function lookupBatch(
  core: SvmCore,
  tenant: string,
  entries: LookupBatch['entries'],
): Promise<{ generation: string; results: string }> {
  const generation = core.generation();
  const out = new Array<string>(entries.length);
  let hits = 0;
  let failed: Error | undefined;
  for (let at = 0; at < entries.length; at += READS_AT_ONCE) {
    const part = entries.slice(at, at + READS_AT_ONCE);
    const got = await Promise.all(
      part.map((e) =>
        core.cache.get({ tenant, generation, sha256: e.sha256 }).catch((err: unknown) => {
          failed = err as Error;
          return undefined;
        }),
      ),
    );
    got.forEach((v, i) => {
      out[at + i] = v === undefined ? 'u' : v.verdict === 'infected' ? 'i' : 'c';
      if (v !== undefined) hits++;
    });
  }
  core.metrics.lookups.inc(entries.length);
  if (hits) core.metrics.cacheHits.inc(hits);
  core.metrics.lookupBatches.inc();
  if (failed) log.warn('verdict cache read failed; treating it as a miss', { cache: core.cache.kind, message: (failed as Error).message });
  return { generation, results: out.join('') };
}
