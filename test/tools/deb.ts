// `npm run deb`: dist/pve-dm_<version>_all.deb, the Debian package, built with dpkg-deb alone (no
// debhelper, no network): the bundle of `npm run build` in /usr/lib/pve-dm, a launcher in
// /usr/sbin, the configuration in /etc/pve-dm, the systemd units (not enabled), the guard
// hookscript in /var/lib/vz/snippets, a man page and a bash completion. The man page and the
// completion are written here from CLI_OPTIONS and CLI_COMMANDS, the table --help is printed from,
// so that none of the three can say something the others do not. The hand-written files
// (launcher, units, hookscript, maintainer scripts, configuration template) are in
// test/deb/package/; test/deb.test.ts checks the package, test/deb/deb-test.sh installs it on a
// clean Debian 12.
//
// PVE_DM_DEB_VERSION overrides package.json's version (the tier builds a higher one to upgrade to),
// PVE_DM_DEB_MAINTAINER the Maintainer field, SOURCE_DATE_EPOCH every timestamp (default: the last
// commit's time), so that the same commit builds the same bytes.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync,
  statSync, utimesSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';
import { CLI_COMMANDS, CLI_OPTIONS, optionHelp, PACKAGE_DIR, pathsFor, type CliOption } from '../../pve-dm.ts';
import { buildBundle } from './build.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The package's hand-written files. */
export const PACKAGE_SOURCES = path.join(ROOT, 'test', 'deb', 'package');
const PACKAGE = 'pve-dm';
const DOC = `/usr/share/doc/${PACKAGE}`;
/** The paths the installed pve-dm uses (pve-dm.ts: pathsFor), for the help texts of the man page. */
const INSTALLED_PATHS = pathsFor(PACKAGE_DIR);
/** The guard hookscript: the snippets folder of Proxmox's default `local` storage (path /var/lib/vz). */
export const GUARD_HOOKSCRIPT = '/var/lib/vz/snippets/pve-dm-guard';

// ─── What goes into the package ──────────────────────────────────────────────────────────────

/** The version: package.json's, unless PVE_DM_DEB_VERSION says otherwise; checked as dpkg would. */
export function packageVersion(env: NodeJS.ProcessEnv = process.env): string {
  const version = env.PVE_DM_DEB_VERSION || readPackageJson().version;
  if (typeof version !== 'string' || !/^(?:\d+:)?\d[A-Za-z0-9.+~-]*$/.test(version) || version.endsWith('-')) {
    throw new Error(`"${String(version)}" is not a Debian version (PVE_DM_DEB_VERSION or package.json)`);
  }
  return version;
}

const readPackageJson = () => JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8'));

/** Runs git in the project; null where there is no git or no commit (a copy of the tree). */
function git(args: string[]): string | null {
  try {
    const output = execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return output.trim() || null;
  } catch {
    return null;
  }
}

/** Every timestamp of the package: SOURCE_DATE_EPOCH, or the last commit's time (reproducible builds). */
export function sourceDate(env: NodeJS.ProcessEnv = process.env): Date {
  const epoch = env.SOURCE_DATE_EPOCH || git(['log', '-1', '--format=%ct']);
  const seconds = epoch === null ? Math.floor(statSync(path.join(ROOT, 'package.json')).mtimeMs / 1000) : Number(epoch);
  if (!Number.isSafeInteger(seconds) || seconds < 0) throw new Error(`SOURCE_DATE_EPOCH ${epoch}: not seconds`);
  return new Date(seconds * 1000);
}

/**
 * The Maintainer field: PVE_DM_DEB_MAINTAINER, else package.json's author, else the last commit's
 * author (package.json names nobody yet), else a placeholder that says so.
 */
export function maintainer(env: NodeJS.ProcessEnv = process.env): string {
  const author = readPackageJson().author;
  const fromPackage = typeof author === 'string' ? author : author?.email ? `${author.name} <${author.email}>` : null;
  const committer = git(['log', '-1', '--format=%an <%ae>']);
  return env.PVE_DM_DEB_MAINTAINER || fromPackage || committer || 'pve-dm <root@localhost>';
}

const SYNOPSIS = 'find and safely clear stale device-mapper entries on Proxmox VE';

/** The paragraphs of the man page's DESCRIPTION and of the control file's long description. */
const DESCRIPTION = [
  'pve-dm finds the device-mapper entries on a Proxmox VE node that will take a guest down, explains each one, ' +
    'grades the node (A+ to F) and tells you the command that fixes it.',
  'Every active LVM volume of a VM or container disk is a device-mapper entry. Failed migrations, deletions on ' +
    'shared LVM, aborted restores and hand-made mappings leave entries behind: duplicates (critical), more than ' +
    'one entry for the same guest disk on the same volume group; and tombstones (warning), entries no guest ' +
    'config on this node references any more, which block the next disk of that name.',
  'pve-dm maps storage IDs to volume groups through storage.cfg, knows containers, linked clones, cloud-init, ' +
    'snapshots, PVE 9 volume chains and the other nodes of the cluster, runs a fixed number of processes, ' +
    'and exits with a code monitoring understands. It reports as text, JSON, HTML, Nagios, Checkmk and ' +
    'Prometheus metrics, sends notifications through plugins, and cleans up only when asked, ' +
    'recording what it removed so that it can be restored.',
];

/** A regular file or directory of the package, as dpkg will install it. */
export interface DebEntry {
  /** Absolute, as installed; a directory's ends with '/'. */
  path: string;
  mode: number;
  size: number;
}

// ─── roff ────────────────────────────────────────────────────────────────────────────────────

/**
 * Text as roff prints it: backslashes as \e, hyphens as \- (a minus that man does not turn into a
 * Unicode hyphen, so that a copied option works), other characters than ASCII by code point, and
 * \& before a line's leading '.' or "'", which roff would otherwise read as a request.
 */
export function roff(text: string): string {
  const escaped = text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .replace(/[^\x20-\x7e\n]/gu, (c) => `\\[u${(c.codePointAt(0) ?? 0).toString(16).toUpperCase().padStart(4, '0')}]`);
  return escaped.replace(/^[.']/gm, '\\&$&');
}

const bold = (text: string) => `\\fB${roff(text)}\\fR`;
const italic = (text: string) => `\\fI${roff(text)}\\fR`;

/** A usage line (`restore --last | ID...`): options and words in bold, placeholders (DIR, ID) in italics. */
function roffUsage(usage: string): string {
  return usage
    .split(' ')
    .map((word) => {
      const placeholder = /^([A-Z][A-Z0-9_]*)(.*)$/.exec(word);
      if (placeholder) return italic(placeholder[1] ?? '') + roff(placeholder[2] ?? '');
      return word === '|' || word === '[' || word === ']' ? roff(word) : bold(word);
    })
    .join(' ');
}

/** An option's label as the man page's tagged paragraph shows it: `-y, --yes`, `--root DIR`. */
function roffOption(option: CliOption): string {
  const short = option.short ? `${bold(`-${option.short}`)}, ` : '';
  return `${short}${bold(`--${option.name}`)}${option.arg ? ` ${italic(option.arg)}` : ''}`;
}

const EXIT_STATUS: [string, string][] = [
  ['0', 'healthy: grade A+ and no warnings.'],
  ['1', 'tombstones, entries that could not be judged, or warnings (an input line that could not be read, a command ' +
    'that failed, a --vmid that names no guest).'],
  ['2', 'duplicates, or grade F.'],
  ['3', 'could not analyse (a required file missing, a usage error, a --prometheus file that cannot be written): ' +
    'one line on stderr. These are the Nagios plugin states, so --format nagios exits with the state it prints.'],
];

const FILES: [string, string][] = [
  [INSTALLED_PATHS.config, 'the settings, KEY=value lines (a commented template of every setting is installed). ' +
    'It must stay mode 0600 while it holds a secret. The environment wins over it.'],
  ['/etc/pve-dm/plugins/', "the administrator's own plugins (.js or .mjs, each a default-exported plain object): " +
    'the folder and its files must be owned by root and writable by nobody else.'],
  ['/usr/lib/pve-dm/plugins/', 'the notifiers shipped with pve-dm (gotify, mailjet, ntfy, sendmail, slack, webhook).'],
  ['/var/lib/pve-dm/journal.jsonl', 'the journal of what cleanup removed, which restore reads (--journal).'],
  ['/var/lib/pve-dm/notify-state.json', 'the last result, for --notify change (--state).'],
  [`${INSTALLED_PATHS.reports}/`, 'the HTML reports of console runs (--keep-reports).'],
  ['/usr/lib/systemd/system/pve-dm.service, pve-dm.timer', 'a daily report-only run, not enabled by the package: ' +
    'systemctl enable --now pve-dm.timer.'],
  [GUARD_HOOKSCRIPT, 'the guard as a hookscript (pve-dm guard VMID PHASE), for ' +
    'qm set VMID --hookscript local:snippets/pve-dm-guard (pct set for a container); replaced on upgrade.'],
  [`${DOC}/samples/multi-pool/`, 'a recorded node to try pve-dm on: pve-dm --root ' +
    `${DOC}/samples/multi-pool --report-only (it has duplicates: grade F, exit status 2).`],
];

const EXAMPLES: [string, string][] = [
  ['pve-dm --report-only', 'Analyse this node and report; never prompt, never change anything.'],
  ['pve-dm', 'Analyse this node, report, then offer the cleanup of each problem that passes the safety checks.'],
  ['pve-dm capture /tmp/pve-dm-capture --anonymise', 'Record this node, names and addresses replaced (a bug report).'],
  ['systemctl enable --now pve-dm.timer', 'Run the report every day (HTML report and Prometheus metrics).'],
];

/** pve-dm(8), from the option table: every option and command that --help shows, and the spellings it hides. */
export function manPage(version: string, date: Date): string {
  const tagged = (tag: string, text: string) => ['.TP', tag, roff(text)];
  const anyOption = `[${italic('OPTION')}...]`;
  return [
    `.\\" pve-dm(8), written by test/tools/deb.ts from pve-dm's option table (the one --help prints): do not edit.`,
    `.TH PVE\\-DM 8 ${roff(date.toISOString().slice(0, 10))} "pve\\-dm ${roff(version)}" "System Administration"`,
    // Paths and option names are neither hyphenated nor stretched: they are copied as they are.
    '.nh',
    '.ad l',
    '.SH NAME',
    `pve\\-dm \\- ${roff(SYNOPSIS)}`,
    '.SH SYNOPSIS',
    `${bold('pve-dm')} ${anyOption}`,
    ...CLI_COMMANDS.flatMap((command) => ['.br', `${bold('pve-dm')} ${roffUsage(command.usage)} ${anyOption}`]),
    '.SH DESCRIPTION',
    ...DESCRIPTION.flatMap((paragraph, index) => [...(index > 0 ? ['.PP'] : []), roff(paragraph)]),
    '.SH COMMANDS',
    roff('Without a command, pve-dm analyses this node (or the captures given with --root).'),
    ...CLI_COMMANDS.flatMap((command) => tagged(roffUsage(command.usage), command.help)),
    '.SH OPTIONS',
    ...CLI_OPTIONS.flatMap((option) => tagged(roffOption(option), optionHelp(option, INSTALLED_PATHS))),
    '.SH EXIT STATUS',
    ...EXIT_STATUS.flatMap(([code, text]) => tagged(bold(code), text)),
    '.PP',
    roff('A failed notification is reported and does not change the exit status.'),
    '.SH ENVIRONMENT',
    roff(`Every setting of ${INSTALLED_PATHS.config} (PVE_DM_...) can be given in the environment, which wins. ` +
      'NO_COLOR turns colour off; PVE_DM_DEBUG=1 shows where an internal error happened.'),
    '.SH FILES',
    ...FILES.flatMap(([file, text]) => tagged(italic(file), text)),
    '.SH EXAMPLES',
    ...EXAMPLES.flatMap(([command, text]) => tagged(bold(command), text)),
    '.SH SEE ALSO',
    ...['dmsetup 8', 'lvm 8', 'qm 1', 'pct 1'].map((page, index, all) => {
      const [name = '', section = ''] = page.split(' ');
      return `.BR ${name} (${section})${index < all.length - 1 ? ',' : ''}`;
    }),
    '',
  ].join('\n');
}

// ─── bash completion ─────────────────────────────────────────────────────────────────────────

/** Words for a bash array or compgen -W, folded at 100 columns under `indent`. */
function shellWords(words: readonly string[], indent: string): string {
  const lines: string[] = [];
  for (const word of words) {
    const last = lines.length - 1;
    if (last >= 0 && indent.length + (lines[last] ?? '').length + 1 + word.length <= 100) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines.join(`\n${indent}`);
}

/** The completion's helpers: the words that match, and files or folders (the option table plays no part). */
const COMPLETION_HELPERS = `_pve_dm_words() {
    mapfile -t COMPREPLY < <(compgen -W "$1" -- "$cur")
}

_pve_dm_paths() {
    if declare -F _filedir >/dev/null; then
        if [ "$1" = dir ]; then _filedir -d; else _filedir; fi
    else
        compopt -o filenames 2>/dev/null
        if [ "$1" = dir ]; then
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        fi
    fi
}
`;

/**
 * The bash completion, from the option table: option names, the values of those that take a fixed
 * set, files or folders for those that take one, and the commands. It uses bash-completion's
 * _filedir when loaded (it quotes names with spaces and knows `~`), compgen otherwise.
 */
export function bashCompletion(): string {
  const withArg = CLI_OPTIONS.filter((option) => option.arg !== undefined);
  const names = (options: readonly CliOption[]) => options.map((option) => `--${option.name}`);
  const cases = [
    ...withArg.filter((option) => option.values).map((option) =>
      `        --${option.name}) _pve_dm_words '${shellWords(option.values ?? [], '            ')}' ;;`),
    ...(['dir', 'file'] as const).flatMap((kind) => {
      const options = withArg.filter((option) => !option.values && option.complete === kind);
      return options.length > 0 ? [`        ${names(options).join('|')}) _pve_dm_paths ${kind} ;;`] : [];
    }),
    // A number, a name: nothing to offer, and no file names either.
    `        ${names(withArg.filter((option) => !option.values && !option.complete)).join('|')}) ;;`,
  ];
  const visible = CLI_OPTIONS.filter((option) => !option.hidden);
  const optionWords = visible.flatMap((option) => [...(option.short ? [`-${option.short}`] : []), `--${option.name}`]);
  // A command whose first argument is a folder (capture DIR) completes folders there.
  const dirCommands = CLI_COMMANDS.filter((command) => command.usage.split(' ')[1] === 'DIR')
    .map((command) => command.name);
  return `# bash completion for pve-dm(8): written by test/tools/deb.ts from pve-dm's option table (the one
# --help prints), so that it offers exactly what pve-dm accepts. Do not edit.

# The options that take a value: the word after one is its value, not a command.
_pve_dm_with_value=(
    ${shellWords(names(withArg), '    ')}
)

${COMPLETION_HELPERS}
_pve_dm() {
    local cur=\${COMP_WORDS[COMP_CWORD]} prev=''
    [ "$COMP_CWORD" -gt 0 ] && prev=\${COMP_WORDS[COMP_CWORD-1]}
    COMPREPLY=()
    # --option=value: bash splits it at '=' (COMP_WORDBREAKS).
    if [ "$cur" = = ]; then
        cur=''
    elif [ "$prev" = = ] && [ "$COMP_CWORD" -gt 1 ]; then
        prev=\${COMP_WORDS[COMP_CWORD-2]}
    fi
    case $prev in
${cases.join('\n')}
        *) _pve_dm_rest ;;
    esac
}

# Not an option's value: an option, a command, or a command's folder.
_pve_dm_rest() {
    if [[ $cur == -* ]]; then
        _pve_dm_words '${shellWords(optionWords, '            ')}'
        return
    fi
    local i word command='' arguments=0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=\${COMP_WORDS[i]}
        if [[ " \${_pve_dm_with_value[*]} " == *" $word "* ]]; then
            # Its value, and the '=' of --option=value.
            if [ "\${COMP_WORDS[i+1]}" = = ]; then ((i += 2)); else ((i += 1)); fi
        elif [[ $word != -* ]]; then
            if [ -z "$command" ]; then command=$word; else ((arguments += 1)); fi
        fi
    done
    case $command in
        '') _pve_dm_words '${shellWords(CLI_COMMANDS.map((command) => command.name), '            ')}' ;;
        ${dirCommands.join('|') || "''"}) [ "$arguments" -eq 0 ] && _pve_dm_paths dir ;;
    esac
}

complete -F _pve_dm pve-dm
`;
}

// ─── copyright (DEP-5) ───────────────────────────────────────────────────────────────────────

/** The licence texts a DEP-5 file must carry in full (none of them is in /usr/share/common-licenses). */
const LICENSES: Record<string, string> = {
  Expat: `Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation the
rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and to permit
persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of the
Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE
WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.`,
  ISC: `Permission to use, copy, modify, and/or distribute this software for any purpose with or without fee is hereby
granted, provided that the above copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH REGARD TO THIS SOFTWARE INCLUDING ALL
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT,
INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF
THIS SOFTWARE.`,
  'BSD-2-clause': `Redistribution and use in source and binary forms, with or without modification, are permitted
provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this list of conditions and the following
   disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice, this list of conditions and the following
   disclaimer in the documentation and/or other materials provided with the distribution.

THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND ANY EXPRESS OR IMPLIED WARRANTIES,
INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL,
SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR
SERVICES; LOSS OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY,
WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE
OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.`,
};
/** package.json's SPDX names as DEP-5 spells them ("MIT" is ambiguous there: the MIT licence npm means is Expat). */
const DEP5_NAMES: Record<string, string> = { MIT: 'Expat', ISC: 'ISC', 'BSD-2-Clause': 'BSD-2-clause' };

interface Bundled {
  /** node_modules/<name>, as esbuild read it. */
  dir: string;
  name: string;
  version: string;
  license: string;
  copyright: string[];
}

/**
 * The npm packages esbuild puts into the bundle and the plugins: what the copyright file must
 * name. Asked of esbuild itself (its metafile), from the same entry points as `npm run build`.
 */
async function bundledPackages(): Promise<Bundled[]> {
  const entryPoints = [path.join(ROOT, 'pve-dm.ts'), ...readdirSync(path.join(ROOT, 'plugins'))
    .filter((name) => name.endsWith('.ts')).map((name) => path.join(ROOT, 'plugins', name))];
  const { metafile } = await build({ entryPoints, bundle: true, platform: 'node', format: 'esm', write: false,
    metafile: true, outdir: path.join(os.tmpdir(), 'pve-dm-deb-metafile'), logLevel: 'silent' });
  const dirs = new Set(Object.keys(metafile.inputs).flatMap((input) => /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//
    .exec(input)?.slice(1, 2) ?? []));
  return [...dirs].sort().map((dir) => {
    const json = JSON.parse(readFileSync(path.join(ROOT, dir, 'package.json'), 'utf8'));
    const licenseFile = readdirSync(path.join(ROOT, dir)).find((name) => /^licen[cs]e/i.test(name));
    const text = licenseFile ? readFileSync(path.join(ROOT, dir, licenseFile), 'utf8') : '';
    // The holders as the licence file states them; without one (boolbase), package.json's author.
    const stated = [...text.matchAll(/^\s*Copyright\s+(?:\([cC]\)\s*)?(?!notice)(.+?)\s*$/gm)].map((m) => m[1] ?? '');
    const author = typeof json.author === 'string' ? json.author : json.author?.name;
    const copyright = stated.length > 0 ? stated : author ? [author] : [];
    if (copyright.length === 0) throw new Error(`${dir}: no licence file or author names its copyright holder`);
    return { dir, name: json.name, version: json.version, license: String(json.license), copyright };
  });
}

/** A DEP-5 field's value over several lines: continuation lines start with a space, an empty one is " .". */
const field = (name: string, lines: readonly string[]) =>
  `${name}: ${lines.map((line, index) => (index === 0 ? line : ` ${line.trim() === '' ? '.' : line}`)).join('\n')}`;

/**
 * /usr/share/doc/pve-dm/copyright in the machine-readable format: pve-dm itself (package.json:
 * MIT), then every library the bundle carries, with its licence. A licence not listed in LICENSES
 * stops the build: the file must not go out without it.
 */
export async function copyrightFile(date: Date): Promise<string> {
  const bundled = await bundledPackages();
  const dep5 = (license: string) => {
    const name = DEP5_NAMES[license];
    if (name === undefined) throw new Error(`no DEP-5 text for licence "${license}" (test/tools/deb.ts: LICENSES)`);
    return name;
  };
  const own = dep5(String(readPackageJson().license));
  const used = [...new Set([own, ...bundled.map((item) => dep5(item.license))])].sort();
  const paragraphs = [
    [
      'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/',
      'Upstream-Name: pve-dm',
      field('Comment', ['A native package, built from the pve-dm repository by `npm run deb`.',
        '/usr/lib/pve-dm/pve-dm.mjs, its chunks in /usr/lib/pve-dm/chunks and /usr/lib/pve-dm/plugins are',
        'bundled by esbuild from pve-dm.ts, plugins/ and the npm packages below (their Files: the paths the',
        'build read them from).']),
    ].join('\n'),
    ['Files: *', `Copyright: ${date.getUTCFullYear()} The pve-dm authors`, `License: ${own}`,
      'Comment: package.json: "license": "MIT"'].join('\n'),
    ...bundled.map((item) => [`Files: ${item.dir}/*`, field('Copyright', item.copyright),
      `License: ${dep5(item.license)}`, `Comment: ${item.name} ${item.version}`].join('\n')),
    ...used.map((name) => field('License', [name, ...(LICENSES[name] ?? '').split('\n')])),
  ];
  return `${paragraphs.join('\n\n')}\n`;
}

// ─── control, changelog ──────────────────────────────────────────────────────────────────────

/** RFC 5322 date, as debian/changelog writes it (`Sat, 06 Dec 2026 05:31:34 +0000`). */
const changelogDate = (date: Date) => date.toUTCString().replace(/GMT$/, '+0000');

/**
 * The package's changelog: one entry, for the version built. pve-dm is a native package (its
 * version has no Debian revision), so Debian policy (12.7) installs it as changelog.gz, not
 * changelog.Debian.gz.
 */
export function changelog(version: string, who: string, date: Date): string {
  return [
    `pve-dm (${version}) unstable; urgency=medium`,
    '',
    `  * pve-dm ${version}, packaged by npm run deb (test/tools/deb.ts).`,
    "    The project's history is in its repository.",
    '',
    ` -- ${who}  ${changelogDate(date)}`,
    '',
  ].join('\n');
}

/** The long description: the paragraphs folded to 79 columns, each continuation line led by a space. */
function longDescription(): string[] {
  const fold = (text: string) => {
    const lines: string[] = [];
    for (const word of text.split(' ')) {
      const last = lines.length - 1;
      if (last >= 0 && (lines[last] ?? '').length + 1 + word.length <= 78) lines[last] += ` ${word}`;
      else lines.push(word);
    }
    return lines.map((line) => ` ${line}`);
  };
  return DESCRIPTION.flatMap((paragraph, index) => [...(index > 0 ? [' .'] : []), ...fold(paragraph)]);
}

export function controlFile(version: string, who: string, installedSizeKib: number): string {
  return [
    `Package: ${PACKAGE}`,
    `Version: ${version}`,
    'Architecture: all',
    `Maintainer: ${who}`,
    `Installed-Size: ${installedSizeKib}`,
    // Debian 12's node is 18.19: the launcher checks the same version (test/deb/package/pve-dm.sh).
    'Depends: nodejs (>= 18.19), lvm2, dmsetup',
    // The daily service writes node_exporter's textfile folder (pve-dm.service).
    'Suggests: prometheus-node-exporter',
    'Section: admin',
    'Priority: optional',
    `Description: ${SYNOPSIS}`,
    ...longDescription(),
    '',
  ].join('\n');
}

/** dpkg-gencontrol's Installed-Size: every file in KiB rounded up, and 1 KiB for each other entry. */
const installedSize = (entries: readonly DebEntry[]) =>
  entries.reduce((sum, entry) => sum + (entry.path.endsWith('/') ? 1 : Math.ceil(entry.size / 1024)), 0);

// ─── The tree, and dpkg-deb ──────────────────────────────────────────────────────────────────

/** gzip -9n: the highest compression, and no name or time in the header (reproducible builds). */
const gzip = (text: string | Buffer) => gzipSync(text, { level: 9 });

/** Writes the package's tree under `stage`, every mode set whatever the umask, and lists it. */
class Tree {
  readonly entries: DebEntry[] = [];
  constructor(readonly stage: string) {}

  dir(dir: string, mode = 0o755): void {
    const parts = dir.split('/').filter(Boolean);
    parts.forEach((_, index) => {
      const installed = `/${parts.slice(0, index + 1).join('/')}/`;
      if (this.entries.some((entry) => entry.path === installed)) return;
      mkdirSync(path.join(this.stage, installed), { recursive: true });
      chmodSync(path.join(this.stage, installed), index === parts.length - 1 ? mode : 0o755);
      this.entries.push({ path: installed, mode: index === parts.length - 1 ? mode : 0o755, size: 0 });
    });
  }

  file(installed: string, content: string | Buffer, mode = 0o644): void {
    this.dir(path.dirname(installed));
    writeFileSync(path.join(this.stage, installed), content);
    this.add(installed, mode);
  }

  copy(installed: string, source: string, mode = 0o644): void {
    this.dir(path.dirname(installed));
    copyFileSync(source, path.join(this.stage, installed));
    this.add(installed, mode);
  }

  /** A file already written under the stage (the bundle), or a folder to take whole (a sample). */
  add(installed: string, mode?: number): void {
    const file = path.join(this.stage, installed);
    if (lstatSync(file).isDirectory()) {
      this.dir(installed, 0o755);
      for (const name of readdirSync(file).sort()) this.add(path.posix.join(installed, name));
      return;
    }
    const fileMode = mode ?? (statSync(file).mode & 0o111 ? 0o755 : 0o644);
    chmodSync(file, fileMode);
    this.entries.push({ path: installed, mode: fileMode, size: statSync(file).size });
  }

  /** Every entry's time, folders last (writing into a folder changes its time). */
  touch(date: Date): void {
    for (const entry of [...this.entries].sort((a, b) => b.path.length - a.path.length)) {
      utimesSync(path.join(this.stage, entry.path), date, date);
    }
  }
}

/** The files of the package that are not the bundle, from test/deb/package and the project. */
async function writeTree(tree: Tree, version: string, who: string, date: Date): Promise<void> {
  const source = (name: string) => path.join(PACKAGE_SOURCES, name);
  tree.copy('/usr/sbin/pve-dm', source('pve-dm.sh'), 0o755);
  tree.dir('/etc/pve-dm');
  // 0600 from the start: it is where secrets (tokens, webhooks) go, and pve-dm refuses it otherwise.
  tree.copy('/etc/pve-dm/pve-dm.conf', source('pve-dm.conf'), 0o600);
  tree.dir('/etc/pve-dm/plugins');
  tree.dir('/var/lib/pve-dm/reports');
  tree.copy('/usr/lib/systemd/system/pve-dm.service', source('pve-dm.service'));
  tree.copy('/usr/lib/systemd/system/pve-dm.timer', source('pve-dm.timer'));
  tree.file('/usr/share/man/man8/pve-dm.8.gz', gzip(manPage(version, date)));
  tree.file('/usr/share/bash-completion/completions/pve-dm', bashCompletion());
  tree.file(`${DOC}/README.md.gz`, gzip(readFileSync(path.join(ROOT, 'README.md'))));
  tree.file(`${DOC}/copyright`, await copyrightFile(date));
  tree.file(`${DOC}/changelog.gz`, gzip(changelog(version, who, date)));
  tree.copy(`${DOC}/examples/pve-dm.cron`, source('pve-dm.cron'));
  // The guard as a hookscript, where Proxmox's default `local` storage keeps its snippets
  // (`qm set VMID --hookscript local:snippets/pve-dm-guard`), and a copy beside the cron example
  // for snippets on another storage. Not a conffile, on purpose: policy 10.7.2 keeps conffiles in
  // /etc (lintian's error non-etc-file-marked-as-conffile), and it holds no setting, only the one
  // line that runs /usr/sbin/pve-dm guard, as much the package's as the launcher is. dpkg replaces
  // it on upgrade and keeps its sum in md5sums (dpkg --verify sees an edit); a hook of the
  // administrator's own is a copy under another name, which no upgrade touches.
  tree.copy(GUARD_HOOKSCRIPT, source('pve-dm-guard'), 0o755);
  tree.copy(`${DOC}/examples/pve-dm-guard`, source('pve-dm-guard'));
  copyTree(path.join(ROOT, 'samples', 'multi-pool'), path.join(tree.stage, DOC, 'samples', 'multi-pool'));
  tree.add(`${DOC}/samples/multi-pool`);
  tree.copy(`/usr/share/lintian/overrides/${PACKAGE}`, source('lintian-overrides'));
}

/** A folder copied as plain files and folders (a sample is data: no link or mode survives). */
function copyTree(from: string, to: string): void {
  mkdirSync(to, { recursive: true });
  for (const name of readdirSync(from)) {
    const stat = lstatSync(path.join(from, name));
    if (stat.isDirectory()) copyTree(path.join(from, name), path.join(to, name));
    else if (stat.isFile()) copyFileSync(path.join(from, name), path.join(to, name));
    else throw new Error(`${path.join(from, name)}: neither a file nor a folder`);
  }
}

/** DEBIAN/: control, conffiles, md5sums and the maintainer scripts. */
function writeControl(tree: Tree, version: string, who: string): void {
  const control = path.join(tree.stage, 'DEBIAN');
  mkdirSync(control);
  chmodSync(control, 0o755);
  const conffiles = tree.entries.filter((entry) => entry.path.startsWith('/etc/') && !entry.path.endsWith('/'));
  // Conffiles are left out of md5sums, as dh_md5sums does: dpkg keeps their sums itself.
  const sums = tree.entries
    .filter((entry) => !entry.path.endsWith('/') && !conffiles.includes(entry))
    .map((entry) => `${createHash('md5').update(readFileSync(path.join(tree.stage, entry.path))).digest('hex')}  ` +
      entry.path.slice(1))
    .sort((a, b) => a.slice(34).localeCompare(b.slice(34)));
  const write = (name: string, text: string, mode = 0o644) => {
    writeFileSync(path.join(control, name), text);
    chmodSync(path.join(control, name), mode);
  };
  write('control', controlFile(version, who, installedSize(tree.entries)));
  write('conffiles', conffiles.map((entry) => `${entry.path}\n`).join(''));
  write('md5sums', sums.map((line) => `${line}\n`).join(''));
  for (const script of ['postinst', 'prerm', 'postrm']) {
    write(script, readFileSync(path.join(PACKAGE_SOURCES, script), 'utf8'), 0o755);
  }
}

/**
 * Builds dist/pve-dm_<version>_all.deb (or into outDir): the bundle into a staging tree, every other
 * file beside it with its mode, then dpkg-deb, which makes root the owner of everything.
 */
export async function buildDeb(outDir = path.join(ROOT, 'dist')): Promise<{ file: string; bytes: number;
  contents: DebEntry[] }> {
  const version = packageVersion();
  const who = maintainer();
  const date = sourceDate();
  const stage = mkdtempSync(path.join(os.tmpdir(), 'pve-dm-deb-'));
  try {
    chmodSync(stage, 0o755);
    const tree = new Tree(stage);
    tree.dir(PACKAGE_DIR);
    await buildBundle(path.join(stage, PACKAGE_DIR));
    chmodSync(path.join(stage, PACKAGE_DIR), 0o755);
    tree.add(path.join(PACKAGE_DIR, 'pve-dm.mjs'), 0o755);
    // The chunks the bundle imports when a run needs them (cheerio, undici, @clack/prompts).
    tree.add(path.join(PACKAGE_DIR, 'chunks'));
    tree.add(path.join(PACKAGE_DIR, 'plugins'));
    await writeTree(tree, version, who, date);
    writeControl(tree, version, who);
    tree.touch(date);
    mkdirSync(outDir, { recursive: true });
    const file = path.join(outDir, `${PACKAGE}_${version.replace(/^\d+:/, '')}_all.deb`);
    const epoch = String(Math.floor(date.getTime() / 1000));
    execFileSync('dpkg-deb', ['--root-owner-group', '-Zxz', '--build', stage, file], {
      env: { ...process.env, SOURCE_DATE_EPOCH: epoch },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const contents = [...tree.entries].sort((a, b) => a.path.localeCompare(b.path));
    return { file, bytes: statSync(file).size, contents };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

// `npm run deb [-- DIR]`: into dist/, or DIR (the tier builds its upgrade beside, not into dist/).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const { file, bytes, contents } = await buildDeb(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  const files = contents.filter((entry) => !entry.path.endsWith('/')).length;
  process.stdout.write(`${path.relative(process.cwd(), file)}: ${(bytes / 1024).toFixed(0)} KiB, ${files} files\n`);
}
