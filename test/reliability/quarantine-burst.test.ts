/**
 * A burst of detections at once in one process (the daemon quarantining many infected files
 * together): every file must reach the quarantine. The index lock is a file per process, so
 * operations of one process must queue behind each other rather than poll for their own lock.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Quarantine } from '../../src/store/quarantine.js';
import { EICAR } from '../helpers/fixtures.js';
import { needRoot, tempDir } from '../helpers/procs.js';

describe('quarantine under a burst of detections', { skip: needRoot() }, () => {
  it('64 quarantines started at once in one process all succeed (none starves waiting for its own process lock)', async () => {
    const dir = tempDir('la-rel-qburst-');
    try {
      const q = new Quarantine({ stateDir: path.join(dir, 'state'), lockWaitMs: 300 });
      const files = Array.from({ length: 64 }, (_, i) => {
        const f = path.join(dir, `bad${i}.com`);
        fs.writeFileSync(f, `${EICAR}\n${i}\n`);
        return f;
      });
      const results = await Promise.allSettled(files.map((f) => q.put(f, { threat: 'Eicar-Test-Signature' })));
      const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason?.message));
      assert.deepEqual(failed, [], `${failed.length} of 64 failed`);
      assert.equal((await q.list()).length, 64);
      for (const f of files) assert.ok(!fs.existsSync(f));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
