// `npm run deb`: the Debian package, built into a temporary folder and read back with dpkg-deb
// (no root, no installation: test/deb/deb-test.sh installs it on a clean Debian 12). The man page
// and the bash completion are held to the option table, so that they cannot drift from --help.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gunzipSync } from 'node:zlib';
import * as assert from 'uvu/assert';
import { CLI_COMMANDS, CLI_OPTIONS, parseCli, parseSettingsFile, VERSION } from '../pve-dm.ts';
import { buildDeb, GUARD_HOOKSCRIPT, packageVersion, PACKAGE_SOURCES, roff } from './tools/deb.ts';
import { PROJECT, tempDir, test } from './harness.ts';

// The version of package.json, whatever the shell says (the tier sets it for its upgrade).
delete process.env.PVE_DM_DEB_VERSION;
const out = tempDir('pve-dm-deb-');
const built = buildDeb(out);
/** The package unpacked (dpkg-deb -x and -e: files, modes, control; no maintainer script runs). */
const unpacked = built.then(({ file }) => {
  const dir = path.join(out, 'root');
  dpkgDeb(['-x', file, dir]);
  dpkgDeb(['-e', file, path.join(dir, 'DEBIAN')]);
  return dir;
});

function dpkgDeb(args: string[]): string {
  const run = spawnSync('dpkg-deb', args, { encoding: 'utf8' });
  assert.is(run.status, 0, `dpkg-deb ${args.join(' ')}: ${run.stderr}`);
  return run.stdout;
}
const read = async (installed: string) => readFileSync(path.join(await unpacked, installed));
const text = async (installed: string) => (await read(installed)).toString('utf8');

const PERMISSION: Record<string, number> = { r: 4, w: 2, x: 1, '-': 0 };
/** dpkg-deb --contents (`drwxr-xr-x root/root 0 2026-12-06 05:31 ./etc/`): each path's mode and owner. */
function listing(contents: string): Map<string, { mode: number; owner: string }> {
  return new Map(contents.trim().split('\n').map((line) => {
    const [perms = '', owner = '', , , , name = ''] = line.split(/\s+/);
    const digit = (at: number) => [...perms.slice(at, at + 3)].reduce((sum, c) => sum + (PERMISSION[c] ?? 0), 0);
    return [name.replace(/^\./, ''), { mode: digit(1) * 64 + digit(4) * 8 + digit(7), owner }];
  }));
}

test('control: name, version of package.json, all, the dependencies, section, description', async () => {
  const { file, bytes } = await built;
  assert.is(path.basename(file), `pve-dm_${packageVersion()}_all.deb`);
  assert.ok(bytes > 100_000 && bytes < 2_000_000, `${bytes} bytes`);
  const field = (name: string) => dpkgDeb(['--field', file, name]).trim();
  assert.is(field('Package'), 'pve-dm');
  assert.is(field('Version'), JSON.parse(readFileSync(path.join(PROJECT, 'package.json'), 'utf8')).version);
  assert.is(field('Version'), VERSION);
  assert.is(field('Architecture'), 'all');
  assert.is(field('Depends'), 'nodejs (>= 18.19), lvm2, dmsetup');
  assert.is(field('Section'), 'admin');
  assert.is(field('Priority'), 'optional');
  assert.match(field('Maintainer'), /^.+ <[^<>@\s]+@[^<>@\s]+>$/);
  assert.match(field('Installed-Size'), /^[1-9][0-9]{2,}$/);
  const description = field('Description').split('\n');
  assert.match(description[0] ?? '', /^find and safely clear stale device-mapper entries/);
  assert.ok(description.length > 5 && description.every((line) => line.length <= 80), description.join('\n'));
  // The guard hookscript is not one (test/tools/deb.ts says why): dpkg replaces it on upgrade.
  assert.is(await text('DEBIAN/conffiles'), '/etc/pve-dm/pve-dm.conf\n');
});

test('the files, each with its mode and owned by root; contents lists what dpkg-deb holds', async () => {
  const { file, contents } = await built;
  const held = listing(dpkgDeb(['--contents', file]));
  const expected: Record<string, number> = {
    '/usr/sbin/pve-dm': 0o755,
    '/usr/lib/pve-dm/': 0o755,
    '/usr/lib/pve-dm/pve-dm.mjs': 0o755,
    '/usr/lib/pve-dm/plugins/': 0o755,
    '/etc/pve-dm/': 0o755,
    '/etc/pve-dm/pve-dm.conf': 0o600,
    '/etc/pve-dm/plugins/': 0o755,
    '/var/lib/pve-dm/': 0o755,
    '/var/lib/pve-dm/reports/': 0o755,
    '/usr/lib/systemd/system/pve-dm.service': 0o644,
    '/usr/lib/systemd/system/pve-dm.timer': 0o644,
    '/usr/share/man/man8/pve-dm.8.gz': 0o644,
    '/usr/share/bash-completion/completions/pve-dm': 0o644,
    '/usr/share/doc/pve-dm/README.md.gz': 0o644,
    '/usr/share/doc/pve-dm/copyright': 0o644,
    '/usr/share/doc/pve-dm/changelog.gz': 0o644,
    '/usr/share/doc/pve-dm/examples/pve-dm.cron': 0o644,
    '/var/lib/vz/snippets/pve-dm-guard': 0o755,
    '/usr/share/doc/pve-dm/examples/pve-dm-guard': 0o644,
    '/usr/share/doc/pve-dm/samples/multi-pool/etc/pve/storage.cfg': 0o644,
    '/usr/share/lintian/overrides/pve-dm': 0o644,
  };
  for (const [name, mode] of Object.entries(expected)) {
    assert.is(held.get(name)?.mode.toString(8), mode.toString(8), name);
  }
  const plugins = readdirSync(path.join(PROJECT, 'plugins')).filter((name) => name.endsWith('.ts'));
  for (const name of plugins) {
    assert.is(held.get(`/usr/lib/pve-dm/plugins/${name.replace(/\.ts$/, '.mjs')}`)?.mode, 0o644, name);
  }
  for (const [name, entry] of held) assert.is(entry.owner, 'root/root', name);
  held.delete('/');
  const byPath = (a: [string, number], b: [string, number]) => a[0].localeCompare(b[0]);
  assert.equal(contents.map((entry): [string, number] => [entry.path, entry.mode]).sort(byPath),
    [...held].map(([name, entry]): [string, number] => [name, entry.mode]).sort(byPath));
  // Nothing but the package's own places (no stray build file, no project folder).
  const places = ['/etc/pve-dm/', '/usr/lib/pve-dm/', '/usr/sbin/pve-dm', '/var/lib/pve-dm/',
    '/usr/lib/systemd/system/pve-dm.', '/usr/share/man/man8/pve-dm.8.gz',
    '/usr/share/bash-completion/completions/pve-dm', '/usr/share/doc/pve-dm/', '/usr/share/lintian/overrides/pve-dm',
    GUARD_HOOKSCRIPT];
  for (const name of held.keys()) assert.ok(name.endsWith('/') || places.some((place) => name.startsWith(place)), name);
  // The sample is whole: what pve-dm reads from it is there, byte for byte.
  const sample = path.join(PROJECT, 'samples', 'multi-pool');
  for (const name of ['dmsetup.txt', 'lvs.txt', 'etc/pve/nodes/pve-prd-03/qemu-server/171.conf']) {
    const installed = await read(`/usr/share/doc/pve-dm/samples/multi-pool/${name}`);
    assert.ok(installed.equals(readFileSync(path.join(sample, name))), name);
  }
}, 30_000);

/** The man page's source, unzipped; gzip -9 (the header's XFL byte 2) with no name or time (-n). */
async function manSource(): Promise<string> {
  const gz = await read('/usr/share/man/man8/pve-dm.8.gz');
  assert.is(gz[8], 2, 'gzip -9');
  assert.is(gz.readUInt32LE(4), 0, 'gzip -n: no time');
  assert.is((gz[3] ?? 0) & 0x08, 0, 'gzip -n: no name');
  return gunzipSync(gz).toString('utf8');
}

test('the man page names every option and command of the table, and has the sections of a man page', async () => {
  const man = await manSource();
  const bold = (word: string) => `\\fB${roff(word)}\\fR`;
  for (const option of CLI_OPTIONS) {
    const label = `${option.short ? `${bold(`-${option.short}`)}, ` : ''}${bold(`--${option.name}`)}`;
    assert.ok(man.includes(`.TP\n${label}${option.arg ? ` \\fI${option.arg}\\fR` : ''}\n`), `--${option.name}`);
  }
  for (const command of CLI_COMMANDS) assert.ok(man.includes(`.TP\n${bold(command.name)}`), command.name);
  const sections = [...man.matchAll(/^\.SH (.+)$/gm)].map((m) => m[1]);
  const required = ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'OPTIONS', 'EXIT STATUS', 'FILES', 'SEE ALSO'];
  for (const section of required) assert.ok(sections.includes(section), section);
  assert.match(man, /^\.TH PVE\\-DM 8 /m);
  const files = ['/etc/pve-dm/pve-dm.conf', '/etc/pve-dm/plugins/', '/usr/lib/pve-dm/plugins/',
    '/var/lib/pve-dm/journal.jsonl', '/var/lib/pve-dm/notify-state.json', '/var/lib/pve-dm/reports/',
    '/var/lib/vz/snippets/pve-dm-guard'];
  for (const file of files) assert.ok(man.includes(`.TP\n\\fI${roff(file)}\\fR`), file);
  for (const code of ['0', '1', '2', '3']) assert.ok(man.includes(`.TP\n${bold(code)}\n`), `exit status ${code}`);
  for (const page of ['dmsetup (8)', 'lvm (8)', 'qm (1)', 'pct (1)']) assert.ok(man.includes(`.BR ${page}`), page);
  // Text never starts a line with a control character, and no hyphen is left for roff to mangle.
  for (const line of man.split('\n')) {
    if (/^[.']/.test(line)) assert.match(line, /^(?:\.\\"|\.(?:TH|SH|TP|PP|BR|br|nh|ad)\b)/, line);
    assert.not.match(line.replace(/^\.\\".*/, ''), /(?<!\\)-/, line);
  }
});

test('roff: backslashes, hyphens, a leading dot or quote, and characters beyond ASCII', () => {
  assert.is(roff('a\\b --x'), 'a\\eb \\-\\-x');
  assert.is(roff('.hidden\n\'quote'), '\\&.hidden\n\\&\'quote');
  assert.is(roff('a.b it\'s'), 'a.b it\'s');
  assert.is(roff('café – ✓'), 'caf\\[u00E9] \\[u2013] \\[u2713]');
});

/** What the completion offers for these words (the last is the one completed), with bash and nothing else loaded. */
async function complete(...words: string[]): Promise<string[]> {
  const script = path.join(await unpacked, 'usr/share/bash-completion/completions/pve-dm');
  const body = 'source "$0"; COMP_WORDS=(pve-dm "$@"); COMP_CWORD=$#; _pve_dm; printf "%s\\n" "${COMPREPLY[@]}"';
  const cwd = await unpacked;
  const run = spawnSync('bash', ['--norc', '--noprofile', '-c', body, script, ...words], { encoding: 'utf8', cwd });
  assert.is(run.status, 0, run.stderr);
  assert.is(run.stderr, '');
  return run.stdout.split('\n').filter(Boolean).sort();
}

test('the bash completion offers exactly the options, the values and the commands of the table', async () => {
  const visible = CLI_OPTIONS.filter((option) => !option.hidden);
  const words = visible.flatMap((option) => [...(option.short ? [`-${option.short}`] : []), `--${option.name}`]).sort();
  assert.equal(await complete('-'), words);
  assert.equal(await complete(''), CLI_COMMANDS.map((command) => command.name).sort());
  assert.equal(await complete('--rep'), ['--report-only']);
  for (const option of CLI_OPTIONS.filter((candidate) => candidate.values)) {
    assert.equal(await complete(`--${option.name}`, ''), [...(option.values ?? [])].sort(), option.name);
    assert.equal(await complete(`--${option.name}`, '=', ''), [...(option.values ?? [])].sort(), `--${option.name}=`);
  }
  // Folders where a folder goes, nothing after an option that takes a number or a name.
  assert.equal(await complete('--root', 'u'), ['usr']);
  assert.equal(await complete('capture', 'e'), ['etc']);
  assert.equal(await complete('--vmid', ''), []);
  // An option's value is not the command: after `--root usr capture`, capture's folder comes.
  assert.equal(await complete('--root', 'usr', 'c'), ['capture']);
  assert.equal(await complete('--root', 'usr', 'capture', 'v'), ['var']);
}, 30_000);

/** A stand-in `node` that answers --version with `version` and otherwise prints what it was given. */
function fakeNode(version: string): string {
  const dir = path.join(tempDir(), 'bin');
  mkdirSync(dir);
  const script = `#!/bin/sh\n[ "$1" = --version ] && { echo ${version}; exit 0; }\nprintf 'ran:%s\\n' "$@"\n`;
  writeFileSync(path.join(dir, 'node'), script);
  chmodSync(path.join(dir, 'node'), 0o755);
  return dir;
}

/** The launcher with only `dirs` on PATH: the node it finds there is the one it checks and runs. */
async function launch(dirs: string, args: string[], launcher?: string) {
  const script = launcher ?? path.join(await unpacked, 'usr/sbin/pve-dm');
  // Only PATH: the launcher finds node there. (LD_LIBRARY_PATH stays: the Node 18 tier's unpacked node needs it.)
  const env = { PATH: dirs, ...(process.env.LD_LIBRARY_PATH ? { LD_LIBRARY_PATH: process.env.LD_LIBRARY_PATH } : {}) };
  return spawnSync('/bin/sh', [script, ...args], { encoding: 'utf8', env });
}

test('the launcher refuses a node older than 18.19, or none, in one line and exit 3', async () => {
  for (const version of ['v16.20.2', 'v18.18.2', 'v0.10.48']) {
    const run = await launch(fakeNode(version), ['--version']);
    assert.is(run.status, 3, version);
    assert.is(run.stderr, `pve-dm: needs Node.js 18.19 or newer (found ${version}): apt install nodejs\n`);
    assert.is(run.stdout, '');
  }
  const none = await launch(path.join(tempDir(), 'empty'), ['--version']);
  assert.is(none.status, 3);
  assert.is(none.stderr, 'pve-dm: needs Node.js 18.19 or newer (found none): apt install nodejs\n');
  for (const version of ['v18.19.0', 'v20.19.2', 'v100.0.0']) {
    const run = await launch(fakeNode(version), ['--root', 'a dir', '--report-only']);
    assert.is(run.status, 0, `${version}: ${run.stderr}`);
    assert.is(run.stdout, 'ran:/usr/lib/pve-dm/pve-dm.mjs\nran:--root\nran:a dir\nran:--report-only\n', version);
  }
});

test('the launcher runs the packaged bundle with a real node', async () => {
  const root = await unpacked;
  const original = await text('/usr/sbin/pve-dm');
  const line = '\nbundle=/usr/lib/pve-dm/pve-dm.mjs\n';
  assert.ok(original.includes(line));
  // The same script, pointed at the unpacked bundle instead of the installed one.
  const launcher = path.join(tempDir(), 'pve-dm');
  writeFileSync(launcher, original.replace(line, `\nbundle=${root}/usr/lib/pve-dm/pve-dm.mjs\n`));
  const run = await launch(path.dirname(process.execPath), ['--version'], launcher);
  assert.is(run.status, 0, run.stderr);
  assert.ok(run.stdout.includes(VERSION), run.stdout);
}, 30_000);

test('the guard hookscript: the source file byte for byte, one line that runs the installed command', async () => {
  assert.is(GUARD_HOOKSCRIPT, '/var/lib/vz/snippets/pve-dm-guard');
  const source = readFileSync(path.join(PACKAGE_SOURCES, 'pve-dm-guard'));
  assert.ok((await read(GUARD_HOOKSCRIPT)).equals(source), 'as test/deb/package/pve-dm-guard');
  assert.ok((await read('/usr/share/doc/pve-dm/examples/pve-dm-guard')).equals(source), 'the example is the same');
  // Its code, comments aside: the shebang Proxmox's exec needs, and the launcher the package installs.
  const code = source.toString('utf8').split('\n').filter((line, index) => index === 0 || !/^\s*(#|$)/.test(line));
  assert.equal(code, ['#!/bin/sh', 'exec /usr/sbin/pve-dm guard "$1" "$2"']);
  assert.is(listing(dpkgDeb(['--contents', (await built).file])).get('/usr/sbin/pve-dm')?.mode, 0o755);
  // Not a conffile, so dpkg keeps its sum and --verify sees an edit.
  assert.match(await text('DEBIAN/md5sums'), /^[0-9a-f]{32} {2}var\/lib\/vz\/snippets\/pve-dm-guard$/m);
});

test('the guard hookscript as Proxmox runs it (SCRIPT VMID PHASE): arguments and exit code passed on', async () => {
  const installed = await text(GUARD_HOOKSCRIPT);
  // The same script, its command a stand-in that prints what it was given and exits as told.
  const dir = tempDir();
  const standIn = path.join(dir, 'pve-dm');
  writeFileSync(standIn, '#!/bin/sh\nprintf \'arg:%s\\n\' "$@"\nexit "${PVE_DM_TEST_EXIT:-0}"\n');
  chmodSync(standIn, 0o755);
  const hook = path.join(dir, 'pve-dm-guard');
  writeFileSync(hook, installed.replace('exec /usr/sbin/pve-dm ', `exec ${standIn} `));
  chmodSync(hook, 0o755);
  assert.ok(readFileSync(hook, 'utf8').includes(`exec ${standIn} guard`));
  for (const [phase, exit] of [['pre-start', 1], ['pre-start', 0], ['post-start', 0], ['post-stop', 0]] as const) {
    // Executed directly, as Proxmox's run_command does: the shebang and the mode are what run it.
    const run = spawnSync(hook, ['171', phase], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin',
      PVE_DM_TEST_EXIT: String(exit) } });
    assert.is(run.status, exit, `${phase}: ${run.stderr}`);
    assert.is(run.stdout, `arg:guard\narg:171\narg:${phase}\n`, phase);
  }
  // A third argument (none from Proxmox) is not passed on: guard takes the VMID and the phase.
  const extra = spawnSync(hook, ['171', 'pre-start', '--yes'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin' } });
  assert.is(extra.stdout, 'arg:guard\narg:171\narg:pre-start\n');
});

/** A unit file's values of a key, continuation lines (a trailing backslash) joined. */
const unitValues = (unit: string, key: string) =>
  [...unit.replace(/\s*\\\n\s*/g, ' ').matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => (m[1] ?? '').trim());

test('the service runs the packaged command with options pve-dm accepts; the timer is what gets enabled', async () => {
  const service = await text('/usr/lib/systemd/system/pve-dm.service');
  const [execStart = '', ...more] = unitValues(service, 'ExecStart');
  assert.is(more.length, 0);
  const [program, ...args] = execStart.split(/\s+/);
  assert.is(program, '/usr/sbin/pve-dm');
  const options = parseCli(args, {});
  assert.is(options.command, 'analyse');
  assert.ok(options.reportOnly);
  assert.is(options.htmlFile, '/var/lib/pve-dm/report.html');
  assert.is(options.prometheusFile, null, 'no textfile folder is assumed: pve-dm refuses one that does not exist');
  assert.equal(unitValues(service, 'Documentation'), ['man:pve-dm(8)']);
  assert.equal(unitValues(service, 'SuccessExitStatus'), ['1 2']);
  assert.equal(unitValues(service, 'StateDirectory'), ['pve-dm']);
  assert.equal(unitValues(service, 'ProtectSystem'), ['strict']);
  assert.not.match(service, /^\[Install\]/m, 'the service is started by the timer only');
  const timer = await text('/usr/lib/systemd/system/pve-dm.timer');
  assert.equal(unitValues(timer, 'WantedBy'), ['timers.target']);
  assert.equal(unitValues(timer, 'OnCalendar'), ['daily']);
  const cron = await text('/usr/share/doc/pve-dm/examples/pve-dm.cron');
  const line = ` root ${execStart} >> /var/log/pve-dm.log 2>&1\n`;
  assert.ok(cron.includes(line), 'the cron example runs what the service runs');
});

/** Every PVE_DM_* setting pve-dm and its plugins read: setting('...') calls, and a plugin's list where it has one. */
async function settingsRead(): Promise<Set<string>> {
  const plugins = readdirSync(path.join(PROJECT, 'plugins')).filter((name) => name.endsWith('.ts'))
    .map((name) => path.join(PROJECT, 'plugins', name));
  const keys = [path.join(PROJECT, 'pve-dm.ts'), ...plugins].flatMap((file) =>
    [...readFileSync(file, 'utf8').matchAll(/\bsettings?\('(PVE_DM_[A-Z0-9_]+)'\)/g)].map((m) => m[1] ?? ''));
  for (const file of plugins) {
    const listed: unknown = (await import(pathToFileURL(file).href)).default?.settings;
    if (Array.isArray(listed)) keys.push(...listed.map(String));
  }
  return new Set(keys);
}

test('the configuration template: every setting, commented out, in a file pve-dm reads', async () => {
  const conf = await text('/etc/pve-dm/pve-dm.conf');
  assert.equal([...parseSettingsFile(conf, 'pve-dm.conf', 0o600).keys()], [], 'nothing set');
  const keys = new Set([...conf.matchAll(/^#(PVE_DM_[A-Z0-9_]+)=/gm)].map((m) => m[1]));
  const read = await settingsRead();
  assert.ok(read.size > 10, [...read].join(' '));
  for (const key of read) assert.ok(keys.has(key), `${key} is in the template`);
  // Uncommented, every line is one pve-dm reads (secrets among them: the file must be 0600).
  const uncommented = conf.replace(/^#(PVE_DM_)/gm, '$1');
  assert.is(parseSettingsFile(uncommented, 'pve-dm.conf', 0o600).size, keys.size);
  assert.throws(() => parseSettingsFile(uncommented, 'pve-dm.conf', 0o644), /chmod 600/);
});

test('maintainer scripts: sh, stopping on error; only purge removes the configuration; nothing starts', async () => {
  for (const script of ['postinst', 'prerm', 'postrm']) {
    const body = await text(`DEBIAN/${script}`);
    assert.ok(body.startsWith('#!/bin/sh\n'), script);
    assert.match(body, /^set -e$/m, script);
    const syntax = spawnSync('sh', ['-n', path.join(await unpacked, 'DEBIAN', script)], { encoding: 'utf8' });
    assert.is(syntax.status, 0, `${script}: ${syntax.stderr}`);
    const code = body.replace(/^\s*#.*$/gm, '');
    assert.not.match(code, /deb-systemd-invoke (?:start|restart)|systemctl (?:enable|start)/, script);
    // The one enable: an upgrade keeps a timer the administrator enabled (as debhelper's --no-enable).
    for (const enable of body.match(/^.*deb-systemd-helper enable.*$/gm) ?? []) {
      assert.ok(body.includes(`if deb-systemd-helper --quiet was-enabled pve-dm.timer; then\n${enable}`), enable);
    }
  }
  const postrm = await text('DEBIAN/postrm');
  const purge = postrm.indexOf('    purge)');
  assert.ok(postrm.slice(purge).includes('rm -rf /etc/pve-dm /var/lib/pve-dm'));
  assert.not.match(postrm.slice(0, purge), /\brm /, 'remove deletes nothing');
});

test('copyright: machine-readable, pve-dm under MIT, and every bundled library with its licence text', async () => {
  const copyright = await text('/usr/share/doc/pve-dm/copyright');
  assert.ok(copyright.startsWith('Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n'));
  assert.match(copyright, /^Files: \*\nCopyright: .+\nLicense: Expat\n/m);
  for (const library of ['undici', 'cheerio', 'ts-pattern', '@clack/prompts']) {
    assert.match(copyright, new RegExp(`^Files: node_modules/${library}/\\*$`, 'm'), library);
  }
  const named = new Set([...copyright.matchAll(/^License: (\S+)$/gm)].map((m) => m[1]));
  const texts = [...copyright.matchAll(/^License: (\S+)\n /gm)].map((m) => m[1]);
  assert.equal([...named].sort(), [...texts].sort(), 'one full text for each licence named');
});

test.run();
