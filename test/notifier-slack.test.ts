// The Slack notifier (incoming webhook) against a real HTTP server on 127.0.0.1: the exact request
// and blocks, hostile names from the node escaped everywhere, Slack's limits kept, Slack's error
// answers reported, and the HTTP failure modes.
import * as assert from 'uvu/assert';
import {
  mangleDmName, createRunner, httpSend, notificationSubject, notificationText, notifyAll, type Classified, type Notification, type Result,
} from '../pve-dm.ts';
import { withServer, type Received } from './support/http-server.ts';
import { httpFailureModes, loadNotifier, runNotifier, sampleResult } from './support/notify.ts';
import { test } from './harness.ts';

const slack = await loadNotifier('slack');

const HOOK_PATH = '/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX';
const settings = (url: string): Record<string, string> => ({ PVE_DM_SLACK_WEBHOOK: `${url}${HOOK_PATH}` });

/** notifyAll with a result of the test's own making (runNotifier only runs samples as they are). */
async function deliver(result: Result, url: string): Promise<Notification[]> {
  const hook = settings(url);
  return notifyAll(
    [slack],
    result,
    { json: '{}', html: '<p>report</p>', subject: notificationSubject(result), text: notificationText(result) },
    { setting: (key) => hook[key], http: (request) => httpSend({ timeoutMs: 2_000, ...request }), runner: createRunner({ allowChanges: false }) },
  );
}

interface TextObject {
  type: string;
  text: string;
  verbatim?: boolean;
  emoji?: boolean;
}
interface Block {
  type: string;
  text?: TextObject;
  elements?: TextObject[];
}
interface Payload {
  text: string;
  blocks: Block[];
  unfurl_links: boolean;
  unfurl_media: boolean;
}

const payloadOf = (request: Received | undefined): Payload => JSON.parse(request?.body ?? '') as Payload;

/** Every text Slack will parse: the fallback and each text object of each block. */
const textsOf = (payload: Payload) => [
  payload.text,
  ...payload.blocks.flatMap((block) => [...(block.text ? [block.text.text] : []), ...(block.elements ?? []).map((element) => element.text)]),
];

const unescapeSlack = (text: string) => text.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');

/** A raw `<`, `>` or an `&` that does not start one of Slack's three entities. */
const UNESCAPED = /[<>]|&(?!amp;|lt;|gt;)/;

test('slack: not configured without PVE_DM_SLACK_WEBHOOK (or with a blank one), so not called', async () => {
  assert.equal(await runNotifier(slack, {}), []);
  assert.equal(await runNotifier(slack, { PVE_DM_SLACK_WEBHOOK: '  ' }), []);
  assert.equal(await runNotifier(slack, { PVE_DM_WEBHOOK_URL: 'http://127.0.0.1:9/x' }), [], 'another notifier\'s setting');
}, 10_000);

test('slack: POSTs the blocks and the text fallback, exactly', async () => {
  await withServer([{ status: 200, headers: { 'content-type': 'text/html' }, body: 'ok' }], async (server) => {
    const outcome = await runNotifier(slack, settings(server.url));
    assert.equal(outcome, [{ plugin: 'slack', ok: true, detail: 'HTTP 200: ok' }]);
    assert.is(server.received.length, 1);
    const request = server.received[0] as Received;
    assert.is(request.method, 'POST');
    assert.is(request.path, HOOK_PATH);
    assert.is(request.headers['content-type'], 'application/json');
    assert.is(request.headers.authorization, undefined, 'the webhook URL is the credential');

    const { result } = await sampleResult();
    const payload = payloadOf(request);
    assert.equal(Object.keys(payload).sort(), ['blocks', 'text', 'unfurl_links', 'unfurl_media']);
    assert.is(payload.text, notificationSubject(result));
    assert.ok(payload.text.startsWith('🚨 [pve-prd-03] CRITICAL: 2 DUPLICATE DM entries'), payload.text);
    assert.is(payload.unfurl_links, false);
    assert.is(payload.unfurl_media, false);
    assert.equal(payload.blocks, [
      { type: 'header', text: { type: 'plain_text', text: '🚨 Grade F on pve-prd-03', emoji: true } },
      { type: 'section', text: { type: 'mrkdwn', text: '*20* dm entries: *8* valid, *2* duplicate, *2* tombstone, *8* ignored', verbatim: true } },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          verbatim: true,
          text: "`rescue171` *duplicate* · VM 171 `app-legacy`\nduplicate-table: a second mapping with exactly the same dmsetup table as a guest volume's entry\nremedy `dmsetup remove rescue171`",
        },
      },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          verbatim: true,
          text: "`ssd--ha01-vm--169--disk--0-dup` *duplicate* · VM 169 `db-pg02`\nduplicate-name: a hand-made entry named like a guest volume plus a suffix, beside the volume's own entry\nremedy `dmsetup remove ssd--ha01-vm--169--disk--0-dup`",
        },
      },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          verbatim: true,
          text: '`ssd--ha01-vm--170--disk--2` *tombstone* · VM 170 `mail01`\nvolume-unreferenced: the guest exists but no config references this volume\nremedy `qm disk rescan --vmid 170`',
        },
      },
      {
        type: 'section',
        text: {
          type: 'mrkdwn',
          verbatim: true,
          text: '`ssd--ha01-vm--888--disk--0` *tombstone* · VMID 888\nguest-missing: the VMID has no config on any node of the cluster\nremedy `dmsetup remove ssd--ha01-vm--888--disk--0`',
        },
      },
      { type: 'context', elements: [{ type: 'mrkdwn', text: 'All 4 problem entries shown.', verbatim: true }] },
    ]);
  });
}, 10_000);

test('slack: hostile node, entry, guest names and remedies are escaped in every block: no ping, no link', async () => {
  const { result: sample } = await sampleResult();
  const rename: Record<string, { name: string; remedy: string }> = {
    rescue171: { name: '<!channel> rescue', remedy: "dmsetup remove '<!channel> rescue'" },
    'ssd--ha01-vm--169--disk--0-dup': { name: '<http://evil|click>', remedy: 'dmsetup remove <http://evil|click> && echo `id`' },
  };
  const result: Result = {
    ...sample,
    node: 'pve<!everyone>&co',
    entries: sample.entries.map((entry) => (rename[entry.name] ? { ...entry, ...rename[entry.name] } : entry)),
    guests: sample.guests.map((guest) => (guest.vmid === 171 ? { ...guest, name: '<@U0123|boss> & <!here>' } : guest)),
  };
  await withServer([{ status: 200, body: 'ok' }], async (server) => {
    const outcome = await deliver(result, server.url);
    assert.equal(outcome, [{ plugin: 'slack', ok: true, detail: 'HTTP 200: ok' }]);
    const payload = payloadOf(server.received[0]);
    const texts = textsOf(payload);
    assert.is(texts.length, 8, 'fallback, header, counts, 4 entries, context');
    for (const text of texts) assert.not.match(text, UNESCAPED, `unescaped in: ${text}`);
    for (const block of payload.blocks) {
      for (const object of [...(block.text ? [block.text] : []), ...(block.elements ?? [])]) {
        if (object.type === 'mrkdwn') assert.is(object.verbatim, true, 'no auto-linked URLs or channel names');
      }
    }
    assert.is(payload.text, '🚨 [pve&lt;!everyone&gt;&amp;co] CRITICAL: 2 DUPLICATE DM entries causing VM failures! Grade: F');
    assert.is(payload.blocks[0]?.text?.text, '🚨 Grade F on pve&lt;!everyone&gt;&amp;co');
    assert.is(
      payload.blocks[2]?.text?.text,
      // A dm name shows as pve-dm shows it everywhere: here a raw name, every odd byte as \\xNN.
      "`$'\\x3c\\x21channel\\x3e\\x20rescue'` *duplicate* · VM 171 `&lt;@U0123|boss&gt; &amp; &lt;!here&gt;`\nduplicate-table: a second mapping with exactly the same dmsetup table as a guest volume's entry\nremedy `dmsetup remove '&lt;!channel&gt; rescue'`",
    );
    // A backtick would close the code span; it is shown as a look-alike instead.
    assert.is(
      payload.blocks[3]?.text?.text,
      "`$'\\x3chttp:\\x2f\\x2fevil\\x7cclick\\x3e'` *duplicate* · VM 169 `db-pg02`\nduplicate-name: a hand-made entry named like a guest volume plus a suffix, beside the volume's own entry\nremedy `dmsetup remove &lt;http://evil|click&gt; &amp;&amp; echo ˋidˋ`",
    );
    // Nothing was lost: unescaped, the texts hold the names as the node gave them.
    const shown = texts.map(unescapeSlack).join('\n');
    for (const raw of ['<@U0123|boss> & <!here>', 'pve<!everyone>&co']) assert.ok(shown.includes(raw), raw);
    for (const name of ['<!channel> rescue', '<http://evil|click>']) assert.ok(shown.includes(mangleDmName(name)), name);
  });
}, 10_000);

test('slack: 60 problem entries with huge hostile names: at most 50 blocks, every text within Slack\'s limits', async () => {
  const { result: sample } = await sampleResult();
  const template = sample.entries.find((entry) => entry.status === 'tombstone') as Classified;
  const huge = '<!channel>&'.repeat(60); // 660 characters, 1,560 once escaped
  const entries: Classified[] = Array.from({ length: 60 }, (_, i) => ({
    ...template,
    name: `vm-${900 + i}-${huge}`,
    remedy: `dmsetup remove vm-${900 + i}-${huge}${huge}${huge}`,
    vmid: 900 + i,
  }));
  const result: Result = {
    ...sample,
    node: '&'.repeat(300),
    entries,
    guests: entries.map((entry, i) => ({ vmid: entry.vmid as number, type: 'qemu', name: `${huge}${i}`, running: true, lock: null, template: false, health: 'tombstone', readable: true })),
    summary: { entries: 60, valid: 0, conflict: 0, duplicate: 0, tombstone: 60, ignored: 0, unjudged: 0, orphanLvs: 0, poolProblems: 0 },
    grade: 'D',
    exitCode: 1,
  };
  await withServer([{ status: 200, body: 'ok' }], async (server) => {
    const outcome = await deliver(result, server.url);
    assert.equal(outcome, [{ plugin: 'slack', ok: true, detail: 'HTTP 200: ok' }]);
    const payload = payloadOf(server.received[0]);
    assert.ok(payload.blocks.length <= 50, `${payload.blocks.length} blocks`);
    assert.is(payload.blocks.length, 13, 'header, counts, 10 entries, context');
    const header = payload.blocks[0]?.text?.text ?? '';
    assert.ok(header.length <= 150, `header of ${header.length}`);
    assert.ok(header.startsWith('⚠️ Grade D on &amp;&amp;') && header.endsWith('…'), header);
    const sections = payload.blocks.filter((block) => block.type === 'section');
    assert.is(sections.length, 11);
    for (const section of sections) {
      const text = section.text?.text ?? '';
      assert.ok(text.length > 0 && text.length <= 3000, `section of ${text.length}`);
    }
    assert.ok((sections[1]?.text?.text ?? '').startsWith("`$'vm-900-\\x3c\\x21channel\\x3e\\x26"), sections[1]?.text?.text);
    assert.ok((sections[10]?.text?.text ?? '').startsWith("`$'vm-909-"), 'the first 10 in order');
    const context = payload.blocks[12];
    assert.is(context?.type, 'context');
    assert.is(context?.elements?.[0]?.text, '…and 50 more problem entries (60 in all): see the full report on the node.');
    for (const text of textsOf(payload)) {
      assert.ok(text.length <= 3000, `a text of ${text.length}`);
      assert.not.match(text, UNESCAPED, 'no entity cut in half, nothing unescaped');
    }
    assert.ok(server.received[0]!.body.length < 40_000, 'the whole message stays small');
  });
}, 10_000);

test('slack: 400 invalid_payload is reported with Slack\'s own words, on one line', async () => {
  await withServer([{ status: 400, headers: { 'content-type': 'text/html' }, body: 'invalid_payload' }], async (server) => {
    const [outcome] = await runNotifier(slack, settings(server.url));
    assert.equal(outcome, { plugin: 'slack', ok: false, detail: 'plugin slack, hook notify: HTTP 400: invalid_payload' });
    assert.is(server.received.length, 1, '400 is not retried');
  });
}, 10_000);

test('slack: 404 no_service and a redirect are failures; the webhook path never appears', async () => {
  await withServer([{ status: 404, body: 'no_service' }], async (gone) => {
    const [outcome] = await runNotifier(slack, settings(gone.url));
    assert.equal(outcome, { plugin: 'slack', ok: false, detail: 'plugin slack, hook notify: HTTP 404: no_service' });
  });
  await withServer([{ status: 302, headers: { location: `https://example.org${HOOK_PATH}` }, body: '' }], async (moved) => {
    const [outcome] = await runNotifier(slack, settings(moved.url));
    assert.equal(outcome, { plugin: 'slack', ok: false, detail: 'plugin slack, hook notify: HTTP 302: not delivered (Slack answers 200 ok)' });
    assert.not.ok(outcome?.detail.includes('XXXXXXXX'));
  });
}, 10_000);

httpFailureModes(test, 'slack', settings, { answer: { status: 200, headers: { 'content-type': 'text/html' }, body: 'ok' }, detail: 'HTTP 200: ok' });

test.run();
