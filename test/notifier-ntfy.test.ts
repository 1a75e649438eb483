// The ntfy notifier against a real HTTP server on 127.0.0.1: the exact request (method, path,
// auth, the RFC 2047 title decoded back, priority, tags, body) and the failure modes (500, 429
// then 200, no answer, connection refused), with the token never in a failure detail.
import * as assert from 'uvu/assert';
import { createRunner, httpSend, notificationSubject, notificationText, notifyAll } from '../pve-dm.ts';
import { withServer } from './support/http-server.ts';
import { decodeEncodedWords, httpFailureModes, loadNotifier, runNotifier, sampleResult } from './support/notify.ts';
import { test } from './harness.ts';

const ntfy = await loadNotifier('ntfy');
const TOKEN = 'tk_AgQdq7mVBoFD37zQVN29RhuMzNIz2';


const noToken = (detail: string | undefined) => assert.not.ok((detail ?? '').includes(TOKEN), `the token leaked: ${detail}`);

test('ntfy: not configured without PVE_DM_NTFY_URL (a token alone is not enough), so not called', async () => {
  assert.equal(await runNotifier(ntfy, {}), []);
  assert.equal(await runNotifier(ntfy, { PVE_DM_NTFY_TOKEN: TOKEN }), []);
});

test('ntfy: POSTs the text summary to the topic, title RFC 2047-encoded, priority 5 and tags for critical, bearer token', async () => {
  await withServer([{ status: 200, body: '{"id":"hwQ2YpKdmg","time":1735689600,"event":"message","topic":"pve-alerts"}' }], async (server) => {
    const { result } = await sampleResult('multi-pool');
    const outcome = await runNotifier(ntfy, { PVE_DM_NTFY_URL: `${server.url}/pve-alerts`, PVE_DM_NTFY_TOKEN: TOKEN });
    assert.equal(outcome, [{ plugin: 'ntfy', ok: true, detail: 'HTTP 200' }]);
    assert.is(server.received.length, 1);
    const [request] = server.received;
    assert.is(request?.method, 'POST');
    assert.is(request?.path, '/pve-alerts');
    assert.is(request?.headers.authorization, `Bearer ${TOKEN}`);
    assert.is(request?.headers['content-type'], 'text/plain; charset=utf-8');
    const subject = notificationSubject(result);
    assert.match(subject, /🚨/, 'the subject holds emoji (so the encoding matters)');
    assert.is(decodeEncodedWords(String(request?.headers.title)), subject);
    assert.is(request?.headers.priority, '5');
    assert.is(request?.headers.tags, 'rotating_light');
    assert.is(request?.body, notificationText(result));
  });
});

test('ntfy: warning → priority 4 and "warning", ok → priority 2 and "white_check_mark"; no token, no authorization; a trailing slash is dropped', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const settings = { PVE_DM_NTFY_URL: `${server.url}/ntfy/pve/` };
    assert.equal(await runNotifier(ntfy, settings, 'cluster-migrated'), [{ plugin: 'ntfy', ok: true, detail: 'HTTP 200' }]);
    assert.equal(await runNotifier(ntfy, settings, 'default-install'), [{ plugin: 'ntfy', ok: true, detail: 'HTTP 200' }]);
    const [warning, ok] = server.received;
    assert.is(server.received.length, 2);
    assert.is(warning?.path, '/ntfy/pve');
    assert.is(warning?.headers.priority, '4');
    assert.is(warning?.headers.tags, 'warning');
    assert.is(warning?.headers.authorization, undefined);
    assert.is(decodeEncodedWords(String(warning?.headers.title)), notificationSubject((await sampleResult('cluster-migrated')).result));
    assert.is(ok?.headers.priority, '2');
    assert.is(ok?.headers.tags, 'white_check_mark');
    assert.is(decodeEncodedWords(String(ok?.headers.title)), notificationSubject((await sampleResult('default-install')).result));
  });
});

test('ntfy: a long or hostile title stays one header of whole-character encoded-words', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const { result, json, html } = await sampleResult('multi-pool');
    const subject = `⚠️ [nöde\r\nX-Injected: yes] ${'🚨 Grüße '.repeat(12)}`;
    const setting = (key: string) => ({ PVE_DM_NTFY_URL: `${server.url}/pve` } as Record<string, string>)[key];
    const [outcome] = await notifyAll([ntfy], result, { json, html, subject, text: 'short' }, { setting, http: httpSend, runner: createRunner({ allowChanges: false }) });
    assert.is(outcome?.ok, true, outcome?.detail);
    const [request] = server.received;
    assert.is(request?.headers['x-injected'], undefined);
    assert.is(decodeEncodedWords(String(request?.headers.title)), subject);
    assert.ok(String(request?.headers.title).split(' ').length > 3, 'split into several words');
  });
});

test('ntfy: a summary over 4096 bytes is cut at a line to fit (ntfy would make it an attachment)', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const { result, json, html } = await sampleResult('multi-pool');
    const text = Array.from({ length: 200 }, (_, i) => `- vm-${100 + i}-disk-0: tombstone, größer als ntfy erlaubt 🚨`).join('\n');
    assert.ok(Buffer.byteLength(text) > 8000);
    const setting = (key: string) => ({ PVE_DM_NTFY_URL: `${server.url}/pve` } as Record<string, string>)[key];
    const [outcome] = await notifyAll([ntfy], result, { json, html, subject: 's', text }, { setting, http: httpSend, runner: createRunner({ allowChanges: false }) });
    assert.is(outcome?.ok, true, outcome?.detail);
    const body = server.received[0]?.body ?? '';
    assert.ok(Buffer.byteLength(body) <= 4096, `body is ${Buffer.byteLength(body)} bytes`);
    assert.ok(Buffer.byteLength(body) > 3900, 'as much as fits is kept');
    const lines = body.split('\n');
    assert.match(lines.at(-1) ?? '', /^\.\.\. \(cut to fit ntfy/);
    assert.equal(lines.slice(0, -1), text.split('\n').slice(0, lines.length - 1), 'whole lines, from the start');
  });
});

test('ntfy: a URL without a topic, or a token a header cannot carry, fails clearly without a request', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const [noTopic] = await runNotifier(ntfy, { PVE_DM_NTFY_URL: `${server.url}/` });
    assert.is(noTopic?.detail, 'plugin ntfy, hook notify: PVE_DM_NTFY_URL names no topic (expected the server and topic, e.g. https://ntfy.sh/mytopic)');
    const badToken = `${TOKEN}\r\nx-evil: 1`;
    const [bad] = await runNotifier(ntfy, { PVE_DM_NTFY_URL: `${server.url}/pve`, PVE_DM_NTFY_TOKEN: badToken });
    assert.is(bad?.ok, false);
    assert.match(bad?.detail ?? '', /^plugin ntfy, hook notify: PVE_DM_NTFY_TOKEN holds characters an HTTP header cannot carry/);
    noToken(bad?.detail);
    assert.is(server.received.length, 0);
  });
});


test('ntfy: a service that echoes the token in its error never gets it into the detail', async () => {
  await withServer([{ status: 401, body: `{"code":40101,"http":401,"error":"unauthorized: token ${TOKEN} is unknown"}` }], async (server) => {
    const [outcome] = await runNotifier(ntfy, { PVE_DM_NTFY_URL: `${server.url}/pve`, PVE_DM_NTFY_TOKEN: TOKEN });
    assert.is(outcome?.detail, 'plugin ntfy, hook notify: HTTP 401: unauthorized: token [secret] is unknown');
    assert.is(server.received.length, 1, 'a 401 is not retried');
  });
}, 10_000);

httpFailureModes(test, 'ntfy', (url) => ({ PVE_DM_NTFY_URL: `${url}/pve-alerts`, PVE_DM_NTFY_TOKEN: TOKEN }), { answer: { status: 200, body: '{"id":"x"}' }, detail: 'HTTP 200' });

test.run();
