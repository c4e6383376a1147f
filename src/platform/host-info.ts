/**
 * Who we are, for the hello: host name, OS and, where it can be told, the hypervisor.
 * Linux: DMI strings in /sys/class/dmi/id (readable without root), the `hypervisor` CPU flag (CPUID
 * leaf 1, ECX bit 31), paravirtual clock sources and /sys/hypervisor/type.
 */
import fs from 'node:fs';
import os from 'node:os';
import type { OsName } from '../protocol/messages.js';

export interface HostInfo {
  host: string;
  os: OsName;
  hypervisor: string | undefined;
}

function readSmall(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').slice(0, 256).trim();
  } catch {
    return '';
  }
}

/** What the guest can see of its hypervisor (all readable without root). */
export interface HypervisorEvidence {
  /** /sys/class/dmi/id/sys_vendor, product_name, bios_vendor ('' when absent: Xen PV, microVMs). */
  sysVendor: string;
  productName: string;
  biosVendor: string;
  /** The CPUID "hypervisor" bit, as the `hypervisor` flag of /proc/cpuinfo. */
  cpuHypervisorFlag: boolean;
  /** /sys/devices/system/clocksource/clocksource0/available_clocksource: kvm-clock, hyperv_clocksource_*, xen. */
  clocksources?: string;
  /** /sys/hypervisor/type ("xen" in Xen guests, PV included). */
  sysHypervisorType?: string;
}

/**
 * The hypervisor from DMI strings, the CPUID hypervisor bit and paravirtual clocks: vmware,
 * hyper-v, xen, kvm (kvm-openstack, kvm-proxmox, kvm-nutanix, kvm-ec2, kvm-gce when the cloud says
 * so), qemu (QEMU emulating the CPU, TCG: QEMU's DMI without KVM's paravirtual clock), virtualbox,
 * unknown (the CPUID bit only), undefined (no sign of a hypervisor). Exported for tests.
 */
export function classifyHypervisor(e: HypervisorEvidence): string | undefined {
  const dmi = `${e.sysVendor}\n${e.productName}\n${e.biosVendor}`.toLowerCase();
  const clocks = ` ${(e.clocksources ?? '').toLowerCase()} `;
  const has = (re: RegExp) => re.test(dmi);
  if (has(/\bvmware\b/)) return 'vmware';
  if ((has(/\bmicrosoft corporation\b/) && has(/\bvirtual machine\b/)) || /\shyperv_clocksource/.test(clocks)) return 'hyper-v';
  if ((e.sysHypervisorType ?? '').trim().toLowerCase() === 'xen' || has(/(^|\n)xen\b|\bhvm domu\b/) || /\sxen\s/.test(clocks)) return 'xen';
  if (has(/\bopenstack\b/)) return 'kvm-openstack';
  if (has(/\bproxmox\b/)) return 'kvm-proxmox';
  if (has(/\bnutanix\b/)) return 'kvm-nutanix';
  if (has(/\bamazon ec2\b/)) return 'kvm-ec2';
  if (has(/\bgoogle compute engine\b/)) return 'kvm-gce';
  if (has(/\bvirtualbox\b|\binnotek\b/)) return 'virtualbox';
  const kvmClock = /\skvm-clock\s/.test(clocks);
  if (has(/\bkvm\b/) || (kvmClock && (has(/\bqemu\b|\bseabios\b|\bbochs\b/) || dmi.trim() === ''))) return 'kvm';
  if (has(/\bqemu\b|\bseabios\b|\bbochs\b/)) return 'qemu';
  if (kvmClock) return 'kvm';
  return e.cpuHypervisorFlag ? 'unknown' : undefined;
}

export function hostInfo(): HostInfo {
  const platform = process.platform;
  const osName: OsName = platform === 'linux' ? 'linux' : platform === 'win32' ? 'windows' : 'other';
  let hypervisor: string | undefined;
  if (platform === 'linux') {
    hypervisor = classifyHypervisor({
      sysVendor: readSmall('/sys/class/dmi/id/sys_vendor'),
      productName: readSmall('/sys/class/dmi/id/product_name'),
      biosVendor: readSmall('/sys/class/dmi/id/bios_vendor'),
      cpuHypervisorFlag: /\bhypervisor\b/.test(cpuFlags()),
      clocksources: readSmall('/sys/devices/system/clocksource/clocksource0/available_clocksource'),
      sysHypervisorType: readSmall('/sys/hypervisor/type'),
    });
  }
  return { host: os.hostname(), os: osName, hypervisor };
}

function cpuFlags(): string {
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = text.split('\n').find((l) => l.startsWith('flags'));
    return line ?? '';
  } catch {
    return '';
  }
}
