/**
 * The signature refresh end to end: real `lightagent run` agents (fanotify, as root, each on a
 * tmpfs made for the test, under a watchdog) and a real SVM in this process whose builtin
 * signatures are reloaded from a file. After the generation change and the refresh, the files
 * open with no permission event and no SVM request (the kernel marks came back), the file that
 * the new signatures flag is quarantined, and a second agent after the same change promotes its
 * verdicts without uploading a byte. (An open during the refresh: test/scan/signature-refresh.test.ts.)
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { formatStatus } from '../../src/cli/commands/status.js';
import { closeLogging, configureLogging } from '../../src/log.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { SvmServer } from '../../src/svm/server.js';
import { quarantineList, startAgent, type Agent } from '../helpers/agent.js';
import { hdbLine, noise } from '../helpers/fixtures.js';
import { eventually, needRoot, scratchMount, tempDir } from '../helpers/procs.js';
import { metric } from '../svm/helpers.js';
import { eventuallyAsync as until } from '../svm/inventory-helpers.js';

const skip = needRoot();

const N = 40;
const XCONTENT = Buffer.concat([Buffer.from('flagged by the next signatures '), noise(4000, 77)]);

describe('daemon: signature refresh after a generation change (fanotify)', { skip }, () => {
  const dir = tempDir('la-refresh-agent-');
  const sigFile = path.join(dir, 'sigs.hdb');
  let svm: SvmServer;
  const mounts: Array<ReturnType<typeof scratchMount>> = [];
  const agents: Agent[] = [];

  before(async () => {
    configureLogging({ file: path.join(dir, 'svm.jsonl'), level: 'warn' });
    fs.writeFileSync(sigFile, `${hdbLine('nothing here', 'Test.Unrelated')}\n`);
    svm = await SvmServer.start({
      host: '127.0.0.1',
      port: 0,
      tokens: [{ tenant: 'a', token: 'test-token' }],
      engine: new BuiltinEngine({ signatureFiles: [sigFile] }),
      cache: new MemoryVerdictCache(10_000),
      closeGraceMs: 500,
    });
  });
  after(async () => {
    for (const a of agents) await a.stop().catch(() => undefined);
    await svm?.close();
    for (const m of mounts) m.unmount();
    await closeLogging();
  });

  /** A guest: a tmpfs with the same files, an agent protecting it; returns once every file is judged and marked. */
  async function guest(): Promise<{ mnt: ReturnType<typeof scratchMount>; agent: Agent; stateDir: string }> {
    const mnt = scratchMount('la-refresh-');
    mounts.push(mnt);
    const stateDir = tempDir('la-state-');
    const agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify' });
    agents.push(agent);
    for (let i = 0; i < N; i++) fs.writeFileSync(path.join(mnt.dir, `f${i}.bin`), noise(1500 + i * 41, i + 1));
    fs.writeFileSync(path.join(mnt.dir, 'x.bin'), XCONTENT);
    // Each close-write is scanned in the background and then marked.
    await until(async () => (await agent.status()).backend.writtenMarks! >= N + 1, 20_000, 'every written file marked');
    return { mnt, agent, stateDir };
  }

  const readAll = (d: string) => {
    for (let i = 0; i < N; i++) fs.readFileSync(path.join(d, `f${i}.bin`));
  };

  it('gives marks back, quarantines what is newly flagged, and a second guest uploads 0 bytes', async () => {
    const a = await guest();
    const b = await guest();
    // Guest b is off during the change (its cache saved); it comes back after guest a refreshed.
    await b.agent.stop();
    const before = await a.agent.status();
    const oldGen = before.svm.generation;

    fs.appendFileSync(sigFile, `${hdbLine(XCONTENT, 'Test.NewlyBad')}\n`);
    const reload = await svm.reloadSignatures();
    assert.notEqual(reload.generation, oldGen);
    const ra = await until(
      async () => {
        const r = (await a.agent.status()).refresh;
        return r?.generation === reload.generation && r.state !== 'running' ? r : undefined;
      },
      60_000,
      'guest a refreshed',
    );
    assert.equal(ra.state, 'done', JSON.stringify(ra));
    assert.equal(ra.total, N + 1);
    assert.equal(ra.unknown, N + 1, 'the SVM knew nothing under the new generation');
    assert.equal(ra.uploaded, N + 1);
    assert.ok(ra.marks >= N, `marks back: ${ra.marks}`);
    assert.match(
      formatStatus(await a.agent.status()),
      new RegExp(
        `^refresh: {5}done for generation ${reload.generation} \\(\\d+ ms, ended .*\\): ${N + 1} of ${N + 1} verdicts, 0 promoted`,
        'm',
      ),
    );
    // x.bin: judged infected in the walk, quarantined as any background detection.
    const x = path.join(a.mnt.dir, 'x.bin');
    await eventually(() => !fs.existsSync(x), 10_000, 'x.bin quarantined');
    assert.ok(quarantineList(a.stateDir).some((q) => q.originalPath === x && q.threat === 'Test.NewlyBad'));

    // The next opens: no permission event, no SVM request.
    const events0 = (await a.agent.status()).backend;
    const lookups0 = await metric(svm, 'lightagent_svm_lookups_total');
    const uploads0 = await metric(svm, 'lightagent_svm_uploads_total');
    readAll(a.mnt.dir);
    const events1 = (await a.agent.status()).backend;
    assert.equal(events1.open, events0.open, 'no permission event: the ignore marks are back');
    assert.equal(await metric(svm, 'lightagent_svm_lookups_total'), lookups0);
    assert.equal(await metric(svm, 'lightagent_svm_uploads_total'), uploads0);

    // Guest b after the same change: everything known to the SVM, promoted, 0 bytes.
    const bytes0 = await metric(svm, 'lightagent_svm_bytes_received_total');
    const b2 = await startAgent({ svm: svm.url, protect: b.mnt.dir, stateDir: b.stateDir, mode: 'fanotify' });
    agents.push(b2);
    const rb = await until(
      async () => {
        const r = (await b2.status()).refresh;
        return r?.generation === reload.generation && r.state !== 'running' ? r : undefined;
      },
      60_000,
      'guest b refreshed',
    );
    assert.equal(rb.state, 'done', JSON.stringify(rb));
    assert.equal(rb.promoted, N);
    assert.equal(rb.infected, 1);
    assert.equal(rb.bytes, 0);
    assert.equal(await metric(svm, 'lightagent_svm_bytes_received_total'), bytes0, 'the SVM received nothing from guest b');
    const xb = path.join(b.mnt.dir, 'x.bin');
    await eventually(() => !fs.existsSync(xb), 10_000, "guest b's x.bin quarantined");
    const e0 = (await b2.status()).backend;
    const l0 = await metric(svm, 'lightagent_svm_lookups_total');
    readAll(b.mnt.dir);
    assert.equal((await b2.status()).backend.open, e0.open, 'guest b: no permission event either');
    assert.equal(await metric(svm, 'lightagent_svm_lookups_total'), l0);
  });
});
