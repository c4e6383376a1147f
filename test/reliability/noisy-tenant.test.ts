/**
 * A hostile tenant with one valid token: 300 agents announce large uploads, send a little of each
 * and then nothing, while a quiet agent of another tenant uploads files. The SVM reserves memory
 * for bytes received only, bounds each agent's and each tenant's share, and drops stalled uploads:
 * the quiet agent is never answered LA_ERR_BUSY, every one of its files gets a verdict, the
 * hostile uploads end (busy or stalled) and their memory comes back, and the SVM stays up.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { metric, rawAgent, startTestSvm, upload, type RawAgent } from '../svm/helpers.js';
import { eventually } from '../helpers/procs.js';

const HOSTILE = 'hostile-tenant-token';
const QUIET = 'quiet-tenant-token';
const HOSTILE_AGENTS = 300;
const UPLOADS_EACH = 4;

describe('a noisy tenant cannot deny uploads to another tenant', () => {
  it('300 stalled uploaders of one tenant beside a quiet agent of another', async () => {
    const s = await startTestSvm({
      tokens: [
        { tenant: 'hostile', token: HOSTILE },
        { tenant: 'quiet', token: QUIET },
      ],
      uploadMemory: 16 << 20,
      maxFileSize: 1 << 20,
      uploadStallMs: 1500,
      uploadTimeoutMs: 30_000,
      maxInFlight: 32,
    });
    const hostile: RawAgent[] = [];
    try {
      for (let i = 0; i < HOSTILE_AGENTS; i++) hostile.push(await rawAgent(s.url, HOSTILE));
      await Promise.all(hostile.map((a) => a.next((m) => m.t === 'welcome', 20_000)));
      const quiet = await rawAgent(s.url, QUIET);
      await quiet.next((m) => m.t === 'welcome');
      // Each hostile agent announces four 1 MiB uploads (1.2 GiB announced in all, 75x the SVM's
      // upload memory) and sends 64 KiB of each, then nothing.
      for (const a of hostile) {
        for (let id = 1; id <= UPLOADS_EACH; id++) {
          a.ws.send(encodeMessage({ t: 'scan', id, size: 1 << 20 }));
          a.ws.send(encodeChunk(id, 0, false, crypto.randomBytes(64 << 10)));
        }
      }
      await new Promise((r) => setTimeout(r, 300));
      const held = await metric(s, 'lightagent_svm_upload_bytes_held');
      assert.ok(held <= 8 << 20, `the hostile tenant holds at most its half of upload_memory (${held} bytes)`);
      // The quiet tenant's agent uploads 40 files of 256 KiB, 4 at a time, during the storm.
      const codes: string[] = [];
      for (let batch = 0; batch < 10; batch++) {
        const vs = await Promise.all([0, 1, 2, 3].map((k) => upload(quiet, 1000 + batch * 4 + k, crypto.randomBytes(256 << 10), 64 << 10)));
        for (const v of vs) codes.push(v.verdict === 'error' ? (v.code ?? 'error') : v.verdict);
      }
      assert.deepEqual(
        [...new Set(codes)],
        ['clean'],
        `quiet tenant verdicts: ${JSON.stringify(codes.filter((c) => c !== 'clean').slice(0, 5))}`,
      );
      // Every hostile upload ends: refused for its share (busy) or dropped when it stalled.
      await eventually(
        () => hostile.every((a) => a.msgs.filter((m) => m.t === 'verdict').length === UPLOADS_EACH),
        15_000,
        'every hostile upload answered',
      );
      const hostileCodes = new Set(
        hostile.flatMap((a) => a.msgs.filter((m) => m.t === 'verdict').map((m) => (m.t === 'verdict' ? m.code : ''))),
      );
      assert.deepEqual([...hostileCodes].sort(), ['LA_ERR_BUSY', 'LA_ERR_UPLOAD_TIMEOUT']);
      assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0, 'all their memory came back');
      assert.ok((await metric(s, 'lightagent_svm_uploads_busy_total')) > 0);
      // The SVM is still there for everyone, the hostile agents included (they were not closed).
      assert.equal((await upload(hostile[0]!, 99, Buffer.from('after the storm'))).verdict, 'clean');
      assert.equal(await metric(s, 'lightagent_svm_agents_connected'), HOSTILE_AGENTS + 1);
    } finally {
      for (const a of hostile) a.ws.terminate();
      await s.close();
    }
  });
});
