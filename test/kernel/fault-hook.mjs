// fault-hook.mjs - a test-only preload for the kernel tier's fault part (kernel.test.mjs, part 5):
//
//   FAULT_AT=after-command:2 node --import tsx --import ./test/kernel/fault-hook.mjs pve-dm.ts --yes ...
//
// stops pve-dm at one exact point of a cleanup or a restore, deterministically. Nothing in pve-dm.ts
// knows of it: it patches node's child_process.execFile and fs.writeSync (and syncs the ESM named
// exports pve-dm imports) before pve-dm loads, so it exists only where a test passes this --import;
// no package, no README and no environment variable alone can enable it on a node.
//
// FAULT_AT=POINT:N, POINT one of
//   before-journal  before the Nth action line is written to the journal (nothing journalled yet)
//   before-command  after its journal line, before the Nth command that changes the system starts
//   after-command   after the Nth changing command ended, before pve-dm learns what it did
//   after-outcome   after the Nth outcome line is written (before the next entry is looked at)
// FAULT_DO: `kill` (default): SIGKILL, as a dropped session's kill -9 or the OOM killer; anything
// else is a shell command run there and waited for (a process that opens the entry at that moment),
// then pve-dm goes on. FAULT_LOG: a file the hook appends what it did to (one line per fault).
import childProcess from 'node:child_process';
import fs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

const [point, nth] = (process.env.FAULT_AT ?? '').split(':');
const POINTS = ['before-journal', 'before-command', 'after-command', 'after-outcome'];
if (!POINTS.includes(point) || !(Number(nth) >= 1)) {
  process.stderr.write(`fault-hook: FAULT_AT must be POINT:N, POINT one of ${POINTS.join(', ')} (not "${process.env.FAULT_AT ?? ''}")\n`);
  process.exit(2);
}
const N = Number(nth);
const todo = process.env.FAULT_DO ?? 'kill';

/** Commands that change the system, as the tier's trace counts them. */
const DM_CHANGES = ['remove', 'create', 'load', 'reload', 'suspend', 'resume', 'rename', 'clear', 'remove_all', 'wipe_table', 'message'];
const LVM_CHANGES = /^(lv|vg|pv)(change|remove|create|rename|convert|extend|reduce|resize)$/;
const changes = (command, args) =>
  (command === 'dmsetup' && args.some((a) => DM_CHANGES.includes(a))) ||
  LVM_CHANGES.test(command) || (command === 'lvm' && LVM_CHANGES.test(args[0] ?? '')) || command === 'kpartx';

function fault(where, what) {
  const line = `${where}: ${what}`;
  if (process.env.FAULT_LOG) fs.appendFileSync(process.env.FAULT_LOG, `${line}\n`);
  if (todo === 'kill') process.kill(process.pid, 'SIGKILL');
  // stdio ignored: what it starts in the background (a holder) must not keep pipes to it
  const done = childProcess.spawnSync('sh', ['-c', todo], { stdio: 'ignore', timeout: 120_000 });
  if (done.status !== 0) process.stderr.write(`fault-hook: "${todo}" at ${line} exited ${done.status ?? done.signal}\n`);
}

// ── commands: execFile is how pve-dm's one runner starts each process ──
const execFile = childProcess.execFile;
let commands = 0;
childProcess.execFile = function (command, args, options, callback) {
  if (!changes(command, Array.isArray(args) ? args : [])) return execFile.apply(this, arguments);
  if (typeof options === 'function') [options, callback] = [{}, options];
  const n = ++commands;
  const text = [command, ...args].join(' ');
  if (point === 'before-command' && n === N) fault(`before-command:${n}`, text);
  if (point !== 'after-command' || n !== N || typeof callback !== 'function') return execFile.call(this, command, args, options, callback);
  return execFile.call(this, command, args, options, (...results) => {
    fault(`after-command:${n}`, `${text} (exit ${results[0]?.code ?? 0})`);
    callback(...results);
  });
};

// ── the journal: one writeSync per line (appendJournal), its JSON tells an action from an outcome ──
const writeSync = fs.writeSync;
let actions = 0;
let outcomes = 0;
fs.writeSync = function (fd, data, offset, ...rest) {
  const text = Buffer.isBuffer(data) && (offset ?? 0) === 0 ? data.toString('utf8') : typeof data === 'string' ? data : '';
  let record = null;
  if (text.startsWith('{') && text.endsWith('}\n')) {
    try {
      record = JSON.parse(text);
    } catch {
      record = null;
    }
  }
  const isAction = record !== null && record.kind === undefined && 'action' in record && !('outcome' in record);
  const isOutcome = record !== null && record.kind === undefined && 'outcome' in record;
  if (isAction && ++actions === N && point === 'before-journal') fault(`before-journal:${N}`, `${record.name} (${record.action})`);
  const written = writeSync.call(this, fd, data, offset, ...rest);
  if (isOutcome && ++outcomes === N && point === 'after-outcome') fault(`after-outcome:${N}`, `${record.name} ${record.outcome}`);
  return written;
};

syncBuiltinESMExports();
