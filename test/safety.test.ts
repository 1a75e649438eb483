// Untrusted text reaches a terminal, a page or a command only as text: guest names, locks,
// descriptions, dm names and node names from hostile captures, through the console report, the
// HTML page, the JSON and every command run (argument arrays, never a shell). A capture cannot
// make pve-dm read outside it or write through a link; --root says what is wrong with a folder.
import { cpSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { load } from 'cheerio/slim';
import fc from 'fast-check';
import * as assert from 'uvu/assert';
import {
  createRunner, execProcess, main, mangleDmName, notificationText, parse, planCleanup, readCapture, renderConsole, renderHtml,
  renderPlan, report, terminalSafe, toJson, UserError, validateHtml, writeCapture, type Capture, type Exec,
} from '../pve-dm.ts';
import { capture, config, describeRun, refusedWith, resultOf, runMain, SAMPLES, tempDir, test, unwrapConsole } from './harness.ts';
import { changing, lvUuid, scenario, VG_PVE } from './support/fake-node.ts';
import { hostileText, property } from './support/fuzz.ts';

const LVM_UUID = (n: number) => `LVM-${'V'.repeat(32)}${String(n).padStart(32, 'x')}`;

/**
 * A node whose every free-text field is hostile: guest 100's name, lock, description and a
 * garbled line; a raw dm name; a hand-made copy's suffix; the name of another node whose guest
 * uses a volume active here; a garbage storage.cfg line.
 */
const hostileCapture = fc
  .record({ name: hostileText, lock: hostileText, description: hostileText, garbage: hostileText, dmName: hostileText, suffix: hostileText, otherNode: hostileText })
  .map((t): Capture => {
    const otherNode = t.otherNode.replaceAll('/', '_') || 'x';
    const info = [
      `pve-vm--100--disk--0|252|0|1|L--w|${LVM_UUID(0)}`,
      `pve-vm--100--disk--5|252|1|0|L--w|${LVM_UUID(1)}`,
      `pve-vm--101--disk--0|252|2|0|L--w|${LVM_UUID(2)}`,
      `pve-vm--777--disk--0|252|3|0|L--w|${LVM_UUID(3)}`,
      `${t.dmName}|252|4|0|L--w|`,
      `pve-vm--100--disk--0-${t.suffix}|252|5|0|L--w|`,
    ];
    return capture({
      dmsetupInfo: `${info.join('\n')}\n`,
      storageCfg: `lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n${t.garbage}\n`,
      configs: [
        config(100, `#${t.description}\nname: ${t.name}\nlock: ${t.lock}\nscsi0: local-lvm:vm-100-disk-0,size=8G\n${t.garbage}\n`),
        config(101, `name: elsewhere\nscsi0: local-lvm:vm-101-disk-0\n`, { node: otherNode }),
      ],
    });
  });


/** C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows. */
const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
/** The report's own colours: the only escapes it may print. */
const OWN_COLOUR = /\u001b\[(?:0|1|2|3[1-4])m/g;

property('console: no raw control character, escape or bidirectional override from any input reaches the terminal', 200,
  fc.property(hostileCapture, fc.boolean(), (c, color) => {
    const result = resultOf(c);
    const printed = [renderConsole(result, color), renderPlan(planCleanup(result)), notificationText(result)].join('');
    const found = CONTROL.exec(color ? printed.replace(OWN_COLOUR, '') : printed);
    assert.is(found, null, `raw U+${found?.[0].codePointAt(0)?.toString(16).padStart(4, '0')} in the output`);
  }));

property('terminalSafe: any text comes out without a control character, and says what it hid', 1000,
  fc.property(fc.oneof(fc.string({ unit: 'binary' }), hostileText), (text) => {
    const safe = terminalSafe(text);
    assert.not.match(safe, CONTROL);
    assert.not.ok(safe.includes('\n'), 'a line break in a name cannot start a line of its own');
    if (!CONTROL.test(text) && !/[\n\u2028\u2029]/.test(text)) assert.is(safe, text);
  }));

property('HTML: any input comes back from the page as text, never as an element or attribute; the page passes its validation', 100,
  fc.asyncProperty(hostileCapture, async (c) => {
    const result = resultOf(c);
    const html = renderHtml(result);
    assert.equal(await validateHtml(html, result), []);
    const $ = load(html);
    const problems = result.entries.filter((entry) => entry.status === 'duplicate' || entry.status === 'tombstone');
    // Each dm name as pve-dm shows it: the kernel's name, or the bash word of its bytes.
    assert.equal($('tr[data-entry] td:first-child code').toArray().map((cell) => $(cell).text()), problems.map((entry) => mangleDmName(entry.name)));
    assert.equal($('tr[data-warning] td:nth-child(2)').toArray().map((cell) => $(cell).text()), result.warnings.map((w) => w.message));
  }));

property('JSON: the report is valid JSON holding exactly the result, whatever the input held', 200,
  fc.asyncProperty(hostileCapture, async (c) => {
    const result = resultOf(c);
    const { json } = await report(result, { json: true, console: false, html: false, color: false });
    assert.equal(JSON.parse(json as string), JSON.parse(JSON.stringify(toJson(result))));
    assert.equal(JSON.parse(json as string).entries.map((e: { name: string }) => e.name), result.entries.map((e) => e.name));
  }));

test('the CLI\'s warnings on stderr and its report on stdout show a hostile capture as text', async () => {
  const [c] = fc.sample(hostileCapture.filter((x) => x.configs.every((cfg) => cfg.node !== '.' && cfg.node !== '..')), { numRuns: 1, seed: 7 });
  const dir = path.join(tempDir(), 'capture');
  const hostile = c as Capture;
  await writeCapture(dir, {
    ...hostile,
    configs: [...hostile.configs, config(102, `name: \u001b]8;;http://evil.example/\u0007click\u001b]8;;\u0007\nlock: \u001b[2J\u009b2J\nscsi0: local-lvm:vm-102-disk-0\n\u001b[31mgarbage\n`)],
  });
  for (const args of [['--json'], []]) {
    const run = await runMain(['--root', dir, '--report-only', '--html', path.join(tempDir(), 'r.html'), ...args]);
    assert.ok(run.code === 1 || run.code === 2, describeRun(run));
    assert.not.match(run.stderr, CONTROL, describeRun(run));
    assert.not.match(run.stdout.replaceAll('\n', ''), CONTROL, describeRun(run));
  }
}, 30_000);

// ── No shell: a name travels as one argument ───────────────────────────────────────────────

const SHELL_WORDS = ['x;reboot', '$(id)', '`id`', 'a b', `'"`, '*', '~root', '-rf', '--', '\\x3b', 'a\nb', '|cat', '&&', '>/tmp/x', '${IFS}'];

property('the runner hands any arguments to the process as they are: no word split, quoted or expanded', 1000,
  fc.asyncProperty(fc.array(fc.oneof(fc.constantFrom(...SHELL_WORDS), fc.string({ unit: 'binary' })), { maxLength: 8 }), async (args) => {
    const seen: (readonly string[])[] = [];
    const exec: Exec = async (_command, given) => (seen.push(given), { exitCode: 0, stdout: '', stderr: '' });
    await createRunner({ allowChanges: true, exec })('dmsetup', args, { mutates: true });
    assert.equal(seen, [args]);
  }));

test('execProcess: a real process gets `x;reboot`, `$(id)`, backquotes, spaces and quotes as exactly the words given', async () => {
  const words = [...SHELL_WORDS, ...fc.sample(fc.string({ unit: 'binary', minLength: 1 }).filter((w) => !w.includes('\u0000')), { numRuns: 200, seed: 1 })];
  // printf writes each argument as it received it, NUL-terminated: nothing a shell would do to them survives unnoticed.
  const result = await execProcess('printf', ['%s\\0', ...words], { timeoutMs: 10_000 });
  assert.is(result.exitCode, 0, result.stderr);
  assert.equal(result.stdout.split('\u0000').slice(0, -1), words);
});

test('cleanup passes a dm name holding `;`, `$(...)`, backquotes or a space to lvchange and dmsetup as one argument, and restore too', async () => {
  const { node, cli, done } = scenario();
  try {
    // Kernel names as a tool without libdm makes them (raw), every shell metacharacter kept.
    const semicolon = 'pve-vm--100--x;reboot';
    node.add(semicolon, { uuid: lvUuid(VG_PVE, 20), lv: 'pve/vm-100-x;reboot' });
    const table = node.dm.get('pve-vm--888--disk--0')?.table;
    const substitution = 'pve-vm--888--disk--0-$(id)';
    const backquotes = 'pve-vm--888--disk--0.`id` x';
    node.add(substitution, { table });
    node.add(backquotes, { table });
    const run = await cli('--yes');
    assert.ok(run.code === 2, run.stdout + run.stderr);
    const calls = node.calls.filter(([command, ...args]) => command === 'lvchange' || args.includes('remove'));
    assert.ok(calls.some((call) => JSON.stringify(call) === JSON.stringify(['lvchange', '-an', 'pve/vm-100-x;reboot'])), JSON.stringify(calls));
    for (const name of [substitution, backquotes]) assert.ok(calls.some((call) => JSON.stringify(call) === JSON.stringify(['dmsetup', '--manglename', 'none', 'remove', name])), `${name}: ${JSON.stringify(calls)}`);
    assert.ok(changing(node.calls).includes('lvchange -an pve/vm-100-x;reboot'));
    node.calls = [];
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout + restored.stderr);
    assert.ok(node.calls.some((call) => JSON.stringify(call) === JSON.stringify(['lvchange', '-ay', 'pve/vm-100-x;reboot'])), JSON.stringify(node.calls));
    assert.ok(node.calls.some((call) => call[0] === 'dmsetup' && call.includes('create') && call.includes(substitution)), JSON.stringify(node.calls));
  } finally {
    done();
  }
}, 60_000);

test('restore --dry-run: a journal entry with a hostile name is named with the command it would run, as text; nothing runs', async () => {
  const root = tempDir('pve-dm-restore-');
  const journal = path.join(root, 'journal.jsonl');
  const name = 'evil\u001b[2J\u001b]8;;http://x\u0007name';
  writeFileSync(journal, `${JSON.stringify({ id: 'r-1', run: 'r', at: '2026-11-25T10:00:00Z', node: 'pve1', name, uuid: '', open: 0, table: '0 8 zero', status: 'tombstone', reason: 'guest-missing', action: 'dmsetup remove', vg: null, lv: null, vmid: null, guestType: null })}\n`);
  let stdout = '';
  const io = { stdout: { write: (t: string) => ((stdout += t), true) }, stderr: { write: () => true }, isTty: false };
  const calls: string[][] = [];
  const exec: Exec = async (command, args) => (calls.push([command, ...args]), { exitCode: 1, stdout: '', stderr: 'Device does not exist.\n' });
  assert.is(await main(['restore', '--last', '--dry-run', '--journal', journal], io as never, { exec, liveRoot: root }), 0);
  assert.match(unwrapConsole(stdout), /^would restore \$'evil\\x1b\\x5b2J\\x1b\\x5d8\\x3b\\x3bhttp:\\x2f\\x2fx\\x07name'\s+\(dmsetup --manglename none create \$'evil\\x1b/);
  assert.equal(calls.map((call) => call.includes('create')), [false], 'only the look for the device ran');
  assert.not.match(stdout.replaceAll('\n', ''), CONTROL, JSON.stringify(stdout));
}, 30_000);

// ── Reading a capture never leaves it; writing one never goes through a link ─────────────────

function captureWithOutside(): { dir: string; secret: string } {
  const base = tempDir('pve-dm-links-');
  const dir = path.join(base, 'capture');
  const secret = path.join(base, 'shadow');
  writeFileSync(secret, 'root:$6$secret-hash:19000:0:99999:7:::\n');
  cpSync(path.join(SAMPLES, 'default-install'), dir, { recursive: true });
  return { dir, secret };
}

/** Replaces a file of the capture by a symbolic link. */
function link(file: string, target: string): void {
  rmSync(file, { force: true });
  symlinkSync(target, file);
}

test('a required capture file that is a symbolic link out of the capture is refused, never read', async () => {
  const { dir, secret } = captureWithOutside();
  link(path.join(dir, 'etc/pve/storage.cfg'), secret);
  const run = await runMain(['--root', dir, '--report-only', '--json']);
  refusedWith(run, `capture ${dir}: cannot read etc/pve/storage.cfg: a symbolic link out of ${dir} (to ${secret}); not followed`);
  assert.not.ok(run.stdout.includes('secret-hash') || run.stderr.includes('secret-hash'));
}, 30_000);

test('an optional file or a guest config linking out of the capture is not read: a warning names it; a link inside the capture is followed', async () => {
  const { dir, secret } = captureWithOutside();
  link(path.join(dir, 'lvs.txt'), secret);
  const conf = 'etc/pve/nodes/pve/qemu-server/101.conf';
  link(path.join(dir, conf), secret);
  const outsideNode = path.join(path.dirname(secret), 'node-outside', 'qemu-server');
  mkdirSync(outsideNode, { recursive: true });
  writeFileSync(path.join(outsideNode, '555.conf'), 'name: stolen\n');
  symlinkSync(path.dirname(outsideNode), path.join(dir, 'etc/pve/nodes/evil'));
  renameSync(path.join(dir, 'hostname'), path.join(dir, 'etc/hostname'));
  link(path.join(dir, 'hostname'), 'etc/hostname');
  const c = await readCapture(dir);
  assert.is(c.hostname, 'pve', 'a link inside the capture is followed');
  assert.is(c.lvs, null);
  assert.equal(c.warnings.map((w) => [w.source, w.message]), [['lvs.txt', `a symbolic link out of ${dir} (to ${secret}); not followed; not read, treated as not known`]]);
  for (const [file, target] of [[conf, secret], ['etc/pve/nodes/evil/qemu-server/555.conf', path.join(outsideNode, '555.conf')]] as const) {
    const read = c.configs.find((x) => x.path === file);
    assert.equal([read?.text, read?.readError], [null, `a symbolic link out of ${dir} (to ${target}); not followed`], file);
  }
  assert.ok(parse(c).warnings.some((w) => w.source === conf && w.message.includes('a symbolic link out of')));
});

test('writeCapture refuses a directory that is a symbolic link, and never writes through a link that appears while it writes', async () => {
  const base = tempDir('pve-dm-write-');
  const outside = path.join(base, 'outside');
  mkdirSync(outside);
  const target = path.join(base, 'capture');
  symlinkSync(outside, target);
  const plain = capture({ configs: [config(100, 'name: a\n')] });
  try {
    await writeCapture(target, plain);
    assert.unreachable('written through a link');
  } catch (error) {
    assert.instance(error, UserError);
    assert.is((error as Error).message, `capture directory ${target} is a symbolic link: give the directory itself`);
  }
  // Someone plants `etc -> outside` once the capture has begun (its first file is written).
  const dir = path.join(base, 'raced');
  const racing = {
    ...plain,
    get dmsetupInfo() {
      symlinkSync(outside, path.join(dir, 'etc'));
      return plain.dmsetupInfo;
    },
  };
  try {
    await writeCapture(dir, racing);
    assert.unreachable('written through a link');
  } catch (error) {
    assert.instance(error, UserError);
    assert.is((error as Error).message, `${path.join(dir, 'etc')} appeared while the capture was written (something else writes in ${dir}); stopped`);
  }
  assert.equal(readdirSync(outside), [], 'nothing written outside');
});

test('--root on a file, on a missing path, on a folder that is not a capture: one line, exit 3', async () => {
  const base = tempDir();
  const file = path.join(base, 'file');
  writeFileSync(file, 'x');
  const empty = path.join(base, 'empty');
  mkdirSync(empty);
  refusedWith(await runMain(['--root', file, '--report-only']), `capture ${file} is not a directory`);
  refusedWith(await runMain(['--root', path.join(base, 'missing'), '--report-only']), `capture ${path.join(base, 'missing')} does not exist`);
  refusedWith(await runMain(['--root', empty, '--report-only']), `${empty} is not a capture: it holds none of hostname, dmsetup.txt, etc/pve/storage.cfg (pve-dm.ts capture DIR makes one)`);
}, 30_000);

test('main in process: a capture folder that is a file is a user error, not an internal one', async () => {
  const file = path.join(tempDir(), 'file');
  writeFileSync(file, 'x');
  let stderr = '';
  const io = { stdout: { write: () => true }, stderr: { write: (t: string) => ((stderr += t), true) }, isTty: false };
  assert.is(await main(['--root', file, '--report-only', '--no-plugins'], io as never), 3);
  assert.is(stderr, `pve-dm: capture ${file} is not a directory\n`);
});

test.run();
