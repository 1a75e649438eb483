// fake-kvm.mjs - stands in for a running VM inside the kernel-test VM (kernel.guest.sh).
// Nothing of Proxmox runs there; pve-dm only looks at what a running VM leaves on a node.
//
//   kvm fake-kvm.mjs -id 101 ... -pidfile /var/run/qemu-server/101.pid -drive file=/dev/mapper/X,...
//
// is started through a symlink named kvm to the node binary, so that /proc/<pid>/cmdline reads
// `/usr/bin/kvm ... -pidfile /var/run/qemu-server/101.pid ...` as qemu-server's check_running
// expects. (A symlink to busybox's sleep would not do: busybox picks its applet by the name.)
// Opens every `-drive file=...` (a running VM holds its disks open) and writes its pid into the
// pid file, as QEMU does. Runs until killed.
import fs from 'node:fs';

const args = process.argv.slice(2);
const held = [];
for (let i = 0; i < args.length - 1; i++) {
  const file = args[i] === '-drive' ? /(?:^|,)file=([^,]+)/.exec(args[i + 1])?.[1] : undefined;
  if (file) held.push(fs.openSync(file, 'r'));
}
const at = args.indexOf('-pidfile');
if (at < 0 || !args[at + 1]) {
  console.error('fake-kvm: no -pidfile');
  process.exit(2);
}
fs.writeFileSync(args[at + 1], `${process.pid}\n`);
setInterval(() => {}, 1 << 30);
