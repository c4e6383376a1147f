/**
 * A real `lightagent run` (fanotify, a tmpfs made for the test, watchdog) against a slow fake SVM:
 * files of new content are extracted, then one is opened at once. Its decision goes ahead of the
 * background (close-write) scans queued in the link: asserted on the order in which the SVM
 * received the requests and on the window's counters, not on time.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { encodeMessage } from '../../src/protocol/index.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { fakeSvm, type FakeSvm } from '../helpers/fake-svm.js';
import { promisify } from 'node:util';
import { needRoot, scratchMount, tempDir } from '../helpers/procs.js';

const skip = needRoot();
const execFileP = promisify(execFile);
const FILES = 120;

describe('on-access decisions go ahead of background scans', { skip }, () => {
  let mnt: ReturnType<typeof scratchMount> | undefined;
  let agent: Agent | undefined;
  let svm: FakeSvm | undefined;
  after(async () => {
    await agent?.stop();
    await svm?.close();
    mnt?.unmount();
  });

  it('an open right after an extract is judged before the queued close-write scans', async () => {
    // Slow SVM: every answer after 40 ms, 4 in flight (background may hold 3).
    const lookups: string[] = [];
    const parts = new Map<number, Buffer[]>();
    svm = await fakeSvm({
      limits: { maxInFlight: 4 },
      script: (ws, m) => {
        const later = (f: () => void) => setTimeout(f, 40);
        if (m.t === 'lookup') {
          lookups.push(m.sha256);
          later(() => ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'unknown', sha256: m.sha256 })));
        } else if (m.t === 'chunk') {
          parts.set(m.id, [...(parts.get(m.id) ?? []), m.payload]);
          if (!m.last) return;
          const sha256 = crypto
            .createHash('sha256')
            .update(Buffer.concat(parts.get(m.id)!))
            .digest('hex');
          parts.delete(m.id);
          later(() => ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean', sha256 })));
        }
      },
    });
    mnt = scratchMount('la-prio-');
    agent = await startAgent({
      svm: svm.url,
      token: 'good',
      protect: mnt.dir,
      mode: 'fanotify',
      args: ['--deadline', '30s'],
      watchdogMs: 120_000,
    });

    // The archive is made outside the protected mount; its files are new content.
    const src = tempDir('la-prio-src-');
    const shas: string[] = [];
    fs.mkdirSync(path.join(src, 'x'));
    for (let i = 0; i < FILES; i++) {
      const b = crypto.randomBytes(2048);
      shas.push(crypto.createHash('sha256').update(b).digest('hex'));
      fs.writeFileSync(path.join(src, 'x', `f${String(i).padStart(3, '0')}`), b);
    }
    const tar = path.join(src, 'x.tar');
    await execFileP('tar', ['cf', tar, '-C', src, 'x']);
    await execFileP('tar', ['xf', tar, '-C', mnt.dir], { timeout: 60_000 });

    // Wait until the close-write scans are queued in the link (background at its share, more waiting).
    const t0 = Date.now();
    for (;;) {
      const w = (await agent.status()).svm.window;
      if (w && w.background.admitted >= 3 && w.waiting > 0) break;
      assert.ok(Date.now() - t0 < 20_000, `the close-write scans did not queue: ${JSON.stringify(w)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const before = (await agent.status()).svm.window!;
    // The last file of the extract: its close-write scan is at the end of the queue.
    const last = path.join(mnt.dir, 'x', `f${String(FILES - 1).padStart(3, '0')}`);
    // Asynchronously: the fake SVM answers from this process's event loop.
    const t1 = performance.now();
    await execFileP('cat', [last], { timeout: 30_000, maxBuffer: 1 << 20 });
    const r = { ms: performance.now() - t1 };
    const st = await agent.status();
    const w = st.svm.window!;

    const at = lookups.indexOf(shas[FILES - 1]!);
    assert.ok(at >= 0, 'the opened file was looked up');
    // FIFO would have put it at the end (#120); the open raised its queued scan ahead of the rest.
    assert.ok(at < FILES / 2, `the opened file's lookup reached the SVM as #${at + 1} of ${lookups.length}`);
    assert.ok(w.raised >= 1 || w.foreground.admitted > before.foreground.admitted, 'the decision asked as foreground');
    assert.ok(w.background.admitted < FILES * 2, 'answered while background scans were still queued');
    assert.equal(st.counts.deadline ?? 0, 0, `no open was answered by policy: ${JSON.stringify({ counts: st.counts, w, ms: r.ms })}`);
  });
});
