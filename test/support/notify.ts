// Helpers for notifier tests: a real result from a sample, a plugin loaded from plugins/, and
// notifyAll run with settings given here (never the machine's environment).
import path from 'node:path';
import {
  createRunner, defaultStages, httpSend, settingsFrom, notificationSubject, notificationText, notifyAll, runPipeline, type HttpRequest, type Notification,
  type Plugin, type Result,
} from '../../pve-dm.ts';
import { PROJECT, SAMPLES } from '../harness.ts';

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
