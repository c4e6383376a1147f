/**
 * The daemon's cache step when the SVM link connects while the persisted cache is still loading:
 * the link's 'connected' then comes before the step listens, and the generation in force must
 * still be the SVM's, not the one saved in the file. Otherwise the old clean verdicts pass as
 * fresh (opens answered locally under signatures the SVM no longer uses) and the signature
 * refresh finds nothing stale to do. (Seen in CI: test/agent/signature-refresh.test.ts, 1 run in 6.)
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { FileIdentity } from '../../src/cache/verdict-cache.js';
import { agentConfigSchema } from '../../src/config/agent.js';
import { cacheStep } from '../../src/agent/steps/cache.js';
import type { DaemonContext } from '../../src/agent/steps/context.js';
import { describe, it } from 'node:test';
import { tempDir } from '../helpers/procs.js';

/** The part of the SVM link the cache step uses. */
class FakeLink extends EventEmitter {
  generation: string | undefined;
  state = 'connecting';
  connect(generation: string): void {
    this.generation = generation;
    this.state = 'connected';
    this.emit('connected', { generation });
  }
}

const id = (n: number): FileIdentity => ({ dev: 1n, ino: BigInt(n), size: 100n, mtimeNs: 1000n + BigInt(n), ctimeNs: 2000n });
const sha = (n: number) => n.toString(16).padStart(64, '0');

async function runCacheStep(stateDir: string, link: FakeLink, whileLoading?: () => void) {
  const cfg = agentConfigSchema.parse({ state_dir: stateDir });
  const ctx = { cfg, link } as unknown as DaemonContext;
  const running = cacheStep.run(ctx);
  whileLoading?.();
  const teardown = await running;
  return { cache: ctx.cache!.cache, stop: async () => void (await teardown?.()) };
}

describe('daemon start: the cache step and a link that connects meanwhile', () => {
  it('takes the generation of a link that connected while the saved cache was loading', async () => {
    const stateDir = tempDir('la-startgen-');
    // A first run under generation g-old saves 20 clean verdicts.
    const first = new FakeLink();
    first.connect('g-old');
    const a = await runCacheStep(stateDir, first);
    assert.equal(a.cache.generation, 'g-old');
    for (let i = 1; i <= 20; i++) a.cache.record(id(i), BigInt(i), sha(i), 'clean');
    await a.stop();

    // The next start: the SVM (now at g-new) answers while the file is being read.
    const second = new FakeLink();
    const b = await runCacheStep(stateDir, second, () => second.connect('g-new'));
    assert.equal(b.cache.size, 20, 'the saved verdicts were loaded');
    assert.equal(b.cache.generation, 'g-new', "the link's generation is in force, not the file's");
    assert.equal(b.cache.countStaleClean(), 20, 'every saved clean verdict is stale: the refresh has them to do');
    assert.equal(b.cache.lookupIdentity(id(3))?.stale, true);
    // Later announcements still reach it.
    second.emit('generation', 'g-newer');
    assert.equal(b.cache.generation, 'g-newer');
    await b.stop();
  });

  it('keeps the saved generation until an SVM answers', async () => {
    const stateDir = tempDir('la-startgen-');
    const first = new FakeLink();
    first.connect('g-old');
    const a = await runCacheStep(stateDir, first);
    a.cache.record(id(1), 1n, sha(1), 'clean');
    await a.stop();
    const b = await runCacheStep(stateDir, new FakeLink());
    assert.equal(b.cache.generation, 'g-old');
    assert.equal(b.cache.lookupIdentity(id(1))?.stale, false, 'no SVM yet: its saved clean verdict stands');
    await b.stop();
  });
});
