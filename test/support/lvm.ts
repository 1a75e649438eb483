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
