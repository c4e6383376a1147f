/**
 * Two live connections with one agent id (a clone of a template that was not sealed) are counted
 * and logged on the SVM; a reconnect after the old connection closed is not.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { metric, rawAgent, startTestSvm } from './helpers.js';

describe('agent ids on the SVM', () => {
  it('counts a second live connection with the same id, per tenant, not a reconnect', async () => {
    const s = await startTestSvm({
      tokens: [
        { tenant: 'a', token: 'token-of-tenant-a' },
        { tenant: 'b', token: 'token-of-tenant-b' },
      ],
    });
    try {
      const first = await rawAgent(s.url, 'token-of-tenant-a');
      await first.next((m) => m.t === 'welcome');
      assert.equal(await metric(s, 'lightagent_svm_duplicate_agent_ids_total'), 0);
      const otherTenant = await rawAgent(s.url, 'token-of-tenant-b');
      await otherTenant.next((m) => m.t === 'welcome');
      assert.equal(await metric(s, 'lightagent_svm_duplicate_agent_ids_total'), 0, 'the same id in another tenant is another agent');
      const clone = await rawAgent(s.url, 'token-of-tenant-a');
      await clone.next((m) => m.t === 'welcome');
      assert.equal(await metric(s, 'lightagent_svm_duplicate_agent_ids_total'), 1);
      first.ws.close();
      clone.ws.close();
      await first.closed;
      await clone.closed;
      await new Promise((r) => setTimeout(r, 50));
      const again = await rawAgent(s.url, 'token-of-tenant-a');
      await again.next((m) => m.t === 'welcome');
      assert.equal(await metric(s, 'lightagent_svm_duplicate_agent_ids_total'), 1, 'a reconnect after close is not a duplicate');
      again.ws.close();
      otherTenant.ws.close();
    } finally {
      await s.close();
    }
  });
});
