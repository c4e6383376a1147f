/**
 * RLIMIT_NOFILE through koffi, checked against the kernel's own /proc/PID/limits, and the gate's
 * bound on held close-write fds derived from it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { openFileLimit, raiseOpenFileLimit } from '../../../src/platform/linux/rlimit.js';
import { defaultCloseWriteMaxFds } from '../../../src/watchers/fanotify-gate.js';

const linux = process.platform === 'linux' ? undefined : 'Linux only';

function limitsOf(pid: number | 'self'): { soft: number; hard: number } {
  const m = /^Max open files\s+(\d+)\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/limits`, 'latin1'));
  assert.ok(m, 'a "Max open files" line');
  return { soft: Number(m[1]), hard: Number(m[2]) };
}

describe('RLIMIT_NOFILE', { skip: linux }, () => {
  it('openFileLimit() reads what /proc/self/limits shows', () => {
    assert.deepEqual(openFileLimit(), limitsOf('self'));
  });

  it('raiseOpenFileLimit never lowers a limit', () => {
    const before = limitsOf('self');
    assert.deepEqual(raiseOpenFileLimit(16), before);
    assert.deepEqual(limitsOf('self'), before);
  });

  it('raises a lowered soft limit up to what is asked, within the hard limit', () => {
    // In a child: its soft limit is lowered to 256 through koffi first (Node starts with soft = hard).
    const script = `
      import koffi from 'koffi';
      import { openFileLimit, raiseOpenFileLimit } from ${JSON.stringify(new URL('../../../src/platform/linux/rlimit.js', import.meta.url).href)};
      const set = koffi.load('libc.so.6').func('int setrlimit(int resource, const uint64_t *rlim)');
      const hard = openFileLimit().hard;
      if (set(7, new BigUint64Array([256n, BigInt(hard)])) !== 0) throw new Error('could not lower the soft limit');
      const lowered = openFileLimit();
      const raised = raiseOpenFileLimit(Math.min(1000, hard));
      process.stdout.write(JSON.stringify({ hard, lowered, raised }));`;
    const dir = fs.mkdtempSync(new URL('./', import.meta.url).pathname + '.rlimit-');
    try {
      fs.writeFileSync(`${dir}/main.mjs`, script);
      const r = spawnSync(process.execPath, [`${dir}/main.mjs`], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      const o = JSON.parse(r.stdout) as { hard: number; lowered: { soft: number; hard: number }; raised: { soft: number; hard: number } };
      assert.deepEqual(o.lowered, { soft: 256, hard: o.hard });
      assert.deepEqual(o.raised, { soft: Math.min(1000, o.hard), hard: o.hard });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('held close-write fds from the limit (defaultCloseWriteMaxFds)', () => {
  it('a quarter of the soft limit, within 256..16,384; 4,096 when unknown', () => {
    assert.equal(defaultCloseWriteMaxFds(65_536), 16_384, 'the unit LimitNOFILE');
    assert.equal(defaultCloseWriteMaxFds(20_000), 5_000);
    assert.equal(defaultCloseWriteMaxFds(1_048_576), 16_384);
    assert.equal(defaultCloseWriteMaxFds(1024), 256);
    assert.equal(defaultCloseWriteMaxFds(100), 256);
    assert.equal(defaultCloseWriteMaxFds(undefined), 4096);
  });
});
