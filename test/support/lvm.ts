// How LVM names and identifies what it maps, for building node state in tests and generated captures.

/** LVM's dm name (libdm dm_build_dm_name): `<vg>-<lv>[-<layer>]`, a `-` inside a part doubled. */
export const lvmDmName = (vg: string, lv: string, layer = '') =>
  [vg, lv, layer].filter(Boolean).map((part) => part.replaceAll('-', '--')).join('-');

const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A 32-character LVM id (the alphabet LVM's ids use), the same for the same seed. */
export function lvmId(seed: string): string {
  let out = '';
  let hash = 2166136261;
  while (out.length < 32) {
    for (const c of seed + out.length) hash = Math.imul(hash ^ c.charCodeAt(0), 16777619) >>> 0;
    out += ID_CHARS[hash % ID_CHARS.length];
  }
  return out;
}

/** LVM's dm uuid: `LVM-` + VG id + LV id, then `-<layer>` for its own layers (`-tpool`, `-real`...). */
export const lvmUuid = (vg: string, lv: string, layer = '') => `LVM-${lvmId(`vg:${vg}`)}${lvmId(`lv:${vg}/${lv}`)}${layer ? `-${layer}` : ''}`;

/** An LVM id as lvs prints it: 6-4-4-4-4-4-6 characters (lib/uuid/uuid.c id_write_format). */
export const displayId = (id: string) => [id.slice(0, 6), id.slice(6, 10), id.slice(10, 14), id.slice(14, 18), id.slice(18, 22), id.slice(22, 26), id.slice(26)].join('-');

/** A thin pool's use and its VG's state, as the last five lvs columns print them. */
export interface LvsExtra {
  data?: string;
  metadata?: string;
  metadataSize?: string;
  vgAttr?: string;
  vgFree?: number;
}

/**
 * An `lvs` line as LVS_ARGS asks for it (vg|lv|attr|tags|lv_uuid|vg_uuid|pool_lv|lv_size|data%|
 * metadata%|metadata_size|vg_attr|vg_free), its uuids those of lvmUuid.
 */
export const lvsLine = (vg: string, lv: string, attr: string, tags = '', pool = '', size = 4_294_967_296, extra: LvsExtra = {}) =>
  `  ${vg}|${lv}|${attr}|${tags}|${displayId(lvmId(`lv:${vg}/${lv}`))}|${displayId(lvmId(`vg:${vg}`))}|${pool}|${size}` +
  `|${extra.data ?? ''}|${extra.metadata ?? ''}|${extra.metadataSize ?? ''}|${extra.vgAttr ?? 'wz--n-'}|${extra.vgFree ?? 17_179_869_184}`;

/**
 * An `lvs --segments` line as LVS_SEGMENTS_ARGS asks for it (one segment: vg|lv|lv_uuid|vg_uuid|
 * lv_attr|extent size|start|size|segtype|stripes|stripe size|chunk size|PE ranges|thin id|pool|
 * origin|kernel major|minor), its uuids those of lvmUuid; sizes in sectors.
 */
export const segmentsLine = (
  vg: string, lv: string, attr: string,
  segment: { size: number; type: string; ranges?: string; thinId?: number; pool?: string; device: string },
) =>
  `  ${vg}|${lv}|${displayId(lvmId(`lv:${vg}/${lv}`))}|${displayId(lvmId(`vg:${vg}`))}|${attr}|8192|0|${segment.size}|` +
  `${segment.type}|${segment.type === 'thin' ? 0 : 1}|0|${segment.type === 'thin-pool' ? 128 : 0}|${segment.ranges ?? ''}|` +
  `${segment.thinId ?? ''}|${segment.pool ?? ''}||${segment.device.replace(':', '|')}`;

/** A `pvs` line as PVS_ARGS asks for it: name|pv_uuid|vg|vg_uuid|pe_start|major|minor (first extent at sector 2048). */
export const pvsLine = (name: string, vg: string, device: string) =>
  `  ${name}|${displayId(lvmId(`pv:${name}`))}|${vg}|${displayId(lvmId(`vg:${vg}`))}|2048|${device.replace(':', '|')}`;
