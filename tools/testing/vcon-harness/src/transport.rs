//! The transports the scenarios run on besides the default (modern virtio-pci on `-M pc`):
//! virtio-mmio on `-M microvm`, legacy virtio-pci, and virtio-pci with `iommu_platform=on` and
//! the guest bouncing every buffer through swiotlb.
//!
//! A transport rewrites a scenario's QEMU arguments (the `virtio-serial-pci` devices of
//! [`crate::scenarios::serial`]) and adds guest code that prints what the guest saw of the
//! transport; [`Transport::check`] then says whether the run really used it.

use crate::vm::Res;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transport {
    /// `-M microvm,acpi=off`, `virtio-serial-device`: QEMU puts `virtio_mmio.device=` on the
    /// kernel command line for each device.
    Mmio,
    /// `virtio-serial-pci,disable-modern=on`: the transitional device's legacy interface only.
    PciLegacy,
    /// `virtio-serial-pci,disable-legacy=on,iommu_platform=on` (VIRTIO_F_ACCESS_PLATFORM), the guest booted with
    /// `swiotlb=force`: every buffer bounces, as in a confidential guest.
    PciIommu,
}

/// VIRTIO_F_VERSION_1 and VIRTIO_F_ACCESS_PLATFORM, as bit numbers of the sysfs `features`
/// string (one character per bit, bit 0 first).
const F_VERSION_1: usize = 32;
const F_ACCESS_PLATFORM: usize = 33;

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Mmio, Transport::PciLegacy, Transport::PciIommu];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Mmio => "mmio",
            Transport::PciLegacy => "pci-legacy",
            Transport::PciIommu => "pci-iommu",
        }
    }

    /// The scenarios that run on this transport: for virtio-mmio those that do not depend on
    /// PCI (probe, data, console, hotplug of ports); for the two PCI variants one data run.
    pub fn scenarios(self) -> &'static [&'static str] {
        match self {
            Transport::Mmio => &[
                "probe_nodes",
                "data_both_ways",
                "hvc_console_io",
                "hotplug_unplug",
            ],
            Transport::PciLegacy | Transport::PciIommu => &["data_both_ways"],
        }
    }

    pub fn machine(self) -> &'static str {
        match self {
            Transport::Mmio => "microvm,acpi=off",
            Transport::PciLegacy | Transport::PciIommu => crate::vm::PC,
        }
    }

    /// Extra kernel command-line words.
    pub fn cmdline(self) -> Vec<String> {
        match self {
            // track_hiwater: the swiotlb debugfs counts the slots used, so the run can show
            // that buffers really bounced.
            Transport::PciIommu => vec!["swiotlb=force,track_hiwater".into()],
            Transport::Mmio | Transport::PciLegacy => vec![],
        }
    }

    /// The scenario's QEMU arguments on this transport.
    pub fn qemu(self, args: &[String]) -> Vec<String> {
        args.iter()
            .map(|a| match a.strip_prefix("virtio-serial-pci,") {
                Some(rest) => match self {
                    Transport::Mmio => format!("virtio-serial-device,{rest}"),
                    Transport::PciLegacy => format!("{a},disable-modern=on"),
                    // QEMU offers ACCESS_PLATFORM only on a modern-only device.
                    Transport::PciIommu => format!("{a},disable-legacy=on,iommu_platform=on"),
                },
                None => a.clone(),
            })
            .collect()
    }

    /// Guest code run after the scenario's own: prints `@@transport KEY VALUE` lines.
    pub fn guest(self) -> &'static str {
        concat!(
            "\nfor d in /sys/bus/virtio/devices/*; do\n",
            "    echo \"@@transport dev $(basename $(readlink -f $d/..)) $(cat $d/device) $(cat $d/features)\"\n",
            "done\n",
            "for d in /sys/bus/pci/devices/*; do\n",
            "    [ -e $d/vendor ] && echo \"@@transport pci $(cat $d/vendor):$(cat $d/device)\"\n",
            "done\n",
            "echo \"@@transport swiotlb $(cat /sys/kernel/debug/swiotlb/io_tlb_used_hiwater 2>/dev/null || echo -)\"\n",
            "echo \"@@transport cmdline $(cat /proc/cmdline)\"\n",
        )
    }

    /// Checks the `@@transport` lines of a run's log: the devices were on this transport.
    pub fn check(self, log: &[String]) -> Res<()> {
        let lines: Vec<&str> = log
            .iter()
            .filter_map(|l| l.trim_start_matches('\r').strip_prefix("@@transport "))
            .collect();
        // "dev PARENT DEVICE-ID FEATURES" for each virtio device.
        let devs: Vec<Vec<&str>> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("dev "))
            .map(|l| l.split_whitespace().collect())
            .collect();
        let pci: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("pci "))
            .collect();
        let swiotlb = lines.iter().find_map(|l| l.strip_prefix("swiotlb "));
        let cmdline = lines
            .iter()
            .find_map(|l| l.strip_prefix("cmdline "))
            .unwrap_or("");
        let consoles: Vec<&Vec<&str>> = devs
            .iter()
            .filter(|d| d.get(1) == Some(&"0x0003"))
            .collect();
        if consoles.is_empty() {
            return Err(format!("no virtio console device seen: {lines:?}"));
        }
        let bit =
            |d: &Vec<&str>, n: usize| d.get(2).and_then(|f| f.as_bytes().get(n)) == Some(&b'1');
        match self {
            Transport::Mmio => {
                for d in &consoles {
                    if !d[0].starts_with("virtio-mmio.") {
                        return Err(format!("a console device not on virtio-mmio: {d:?}"));
                    }
                }
                if !pci.is_empty() {
                    return Err(format!("PCI devices on the microvm: {pci:?}"));
                }
                if !cmdline.contains("virtio_mmio.device=") {
                    return Err(format!(
                        "no virtio_mmio.device= on the command line: {cmdline}"
                    ));
                }
            }
            Transport::PciLegacy => {
                if !pci.contains(&"0x1af4:0x1003") || pci.contains(&"0x1af4:0x1043") {
                    return Err(format!(
                        "the console is not the legacy PCI device 1af4:1003: {pci:?}"
                    ));
                }
                for d in &consoles {
                    if bit(d, F_VERSION_1) {
                        return Err(format!(
                            "VIRTIO_F_VERSION_1 negotiated on a legacy device: {d:?}"
                        ));
                    }
                }
            }
            Transport::PciIommu => {
                for d in &consoles {
                    if !bit(d, F_ACCESS_PLATFORM) || !bit(d, F_VERSION_1) {
                        return Err(format!("VIRTIO_F_ACCESS_PLATFORM not negotiated: {d:?}"));
                    }
                }
                if !cmdline
                    .split_whitespace()
                    .any(|w| w.starts_with("swiotlb=force"))
                {
                    return Err(format!("the guest booted without swiotlb=force: {cmdline}"));
                }
                let used: u64 = swiotlb.and_then(|s| s.trim().parse().ok()).unwrap_or(0);
                if used == 0 {
                    return Err(format!(
                        "no swiotlb slot was ever used (io_tlb_used_hiwater {swiotlb:?}): the buffers did not bounce"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn only_the_named_device_is_rewritten() {
        let q = vec![
            "-device".to_string(),
            "virtio-serial-pci,id=vser0,max_ports=1".to_string(),
            "-chardev".to_string(),
            "socket,id=p01".to_string(),
        ];
        assert_eq!(
            Transport::Mmio.qemu(&q)[1],
            "virtio-serial-device,id=vser0,max_ports=1"
        );
        assert_eq!(
            Transport::PciLegacy.qemu(&q)[1],
            "virtio-serial-pci,id=vser0,max_ports=1,disable-modern=on"
        );
        assert_eq!(Transport::PciIommu.qemu(&q)[3], "socket,id=p01");
    }

    #[test]
    fn legacy_check_sees_a_modern_device() {
        let modern = "0".repeat(32) + "1";
        let legacy = "0".repeat(33);
        let run = |feat: &str, pci: &str| {
            log(&[
                &format!("@@transport dev 0000:00:03.0 0x0003 {feat}"),
                &format!("@@transport pci {pci}"),
                "@@transport swiotlb -",
                "@@transport cmdline console=ttyS0",
            ])
        };
        assert!(Transport::PciLegacy
            .check(&run(&legacy, "0x1af4:0x1003"))
            .is_ok());
        assert!(Transport::PciLegacy
            .check(&run(&modern, "0x1af4:0x1003"))
            .is_err());
        assert!(Transport::PciLegacy
            .check(&run(&legacy, "0x1af4:0x1043"))
            .is_err());
        // No line at all is a failure, not a pass.
        assert!(Transport::PciLegacy.check(&[]).is_err());
    }
}
