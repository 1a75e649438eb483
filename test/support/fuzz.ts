// Property-based tests (fast-check) with one run count for every property: a fast profile in
// `npm test`, a long one in `npm run fuzz` (PVE_DM_FUZZ_RUNS=100000). Each property prints the
// cases it ran (`[fuzz] name: N cases`, shown by test/run.mjs); a failure prints fast-check's
// report and the command that replays it (PVE_DM_FUZZ_PROPERTY, PVE_DM_FUZZ_SEED, PVE_DM_FUZZ_PATH).
import path from 'node:path';
import fc from 'fast-check';
import { PROJECT, test } from '../harness.ts';

const LONG_RUNS = Number(process.env.PVE_DM_FUZZ_RUNS ?? '') || 0;
/** The long profile: every property runs LONG_RUNS cases, with no time limit of its own but the file's. */
export const LONG = LONG_RUNS > 0;

/** The failing case to replay, for the property whose name holds PVE_DM_FUZZ_PROPERTY. */
function replayOf(name: string) {
  const { PVE_DM_FUZZ_PROPERTY: wanted, PVE_DM_FUZZ_SEED: seed, PVE_DM_FUZZ_PATH: at } = process.env;
  return wanted !== undefined && seed !== undefined && name.includes(wanted) ? { seed: Number(seed), path: at } : {};
}

/** A property as a test: `fastRuns` cases in the fast profile (keep a file well under 20 s), LONG_RUNS in the long one. */
export function property<Ts extends [unknown, ...unknown[]]>(name: string, fastRuns: number, prop: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>): void {
  test(
    name,
    async () => {
      const details = await fc.check(prop, { numRuns: LONG ? LONG_RUNS : fastRuns, ...replayOf(name) });
      if (details.failed) {
        const file = path.relative(PROJECT, process.argv[1] ?? '');
        const replay = `PVE_DM_FUZZ_PROPERTY=${JSON.stringify(name.slice(0, 40))} PVE_DM_FUZZ_SEED=${details.seed} PVE_DM_FUZZ_PATH=${JSON.stringify(details.counterexamplePath ?? '')} node test/run.mjs ${file}`;
        const cause = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
        throw new Error(`${fc.defaultReportMessage(details) ?? name}\nfailed with: ${cause}\nreplay: ${replay}`);
      }
      process.stdout.write(`\n[fuzz] ${name}: ${details.numRuns} cases\n`);
    },
    LONG ? 24 * 3_600_000 : 20_000,
  );
}

// ── The real formats ────────────────────────────────────────────────────────────────────────

const LVM_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_.-';
/** LV names may not hold these (lvm.8 VALID NAMES; lvm-string.c). */
const LV_RESERVED = ['_cdata', '_cmeta', '_corig', '_cpool', '_cvol', '_wcorig', '_mimage', '_mlog', '_rimage', '_rmeta', '_tdata', '_tmeta', '_vdata', '_imeta', '_iorig', '_pmspare', '_vorigin'];

const chars = (alphabet: string, minLength: number, maxLength: number) => fc.string({ unit: fc.constantFrom(...alphabet), minLength, maxLength });

/** A legal VG name (lvm.8): `a-zA-Z0-9+_.-`, not starting with `-`, not `.` or `..`; NAME_LEN 128. */
export const vgName = fc
  .tuple(fc.constantFrom(...LVM_CHARS.replace('-', '')), chars(LVM_CHARS, 0, 40))
  .map(([first, rest]) => first + rest)
  .filter((name) => name !== '.' && name !== '..');
/** A legal LV name: a VG name without LVM's component markers, not starting with `pvmove` or `snapshot`. */
export const lvName = vgName.filter((name) => !LV_RESERVED.some((marker) => name.includes(marker)) && !name.startsWith('pvmove') && !name.startsWith('snapshot'));

/** pve-storage's storage ID (PVE::JSONSchema parse_id, case-insensitive): `[a-z][a-z0-9\-_.]*[a-z0-9]`. */
export const storageId = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9\-_.]{0,20}[a-zA-Z0-9]$/);
/** pve-common's VMID: 100 to 999999999. */
export const vmid = fc.oneof(fc.integer({ min: 100, max: 999 }), fc.integer({ min: 100, max: 999_999_999 }));
/** A snapshot name (qemu-server CONFIGID `[a-z][a-z0-9_-]+`, case-insensitive); `pending` is the pending section's. */
export const snapshotName = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9_-]{1,20}$/).filter((name) => name.toLowerCase() !== 'pending');

/** Text a person or a program may put anywhere: control characters, terminal escapes, markup, any code point. */
export const hostileText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc
    .array(
      fc.constantFrom(
        '\u001b[2J', '\u001b]8;;http://evil.example/\u0007', '\u001b]8;;\u0007', '\u009b2J', '\u001b[31m', '\r', '\n', '\t', '\u0000', '\u0007', '\u007f',
        '\u0085', '\u2028', '\u202e', '<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', '&amp;', "'", '$(id)', '`id`', ';reboot', '|', ':', '%0A', 'ok', ' ',
      ),
      { maxLength: 8 },
    )
    .map((parts) => parts.join('')),
);
