/**
 * Hundreds of stalling agents must not flood the SVM's log: an agent's dropped uploads (stalled or
 * timed out) are logged once per agent per minute, with how many were dropped since.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { eventually, spawnNode, SVM_CLI, tempDir, waitFor } from '../helpers/procs.js';
import { rawAgent } from './helpers.js';

describe('stalled uploads in the log', () => {
  it('one warning per agent per minute, however many of its uploads stall', async () => {
    const dir = tempDir('la-stall-log-');
    const cfg = path.join(dir, 'svm.yaml');
    fs.writeFileSync(cfg, 'upload_stall_timeout: 150ms\ntokens:\n  - {tenant: a, token: tenant-a-token}\n');
    const svm = spawnNode(SVM_CLI, ['--config', cfg, '--listen', '127.0.0.1:0', '--json', '--log-level', 'warn'], { watchdogMs: 60_000 });
    try {
      const url = (await waitFor(svm, /"url"\s*:\s*"(ws:\/\/[^"]+)"/))[1]!;
      const a = await rawAgent(url, 'tenant-a-token');
      await a.next((m) => m.t === 'welcome');
      let id = 0;
      for (let round = 0; round < 3; round++) {
        for (let k = 0; k < 8; k++) {
          a.ws.send(encodeMessage({ t: 'scan', id: ++id, size: 100_000 }));
          a.ws.send(encodeChunk(id, 0, false, Buffer.alloc(1000)));
        }
        await eventually(
          () => a.msgs.filter((m) => m.t === 'verdict' && m.code === 'LA_ERR_UPLOAD_TIMEOUT').length === id,
          10_000,
          'every stalled upload dropped',
        );
      }
      const lines = svm
        .output()
        .split('\n')
        .filter((l) => l.includes('upload stalled; dropped'));
      assert.equal(lines.length, 1, `24 uploads dropped, ${lines.length} warnings:\n${lines.slice(0, 3).join('\n')}`);
    } finally {
      await svm.stop();
    }
  });
});
