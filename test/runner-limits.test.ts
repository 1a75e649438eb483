// The one command runner's time limit (execProcess): SIGTERM at the limit, SIGKILL a grace later,
// and an answer even when a process the command left behind keeps its output pipes open. Real
// processes (sh, sleep) with short limits; every process a test leaves behind is ended by its pid.
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { createRunner, execProcess, type CommandResult, type Exec } from '../pve-dm.ts';
import { tempDir, test } from './harness.ts';

const LIMITS = { timeoutMs: 200, graceMs: 200 };

/** Whether the process of that pid still runs (a zombie of ours counts as gone). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  const stat = existsSync(`/proc/${pid}/stat`) ? readFileSync(`/proc/${pid}/stat`, 'utf8') : '';
  return !/^\d+ \(.*\) Z /.test(stat);
}

/**
 * A temporary folder for pid files: `pidFile(label)` is where a script writes a pid (`echo $$ >FILE`,
 * `echo $! >FILE`); `end()` SIGKILLs each such process still running a sleep, and removes the folder.
 */
function pids() {
  const dir = tempDir('pve-dm-runner-');
  const files: string[] = [];
  const pidFile = (label: string) => {
    const file = path.join(dir, `${label}.pid`);
    files.push(file);
    return file;
  };
  const read = (file: string) => Number(readFileSync(file, 'utf8').trim());
  const end = () => {
    for (const file of files) {
      if (!existsSync(file)) continue;
      const pid = read(file);
      const cmdline = existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
      if (pid > 0 && alive(pid) && cmdline.includes('sleep')) process.kill(pid, 'SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  return { pidFile, read, end };
}

const sh = (script: string, limits: { timeoutMs: number; graceMs?: number } = LIMITS) =>
  execProcess('sh', ['-c', script], limits);

test('a command running at its limit is stopped (SIGTERM): timedOut, exit 143, why, what it printed kept', async () => {
  const p = pids();
  try {
    const file = p.pidFile('sleeper');
    const result = await sh(`echo $$ >${file}; echo started; echo warming >&2; exec sleep 3`);
    assert.is(result.timedOut, true);
    assert.is(result.exitCode, 143, 'killed by SIGTERM: 128 + 15');
    assert.is(result.stdout, 'started\n', 'its output up to then');
    assert.is(result.stderr, 'warming\ntimed out after 200 ms', 'its own stderr, then why it was stopped');
    assert.not.ok(alive(p.read(file)), 'the process is gone');
  } finally {
    p.end();
  }
}, 10_000);

test('a command that ignores SIGTERM is killed (SIGKILL) a grace later: exit 137, ", then killed"', async () => {
  const p = pids();
  try {
    const file = p.pidFile('stubborn');
    // An ignored signal stays ignored across exec: sleep itself ignores SIGTERM.
    const result = await sh(`trap "" TERM; echo $$ >${file}; echo started; exec sleep 3`);
    assert.is(result.timedOut, true);
    assert.is(result.exitCode, 137, 'killed by SIGKILL: 128 + 9');
    assert.is(result.stdout, 'started\n');
    assert.match(result.stderr, /timed out after 200 ms, then killed$/);
    assert.not.match(result.stderr, /still running/);
    assert.not.ok(alive(p.read(file)), 'the process is gone');
  } finally {
    p.end();
  }
}, 10_000);

// Without its answer a grace after the exit, each of these would wait for its sleep 30 (the test's limit is 10 s).
const LEFT_BEHIND: [string, (file: string) => string, Partial<CommandResult>][] = [
  ['stdout and stderr', (file) => `echo hi; sleep 30 & echo $! >${file}`, { stdout: 'hi\n', stderr: '' }],
  [
    'stdout only',
    (file) => `echo hi; echo note >&2; sleep 30 2>/dev/null & echo $! >${file}`,
    { stdout: 'hi\n', stderr: 'note\n' },
  ],
  [
    'stderr only',
    (file) => `echo hi; echo note >&2; sleep 30 >/dev/null & echo $! >${file}; exit 3`,
    { exitCode: 3, stdout: 'hi\n', stderr: 'note\n' },
  ],
];

for (const [pipes, script, expected] of LEFT_BEHIND)
  test(`a command that leaves a process holding its ${pipes}: answered all the same, output kept`, async () => {
    const p = pids();
    try {
      const file = p.pidFile('background');
      const result = await sh(script(file), { timeoutMs: 60_000, graceMs: 200 });
      assert.equal(
        { exitCode: result.exitCode, stdout: result.stdout, stderr: result.stderr },
        { exitCode: 0, ...expected },
      );
      assert.is(result.timedOut, undefined, 'it finished in time: not stopped');
      assert.ok(alive(p.read(file)), 'the process it left is left alone (it is not the command)');
    } finally {
      p.end();
    }
  }, 10_000);

test('a command stopped at its limit, a process it left holding its pipes: answered, timedOut, output kept', async () => {
  const p = pids();
  try {
    const file = p.pidFile('background');
    const command = p.pidFile('command');
    const result = await sh(`echo $$ >${command}; echo hi; sleep 30 & echo $! >${file}; exec sleep 30`);
    assert.is(result.timedOut, true);
    assert.is(result.exitCode, 143);
    assert.is(result.stdout, 'hi\n');
    assert.match(result.stderr, /timed out after 200 ms$/);
    assert.not.ok(alive(p.read(command)), 'the command is gone');
  } finally {
    p.end();
  }
}, 10_000);

test('a command that fails keeps its exit code, stdout and stderr as they are, and is no time-out', async () => {
  const result = await sh('echo out; echo "  Logical volume pve/vm-888-disk-0 in use." >&2; exit 5');
  assert.equal(result, { exitCode: 5, stdout: 'out\n', stderr: '  Logical volume pve/vm-888-disk-0 in use.\n' });
  const ok = await sh('printf "a\\nb\\n"');
  assert.equal(ok, { exitCode: 0, stdout: 'a\nb\n', stderr: '' });
});

test('a command that cannot start answers 127, why on stderr, and is no time-out', async () => {
  const result = await execProcess('/nonexistent/pve-dm-no-such-command', ['x'], LIMITS);
  assert.is(result.exitCode, 127);
  assert.is(result.stdout, '');
  assert.match(result.stderr, /ENOENT/);
  assert.is(result.timedOut, undefined);
});

test('standard input reaches the command, and the runner gives it (no shell) with its limit', async () => {
  const result = await execProcess('cat', [], { ...LIMITS, input: '0 2048 linear 8:0 0\n' });
  assert.equal(result, { exitCode: 0, stdout: '0 2048 linear 8:0 0\n', stderr: '' });
});

test("createRunner passes a command's timedOut through, and gives the exec its time limit", async () => {
  const seen: { timeoutMs: number; input?: string }[] = [];
  const stopped: Exec = async (_command, _args, { timeoutMs, input }) => {
    seen.push({ timeoutMs, input });
    return { exitCode: 143, stdout: 'part', stderr: `timed out after ${timeoutMs} ms`, timedOut: true };
  };
  const runner = createRunner({ allowChanges: true, exec: stopped });
  const result = await runner('lvchange', ['-an', 'pve/vm-888-disk-0'], { mutates: true, timeoutMs: 1234 });
  assert.equal(result, { exitCode: 143, stdout: 'part', stderr: 'timed out after 1234 ms', timedOut: true });
  assert.equal(seen, [{ timeoutMs: 1234, input: undefined }]);
  const defaulted = await runner('dmsetup', ['info']);
  assert.is(defaulted.timedOut, true);
  assert.is(seen[1]?.timeoutMs, 30_000, 'every command has a limit');
});

test('createRunner with the real execProcess: a command past its limit comes back timedOut', async () => {
  const p = pids();
  try {
    const file = p.pidFile('sleeper');
    const runner = createRunner({ allowChanges: false });
    const result = await runner('sh', ['-c', `echo $$ >${file}; echo started; exec sleep 3`], { timeoutMs: 200 });
    assert.equal(result, { exitCode: 143, stdout: 'started\n', stderr: 'timed out after 200 ms', timedOut: true });
    assert.not.ok(alive(p.read(file)));
  } finally {
    p.end();
  }
}, 10_000);

test.run();
