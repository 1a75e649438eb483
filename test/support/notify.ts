// Helpers for notifier tests: a real result from a sample, a plugin loaded from plugins/, and
// notifyAll run with settings given here (never the machine's environment).
import path from 'node:path';
import * as assert from 'uvu/assert';
import {
  createRunner, defaultStages, httpSend, settingsFrom, notificationSubject, notificationText, notifyAll, runPipeline, type HttpRequest, type Notification,
  type Plugin, type Result,
} from '../../pve-dm.ts';
import { PROJECT, SAMPLES } from '../harness.ts';
import { refusedUrl, startServer, type Scripted } from './http-server.ts';

const runner = createRunner({ allowChanges: false });

/** The result and rendered reports of a sample, as main would hand them to notifiers. */
export async function sampleResult(name = 'multi-pool'): Promise<{ result: Result; json: string; html: string }> {
  const { result, reports } = await runPipeline(defaultStages, { root: path.join(SAMPLES, name), vmids: [], json: true, console: false, html: true, color: false, runner, now: new Date('2026-11-20T09:30:00Z') });
  return { result, json: reports.json ?? '', html: reports.html ?? '' };
}

export async function loadNotifier(name: string): Promise<Plugin> {
  return ((await import(path.join(PROJECT, 'plugins', `${name}.ts`))) as { default: Plugin }).default;
}

/** Runs one notifier as main does, with these settings and a short HTTP time limit. */
export async function runNotifier(plugin: Plugin, settings: Record<string, string>, sample = 'multi-pool', timeoutMs = 2_000): Promise<Notification[]> {
  const { result, json, html } = await sampleResult(sample);
  const setting = settingsFrom(new Map(Object.entries(settings)));
  const http = (request: HttpRequest) => httpSend({ timeoutMs, ...request });
  return notifyAll([plugin], result, { json, html, subject: notificationSubject(result), text: notificationText(result) }, { setting, http, runner });
}

/**
 * The HTTP failure modes every HTTP notifier shares, against a real server on 127.0.0.1: 500
 * (retried, then one line with the service's message), 429 then 200 (delivered after Retry-After,
 * the same request twice), a server that never answers (cut off at the time limit) and connection
 * refused. No setting that is a secret may appear in any detail.
 */
export function httpFailureModes(
  test: (name: string, body: () => unknown, timeoutMs?: number) => void,
  name: string,
  settingsFor: (url: string) => Record<string, string>,
  delivered: { answer: Scripted; detail: string },
): void {
  const secretsOf = (settings: Record<string, string>) => Object.entries(settings).filter(([key]) => /KEY|SECRET|TOKEN|WEBHOOK/.test(key)).map(([, value]) => value);
  const noSecret = (detail: string, settings: Record<string, string>) => {
    for (const secret of secretsOf(settings)) assert.not.ok(detail.includes(secret), `a secret in: ${detail}`);
  };
  const plugin = loadNotifier(name);

  test(`${name}: HTTP 500 three times: retried, then one line with the service's message`, async () => {
    const server = await startServer([{ status: 500, headers: { 'retry-after': '0' }, body: '{"message":"database is down"}' }]);
    try {
      const settings = settingsFor(server.url);
      const [outcome] = await runNotifier(await plugin, settings);
      assert.equal(outcome, { plugin: name, ok: false, detail: `plugin ${name}, hook notify: HTTP 500 after 3 attempts: database is down` });
      assert.is(server.received.length, 3);
      noSecret(outcome?.detail ?? '', settings);
    } finally {
      await server.close();
    }
  }, 10_000);

  test(`${name}: HTTP 429 then 200: retried after Retry-After with the same request, then delivered`, async () => {
    const server = await startServer([{ status: 429, headers: { 'retry-after': '1' }, body: 'slow down' }, delivered.answer]);
    try {
      const started = Date.now();
      const outcome = await runNotifier(await plugin, settingsFor(server.url));
      assert.equal(outcome, [{ plugin: name, ok: true, detail: delivered.detail }]);
      assert.is(server.received.length, 2);
      assert.ok(Date.now() - started >= 900, 'waited as Retry-After asked');
      const [first, second] = server.received;
      assert.equal([second?.method, second?.path, second?.body], [first?.method, first?.path, first?.body], 'the same request twice');
    } finally {
      await server.close();
    }
  }, 10_000);

  test(`${name}: a server that never answers fails within the time limit`, async () => {
    const server = await startServer(['hang']);
    try {
      const settings = settingsFor(server.url);
      const started = Date.now();
      const [outcome] = await runNotifier(await plugin, settings, 'multi-pool', 500);
      assert.is(outcome?.ok, false);
      assert.match(outcome?.detail ?? '', new RegExp(`^plugin ${name}, hook notify: 127\\.0\\.0\\.1:\\d+: no answer within 500 ms$`));
      assert.ok(Date.now() - started < 4_000, 'gave up promptly');
      noSecret(outcome?.detail ?? '', settings);
    } finally {
      await server.close();
    }
  }, 10_000);

  test(`${name}: connection refused: one line naming the host`, async () => {
    const settings = settingsFor(await refusedUrl());
    const [outcome] = await runNotifier(await plugin, settings);
    assert.is(outcome?.ok, false);
    assert.match(outcome?.detail ?? '', new RegExp(`^plugin ${name}, hook notify: 127\\.0\\.0\\.1:\\d+: ECONNREFUSED[^\\n]*$`));
    noSecret(outcome?.detail ?? '', settings);
  }, 10_000);
}

/** A header of RFC 2047 B encoded-words only (each ≤ 75 chars, canonical base64, whole UTF-8 characters), decoded. */
export function decodeEncodedWords(value: string): string {
  assert.match(value.trim(), /^[\x21-\x7e \t\r\n]+$/, 'the header is printable ASCII');
  return value
    .trim()
    .split(/\s+/)
    .map((word) => {
      const m = /^=\?UTF-8\?B\?([A-Za-z0-9+/]*={0,2})\?=$/.exec(word);
      assert.ok(m, `not an RFC 2047 encoded-word: ${word}`);
      assert.ok(word.length <= 75, `encoded-word longer than 75 characters: ${word}`);
      const bytes = Buffer.from(m[1] ?? '', 'base64');
      assert.is(bytes.toString('base64'), m[1], 'canonical base64');
      return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    })
    .join('');
}
