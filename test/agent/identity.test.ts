/**
 * The agent id and clone detection (src/agent/identity.ts): a state directory carried into another
 * machine makes a new id; the same machine keeps its id; `seal` drops it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  agentIdentity,
  cloneReason,
  dropIdentity,
  normalizeMachineId,
  normalizeProductUuid,
  readInstanceFacts,
  SEALED_FILE,
} from '../../src/agent/identity.js';
import { tempDir } from '../helpers/procs.js';

const MID_A = '0123456789abcdef0123456789abcdef';
const MID_B = 'fedcba9876543210fedcba9876543210';
const UUID_A = '4c4c4544-0042-3510-8044-b4c04f4a4d32';
const UUID_B = '9a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9';

describe('agent identity', () => {
  it('keeps its id on the same machine, across restarts and a new hostname', () => {
    const dir = tempDir('la-id-');
    const a = agentIdentity(dir, { machineId: MID_A, productUuid: UUID_A, hostname: 'tmpl' });
    assert.equal(a.persistent, true);
    assert.match(a.agentId, /^tmpl-[0-9a-f]{16}$/);
    assert.equal(a.clonedFrom, undefined);
    assert.equal(agentIdentity(dir, { machineId: MID_A, productUuid: UUID_A, hostname: 'tmpl' }).agentId, a.agentId);
    // DHCP renamed the VM: not a clone
    assert.equal(agentIdentity(dir, { machineId: MID_A, productUuid: UUID_A, hostname: 'renamed' }).agentId, a.agentId);
  });

  it('a copy of the state directory on another VM (DMI UUID or machine-id differ) makes a new id, once', () => {
    const tmpl = tempDir('la-id-tmpl-');
    const first = agentIdentity(tmpl, { machineId: MID_A, productUuid: UUID_A, hostname: 'tmpl' }).agentId;
    const clone1 = tempDir('la-id-c1-');
    const clone2 = tempDir('la-id-c2-');
    fs.cpSync(tmpl, clone1, { recursive: true });
    fs.cpSync(tmpl, clone2, { recursive: true });
    // Unsealed image: machine-id copied along, the hypervisor gave each clone its own UUID
    const c1 = agentIdentity(clone1, { machineId: MID_A, productUuid: UUID_B, hostname: 'tmpl' });
    assert.notEqual(c1.agentId, first);
    assert.equal(c1.clonedFrom, first);
    assert.match(c1.cloneReason!, /DMI product UUID/);
    assert.equal(fs.readFileSync(path.join(clone1, 'agent-id'), 'utf8').trim(), c1.agentId);
    // No DMI (some hypervisors), machine-id regenerated at first boot
    const c2 = agentIdentity(clone2, { machineId: MID_B, hostname: 'tmpl' });
    assert.notEqual(c2.agentId, first);
    assert.notEqual(c2.agentId, c1.agentId);
    assert.match(c2.cloneReason!, /machine-id/);
    // The clone keeps its new id from then on
    assert.equal(agentIdentity(clone1, { machineId: MID_A, productUuid: UUID_B, hostname: 'tmpl' }).agentId, c1.agentId);
    assert.equal(agentIdentity(clone2, { machineId: MID_B, hostname: 'tmpl' }).agentId, c2.agentId);
  });

  it('a fact unknown then or now decides nothing (no false clone when DMI disappears)', () => {
    assert.equal(cloneReason({ machineId: MID_A, productUuid: UUID_A, hostname: 'a' }, { machineId: MID_A, hostname: 'b' }), undefined);
    assert.equal(cloneReason({ hostname: 'a' }, { machineId: MID_B, productUuid: UUID_B, hostname: 'a' }), undefined);
  });

  it('an id from before instance.json existed is adopted, and clones of it are recognised after', () => {
    const dir = tempDir('la-id-old-');
    fs.writeFileSync(path.join(dir, 'agent-id'), 'oldhost-0011223344556677\n');
    const a = agentIdentity(dir, { machineId: MID_A, hostname: 'oldhost' });
    assert.equal(a.agentId, 'oldhost-0011223344556677');
    assert.ok(fs.existsSync(path.join(dir, 'instance.json')));
    assert.notEqual(agentIdentity(dir, { machineId: MID_B, hostname: 'oldhost' }).agentId, 'oldhost-0011223344556677');
  });

  it('hostile or damaged files are not trusted: a bad id, a huge or broken instance.json, a symlink', () => {
    const dir = tempDir('la-id-bad-');
    fs.writeFileSync(path.join(dir, 'agent-id'), '../../etc/passwd\n');
    const a = agentIdentity(dir, { machineId: MID_A, hostname: 'h' });
    assert.match(a.agentId, /^h-[0-9a-f]{16}$/);
    fs.writeFileSync(path.join(dir, 'instance.json'), '{'.repeat(10_000));
    const b = agentIdentity(dir, { machineId: MID_A, hostname: 'h' });
    assert.equal(b.agentId, a.agentId, 'a broken record is rewritten, the id kept');
    const dir2 = tempDir('la-id-link-');
    fs.symlinkSync('/etc/hostname', path.join(dir2, 'agent-id'));
    assert.match(agentIdentity(dir2, { machineId: MID_A, hostname: 'h' }).agentId, /^h-[0-9a-f]{16}$/);
  });

  it('dropIdentity removes what is per instance, and the next start says it follows a seal', () => {
    const dir = tempDir('la-id-seal-');
    const a = agentIdentity(dir, { machineId: MID_A, hostname: 't' });
    fs.writeFileSync(path.join(dir, 'events.jsonl'), '{}\n');
    fs.writeFileSync(path.join(dir, 'cache.v1'), 'kept');
    assert.deepEqual(dropIdentity(dir).sort(), ['agent-id', 'events.jsonl', 'instance.json']);
    assert.equal(fs.readFileSync(path.join(dir, 'cache.v1'), 'utf8'), 'kept');
    fs.writeFileSync(path.join(dir, SEALED_FILE), '{}\n');
    const b = agentIdentity(dir, { machineId: MID_A, hostname: 't' });
    assert.notEqual(b.agentId, a.agentId);
    assert.equal(b.afterSeal, true);
  });

  it('normalizes facts: placeholders and malformed values are unknown', () => {
    assert.equal(normalizeMachineId('uninitialized'), undefined);
    assert.equal(normalizeMachineId(''), undefined);
    assert.equal(normalizeMachineId(MID_A.toUpperCase()), MID_A);
    assert.equal(normalizeProductUuid('00000000-0000-0000-0000-000000000000'), undefined);
    assert.equal(normalizeProductUuid('FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF'), undefined);
    assert.equal(normalizeProductUuid('03000200-0400-0500-0006-000700080009'), undefined);
    assert.equal(normalizeProductUuid(UUID_A.toUpperCase()), UUID_A);
    assert.equal(normalizeProductUuid('not-a-uuid'), undefined);
  });

  it('reads the facts from the files it is given', () => {
    const dir = tempDir('la-id-facts-');
    fs.writeFileSync(path.join(dir, 'machine-id'), `${MID_A}\n`);
    fs.writeFileSync(path.join(dir, 'uuid'), `${UUID_A.toUpperCase()}\n`);
    const f = readInstanceFacts({
      machineIdFile: path.join(dir, 'machine-id'),
      productUuidFile: path.join(dir, 'uuid'),
      hostname: () => 'vm1',
    });
    assert.deepEqual(f, { machineId: MID_A, productUuid: UUID_A, hostname: 'vm1' });
    const none = readInstanceFacts({
      machineIdFile: path.join(dir, 'absent'),
      productUuidFile: path.join(dir, 'absent2'),
      hostname: () => 'vm1',
    });
    assert.deepEqual(none, { machineId: undefined, productUuid: undefined, hostname: 'vm1' });
  });
});
