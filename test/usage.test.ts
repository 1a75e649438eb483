// What an administrator meets first: --help in 80 columns naming pve-dm as it was run, "did you
// mean" for a mistyped option or command, clear lines for a bad --vmid, unknown PVE_DM_* settings,
// notifiers that do not load, the reports folder kept to its newest reports, and the folders of the
// installed package. main() runs in this process: a subprocess would prove nothing more here.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { CLI_OPTIONS, pathsFor, programName, pruneReports, usageText, wrapConsole } from '../pve-dm.ts';
import { describeRun, overlongLines, PROJECT, runMain, runNode, SAMPLES, tempDir, test, unwrapConsole } from './harness.ts';

const DEFAULT_INSTALL = path.join(SAMPLES, 'default-install');
const refused = async (argv: string[], line: string) => {
  const run = await runMain(argv);
  assert.is(run.code, 3, run.stderr);
  assert.is(run.stderr, `pve-dm: ${line}\n`);
  assert.is(run.stdout, '');
};

test('--help: every line in 80 columns, every option listed, pve-dm named as it was run', () => {
  for (const program of ['pve-dm', 'node dist/pve-dm.mjs', 'npx tsx pve-dm.ts']) {
    const text = usageText(program);
    assert.equal(text.split('\n').filter((line) => line.length > 80), [], program);
    assert.ok(text.startsWith(`Usage: ${program} [OPTION...]\n       ${program} COMMAND [OPTION...]\n`), text);
  }
  const text = usageText('pve-dm');
  for (const option of CLI_OPTIONS.filter((o) => !o.hidden)) assert.ok(text.includes(`--${option.name}`), option.name);
  assert.not.ok(text.includes('--anonymize'), 'a second spelling is accepted, not listed');
});

test('the command as it was run: pve-dm when installed, node and the bundle, npx tsx and pve-dm.ts', () => {
  assert.is(programName('/usr/lib/pve-dm', '/usr/lib/pve-dm/pve-dm.mjs', '/root'), 'pve-dm');
  assert.is(programName('/opt/pve-dm/dist', '/opt/pve-dm/dist/pve-dm.mjs', '/opt/pve-dm'), 'node dist/pve-dm.mjs');
  assert.is(programName('/opt/pve-dm/dist', '/opt/pve-dm/dist/pve-dm.mjs', '/root'), 'node /opt/pve-dm/dist/pve-dm.mjs');
  assert.is(programName('/opt/pve-dm', '/opt/pve-dm/pve-dm.ts', '/opt/pve-dm'), 'npx tsx pve-dm.ts');
});

test('the installed package reads /etc/pve-dm and writes /var/lib/pve-dm; a copied folder keeps everything beside pve-dm.ts', () => {
  assert.equal(pathsFor('/usr/lib/pve-dm'), {
    config: '/etc/pve-dm/pve-dm.conf',
    plugins: ['/usr/lib/pve-dm/plugins', '/etc/pve-dm/plugins'],
    reports: '/var/lib/pve-dm/reports',
  });
  assert.equal(pathsFor('/opt/pve-dm'), { config: '/opt/pve-dm/pve-dm.conf', plugins: ['/opt/pve-dm/plugins'], reports: '/opt/pve-dm/reports' });
  const installed = usageText('pve-dm', pathsFor('/usr/lib/pve-dm'));
  assert.ok(installed.includes('(default /etc/pve-dm/pve-dm.conf)'), installed);
});

test('a mistyped option or command: one line with "did you mean"; a word like none: no guess', async () => {
  await refused(['--fromat', 'json'], 'unknown option --fromat; did you mean --format? (see --help)');
  await refused(['--report-onyl'], 'unknown option --report-onyl; did you mean --report-only? (see --help)');
  await refused(['--no-colour'], 'unknown option --no-colour; did you mean --no-color? (see --help)');
  await refused(['captur', '/tmp/x'], 'unknown command "captur"; did you mean capture? (see --help)');
  await refused(['--xyzzy'], 'unknown option --xyzzy (see --help)');
  await refused(['frobnicate'], 'unknown command "frobnicate" (see --help)');
});

/** An option as given on the command line, with a value when it takes one. */
const given = (name: string): string[] => {
  const option = CLI_OPTIONS.find((o) => o.name === name);
  if (option === undefined) throw new Error(`no option --${name} in CLI_OPTIONS`);
  return option.arg === undefined ? [`--${name}`] : [`--${name}`, option.complete === 'dir' ? DEFAULT_INSTALL : '/tmp/x'];
};

test('flags that do not go together, as the option table says: each pair refused by main(), in either order, with its line', async () => {
  const pairs = CLI_OPTIONS.flatMap((option) => Object.entries(option.excludes ?? {}).map(([other, why]) => [option.name, other, why] as const));
  assert.ok(pairs.length >= 6, `the table declares the exclusions: ${pairs.length}`);
  for (const [one, other, why] of pairs) {
    await refused([...given(one), ...given(other)], why);
    await refused([...given(other), ...given(one)], why);
  }
  // An option of one command, elsewhere; a value-dependent pair; restore with --report-only.
  await refused(['--root', DEFAULT_INSTALL, '--anonymise'], '--anonymise only goes with the capture command');
  await refused(['--root', DEFAULT_INSTALL, '--anonymize'], '--anonymize only goes with the capture command');
  // A monitoring check refused still says so in its own format on stdout.
  const check = await runMain(['--format', 'nagios', '--dry-run']);
  assert.is(check.code, 3);
  assert.is(check.stderr, 'pve-dm: --format nagios is a monitoring check: it does not go with --yes or --dry-run\n');
  assert.match(check.stdout, /^UNKNOWN - --format nagios is a monitoring check/);
  await refused(['restore', '--last', '--report-only'], '--report-only changes nothing: it does not go with --yes or restore');
  await refused(['journal', '--prometheus', '/tmp/x'], '--prometheus goes with an analysis, not with the journal command');
  await refused(['--json', '--format', 'console'], '--json is --format json: it does not go with --format console');
});

test('flags that go together: report-only with JSON, HTML and Prometheus at once; Nagios with Prometheus; a dry run with JSON', async () => {
  const dir = tempDir();
  const [html, prom] = [path.join(dir, 'r.html'), path.join(dir, 'r.prom')];
  const all = await runMain(['--root', DEFAULT_INSTALL, '--report-only', '--json', '--html', html, '--prometheus', prom, '--no-plugins']);
  assert.is(all.code, 0, describeRun(all));
  assert.is(JSON.parse(all.stdout).grade, 'A+');
  assert.match(readFileSync(html, 'utf8'), /<!DOCTYPE html>/);
  assert.match(readFileSync(prom, 'utf8'), /^# HELP pve_dm_/m);
  const nagios = await runMain(['--root', DEFAULT_INSTALL, '--format', 'nagios', '--prometheus', prom, '--no-plugins']);
  assert.match(nagios.stdout, /^OK - /, describeRun(nagios));
  // A dry run on a capture is refused (it acts on this node): the same flags on the live node are the cleanup tests'.
  const dry = await runMain(['--root', DEFAULT_INSTALL, '--dry-run', '--json']);
  assert.is(dry.code, 3);
  assert.equal(JSON.parse(dry.stdout), { version: 1, error: 'cleanup acts on this node; --root analyses a capture (leave out --yes and --dry-run)' });
});

test('--vmid abc, --vmid -5, --vmid 0: one clear line each; --keep-reports must be a count', async () => {
  for (const vmid of ['abc', '-5', '0', '99', '12.5']) await refused(['--root', DEFAULT_INSTALL, '--vmid', vmid], `--vmid ${vmid}: not a VMID (100 to 999999999)`);
  await refused(['--root', DEFAULT_INSTALL, '--vmid=-5'], '--vmid -5: not a VMID (100 to 999999999)');
  await refused(['--root', DEFAULT_INSTALL, '--keep-reports', '-1'], '--keep-reports -1: a number of reports, 0 to 999999');
  await refused(['--root', DEFAULT_INSTALL, '--vmid'], "Option '--vmid <value>' argument missing (see --help)");
});

test('a PVE_DM_* key in the settings file that nothing reads: a warning naming the file, the line and the closest key', async () => {
  const conf = path.join(tempDir(), 'pve-dm.conf');
  writeFileSync(conf, '# notifications\nPVE_DM_MAIL_TO=root\nPVE_DM_WEBHOK_URL=http://127.0.0.1:9/hook\nPVE_DM_COLOUR=1\n', { mode: 0o600 });
  const run = await runMain(['--root', DEFAULT_INSTALL, '--report-only', '--json', '--config', conf, '--notify', 'change', '--state', path.join(tempDir(), 's.json')]);
  assert.is(run.code, 1, run.stderr);
  const warnings = JSON.parse(run.stdout).warnings.map((w: { text: string }) => w.text);
  assert.equal(warnings, [
    `${conf}:3: PVE_DM_WEBHOK_URL: no loaded plugin reads this setting; did you mean PVE_DM_WEBHOOK_URL?`,
    `${conf}:4: PVE_DM_COLOUR: no loaded plugin reads this setting`,
  ]);
  assert.ok(run.stderr.includes(`pve-dm: warning: ${conf}:3: PVE_DM_WEBHOK_URL`), run.stderr);
});

test('a notifier with a syntax error: a warning naming its file and line; the report, the other plugins and the check go on', async () => {
  const dir = path.join(tempDir(), 'plugins');
  mkdirSync(dir, { mode: 0o755 });
  writeFileSync(path.join(dir, 'pager.mjs'), "// Pages the on-call admin.\nexport default {\n  name: 'pager',,\n  notify: async () => 'paged',\n};\n", { mode: 0o644 });
  writeFileSync(path.join(dir, 'z-listener.mjs'), "export default { name: 'listener', notify: async () => 'heard' };\n", { mode: 0o644 });
  const nagios = await runMain(['--root', DEFAULT_INSTALL, '--plugins', dir, '--format', 'nagios', '--notify', 'always']);
  assert.is(nagios.code, 1, nagios.stderr);
  assert.match(nagios.stdout, /^WARNING - pve: grade A\+, .*1 warning\(s\)/);
  assert.match(nagios.stderr, new RegExp(`^pve-dm: warning: ${path.join(dir, 'pager.mjs').replace(/[.]/g, '\\.')}:3: .*; not loaded, the run goes on without it$`, 'm'));
  const json = await runMain(['--root', DEFAULT_INSTALL, '--plugins', dir, '--json', '--notify', 'always']);
  assert.equal(JSON.parse(json.stdout).notifications, [{ plugin: 'listener', ok: true, detail: 'heard' }]);
});

test('from another working directory, the project\'s tsx runs pve-dm.ts: plugins, settings and reports are found beside it', async () => {
  const elsewhere = tempDir();
  const tsx = path.join(PROJECT, 'node_modules/tsx/dist/cli.mjs');
  const listed = await runNode([tsx, path.join(PROJECT, 'pve-dm.ts'), 'plugins'], { cwd: elsewhere });
  assert.is(listed.code, 0, describeRun(listed));
  assert.ok(listed.stdout.startsWith(`Plugins in ${path.join(PROJECT, 'plugins')}, in the order they load:`), listed.stdout);
  const run = await runNode([tsx, path.join(PROJECT, 'pve-dm.ts'), '--root', DEFAULT_INSTALL, '--report-only', '--json'], { cwd: elsewhere });
  assert.is(run.code, 0, describeRun(run));
  assert.is(JSON.parse(run.stdout).grade, 'A+');
  assert.equal(readdirSync(elsewhere), [], 'nothing written where it was run from');
}, 60_000);

test('the reports folder keeps the newest N reports pve-dm wrote, and nothing else is touched', () => {
  const dir = tempDir();
  const names = ['pve-dm-pve1-20261201-010000Z.html', 'pve-dm-pve1-20261203-010000Z.html', 'pve-dm-pve2-20261202-010000Z.html', 'pve-dm-pve1-20261204-235959Z.html'];
  for (const name of [...names, 'notes.html', 'pve-dm-pve1-latest.html']) writeFileSync(path.join(dir, name), 'x');
  pruneReports(dir, 2);
  assert.equal(readdirSync(dir).sort(), ['notes.html', 'pve-dm-pve1-20261203-010000Z.html', 'pve-dm-pve1-20261204-235959Z.html', 'pve-dm-pve1-latest.html']);
  pruneReports(dir, 0);
  assert.equal(readdirSync(dir).sort(), ['notes.html', 'pve-dm-pve1-latest.html']);
});

test('the console in 80 columns: broken at spaces, four columns further in; a dm name or a command stays whole', () => {
  const long = `  pve-vm--150--disk--0  guest-missing: ${'word '.repeat(20).trim()}`;
  const wrapped = wrapConsole(`${long}\n`);
  assert.equal(overlongLines(wrapped), []);
  assert.ok(wrapped.split('\n').slice(1, -1).every((line) => line.startsWith('      ') && !line.startsWith('       ')), wrapped);
  assert.is(unwrapConsole(wrapped), `${long}\n`);
  const name = `  ${'x'.repeat(100)}  reason: text`;
  assert.ok(wrapConsole(name).split('\n')[0]?.endsWith('x'.repeat(100)), 'a name longer than the line is not cut');
});

test.run();
