// The generic webhook notifier against a real HTTP server on 127.0.0.1, and the HTTP failure
// modes every notifier shares (500, 429 then 200, no answer, connection refused).
import * as assert from 'uvu/assert';
import { withServer } from './support/http-server.ts';
import { httpFailureModes, loadNotifier, runNotifier } from './support/notify.ts';
import { test } from './harness.ts';

const webhook = await loadNotifier('webhook');

test('webhook: not configured without PVE_DM_WEBHOOK_URL, so not called', async () => {
  assert.equal(await runNotifier(webhook, {}), []);
});

test('webhook: a PVE_DM_WEBHOOK_URL that is not an http(s) URL is one line, and nothing is sent', async () => {
  for (const [value, detail] of [
    ['no-scheme.example', 'PVE_DM_WEBHOOK_URL is not a URL (expected e.g. https://monitoring.example/pve-dm)'],
    ['ftp://monitoring.example/pve-dm', 'PVE_DM_WEBHOOK_URL must be http or https, not ftp:'],
  ]) {
    const [outcome] = await runNotifier(webhook, { PVE_DM_WEBHOOK_URL: value as string });
    assert.equal(outcome, { plugin: 'webhook', ok: false, detail: `plugin webhook, hook notify: ${detail}` });
  }
});

test('webhook: POSTs the JSON report, exactly', async () => {
  await withServer([{ status: 204 }], async (server) => {
    const outcome = await runNotifier(webhook, { PVE_DM_WEBHOOK_URL: `${server.url}/hooks/pve-dm?site=a` });
    assert.equal(outcome, [{ plugin: 'webhook', ok: true, detail: 'HTTP 204' }]);
    assert.is(server.received.length, 1);
    const [request] = server.received;
    assert.is(request?.method, 'POST');
    assert.is(request?.path, '/hooks/pve-dm?site=a');
    assert.is(request?.headers['content-type'], 'application/json');
    assert.is(request?.headers['x-pve-dm-severity'], 'critical');
    const body = JSON.parse(request?.body ?? '');
    assert.is(body.version, 1);
    assert.is(body.node, 'pve-prd-03');
    assert.is(body.grade, 'F');
    assert.equal(body.summary, { entries: 20, valid: 8, conflict: 0, duplicate: 2, tombstone: 2, ignored: 8, unjudged: 0, orphanLvs: 1, poolProblems: 0 });
  });
});

httpFailureModes(test, 'webhook', (url) => ({ PVE_DM_WEBHOOK_URL: url }), { answer: { status: 200, body: 'ok' }, detail: 'HTTP 200' });

test.run();
