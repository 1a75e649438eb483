// The Gotify notifier against a real HTTP server on 127.0.0.1: the exact request (POST
// <base>/message, the app token in X-Gotify-Key and nowhere else, the JSON body) and the failure
// modes (Gotify's own error description, 500, 429 then 200, no answer, connection refused).
import * as assert from 'uvu/assert';
import { notificationSubject, notificationText } from '../pve-dm.ts';
import { withServer } from './support/http-server.ts';
import { httpFailureModes, loadNotifier, runNotifier, sampleResult } from './support/notify.ts';
import { test } from './harness.ts';

const gotify = await loadNotifier('gotify');
const TOKEN = 'AWf3Kq.x9LmT2pZ';
const PLAIN = { 'client::display': { contentType: 'text/plain' } };
const gotifyError = (status: number, error: string, description: string) => JSON.stringify({ error, errorCode: status, errorDescription: description });

const noToken = (detail: string | undefined) => assert.not.ok((detail ?? '').includes(TOKEN), `the token leaked: ${detail}`);

test('gotify: not configured without PVE_DM_GOTIFY_URL (a token alone is not enough), so not called', async () => {
  assert.equal(await runNotifier(gotify, {}), []);
  assert.equal(await runNotifier(gotify, { PVE_DM_GOTIFY_TOKEN: TOKEN }), []);
});

test('gotify: POSTs {title, message, priority 8, extras} to <base>/message, the token in X-Gotify-Key only', async () => {
  await withServer([{ status: 200, body: '{"id":25,"appid":3,"message":"...","title":"...","priority":8,"date":"2025-01-01T00:00:00Z"}' }], async (server) => {
    const { result } = await sampleResult('multi-pool');
    const outcome = await runNotifier(gotify, { PVE_DM_GOTIFY_URL: `${server.url}/`, PVE_DM_GOTIFY_TOKEN: TOKEN });
    assert.equal(outcome, [{ plugin: 'gotify', ok: true, detail: 'HTTP 200' }]);
    assert.is(server.received.length, 1);
    const [request] = server.received;
    assert.is(request?.method, 'POST');
    assert.is(request?.path, '/message', 'the trailing slash of the base is not doubled');
    assert.is(request?.headers['x-gotify-key'], TOKEN);
    assert.is(request?.headers['content-type'], 'application/json');
    assert.is(request?.headers.authorization, undefined);
    const others = Object.entries(request?.headers ?? {}).filter(([name]) => name !== 'x-gotify-key');
    assert.not.ok(JSON.stringify(others).includes(TOKEN), 'the token is in no other header');
    assert.not.ok((request?.path ?? '').includes(TOKEN), 'the token is not in the URL');
    assert.not.ok((request?.body ?? '').includes(TOKEN), 'the token is not in the body');
    assert.equal(JSON.parse(request?.body ?? ''), {
      title: notificationSubject(result),
      message: notificationText(result),
      priority: 8,
      extras: PLAIN,
    });
    assert.match(JSON.parse(request?.body ?? '').title, /🚨/, 'the title keeps its emoji');
  });
});

test('gotify: a base with a path prefix and no slash; warning → priority 5, ok → priority 2', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const settings = { PVE_DM_GOTIFY_URL: `${server.url}/gotify`, PVE_DM_GOTIFY_TOKEN: TOKEN };
    assert.equal(await runNotifier(gotify, settings, 'cluster-migrated'), [{ plugin: 'gotify', ok: true, detail: 'HTTP 200' }]);
    assert.equal(await runNotifier(gotify, settings, 'default-install'), [{ plugin: 'gotify', ok: true, detail: 'HTTP 200' }]);
    const [warning, ok] = server.received;
    assert.is(server.received.length, 2);
    assert.is(warning?.path, '/gotify/message');
    assert.is(JSON.parse(warning?.body ?? '').priority, 5);
    assert.is(JSON.parse(warning?.body ?? '').title, notificationSubject((await sampleResult('cluster-migrated')).result));
    assert.is(ok?.path, '/gotify/message');
    assert.is(JSON.parse(ok?.body ?? '').priority, 2);
  });
});

test('gotify: no PVE_DM_GOTIFY_TOKEN: a clear failure, no request', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const [outcome] = await runNotifier(gotify, { PVE_DM_GOTIFY_URL: server.url });
    assert.is(outcome?.detail, 'plugin gotify, hook notify: PVE_DM_GOTIFY_TOKEN is not set (an application token from the Gotify server)');
    assert.is(server.received.length, 0);
  });
});

test('gotify: 401 with Gotify\'s error: not retried, the detail carries the description, never the token', async () => {
  const description = 'you need to provide a valid access token or user credentials to access this api';
  await withServer([{ status: 401, body: gotifyError(401, 'Unauthorized', description) }], async (server) => {
    const [outcome] = await runNotifier(gotify, { PVE_DM_GOTIFY_URL: server.url, PVE_DM_GOTIFY_TOKEN: TOKEN });
    assert.is(outcome?.ok, false);
    assert.match(outcome?.detail ?? '', /^plugin gotify, hook notify: HTTP 401: /);
    assert.ok((outcome?.detail ?? '').includes(description), `the description is missing: ${outcome?.detail}`);
    assert.is(server.received.length, 1);
    noToken(outcome?.detail);
  });
}, 10_000);

test('gotify: a service that echoes the token in its error never gets it into the detail', async () => {
  await withServer([{ status: 400, body: gotifyError(400, 'Bad Request', `token ${TOKEN} is not an application token`) }], async (server) => {
    const [outcome] = await runNotifier(gotify, { PVE_DM_GOTIFY_URL: server.url, PVE_DM_GOTIFY_TOKEN: TOKEN });
    assert.is(outcome?.ok, false);
    assert.match(outcome?.detail ?? '', /^plugin gotify, hook notify: HTTP 400: /);
    noToken(outcome?.detail);
  });
}, 10_000);

httpFailureModes(test, 'gotify', (url) => ({ PVE_DM_GOTIFY_URL: url, PVE_DM_GOTIFY_TOKEN: TOKEN }), { answer: { status: 200, body: '{"id":1}' }, detail: 'HTTP 200' });

test.run();
