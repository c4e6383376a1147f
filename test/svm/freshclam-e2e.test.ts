/**
 * Signature updates end to end, offline (issue #25 item 1): freshclam (Debian clamav-freshclam)
 * fetches a custom database (DatabaseCustomURL) from a local HTTP server, with the official
 * databases excluded; NotifyClamd makes the test's clamd reload; the SVM (engine clamav) sees the
 * new generation and announces it; the real agent (fanotify on a scratch tmpfs, as root) drops
 * its clean marks and re-judges; a file that only the new signature flags, opened fine before,
 * is refused (EPERM) at its next open, or quarantined before it by the agent's signature refresh.
 *
 * The SVM runs in this process (its clamd VERSION look every second, not 30 s); so every open of
 * a protected file here is asynchronous (fs.promises): a synchronous one would hold this event
 * loop while the agent waits for this SVM's answer.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ClamavEngine } from '../../src/svm/engines/clamav.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { startSvm, type SvmServer } from '../../src/svm/server.js';
import type { SvmEvent } from '../../src/svm/events.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { needClamd, startClamd, type Clamd } from '../helpers/clamd.js';
import { findBinary, needPackage, needRoot, scratchMount, tempDir } from '../helpers/procs.js';

const freshclamBin = findBinary('freshclam', ['/usr/bin/freshclam']);
const skip = needRoot() ?? needClamd() ?? needPackage(freshclamBin, 'clamav-freshclam', 'the freshclam end-to-end test');

const PROBE_TEXT = 'lightagent freshclam e2e probe';
const sig = (name: string, text: string) => `${name}:0:*:${Buffer.from(text).toString('hex')}\n`;
const DB_V1 = sig('Lightagent.Test.Unrelated', 'nothing in this test contains this');
const DB_V2 = DB_V1 + sig('Lightagent.Test.FreshclamProbe', PROBE_TEXT);

async function until<T>(fn: () => T | undefined | false | Promise<T | undefined | false>, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A local mirror: serves `db` at /lightagent.ndb (Last-Modified, If-Modified-Since), 404 for the rest; logs every path asked. */
async function startMirror(): Promise<{ url: string; asked: string[]; publish(content: string): void; close(): Promise<void> }> {
  let db = '';
  let modified = new Date(0);
  const asked: string[] = [];
  const server = http.createServer((req, res) => {
    asked.push(`${req.method} ${req.url}`);
    if (req.url !== '/lightagent.ndb' || !db) {
      res.writeHead(404).end();
      return;
    }
    const since = Date.parse(req.headers['if-modified-since'] ?? '');
    if (Number.isFinite(since) && Math.floor(modified.getTime() / 1000) <= Math.floor(since / 1000)) {
      res.writeHead(304).end();
      return;
    }
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'last-modified': modified.toUTCString(),
      'content-length': Buffer.byteLength(db),
    });
    res.end(req.method === 'HEAD' ? undefined : db);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    asked,
    publish(content) {
      db = content;
      // Whole seconds, later than any earlier version (HTTP dates have no finer unit).
      modified = new Date(Math.max(Math.ceil(Date.now() / 1000) * 1000, modified.getTime() + 1000));
    },
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** One freshclam run with its own config: custom database only, official ones excluded, clamd told. */
function freshclam(conf: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(freshclamBin!, ['--config-file', conf, '--stdout', '--no-dns'], { timeout: 60_000 }, (e, stdout, stderr) => {
      const out = `${stdout}${stderr}`;
      if (e) reject(new Error(`freshclam failed (${e.message}):\n${out}`));
      else resolve(out);
    });
  });
}

describe('freshclam -> clamd -> SVM -> agent, offline', { skip }, () => {
  let clamd: Clamd;
  let mirror: Awaited<ReturnType<typeof startMirror>>;
  let svm: SvmServer;
  let agent: Agent | undefined;
  let mnt: ReturnType<typeof scratchMount> | undefined;
  let conf: string;

  before(async () => {
    clamd = await startClamd();
    mirror = await startMirror();
    const dir = tempDir('la-freshclam-');
    conf = path.join(dir, 'freshclam.conf');
    fs.writeFileSync(
      conf,
      [
        `DatabaseDirectory ${clamd.dbDir}`,
        `UpdateLogFile ${path.join(dir, 'freshclam.log')}`,
        `PidFile ${path.join(dir, 'freshclam.pid')}`,
        'DatabaseOwner root',
        'Foreground yes',
        // No official databases: nothing but the custom one is fetched, and nothing leaves this machine.
        'ExcludeDatabase main',
        'ExcludeDatabase daily',
        'ExcludeDatabase bytecode',
        `DatabaseMirror ${mirror.url}`,
        'ScriptedUpdates no',
        `DatabaseCustomURL ${mirror.url}/lightagent.ndb`,
        `NotifyClamd ${clamd.conf}`,
        'MaxAttempts 1',
        'ConnectTimeout 10',
        'ReceiveTimeout 30',
        '',
      ].join('\n'),
    );
    mirror.publish(DB_V1);
    const out = await freshclam(conf);
    assert.match(out, /lightagent\.ndb updated/, out);
    // clamd told by NotifyClamd: version 1 in force before the SVM starts.
    await until(() => fs.existsSync(path.join(clamd.dbDir, 'lightagent.ndb')), 10_000, 'lightagent.ndb');
    svm = await startSvm({
      host: '127.0.0.1',
      port: 0,
      tokens: [{ tenant: 'default', token: 'test-token' }],
      engine: await ClamavEngine.create({ address: clamd.socket, databaseDir: clamd.dbDir, versionIntervalMs: 1000 }),
      cache: new MemoryVerdictCache(1000),
      reportIntervalMs: 1000,
      signatureCheckMs: 200,
      closeGraceMs: 500,
    });
  });

  after(async () => {
    await agent?.stop().catch(() => undefined);
    mnt?.unmount();
    await svm?.close();
    await mirror?.close();
    await clamd?.stop();
  });

  it('a file allowed before is refused at its next open once freshclam brought the signature that flags it', async () => {
    mnt = scratchMount('la-freshclam-mnt-', '16m');
    const probe = path.join(mnt.dir, 'probe.txt');
    fs.writeFileSync(probe, `${PROBE_TEXT}\n`);
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, mode: 'fanotify', args: ['--deadline', '5s'], watchdogMs: 240_000 });
    const events: SvmEvent[] = [];
    const unsubscribe = svm.core.events.subscribe((e) => events.push(e));
    try {
      // Before: allowed (twice: the second open is answered by the agent's clean mark/cache).
      assert.equal(await fs.promises.readFile(probe, 'utf8'), `${PROBE_TEXT}\n`);
      assert.equal(await fs.promises.readFile(probe, 'utf8'), `${PROBE_TEXT}\n`);
      const g1 = svm.core.generation();
      const st1 = await agent.status();
      assert.equal(st1.svm.generation, g1);
      assert.equal(typeof st1.svm.signatureAgeSeconds, 'number', `the agent shows the age: ${JSON.stringify(st1.svm)}`);
      assert.equal(st1.svm.signaturesStale, false);

      // The update: the mirror publishes version 2, freshclam fetches it and tells clamd.
      mirror.publish(DB_V2);
      const t0 = Date.now();
      const out = await freshclam(conf);
      assert.match(out, /lightagent\.ndb updated/, out);
      assert.equal(fs.readFileSync(path.join(clamd.dbDir, 'lightagent.ndb'), 'utf8'), DB_V2);
      // The SVM takes the new generation (one VERSION look after clamd reloaded) and publishes it.
      const g2 = await until(() => (svm.core.generation() !== g1 ? svm.core.generation() : undefined), 20_000, 'the new generation');
      await until(() => events.some((e) => e.kind === 'signatures' && e.generation === g2), 5000, 'the signatures event');
      // The agent hears it.
      await until(async () => (await agent!.status()).svm.generation === g2, 10_000, 'the agent to learn the new generation');
      const announcedMs = Date.now() - t0;

      // Refused at its next open (EPERM), or already gone: the agent's signature refresh judges its
      // stale clean verdicts in the background and quarantines what the new signatures flag (docs/cache.md).
      let code: string | undefined;
      await assert.rejects(fs.promises.readFile(probe), (e: NodeJS.ErrnoException) => {
        code = e.code;
        return e.code === 'EPERM' || e.code === 'ENOENT';
      });
      if (code === 'ENOENT') {
        // The detection is recorded once the quarantine's move has returned (OnAccessHandler
        // quarantineOnce, then record): the file can be gone a moment before it is listed.
        await until(
          async () => ((await agent!.status()).detections.recent.some((d) => d.path === probe) ? true : undefined),
          5000,
          'gone because the agent detected it (a detection of the probe in its status)',
        );
      }
      process.stderr.write(`freshclam e2e: update to agent told in ${announcedMs} ms; generations ${g1} -> ${g2}; next open: ${code}\n`);

      // Nothing but the custom database was asked for: no official database, nothing else.
      assert.ok(mirror.asked.length >= 2, `asked: ${mirror.asked.join(', ')}`);
      for (const a of mirror.asked) assert.match(a, /^(GET|HEAD) \/lightagent\.ndb$/, `asked: ${mirror.asked.join(', ')}`);
      const h = svm.health();
      assert.equal(h.signatures.generation, g2);
      assert.equal(h.signatures.source, 'database-dir');
      assert.equal(h.signatures.stale, false);
    } finally {
      unsubscribe();
    }
  });
});
