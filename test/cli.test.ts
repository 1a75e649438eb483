// End to end through the command line, as a real process (issue 2: "Reports", "Exit codes",
// "Bad input"): every sample against its expected.json, the console and HTML reports, exit 3
// cases, --vmid, --help, colour, and the interactive run's cleanup plan.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { load } from 'cheerio/slim';
import * as assert from 'uvu/assert';
import { createRunner, defaultStages, HTML_SECTIONS, main, runPipeline, validateHtml } from '../pve-dm.ts';
import { describeRun, expectedOf, noStackTrace, PROJECT, runCli, runMain, SAMPLE_NAMES, SAMPLES, tempDir, test, unwrapConsole } from './harness.ts';

const tmp = () => tempDir();

const SLOW = 60_000;
const ESC = '\u001b';


/** A sample copied to a temporary directory, to damage or to watch for changes. */
function copyOf(name: string): string {
  const dir = path.join(tmp(), name);
  cpSync(path.join(SAMPLES, name), dir, { recursive: true });
  return dir;
}

/** Every file under dir with its content hash: equal before and after means nothing changed. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const file of readdirSync(dir, { recursive: true }).map(String).sort()) {
    const full = path.join(dir, file);
    out[file] = statSync(full).isDirectory() ? 'dir' : createHash('sha256').update(readFileSync(full)).digest('hex');
  }
  return out;
}

const describe = describeRun;
const sortedWarnings = (warnings: { source?: string; file?: string; line: number | null }[]) =>
  warnings.map((w) => `${w.source ?? w.file}:${w.line}`).sort();

// ── Every sample against its expected.json ──────────────────────────────────────────────────

for (const name of SAMPLE_NAMES) {
  test(`${name}: --report-only --json equals expected.json (grade, summary, every entry both ways, guests, warnings, exit code)`, async () => {
    const expected = expectedOf(name);
    const run = await runMain(['--root', path.join(SAMPLES, name), '--report-only', '--json']);
    let json;
    try {
      json = JSON.parse(run.stdout);
    } catch {
      assert.unreachable(`stdout is not only JSON: ${describe(run)}`);
    }
    assert.match(run.stdout, /^\{[\s\S]*\}\n$/, 'stdout is one JSON document and nothing else');
    assert.is(run.code, expected.exitCode, describe(run));
    assert.is(json.version, 1);
    assert.is(json.node, expected.node);
    assert.is(json.grade, expected.grade);
    assert.equal(json.summary, expected.summary);
    const entries = Object.fromEntries(json.entries.map((e: { name: string; status: string; reason: string }) => [e.name, { status: e.status, reason: e.reason }]));
    for (const [entry, verdict] of Object.entries(expected.entries)) assert.equal(entries[entry], verdict, `${name}: ${entry}`);
    for (const entry of Object.keys(entries)) assert.ok(entry in expected.entries, `${name}: ${entry} is not in expected.json`);
    assert.is(json.entries.length, Object.keys(expected.entries).length, 'no entry listed twice');
    assert.equal(Object.fromEntries(json.guests.map((g: { vmid: number; health: string }) => [String(g.vmid), g.health])), expected.guests);
    assert.equal(sortedWarnings(json.warnings), sortedWarnings(expected.warnings));
    assert.equal(sortedWarnings(json.notes), sortedWarnings(expected.notes ?? []));
    // Diagnostics go to stderr: one line per warning or note, naming the file and line; nothing else.
    const stderrLines = run.stderr.split('\n').filter(Boolean);
    assert.is(stderrLines.length, expected.warnings.length + (expected.notes ?? []).length, describe(run));
    for (const w of expected.warnings) {
      const where = `${w.file}${w.line === null ? '' : `:${w.line}`}: `;
      assert.ok(stderrLines.some((line) => line.startsWith(`pve-dm: warning: ${where}`)), `stderr names ${where}\n${run.stderr}`);
    }
    noStackTrace(run);
  }, SLOW);
}

test('broken-input: the three warnings and the note are those of expected.json, and the rest is still analysed', async () => {
  const run = await runMain(['--root', path.join(SAMPLES, 'broken-input'), '--report-only', '--json']);
  const json = JSON.parse(run.stdout);
  assert.equal(sortedWarnings(json.warnings), ['dmsetup.txt:8', 'etc/pve/nodes/pve-edge/qemu-server/103.conf:5', 'etc/pve/nodes/pve-edge/qemu-server/104.conf:null']);
  // A storage type pve-dm does not know is a plugin's: noted, and no fault by itself.
  assert.equal(sortedWarnings(json.notes), ['etc/pve/storage.cfg:10']);
  assert.match(json.notes[0].message, /type "foostore", which pve-dm does not know/);
  assert.is(run.code, 1, 'grade A+ but warnings and an entry not judged: exit 1');
  assert.is(json.summary.unjudged, 1);
  assert.is(json.entries.find((e: { name: string }) => e.name === 'pve-vm--104--disk--0')?.status, 'unjudged');
  assert.is(json.grade, 'A+');
  assert.not.ok(json.entries.some((e: { name: string }) => e.name === 'pve-vm--102--disk--1'), 'the cut line is not an entry');
  assert.is(json.entries.find((e: { name: string }) => e.name === 'vmstore-vm--103--disk--0')?.status, 'valid', 'the storage after the unknown one still maps');
}, SLOW);

// ── Console and HTML ─────────────────────────────────────────────────────────────────────────

test('console run with --report-only --html FILE: exit code, sections, a valid HTML file, no plan', async () => {
  const dir = tmp();
  const file = path.join(dir, 'report.html');
  const run = await runCli(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--html', file]);
  assert.is(run.code, 2, describe(run));
  assert.is(run.stderr, '');
  noStackTrace(run);
  for (const heading of ['Summary', 'Duplicates (critical): 2', 'Tombstones (warning): 2', 'Guests on pve-prd-03: 5', 'VMIDs that exist nowhere: 1', 'Host']) {
    assert.ok(run.stdout.split('\n').includes(heading), `section ${heading}\n${run.stdout}`);
  }
  assert.not.ok(run.stdout.split('\n').some((line) => /^Warnings/.test(line)), 'no Warnings section without warnings');
  assert.ok(run.stdout.includes('  Grade F   20 dm entries: 8 valid, 2 duplicate, 2 tombstone, 8 ignored'));
  assert.ok(run.stdout.includes(`HTML report: ${file}\n`));
  assert.not.ok(run.stdout.includes('Cleanup plan'), '--report-only prints no plan');
  assert.not.ok(run.stdout.includes('would run'), '--report-only prints no plan');
  assert.ok(existsSync(file), 'the HTML file is written');
  const html = readFileSync(file, 'utf8');
  const $ = load(html);
  for (const id of HTML_SECTIONS) assert.is($(`[data-section="${id}"]`).length, 1, `section ${id}`);
  assert.is($('tr[data-entry]').length, 4);
  assert.is($('tr[data-guest]').length, 5);
  assert.is($('tr[data-missing]').length, 1);
  assert.is($('[data-field="grade"]').text(), 'F');
  assert.is($('[data-field="node"]').text(), 'pve-prd-03');
  const { result } = await runPipeline(defaultStages, {
    root: path.join(SAMPLES, 'multi-pool'), vmids: [], json: false, console: true, html: false, color: false, runner: createRunner({ allowChanges: false }),
  });
  assert.equal(await validateHtml(html, result), []);
  rmSync(dir, { recursive: true, force: true });
}, SLOW);

test('a console run without --html writes reports/pve-dm-<node>-<timestamp>.html', async () => {
  const run = await runMain(['--root', path.join(SAMPLES, 'default-install'), '--report-only']);
  const file = /^HTML report: (.+)$/m.exec(run.stdout)?.[1];
  try {
    assert.is(run.code, 0, describe(run));
    assert.ok(file, `an HTML report line\n${run.stdout}`);
    assert.is(path.dirname(file as string), path.join(PROJECT, 'reports'));
    assert.match(path.basename(file as string), /^pve-dm-pve-\d{8}-\d{6}Z\.html$/);
    assert.ok(existsSync(file as string), 'the file exists');
    const $ = load(readFileSync(file as string, 'utf8'));
    assert.is($('[data-field="node"]').text(), 'pve');
    assert.is($('[data-field="grade"]').text(), 'A+');
    assert.is($('tr[data-entry]').length, 0);
    assert.is($('tr[data-guest]').length, 4);
  } finally {
    if (file && file.startsWith(path.join(PROJECT, 'reports')) && existsSync(file)) unlinkSync(file);
  }
}, SLOW);

test('--json --html FILE: stdout is still only JSON, and the file is written', async () => {
  const file = path.join(tmp(), 'r.html');
  const run = await runMain(['--root', path.join(SAMPLES, 'foreign'), '--report-only', '--json', '--html', file]);
  assert.is(run.code, 2, describe(run));
  assert.is(JSON.parse(run.stdout).grade, 'F', 'a kpartx partition on a guest\'s disk: a conflict');
  assert.not.ok(run.stdout.includes('HTML report'));
  assert.is(load(readFileSync(file, 'utf8'))('tr[data-entry]').length, 4);
}, SLOW);

// ── Exit 3: could not analyse ────────────────────────────────────────────────────────────────

async function assertExit3(args: string[], mentions: string) {
  for (const json of [false, true]) {
    const run = await runMain(json ? [...args, '--json'] : args);
    assert.is(run.code, 3, describe(run));
    const stderrLines = run.stderr.split('\n').filter(Boolean);
    assert.is(stderrLines.length, 1, `exactly one line on stderr: ${describe(run)}`);
    assert.match(stderrLines[0] as string, /^pve-dm: /);
    assert.ok(run.stderr.includes(mentions), `stderr mentions ${mentions}: ${describe(run)}`);
    noStackTrace(run);
    if (json) {
      const out = JSON.parse(run.stdout);
      assert.equal(Object.keys(out).sort(), ['error', 'version']);
      assert.is(out.version, 1);
      assert.type(out.error, 'string');
      assert.ok(out.error.includes(mentions), out.error);
      assert.is(run.stdout.split('\n').filter(Boolean).length, 1, 'one JSON line');
    } else {
      assert.is(run.stdout, '', 'nothing on stdout');
    }
  }
}

test('exit 3: a capture without dmsetup.txt (required)', async () => {
  const dir = copyOf('default-install');
  rmSync(path.join(dir, 'dmsetup.txt'));
  await assertExit3(['--root', dir, '--report-only'], 'dmsetup.txt');
}, SLOW);

test('exit 3: a capture without etc/pve/storage.cfg (required)', async () => {
  const dir = copyOf('default-install');
  rmSync(path.join(dir, 'etc/pve/storage.cfg'));
  await assertExit3(['--root', dir, '--report-only'], 'storage.cfg');
}, SLOW);

test('exit 3: a --root that does not exist', async () => {
  const missing = path.join(tmp(), 'no-such-capture');
  await assertExit3(['--root', missing, '--report-only'], missing);
}, SLOW);

test('exit 3: an unknown option', async () => {
  await assertExit3(['--root', path.join(SAMPLES, 'default-install'), '--bogus'], '--bogus');
}, SLOW);

test('exit 3: --vmid abc', async () => {
  await assertExit3(['--root', path.join(SAMPLES, 'default-install'), '--vmid', 'abc'], 'abc');
}, SLOW);

// ── Bad input in the optional files: a warning, never a stack trace ─────────────────────────

test('bad input: a system.json without memory/rootfs ({}) is reported, not a crash', async () => {
  const dir = copyOf('default-install');
  writeFileSync(path.join(dir, 'system.json'), '{}\n');
  const run = await runMain(['--root', dir, '--report-only', '--html', path.join(tmp(), 'r.html')]);
  noStackTrace(run);
  assert.ok(run.code === 0 || run.code === 1, describe(run));
  assert.ok(run.stdout.split('\n').includes('Summary'), describe(run));
}, SLOW);

test('bad input: a system.json that is not an object, or lacks fields, under --json --html: null and a warning, not a crash', async () => {
  const dir = copyOf('default-install');
  for (const text of ['"x"\n', '{}\n']) {
    writeFileSync(path.join(dir, 'system.json'), text);
    const run = await runMain(['--root', dir, '--report-only', '--json', '--html', path.join(tmp(), 'r.html')]);
    noStackTrace(run);
    assert.ok(run.code === 0 || run.code === 1, `${text}: ${describe(run)}`);
    const json = JSON.parse(run.stdout);
    assert.ok(json.system === null || (typeof json.system === 'object' && !Array.isArray(json.system)), `${text}: system is ${JSON.stringify(json.system)}`);
    if (json.system !== null) for (const key of ['pveVersion', 'kernel', 'uptimeSeconds', 'cpuPercent', 'memory', 'rootfs']) assert.ok(key in json.system, `${text}: system.${key} present (null when not known)`);
    assert.ok(json.warnings.some((w: { source: string }) => w.source === 'system.json'), `${text}: a warning names system.json`);
  }
}, SLOW);

test('bad input: a meta.json whose capturedAt is not a string is reported, not a crash', async () => {
  const dir = copyOf('default-install');
  writeFileSync(path.join(dir, 'meta.json'), '{"capturedAt": 5}\n');
  const run = await runMain(['--root', dir, '--report-only', '--html', path.join(tmp(), 'r.html')]);
  noStackTrace(run);
  assert.ok(run.code === 0 || run.code === 1, describe(run));
  assert.ok(run.stdout.split('\n').includes('Summary'), describe(run));
}, SLOW);

// ── --vmid, --help, colour ───────────────────────────────────────────────────────────────────

test('--vmid 169 on multi-pool: only VM 169\'s entries, summary recomputed, exit 2', async () => {
  const run = await runMain(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--json', '--vmid', '169']);
  assert.is(run.code, 2, describe(run));
  const json = JSON.parse(run.stdout);
  assert.equal(json.entries.map((e: { name: string }) => e.name).sort(), ['ssd--ha01-vm--169--disk--0', 'ssd--ha01-vm--169--disk--0-dup']);
  assert.ok(json.entries.every((e: { vmid: number }) => e.vmid === 169));
  assert.equal(json.summary, { entries: 2, valid: 1, conflict: 0, duplicate: 1, tombstone: 0, ignored: 0, unjudged: 0, orphanLvs: 0, poolProblems: 0 });
  assert.equal(json.guests.map((g: { vmid: number }) => g.vmid), [169]);
  assert.equal(json.vmids, [169]);
  const tombstoneOnly = await runMain(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--json', '--vmid', '170']);
  assert.is(tombstoneOnly.code, 1, describe(tombstoneOnly));
  assert.is(JSON.parse(tombstoneOnly.stdout).grade, 'B');
}, SLOW);

test('--vmid for a VMID with no config anywhere and no entry here: said once (a typo?), exit 1, not OK', async () => {
  const run = await runMain(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--format', 'nagios', '--vmid', '1690']);
  assert.is(run.code, 1, describe(run));
  assert.match(run.stdout, /^WARNING - pve-prd-03: grade A\+, 0 duplicate and 0 tombstoned of 0 dm entries, 1 warning\(s\) \|/);
  assert.match(run.stdout, /\nwarning: --vmid: VMID 1690 has no config on any node and no dm entry here \(a typo\?\)\n/);
  // A guest that exists on another node (or an entry here without config) is no typo.
  const elsewhere = await runMain(['--root', path.join(SAMPLES, 'cluster-migrated'), '--report-only', '--json', '--vmid', '302']);
  assert.equal(JSON.parse(elsewhere.stdout).warnings, [], describe(elsewhere));
  assert.is(elsewhere.code, 0);
}, SLOW);

test('a node whose config cannot be read is never shown as healthy: console, HTML, JSON, Nagios, Checkmk and Prometheus agree', async () => {
  const root = path.join(SAMPLES, 'broken-input');
  const html = path.join(tmp(), 'r.html');
  const prom = path.join(tmp(), 'r.prom');
  const consoleRun = await runMain(['--root', root, '--report-only', '--html', html]);
  assert.is(consoleRun.code, 1);
  consoleRun.stdout = unwrapConsole(consoleRun.stdout);
  assert.ok(consoleRun.stdout.includes('  Grade A+   11 dm entries: 4 valid, 0 duplicate, 0 tombstone, 6 ignored, 1 not judged\n  Incomplete: 1 entry not judged: the config of VM 104 cannot be read\n'), consoleRun.stdout);
  assert.ok(consoleRun.stdout.includes('Not judged: 1\n  pve-vm--104--disk--0  config-unreadable: VM 104\'s config cannot be read (see the warnings): fix it, then look again\n'));
  const $ = load(readFileSync(html, 'utf8'));
  assert.is($('[data-header] strong').text(), 'Incomplete: 1 entry not judged: the config of VM 104 cannot be read');
  assert.not.ok(readFileSync(html, 'utf8').includes('No problems found'));
  assert.not.ok(($('[data-field="grade"]').attr('style') ?? '').includes('#28a745'), 'the grade is not green');
  assert.is($('tr[data-unjudged]').length, 1);
  const json = JSON.parse((await runMain(['--root', root, '--report-only', '--json', '--prometheus', prom])).stdout);
  assert.is(json.summary.unjudged, 1);
  assert.match(readFileSync(prom, 'utf8'), /\npve_dm_entries\{node="pve-edge",status="unjudged"\} 1\n/);
  const nagios = await runMain(['--root', root, '--report-only', '--format', 'nagios']);
  assert.is(nagios.code, 1);
  assert.match(nagios.stdout, /^WARNING - pve-edge: grade A\+, 0 duplicate and 0 tombstoned of 11 dm entries; 1 entry not judged: the config of VM 104 cannot be read, 3 warning\(s\) \| .* unjudged=1;0;;0 /);
  const checkmk = await runMain(['--root', root, '--report-only', '--format', 'checkmk']);
  assert.match(checkmk.stdout, /^1 "PVE DM health" .*\|unjudged=1;1;;0\|.* pve-edge: grade A\+, 0 duplicate and 0 tombstoned of 11 dm entries; 1 entry not judged/);
}, SLOW);

test('a healthy node with a storage plugin reads OK: the unknown type is a note, not a warning', async () => {
  const dir = path.join(tmp(), 'capture');
  cpSync(path.join(SAMPLES, 'default-install'), dir, { recursive: true });
  writeFileSync(path.join(dir, 'etc/pve/storage.cfg'), `${readFileSync(path.join(dir, 'etc/pve/storage.cfg'), 'utf8')}\ndrbd: drbdstorage\n\tcontent images,rootdir\n\tcontroller 10.0.0.1\n`);
  const run = await runMain(['--root', dir, '--report-only', '--format', 'nagios']);
  assert.is(run.code, 0, describe(run));
  assert.match(run.stdout, /^OK - pve: grade A\+/);
  assert.match(run.stderr, /^pve-dm: note: etc\/pve\/storage.cfg:\d+: storage drbdstorage has type "drbd", which pve-dm does not know/m);
}, SLOW);

test('--help exits 0 and prints the usage', async () => {
  const run = await runCli(['--help']);
  assert.is(run.code, 0);
  assert.match(run.stdout, /^Usage:/);
  for (const option of ['--root', '--report-only', '--json', '--html', '--vmid', '--no-color']) assert.ok(run.stdout.includes(option), option);
  assert.is(run.stderr, '');
}, SLOW);

test('non-TTY output and NO_COLOR: no ANSI escapes', async () => {
  for (const env of [{}, { NO_COLOR: '1' }]) {
    const run = await runMain(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--html', path.join(tmp(), 'r.html')], env);
    assert.is(run.code, 2, describe(run));
    assert.ok(run.stdout.includes('Duplicates (critical)'));
    assert.not.ok(run.stdout.includes(ESC), `no escape in stdout with ${JSON.stringify(env)}`);
    assert.not.ok(run.stderr.includes(ESC));
  }
}, SLOW);

test('colour on a TTY only, and NO_COLOR / --no-color turn it off (main in process)', async () => {
  const runMain = async (args: string[], noColorEnv: boolean) => {
    let stdout = '';
    let stderr = '';
    const sink = <T>(append: (text: string) => void) => ({ write: (text: string) => (append(text), true) }) as unknown as T;
    const saved = process.env.NO_COLOR;
    if (noColorEnv) process.env.NO_COLOR = '1';
    else delete process.env.NO_COLOR;
    try {
      const code = await main(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--html', path.join(tmp(), 'r.html'), ...args], {
        stdout: sink<typeof process.stdout>((t) => (stdout += t)), stderr: sink<typeof process.stderr>((t) => (stderr += t)), isTty: true,
      });
      return { code, stdout, stderr };
    } finally {
      if (saved === undefined) delete process.env.NO_COLOR;
      else process.env.NO_COLOR = saved;
    }
  };
  const tty = await runMain([], false);
  assert.is(tty.code, 2, tty.stderr);
  assert.ok(tty.stdout.includes(`${ESC}[`), 'colour on a TTY');
  const noColor = await runMain([], true);
  assert.is(noColor.code, 2);
  assert.not.ok(noColor.stdout.includes(ESC), 'NO_COLOR honoured');
  const flag = await runMain(['--no-color'], false);
  assert.not.ok(flag.stdout.includes(ESC), '--no-color honoured');
  const stable = (text: string) => text.replace(/^pve-dm .*\n/, '').replace(/HTML report: .*/, '');
  assert.is(stable(noColor.stdout), stable(flag.stdout));
  assert.is(stable(tty.stdout.replace(/\u001b\[[0-9;]*m/g, '')), stable(flag.stdout), 'colour changes nothing but colour');
}, SLOW);

// ── The interactive run: the cleanup plan, and nothing changed ──────────────────────────────

test('an interactive run ends with the cleanup plan and changes nothing; --report-only prints none', async () => {
  const dir = copyOf('multi-pool');
  const before = snapshot(dir);
  const html = path.join(tmp(), 'r.html');
  const run = await runMain(['--root', dir, '--html', html]);
  assert.is(run.code, 2, describe(run));
  noStackTrace(run);
  const out = run.stdout.split('\n');
  const start = out.findIndex((line) => line.startsWith('Cleanup plan'));
  assert.ok(start > 0, `a cleanup plan\n${run.stdout}`);
  assert.ok(out.findIndex((line) => line === 'Summary') < start, 'the plan comes after the report');
  const plan = out.slice(start + 1).filter(Boolean);
  assert.is(plan.length, 4, 'one line per problem entry');
  assert.ok(plan.every((line) => /^  would (run: |skip )/.test(line)), plan.join('\n'));
  // Duplicates first, then tombstones; a running guest's tombstone is skipped.
  assert.equal(plan, [
    '  would run: dmsetup --manglename none remove rescue171',
    '  would run: dmsetup --manglename none remove ssd--ha01-vm--169--disk--0-dup',
    '  would skip ssd--ha01-vm--170--disk--2: VM 170 is running',
    '  would run: dmsetup --manglename none remove ssd--ha01-vm--888--disk--0',
  ]);
  assert.equal(snapshot(dir), before, 'the capture is unchanged');
  const reportOnly = await runMain(['--root', dir, '--report-only', '--html', html]);
  assert.is(reportOnly.code, 2);
  assert.not.match(reportOnly.stdout, /Cleanup plan|would run|would skip/);
  assert.ok(reportOnly.stdout.split('\n').includes('Summary'));
}, SLOW);

test('an interactive run of a healthy node prints no plan at all', async () => {
  const run = await runMain(['--root', path.join(SAMPLES, 'default-install'), '--html', path.join(tmp(), 'r.html')]);
  assert.is(run.code, 0, describe(run));
  assert.not.match(run.stdout, /would run|would skip/);
}, SLOW);

test('a reader that closes the pipe early (pve-dm.ts | head) gets no stack trace, and the exit code stays', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(PROJECT, 'pve-dm.ts'), '--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--html', path.join(tmp(), 'r.html')], {
    cwd: PROJECT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => (stderr += chunk));
  child.stdout.once('data', () => child.stdout.destroy());
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  assert.is(code, 2, stderr);
  assert.not.match(stderr, /EPIPE|^\s+at /m);
}, SLOW);

test.run();
