/**
 * Who we are, for the hello: host name, OS and, where it can be told, the hypervisor.
 * Linux: DMI strings in /sys/class/dmi/id (readable without root) and the `hypervisor` CPU flag.
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

/** Map DMI vendor/product strings to a hypervisor name. Exported for tests. */
export function hypervisorFromDmi(sysVendor: string, productName: string, biosVendor: string, cpuHypervisorFlag: boolean): string | undefined {
  const all = `${sysVendor}\n${productName}\n${biosVendor}`.toLowerCase();
  if (all.includes('vmware')) return 'vmware';
  if (all.includes('microsoft corporation') && all.includes('virtual machine')) return 'hyper-v';
  if (all.includes('xen')) return 'xen';
  if (all.includes('openstack')) return 'kvm-openstack';
  if (all.includes('proxmox')) return 'kvm-proxmox';
  if (all.includes('nutanix')) return 'kvm-nutanix';
  if (all.includes('qemu') || all.includes('kvm') || all.includes('seabios')) return 'kvm';
  if (all.includes('virtualbox') || all.includes('innotek')) return 'virtualbox';
  if (all.includes('amazon ec2')) return 'kvm-ec2';
  if (all.includes('google compute engine')) return 'kvm-gce';
  return cpuHypervisorFlag ? 'unknown' : undefined;
}

export function hostInfo(): HostInfo {
  const platform = process.platform;
  const osName: OsName = platform === 'linux' ? 'linux' : platform === 'win32' ? 'windows' : 'other';
  let hypervisor: string | undefined;
  if (platform === 'linux') {
    hypervisor = hypervisorFromDmi(
      readSmall('/sys/class/dmi/id/sys_vendor'),
      readSmall('/sys/class/dmi/id/product_name'),
      readSmall('/sys/class/dmi/id/bios_vendor'),
      /\bhypervisor\b/.test(cpuFlags()),
    );
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
