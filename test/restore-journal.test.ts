// Issue 20, on the model node: restore journals what it does (a line before its command, its outcome
// after), settles an interrupted run's action lines as it finds them, and can be cut short and run
// again: what is back already is left as it is.
import { existsSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { readJournal } from '../pve-dm.ts';
import { changing, scenario, TIMED_OUT } from './support/fake-node.ts';
import { test } from './harness.ts';

const linesOf = (journal: string) =>
  readFileSync(journal, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);

test('restore writes a line before each command (what it runs) and one after (restored); journal shows "removed, restored"', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes');
    const removed = readJournal(journal).map((r) => r.id);
    const before = linesOf(journal).length;
    // The journal's length when each command ran: its restore line is there already.
    const seen: number[] = [];
    const exec = node.exec;
    node.exec = async (command, args, options) => {
      if (['create', '-ay'].some((word) => args.includes(word))) seen.push(linesOf(journal).length);
      return exec(command, args, options);
    };
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout);
    const added = linesOf(journal).slice(before);
    assert.is(added.length, 2 * removed.length, JSON.stringify(added));
    for (const [index, id] of [...removed].reverse().entries()) {
      const [start, end] = [added[2 * index], added[2 * index + 1]];
      assert.equal([start?.kind, start?.id, Array.isArray(start?.command), end?.kind, end?.id, end?.outcome], ['restore', id, true, 'restore', id, 'restored']);
      assert.is(seen[index], before + 2 * index + 1, `the line for ${id} was written before its command`);
    }
    const listed = await cli('journal');
    assert.is((listed.stdout.match(/removed, restored/g) ?? []).length, removed.length, listed.stdout);
    assert.ok(readJournal(journal).every((r) => r.restore === 'restored'));
  } finally {
    done();
  }
});

test('a run killed after its command: restore finds the entry gone, settles its line (removed), then brings it back', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes', '--name', 'pve-vm--888--disk--0');
    // As if the run had been killed right after lvchange -an: its outcome line never written.
    const kept = readFileSync(journal, 'utf8').split('\n').filter((line) => line && !line.includes('"outcome"'));
    writeFileSync(journal, `${kept.join('\n')}\n`);
    assert.is((await cli('journal')).stdout.match(/interrupted/g)?.length, 1);
    node.calls = [];
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout);
    assert.equal(changing(node.calls), ['lvchange -ay pve/vm-888-disk-0']);
    const [record] = readJournal(journal);
    assert.equal([record?.outcome, record?.detail?.replace(/run \S+/g, 'run R'), record?.restore], ['removed', 'run R was interrupted; restore run R found it done', 'restored']);
    // The next cleanup has nothing of it left to settle, and removes it again.
    const count = () => linesOf(journal).filter((line) => line.id === record?.id).length;
    const before = count();
    await cli('--yes', '--name', 'pve-vm--888--disk--0');
    assert.is(count(), before, 'no line settles it again');
    assert.not.ok(node.dm.has('pve-vm--888--disk--0'));
  } finally {
    done();
  }
});

test('a restore cut short before its end (its line, no outcome) shows as "restore interrupted"; run again it finishes', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes');
    const exec = node.exec;
    let creates = 0;
    // Killed after its second command: the later commands never run, and the journal ends at the
    // second entry's restore line (written before its command; no outcome line after it).
    node.exec = async (command, args, options) =>
      ['create', '-ay'].some((word) => args.includes(word)) && ++creates > 2
        ? { exitCode: 1, stdout: '', stderr: 'not run' }
        : exec(command, args, options);
    await cli('restore', '--last');
    const lines = readFileSync(journal, 'utf8').split('\n').filter(Boolean);
    const starts = lines.flatMap((line, index) => (line.includes('"kind":"restore"') && line.includes('"command"') ? [index] : []));
    writeFileSync(journal, `${lines.slice(0, (starts[1] ?? 0) + 1).join('\n')}\n`);
    node.exec = exec;
    const listed = await cli('journal');
    assert.match(listed.stdout, /removed, restore interrupted/, listed.stdout);
    node.calls = [];
    const again = await cli('restore', '--last');
    assert.is(again.code, 0, again.stdout);
    assert.is((again.stdout.match(/^already  /gm) ?? []).length, 2, again.stdout);
    assert.is((again.stdout.match(/^restored /gm) ?? []).length, 4, again.stdout);
    assert.ok(readJournal(journal).every((r) => r.restore === 'restored'), 'every entry restored in the end');
  } finally {
    done();
  }
});

test('restore with a journal it cannot write: refuses every entry, runs nothing, exits 1', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes');
    const text = readFileSync(journal, 'utf8');
    const elsewhere = path.join(path.dirname(journal), 'elsewhere.jsonl');
    writeFileSync(elsewhere, text);
    // Read through the link it is, but never written through it.
    rmSync(journal);
    symlinkSync(elsewhere, journal);
    node.calls = [];
    const refused = await cli('restore', '--last');
    assert.is(refused.code, 1);
    assert.equal(changing(node.calls), []);
    assert.is((refused.stdout.match(/^refused  .*cannot write the journal .*: it is a symbolic link/gm) ?? []).length, 6, refused.stdout);
    assert.is(readFileSync(elsewhere, 'utf8'), text, 'nothing written through the link');
  } finally {
    done();
  }
});

test('a restore whose command fails: FAILED with the command\'s message, journalled as failed, "restore failed" in journal', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes', '--name', 'pve-vm--888--disk--0');
    node.inactive.delete('pve-vm--888--disk--0'); // LVM no longer knows it: lvchange -ay fails
    const failed = await cli('restore', '--last');
    assert.is(failed.code, 1);
    assert.match(failed.stdout, /FAILED   pve-vm--888--disk--0: Failed to find logical volume "pve\/vm-888-disk-0"/);
    assert.equal(readJournal(journal)[0]?.restore, 'failed');
    assert.match((await cli('journal')).stdout, /removed, restore failed/);
  } finally {
    done();
  }
});

test('a journal that takes the run line but not the outcome an interrupted run never wrote: refused, nothing changed', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes', '--name', 'pve-vm--888--disk--0');
    const kept = readFileSync(journal, 'utf8').split('\n').filter((line) => line && !line.includes('"outcome"'));
    writeFileSync(journal, `${kept.join('\n')}\n`);
    node.inactive.delete('pve-vm--888--disk--0');
    const exec = node.exec;
    // The journal's name becomes a link while the interrupted line's entry is looked at.
    node.exec = async (command, args, options) => {
      if (args.includes('info') && args.includes('pve-vm--888--disk--0') && !existsSync(`${journal}.kept`)) {
        renameSync(journal, `${journal}.kept`);
        symlinkSync(`${journal}.kept`, journal);
      }
      return exec(command, args, options);
    };
    node.calls = [];
    const run = await cli('--yes');
    assert.equal(changing(node.calls), []);
    assert.match(run.stdout, /REFUSED: cannot write the journal .*: it is a symbolic link: nothing was changed/);
    assert.ok(run.code >= 1);
  } finally {
    done();
  }
});

test('a restore command that hangs: FAILED as timed out, journalled failed, and nothing more is tried', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes');
    node.answer('lvchange -ay pve/vm-888-disk-0', TIMED_OUT);
    node.calls = [];
    const run = await cli('restore', '--last');
    assert.is(run.code, 1);
    assert.match(run.stdout, /^FAILED   pve-vm--888--disk--0: timed out after 30000 ms$/m);
    const order = [...readJournal(journal)].reverse().map((r) => r.name);
    const after = order.slice(order.indexOf('pve-vm--888--disk--0') + 1);
    assert.ok(after.length > 0, 'entries after it in the restore order');
    for (const name of after) {
      assert.match(run.stdout, new RegExp(`^refused  ${name}: not done: lvchange -ay pve/vm-888-disk-0 did not finish in time`, 'm'));
      assert.not.ok(changing(node.calls).some((call) => call.includes(name)), `${name}: a command ran`);
    }
    assert.is(readJournal(journal).find((r) => r.name === 'pve-vm--888--disk--0')?.restore, 'failed');
  } finally {
    done();
  }
});

test.run();
