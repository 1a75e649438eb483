// `npm run build`: dist/pve-dm.mjs runs with plain node and no node_modules, its plugins beside it.
// Built into a temporary folder outside the project, so that no node_modules can be found from it.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { buildBundle } from './tools/build.ts';
import { describeRun, refusedWith, runCli, runNode, SAMPLES, tempDir, test } from './harness.ts';
import { withServer } from './support/http-server.ts';

const dist = path.join(tempDir('pve-dm-bundle-'), 'dist');
const built = buildBundle(dist);
const MULTI_POOL = path.join(SAMPLES, 'multi-pool');
const bundle = async (args: string[], env: NodeJS.ProcessEnv = {}) => {
  const { file } = await built;
  return runNode([file, ...args], { env, cwd: path.dirname(file) });
};
const withoutTime = (json: string) => ({ ...JSON.parse(json), generatedAt: null });

test('plain node runs the bundle, with no node_modules in reach: the same report as pve-dm.ts under tsx', async () => {
  const { file, bytes } = await built;
  assert.ok(readFileSync(file, 'utf8').startsWith('#!/usr/bin/env node\n'), 'its own shebang, not tsx\'s');
  assert.ok(bytes < 2_000_000, `${bytes} bytes`);
  const [fromBundle, fromSource] = await Promise.all([bundle(['--root', MULTI_POOL, '--report-only', '--json']), runCli(['--root', MULTI_POOL, '--report-only', '--json'])]);
  assert.is(fromBundle.code, 2, describeRun(fromBundle));
  assert.is(fromBundle.code, fromSource.code);
  assert.equal(withoutTime(fromBundle.stdout), withoutTime(fromSource.stdout));
}, 60_000);

test('--help names the bundle as it was run, in 80 columns', async () => {
  const run = await bundle(['--help']);
  assert.is(run.code, 0, describeRun(run));
  assert.ok(run.stdout.startsWith('Usage: node pve-dm.mjs [OPTION...]\n'), run.stdout.slice(0, 200));
  assert.equal(run.stdout.split('\n').filter((line) => line.length > 80), []);
  const conf = path.join(path.dirname((await built).file), 'pve-dm.conf');
  assert.ok(run.stdout.replace(/\s+/g, ' ').includes(`(default ${conf})`), 'its own settings file');
}, 60_000);

test('a console run writes its report into reports/ beside the bundle and keeps the newest --keep-reports', async () => {
  const reports = path.join(path.dirname((await built).file), 'reports');
  mkdirSync(reports, { recursive: true });
  const old = ['pve-dm-pve-prd-03-20261101-000000Z.html', 'pve-dm-pve-prd-03-20261102-000000Z.html', 'pve-dm-pve-prd-03-20261103-000000Z.html'];
  for (const name of old) writeFileSync(path.join(reports, name), 'old');
  const run = await bundle(['--root', MULTI_POOL, '--report-only', '--keep-reports', '2']);
  assert.is(run.code, 2, describeRun(run));
  const written = /^HTML report: (.*)$/m.exec(run.stdout)?.[1] ?? '';
  assert.is(path.dirname(written), reports);
  assert.equal(readdirSync(reports).sort(), [old[2], path.basename(written)].sort());
}, 60_000);

test('the HTML report is rendered and validated inside the bundle (cheerio bundled)', async () => {
  const html = path.join(tempDir(), 'report.html');
  const run = await bundle(['--root', MULTI_POOL, '--report-only', '--json', '--html', html]);
  assert.is(run.code, 2, describeRun(run));
  const page = readFileSync(html, 'utf8');
  assert.ok(page.startsWith('<!DOCTYPE html>') && page.includes('pve-prd-03') && page.includes('rescue171'));
}, 60_000);

test('the shipped notifiers load from dist/plugins and send through the bundled undici', async () => {
  const listed = await bundle(['plugins']);
  assert.is(listed.code, 0, describeRun(listed));
  for (const name of ['gotify', 'mailjet', 'ntfy', 'sendmail', 'slack', 'webhook']) assert.match(listed.stdout, new RegExp(`^  ${name} +${name}\\.mjs `, 'm'));
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const run = await bundle(['--root', MULTI_POOL, '--report-only', '--json', '--notify', 'always'], { PVE_DM_WEBHOOK_URL: `${server.url}/hook` });
    assert.is(run.code, 2, describeRun(run));
    assert.equal(JSON.parse(run.stdout).notifications, [{ plugin: 'webhook', ok: true, detail: 'HTTP 200' }]);
    assert.is(server.received.length, 1);
    assert.is(JSON.parse(server.received[0]?.body ?? '').node, 'pve-prd-03');
  });
}, 60_000);

/** A plugin folder as an administrator would have it: root's, writable by nobody else. */
function pluginFolder(files: Record<string, string>): string {
  const dir = path.join(tempDir(), 'plugins');
  mkdirSync(dir, { mode: 0o755 });
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text, { mode: 0o644 });
  return dir;
}

test('a .mjs plugin wraps a stage of the bundle; a .ts plugin is refused, naming tsx', async () => {
  await built;
  const wraps = pluginFolder({
    'grade-c.mjs': `export default { name: 'grade-c', stages: { grade(classification, next) { return { ...next(classification), grade: 'C' }; } } };\n`,
  });
  const run = await bundle(['--root', MULTI_POOL, '--report-only', '--json', '--plugins', wraps]);
  assert.is(JSON.parse(run.stdout).grade, 'C', describeRun(run));
  // A stage override that cannot load stops the run; a notifier that cannot load is a warning.
  const typescript = pluginFolder({ 'policy.ts': "export default { name: 'policy', stages: {} } as const;\n" });
  refusedWith(
    await bundle(['--root', MULTI_POOL, '--report-only', '--plugins', typescript]),
    `cannot load plugin ${typescript}/policy.ts: a TypeScript plugin needs tsx (npx tsx pve-dm.ts); the bundle loads .js and .mjs plugins, like those \`npm run build\` writes to dist/plugins/`,
  );
  const notifier = pluginFolder({ 'pager.ts': "export default { name: 'pager', notify: async () => 'paged' } as const;\n" });
  const warned = await bundle(['--root', MULTI_POOL, '--report-only', '--json', '--plugins', notifier]);
  assert.is(warned.code, 2, describeRun(warned));
  const [warning] = JSON.parse(warned.stdout).warnings.filter((w: { source: string }) => w.source.endsWith('pager.ts'));
  assert.match(warning?.message ?? '', /a TypeScript plugin needs tsx .*; not loaded, the run goes on without it$/);
}, 60_000);

test.run();
