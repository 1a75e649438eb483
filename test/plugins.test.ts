// The plugin API (issue 3, "Plugin API"), end to end through the command line with the tests' own
// plugins (test/fixtures/plugins/): a stage replaced, a stage wrapped, load order and call order,
// what `pve-dm.ts plugins` lists, every way a plugin can fail to load or fail at run time, the
// root-ownership checks, notifiers that throw or never settle, and a hook's return type checked by tsc.
import { transformSync } from 'esbuild';
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as assert from 'uvu/assert';
import { createRunner, httpSend, loadPlugins, notificationSubject, notificationText, notifyAll, type HttpRequest, type Plugin } from '../pve-dm.ts';
import { describeRun, noStackTrace, PROJECT, refusedWith, runMain, SAMPLES, tempDir, test, unwrapConsole, withTimeout, type CliRun } from './harness.ts';
import { withServer } from './support/http-server.ts';
import { loadNotifier, sampleResult } from './support/notify.ts';

const FIXTURES = path.join(PROJECT, 'test', 'fixtures', 'plugins');
const TYPECHECK = path.join(PROJECT, 'test', 'fixtures', 'plugins-typecheck');
const PVE_DM_URL = pathToFileURL(path.join(PROJECT, 'pve-dm.ts')).href;
const DEFAULT_INSTALL = path.join(SAMPLES, 'default-install');
const MULTI_POOL = path.join(SAMPLES, 'multi-pool');
const AS_ROOT = process.getuid?.() === 0;

const tmp = () => tempDir('pve-dm-plugins-');

/**
 * A fixture's text with its import of pve-dm.ts made absolute, so that it loads from any folder.
 * `plugins/NAME` is one of the project's own plugins; anything else is under test/fixtures/plugins/.
 */
function source(fixture: string): string {
  const file = fixture.startsWith('plugins/') ? path.join(PROJECT, fixture) : path.join(FIXTURES, fixture);
  const text = readFileSync(file, 'utf8');
  const rewritten = text.replace(/(['"])(?:\.\.\/)+pve-dm\.ts\1/g, JSON.stringify(PVE_DM_URL));
  if (/pve-dm\.ts/.test(text) && rewritten === text) throw new Error(`${fixture}: its import of pve-dm.ts was not found to rewrite`);
  return rewritten;
}

type Entry = string | { text: string };

/** A TypeScript fixture copied as .js or .mjs is compiled first, as its author would (types stripped). */
const asNamed = (name: string, text: string) =>
  /\.m?js$/.test(name) ? transformSync(text, { loader: 'ts', format: 'esm' }).code : text;

/**
 * A plugin folder as an administrator would have it (root's, 0755) holding these files (0644).
 * Its parent's package.json says `"type": "module"`, as the project's own does for plugins/: a .ts
 * or .js plugin is an ES module (see the CommonJS test below for a folder where it is not).
 */
function pluginFolder(files: Record<string, Entry>, type: 'module' | 'commonjs' = 'module'): string {
  const parent = tmp();
  writeFileSync(path.join(parent, 'package.json'), `${JSON.stringify({ type })}\n`);
  const dir = path.join(parent, 'plugins');
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  for (const [name, from] of Object.entries(files)) {
    const file = path.join(dir, name);
    writeFileSync(file, typeof from === 'string' ? asNamed(name, source(from)) : from.text);
    chmodSync(file, 0o644);
  }
  return dir;
}


const run = (args: string[], env: Record<string, string> = {}) => runMain(args, env);
const describe = describeRun;




/** The JSON report of a --json run. */
function report(r: CliRun): Record<string, any> {
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new assert.Assertion({ message: `stdout is not JSON: ${describe(r)}`, generated: false, operator: 'json', expects: 'JSON', actual: r.stdout });
  }
}

/** Under --json, a failed run prints its error as a JSON object too. */
function jsonError(r: CliRun, message: string): void {
  assert.equal(JSON.parse(r.stdout), { version: 1, error: message }, describe(r));
}

/** The rows of `pve-dm.ts plugins`: each line's cells. */
function listed(r: CliRun): string[][] {
  assert.is(r.code, 0, describe(r));
  return r.stdout.split('\n').slice(2).filter((line) => line.trim() !== '').map((line) => line.trim().split(/\s{2,}/));
}

const logOf = (file: string) => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);

// ─── Stages replaced and wrapped ──────────────────────────────────────────────────────────────

test('a plugin that replaces grade: always C (exit 1), where the real stage says A+ (exit 0)', async () => {
  const plain = await run(['--root', DEFAULT_INSTALL, '--json', '--no-plugins']);
  assert.is(plain.code, 0, describe(plain));
  assert.is(report(plain).grade, 'A+');

  const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts' });
  const replaced = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  assert.is(replaced.code, 1, describe(replaced));
  const json = report(replaced);
  assert.is(json.grade, 'C');
  assert.equal(json.summary, { entries: 13, valid: 7, conflict: 0, duplicate: 0, tombstone: 0, ignored: 6, unjudged: 0, orphanLvs: 0, poolProblems: 0 });
  assert.equal(json.entries, report(plain).entries, 'only the grade changed');
  assert.is(replaced.stderr, '', describe(replaced));
});

test('a plugin that wraps classify: it gets the real classification, and what it changes is the result', async () => {
  const dir = pluginFolder({ 'wrap-classify.ts': 'wrap-classify.ts' });
  for (const [sample, entries, tombstones, code] of [[DEFAULT_INSTALL, 13, 0, 1], [MULTI_POOL, 20, 2, 2]] as const) {
    const r = await run(['--root', sample, '--json', '--plugins', dir]);
    assert.is(r.code, code, describe(r));
    const message = `saw ${entries} entries, ${tombstones} tombstoned`;
    const json = report(r);
    assert.is(json.entries.length, entries);
    assert.equal(json.warnings, [{ source: 'plugin wrap-classify', line: null, message, text: `plugin wrap-classify: ${message}` }]);
    assert.is(r.stderr, `pve-dm: warning: plugin wrap-classify: ${message}\n`);
  }
});

test('.ts, .mts, .js and .mjs plugins load once each, in file-name order; a later plugin wraps an earlier one', async () => {
  // Written in the reverse of file-name order, and plugin names differ only in their number.
  const dir = pluginFolder({ '40-fourth.mjs': 'order-log.ts', '30-third.js': 'order-log.ts', '20-second.mts': 'order-log.ts', '10-first.ts': 'order-log.ts' });
  const log = path.join(tmp(), 'log');
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir], { PVE_DM_FIXTURE_LOG: log });
  assert.is(r.code, 0, describe(r));
  assert.is(report(r).grade, 'A+', 'wrappers that change nothing change nothing');
  const names = ['10-first', '20-second', '30-third', '40-fourth'];
  const outermostFirst = [...names].reverse();
  assert.equal(logOf(log), [
    ...names.map((name) => `load ${name}`),
    ...outermostFirst.map((name) => `${name} classify before`),
    ...names.map((name) => `${name} classify after (13 entries)`),
    ...outermostFirst.map((name) => `${name} grade before`),
    ...names.map((name) => `${name} grade after (grade A+)`),
  ]);

  const list = await run(['plugins', '--plugins', dir]);
  assert.equal(listed(list).map((row) => row.slice(0, 2)), [['10-first', '10-first.ts'], ['20-second', '20-second.mts'], ['30-third', '30-third.js'], ['40-fourth', '40-fourth.mjs']]);
});

test('a plugin that replaces a stage cuts off the plugins before it; a plugin after it wraps the replacement', async () => {
  const dir = pluginFolder({ '30-third.ts': 'order-log.ts', '20-grade-c.ts': 'grade-c.ts', '10-first.ts': 'order-log.ts' });
  const log = path.join(tmp(), 'log');
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir], { PVE_DM_FIXTURE_LOG: log });
  assert.is(r.code, 1, describe(r));
  assert.is(report(r).grade, 'C');
  assert.equal(logOf(log), [
    'load 10-first',
    'load 30-third',
    '30-third classify before',
    '10-first classify before',
    '10-first classify after (13 entries)',
    '30-third classify after (13 entries)',
    '30-third grade before',
    '30-third grade after (grade C)',
  ]);
});

// ─── What `pve-dm.ts plugins` lists, and which folder loads ──────────────────────────────────

test('plugins: each plugin with its file, its hooks and, for a notifier, whether it is configured', async () => {
  const dir = pluginFolder({
    '50-order.mjs': 'order-log.ts',
    '40-webhook.ts': 'plugins/webhook.ts',
    '30-notify-throws.ts': 'notify-throws.ts',
    '20-wrap-classify.ts': 'wrap-classify.ts',
    '10-grade-c.ts': 'grade-c.ts',
  });
  const expected = (webhook: string) => [
    ['grade-c', '10-grade-c.ts', 'stage grade'],
    ['wrap-classify', '20-wrap-classify.ts', 'stage classify'],
    ['notify-throws', '30-notify-throws.ts', 'notify (configured)'],
    ['webhook', '40-webhook.ts', `notify (${webhook})`],
    ['50-order', '50-order.mjs', 'stage classify, stage grade'],
  ];
  const bare = await run(['plugins', '--plugins', dir]);
  assert.is(bare.stdout.split('\n')[0], `Plugins in ${dir}, in the order they load:`);
  assert.equal(bare.stdout.split('\n')[1]?.trim().split(/\s{2,}/), ['PLUGIN', 'FILE', 'HOOKS']);
  assert.equal(listed(bare), expected('not configured'));
  assert.is(bare.stderr, '');
  const configured = await run(['plugins', '--plugins', dir], { PVE_DM_WEBHOOK_URL: 'http://127.0.0.1:9/hook' });
  assert.equal(listed(configured), expected('configured'));
  assert.not.ok(configured.stdout.includes('127.0.0.1:9'), 'the listing does not print the setting');
});

test('--no-plugins loads none (not even the default folder\'s); --plugins and --no-plugins exclude each other', async () => {
  // The default folder is plugins/ beside pve-dm.ts, and it holds the webhook notifier.
  const list = await run(['plugins']);
  assert.is(list.stdout.split('\n')[0], `Plugins in ${path.join(PROJECT, 'plugins')}, in the order they load:`, describe(list));
  assert.ok(listed(list).some((row) => row[0] === 'webhook' && row[1] === 'webhook.ts'), describe(list));
  const none = await run(['plugins', '--no-plugins']);
  assert.is(none.code, 0, describe(none));
  assert.is(none.stdout, 'No plugins (--no-plugins).\n');

  // With the webhook configured, the default folder would send; --no-plugins sends nothing.
  await withServer([{ status: 200 }], async (server) => {
    const r = await run(['--root', MULTI_POOL, '--json', '--no-plugins', '--notify', 'always', '--state', path.join(tmp(), 'state.json')], { PVE_DM_WEBHOOK_URL: server.url });
    assert.is(r.code, 2, describe(r));
    assert.equal(report(r).notifications, []);
    assert.is(server.received.length, 0, 'nothing was sent');
  });
  const both = await run(['--root', MULTI_POOL, '--plugins', pluginFolder({ 'grade-c.ts': 'grade-c.ts' }), '--no-plugins']);
  refusedWith(both, /^pve-dm: --plugins and --no-plugins exclude each other/);
});

test('.d.ts files, other extensions and sub-folders are not plugins: ignored (each would fail if loaded)', async () => {
  const boom = (what: string) => ({ text: `throw new Error('${what} was loaded');\n` });
  const dir = pluginFolder({
    'grade-c.ts': 'grade-c.ts',
    'types.d.ts': { text: 'declare const missing: number;\nexport default missing;\n' },
    'README.md': { text: '# Plugins\n' },
    'settings.json': { text: '{"name": "not a plugin"}\n' },
    'helper.cjs': boom('helper.cjs'),
    'old.ts.bak': boom('old.ts.bak'),
    'notes.txt': boom('notes.txt'),
  });
  mkdirSync(path.join(dir, 'lib'), { mode: 0o755 });
  writeFileSync(path.join(dir, 'lib', 'evil.ts'), boom('lib/evil.ts').text, { mode: 0o644 });
  const list = await run(['plugins', '--plugins', dir]);
  assert.equal(listed(list), [['grade-c', 'grade-c.ts', 'stage grade']], describe(list));
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  assert.is(r.code, 1, describe(r));
  assert.is(report(r).grade, 'C');
});

test('a .d.mts declaration file is not a plugin either: ignored like .d.ts', async () => {
  const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts', 'types.d.mts': 'broken/types.d.mts' });
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  assert.is(r.code, 1, describe(r));
  assert.is(report(r).grade, 'C');
});

test('a .ts plugin in a folder outside the project (no "type": "module" above it) runs pve-dm once, not twice', async () => {
  // As /etc/pve-dm/plugins would be: Node takes its .ts files for CommonJS, so `import ... from
  // '/opt/pve-dm/pve-dm.ts'` there must not start a second pve-dm (a second report, a second notification).
  const dir = pluginFolder({ 'webhook.ts': 'plugins/webhook.ts' }, 'commonjs');
  await withServer([{ status: 200 }], async (server) => {
    const r = await run(['--root', MULTI_POOL, '--json', '--plugins', dir, '--state', path.join(tmp(), 'state.json')], { PVE_DM_WEBHOOK_URL: server.url });
    assert.is(r.code, 2, describe(r));
    assert.is(r.stdout.match(/^\{$/gm)?.length, 1, `one JSON report on stdout, not two: ${describe(r)}`);
    assert.equal(report(r).notifications, [{ plugin: 'webhook', ok: true, detail: 'HTTP 200' }]);
    assert.is(server.received.length, 1, 'one notification, not two');
  });
});

test('a CommonJS-folder plugin that imports a value (not just types) from pve-dm.ts still runs pve-dm once', async () => {
  // tsx gives such a plugin its own CommonJS copy of pve-dm.ts: that copy must not run a second report.
  const text = `import { VERSION } from ${JSON.stringify(PVE_DM_URL)};
export default { name: 'version-stamp', stages: { grade: (c, next) => ({ ...next(c), node: \`\${next(c).node} \${VERSION}\` }) } };
`;
  const dir = pluginFolder({ 'stamp.ts': { text } }, 'commonjs');
  const r = await run(['--root', MULTI_POOL, '--json', '--plugins', dir]);
  assert.is(r.stdout.match(/^\{$/gm)?.length, 1, `one JSON report on stdout, not two: ${describe(r)}`);
  assert.match(report(r).node, / \d+\.\d+\.\d+$/, 'the plugin ran, with the value it imported');
});

// ─── Plugins that cannot be loaded: exit 3, one line naming the file ─────────────────────────

test('a default export that is not a plugin, in a file that overrides stages: exit 3, one line naming the file', async () => {
  const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts', 'not-a-plugin.ts': 'broken/not-a-plugin.ts' });
  const file = path.join(dir, 'not-a-plugin.ts');
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  const message = refusedWith(r, new RegExp(`^pve-dm: .*${file.replace(/[.]/g, '\\.')}.*not a plugin`));
  jsonError(r, message);
});

test('a file that is no plugin and overrides no stage: a warning naming it, and the run goes on with the others', async () => {
  const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts', 'no-default.ts': 'broken/no-default.ts' });
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  assert.is(r.code, 1, describe(r));
  const json = report(r);
  assert.is(json.grade, 'C', 'the stage plugin beside it still runs');
  assert.equal(json.warnings.map((w: { text: string }) => w.text), [
    `${path.join(dir, 'no-default.ts')}: its default export is not a plugin ({ name, ... } satisfies Plugin); not loaded, the run goes on without it`,
  ]);
  assert.match(r.stderr, /^pve-dm: warning: .*no-default\.ts: its default export is not a plugin/m);
});

test('a stage that does not exist, or a stage that is not a function: exit 3, one line naming the file', async () => {
  for (const [fixture, problem] of [['unknown-stage.mjs', 'unknown stage "grde"'], ['not-a-function.mjs', 'stage grade is not a function']] as const) {
    const dir = pluginFolder({ [fixture]: `broken/${fixture}` });
    const r = await run(['--root', DEFAULT_INSTALL, '--plugins', dir]);
    const message = refusedWith(r, /^pve-dm: /);
    assert.ok(message.includes(path.join(dir, fixture)), `names the file: ${message}`);
    assert.ok(message.includes(problem), `says what is wrong: ${message}`);
    assert.is(r.stdout, '', 'no report');
  }
});

test('two plugins with one name: exit 3, one line naming both files', async () => {
  const dir = pluginFolder({ '20-grade-c.ts': 'grade-c.ts', '10-grade-c.ts': 'grade-c.ts' });
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  const message = refusedWith(r, /^pve-dm: /);
  assert.ok(message.includes(path.join(dir, '20-grade-c.ts')) && message.includes(path.join(dir, '10-grade-c.ts')), message);
  assert.ok(message.includes('"grade-c"'), message);
  jsonError(r, message);
});

test('a plugin with a syntax error: exit 3, one line naming the file', async () => {
  const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts', 'syntax-error.ts': 'broken/syntax-error.ts' });
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  const message = refusedWith(r, /^pve-dm: /);
  assert.ok(message.includes(path.join(dir, 'syntax-error.ts')), message);
  jsonError(r, message);
});

test('a plugin with a syntax error: the one line says where (line 5) and what, not just "Transform failed"', async () => {
  const dir = pluginFolder({ 'syntax-error.ts': 'broken/syntax-error.ts' });
  const r = await run(['--root', DEFAULT_INSTALL, '--plugins', dir]);
  const message = refusedWith(r, /^pve-dm: /);
  assert.match(message, /syntax-error\.ts[:(]5\b/, `names the line: ${message}`);
  assert.not.match(message, /:\s*$/, `does not end in a colon with the reason cut off: ${message}`);
});

// ─── Plugins that fail at run time ───────────────────────────────────────────────────────────

test('a stage that throws: exit 3, one line "plugin NAME, hook STAGE: message", a JSON error, no report', async () => {
  const dir = pluginFolder({ 'thrower.ts': 'thrower.ts' });
  const json = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  refusedWith(json, 'plugin thrower, hook classify: the disk is on fire');
  assert.is(json.stdout, `${JSON.stringify({ version: 1, error: 'plugin thrower, hook classify: the disk is on fire' })}\n`);
  const html = path.join(tmp(), 'report.html');
  const console = await run(['--root', DEFAULT_INSTALL, '--plugins', dir, '--html', html]);
  refusedWith(console, 'plugin thrower, hook classify: the disk is on fire');
  assert.is(console.stdout, '', 'no report');
  assert.not.ok(existsSync(html), 'no HTML report');
});

test('an asynchronous stage that rejects: the same, attributed to its plugin and hook', async () => {
  const dir = pluginFolder({ 'async-thrower.ts': 'async-thrower.ts' });
  const r = await run(['--root', MULTI_POOL, '--json', '--plugins', dir]);
  refusedWith(r, 'plugin async-thrower, hook report: the renderer is out of ink');
  jsonError(r, 'plugin async-thrower, hook report: the renderer is out of ink');
});

test('an error inside a wrapped stage is attributed to the plugin that threw, not to the one wrapping it', async () => {
  const dir = pluginFolder({ '20-outer.ts': 'order-log.ts', '10-thrower.ts': 'thrower.ts' });
  const log = path.join(tmp(), 'log');
  const r = await run(['--root', DEFAULT_INSTALL, '--plugins', dir], { PVE_DM_FIXTURE_LOG: log });
  refusedWith(r, 'plugin thrower, hook classify: the disk is on fire');
  assert.equal(logOf(log), ['load 20-outer', '20-outer classify before']);
});

test('a synchronous stage that returns a Promise (a .js plugin, unchecked by tsc) is that plugin\'s error', async () => {
  const dir = pluginFolder({ 'async-classify.mjs': 'async-classify.mjs' });
  const r = await run(['--root', DEFAULT_INSTALL, '--json', '--plugins', dir]);
  const message = refusedWith(r, /^pve-dm: plugin async-classify, hook classify: .*Promise/);
  jsonError(r, message);
});

test('a stage error whose message has several lines and escape codes is still one line on stderr', async () => {
  const dir = pluginFolder({ 'thrower.ts': 'thrower.ts' });
  const r = await run(['--root', DEFAULT_INSTALL, '--plugins', dir], { PVE_DM_FIXTURE_MESSAGE: 'first line\n\u001b[31m    at second (line.js:1:1)' });
  assert.is(r.code, 3, describe(r));
  assert.ok(r.stderr.startsWith('pve-dm: plugin thrower, hook classify: first line'), describe(r));
  assert.is(r.stderr.split('\n').length, 2, `exactly one line on stderr: ${describe(r)}`);
  assert.not.ok(r.stderr.includes('\u001b'), `no raw escape code reaches the terminal: ${JSON.stringify(r.stderr)}`);
});

test('a plugin that only passes discover through is not blamed for the real stage\'s error', async () => {
  const missing = path.join(tmp(), 'no-such-capture');
  const plain = await run(['--root', missing, '--no-plugins']);
  const expected = refusedWith(plain, /^pve-dm: /);
  assert.ok(expected.includes(missing), expected);
  const dir = pluginFolder({ 'pass-through.ts': 'pass-through.ts' });
  const wrapped = await run(['--root', missing, '--plugins', dir]);
  refusedWith(wrapped, expected);
});

// ─── Notifiers that fail ─────────────────────────────────────────────────────────────────────

test('a notifier that throws: the report is printed, the exit code unchanged, the failure reported, and the other notifier delivers', async () => {
  const dir = pluginFolder({ '20-webhook.ts': 'plugins/webhook.ts', '10-notify-throws.ts': 'notify-throws.ts' });
  const failed = { plugin: 'notify-throws', ok: false, detail: 'plugin notify-throws, hook notify: the relay refused the message' };
  const failureLine = `pve-dm: notification failed: ${failed.detail}`;
  await withServer([{ status: 200, body: 'ok' }], async (server) => {
    const env = { PVE_DM_WEBHOOK_URL: `${server.url}/hook` };
    const state = ['--state', path.join(tmp(), 'state.json')];
    // multi-pool has problems, so the default --notify problems sends.
    const json = await run(['--root', MULTI_POOL, '--json', '--plugins', dir, ...state], env);
    assert.is(json.code, 2, describe(json));
    noStackTrace(json);
    const data = report(json);
    assert.is(data.grade, 'F');
    assert.is(data.entries.length, 20);
    assert.equal(data.notifications, [failed, { plugin: 'webhook', ok: true, detail: 'HTTP 200' }]);
    assert.equal(json.stderr.split('\n').filter(Boolean), [failureLine]);
    assert.is(server.received.length, 1);
    assert.is(server.received[0]?.path, '/hook');
    assert.is(JSON.parse(server.received[0]?.body ?? '').node, 'pve-prd-03');

    // A healthy node with a failed notification still exits 0.
    const healthy = await run(['--root', DEFAULT_INSTALL, '--json', '--notify', 'always', '--plugins', dir, ...state], env);
    assert.is(healthy.code, 0, describe(healthy));
    assert.equal(report(healthy).notifications, [failed, { plugin: 'webhook', ok: true, detail: 'HTTP 200' }]);
    assert.equal(healthy.stderr.split('\n').filter(Boolean), [failureLine]);

    // The console report too.
    const html = path.join(tmp(), 'report.html');
    const console = await run(['--root', MULTI_POOL, '--report-only', '--html', html, '--plugins', dir, ...state], env);
    assert.is(console.code, 2, describe(console));
    assert.ok(console.stdout.includes('pve-prd-03') && console.stdout.includes(`HTML report: ${html}`), describe(console));
    assert.match(console.stdout, /^Notifications: notify-throws FAILED; webhook HTTP 200$/m);
    assert.equal(console.stderr.split('\n').filter(Boolean), [failureLine]);
    assert.ok(existsSync(html));
    assert.is(server.received.length, 3);
  });
}, 60_000);

test('a notifier that never settles is cut off at the time limit, and the others still deliver', async () => {
  const hangs = ((await import('./fixtures/plugins/notify-hangs.ts')) as { default: Plugin }).default;
  const webhook = await loadNotifier('webhook');
  await withServer([{ status: 202 }], async (server) => {
    const { result, json, html } = await sampleResult('multi-pool');
    const settings: Record<string, string> = { PVE_DM_WEBHOOK_URL: server.url };
    const started = Date.now();
    // Its own limit too: were notifyAll to hang, the server is still closed and the file ends.
    const outcome = await withTimeout('notifyAll', 15_000, () =>
      notifyAll(
        [hangs, webhook],
        result,
        { json, html, subject: notificationSubject(result), text: notificationText(result) },
        { setting: (key) => settings[key], http: (request: HttpRequest) => httpSend({ timeoutMs: 2_000, ...request }), runner: createRunner({ allowChanges: false }) },
        1_500,
      ),
    );
    const elapsed = Date.now() - started;
    assert.equal(outcome, [
      { plugin: 'notify-hangs', ok: false, detail: 'plugin notify-hangs, hook notify: no result within 1.5 s' },
      { plugin: 'webhook', ok: true, detail: 'HTTP 202' },
    ]);
    // The limit is each notifier's own, so it must leave a loaded machine's local request time to finish.
    assert.ok(elapsed >= 1_400 && elapsed < 8_000, `cut off at the limit, not before and not much after: ${elapsed} ms`);
    assert.is(server.received.length, 1);
  });
}, 20_000);

// ─── Types: tsc catches a hook that returns the wrong thing ─────────────────────────────────

function tsc(project: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(PROJECT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], { cwd: PROJECT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

test('tsc rejects a grade hook returning a grade that does not exist (TS2322 at its line), and passes its corrected twin and every fixture plugin', async () => {
  const bad = readFileSync(path.join(TYPECHECK, 'bad-grade.ts'), 'utf8').split('\n');
  const good = readFileSync(path.join(TYPECHECK, 'good-grade.ts'), 'utf8').split('\n');
  const line = bad.findIndex((text) => text.includes("grade: 'Z'")) + 1;
  assert.ok(line > 0);
  // The twins differ in the header comment, the name and the letter only.
  const differing = bad.map((text, index) => (text === good[index] ? null : text.trim())).filter((text) => text !== null);
  assert.equal(differing.filter((text) => !text.startsWith('//')), ["name: 'bad-grade',", "grade: (classification, next) => ({ ...next(classification), grade: 'Z' }),"]);

  const [rejected, accepted] = await Promise.all([tsc(path.join(TYPECHECK, 'tsconfig.json')), tsc(path.join(TYPECHECK, 'tsconfig.good.json'))]);
  assert.is.not(rejected.code, 0, rejected.output);
  const errors = rejected.output.split('\n').filter((text) => /error TS\d+/.test(text));
  assert.is(errors.length, 1, rejected.output);
  assert.match(errors[0] ?? '', new RegExp(`^test/fixtures/plugins-typecheck/bad-grade\\.ts\\(${line},\\d+\\): error TS2322: `));
  assert.ok(rejected.output.includes(`Type '"Z"' is not assignable to type 'GradeLetter'`), rejected.output);
  assert.is(accepted.code, 0, accepted.output);
  assert.is(accepted.output, '');
}, 120_000);

test('a misspelt hook (notfy) is a type error, and refused at load for a plugin tsc never saw', async () => {
  const typo = await tsc(path.join(TYPECHECK, 'tsconfig.typo.json'));
  assert.is.not(typo.code, 0, typo.output);
  assert.match(typo.output, /typo-hook\.ts\(7,\d+\): error TS2561: Object literal may only specify known properties, but 'notfy' does not exist in type 'Plugin'/);
  // A notifier tsc never saw: a warning naming its file and line; the report and a monitoring check go on.
  const dir = pluginFolder({ 'typo.mjs': { text: "// A notifier with a typo.\nexport default {\n  name: 'typo',\n  notfy: async () => 'sent',\n};\n" } });
  const warning = `${path.join(dir, 'typo.mjs')}:4: unknown key notfy (a plugin has name, stages, settings, configured, notify); not loaded, the run goes on without it`;
  const consoleRun = await run(['--root', DEFAULT_INSTALL, '--plugins', dir]);
  assert.is(consoleRun.code, 1, describe(consoleRun));
  assert.ok(consoleRun.stdout.includes('Warnings: 1\n'), consoleRun.stdout);
  assert.ok(unwrapConsole(consoleRun.stdout).includes(`  ${warning}\n`), consoleRun.stdout);
  const nagios = await run(['--root', DEFAULT_INSTALL, '--plugins', dir, '--format', 'nagios']);
  assert.is(nagios.code, 1, describe(nagios));
  assert.match(nagios.stdout, /^WARNING - pve: grade A\+/);
  assert.ok(nagios.stderr.includes(`pve-dm: warning: ${warning}\n`), nagios.stderr);
  // A stage override with a typo stops the run: the analysis would not be the one set up.
  const stage = pluginFolder({ 'typo.mjs': { text: "export default { name: 'typo', stages: { grde: (c, next) => next(c) } };\n" } });
  refusedWith(await run(['--root', DEFAULT_INSTALL, '--plugins', stage]), /^pve-dm: plugin .*typo\.mjs: unknown stage "grde"/);
}, 120_000);

test('--plugins DIR that does not exist is an error; a missing default folder is not', async () => {
  const missing = path.join(tmp(), 'no-such-plugins');
  refusedWith(await run(['--root', DEFAULT_INSTALL, '--plugins', missing]), `cannot read the plugin folder ${missing}: ENOENT`);
  assert.equal(await loadPlugins(missing), { loaded: [], warnings: [] });
});

test('a notifier whose configured() throws is reported against hook configured, and the others still run', async () => {
  await withServer([{ status: 200, body: 'ok' }], async (server) => {
    const { result, json, html } = await sampleResult();
    const broken: Plugin = { name: 'broken-config', configured: () => { throw new Error('no such setting table'); }, notify: async () => 'sent' };
    const webhook = await loadNotifier('webhook');
    const outcome = await notifyAll([broken, webhook], result, { json, html, subject: notificationSubject(result), text: notificationText(result) }, {
      setting: (key) => (key === 'PVE_DM_WEBHOOK_URL' ? server.url : undefined),
      http: (request: HttpRequest) => httpSend({ timeoutMs: 2_000, ...request }),
      runner: createRunner({ allowChanges: false }),
    });
    assert.equal(outcome, [
      { plugin: 'broken-config', ok: false, detail: 'plugin broken-config, hook configured: no such setting table' },
      { plugin: 'webhook', ok: true, detail: 'HTTP 200' },
    ]);
  });
});

// ─── Running as root: who may write the plugins ──────────────────────────────────────────────

if (AS_ROOT) {
  /** A folder with one plugin that logs when it loads, and a run of it. */
  const guarded = () => {
    const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts', 'order-log.ts': 'order-log.ts' });
    const log = path.join(tmp(), 'log');
    const runIt = (...extra: string[]) => run(['--root', DEFAULT_INSTALL, '--plugins', dir, ...extra], { PVE_DM_FIXTURE_LOG: log });
    return { dir, log, runIt };
  };

  test('as root: a plugin folder writable by group or others is refused, before any plugin runs', async () => {
    for (const mode of [0o775, 0o757, 0o777, 0o1777, 0o735]) {
      const { dir, log, runIt } = guarded();
      chmodSync(dir, mode);
      const r = await runIt('--json');
      const message = refusedWith(r, /^pve-dm: refusing plugin folder /);
      assert.ok(message.includes(dir), message);
      assert.match(message, /writable by group or others/);
      jsonError(r, message);
      assert.equal(logOf(log), [], 'no plugin ran');
    }
  });

  test('as root: a plugin file writable by group or others is refused, before it runs', async () => {
    for (const mode of [0o664, 0o646, 0o666, 0o624]) {
      const { dir, log, runIt } = guarded();
      chmodSync(path.join(dir, 'order-log.ts'), mode);
      const r = await runIt();
      const message = refusedWith(r, /^pve-dm: refusing plugin file /);
      assert.ok(message.includes(path.join(dir, 'order-log.ts')), message);
      assert.match(message, /writable by group or others/);
      assert.equal(logOf(log), [], 'the plugin did not run');
      assert.is(r.stdout, '');
    }
  });

  test('as root: a plugin file or folder not owned by root is refused', async () => {
    {
      const { dir, log, runIt } = guarded();
      chownSync(path.join(dir, 'order-log.ts'), 65534, 65534);
      const message = refusedWith(await runIt(), /^pve-dm: refusing plugin file /);
      assert.ok(message.includes(path.join(dir, 'order-log.ts')) && /not owned by root/.test(message), message);
      assert.equal(logOf(log), []);
    }
    {
      const { dir, log, runIt } = guarded();
      chownSync(dir, 65534, 65534);
      const message = refusedWith(await runIt(), /^pve-dm: refusing plugin folder /);
      assert.ok(message.includes(dir) && /not owned by root/.test(message), message);
      assert.equal(logOf(log), []);
    }
  });

  test('as root: root\'s plugins that only root can write load (0755 folder; 0644, 0600, 0444 files; another group without write)', async () => {
    for (const [dirMode, fileMode, gid] of [[0o755, 0o644, 0], [0o700, 0o600, 0], [0o555, 0o444, 0], [0o750, 0o640, 65534]] as const) {
      const { dir, log, runIt } = guarded();
      for (const file of ['grade-c.ts', 'order-log.ts']) {
        chownSync(path.join(dir, file), 0, gid);
        chmodSync(path.join(dir, file), fileMode);
      }
      chownSync(dir, 0, gid);
      chmodSync(dir, dirMode);
      const r = await runIt('--json');
      assert.is(r.code, 1, describe(r));
      assert.is(report(r).grade, 'C');
      assert.equal(logOf(log).slice(0, 1), ['load order-log']);
    }
  });
}

test('the ownership checks are the root run\'s: loadPlugins refuses a folder writable by others only when asRoot', async () => {
  const dir = pluginFolder({ 'grade-c.ts': 'grade-c.ts' });
  chmodSync(dir, 0o777);
  const { loaded } = await loadPlugins(dir, { asRoot: false });
  assert.equal(loaded.map(({ plugin, file }) => [plugin.name, file]), [['grade-c', path.join(dir, 'grade-c.ts')]]);
  try {
    await loadPlugins(dir, { asRoot: true });
    assert.unreachable('refused');
  } catch (error) {
    assert.instance(error, Error);
    assert.match((error as Error).message, /^refusing plugin folder /);
  }
});

test.run();
