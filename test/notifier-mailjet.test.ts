// The Mailjet notifier (v3.1 send API) against a real HTTP server on 127.0.0.1: the exact request,
// Mailjet's own error shapes, credentials kept out of every message, and the HTTP failure modes.
import * as assert from 'uvu/assert';
import { notificationSubject, notificationText, notifyAll } from '../pve-dm.ts';
import { withServer, type Received } from './support/http-server.ts';
import { httpFailureModes, loadNotifier, runNotifier, sampleResult } from './support/notify.ts';
import { test } from './harness.ts';

const mailjet = await loadNotifier('mailjet');

const KEY = 'a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6';
const SECRET = 'f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5';
const BASIC = `Basic ${Buffer.from(`${KEY}:${SECRET}`).toString('base64')}`;

const settings = (url: string, to = 'ops@example.org'): Record<string, string> => ({
  PVE_DM_MAILJET_KEY: KEY,
  PVE_DM_MAILJET_SECRET: SECRET,
  PVE_DM_MAILJET_FROM: 'pve-dm@example.org',
  PVE_DM_MAILJET_TO: to,
  PVE_DM_MAILJET_URL: `${url}/v3.1/send`,
});

/** What Mailjet answers when it accepted the message. */
const SUCCESS = {
  status: 200,
  body: JSON.stringify({
    Messages: [{ Status: 'success', CustomID: '', To: [{ Email: 'ops@example.org', MessageUUID: '1ab23cd4-e567-8901-2345-6789f0gh1i2j', MessageID: 456, MessageHref: 'https://api.mailjet.com/v3/REST/message/456' }], Cc: [], Bcc: [] }],
  }),
};

/** Mailjet's real answer to a wrong key or secret. */
const UNAUTHORIZED = {
  status: 401,
  body: JSON.stringify({
    ErrorIdentifier: '8e28ac9c-1fd7-41ad-825f-1d60bc459189',
    StatusCode: 401,
    ErrorMessage:
      'API key authentication/authorization failure. You may be unauthorized to access the API or your API key may be expired. Visit API keys management section to check your keys.',
  }),
};

/** Mailjet's real answer to a message it refuses (here, a bad recipient). */
const INVALID_EMAIL = JSON.stringify({
  Messages: [
    {
      Status: 'error',
      Errors: [{ ErrorIdentifier: 'f987008f-251a-4dff-8ffc-40f1583ad7bc', ErrorCode: 'mj-0013', StatusCode: 400, ErrorMessage: '"x" is an invalid email address.', ErrorRelatedTo: ['To[0].Email'] }],
    },
  ],
});

const noSecret = (detail: string) => {
  for (const secret of [KEY, SECRET, BASIC.slice('Basic '.length)]) assert.not.ok(detail.includes(secret), `a credential leaked into: ${detail}`);
};

test('mailjet: not configured (each setting missing in turn, or only empty recipients), so not called', async () => {
  await withServer([SUCCESS], async (server) => {
    const full = settings(server.url);
    for (const missing of ['PVE_DM_MAILJET_KEY', 'PVE_DM_MAILJET_SECRET', 'PVE_DM_MAILJET_FROM', 'PVE_DM_MAILJET_TO']) {
      const partial = { ...full };
      delete partial[missing];
      assert.equal(await runNotifier(mailjet, partial), [], `without ${missing}`);
    }
    assert.equal(await runNotifier(mailjet, { ...full, PVE_DM_MAILJET_TO: ' , ,' }), [], 'only empty recipients');
    assert.equal(await runNotifier(mailjet, {}), []);
    assert.is(server.received.length, 0, 'nothing reached the server');
    // The same settings with every field present are configured: the checks above are not vacuous.
    assert.is((await runNotifier(mailjet, full)).length, 1);
  });
}, 10_000);

test('mailjet: POSTs the v3.1 send request, exactly (auth, headers, every field of the body)', async () => {
  await withServer([SUCCESS], async (server) => {
    const outcome = await runNotifier(mailjet, settings(server.url));
    assert.equal(outcome, [{ plugin: 'mailjet', ok: true, detail: 'sent to 1 recipient' }]);
    assert.is(server.received.length, 1);
    const request = server.received[0] as Received;
    assert.is(request.method, 'POST');
    assert.is(request.path, '/v3.1/send');
    assert.is(request.headers.authorization, BASIC);
    assert.is(request.headers['content-type'], 'application/json');
    assert.not.ok(request.path.includes(KEY) || request.path.includes(SECRET), 'no credential in the URL');

    const { result, html } = await sampleResult();
    const subject = notificationSubject(result);
    assert.ok(subject.startsWith('🚨 [pve-prd-03] CRITICAL: 2 DUPLICATE DM entries'), subject);
    const body = JSON.parse(request.body);
    assert.equal(Object.keys(body), ['Messages']);
    assert.is(body.Messages.length, 1);
    const [message] = body.Messages;
    assert.equal(Object.keys(message).sort(), ['From', 'HTMLPart', 'Subject', 'TextPart', 'To']);
    assert.equal(message.From, { Email: 'pve-dm@example.org', Name: 'pve-dm' });
    assert.equal(message.To, [{ Email: 'ops@example.org' }]);
    assert.is(message.Subject, '🚨 [pve-prd-03] CRITICAL: 2 DUPLICATE DM entries causing VM failures! Grade: F');
    assert.is(message.Subject, subject);
    assert.is(message.TextPart, notificationText(result));
    assert.ok(message.TextPart.includes('- rescue171: duplicate, duplicate-table; remedy: dmsetup remove rescue171'));
    // runNotifier renders its own copy of the sample, so only the generation time may differ.
    const untimed = (page: string) => page.replace(/Generated \d{4}-\d\d-\d\dT[\d:.]+Z/, 'Generated <time>');
    assert.match(message.HTMLPart, /Generated \d{4}-\d\d-\d\dT[\d:.]+Z from a capture/);
    assert.is(untimed(message.HTMLPart), untimed(html));
    assert.ok(message.HTMLPart.length > 1000 && message.HTMLPart.includes('data-section="problems"'), 'the rendered HTML report');
  });
}, 10_000);

test('mailjet: several recipients, trimmed, empty ones ignored', async () => {
  await withServer([SUCCESS], async (server) => {
    const outcome = await runNotifier(mailjet, settings(server.url, ' ops@example.org, ,dba@example.org,  oncall@example.net ,'));
    assert.equal(outcome, [{ plugin: 'mailjet', ok: true, detail: 'sent to 3 recipients' }]);
    const body = JSON.parse(server.received[0]?.body ?? '');
    assert.equal(body.Messages[0].To, [{ Email: 'ops@example.org' }, { Email: 'dba@example.org' }, { Email: 'oncall@example.net' }]);
  });
}, 10_000);

test('mailjet: a PVE_DM_MAILJET_URL that is not an http(s) URL is one line, and nothing is sent', async () => {
  const [outcome] = await runNotifier(mailjet, settings('file:///etc/passwd'));
  assert.equal(outcome, { plugin: 'mailjet', ok: false, detail: 'plugin mailjet, hook notify: PVE_DM_MAILJET_URL must be http or https, not file:' });
});

test('mailjet: without PVE_DM_MAILJET_URL it posts to the public v3.1 send API', async () => {
  // No network here: the context's http records the request instead of sending it.
  const { PVE_DM_MAILJET_URL: _unused, ...noUrl } = settings('http://unused');
  const urls: string[] = [];
  const { result } = await sampleResult();
  const outcome = await notifyAll([mailjet], result, { json: '{}', html: '<p>x</p>', subject: 's', text: 't' }, {
    setting: (key) => noUrl[key],
    http: async (request) => {
      urls.push(request.url);
      return { status: 200, body: SUCCESS.body };
    },
    runner: async () => ({ exitCode: 0, stdout: '', stderr: '' }),
  });
  assert.equal(outcome, [{ plugin: 'mailjet', ok: true, detail: 'sent to 1 recipient' }]);
  assert.equal(urls, ['https://api.mailjet.com/v3.1/send']);
}, 10_000);

test('mailjet: 401 with Mailjet\'s own error gives one line with its message, no credential', async () => {
  await withServer([UNAUTHORIZED], async (server) => {
    const [outcome] = await runNotifier(mailjet, settings(server.url));
    assert.is(outcome?.ok, false);
    assert.is(
      outcome?.detail,
      'plugin mailjet, hook notify: HTTP 401: API key authentication/authorization failure. You may be unauthorized to access the API or your API key may be expired. Visit API keys management section to check your keys.',
    );
    assert.not.match(outcome?.detail ?? '', /\n/);
    noSecret(outcome?.detail ?? '');
    assert.is(server.received.length, 1, '401 is not retried');
  });
}, 10_000);

test('mailjet: 400 with a per-message error gives its ErrorMessage', async () => {
  await withServer([{ status: 400, body: INVALID_EMAIL }], async (server) => {
    const [outcome] = await runNotifier(mailjet, settings(server.url, 'x'));
    assert.equal(outcome, { plugin: 'mailjet', ok: false, detail: 'plugin mailjet, hook notify: HTTP 400: "x" is an invalid email address.' });
    assert.is(server.received.length, 1, '400 is not retried');
  });
}, 10_000);

test('mailjet: a 200 whose message status is not success is a failure naming the service\'s error', async () => {
  await withServer([{ status: 200, body: INVALID_EMAIL }], async (server) => {
    const [outcome] = await runNotifier(mailjet, settings(server.url));
    assert.equal(outcome, {
      plugin: 'mailjet',
      ok: false,
      detail: 'plugin mailjet, hook notify: HTTP 200 but Mailjet did not send (status error): "x" is an invalid email address.',
    });
  });
  await withServer([{ status: 200, body: '<html>proxy login</html>' }], async (odd) => {
    const [outcome] = await runNotifier(mailjet, settings(odd.url));
    assert.equal(outcome, { plugin: 'mailjet', ok: false, detail: 'plugin mailjet, hook notify: HTTP 200 but not a Mailjet answer: <html>proxy login</html>' });
  });
}, 10_000);

test('mailjet: a server that echoes the credentials in its error never gets them into the detail', async () => {
  const echo = `bad request from ${KEY}:${SECRET} (${BASIC})`;
  for (const status of [400, 200]) {
    await withServer([{ status, body: JSON.stringify({ Messages: [{ Status: 'error', Errors: [{ ErrorMessage: echo }] }] }) }], async (server) => {
      const [outcome] = await runNotifier(mailjet, settings(server.url));
      assert.is(outcome?.ok, false);
      assert.ok(outcome?.detail.includes('bad request from [secret]:[secret] (Basic [secret])'), outcome?.detail);
      noSecret(outcome?.detail ?? '');
    });
  }
}, 10_000);

httpFailureModes(test, 'mailjet', settings, { answer: SUCCESS, detail: 'sent to 1 recipient' });

test.run();
