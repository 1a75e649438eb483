// Issue 20, on the model node (test/support/fake-node.ts): a journal that cannot take a line stops
// the cleanup before anything changes, or right where it broke; a run cut short between an action's
// line and its outcome is settled by the next run, and restore never acts over a live device.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { PVE_DM_LOCK, readJournal } from '../pve-dm.ts';
import { changing, scenario } from './support/fake-node.ts';
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
    const line = {
      id: 'R1-1', run: 'R1', at: '2026-12-06T10:00:00.000Z', node: 'pve1', name: 'pve-vm--888--disk--0', uuid: node.dm.get('pve-vm--888--disk--0')?.uuid,
      open: 0, table: node.dm.get('pve-vm--888--disk--0')?.table, status: 'tombstone', reason: 'guest-missing', action: 'lvchange -an',
      vg: 'pve', lv: 'vm-888-disk-0', vmid: 888, guestType: null,
    };
    writeFileSync(journal, `${JSON.stringify(line)}\n`);
    const restore = await cli('restore', '--last');
    assert.match(restore.stdout, /refused  pve-vm--888--disk--0: a device of that name exists \(its run was interrupted: it may never have gone\)/);
    assert.equal(changing(node.calls), []);
    await cli('--yes', '--only', 'duplicates');
    const settled = readJournal(journal).find((r) => r.id === 'R1-1');
    assert.equal([settled?.outcome, settled?.detail?.replace(/run \S+/g, 'run R')], ['failed', 'run R was interrupted; run R found it not done (the entry as it was)']);
    assert.ok(existsSync(journal) && readFileSync(journal, 'utf8').includes('"kind":"run"'), 'each run begins with its line');
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

test.run();
