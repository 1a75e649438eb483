// The report stage (issue 2, "Reports"): JSON shape and nulls, the HTML page and its validator,
// the console report and its handling of untrusted text, and --vmid narrowing. In process, on
// results built from the samples and from small hostile captures.
import path from 'node:path';
import { load } from 'cheerio/slim';
import * as assert from 'uvu/assert';
import {
  createRunner, defaultStages, HTML_SECTIONS, readCapture, renderConsole, renderHtml, report,
  runPipeline, toJson, validateHtml, type Capture,
} from '../pve-dm.ts';
import { capture, config, expectedOf, overlongLines, resultOf, SAMPLE_NAMES, SAMPLES, test, unwrapConsole } from './harness.ts';

const NOW = new Date('2026-11-25T10:00:00.000Z');


/** A sample through the real pipeline (discover from the capture directory → ... → report). */
async function sample(name: string, vmids: number[] = []) {
  return runPipeline(defaultStages, {
    root: path.join(SAMPLES, name), vmids, json: false, console: true, html: false, color: false, runner: createRunner({ allowChanges: false }), now: NOW,
  });
}


const uuid = (lv: string) => `LVM-${'V'.repeat(32)}${lv.padEnd(32, 'x').slice(0, 32)}`;
const ESC = '\u001b';
const SCRIPT_NAME = '<script>alert(1)</script>';
const IMG_NAME = '"><img src=x onerror=alert(1)>';

/**
 * A small node whose guests carry hostile names, lock and description: VM 100 (valid disk, an
 * unreferenced one), CT 200, a guest-missing VM 777, a garbage storage.cfg line (a warning
 * holding HTML). No lvs.txt, no running.txt, no system.json, no meta.json: all "not known".
 */
function hostileCapture(parts: Partial<Capture> = {}): Capture {
  const names = ['pve-vm--100--disk--0', 'pve-vm--100--disk--5', 'pve-vm--200--disk--0', 'pve-vm--777--disk--0', 'mytest'];
  const info = names.map((name, i) => `${name}|252|${i}|${i === 0 ? 1 : 0}|L--w|${name === 'mytest' ? '' : uuid(`lv${i}`)}`).join('\n');
  return capture({
    hostname: 'pve1',
    dmsetupInfo: `${info}\n`,
    storageCfg: 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n<img src=z onerror=alert(3)>\n',
    configs: [
      config(100, `#<b>bold</b><script>alert(2)</script><img src=q>\nname: ${SCRIPT_NAME}\nlock: <img src=y onerror=alert(4)>\nscsi0: local-lvm:vm-100-disk-0,size=8G\n`),
      config(200, `hostname: ${IMG_NAME}\nrootfs: local-lvm:vm-200-disk-0,size=8G\n`, { type: 'lxc' }),
      config(300, 'memory: 512\n'),
    ],
    ...parts,
  });
}

// ── JSON ─────────────────────────────────────────────────────────────────────────────────────

const TOP_KEYS = ['version', 'node', 'grade', 'summary', 'entries', 'orphanLvs', 'pools', 'volumeGroups', 'guests', 'warnings'];
const SUMMARY_KEYS = ['entries', 'valid', 'conflict', 'duplicate', 'tombstone', 'ignored', 'unjudged', 'orphanLvs', 'poolProblems'];
const ENTRY_KEYS = ['name', 'status', 'reason', 'remedy', 'advice', 'vmid', 'guestType', 'vg', 'lv', 'open', 'lock', 'holders'];
const GUEST_KEYS = ['vmid', 'type', 'name', 'running', 'lock', 'health'];

/** Every key present with a defined value (JSON drops undefined silently: that is "missing"). */
function assertKeys(object: Record<string, unknown>, keys: string[], what: string) {
  for (const key of keys) {
    assert.ok(Object.hasOwn(object, key), `${what}: key ${key} missing`);
    assert.ok(object[key] !== undefined, `${what}: key ${key} is undefined`);
  }
}

for (const name of SAMPLE_NAMES) {
  test(`JSON of ${name}: the issue's keys, version 1, summary equal to the entries and to expected.json`, async () => {
    const { result } = await sample(name);
    const reports = await report(result, { json: true, console: false, html: false, color: false });
    assert.type(reports.json, 'string');
    assert.is(reports.console, undefined, '--json prints no console report');
    const json = JSON.parse(reports.json as string);
    assertKeys(json, TOP_KEYS, 'top level');
    assert.is(json.version, 1);
    assert.is(json.node, expectedOf(name).node);
    assert.is(json.grade, expectedOf(name).grade);
    assertKeys(json.summary, SUMMARY_KEYS, 'summary');
    assert.equal(Object.keys(json.summary).sort(), [...SUMMARY_KEYS].sort());
    assert.ok(Array.isArray(json.entries) && json.entries.length > 0, 'entries is a non-empty array');
    for (const entry of json.entries) {
      assertKeys(entry, ENTRY_KEYS, `entry ${entry.name}`);
      assert.type(entry.open, 'number', `${entry.name}: open`);
      assert.ok(['valid', 'conflict', 'duplicate', 'tombstone', 'ignored', 'unjudged'].includes(entry.status), `${entry.name}: status ${entry.status}`);
      // A remedy for problems (or, when no command may touch one now, advice instead), never for the rest.
      const problem = entry.status === 'conflict' || entry.status === 'duplicate' || entry.status === 'tombstone';
      const remedied = typeof entry.remedy === 'string' && entry.remedy.length > 0;
      assert.ok(problem ? remedied || (entry.remedy === null && typeof entry.advice === 'string') : entry.remedy === null, `${entry.name}: remedy ${entry.remedy}`);
    }
    const count = (status: string) => json.entries.filter((e: { status: string }) => e.status === status).length;
    assert.equal(json.summary, {
      entries: json.entries.length, valid: count('valid'), conflict: count('conflict'), duplicate: count('duplicate'), tombstone: count('tombstone'), ignored: count('ignored'),
      unjudged: count('unjudged'), orphanLvs: json.orphanLvs.length,
      poolProblems: [...json.pools, ...json.volumeGroups].filter((p: { severity: string }) => p.severity !== 'ok').length,
    });
    assert.equal(json.summary, expectedOf(name).summary);
    const orphans = json.orphanLvs.map((o: { vg: string; lv: string; reason: string; active: boolean }) => [`${o.vg}/${o.lv}`, { reason: o.reason, active: o.active }]);
    assert.equal(Object.fromEntries(orphans), expectedOf(name).orphanLvs ?? {}, 'the orphan LVs of expected.json');
    type PoolJson = {
      vg: string; lv: string; active: boolean; severity: string; problems: { kind: string }[]; guests: number[]; leftovers: { lv: string }[];
      dataPercent: number | null; metadataPercent: number | null;
    };
    const pools = json.pools.map((p: PoolJson) => [`${p.vg}/${p.lv}`, {
      active: p.active, severity: p.severity, problems: p.problems.map((x) => x.kind), guests: p.guests, leftovers: p.leftovers.map((l) => l.lv),
      dataPercent: p.dataPercent, metadataPercent: p.metadataPercent,
    }]);
    // Samples with a 4-column lvs.txt (earlier captures): their pools are known, their use is not (null).
    assert.equal(Object.fromEntries(pools), expectedOf(name).pools, 'the thin pools of expected.json');
    const vgs = json.volumeGroups.map((v: { vg: string; severity: string; guests: number[] }) => [v.vg, { severity: v.severity, guests: v.guests }]);
    assert.equal(Object.fromEntries(vgs), expectedOf(name).volumeGroups ?? {}, 'the partial VGs of expected.json');
    for (const guest of json.guests) {
      assertKeys(guest, GUEST_KEYS, `guest ${guest.vmid}`);
      assert.ok(guest.type === 'qemu' || guest.type === 'lxc', `guest ${guest.vmid} type ${guest.type}`);
      assert.ok(['clean', 'conflict', 'duplicate', 'tombstone'].includes(guest.health), `guest ${guest.vmid} health ${guest.health}`);
      assert.type(guest.running, 'boolean', `guest ${guest.vmid}: running.txt is known, so running is known`);
    }
    assert.ok(Array.isArray(json.warnings));
    assert.equal(json.warnings.map((w: { source: string; line: number | null }) => [w.source, w.line]).sort(), expectedOf(name).warnings.map((w) => [w.file, w.line]).sort());
  });
}

test('JSON: what is not known is null, never missing (no running.txt, lvs.txt, system.json, meta.json; no name, no lock)', () => {
  const result = resultOf(hostileCapture());
  const text = JSON.stringify(toJson(result));
  const json = JSON.parse(text);
  assert.equal(json, toJson(result), 'nothing in the JSON object is undefined (it would be dropped by JSON)');
  assert.is(json.guests.length, 3);
  for (const guest of json.guests) assert.is(guest.running, null, `guest ${guest.vmid}: running not known`);
  const vm300 = json.guests.find((g: { vmid: number }) => g.vmid === 300);
  assert.is(vm300.name, null, 'a guest without a name: null');
  assert.is(vm300.lock, null, 'a guest without a lock: null');
  assert.is(json.guests.find((g: { vmid: number }) => g.vmid === 100).lock, '<img src=y onerror=alert(4)>');
  const foreign = json.entries.find((e: { name: string }) => e.name === 'mytest');
  assert.equal([foreign.status, foreign.reason, foreign.vmid, foreign.vg, foreign.lv, foreign.remedy], ['ignored', 'foreign', null, null, null, null]);
  assert.is(json.system, null);
  assert.is(json.capturedAt, null);
  assert.is(json.vmids, null);
  for (const entry of json.entries) assertKeys(entry, ENTRY_KEYS, entry.name);
  // VM 100's lock is no value qemu-server knows: as for any lock of an operation, its unreferenced disk-5 is in flight.
  assert.equal(json.summary, { entries: 5, valid: 2, conflict: 0, duplicate: 0, tombstone: 1, ignored: 2, unjudged: 0, orphanLvs: 0, poolProblems: 0 });
  assert.is(json.entries.find((e: { name: string }) => e.name === 'pve-vm--100--disk--5').reason, 'in-flight');
});

test('JSON: with running.txt known, running is true/false per guest', () => {
  const json = toJson(resultOf(hostileCapture({ running: '100\n' })));
  assert.equal(json.guests.map((g) => [g.vmid, g.running]), [[100, true], [200, false], [300, false]]);
});

test('JSON: a capture directory without running.txt gives running: null for every guest', async () => {
  const base = await readCapture(path.join(SAMPLES, 'default-install'));
  assert.ok(base.running !== null, 'the sample has a running.txt');
  const json = toJson(resultOf({ ...base, running: null }));
  assert.ok(json.guests.length >= 4);
  for (const guest of json.guests) assert.is(guest.running, null, `guest ${guest.vmid}`);
});

// ── HTML ─────────────────────────────────────────────────────────────────────────────────────

for (const name of SAMPLE_NAMES) {
  test(`HTML of ${name}: valid, every section once, every problem entry listed by name`, async () => {
    const { result } = await sample(name);
    const html = renderHtml(result);
    assert.equal(await validateHtml(html, result), []);
    const $ = load(html);
    for (const id of HTML_SECTIONS) assert.is($(`[data-section="${id}"]`).length, 1, `section ${id}`);
    const problems = result.entries.filter((e) => e.status === 'conflict' || e.status === 'duplicate' || e.status === 'tombstone');
    const { conflict, duplicate, tombstone } = expectedOf(name).summary;
    assert.is(problems.length, conflict + duplicate + tombstone);
    assert.is($('tr[data-entry]').length, problems.length);
    const shown = $('tr[data-entry]').map((_, row) => $(row).find('td').first().text()).get();
    assert.equal(shown.sort(), problems.map((e) => e.name).sort());
    // The remedy, or what to do when no command works now (its words, as the page shows them).
    for (const entry of problems) assert.ok($('[data-section="problems"]').text().includes(entry.remedy ?? entry.advice ?? '\u0000'), `remedy of ${entry.name} shown`);
    assert.is($('tr[data-guest]').length, Object.keys(expectedOf(name).guests).length);
    assert.is($('tr[data-warning]').length, expectedOf(name).warnings.length);
    assert.is($('[data-field="grade"]').text(), expectedOf(name).grade);
    assert.is($('script, img, iframe, link, a').length, 0, 'self-contained: no scripts, images, links or frames');
    // One <style>, its own narrow layout: nothing it could fetch.
    assert.is($('style').length, 1);
    assert.not.match($('style').text(), /url\(|@import/);
  });
}

test('HTML: the status and health cells carry their colour (one style attribute per cell)', async () => {
  const { result } = await sample('multi-pool');
  const html = renderHtml(result);
  // A second style="" on the same tag is dropped by every HTML parser: the colour would be lost.
  const doubled = html.match(/<[a-z]+[^>]*\sstyle="[^"]*"[^>]*\sstyle="/g) ?? [];
  assert.equal(doubled, [], 'no tag has two style attributes');
  const $ = load(html);
  const statusCell = $('tr[data-entry]').first().find('td').eq(1);
  // The status in words with a symbol: colour is never the only sign.
  assert.is(statusCell.text(), '✖ duplicate');
  assert.match(statusCell.attr('style') ?? '', /color:#c82333/);
});

test('HTML: hostile guest names, lock, description and warning text end up as text', async () => {
  const result = resultOf(hostileCapture());
  const html = renderHtml(result);
  assert.equal(await validateHtml(html, result), []);
  const $ = load(html);
  assert.is($('script').length, 0, 'no <script> element');
  assert.is($('img').length, 0, 'no <img> element');
  assert.is($('b').length, 0, 'no <b> element from the description');
  assert.is($('[onerror], [src]').length, 0, 'no attribute from untrusted text');
  assert.is($('tr[data-guest="100"] [data-field="name"]').text(), SCRIPT_NAME);
  assert.is($('tr[data-guest="200"] [data-field="name"]').text(), IMG_NAME);
  assert.ok($('tr[data-guest="100"]').text().includes('<img src=y onerror=alert(4)>'), 'the lock is shown as text');
  assert.ok($('[data-section="warnings"]').text().includes('<img src=z onerror=alert(3)>'), 'the warning quoting storage.cfg is shown as text');
  assert.not.match(html, /<script|<img|<b>/i, 'the raw page holds no such tag either');
  assert.not.ok(html.includes('alert(2)'), 'guest descriptions are not part of the report');
  assert.is($('tr[data-entry]').length, 1, 'the guest-missing disk');
  assert.is($('tr[data-unjudged]').length, 1, 'VM 100\'s unreferenced disk: its guest holds a lock, in flight');
  assert.is($('tr[data-missing]').length, 1);
});

test('validateHtml can fail: an injected element or attribute, a lost or doubled section, a lost row, altered text', async () => {
  const { result } = await sample('multi-pool');
  const html = renderHtml(result);
  assert.equal(await validateHtml(html, result), [], 'the untampered page passes');
  const tampered = (change: ($: ReturnType<typeof load>) => void) => {
    const $ = load(html);
    change($);
    return $.html();
  };
  const cases: [string, string, RegExp][] = [
    ['script', html.replace('</body>', '<script>alert(1)</script></body>'), /unexpected element <script>/],
    ['img', html.replace('<h1 ', '<img src=x onerror=alert(1)><h1 '), /unexpected element <img>/],
    ['attribute', html.replace('<h1 ', '<h1 onclick="alert(1)" '), /unexpected attribute onclick/],
    ['section removed', tampered(($) => $('[data-section="missing"]').remove()), /section missing appears 0 times/],
    ['section doubled', tampered(($) => $('[data-section="guests"]').after($('[data-section="guests"]').clone())), /section guests appears 2 times/],
    ['problem row removed', tampered(($) => $('tr[data-entry]').last().remove()), /problem entries: 3 rows for 4 items/],
    ['guest row removed', tampered(($) => $('tr[data-guest]').first().remove()), /guests: 4 rows for 5 items/],
    ['guest name altered', tampered(($) => $('tr[data-guest="169"] [data-field="name"]').text('someone-else')), /VM 169: name shown as "someone-else"/],
    ['grade altered', tampered(($) => $('[data-field="grade"]').text('A+')), /grade altered/],
  ];
  for (const [what, page, problem] of cases) {
    assert.ok(page !== html, `${what}: the page was changed`);
    const problems = await validateHtml(page, result);
    assert.ok(problems.some((p) => problem.test(p)), `${what}: ${JSON.stringify(problems)}`);
  }
});

test('report(): --html renders a validated page beside the console report', async () => {
  const { result } = await sample('foreign');
  const reports = await report(result, { json: false, console: true, html: true, color: false });
  assert.type(reports.console, 'string');
  assert.type(reports.html, 'string');
  assert.is(reports.json, undefined);
  assert.equal(await validateHtml(reports.html as string, result), []);
  assert.is(load(reports.html as string)('tr[data-entry]').length, 4, 'the conflict and the three tombstones');
});

// ── Console ──────────────────────────────────────────────────────────────────────────────────

const lines = (text: string) => text.split('\n');
const hasLine = (text: string, re: RegExp) => lines(text).some((line) => re.test(line));

for (const name of SAMPLE_NAMES) {
  test(`console of ${name}: the seed's sections, every problem with its reason and remedy`, async () => {
    const { result } = await sample(name);
    const expected = expectedOf(name);
    const shown = renderConsole(result, false);
    assert.equal(overlongLines(shown), [], 'every line in 80 columns, but for a dm name or a command kept whole');
    const text = unwrapConsole(shown);
    assert.not.ok(text.includes(ESC), 'no escape sequence when color is off');
    assert.ok(hasLine(text, /^Summary$/), 'Summary');
    const notJudged = expected.summary.unjudged > 0 ? `, ${expected.summary.unjudged} not judged` : '';
    const conflicts = expected.summary.conflict > 0 ? `, ${expected.summary.conflict} conflict` : '';
    assert.ok(hasLine(text, new RegExp(`^  Grade ${expected.grade.replace('+', '\\+')} +${expected.summary.entries} dm entries: ${expected.summary.valid} valid${conflicts}, ${expected.summary.duplicate} duplicate, ${expected.summary.tombstone} tombstone, ${expected.summary.ignored} ignored${notJudged}$`)), 'summary line');
    assert.is(hasLine(text, /^  Incomplete: \d+ entr(y|ies) not judged: the configs? of .+ cannot be read$/), expected.summary.unjudged > 0, 'an incomplete analysis says so under the summary');
    assert.ok(hasLine(text, new RegExp(`^Duplicates \\(critical\\): ${result.duplicates.length}$`)), 'Duplicates');
    assert.ok(hasLine(text, new RegExp(`^Tombstones \\(warning\\): ${expected.summary.tombstone}$`)), 'Tombstones');
    assert.ok(hasLine(text, new RegExp(`^Guests on ${expected.node}: ${Object.keys(expected.guests).length}$`)), 'Guests');
    assert.ok(hasLine(text, /^Host$/), 'Host (every sample has system.json)');
    assert.is(hasLine(text, /^VMIDs that exist nowhere: \d+$/), result.missingGuests.length > 0, 'VMIDs that exist nowhere, when there are some');
    assert.is(hasLine(text, new RegExp(`^Warnings: ${expected.warnings.length}$`)), expected.warnings.length > 0, 'Warnings, when there are some');
    for (const [entryName, verdict] of Object.entries(expected.entries)) {
      const entry = result.entries.find((e) => e.name === entryName);
      if (verdict.status === 'tombstone') {
        assert.ok(hasLine(text, new RegExp(`^  ${entryName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}  ${verdict.reason}: `)), `tombstone ${entryName}`);
        assert.ok(text.includes(`    remedy: ${entry?.remedy}\n`), `remedy of ${entryName}`);
      }
      if (verdict.status === 'duplicate') assert.ok(hasLine(text, new RegExp(`^    extra   ${entryName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}  ${verdict.reason}`)), `duplicate ${entryName}`);
    }
    for (const [vmid, health] of Object.entries(expected.guests)) {
      assert.ok(hasLine(text, new RegExp(`^  ${vmid} +(VM|CT) .*  (${health}|unreadable)$`)), `guest ${vmid} row`);
    }
  });
}

test('console: colour escapes only when asked', async () => {
  const { result } = await sample('multi-pool');
  assert.not.ok(renderConsole(result, false).includes(ESC));
  const coloured = renderConsole(result, true);
  assert.match(coloured, /\u001b\[31m/, 'red for duplicates');
  assert.match(coloured, /\u001b\[0m/);
  assert.is(coloured.replace(/\u001b\[[0-9;]*m/g, ''), renderConsole(result, false), 'colour changes nothing but colour');
});

test('console: terminal escapes in guest names, locks and names of missing entries are neutralised', () => {
  const result = resultOf(hostileCapture());
  const guest100 = result.guests.find((g) => g.vmid === 100);
  const guest200 = result.guests.find((g) => g.vmid === 200);
  assert.ok(guest100 && guest200);
  guest100.name = `clear${ESC}[2Jscreen`;
  guest200.name = `${ESC}]8;;http://x\u0007link${ESC}]8;;\u0007`;
  // Not one of the report's own colours, so it cannot hide among them when color is on.
  guest100.lock = `backup${ESC}[5m\r`;
  for (const color of [false, true]) {
    const text = renderConsole(result, color);
    const withoutOwnColour = color ? text.replace(/\u001b\[(?:0|1|2|3[1-4])m/g, '') : text;
    assert.not.ok(withoutOwnColour.includes(ESC), `color=${color}: no raw ESC from untrusted text`);
    assert.not.ok(text.includes('\u0007'), `color=${color}: no raw BEL`);
    assert.not.ok(text.includes('\r'), `color=${color}: no raw CR`);
    assert.ok(text.includes('clear\\x1b[2Jscreen'), `color=${color}: the name is shown, neutralised`);
    assert.ok(text.includes('\\x1b]8;;http://x\\x07link'), `color=${color}: the hyperlink is shown, neutralised`);
  }
});

test('console: an 8-bit CSI (U+009B) in a config\'s guest name goes through parse and is neutralised', () => {
  const c = hostileCapture();
  c.configs[2] = config(300, 'name: evil\u009b2Jname\nmemory: 512\n');
  const result = resultOf(c);
  assert.is(result.guests.find((g) => g.vmid === 300)?.name, 'evil\u009b2Jname', 'the parser keeps the name');
  const text = renderConsole(result, false);
  assert.not.ok(text.includes('\u009b'));
  assert.ok(text.includes('evil\\x9b2Jname'));
});

test('console: a capture with nothing known shows no Host section; hostile names show as text', () => {
  const text = unwrapConsole(renderConsole(resultOf(hostileCapture()), false));
  assert.not.ok(hasLine(text, /^Host$/));
  assert.ok(hasLine(text, /^VMIDs that exist nowhere: 1$/));
  assert.ok(hasLine(text, /^  VMID 777: 1 tombstone\(s\): pve-vm--777--disk--0$/));
  assert.ok(hasLine(text, /^Warnings: 1$/));
  assert.ok(text.includes(SCRIPT_NAME.slice(0, 25)), 'the script name is shown');
  assert.ok(hasLine(text, /^  200 +CT +"><img src=x onerror=alert\(1\)> +\? +- +clean$/), 'CT 200 row: running not known shows "?"');
});

test('console and JSON: a bidirectional override (U+202E) and an 8-bit CSI from a garbage line are shown, not obeyed (safety.test.ts)', async () => {
  const c = hostileCapture();
  c.storageCfg += '\u202e\n';
  c.configs[2] = config(300, 'name: evil\u009b2J\u202ename\nmemory: 512\n');
  const result = resultOf(c);
  const text = renderConsole(result, false);
  assert.not.ok(text.includes('\u202e') || text.includes('\u009b'));
  assert.ok(text.includes('"\\u202e"'), 'the garbage line, shown');
  const json = (await report(result, { json: true, console: false, html: false, color: false })).json as string;
  assert.not.ok(json.includes('\u202e') || json.includes('\u009b'), 'escaped in the JSON text');
  assert.ok(json.includes('evil\\u009b2J\\u202ename'));
  assert.is(JSON.parse(json).guests.find((g: { vmid: number }) => g.vmid === 300).name, 'evil\u009b2J\u202ename', 'the same value');
});

test('JSON: a DEL in text that is otherwise ASCII is escaped too (the quick path for ASCII output)', async () => {
  const c = hostileCapture();
  c.configs[2] = config(300, 'name: del\u007fname\nmemory: 512\n');
  const json = (await report(resultOf(c), { json: true, console: false, html: false, color: false })).json as string;
  assert.not.ok(json.includes('\u007f'), 'no raw DEL');
  assert.ok(json.includes('del\\u007fname'));
  assert.is(JSON.parse(json).guests.find((g: { vmid: number }) => g.vmid === 300).name, 'del\u007fname', 'the same value');
});

// ── --vmid narrowing ─────────────────────────────────────────────────────────────────────────

test('narrowToGuests: --vmid 169 on multi-pool keeps VM 169\'s entries only, and the summary is recomputed', async () => {
  const full = await sample('multi-pool');
  const { result } = await sample('multi-pool', [169]);
  assert.is(full.result.summary.entries, 20);
  assert.equal(result.entries.map((e) => e.name).sort(), ['ssd--ha01-vm--169--disk--0', 'ssd--ha01-vm--169--disk--0-dup']);
  assert.ok(result.entries.every((e) => e.vmid === 169));
  assert.equal(result.summary, { entries: 2, valid: 1, conflict: 0, duplicate: 1, tombstone: 0, ignored: 0, unjudged: 0, orphanLvs: 0, poolProblems: 0 });
  assert.is(result.grade, 'F');
  assert.is(result.exitCode, 2);
  assert.equal(result.duplicates.map((d) => d.kept), ['ssd--ha01-vm--169--disk--0']);
  assert.equal(result.guests.map((g) => g.vmid), [169]);
  assert.equal(result.missingGuests, []);
  assert.equal(result.vmids, [169]);
  const json = toJson(result);
  assert.equal(json.summary, result.summary);
  assert.is(json.entries.length, 2);
  assert.equal(await validateHtml(renderHtml(result), result), []);
  const text = renderConsole(result, false);
  assert.ok(text.includes('narrowed to VMID 169'));
  assert.not.ok(text.includes('vm--170'), 'nothing of VM 170');
});

test('narrowToGuests: a tombstone-only guest grades B; a VMID that exists nowhere keeps its missing entry; a partition follows its parent', async () => {
  const vm170 = (await sample('multi-pool', [170])).result;
  assert.equal(vm170.summary, { entries: 3, valid: 2, conflict: 0, duplicate: 0, tombstone: 1, ignored: 0, unjudged: 0, orphanLvs: 1, poolProblems: 0 });
  assert.equal([vm170.grade, vm170.exitCode], ['B', 1]);
  assert.equal(vm170.duplicates, []);
  const vm888 = (await sample('multi-pool', [888])).result;
  assert.equal(vm888.entries.map((e) => e.name), ['ssd--ha01-vm--888--disk--0']);
  assert.equal(vm888.guests, []);
  assert.equal(vm888.missingGuests.map((m) => m.vmid), [888]);
  const vm150 = (await sample('foreign', [150])).result;
  assert.equal(vm150.entries.map((e) => `${e.name} ${e.reason}`).sort(), ['pve-vm--150--disk--0 guest-missing', 'pve-vm--150--disk--0p1 partition-of-problem']);
  assert.equal(vm150.summary.tombstone, 2);
  const two = (await sample('multi-pool', [169, 170])).result;
  assert.equal(two.summary, { entries: 5, valid: 3, conflict: 0, duplicate: 1, tombstone: 1, ignored: 0, unjudged: 0, orphanLvs: 1, poolProblems: 0 });
});

test.run();
