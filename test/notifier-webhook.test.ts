// The generic webhook notifier against a real HTTP server on 127.0.0.1, and the HTTP failure
// modes every notifier shares (500, 429 then 200, no answer, connection refused).
import * as assert from 'uvu/assert';
import { refusedUrl, startServer } from './support/http-server.ts';
import { loadNotifier, runNotifier } from './support/notify.ts';
import { test } from './harness.ts';

const webhook = await loadNotifier('webhook');

test('webhook: not configured without PVE_DM_WEBHOOK_URL, so not called', async () => {
  assert.equal(await runNotifier(webhook, {}), []);
});

test('webhook: POSTs the JSON report, exactly', async () => {
  const server = await startServer([{ status: 204 }]);
  try {
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
    assert.equal(body.summary, { entries: 20, valid: 8, duplicate: 2, tombstone: 2, ignored: 8 });
  } finally {
    await server.close();
  }
});

test('HTTP 500 three times: a clear one-line failure with the service\'s message, after bounded retries', async () => {
  const server = await startServer([{ status: 500, headers: { 'retry-after': '0' }, body: '{"message":"database is down"}' }]);
  try {
    const [outcome] = await runNotifier(webhook, { PVE_DM_WEBHOOK_URL: server.url });
    assert.is(outcome?.ok, false);
    assert.is(outcome?.detail, 'plugin webhook, hook notify: HTTP 500 after 3 attempts: database is down');
    assert.is(server.received.length, 3);
  } finally {
    await server.close();
  }
});

test('HTTP 429 then 200: retried after Retry-After, then delivered', async () => {
  const server = await startServer([{ status: 429, headers: { 'retry-after': '1' }, body: 'slow down' }, { status: 200, body: 'ok' }]);
  try {
    const started = Date.now();
    const outcome = await runNotifier(webhook, { PVE_DM_WEBHOOK_URL: server.url });
    assert.equal(outcome, [{ plugin: 'webhook', ok: true, detail: 'HTTP 200' }]);
    assert.is(server.received.length, 2);
    assert.ok(Date.now() - started >= 900, 'waited as Retry-After asked');
    assert.is(server.received[0]?.body, server.received[1]?.body, 'the same body twice');
  } finally {
    await server.close();
  }
});

test('a server that never answers: the request\'s time limit fails it, no hang', async () => {
  const server = await startServer(['hang']);
  try {
    const [outcome] = await runNotifier(webhook, { PVE_DM_WEBHOOK_URL: server.url }, 'multi-pool', 500);
    assert.is(outcome?.ok, false);
    assert.match(outcome?.detail ?? '', /^plugin webhook, hook notify: 127\.0\.0\.1:\d+: no answer within 500 ms$/);
  } finally {
    await server.close();
  }
}, 10_000);

test('connection refused: one line naming the host', async () => {
  const [outcome] = await runNotifier(webhook, { PVE_DM_WEBHOOK_URL: await refusedUrl() });
  assert.is(outcome?.ok, false);
  assert.match(outcome?.detail ?? '', /^plugin webhook, hook notify: 127\.0\.0\.1:\d+: ECONNREFUSED/);
});

test.run();
