/**
 * classifyHypervisor on the strings real guests show (DMI sys_vendor / product_name / bios_vendor,
 * the CPUID hypervisor flag, the clock sources and /sys/hypervisor/type), bare metal included.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { classifyHypervisor, hostInfo, type HypervisorEvidence } from '../../src/platform/host-info.js';

const cases: [string, HypervisorEvidence, string | undefined][] = [
  [
    'libvirt KVM, i440fx + SeaBIOS',
    {
      sysVendor: 'QEMU',
      productName: 'Standard PC (i440FX + PIIX, 1996)',
      biosVendor: 'SeaBIOS',
      cpuHypervisorFlag: true,
      clocksources: 'kvm-clock tsc acpi_pm',
    },
    'kvm',
  ],
  [
    'libvirt KVM, q35 + OVMF',
    {
      sysVendor: 'QEMU',
      productName: 'Standard PC (Q35 + ICH9, 2009)',
      biosVendor: 'EDK II',
      cpuHypervisorFlag: true,
      clocksources: 'kvm-clock tsc hpet acpi_pm',
    },
    'kvm',
  ],
  [
    'QEMU emulating the CPU (TCG): no KVM clock',
    {
      sysVendor: 'QEMU',
      productName: 'Standard PC (i440FX + PIIX, 1996)',
      biosVendor: 'SeaBIOS',
      cpuHypervisorFlag: true,
      clocksources: 'tsc hpet acpi_pm',
    },
    'qemu',
  ],
  [
    'QEMU TCG, clocksource unreadable',
    { sysVendor: 'QEMU', productName: 'Standard PC (Q35 + ICH9, 2009)', biosVendor: 'EDK II', cpuHypervisorFlag: true },
    'qemu',
  ],
  ['Red Hat Virtualization', { sysVendor: 'Red Hat', productName: 'KVM', biosVendor: 'SeaBIOS', cpuHypervisorFlag: true }, 'kvm'],
  [
    'OpenStack Nova',
    {
      sysVendor: 'OpenStack Foundation',
      productName: 'OpenStack Nova',
      biosVendor: 'SeaBIOS',
      cpuHypervisorFlag: true,
      clocksources: 'kvm-clock tsc acpi_pm',
    },
    'kvm-openstack',
  ],
  [
    'Proxmox VE',
    {
      sysVendor: 'QEMU',
      productName: 'Standard PC (i440FX + PIIX, 1996)',
      biosVendor: 'Proxmox distribution of EDK II',
      cpuHypervisorFlag: true,
      clocksources: 'kvm-clock tsc',
    },
    'kvm-proxmox',
  ],
  [
    'Firecracker microVM: no DMI, KVM clock',
    { sysVendor: '', productName: '', biosVendor: '', cpuHypervisorFlag: true, clocksources: 'kvm-clock tsc ' },
    'kvm',
  ],
  [
    'VMware ESXi (old BIOS)',
    {
      sysVendor: 'VMware, Inc.',
      productName: 'VMware Virtual Platform',
      biosVendor: 'Phoenix Technologies LTD',
      cpuHypervisorFlag: true,
      clocksources: 'tsc hpet acpi_pm',
    },
    'vmware',
  ],
  [
    'VMware ESXi (EFI)',
    { sysVendor: 'VMware, Inc.', productName: 'VMware7,1', biosVendor: 'VMware, Inc.', cpuHypervisorFlag: true },
    'vmware',
  ],
  [
    'Hyper-V / Azure',
    {
      sysVendor: 'Microsoft Corporation',
      productName: 'Virtual Machine',
      biosVendor: 'Microsoft Corporation',
      cpuHypervisorFlag: true,
      clocksources: 'hyperv_clocksource_tsc_page acpi_pm',
    },
    'hyper-v',
  ],
  [
    'Hyper-V, DMI hidden',
    { sysVendor: '', productName: '', biosVendor: '', cpuHypervisorFlag: true, clocksources: 'hyperv_clocksource_tsc_page' },
    'hyper-v',
  ],
  [
    'Xen HVM',
    { sysVendor: 'Xen', productName: 'HVM domU', biosVendor: 'Xen', cpuHypervisorFlag: true, clocksources: 'xen tsc hpet acpi_pm' },
    'xen',
  ],
  ['Xen PV: no DMI', { sysVendor: '', productName: '', biosVendor: '', cpuHypervisorFlag: false, sysHypervisorType: 'xen\n' }, 'xen'],
  [
    'AWS Nitro',
    { sysVendor: 'Amazon EC2', productName: 'm5.large', biosVendor: 'Amazon EC2', cpuHypervisorFlag: true, clocksources: 'kvm-clock tsc' },
    'kvm-ec2',
  ],
  [
    'Google Compute Engine',
    {
      sysVendor: 'Google',
      productName: 'Google Compute Engine',
      biosVendor: 'Google',
      cpuHypervisorFlag: true,
      clocksources: 'kvm-clock tsc',
    },
    'kvm-gce',
  ],
  [
    'VirtualBox',
    { sysVendor: 'innotek GmbH', productName: 'VirtualBox', biosVendor: 'innotek GmbH', cpuHypervisorFlag: true },
    'virtualbox',
  ],
  ['unknown hypervisor: CPUID bit only', { sysVendor: '', productName: '', biosVendor: '', cpuHypervisorFlag: true }, 'unknown'],
  [
    'bare metal Dell',
    {
      sysVendor: 'Dell Inc.',
      productName: 'PowerEdge R640',
      biosVendor: 'Dell Inc.',
      cpuHypervisorFlag: false,
      clocksources: 'tsc hpet acpi_pm',
    },
    undefined,
  ],
  [
    'bare metal Microsoft Surface (not Hyper-V)',
    {
      sysVendor: 'Microsoft Corporation',
      productName: 'Surface Laptop 4',
      biosVendor: 'Microsoft Corporation',
      cpuHypervisorFlag: false,
      clocksources: 'tsc hpet',
    },
    undefined,
  ],
  [
    'bare metal vendor containing "xen" (not Xen)',
    { sysVendor: 'Xenon Systems', productName: 'NitroStack', biosVendor: 'American Megatrends Inc.', cpuHypervisorFlag: false },
    undefined,
  ],
];

describe('classifyHypervisor', () => {
  for (const [name, evidence, want] of cases) {
    it(`${name} -> ${want ?? 'none'}`, () => assert.equal(classifyHypervisor(evidence), want));
  }

  it('hostInfo() reads this machine without throwing and reports linux with a known name or none', () => {
    const h = hostInfo();
    assert.equal(h.os, process.platform === 'linux' ? 'linux' : h.os);
    assert.ok(
      h.hypervisor === undefined || /^(kvm(-\w+)?|qemu|vmware|hyper-v|xen|virtualbox|unknown)$/.test(h.hypervisor),
      String(h.hypervisor),
    );
  });
});
