// fake-guest.mjs - stands in for a running guest inside the kernel-test VM (kernel.guest.sh).
// Nothing of Proxmox runs there; pve-dm only looks at what a running guest leaves on a node:
//
//   kvm fake-guest.mjs -id 101 -pidfile /var/run/qemu-server/101.pid -drive file=/dev/mapper/X,...
//     (started through a symlink named kvm to the node binary, so /proc/<pid>/cmdline reads
//     `/usr/bin/kvm ... -pidfile /var/run/qemu-server/101.pid ...` as qemu-server's check_running
//     expects). Opens every -drive file=... (a running VM holds its disks open) and writes its pid
//     into the pid file, as QEMU does.
//   node fake-guest.mjs lxc 200 READYFILE [DEVICE...]
//     binds the abstract unix socket @/var/lib/lxc/200/command (LXC's command socket, which is
//     how pve-container tells a running container) and holds DEVICE(s) open; writes READYFILE.
//
// Runs until killed.
import fs from 'node:fs';
import net from 'node:net';

const args = process.argv.slice(2);
const held = [];
const hold = (device) => held.push(fs.openSync(device, 'r'));

if (args[0] === 'lxc') {
  const [, vmid, ready, ...devices] = args;
  devices.forEach(hold);
  const server = net.createServer((socket) => socket.destroy());
  server.on('error', (error) => {
    console.error(`fake-guest lxc ${vmid}: ${error.message}`);
    process.exit(1);
  });
  server.listen(`\0/var/lib/lxc/${vmid}/command`, () => fs.writeFileSync(ready, `${process.pid}\n`));
} else {
  for (let i = 0; i < args.length - 1; i++) {
    const file = args[i] === '-drive' ? /(?:^|,)file=([^,]+)/.exec(args[i + 1])?.[1] : undefined;
    if (file) hold(file);
  }
  const at = args.indexOf('-pidfile');
  if (at < 0 || !args[at + 1]) {
    console.error('fake-guest kvm: no -pidfile');
    process.exit(2);
  }
  fs.writeFileSync(args[at + 1], `${process.pid}\n`);
}
setInterval(() => {}, 1 << 30);
