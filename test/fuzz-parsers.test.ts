// Every parser against generated input in its real format (round trips: what a writer makes
// parses back to what was written) and against hostile input (never a throw, every skipped line
// named). test/support/fuzz.ts sets the run counts.
import fc from 'fast-check';
import * as assert from 'uvu/assert';
import {
  dmsetupTakesAsIs, mangleDmName, mapsLv, parseDmsetupInfo, parseDmsetupTable, parseGuestConfig, parseGuestVolumeName, parseLvs, parsePoolStatus, parseStorageCfg, splitLvmName,
  stripCopySuffix, unmangleDmName, volumesOfPropertyString, volumesOfRef, type VolumeRef,
} from '../pve-dm.ts';
import { config, test } from './harness.ts';
import { hostileText, lvName, property, snapshotName, storageId, vgName, vmid } from './support/fuzz.ts';
import { lvmDmName, lvmUuid } from './support/lvm.ts';

/** dmsetup's mangled form: the whitelist `0-9A-Za-z#+-.:=@_`, everything else `\xNN`. */
const MANGLED = /^(?:[0-9A-Za-z#+\-.:=@_]|\\x[0-9a-fA-F]{2})*$/;

// ── dm names ────────────────────────────────────────────────────────────────────────────────

property('splitLvmName: an LVM dm name built from any legal VG and LV name (and layer) splits back to them', 1000,
  fc.property(vgName, lvName, fc.constantFrom('', 'tpool', 'real', 'cow', 'vpool', 'pool'), (vg, lv, layer) => {
    const split = splitLvmName(lvmDmName(vg, lv, layer));
    assert.equal(split && [split.vg, split.lv, split.layer], [vg, lv, layer]);
  }));

/** The bytes bash gives a `$'...'` word holding only printable ASCII and `\xNN` escapes. */
const bashWord = (word: string) => {
  const body = /^\$'(.*)'$/s.exec(word)?.[1];
  assert.ok(body !== undefined && /^[\x20-\x7e]*$/.test(body) && !body.includes("'"), `a $'...' word of printable ASCII: ${JSON.stringify(word)}`);
  const bytes: number[] = [];
  for (let i = 0; i < body.length; i++) {
    if (body[i] === '\\') {
      assert.match(body.slice(i, i + 4), /^\\x[0-9a-f]{2}$/);
      bytes.push(parseInt(body.slice(i + 2, i + 4), 16));
      i += 3;
    } else bytes.push(body.charCodeAt(i));
  }
  return Buffer.from(bytes).toString('utf8');
};

/** A name the kernel may hold: any text but NUL and `/` (dm-ioctl), as UTF-8 (what pve-dm reads). */
const kernelName = fc
  .oneof(fc.string({ unit: 'binary', minLength: 1 }), hostileText, fc.stringMatching(/^(?:[0-9A-Za-z#+.:=@_-]|\\x[0-9a-f]{2}|\\|x){1,20}$/))
  .filter((name) => name !== '' && !/[\u0000/]/.test(name) && Buffer.from(name, 'utf8').toString('utf8') === name);

property('mangleDmName: a kernel name shows as itself when dmsetup\'s default mode addresses it, else as the bash word of its bytes', 1000,
  fc.property(kernelName, kernelName, (name, other) => {
    const shown = mangleDmName(name);
    if (dmsetupTakesAsIs(name)) {
      assert.is(shown, name);
      assert.match(name, MANGLED);
    } else {
      assert.is(bashWord(shown), name, 'the word gives the name back, byte for byte');
    }
    assert.not.match(shown, /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/, 'nothing a terminal obeys');
    if (other !== name) assert.is.not(mangleDmName(other), shown, 'two kernel names never show alike');
  }));

property('unmangleDmName: any text, escapes or not, never throws', 1000,
  fc.property(fc.string({ unit: fc.constantFrom('\\', 'x', '0', 'f', 'F', 'g', 'a', '-', '\u00e9') }), (name) => {
    assert.type(unmangleDmName(name), 'string');
  }));

// ── dmsetup info and table ──────────────────────────────────────────────────────────────────

const dmUuid = fc.oneof(
  fc.tuple(vgName, lvName, fc.constantFrom('', 'tpool', 'pool', 'tdata', 'tmeta', 'real', 'cow')).map(([vg, lv, layer]) => lvmUuid(vg, lv, layer)),
  fc.constant(''),
  fc.stringMatching(/^mpath-3[0-9a-f]{32}$/),
  fc.stringMatching(/^CRYPT-LUKS2-[0-9a-f]{32}-[a-z]{1,10}$/),
  fc.stringMatching(/^part[1-9]-mpath-3[0-9a-f]{32}$/),
);
/** A device as `dmsetup --manglename none info -c` prints it: the kernel's name, as it is. */
const dmDevice = fc.record({
  // U+FFFD is what undecodable bytes read as: such a name is skipped on purpose (its real bytes are unknown).
  name: fc.oneof(fc.tuple(vgName, lvName).map(([vg, lv]) => lvmDmName(vg, lv)), kernelName.filter((name) => !/[\n\r|\ufffd]/.test(name) && name.trim() !== '')),
  major: fc.integer({ min: 0, max: 4095 }),
  minor: fc.integer({ min: 0, max: 1_048_575 }),
  open: fc.integer({ min: 0, max: 65535 }),
  attr: fc.stringMatching(/^[L-][I-][s-][rw-]$/),
  uuid: dmUuid,
}, { noNullPrototype: true });
const infoLine = (d: { name: string; major: number; minor: number; open: number; attr: string; uuid: string }) => `${d.name}|${d.major}|${d.minor}|${d.open}|${d.attr}|${d.uuid}`;

property('parseDmsetupInfo: the lines dmsetup prints parse back to the same devices, with no warning', 500,
  fc.property(fc.uniqueArray(dmDevice, { selector: (d) => d.name, maxLength: 30 }), (devices) => {
    const { entries, warnings } = parseDmsetupInfo(devices.map(infoLine).join('\n') + (devices.length > 0 ? '\n' : 'No devices found\n'));
    assert.equal(warnings, []);
    assert.equal(entries.map(({ name, major, minor, open, attr, uuid }) => ({ name, major, minor, open, attr, uuid })), devices);
    entries.forEach((entry, i) => assert.is(entry.line, i + 1));
  }));

/** A name the kernel holds raw (made with `--manglename none`), `|` and spaces included. */
const rawName = fc
  .string({ unit: 'binary', minLength: 1, maxLength: 30 })
  .filter((name) => !/[\n\r\ufffd\u0000/]/.test(name) && name.trim() !== '' && !/\|\d+\|\d+\|\d+\|[L-][I-][s-][rw-](?:\||$)/.test(name));

property('parseDmsetupInfo: a raw kernel name, `|` included, is read whole and kept as the kernel holds it', 500,
  fc.property(rawName, dmDevice, (raw, device) => {
    const { entries, warnings } = parseDmsetupInfo(`${infoLine({ ...device, name: raw })}\n`);
    assert.equal(warnings, []);
    assert.is(entries[0]?.name, raw);
    assert.is(entries[0]?.realName, unmangleDmName(raw));
    assert.is(entries[0]?.uuid, device.uuid);
  }));

const segment = fc
  .tuple(fc.nat(), fc.integer({ min: 1, max: 2 ** 40 }), fc.constantFrom('linear', 'thin', 'thin-pool', 'multipath', 'crypt', 'error', 'zero', 'striped'), fc.stringMatching(/^[0-9a-z:_ -]{0,40}$/))
  .map(([start, length, target, args]) => `${start} ${length} ${target}${args.trim() === '' ? '' : ` ${args.trim()}`}`);

property('parseDmsetupTable: every device\'s segments, in order, empty tables too', 500,
  fc.property(fc.uniqueArray(fc.record({ name: dmDevice.map((d) => d.name), segments: fc.array(segment, { maxLength: 4 }) }, { noNullPrototype: true }), { selector: (t) => t.name, maxLength: 20 }), (tables) => {
    const text = tables.flatMap(({ name, segments }) => (segments.length === 0 ? [`${name}: `] : segments.map((s) => `${name}: ${s}`))).join('\n');
    const parsed = parseDmsetupTable(`${text}\n`);
    assert.equal(parsed.warnings, []);
    assert.equal([...parsed.tables], tables.map(({ name, segments }) => [name, segments.join('\n')]));
  }));

// ── lvs ────────────────────────────────────────────────────────────────────────────────────

const lvTag = fc.stringMatching(/^[A-Za-z0-9_+.\-/=!:&#@]{1,30}$/);
/** LVM's uuid as lvs prints it: 32 characters in groups of 6-4-4-4-4-4-6. */
const lvmDisplayUuid = fc.stringMatching(/^[A-Za-z0-9]{32}$/).map((u) => [u.slice(0, 6), u.slice(6, 10), u.slice(10, 14), u.slice(14, 18), u.slice(18, 22), u.slice(22, 26), u.slice(26)].join('-'));
const logicalVolume = fc.record({
  vg: vgName, lv: lvName, hidden: fc.boolean(), attr: fc.stringMatching(/^[-a-zA-Z]{10}$/), tags: fc.array(lvTag, { maxLength: 3 }),
  uuids: fc.option(fc.tuple(lvmDisplayUuid, lvmDisplayUuid, fc.option(lvName, { nil: null })), { nil: null }),
  // lv_size in bytes; null: a capture from before sizes (or from before uuids).
  size: fc.option(fc.nat({ max: 2 ** 50 }), { nil: null }),
  // A thin pool's use (two decimals, as lvs prints it; empty for any other LV) and the VG's state;
  // null: a capture from before these columns.
  pool: fc.option(fc.record({
    data: fc.option(fc.integer({ min: 0, max: 10000 }), { nil: null }),
    metadata: fc.option(fc.integer({ min: 0, max: 10000 }), { nil: null }),
    metadataSize: fc.option(fc.nat({ max: 2 ** 34 }), { nil: null }),
    vgAttr: fc.stringMatching(/^[-a-zA-Z]{6}$/),
    vgFree: fc.nat({ max: 2 ** 50 }),
  }, { noNullPrototype: true }), { nil: null }),
}, { noNullPrototype: true });
const percentColumn = (hundredths: number | null) => (hundredths === null ? '' : (hundredths / 100).toFixed(2));

property('parseLvs: `lvs -a --noheadings --separator |` lines, with uuids, pool and size or without (earlier captures), parse back to the same LVs', 500,
  fc.property(fc.uniqueArray(logicalVolume, { selector: (l) => `${l.vg}/${l.lv}`, maxLength: 30 }), (volumes) => {
    const text = volumes.map((l) => {
      const columns = [l.vg, l.hidden ? `[${l.lv}]` : l.lv, l.attr, l.tags.join(',')];
      if (l.uuids !== null) columns.push(l.uuids[0], l.uuids[1], l.uuids[2] ?? '');
      if (l.uuids !== null && l.size !== null) columns.push(String(l.size));
      if (l.uuids !== null && l.size !== null && l.pool !== null) {
        const { data, metadata, metadataSize, vgAttr, vgFree } = l.pool;
        columns.push(percentColumn(data), percentColumn(metadata), metadataSize === null ? '' : String(metadataSize), vgAttr, String(vgFree));
      }
      return `  ${columns.join('|')}`;
    }).join('\n');
    const parsed = parseLvs(`${text}\n`);
    assert.equal(parsed.warnings, []);
    assert.is(parsed.lvs.size, volumes.length);
    for (const { vg, lv, attr, tags, hidden, uuids, size, pool } of volumes) {
      const parsedLv = parsed.lvs.get(vg, lv);
      const sizeBytes = uuids === null ? null : size;
      const use = uuids === null || size === null ? null : pool;
      assert.equal(parsedLv, {
        vg, lv, attr, tags, hidden, lvUuid: uuids?.[0] ?? null, vgUuid: uuids?.[1] ?? null, pool: uuids?.[2] ?? null, sizeBytes,
        dataPercent: use?.data == null ? null : use.data / 100, metadataPercent: use?.metadata == null ? null : use.metadata / 100,
        metadataBytes: use?.metadataSize ?? null, vgAttr: use?.vgAttr ?? null, vgFreeBytes: use?.vgFree ?? null,
      });
      // The LV's own mapping: LVM- + VG uuid + LV uuid, dashes left out (build_dm_uuid); not another's.
      if (uuids === null || parsedLv === undefined) continue;
      const own = `LVM-${uuids[1].replaceAll('-', '')}${uuids[0].replaceAll('-', '')}`;
      assert.is(mapsLv(parsedLv, own), true);
      assert.is(mapsLv(parsedLv, `${own.slice(0, -1)}${own.endsWith('x') ? 'y' : 'x'}`), false);
      assert.is(mapsLv(parsedLv, `LVM-${uuids[0].replaceAll('-', '')}${uuids[1].replaceAll('-', '')}`), uuids[0] === uuids[1]);
      assert.is(mapsLv(parsedLv, `${own}-tpool`), false);
    }
  }));

// ── storage.cfg ────────────────────────────────────────────────────────────────────────────

const nodeName = fc.stringMatching(/^[a-z][a-z0-9-]{0,14}[a-z0-9]$/);
const storageSection = fc.record({
  id: storageId,
  type: fc.constantFrom('lvm', 'lvmthin', 'dir', 'nfs', 'rbd', 'zfspool', 'iscsi', 'pbs'),
  vg: vgName,
  thinpool: lvName,
  shared: fc.boolean(),
  disabled: fc.option(fc.constantFrom('', ' 1', ' 0'), { nil: null }),
  nodes: fc.option(fc.array(nodeName, { minLength: 1, maxLength: 4 }), { nil: null }),
  // SectionConfig writes each key once.
  extra: fc.uniqueArray(fc.tuple(fc.constantFrom('content', 'path', 'server', 'export', 'saferemove', 'bwlimit', 'prune-backups'), fc.stringMatching(/^[a-z0-9,=/._-]{1,30}$/)), { maxLength: 3, selector: ([key]) => key }),
});

property('parseStorageCfg: sections as PVE::SectionConfig writes them parse back to the same storages', 500,
  fc.property(fc.uniqueArray(storageSection, { selector: (s) => s.id, maxLength: 12 }), (sections) => {
    const text = sections
      .map((s) => {
        const lines = [`${s.type}: ${s.id}`, ...s.extra.map(([key, value]) => `\t${key} ${value}`)];
        if (s.type === 'lvm' || s.type === 'lvmthin') lines.push(`\tvgname ${s.vg}`);
        if (s.type === 'lvmthin') lines.push(`\tthinpool ${s.thinpool}`);
        if (s.shared) lines.push('\tshared 1');
        if (s.disabled !== null) lines.push(`\tdisable${s.disabled}`);
        if (s.nodes !== null) lines.push(`\tnodes ${s.nodes.join(',')}`);
        return `${lines.join('\n')}\n`;
      })
      .join('\n');
    const parsed = parseStorageCfg(text);
    assert.equal(parsed.warnings, []);
    assert.equal(
      parsed.storages.map(({ id, type, vg, thinpool, shared, disabled, nodes }) => ({ id, type, vg, thinpool, shared, disabled, nodes })),
      sections.map((s) => ({
        id: s.id, type: s.type, vg: s.type === 'lvm' || s.type === 'lvmthin' ? s.vg : null, thinpool: s.type === 'lvmthin' ? s.thinpool : null,
        shared: s.shared, disabled: s.disabled !== null && s.disabled !== ' 0', nodes: s.nodes,
      })),
    );
  }));

// ── guest configs ──────────────────────────────────────────────────────────────────────────

/** A value Proxmox writes after `key: `: printable, trimmed, no newline. */
const plainValue = fc.string({ unit: fc.constantFrom(...'abcXYZ019 =,;:/._-+@%\u00e9\u4e2d'), minLength: 1, maxLength: 30 }).map((v) => v.trim()).filter((v) => v !== '');
const option = fc.tuple(fc.constantFrom('size', 'iothread', 'cache', 'discard', 'media', 'backup', 'ssd', 'mp', 'format'), fc.stringMatching(/^[a-zA-Z0-9/._-]{1,12}$/)).map(([k, v]) => `${k}=${v}`);
const volumeName = fc.oneof(
  fc.tuple(fc.constantFrom('vm', 'base'), vmid, fc.integer({ min: 0, max: 1023 }), fc.constantFrom('', '.qcow2')).map(([p, id, n, ext]) => `${p}-${id}-disk-${n}${ext}`),
  fc.tuple(vmid, vmid, fc.nat(20)).map(([base, id, n]) => `base-${base}-disk-0/vm-${id}-disk-${n}`),
  vmid.map((id) => `vm-${id}-cloudinit`),
  fc.tuple(vmid, snapshotName).map(([id, snap]) => `vm-${id}-state-${snap}`),
);
/** A volume as a config holds it: `storeid:volname`, or a device path. */
const volumeId = fc.oneof({ weight: 4, arbitrary: fc.tuple(storageId, volumeName).map(([s, v]) => `${s}:${v}`) }, { weight: 1, arbitrary: fc.tuple(vgName, lvName).map(([vg, lv]) => `/dev/${vg}/${lv}`) });
/**
 * A drive or mount point property string as parse_property_string reads it: the volume as the one
 * item without `=` or as `file=`/`volume=`, anywhere among options and blank items.
 */
const driveValue = (named: 'file' | 'volume') =>
  fc
    .tuple(volumeId, fc.array(fc.oneof(option, fc.constantFrom('', ' ', '\t')), { maxLength: 5 }), fc.nat(5), fc.boolean())
    .map(([volume, items, at, explicit]) => {
      const all = [...items];
      all.splice(Math.min(at, all.length), 0, explicit ? `${named}=${volume}` : volume);
      return { volume, text: all.join(',') };
    });

interface Line {
  text: string;
  ref?: Omit<VolumeRef, 'line'>;
}
const qemuKeyLines = (section: string) =>
  fc.array(
    fc.oneof(
      fc.tuple(fc.constantFrom('scsi', 'virtio', 'sata', 'ide'), fc.nat(30), driveValue('file')).map(([bus, n, d]): Line => ({ text: `${bus}${n}: ${d.text}`, ref: { volume: d.volume, key: `${bus}${n}`, section } })),
      fc.tuple(fc.constantFrom('efidisk0', 'tpmstate0'), driveValue('file')).map(([key, d]): Line => ({ text: `${key}: ${d.text}`, ref: { volume: d.volume, key, section } })),
      fc.tuple(fc.nat(255), volumeId).map(([n, volume]): Line => ({ text: `unused${n}: ${volume}`, ref: { volume, key: `unused${n}`, section } })),
      fc.constantFrom('ide2: none,media=cdrom', 'ide0: cdrom,media=cdrom').map((text): Line => ({ text })),
      fc.tuple(fc.constantFrom('memory', 'cores', 'net0', 'boot', 'args', 'cpu', 'smbios1', 'tags', 'hookscript'), plainValue).map(([key, value]): Line => ({ text: `${key}: ${value}` })),
    ),
    { maxLength: 8 },
  );
const description = fc.array(fc.string({ unit: 'binary', maxLength: 60 }).filter((t) => !t.includes('\n')).map((t) => `#${t}`), { maxLength: 3 });

/** A qemu-server config with every kind of section, and the references it holds in file order. */
const qemuConfig = fc
  .record({
    description,
    name: fc.option(fc.stringMatching(/^[a-zA-Z0-9][a-zA-Z0-9.-]{0,30}$/), { nil: null }),
    lock: fc.option(fc.constantFrom('backup', 'clone', 'create', 'migrate', 'rollback', 'snapshot', 'snapshot-delete', 'suspending', 'suspended'), { nil: null }),
    template: fc.boolean(),
    current: qemuKeyLines('current'),
    pending: fc.option(qemuKeyLines('pending'), { nil: null }),
    fleecing: fc.option(fc.array(volumeId, { minLength: 1, maxLength: 3 }), { nil: null }),
    snapshots: fc.uniqueArray(fc.tuple(snapshotName, qemuKeyLines('x'), fc.option(volumeId, { nil: null })), { selector: ([name]) => name.toLowerCase(), maxLength: 3 }),
  })
  .map((c) => {
    const lines: (Line | string)[] = [...c.description];
    if (c.name !== null) lines.push(`name: ${c.name}`);
    if (c.lock !== null) lines.push(`lock: ${c.lock}`);
    if (c.template) lines.push('template: 1');
    lines.push(...c.current, 'vmgenid: 00000000-0000-0000-0000-000000000000');
    if (c.pending !== null) lines.push('', '[PENDING]', ...c.pending, 'delete: net1');
    if (c.fleecing !== null) {
      lines.push('', '[special:fleecing]', { text: `fleecing-images: ${c.fleecing.join(',')}` });
    }
    for (const [name, keys, vmstate] of c.snapshots) {
      lines.push('', `[${name}]`, ...keys.map((line) => (line.ref ? { ...line, ref: { ...line.ref, section: name } } : line)), 'snaptime: 1731000000');
      if (vmstate !== null) lines.push({ text: `vmstate: ${vmstate}`, ref: { volume: vmstate, key: 'vmstate', section: name } });
    }
    const fleecingRefs = (c.fleecing ?? []).map((volume) => ({ volume, key: 'fleecing-images', section: 'special:fleecing' }));
    const refs = lines.flatMap((line) => (typeof line === 'string' ? [] : line.ref ? [line.ref] : line.text.startsWith('fleecing-images') ? fleecingRefs : []));
    const text = lines.map((line) => (typeof line === 'string' ? line : line.text));
    return { text: `${text.join('\n')}\n`, refs, name: c.name, lock: c.lock, template: c.template, snapshots: c.snapshots.map(([name]) => name) };
  });

property('parseGuestConfig (qemu): any legal config parses to the references it holds, section by section', 500,
  fc.property(vmid, qemuConfig, (id, c) => {
    const { config: guest, warnings } = parseGuestConfig(config(id, c.text));
    assert.equal(warnings, []);
    assert.equal(guest.refs.map(({ volume, key, section }) => ({ volume, key, section })), c.refs);
    assert.equal([guest.name, guest.lock, guest.template, guest.snapshots, guest.readable, guest.partial], [c.name, c.lock, c.template, c.snapshots, true, false]);
  }));

/** qemu-server's own key line regex (parse_vm_config), with `s`: a Perl `.` takes every character but `\n`, where lines are split. */
const QEMU_SERVER_KEY_LINE = /^([a-z][a-z_-]*\d*):\s*(.+?)\s*$/s;
const blanks = ' \t\u000b\u000c\u00a0\u1680\u2000\u2028\u2029\u202f\u3000\ufeff\r';

property('parseGuestConfig: a key line reads as qemu-server\'s regex reads it, whatever blanks surround the value', 5000,
  fc.property(
    fc.constantFrom('name', 'lock', 'template', 'scsi0', 'unused7', 'fleecing-images', 'Name', 'a1b', 'net_0-', '0x', ''),
    fc.constantFrom(':', ': ', ':\t', '=', ' :'),
    fc.string({ unit: fc.constantFrom(...blanks, 'a', '1', ':', ',', '-', 'x=y', 'local-lvm:vm-100-disk-0'), maxLength: 12 }),
    (key, separator, rest) => {
      const line = `${key}${separator}${rest}`;
      // A line as pve-dm splits it: at `\n`, its CR of a CRLF end dropped.
      const body = line.endsWith('\r') ? line.slice(0, -1) : line;
      fc.pre(body.trim() !== '');
      const { config: guest, warnings } = parseGuestConfig(config(100, `${line}\n`));
      if (/[\u000b-\u001f]/.test(body)) {
        assert.ok(warnings.some((w) => w.line === 1 && w.message.startsWith('binary bytes')), line);
        return;
      }
      const expected = QEMU_SERVER_KEY_LINE.exec(body);
      if (expected === null) {
        assert.ok(warnings.some((w) => w.line === 1), line);
        return;
      }
      const [, readKey, value = ''] = expected;
      assert.ok(!warnings.some((w) => w.line === 1 && w.message.startsWith('cannot parse')), line);
      if (readKey === 'name') assert.is(guest.name, value);
      if (readKey === 'lock') assert.is(guest.lock, value);
      if (readKey === 'template') assert.is(guest.template, value === '1');
      if (readKey === 'scsi0' || readKey === 'unused7') assert.equal(guest.refs.map((r) => r.volume), volumesOfPropertyString(value));
    }));

const lxcKeyLines = (section: string) =>
  fc.array(
    fc.oneof(
      fc.tuple(fc.constantFrom('rootfs', 'mp0', 'mp1', 'mp17', 'mp255'), driveValue('volume')).map(([key, d]): Line => ({ text: `${key}: ${d.text}`, ref: { volume: d.volume, key, section } })),
      fc.tuple(fc.nat(255), volumeId).map(([n, volume]): Line => ({ text: `unused${n}: ${volume}`, ref: { volume, key: `unused${n}`, section } })),
      fc.tuple(fc.constantFrom('arch', 'cores', 'memory', 'net0', 'ostype', 'features', 'swap'), plainValue).map(([key, value]): Line => ({ text: `${key}: ${value}` })),
      fc.constantFrom('lxc.cgroup2.devices.allow: c 10:200 rwm', 'lxc.mount.entry: /dev/net dev/net none bind,create=dir', 'lxc.apparmor.profile = unconfined').map((text): Line => ({ text })),
    ),
    { maxLength: 8 },
  );

property('parseGuestConfig (lxc): rootfs, mount points, unused volumes, [pve:pending] and snapshots', 500,
  fc.property(vmid, description, fc.option(nodeName, { nil: null }), lxcKeyLines('current'), fc.option(lxcKeyLines('pending'), { nil: null }), fc.uniqueArray(fc.tuple(snapshotName, lxcKeyLines('x')), { selector: ([n]) => n.toLowerCase(), maxLength: 3 }),
    (id, comments, hostname, current, pending, snapshots) => {
      const lines: Line[] = [...comments.map((text) => ({ text })), ...(hostname === null ? [] : [{ text: `hostname: ${hostname}` }]), ...current, { text: 'unprivileged: 1' }];
      if (pending !== null) lines.push({ text: '' }, { text: '[pve:pending]' }, ...pending);
      for (const [name, keys] of snapshots) lines.push({ text: '' }, { text: `[${name}]` }, ...keys.map((line) => (line.ref ? { ...line, ref: { ...line.ref, section: name } } : line)));
      const { config: guest, warnings } = parseGuestConfig(config(id, `${lines.map((l) => l.text).join('\n')}\n`, { type: 'lxc' }));
      assert.equal(warnings, []);
      assert.equal(guest.refs.map(({ volume, key, section }) => ({ volume, key, section })), lines.flatMap((l) => (l.ref ? [l.ref] : [])));
      assert.equal([guest.name, guest.snapshots], [hostname, snapshots.map(([n]) => n)]);
    }));

// ── volume ids and names ───────────────────────────────────────────────────────────────────

property('volumesOfPropertyString: the volume of any drive string, anywhere as the bare item or as file=/volume=', 1000,
  fc.property(fc.boolean(), driveValue('file'), driveValue('volume'), (lxc, qemuDrive, lxcMount) => {
    const drive = lxc ? lxcMount : qemuDrive;
    assert.equal(volumesOfPropertyString(drive.text), [drive.volume]);
  }));

property('volumesOfRef: storeid:volname through storage.cfg\'s vgname, /dev/VG/LV and /dev/mapper/NAME to the same VG and LV', 1000,
  fc.property(storageId, vgName, lvName, fc.constantFrom('id', 'path', 'mapper'), (store, vg, lv, form) => {
    const vgOf = new Map([[store, vg]]);
    const volume = form === 'id' ? `${store}:${lv}` : form === 'path' ? `/dev/${vg}/${lv}` : `/dev/mapper/${lvmDmName(vg, lv)}`;
    assert.equal(volumesOfRef(volume, vgOf), [[vg, lv]]);
    if (form === 'id') assert.equal(volumesOfRef(volume, new Map()), [], 'a storage storage.cfg does not define maps nothing');
  }));

const guestVolume = fc.oneof(
  fc.tuple(vmid, fc.integer({ min: 0, max: 1023 }), fc.constantFrom('', '.qcow2')).map(([id, n, ext]) => ({ name: `vm-${id}-disk-${n}${ext}`, kind: 'disk', vmid: id, origin: null, snapshot: null })),
  fc.tuple(vmid, fc.integer({ min: 0, max: 1023 })).map(([id, n]) => ({ name: `base-${id}-disk-${n}`, kind: 'base', vmid: id, origin: null, snapshot: null })),
  vmid.map((id) => ({ name: `vm-${id}-cloudinit`, kind: 'cloudinit', vmid: id, origin: null, snapshot: null })),
  fc.tuple(vmid, snapshotName).map(([id, snap]) => ({ name: `vm-${id}-state-${snap}`, kind: 'state', vmid: id, origin: null, snapshot: null })),
  fc.tuple(vmid, fc.nat(9)).map(([id, n]) => ({ name: `vm-${id}-fleece-${n}`, kind: 'fleece', vmid: id, origin: null, snapshot: null })),
  fc.tuple(fc.constantFrom('vm', 'base'), vmid, fc.nat(1023), snapshotName, fc.constantFrom('', '.qcow2')).map(([p, id, n, snap, ext]) => ({
    name: `snap_${p}-${id}-disk-${n}_${snap}${ext}`, kind: 'snapshot', vmid: id, origin: `${p}-${id}-disk-${n}${ext}`, snapshot: snap,
  })),
);

property('parseGuestVolumeName: every kind of volume Proxmox names, with its VMID (and origin and snapshot)', 1000,
  fc.property(guestVolume, (v) => {
    const { name, ...expected } = v;
    const parsed = parseGuestVolumeName(name);
    assert.equal(parsed && { kind: parsed.kind, vmid: parsed.vmid, origin: parsed.origin, snapshot: parsed.snapshot }, expected);
    if (expected.kind === 'snapshot') assert.equal(parsed?.readings[0], { origin: expected.origin, snapshot: expected.snapshot });
  }));

/** A volume name `pvesm alloc` accepts (parse_lvm_name): `_`, `-` and `.` inside it. */
const oddVolumeName = fc.tuple(vmid, fc.stringMatching(/^[a-z0-9](?:[a-z0-9_.-]{0,15}[a-z0-9])?$/)).map(([id, rest]) => `vm-${id}-${rest}`);

property('parseGuestVolumeName: a snapshot of any volume, `_` and `-` in both names, has the true reading among its readings', 1000,
  fc.property(oddVolumeName, snapshotName, fc.constantFrom('', '.qcow2'), (volume, snapshot, ext) => {
    const origin = ext === '' ? volume : `${volume}.qcow2`;
    const parsed = parseGuestVolumeName(`snap_${volume}_${snapshot}${ext}`);
    assert.is(parsed?.kind, 'snapshot');
    assert.ok(parsed?.readings.some((r) => r.origin === origin && r.snapshot === snapshot), JSON.stringify(parsed?.readings));
  }));

property('stripCopySuffix: a volume\'s name plus any hand-made suffix gives the volume back', 1000,
  fc.property(guestVolume.filter((v) => v.kind === 'disk' || v.kind === 'base' || v.kind === 'cloudinit' || v.kind === 'fleece'), fc.constantFrom('-', '_', '.', '~'), fc.string({ unit: 'binary', maxLength: 20 }), (v, separator, rest) => {
    // `vm-1-disk-0` + `.qcow2-x` reads as `vm-1-disk-0.qcow2` + `-x`: both are volumes, the longer wins.
    if (!v.name.endsWith('.qcow2') && `${separator}${rest}`.startsWith('.qcow2')) return;
    assert.is(stripCopySuffix(`${v.name}${separator}${rest}`), v.name);
  }));

// ── hostile lines ──────────────────────────────────────────────────────────────────────────

/** Any line at all, real or garbage: what a bug report's capture may hold. */
const anyLine = fc.oneof(fc.string({ unit: 'binary', maxLength: 80 }), hostileText, fc.constantFrom('No devices found', '|||||', 'a|1|2|3|L--w|', ': 0 8 zero', '[PENDING]', '[', 'k:', 'lvm: x', '\tvgname'));
const text = fc.array(anyLine, { maxLength: 20 }).map((lines) => lines.join('\n'));
const nonBlankLines = (t: string) => t.split('\n').flatMap((line, i) => (line.replace(/\r$/, '').trim() === '' ? [] : [i + 1]));

property('parseDmsetupInfo: any text; every line is an entry or a warning naming dmsetup.txt and that line', 1000,
  fc.property(text, (t) => {
    const { entries, warnings } = parseDmsetupInfo(t);
    const accounted = new Set([...entries.map((e) => e.line), ...warnings.map((w) => w.line)]);
    for (const line of nonBlankLines(t)) if (t.split('\n')[line - 1]?.trim() !== 'No devices found') assert.ok(accounted.has(line), `line ${line} neither read nor reported`);
    for (const w of warnings) assert.is(w.source, 'dmsetup.txt');
    for (const e of entries) assert.match(e.name, MANGLED);
    // A byte that was not UTF-8 (read as U+FFFD) leaves a name pve-dm cannot know: no entry, a warning.
    t.split('\n').forEach((line, i) => line.includes('\ufffd') && assert.ok(warnings.some((w) => w.line === i + 1) && !entries.some((e) => e.line === i + 1), `line ${i + 1}`));
  }));

property('the other parsers: any text, never a throw, every warning naming its file and a line of it', 1000,
  fc.property(text, fc.constantFrom<'qemu' | 'lxc'>('qemu', 'lxc'), (t, type) => {
    const count = t.split('\n').length;
    const results: [string, { warnings: { source: string; line: number | null }[] }][] = [
      ['dmsetup-table.txt', parseDmsetupTable(t)], ['lvs.txt', parseLvs(t)], ['etc/pve/storage.cfg', parseStorageCfg(t)],
      ['dmsetup-status.txt', parsePoolStatus(t)],
      ['etc/pve/nodes/pve1/qemu-server/100.conf', parseGuestConfig(config(100, t, { type }))],
    ];
    for (const [file, { warnings }] of results) {
      for (const w of warnings) {
        assert.is(w.source, type === 'lxc' && file.endsWith('.conf') ? 'etc/pve/nodes/pve1/lxc/100.conf' : file);
        assert.ok(w.line === null || (Number.isInteger(w.line) && w.line >= 1 && w.line <= count), `${file}: line ${w.line} of ${count}`);
      }
    }
  }));

test.run();
