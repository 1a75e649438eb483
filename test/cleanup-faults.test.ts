// Issue 20, on the model node (test/support/fake-node.ts): a journal that cannot take a line stops
// the cleanup before anything changes, or right where it broke; a run cut short between an action's
// line and its outcome is settled by the next run, and restore never acts over a live device.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { PVE_DM_LOCK, readJournal } from '../pve-dm.ts';
import { changing, scenario, TIMED_OUT } from './support/fake-node.ts';
import { PROJECT, test } from './harness.ts';

const JOURNAL_CASES: [string, (journal: string) => void, RegExp][] = [
  ['a symbolic link', (journal) => symlinkSync('/tmp/elsewhere.jsonl', journal), /it is a symbolic link/],
  ['a FIFO (no reader: it must not wait for one)', (journal) => execFileSync('mkfifo', [journal]), /it is not a regular file/],
  ['a folder', (journal) => mkdirSync(journal), /it is a folder|it is not a regular file/],
];

for (const [what, make, why] of JOURNAL_CASES) {
  test(`the journal is ${what}: the cleanup refuses before changing anything, in one line; the report is printed`, async () => {
    const { node, cli, journal, done } = scenario();
    try {
      mkdirSync(path.dirname(journal), { recursive: true });
      make(journal);
      const run = await cli('--yes');
      assert.equal(changing(node.calls), [], 'no command that changes the system');
      assert.match(run.stdout, /Grade F/, 'the report');
      assert.match(run.stdout, new RegExp(`REFUSED: cannot write the journal ${journal.replace(/[/.]/g, '\\$&')}: `));
      assert.match(run.stdout, why);
      const lines = run.stderr.split('\n').filter((line) => line.startsWith('pve-dm: cleanup refused'));
      assert.is(lines.length, 1, run.stderr);
      assert.not.match(run.stderr, /\n\s+at /, 'no stack trace');
      assert.ok(run.code >= 1);
      const json = JSON.parse((await cli('--yes', '--json')).stdout);
      assert.match(json.cleanup.refused, why);
      assert.equal(json.cleanup.removed, []);
    } finally {
      done();
    }
  });
}

test('the journal breaks after the first action: what ran is reported, nothing more runs; the next run settles it and goes on', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    const exec = node.exec;
    let broken = false;
    // The first removal runs, then the journal's name becomes a link: its outcome line and every later line fail.
    node.exec = async (command, args, options) => {
      const result = await exec(command, args, options);
      if (!broken && args.includes('remove')) {
        broken = true;
        renameSync(journal, `${journal}.kept`);
        symlinkSync(`${journal}.kept`, journal);
      }
      return result;
    };
    const first = await cli('--yes');
    assert.equal(changing(node.calls), ['dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup'], 'one command, then none');
    assert.match(first.stdout, /removed  ssd--ha01-vm--119--disk--0-dup/);
    assert.match(first.stdout, /skipped  pve-vm--888--disk--0: not done: cannot write the journal .*: it is a symbolic link/);
    assert.ok(first.code >= 1);
    // The administrator puts the journal back: the action's line is there, its outcome is not.
    rmSync(journal);
    renameSync(`${journal}.kept`, journal);
    const listed = await cli('journal');
    assert.match(listed.stdout, /\S+-1 +interrupted +dmsetup remove +duplicate-name/);
    node.exec = exec;
    node.calls = [];
    const second = await cli('--yes');
    assert.not.match(second.stdout, /REFUSED/);
    assert.not.ok(changing(node.calls).includes('dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup'), 'not again');
    assert.ok(changing(node.calls).includes('lvchange -an pve/vm-888-disk-0'), 'the rest is done now');
    const settled = readJournal(journal).find((r) => r.name === 'ssd--ha01-vm--119--disk--0-dup');
    assert.equal([settled?.outcome, settled?.detail?.replace(/run \S+/g, 'run R')], ['removed', 'run R was interrupted; run R found it done']);
    node.calls = [];
    const restored = await cli('restore', '--last');
    assert.ok(changing(node.calls).length > 0 && restored.code === 0, restored.stdout);
  } finally {
    done();
  }
});

test('an action line without an outcome whose entry is still there: settled as not done, and restore never acts over it', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    mkdirSync(path.dirname(journal), { recursive: true });
    // A run killed after this line and before its command: the entry is as it was.
    const device = node.dm.get('pve-vm--888--disk--0');
    if (device === undefined) throw new Error('vm-888 is missing');
    const line = (run: string) => ({
      id: `${run}-1`, run, at: '2026-12-06T10:00:00.000Z', node: 'pve1', name: 'pve-vm--888--disk--0', uuid: device.uuid,
      open: 0, table: device.table, status: 'tombstone', reason: 'guest-missing', action: 'lvchange -an',
      vg: 'pve', lv: 'vm-888-disk-0', vmid: 888, guestType: null,
    });
    const detail = (id: string) => {
      const settled = readJournal(journal).find((r) => r.id === id);
      return [settled?.outcome, settled?.detail?.replace(/run \S+/g, 'run R')];
    };
    // The next cleanup settles it.
    writeFileSync(journal, `${JSON.stringify(line('R1'))}\n`);
    await cli('--yes', '--only', 'duplicates');
    assert.equal(detail('R1-1'), ['failed', 'run R was interrupted; run R found it not done (the entry as it was)']);
    assert.ok(existsSync(journal) && readFileSync(journal, 'utf8').includes('"kind":"run"'), 'each run begins with its line');
    // So does a restore, which finds the device as journalled: the command never ran, nothing to bring back.
    writeFileSync(journal, `${JSON.stringify(line('R2'))}\n`);
    node.calls = [];
    const restore = await cli('restore', '--last');
    assert.match(restore.stdout, /already  pve-vm--888--disk--0: there as journalled \(same uuid and table\): its run was interrupted before its command changed it/);
    assert.is(restore.code, 0, restore.stdout);
    assert.equal(changing(node.calls), []);
    assert.equal(detail('R2-1'), ['failed', 'run R was interrupted; restore run R found it not done (the entry as it was)']);
    // Another table under that name since: never acted over, and said why.
    writeFileSync(journal, `${JSON.stringify(line('R3'))}\n`);
    const table = device.table;
    device.table = `${table.split(' ').slice(0, -1).join(' ')} 999`;
    const refused = await cli('restore', '--last');
    assert.match(refused.stdout, /refused  pve-vm--888--disk--0: a device of that name exists \(its run was interrupted: it may never have gone\)/);
    assert.is(refused.code, 1);
    assert.equal(changing(node.calls), []);
    assert.equal(detail('R3-1'), [undefined, undefined], 'left for whoever finds out');
    device.table = table;
  } finally {
    done();
  }
});

test('a cleanup killed while it holds the run lock: another refuses while it lives, and goes on once it is gone (lock file left behind)', async () => {
  const s = scenario();
  const holder = path.join(s.root, 'holder.mts');
  // Another pve-dm's cleanup, as far as the lock goes: it takes the run lock the way pve-dm does, then waits.
  const lock = path.join(s.root, PVE_DM_LOCK);
  writeFileSync(holder, `import { flockLocker } from ${JSON.stringify(path.join(PROJECT, 'pve-dm.ts'))};\n` +
    `await flockLocker(${JSON.stringify(lock)}, 0);\nprocess.stdout.write('held\\n');\nsetInterval(() => undefined, 1000);\n`);
  const child = spawn(process.execPath, ['--import', 'tsx', holder], { cwd: PROJECT, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => chunk.toString().includes('held') && resolve());
      child.on('exit', (code) => reject(new Error(`the holder ended first (${code})`)));
    });
    const refused = await s.cli('--yes');
    assert.match(refused.stderr, /another pve-dm cleanup holds \/run\/lock\/pve-dm\.lock/, 'its holder lives: never taken over');
    assert.equal(changing(s.node.calls), []);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.on('close', resolve));
    assert.ok(existsSync(lock), 'the lock file is left behind');
    // flock(1)'s lock goes with its holder: the file alone blocks no one (tried for up to 5 s while flock exits).
    let run = await s.cli('--yes');
    for (let i = 0; i < 10 && /another pve-dm cleanup holds/.test(run.stderr); i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      run = await s.cli('--yes');
    }
    assert.not.match(run.stderr, /another pve-dm cleanup holds/);
    assert.ok(changing(s.node.calls).length > 0, 'the cleanup ran');
  } finally {
    child.kill('SIGKILL');
    s.done();
  }
}, 60_000);

const NOT_DONE = (command: string) => `not done: ${command} did not finish in time (timed out after 30000 ms)`;
const escape = (text: string) => text.replace(/[/.()|]/g, '\\$&');

test('a command that hangs (stopped at its time limit, nothing done): FAILED with why, every later action skipped, nothing more runs', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    node.answer('lvchange -an pve/vm-100-disk-7', TIMED_OUT);
    const run = await cli('--yes');
    assert.ok(run.code >= 1, `exit ${run.code}`);
    assert.equal(changing(node.calls), [
      'dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup',
      'dmsetup --manglename none remove pve-vm--150--disk--0p1',
      'lvchange -an pve/vm-100-disk-7',
    ], 'the actions before it, then none');
    assert.match(run.stdout, /^ {2}FAILED {3}pve-vm--100--disk--7: timed out after 30000 ms$/m);
    // Every later entry of the plan, the blocked ones too: not done, and said why.
    for (const later of ['pve-vm--888--disk--0', 'pve-vm--889--disk--0', 'pve-vm--150--disk--0', 'pve-vm--200--disk--3', 'ssd--ha01-vm--301--disk--0'])
      assert.match(run.stdout, new RegExp(`^  skipped  ${escape(later)}: ${escape(NOT_DONE('lvchange -an pve/vm-100-disk-7'))}$`, 'm'));
    assert.match(run.stdout, /2 removed, 5 skipped, 1 failed/);
    // After it, the entry was looked at again, and nothing else was run (not even the next check).
    const at = node.calls.findIndex((call) => call.join(' ') === 'lvchange -an pve/vm-100-disk-7');
    const after = node.calls.slice(at + 1);
    assert.ok(after.length > 0 && after.every((call) => call[0] === 'dmsetup' && call[1] !== 'remove' && call.at(-1) === 'pve-vm--100--disk--7'), after.join('\n'));
    assert.ok(node.dm.has('pve-vm--100--disk--7'), 'the entry as it was');
    // Its action line, then its outcome: failed, with why.
    const lines = readFileSync(journal, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    const its = lines.filter((line) => line.name === 'pve-vm--100--disk--7');
    assert.equal(its.map((line) => [line.action, line.outcome, line.detail]), [['lvchange -an', undefined, undefined], [undefined, 'failed', 'timed out after 30000 ms']]);
    assert.equal(readJournal(journal).map((r) => [r.name, r.outcome]), [
      ['ssd--ha01-vm--119--disk--0-dup', 'removed'],
      ['pve-vm--150--disk--0p1', 'removed'],
      ['pve-vm--100--disk--7', 'failed'],
    ], 'no line for what did not run');
    const json = JSON.parse((await cli('--yes', '--json')).stdout);
    assert.ok(json.cleanup.skipped.some((s: { why: string }) => /did not finish in time/.test(s.why)), 'in --json too');
  } finally {
    done();
  }
});

test('a command stopped at its time limit after it did its change: its entry is looked at again and reported removed; the rest is not done', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    node.answer('lvchange -an pve/vm-888-disk-0', TIMED_OUT, { change: true });
    const run = await cli('--yes');
    assert.ok(run.code >= 1, `exit ${run.code}`);
    assert.is(changing(node.calls).at(-1), 'lvchange -an pve/vm-888-disk-0', 'nothing after it');
    assert.not.ok(node.dm.has('pve-vm--888--disk--0'));
    assert.match(run.stdout, /^ {2}removed {2}pve-vm--888--disk--0 {1,2}\(lvchange -an pve\/vm-888-disk-0; journal \S+-4\)$/m);
    assert.not.match(run.stdout, /FAILED/);
    for (const later of ['pve-vm--889--disk--0', 'pve-vm--150--disk--0', 'pve-vm--200--disk--3', 'ssd--ha01-vm--301--disk--0'])
      assert.match(run.stdout, new RegExp(`^  skipped  ${escape(later)}: ${escape(NOT_DONE('lvchange -an pve/vm-888-disk-0'))}$`, 'm'));
    assert.match(run.stdout, /4 removed, 4 skipped, 0 failed/);
    const record = readJournal(journal).find((r) => r.name === 'pve-vm--888--disk--0');
    assert.equal([record?.action, record?.outcome, record?.detail], ['lvchange -an', 'removed', null]);
    assert.is(readJournal(journal).length, 4, 'no line for what did not run');
    // What went is journalled as gone: restore brings it back.
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout);
    assert.ok(node.dm.has('pve-vm--888--disk--0'), 'back');
  } finally {
    done();
  }
});

test('a command that fails with LVM\'s message: FAILED with that message, and the rest of the plan goes on', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    node.answer('lvchange -an pve/vm-888-disk-0', { exitCode: 5, stdout: '', stderr: '  Logical volume pve/vm-888-disk-0 in use.\n' });
    const run = await cli('--yes');
    assert.is(run.code, 2, run.stdout);
    assert.match(run.stdout, /^ {2}FAILED {3}pve-vm--888--disk--0: Logical volume pve\/vm-888-disk-0 in use\.$/m);
    assert.equal(changing(node.calls), [
      'dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup',
      'dmsetup --manglename none remove pve-vm--150--disk--0p1',
      'lvchange -an pve/vm-100-disk-7',
      'lvchange -an pve/vm-888-disk-0',
      'lvchange -an pve/vm-150-disk-0',
      'dmsetup --manglename none remove ssd--ha01-vm--301--disk--0',
    ], 'every action of the plan ran');
    assert.not.match(run.stdout, /not done|did not finish in time/);
    assert.match(run.stdout, /5 removed, 2 skipped, 1 failed/);
    const record = readJournal(journal).find((r) => r.name === 'pve-vm--888--disk--0');
    assert.equal([record?.outcome, record?.detail], ['failed', 'Logical volume pve/vm-888-disk-0 in use.']);
    assert.ok(node.dm.has('pve-vm--888--disk--0'));
  } finally {
    done();
  }
});

test.run();
