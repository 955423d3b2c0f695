//! The integration scenarios: each boots a guest with some virtio-serial devices, runs a guest
//! script and plays the host side, and checks what it sees.
//!
//! Every scenario runs against a chosen driver (the Rust module or the C reference); none of
//! them knows which, so the C driver is the oracle for the expected behaviour.

use crate::vm::{Res, Vm};
use std::io::{Read, Write};

mod async_io;

/// Which driver a run loads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Driver {
    Rust,
    C,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Rust => "rust",
            Driver::C => "c",
        }
    }
}

/// One scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// QEMU arguments; `@DIR@` is the run directory where socket chardevs live.
    pub qemu: Vec<String>,
    /// Shell run by the guest's init (helpers: `load_driver`, `wait_for PATH`, `$KO`).
    pub guest: &'static str,
    /// The host side; returns the output to compare between drivers (may be empty).
    pub host: fn(&mut Vm, Driver) -> Res<Vec<String>>,
    /// Whether the scenario only makes sense for the Rust side (for example the sample).
    pub rust_only: bool,
    /// Whether the outputs of both drivers must be identical.
    pub differential: bool,
    /// Time limit in seconds.
    pub timeout: u64,
}

pub(crate) fn serial(n: u32) -> Vec<String> {
    vec!["-device".into(), format!("virtio-serial-pci,id=vser{n}")]
}

pub(crate) fn sock(id: &str) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!("socket,id={id},path=@DIR@/{id}.sock,server=on,wait=off"),
    ]
}

pub(crate) fn console(bus: u32, nr: u32, id: &str) -> Vec<String> {
    let mut v = sock(id);
    v.push("-device".into());
    v.push(format!(
        "virtconsole,bus=vser{bus}.0,chardev={id},nr={nr},id=dev-{id}"
    ));
    v
}

pub(crate) fn port(bus: u32, nr: u32, id: &str, name: Option<&str>) -> Vec<String> {
    let mut v = sock(id);
    v.push("-device".into());
    let name = name.map(|n| format!(",name={n}")).unwrap_or_default();
    v.push(format!(
        "virtserialport,bus=vser{bus}.0,chardev={id},nr={nr},id=dev-{id}{name}"
    ));
    v
}

pub(crate) fn check(cond: bool, what: impl FnOnce() -> String) -> Res<()> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

pub(crate) fn expect_eq(got: &str, want: &str, what: &str) -> Res<()> {
    check(got == want, || {
        format!("{what}: got {got:?}, want {want:?}")
    })
}

pub(crate) fn read_exact(s: &mut impl Read, n: usize) -> Res<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .map_err(|e| format!("reading {n} bytes from the port: {e}"))?;
    Ok(buf)
}

/// The deterministic stream and checksum `vcg` uses.
pub struct Stream(pub u64);

impl Stream {
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

pub fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub const FNV_INIT: u64 = 0xcbf29ce484222325;

/// The guest line that lists a port's debugfs file, as `key: value` pairs.
fn debugfs_value(lines: &[String], file: &str, key: &str) -> Option<String> {
    let mut in_file = false;
    for l in lines {
        if let Some(f) = l.strip_prefix("== ") {
            in_file = f == file;
        } else if in_file {
            if let Some(v) = l.strip_prefix(&format!("{key}: ")) {
                return Some(v.to_string());
            }
            if l == &format!("{key}:") {
                return Some(String::new());
            }
        }
    }
    None
}

const DUMP: &str = r#"
dump() {
    echo "@@BEGIN $1"
    ls /dev | grep -E '^vport' | sort
    for f in $(ls /sys/class/virtio-ports | sort); do
        echo "sysfs $f name=$(cat /sys/class/virtio-ports/$f/name 2>/dev/null || echo -)"
    done
    for f in $(ls /sys/kernel/debug/virtio-ports | sort); do
        echo "== $f"
        cat /sys/kernel/debug/virtio-ports/$f
    done
    echo "majors $(grep -c virtio-portsdev /proc/devices)"
    echo "@@END $1"
}
"#;

pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();

    // Two devices, consoles and named/unnamed ports: nodes, names, debugfs, vtermnos.
    let mut q = serial(0);
    q.extend(console(0, 0, "con0"));
    q.extend(port(0, 1, "p01", Some("org.test.alpha")));
    q.extend(port(0, 2, "p02", None));
    q.extend(serial(1));
    q.extend(port(1, 1, "p11", Some("org.test.beta")));
    q.extend(console(1, 2, "con1"));
    v.push(Scenario {
        name: "probe_nodes",
        about: "two devices: /dev nodes, sysfs names, debugfs text and vtermnos",
        qemu: q.clone(),
        guest: concat!(
            "load_driver\nwait_for /dev/vport1p2\nwait_for /sys/kernel/debug/virtio-ports/vport1p1\n",
            "sleep 1\n",
            "dump nodes\n"
        ),
        host: |vm, _| {
            let lines = vm.block("nodes")?;
            let has = |s: &str| lines.iter().any(|l| l == s);
            for n in ["vport0p0", "vport0p1", "vport0p2", "vport1p1", "vport1p2"] {
                check(has(n), || format!("/dev/{n} missing: {lines:?}"))?;
            }
            check(has("sysfs vport0p1 name=org.test.alpha"), || format!("name of vport0p1: {lines:?}"))?;
            check(has("sysfs vport1p1 name=org.test.beta"), || format!("name of vport1p1: {lines:?}"))?;
            check(has("sysfs vport0p2 name=-"), || format!("vport0p2 must have no name file: {lines:?}"))?;
            check(has("majors 2"), || format!("one major per device: {lines:?}"))?;
            let v0 = debugfs_value(&lines, "vport0p0", "console_vtermno").unwrap_or_default();
            let v1 = debugfs_value(&lines, "vport1p2", "console_vtermno").unwrap_or_default();
            let mut vt = [v0.clone(), v1.clone()];
            vt.sort();
            check(vt == ["1".to_string(), "2".to_string()], || format!("vtermnos {v0} {v1}"))?;
            expect_eq(
                &debugfs_value(&lines, "vport0p1", "is_console").unwrap_or_default(),
                "no",
                "vport0p1 is_console",
            )?;
            // The nine lines, in order, for a data port.
            let start = lines.iter().position(|l| l == "== vport0p1").ok_or("no vport0p1 debugfs")?;
            let keys: Vec<&str> = lines[start + 1..start + 10]
                .iter()
                .map(|l| l.split(':').next().unwrap_or(""))
                .collect();
            check(
                keys == [
                    "name", "guest_connected", "host_connected", "outvq_full", "bytes_sent",
                    "bytes_received", "bytes_discarded", "is_console", "console_vtermno",
                ],
                || format!("debugfs keys {keys:?}"),
            )?;
            // vtermnos depend on the order the two devices' consoles came up: normalise.
            Ok(lines
                .into_iter()
                .map(|l| if l.starts_with("console_vtermno: ") && l != "console_vtermno: 0" {
                    "console_vtermno: N".into()
                } else {
                    l
                })
                .collect())
        },
        rust_only: false,
        differential: true,
        timeout: 120,
    });

    // Data both ways, counters.
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.data")));
    v.push(Scenario {
        name: "data_both_ways",
        about: "guest->host and host->guest through a port; debugfs counters",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "vcg write w1 /dev/vport0p1 hello-from-guest\n",
            "vcg read r1 /dev/vport0p1 100\n",
            "dump after\n"
        ),
        host: |vm, _| {
            let mut s = vm.connect("p01")?;
            let w = vm.result("w1")?;
            expect_eq(&w, "ok 16", "guest write")?;
            let got = read_exact(&mut s, 16)?;
            expect_eq(&String::from_utf8_lossy(&got), "hello-from-guest", "host received")?;
            vm.result("r1-opened")?;
            s.write_all(b"hello-from-host").map_err(|e| e.to_string())?;
            expect_eq(&vm.result("r1")?, "ok 15 hello-from-host", "guest read")?;
            let lines = vm.block("after")?;
            expect_eq(&debugfs_value(&lines, "vport0p1", "bytes_sent").unwrap_or_default(), "16", "bytes_sent")?;
            expect_eq(&debugfs_value(&lines, "vport0p1", "bytes_received").unwrap_or_default(), "15", "bytes_received")?;
            expect_eq(&debugfs_value(&lines, "vport0p1", "name").unwrap_or_default(), "org.test.data", "name")?;
            Ok(lines)
        },
        rust_only: false,
        differential: true,
        timeout: 120,
    });

    // Errnos and poll masks.
    let mut q = serial(0);
    q.extend(console(0, 0, "con0"));
    q.extend(port(0, 1, "p01", None));
    q.extend(port(0, 2, "p02", None));
    v.push(Scenario {
        name: "file_semantics",
        about: "ENXIO on consoles, EBUSY on second open, EAGAIN, EOF, poll masks, discard on close",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p2\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "vcg open e1 /dev/vport0p0\n",
            "vcg open-twice e2 /dev/vport0p1\n",
            "vcg read e3 /dev/vport0p1 10 nonblock\n",
            "vcg read e4 /dev/vport0p2 10 nonblock\n",
            "vcg write e5 /dev/vport0p2 x nonblock\n",
            "vcg poll e6 /dev/vport0p1\n",
            "vcg poll e7 /dev/vport0p2\n",
            "vcg write e8 /dev/vport0p1 ''\n",
            "exec 3</dev/vport0p1\n",
            "echo '@@ host-send'\n",
            "until grep -q 'bytes_received: 5' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "exec 3<&-\n",
            "dump closed\n"
        ),
        host: |vm, _| {
            let mut s = vm.connect("p01")?;
            let mut out = Vec::new();
            for (tag, want) in [
                ("e1", "err ENXIO"),
                ("e2", "err EBUSY"),
                ("e3", "err EAGAIN"),
                ("e4", "ok 0 "),
                ("e5", "err EAGAIN"),
                ("e6", "mask OUT"),
                ("e7", "mask IN|HUP"),
                ("e8", "ok 0"),
            ] {
                let got = vm.result(tag)?;
                expect_eq(got.trim_end(), want.trim_end(), tag)?;
                out.push(format!("{tag} {got}"));
            }
            vm.result("host-send")?;
            // Data nobody read before the port was closed is dropped and counted.
            s.write_all(b"12345").map_err(|e| e.to_string())?;
            let lines = vm.block("closed")?;
            expect_eq(
                &debugfs_value(&lines, "vport0p1", "bytes_discarded").unwrap_or_default(),
                "5",
                "bytes_discarded",
            )?;
            out.extend(lines);
            Ok(out)
        },
        rust_only: false,
        differential: true,
        timeout: 120,
    });

    // Hotplug and unplug under a blocked reader.
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.base")));
    v.push(Scenario {
        name: "hotplug_unplug",
        about: "QMP device_add/device_del of a port, with a reader blocked on it",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\necho '@@ loaded'\n",
            "wait_for /dev/vport0p3\n",
            "wait_for /sys/class/virtio-ports/vport0p3/name\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p3; do sleep 0.1; done\n",
            "echo \"@@ plugged $(cat /sys/class/virtio-ports/vport0p3/name)\"\n",
            "vcg hold-read h1 /dev/vport0p3 &\n",
            "wait\n",
            "i=0; while [ -e /dev/vport0p3 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n",
            "echo \"@@ gone $(ls /dev | grep -c vport0p3)\"\n",
            "wait_for /dev/vport0p3\n",
            "echo '@@ replugged'\n",
            "dump final\n"
        ),
        host: |vm, _| {
            vm.result("loaded")?;
            let path = vm.dir.join("hot3.sock");
            vm.qmp(&format!(
                r#"{{"execute":"chardev-add","arguments":{{"id":"hot3","backend":{{"type":"socket","data":{{"addr":{{"type":"unix","data":{{"path":"{}"}}}},"server":true,"wait":false}}}}}}}}"#,
                path.display()
            ))?;
            vm.qmp(r#"{"execute":"device_add","arguments":{"driver":"virtserialport","bus":"vser0.0","nr":3,"chardev":"hot3","id":"dev-hot3","name":"org.test.hot"}}"#)?;
            // Connect the host end, so a read blocks instead of seeing end-of-file.
            let _host = vm.connect("hot3")?;
            expect_eq(&vm.result("plugged")?, "org.test.hot", "hotplugged name")?;
            vm.result("h1")?;
            std::thread::sleep(std::time::Duration::from_millis(300));
            vm.qmp(r#"{"execute":"device_del","arguments":{"id":"dev-hot3"}}"#)?;
            let mut out = Vec::new();
            for (tag, want) in [
                ("h1-read", "err ENODEV"),
                ("h1-read-again", "err ENODEV"),
                ("h1-write", "err ENODEV"),
                ("gone", "0"),
            ] {
                let got = vm.result(tag)?;
                expect_eq(&got, want, tag)?;
                out.push(format!("{tag} {got}"));
            }
            // Wait until QEMU has forgotten the old port before re-adding the id.
            std::thread::sleep(std::time::Duration::from_millis(500));
            vm.qmp(r#"{"execute":"device_add","arguments":{"driver":"virtserialport","bus":"vser0.0","nr":3,"chardev":"hot3","id":"dev-hot3b","name":"org.test.hot2"}}"#)?;
            vm.result("replugged")?;
            let lines = vm.block("final")?;
            check(lines.iter().any(|l| l == "sysfs vport0p3 name=org.test.hot2"), || {
                format!("re-plugged port name: {lines:?}")
            })?;
            out.extend(lines);
            Ok(out)
        },
        rust_only: false,
        differential: true,
        timeout: 150,
    });

    // The 2022 duplicate-vtermno report.
    let mut q = Vec::new();
    for d in 0..4u32 {
        q.extend(serial(d));
        q.extend(console(d, 0, &format!("c{d}")));
        q.extend(port(
            d,
            1,
            &format!("n{d}"),
            Some(&format!("org.test.dev{d}")),
        ));
    }
    v.push(Scenario {
        name: "vtermno_unique_and_recycled",
        about: "four devices with consoles: distinct vtermnos; an unplugged console's id is reused",
        qemu: q,
        guest: concat!(
            "load_driver\n",
            "for d in 0 1 2 3; do wait_for /sys/kernel/debug/virtio-ports/vport${d}p1; done\n",
            "sleep 1\n",
            "for d in 0 1 2 3; do echo \"@@ vt$d $(grep console_vtermno /sys/kernel/debug/virtio-ports/vport${d}p0 | cut -d' ' -f2)\"; done\n",
            "i=0; while [ -e /sys/kernel/debug/virtio-ports/vport1p0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n",
            "echo '@@ unplugged'\n",
            "wait_for /sys/kernel/debug/virtio-ports/vport2p2\n",
            "sleep 0.5\n",
            "echo \"@@ new $(grep console_vtermno /sys/kernel/debug/virtio-ports/vport2p2 | cut -d' ' -f2)\"\n"
        ),
        host: |vm, _| {
            let mut vts = Vec::new();
            for d in 0..4 {
                vts.push(vm.result(&format!("vt{d}"))?);
            }
            let mut sorted = vts.clone();
            sorted.sort();
            check(sorted == ["1", "2", "3", "4"], || format!("vtermnos must be 1..4, distinct: {vts:?}"))?;
            vm.qmp(r#"{"execute":"device_del","arguments":{"id":"dev-c1"}}"#)?;
            vm.result("unplugged")?;
            vm.qmp(r#"{"execute":"chardev-add","arguments":{"id":"cnew","backend":{"type":"null","data":{}}}}"#)?;
            vm.qmp(r#"{"execute":"device_add","arguments":{"driver":"virtconsole","bus":"vser2.0","nr":2,"chardev":"cnew","id":"dev-cnew"}}"#)?;
            let new = vm.result("new")?;
            expect_eq(&new, &vts[1], "the new console reuses the freed vtermno")?;
            // Which device gets which vtermno depends on probe order: nothing to compare.
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 150,
    });

    // Console I/O through hvc.
    let mut q = serial(0);
    q.extend(console(0, 0, "con0"));
    v.push(Scenario {
        name: "hvc_console_io",
        about: "output and input through /dev/hvc0",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/hvc0\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p0; do sleep 0.1; done\n",
            "echo hello-hvc > /dev/hvc0\n",
            "(head -c 9 /dev/hvc0 > /tmp/in) &\n",
            "sleep 1\necho '@@ listening'\n",
            "wait\necho \"@@ hvcin $(cat /tmp/in)\"\n"
        ),
        host: |vm, _| {
            let mut s = vm.connect("con0")?;
            // The tty layer turns "\n" into "\r\n" (ONLCR).
            let got = read_exact(&mut s, 11)?;
            expect_eq(&String::from_utf8_lossy(&got), "hello-hvc\r\n", "console output")?;
            vm.result("listening")?;
            s.write_all(b"from-host\n").map_err(|e| e.to_string())?;
            let got = vm.result("hvcin")?;
            expect_eq(&got, "from-host", "console input")?;
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 120,
    });

    // A device without VIRTIO_CONSOLE_F_MULTIPORT: QEMU offers it only when max_ports > 1.
    let mut q = vec![
        "-device".into(),
        "virtio-serial-pci,id=vser0,max_ports=1".into(),
    ];
    q.extend(console(0, 0, "con0"));
    v.push(Scenario {
        name: "single_port_console",
        about: "a device without MULTIPORT: port 0 is an hvc console at once; output, input, nodes, debugfs",
        qemu: q,
        guest: concat!(
            "load_driver
wait_for /dev/hvc0
wait_for /dev/vport0p0
",
            // Hold the tty open without echo, so bytes_sent counts only what we write (an echo
            // of the host's input races with head's close).
            "exec 4<>/dev/hvc0; stty -echo <&4\n",
            "echo single-port > /dev/hvc0\n",
            "(head -c 7 /dev/hvc0 > /tmp/in) &\n",
            "sleep 1\necho '@@ listening'\n",
            "wait\necho \"@@ hvcin $(cat /tmp/in)\"\n",
            "dump single\nexec 4<&-\n"
        ),
        host: |vm, _| {
            let mut s = vm.connect("con0")?;
            let got = read_exact(&mut s, 13)?;
            expect_eq(&String::from_utf8_lossy(&got), "single-port\r\n", "console output")?;
            vm.result("listening")?;
            s.write_all(b"typed!\n").map_err(|e| e.to_string())?;
            expect_eq(&vm.result("hvcin")?, "typed!", "console input")?;
            let mut out = vec![];
            let dump = vm.block("single")?;
            check(dump.iter().any(|l| l == "is_console: yes"), || format!("dump: {dump:?}"))?;
            check(dump.iter().any(|l| l == "vport0p0"), || format!("no /dev/vport0p0: {dump:?}"))?;
            out.extend(dump);
            Ok(out)
        },
        rust_only: false,
        differential: true,
        timeout: 120,
    });

    // System sleep: virtio-pci freezes and restores the device (s2idle, pm_test=devices).
    let mut q = serial(0);
    q.extend(console(0, 0, "con0"));
    q.extend(port(0, 1, "p01", Some("org.test.pm")));
    v.push(Scenario {
        name: "freeze_restore",
        about: "suspend and resume (freeze/restore) with a console and an open host end: ports, names, vtermno, data both ways and hvc output after it",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/hvc0\nwait_for /dev/vport0p1\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "echo before-sleep > /dev/hvc0\n",
            "echo devices > /sys/power/pm_test\n",
            "echo freeze > /sys/power/state; echo \"@@ slept $?\"\n",
            // QEMU answers the PORT_READY of the restore with the host end's state.
            "i=0; until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1 || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done\n",
            "echo \"@@ reconnected $(grep -c 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1)\"\n",
            "dump woken\n",
            // Without the host end a write would wait for ever (the C driver, see below).
            "if grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; then\n",
            "  echo after-sleep > /dev/hvc0\n",
            "  vcg send s1 /dev/vport0p1 1048576 7\n",
            "  vcg recv r1 /dev/vport0p1 1048576\n",
            "fi\n",
            "dump pm\n"
        ),
        host: |vm, driver| {
            const N: usize = 1 << 20;
            let mut con = vm.connect("con0")?;
            let mut s = vm.connect("p01")?;
            let got = read_exact(&mut con, 14)?;
            expect_eq(&String::from_utf8_lossy(&got), "before-sleep\r\n", "console before")?;
            let slept = vm.result("slept")?;
            expect_eq(&slept, "0", "echo freeze > /sys/power/state")?;
            let reconnected = vm.result("reconnected")?;
            let woken = vm.block("woken")?;
            if driver == Driver::C {
                // The 7.3 C driver refills the control receive queue only after announcing the
                // ports (PORT_READY), so QEMU finds no buffer for its answers and drops them:
                // every port stays "host closed" after a resume. Documented in README; this
                // fails once the C driver is fixed.
                expect_eq(&reconnected, "0", "C driver: host end state lost in the restore")?;
                let mut out = vec![format!("slept {slept}")];
                out.extend(vm.block("pm")?);
                return Ok(out);
            }
            expect_eq(&reconnected, "1", "host end connected again after the restore")
                .map_err(|e| format!("{e}; after the restore: {woken:?}"))?;
            let got = read_exact(&mut con, 13)?;
            expect_eq(&String::from_utf8_lossy(&got), "after-sleep\r\n", "console after")?;
            let got = read_exact(&mut s, N)?;
            let want = {
                let mut st = Stream(7);
                let mut b = vec![0u8; N];
                st.fill(&mut b);
                b
            };
            check(got == want, || "guest to host data after the sleep differs".into())?;
            expect_eq(&vm.result("s1")?, &format!("sent {N} {:016x}", fnv(FNV_INIT, &want)), "guest send")?;
            vm.result("r1")?;
            let mut st = Stream(9);
            let mut b = vec![0u8; N];
            st.fill(&mut b);
            s.write_all(&b).map_err(|e| e.to_string())?;
            expect_eq(&vm.result("r1")?, &format!("received {N} {:016x}", fnv(FNV_INIT, &b)), "guest received")?;
            let mut out = vec![format!("slept {slept}")];
            out.extend(vm.block("pm")?);
            Ok(out)
        },
        rust_only: false,
        differential: false,
        timeout: 180,
    });

    // Bulk integrity.
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.bulk")));
    v.push(Scenario {
        name: "bulk_64mib_each_way",
        about: "64 MiB guest->host and host->guest with checksums",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "vcg send s1 /dev/vport0p1 67108864 7\n",
            "vcg recv r1 /dev/vport0p1 67108864\n"
        ),
        host: |vm, _| {
            const N: usize = 64 << 20;
            let mut s = vm.connect("p01")?;
            let mut rs = s.try_clone().map_err(|e| e.to_string())?;
            let reader = std::thread::spawn(move || -> Res<(usize, u64)> {
                let mut h = FNV_INIT;
                let mut got = 0;
                let mut buf = vec![0u8; 1 << 16];
                while got < N {
                    let n = rs.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    h = fnv(h, &buf[..n]);
                    got += n;
                }
                Ok((got, h))
            });
            let (got, h) = reader.join().map_err(|_| "reader panicked")??;
            let mut want = FNV_INIT;
            let mut st = Stream(7);
            let mut buf = vec![0u8; 32768];
            let mut left = N;
            while left > 0 {
                let n = left.min(buf.len());
                st.fill(&mut buf[..n]);
                want = fnv(want, &buf[..n]);
                left -= n;
            }
            expect_eq(&vm.result("s1")?, &format!("sent {N} {want:016x}"), "guest send")?;
            expect_eq(&format!("{got} {h:016x}"), &format!("{N} {want:016x}"), "host received")?;
            vm.result("r1")?;
            let mut st = Stream(9);
            let mut h2 = FNV_INIT;
            let mut left = N;
            while left > 0 {
                let n = left.min(buf.len());
                st.fill(&mut buf[..n]);
                h2 = fnv(h2, &buf[..n]);
                s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                left -= n;
            }
            expect_eq(&vm.result("r1")?, &format!("received {N} {h2:016x}"), "guest received")?;
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 600,
    });

    // Module unload with an open file, and reload.
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.unload")));
    q.extend(console(0, 0, "con0"));
    v.push(Scenario {
        name: "module_unload_reload",
        about: "rmmod refused while a port is open, then unload and reload with ports present",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\nwait_for /sys/class/virtio-ports/vport0p1/name\n",
            "MOD=$(basename $KO .ko)\n",
            "exec 3</dev/vport0p1\n",
            "rmmod $MOD 2>/dev/null; echo \"@@ rmmod-open $?\"\n",
            "exec 3<&-\n",
            "rmmod $MOD; echo \"@@ rmmod $?\"\n",
            "echo \"@@ nodes-after $(ls /dev | grep -c vport)\"\n",
            "load_driver\nwait_for /dev/vport0p1\nwait_for /sys/class/virtio-ports/vport0p1/name\n",
            "echo \"@@ reloaded $(cat /sys/class/virtio-ports/vport0p1/name)\"\n",
            "wait_for /sys/kernel/debug/virtio-ports/vport0p0\nsleep 0.5\n",
            "dump reloaded\n",
            "rmmod $MOD; echo \"@@ rmmod2 $?\"\n"
        ),
        host: |vm, _| {
            let mut out = Vec::new();
            for (tag, want) in [
                ("rmmod-open", "1"),
                ("rmmod", "0"),
                ("nodes-after", "0"),
                ("reloaded", "org.test.unload"),
            ] {
                expect_eq(&vm.result(tag)?, want, tag)?;
            }
            // Compared between the drivers: the nodes, names and debugfs text after a reload.
            out.extend(vm.block("reloaded")?);
            expect_eq(&vm.result("rmmod2")?, "0", "rmmod2")?;
            Ok(out)
        },
        rust_only: false,
        differential: true,
        timeout: 120,
    });

    // The abstraction sample on another virtio device.
    v.push(Scenario {
        name: "sample_virtio_rng",
        about: "samples/rust/rust_virtio_rng binds virtio-rng-pci and reads entropy",
        qemu: vec!["-device".into(), "virtio-rng-pci".into()],
        guest: concat!(
            "insmod /lib/vcon/rust_virtio_rng.ko\n",
            "F=$(ls -d /sys/kernel/debug/rust_virtio_rng/virtio* | head -n1)\n",
            "cat $F >/dev/null; sleep 0.5\n",
            "echo \"@@ a $(cat $F | tr '\\n' ' ')\"\nsleep 0.5\n",
            "echo \"@@ b $(cat $F | tr '\\n' ' ')\"\n",
            "rmmod rust_virtio_rng; echo \"@@ rmmod $?\"\n"
        ),
        host: |vm, _| {
            let a = vm.result("a")?;
            let b = vm.result("b")?;
            let bytes = |s: &str| -> u64 {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            check(bytes(&a) >= 32, || format!("no entropy read: {a}"))?;
            check(bytes(&b) > bytes(&a), || {
                format!("no fresh entropy: {a} / {b}")
            })?;
            check(a.split("last: ").nth(1) != b.split("last: ").nth(1), || {
                format!("same block twice: {a} / {b}")
            })?;
            expect_eq(&vm.result("rmmod")?, "0", "rmmod")?;
            Ok(vec![])
        },
        rust_only: true,
        differential: false,
        timeout: 90,
    });

    v.push(stress());
    v.push(guest_agent());
    v.push(getty_login());
    v.push(udev_names());
    v.push(emergency_write());
    v.push(async_io::sigio());
    v.push(async_io::splice());
    v.push(async_io::splice_empty());
    v.extend(crate::scenarios_teardown::all());
    v.push(crate::scenarios_scale::scenario());
    v
}

/// The shell code every scenario script starts with.
pub fn prelude() -> &'static str {
    DUMP
}

/// Checks that `chunks` (what each connection of a host end received, in order) are pieces
/// of `sent` in order: each chunk is one or more runs of `sent`, each run starting after the
/// previous one ended (bytes may be lost between runs, never reordered, repeated or changed).
/// Returns the number of gaps (places where bytes were lost).
fn in_order_gaps(sent: &[u8], chunks: &[Vec<u8>]) -> Res<usize> {
    // A run's start is found by its first bytes; shorter tails must match where they start.
    const KEY: usize = 16;
    let mut at = 0usize;
    let mut gaps = 0;
    let mut seen = 0usize;
    for (c, chunk) in chunks.iter().enumerate() {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            let key = &rest[..rest.len().min(KEY)];
            let start = sent[at..]
                .windows(key.len())
                .position(|w| w == key)
                .map(|p| at + p)
                .ok_or_else(|| {
                    format!("connection {c}: byte {seen} received is not in the stream after offset {at}")
                })?;
            let same = sent[start..]
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if start > at {
                gaps += 1;
            }
            at = start + same;
            seen += same;
            rest = &rest[same..];
        }
    }
    Ok(gaps)
}

/// Stress: hotplug cycles under readers and writers, bulk data meanwhile, two threads on one
/// fd, the host end closing and reopening, and module reload cycles with files open.
pub fn stress() -> Scenario {
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.bulk")));
    q.extend(port(0, 3, "p03", Some("org.test.echo")));
    q.extend(port(0, 4, "p04", Some("org.test.flap")));
    Scenario {
        name: "stress",
        about: "200+ hotplug cycles under readers/writers with 1 GiB each way flowing, two threads on one fd, host reconnects, 50 rmmod/insmod cycles",
        qemu: q,
        guest: concat!(
            "load_driver\nfor p in 1 3 4; do wait_for /dev/vport0p$p; done\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p3; do sleep 0.1; done\n",
            "(while [ ! -e /tmp/stop ]; do vcg read r /dev/vport0p2 64 >/dev/null 2>&1; done) &\n",
            "(while [ ! -e /tmp/stop ]; do vcg write w /dev/vport0p2 data >/dev/null 2>&1; done) &\n",
            "(while [ ! -e /tmp/stop ]; do cat /sys/kernel/debug/virtio-ports/* >/dev/null 2>&1; done) &\n",
            // Paces the host: QEMU drops control messages when the guest has no buffer for
            // them, so a host that hotplugs faster than the guest follows loses PORT_REMOVEs.
            "(while [ ! -e /tmp/stop ]; do\n",
            "  until [ -e /dev/vport0p2 ] || [ -e /tmp/stop ]; do sleep 0.01; done; echo '@@ p2 up'\n",
            "  while [ -e /dev/vport0p2 ] && [ ! -e /tmp/stop ]; do sleep 0.01; done; echo '@@ p2 down'\n",
            "done) &\n",
            "echo '@@ cycle-go'\n",
            // Its result is printed last, whenever it ends, so the host reads them in order.
            "vcg duplex bulk /dev/vport0p1 1073741824 3 > /tmp/bulk.out & BULK=$!\n",
            "vcg twothreads tt /dev/vport0p3 4194304 13\n",
            "vcg send flap /dev/vport0p4 8388608 5\n",
            "wait $BULK; cat /tmp/bulk.out\n",
            "wait_for /dev/vport0p5\n",
            // Every loop ends by itself once its current call returns; a process still in
            // the driver after 10 s is stuck (the C driver can leave a writer asleep for ever
            // when an open races with unplug). Count them, then kill them so the reload
            // cycles below measure the module and not a leftover file.
            "touch /tmp/stop; i=0\n",
            "while [ $i -lt 100 ] && pidof vcg >/dev/null; do sleep 0.1; i=$((i+1)); done\n",
            "echo \"@@ stuck $(pidof vcg | wc -w)\"\n",
            "echo '@@BEGIN stuck-info'\n",
            "for p in $(pidof vcg); do echo \"pid $p: $(tr '\\0' ' ' </proc/$p/cmdline) in $(cat /proc/$p/wchan)\"; cat /proc/$p/stack 2>/dev/null; done\n",
            "echo \"nodes: $(ls /dev | grep vport | tr '\\n' ' ')\"\n",
            "for f in /sys/kernel/debug/virtio-ports/*; do echo \"$f: $(tr '\\n' ' ' <$f)\"; done\n",
            "echo '@@END stuck-info'\n",
            "killall -9 vcg 2>/dev/null; kill $(jobs -p) 2>/dev/null; wait\n",
            "echo \"@@ before-reload $(grep '^virtio_console' /proc/modules | cut -d' ' -f1,3) $(ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c vport)\"\n",
            "ok=0; refused=0; retries=0; most=0; MOD=$(basename $KO .ko)\n",
            "for i in $(seq 1 50); do\n",
            // The C driver creates the node a moment before the port can be opened: count
            // the failed opens (the host bounds them), and give up after 5 s.
            "  n=0; until (exec 3</dev/vport0p1) 2>/dev/null || [ $n -ge 100 ]; do sleep 0.05; n=$((n+1)); done\n",
            "  retries=$((retries+n)); [ $n -gt $most ] && most=$n\n",
            "  exec 3</dev/vport0p1\n",
            "  rmmod $MOD 2>/dev/null || refused=$((refused+1))\n",
            "  exec 3<&-\n",
            "  rmmod $MOD && load_driver && wait_for /dev/vport0p1 && ok=$((ok+1))\n",
            "done\n",
            "echo \"@@ reload $ok $refused\"\n",
            "echo \"@@ reopen-retries $retries $most\"\n"
        ),
        host: |vm, driver| {
            use std::time::Duration;
            let bulk = vm.connect("p01")?;
            let echo = vm.connect("p03")?;
            let flap_path = vm.dir.join("p04.sock");
            // Echo service for the two-thread test.
            std::thread::spawn(move || {
                let mut w = match echo.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                let mut r = echo;
                let mut b = vec![0u8; 65536];
                while let Ok(n) = r.read(&mut b) {
                    if n == 0 || w.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
            // 1 GiB each way through one port, both checksummed: a sink and a writer.
            const BULK: usize = 1 << 30;
            let mut bulk_w = bulk.try_clone().map_err(|e| e.to_string())?;
            let source = std::thread::spawn(move || {
                let mut st = Stream(11);
                let mut h = FNV_INIT;
                let mut buf = vec![0u8; 32768];
                let mut left = BULK;
                while left > 0 {
                    let n = left.min(buf.len());
                    st.fill(&mut buf[..n]);
                    h = fnv(h, &buf[..n]);
                    if bulk_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    left -= n;
                }
                (BULK - left, h)
            });
            let sink = std::thread::spawn(move || {
                let mut r = bulk;
                let mut h = FNV_INIT;
                let mut got = 0usize;
                let mut b = vec![0u8; 65536];
                while got < BULK {
                    match r.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            h = fnv(h, &b[..n]);
                            got += n;
                        }
                    }
                }
                (got, h)
            });
            // The flapping host end: connect, read a little, close, again, until 8 MiB.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let flap = std::thread::spawn(move || {
                // What each connection received, in order.
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                let mut reconnects = 0;
                let deadline = std::time::Instant::now() + Duration::from_secs(300);
                while !stop2.load(std::sync::atomic::Ordering::Relaxed)
                    && std::time::Instant::now() < deadline
                {
                    if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&flap_path) {
                        reconnects += 1;
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut b = vec![0u8; 65536];
                        let mut here = Vec::new();
                        while here.len() < 256 << 10 {
                            match s.read(&mut b) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => here.extend_from_slice(&b[..n]),
                            }
                        }
                        chunks.push(here);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                (chunks, reconnects)
            });
            vm.result("cycle-go")?;
            // At least 200 cycles, and on until the bulk transfer is over. Each waits for the
            // guest to see the port come and go (QEMU drops control messages the guest has no
            // buffer for, so a host running further ahead loses some, whatever the driver).
            let mut cycles = 0;
            let paced = |vm: &mut Vm, i: u32, want: &str| -> Res<()> {
                let got = vm.result_keeping_others("p2", Duration::from_secs(20))?;
                check(got == want, || format!("cycle {i}: port 2 {got}, want {want}"))
            };
            for i in 0..20_000 {
                if i >= 200 && sink.is_finished() && source.is_finished() {
                    break;
                }
                cycles += 1;
                vm.qmp(&format!(
                    r#"{{"execute":"chardev-add","arguments":{{"id":"s{i}","backend":{{"type":"null","data":{{}}}}}}}}"#
                ))?;
                vm.qmp(&format!(
                    r#"{{"execute":"device_add","arguments":{{"driver":"virtserialport","bus":"vser0.0","nr":2,"chardev":"s{i}","id":"sp{i}","name":"org.test.cycle"}}}}"#
                ))?;
                paced(vm, i, "up")?;
                std::thread::sleep(Duration::from_millis(15));
                vm.qmp(&format!(r#"{{"execute":"device_del","arguments":{{"id":"sp{i}"}}}}"#))?;
                paced(vm, i, "down")?;
                let _ = vm.qmp(&format!(r#"{{"execute":"chardev-remove","arguments":{{"id":"s{i}"}}}}"#));
            }
            let mut want = FNV_INIT;
            let mut st = Stream(3);
            let mut buf = vec![0u8; 32768];
            let mut left = BULK;
            while left > 0 {
                let n = left.min(buf.len());
                st.fill(&mut buf[..n]);
                want = fnv(want, &buf[..n]);
                left -= n;
            }
            expect_eq(
                &vm.result("tt")?,
                "wrote 4194304 read 4194304 differs-at none write-err none read-err none",
                "two threads on one fd, the stream 13 echoed",
            )?;
            let flap_result = vm.result("flap")?;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            const FLAP: usize = 8 << 20;
            let mut flap_stream = vec![0u8; FLAP];
            Stream(5).fill(&mut flap_stream);
            // The writes' return values add up to all of it, and the checksum is the stream's.
            expect_eq(
                &flap_result,
                &format!("sent {FLAP} {:016x}", fnv(FNV_INIT, &flap_stream)),
                "flapping port, guest side",
            )?;
            let (chunks, reconnects) = flap.join().map_err(|_| "flap panicked")?;
            let fgot: usize = chunks.iter().map(Vec::len).sum();
            check(reconnects > 1 && fgot > 0, || format!("host reconnects {reconnects}, {fgot} bytes"))?;
            let gaps = in_order_gaps(&flap_stream, &chunks)
                .map_err(|e| format!("flapping port, what the host received: {e}"))?;
            let (put, hput) = source.join().map_err(|_| "source panicked")?;
            check(put == BULK, || format!("host wrote only {put} of {BULK} bytes"))?;
            expect_eq(
                &vm.result("bulk")?,
                &format!("sent {BULK} {want:016x} received {BULK} {hput:016x}"),
                "bulk, guest side",
            )?;
            let (got, h) = sink.join().map_err(|_| "sink panicked")?;
            expect_eq(&format!("{got} {h:016x}"), &format!("{BULK} {want:016x}"), "bulk received by the host")?;
            // Tell the guest the cycles are over: a port it waits for.
            vm.qmp(r#"{"execute":"chardev-add","arguments":{"id":"done","backend":{"type":"null","data":{}}}}"#)?;
            vm.qmp(r#"{"execute":"device_add","arguments":{"driver":"virtserialport","bus":"vser0.0","nr":5,"chardev":"done","id":"dev-done"}}"#)?;
            let stuck = vm.result("stuck")?;
            let info = vm.block("stuck-info")?;
            if driver == Driver::Rust {
                check(stuck == "0", || {
                    format!("{stuck} process(es) left asleep in the driver after the cycles:\n      {}", info.join("\n      "))
                })?;
            } else if stuck != "0" {
                println!("    note: {stuck} process(es) left asleep in the C driver after the cycles:");
                for l in &info {
                    println!("      {l}");
                }
            }
            let reload = vm.result("reload")?;
            expect_eq(&reload, "50 50", "reload cycles ok / rmmod refused with a file open")?;
            let retries = vm.result("reopen-retries")?;
            let (total, most) = retries
                .split_once(' ')
                .and_then(|(t, m)| Some((t.parse::<u32>().ok()?, m.parse::<u32>().ok()?)))
                .ok_or_else(|| format!("reopen-retries {retries:?}"))?;
            // A node that cannot be opened 0.5 s after it appeared is a fault, not a moment.
            check(most <= 10, || {
                format!("after a reload, an open of the new node failed {most} times in a row (50 ms apart); {total} in all")
            })?;
            println!("    stress: {cycles} hotplug cycles, 1 GiB each way checked, 4 MiB two-thread echo checked, {fgot} of 8 MiB received in order with {gaps} gap(s) over {reconnects} host reconnects, 50 reloads ({total} failed opens of a fresh node, at most {most} in a row)");
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 600,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str) -> Res<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for ch in s.bytes() {
        let v = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\\' | b'\n' => continue,
            _ => return Err(format!("bad base64 byte {ch}")),
        };
        acc = acc << 6 | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

/// One QMP-style request to qemu-guest-agent and its reply line.
fn qga(
    s: &mut std::os::unix::net::UnixStream,
    r: &mut impl std::io::BufRead,
    req: &str,
) -> Res<String> {
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(b"\n").map_err(|e| e.to_string())?;
    loop {
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .map_err(|e| format!("qga reply to {}: {e}", &req[..req.len().min(60)]))?;
        if n == 0 {
            return Err("qemu-ga closed the port".into());
        }
        let line = line.trim().trim_start_matches('\u{ff}').to_string();
        if line.contains("\"error\"") {
            return Err(format!(
                "qga error for {}: {line}",
                &req[..req.len().min(60)]
            ));
        }
        if line.contains("\"return\"") {
            return Ok(line);
        }
    }
}

/// The integer after `"key": `.
fn json_int(s: &str, key: &str) -> Option<u64> {
    let i = s.find(&format!("\"{key}\""))?;
    let rest = s[i + key.len() + 2..].trim_start_matches([':', ' ']);
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The string after `"key": "`.
fn json_str<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let i = s.find(&format!("\"{key}\""))?;
    let rest = s[i + key.len() + 2..]
        .trim_start_matches([':', ' '])
        .strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

pub fn guest_agent() -> Scenario {
    let mut q = serial(0);
    q.extend(port(0, 1, "qga", Some("org.qemu.guest_agent.0")));
    Scenario {
        name: "qemu_guest_agent",
        about: "Debian's qemu-ga over org.qemu.guest_agent.0: ping, info, osinfo, 1 MiB file round trip",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /sys/class/virtio-ports/vport0p1/name\n",
            "/usr/sbin/qemu-ga -m virtio-serial -p /dev/vport0p1 -t /tmp -l /tmp/qga.log &\n",
            "echo '@@ qga-started'\n",
            // The host hot-plugs port 2 once it has every answer: qemu-ga must live until then
            // (waiting for its own file instead raced with its last answers).
            "i=0; while [ ! -e /dev/vport0p2 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\n",
            "kill %1 2>/dev/null; wait\n",
            "echo \"@@ qga-end $(ls /tmp/qga-done 2>/dev/null)\"\n"
        ),
        host: |vm, _| {
            use std::io::BufReader;
            let mut s = vm.connect("qga")?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(60))).map_err(|e| e.to_string())?;
            let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
            vm.result("qga-started")?;
            let ping = qga(&mut s, &mut r, r#"{"execute":"guest-ping"}"#)?;
            check(ping.contains("\"return\": {}"), || format!("guest-ping: {ping}"))?;
            let info = qga(&mut s, &mut r, r#"{"execute":"guest-info"}"#)?;
            check(json_str(&info, "version").is_some(), || format!("guest-info: {}", &info[..info.len().min(200)]))?;
            let os = qga(&mut s, &mut r, r#"{"execute":"guest-get-osinfo"}"#)?;
            expect_eq(json_str(&os, "kernel-release").unwrap_or(""), "7.3.4", "guest-get-osinfo kernel-release")?;
            let open = qga(&mut s, &mut r, r#"{"execute":"guest-file-open","arguments":{"path":"/tmp/qga-file","mode":"w+"}}"#)?;
            let h = json_int(&open, "return").ok_or_else(|| format!("guest-file-open: {open}"))?;
            let mut data = vec![0u8; 1 << 20];
            Stream(11).fill(&mut data);
            let w = qga(
                &mut s,
                &mut r,
                &format!(r#"{{"execute":"guest-file-write","arguments":{{"handle":{h},"buf-b64":"{}"}}}}"#, b64_encode(&data)),
            )?;
            expect_eq(&json_int(&w, "count").unwrap_or(0).to_string(), "1048576", "guest-file-write count")?;
            qga(&mut s, &mut r, &format!(r#"{{"execute":"guest-file-seek","arguments":{{"handle":{h},"offset":0,"whence":"set"}}}}"#))?;
            let mut back = Vec::new();
            while back.len() < data.len() {
                let rd = qga(&mut s, &mut r, &format!(r#"{{"execute":"guest-file-read","arguments":{{"handle":{h},"count":1048576}}}}"#))?;
                let chunk = b64_decode(json_str(&rd, "buf-b64").unwrap_or(""))?;
                if chunk.is_empty() {
                    break;
                }
                back.extend(chunk);
            }
            check(back == data, || format!("file read back differs ({} bytes)", back.len()))?;
            qga(&mut s, &mut r, &format!(r#"{{"execute":"guest-file-close","arguments":{{"handle":{h}}}}}"#))?;
            // A file the guest lists at the end, then port 2 to tell it we are done.
            let done = qga(&mut s, &mut r, r#"{"execute":"guest-file-open","arguments":{"path":"/tmp/qga-done","mode":"w"}}"#)?;
            let h2 = json_int(&done, "return").ok_or("open qga-done")?;
            qga(&mut s, &mut r, &format!(r#"{{"execute":"guest-file-close","arguments":{{"handle":{h2}}}}}"#))?;
            vm.qmp(r#"{"execute":"chardev-add","arguments":{"id":"end","backend":{"type":"null","data":{}}}}"#)?;
            vm.qmp(r#"{"execute":"device_add","arguments":{"driver":"virtserialport","bus":"vser0.0","nr":2,"chardev":"end","id":"port-end"}}"#)?;
            expect_eq(&vm.result("qga-end")?, "/tmp/qga-done", "guest saw the end")?;
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 180,
    }
}

/// Reads from `s` until `pat` appears; returns everything read.
/// Waits (60 s at most) until the file a QEMU `file` chardev writes holds `pat`; returns its
/// text.
fn read_file_until(path: &std::path::Path, pat: &str, what: &str) -> Res<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).to_string();
        if text.contains(pat) {
            return Ok(text);
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("{what}: {pat:?} never came; got {text:?}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn read_until(s: &mut std::os::unix::net::UnixStream, pat: &str, what: &str) -> Res<String> {
    let mut acc = Vec::new();
    let mut b = [0u8; 512];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    s.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    while std::time::Instant::now() < deadline {
        match s.read(&mut b) {
            Ok(0) => break,
            Ok(n) => acc.extend_from_slice(&b[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e.to_string()),
        }
        let text = String::from_utf8_lossy(&acc);
        if text.contains(pat) {
            return Ok(text.to_string());
        }
    }
    Err(format!(
        "{what}: {pat:?} never came; got {:?}",
        String::from_utf8_lossy(&acc)
    ))
}

pub fn getty_login() -> Scenario {
    let mut q = serial(0);
    q.extend(console(0, 0, "con0"));
    Scenario {
        name: "getty_login_hvc0",
        about: "busybox getty on /dev/hvc0: the host logs in over the console port and runs a command",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/hvc0\n",
            "mkdir -p /etc /root\n",
            "echo 'root::0:0:root:/root:/bin/sh' > /etc/passwd\n",
            "echo 'root:x:0:' > /etc/group\n",
            "setsid getty -L 115200 hvc0 vt100 &\n",
            "echo '@@ getty-started'\n",
            "i=0; while [ ! -e /tmp/login-done ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n",
            "echo \"@@ login-end $(cat /tmp/login-done 2>/dev/null)\"\n"
        ),
        host: |vm, _| {
            let mut s = vm.connect("con0")?;
            vm.result("getty-started")?;
            // getty may have printed its prompt before we connected: poke it.
            s.write_all(b"\n").map_err(|e| e.to_string())?;
            read_until(&mut s, "login:", "getty prompt")?;
            s.write_all(b"root\n").map_err(|e| e.to_string())?;
            read_until(&mut s, "#", "shell prompt")?;
            s.write_all(b"echo HELLO-$((6*7)); id -u > /tmp/login-done\n").map_err(|e| e.to_string())?;
            read_until(&mut s, "HELLO-42", "command output")?;
            expect_eq(&vm.result("login-end")?, "0", "logged in as root")?;
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 180,
    }
}

pub fn udev_names() -> Scenario {
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.udev")));
    q.extend(port(0, 2, "p02", None));
    Scenario {
        name: "udev_virtio_ports_links",
        about: "systemd-udevd (Debian 12) with the stock rule makes /dev/virtio-ports/<name>, also for a hotplugged port",
        qemu: q,
        guest: concat!(
            "mkdir -p /run/udev /etc/udev\n",
            "/lib/systemd/systemd-udevd --daemon\n",
            "udevadm trigger --action=add; udevadm settle\n",
            "load_driver\nwait_for /dev/vport0p2\n",
            "wait_for /dev/virtio-ports/org.test.udev\n",
            "echo \"@@ link $(readlink /dev/virtio-ports/org.test.udev)\"\n",
            "echo \"@@ links $(ls /dev/virtio-ports | tr '\\n' ' ')\"\n",
            "echo '@@ plug'\n",
            "wait_for /dev/virtio-ports/org.test.late\n",
            "echo \"@@ hotlink $(readlink /dev/virtio-ports/org.test.late)\"\n",
            "udevadm control --exit 2>/dev/null\n"
        ),
        host: |vm, _| {
            expect_eq(&vm.result("link")?, "../vport0p1", "symlink of the named port")?;
            expect_eq(vm.result("links")?.trim(), "org.test.udev", "only named ports get links")?;
            vm.result("plug")?;
            vm.qmp(r#"{"execute":"chardev-add","arguments":{"id":"late","backend":{"type":"null","data":{}}}}"#)?;
            vm.qmp(r#"{"execute":"device_add","arguments":{"driver":"virtserialport","bus":"vser0.0","nr":3,"chardev":"late","id":"dev-late","name":"org.test.late"}}"#)?;
            expect_eq(&vm.result("hotlink")?, "../vport0p3", "symlink of the hotplugged port")?;
            Ok(vec![])
        },
        rust_only: false,
        differential: false,
        timeout: 180,
    }
}

/// What a scenario's host side returns when the guest panics on purpose.
pub const PANIC_EXPECTED: &str = "@@panic-expected";

pub fn emergency_write() -> Scenario {
    let mut q = serial(0);
    // The console's host end is a file, not a socket: QEMU hands each emerg_wr byte to the
    // chardev at once and drops what it cannot take right then, and a Unix socket whose reader
    // is slow to run (a loaded host) stops taking one-byte writes after a few hundred of them,
    // so a socket would lose bytes that the guest sent. A file takes every byte.
    q.extend([
        "-chardev".to_string(),
        "file,id=con0,path=@DIR@/con0.out".to_string(),
        "-device".to_string(),
        "virtconsole,bus=vser0.0,chardev=con0,nr=0,id=dev-con0".to_string(),
    ]);
    q.extend(port(0, 1, "p01", None));
    Scenario {
        name: "emergency_write_panic",
        about: "VIRTIO_CONSOLE_F_EMERG_WRITE: a panic's log reaches the host through emerg_wr",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\nsleep 0.5\n",
            "echo 30 > /proc/sys/kernel/panic\necho '@@ panicking'\n",
            "echo c > /proc/sysrq-trigger\n"
        ),
        host: |vm, _| {
            vm.result("panicking")?;
            // The crash is the one asked for (the harness also checks the kernel log before
            // and after this line: no trouble but the panic itself).
            vm.wait_line("the sysrq line on the serial console", |l| {
                l.contains(crate::vm::SYSRQ_CRASH).then_some(())
            })?;
            // The newest 1 KiB of the log: the panic message, or with a verbose (debug) kernel
            // the end of the panic report.
            let got = read_file_until(
                &vm.dir.join("con0.out"),
                "Kernel Offset: disabled",
                "panic text on the console port",
            )?;
            check(got.contains("Kernel panic") || got.contains("RIP:"), || {
                format!("no panic report in {got:?}")
            })?;
            // What came through emerg_wr is the newest part of the kernel log: from the sysrq
            // line on (or from its first whole line, when a debug kernel's longer report
            // leaves only its end in the 1 KiB) it is, line for line, what the serial console
            // printed up to the end of the panic report (the serial console shows no
            // KERN_INFO lines, so earlier lines cannot be compared).
            vm.wait_line("the end of the panic report on the serial console", |l| {
                l.contains("Kernel Offset: disabled").then_some(())
            })?;
            let kernel: Vec<String> = vm
                .log_lines()
                .into_iter()
                .map(|l| l.trim_end().to_string())
                .filter(|l| l.starts_with('['))
                .collect();
            let end = kernel
                .iter()
                .position(|l| l.contains("Kernel Offset: disabled"))
                .ok_or("no end of the panic report on the serial console")?;
            let lines: Vec<&str> = got.lines().skip(1).map(str::trim_end).collect();
            let from = lines
                .iter()
                .position(|l| l.contains(crate::vm::SYSRQ_CRASH))
                .unwrap_or(0);
            let tail = &lines[from..];
            check(
                !tail.is_empty()
                    && end + 1 >= tail.len()
                    && kernel[end + 1 - tail.len()..=end] == tail[..],
                || format!("emerg_wr sent {tail:?}, not the end of the kernel log"),
            )?;
            Ok(vec![PANIC_EXPECTED.into()])
        },
        rust_only: true,
        differential: false,
        timeout: 120,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_in_order_with_gaps() {
        let mut sent = vec![0u8; 4096];
        Stream(5).fill(&mut sent);
        let c = |r: std::ops::Range<usize>| sent[r].to_vec();
        assert_eq!(in_order_gaps(&sent, &[c(0..100), c(100..300)]), Ok(0));
        assert_eq!(
            in_order_gaps(&sent, &[c(0..100), vec![], c(200..4096)]),
            Ok(1)
        );
        assert_eq!(
            in_order_gaps(&sent, &[[c(0..100), c(150..160)].concat()]),
            Ok(1)
        );
        assert_eq!(
            in_order_gaps(&sent, &[c(10..20), c(30..40), c(50..60)]),
            Ok(3)
        );
        // Reordered, repeated or changed bytes fail.
        assert!(in_order_gaps(&sent, &[c(200..300), c(0..100)]).is_err());
        assert!(in_order_gaps(&sent, &[c(0..100), c(50..150)]).is_err());
        let mut bad = c(0..300);
        bad[150] ^= 1;
        assert!(in_order_gaps(&sent, &[bad]).is_err());
    }

    #[test]
    fn base64_round_trip() {
        assert_eq!(b64_encode(b"foob"), "Zm9vYg==");
        for n in 0..10 {
            let d: Vec<u8> = (0..n).map(|i: u8| i.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(&b64_encode(&d)).unwrap(), d);
        }
        assert_eq!(json_int(r#"{"return": 1000}"#, "return"), Some(1000));
        assert_eq!(
            json_str(r#"{"a": "x", "kernel-release": "7.3.4"}"#, "kernel-release"),
            Some("7.3.4")
        );
    }
}
