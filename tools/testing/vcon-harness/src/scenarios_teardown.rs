//! Teardown scenarios: a console port that goes away while its tty is still in use.
//!
//! Kept apart from `scenarios.rs`; `scenarios::all()` appends [`all`].

use crate::scenarios::{console, port, serial, Driver, Scenario};
use crate::vm::{Res, Vm};

/// The guest script: a writer streaming to /dev/hvc0 (QEMU drops console output the host does
/// not read, so the stream never stalls) and a second process holding the tty open, when the
/// host unplugs the console port. The hvc core keeps polling the removed terminal until the
/// holder lets go.
const UNPLUG_UNDER_WRITER: &str = concat!(
    "load_driver\nwait_for /dev/hvc0\n",
    "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p0; do sleep 0.1; done\n",
    // Hold the tty open past the unplug, so its hvc_struct stays on the core's list.
    "sleep 6 < /dev/hvc0 &\n",
    // Far more than the run lasts: the writer is still writing when the port goes.
    "vcg send w1 /dev/hvc0 4000000000 7 &\n",
    "until grep -q '^bytes_sent: [1-9]' /sys/kernel/debug/virtio-ports/vport0p0; do sleep 0.1; done\n",
    "echo '@@ writing'\n",
    "i=0; while [ -e /sys/kernel/debug/virtio-ports/vport0p0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n",
    "echo \"@@ gone $(ls /sys/kernel/debug/virtio-ports | grep -c vport0p0)\"\n",
    // The holder still has the old tty open: let the hvc thread poll it for a while.
    "wait\n",
    "echo '@@ released'\n",
    "dump final\n"
);

fn unplug_under_writer(vm: &mut Vm, _: Driver) -> Res<Vec<String>> {
    // Connect and never read.
    let _host = vm.connect("con0")?;
    vm.result("writing")?;
    vm.qmp(r#"{"execute":"device_del","arguments":{"id":"dev-con0"}}"#)?;
    let mut out = Vec::new();
    // The writer's result and the script's may come in either order.
    let w1 = vm.result_keeping_others("w1", std::time::Duration::from_secs(120))?;
    let gone = vm.result("gone")?;
    if gone != "0" {
        return Err(format!("port still present after unplug: {gone}"));
    }
    out.push(format!("gone {gone}"));
    // The writer is hung up: its write fails (after however much it wrote before).
    if !w1.starts_with("err EIO after ") {
        return Err(format!(
            "writer after unplug: got {w1:?}, want \"err EIO after N\""
        ));
    }
    out.push("w1 err EIO".to_string());
    vm.result("released")?;
    let lines = vm.block("final")?;
    if lines.iter().any(|l| l.starts_with("== vport0p0")) {
        return Err(format!("debugfs still lists the port: {lines:?}"));
    }
    out.extend(lines);
    Ok(out)
}

/// The guest script: a process asks for SIGIO on a port, gets one when the host writes, and
/// closes the file with `O_ASYNC` still set; the host then writes again to a port whose signal
/// queue must no longer name the closed file.
const SIGIO_THEN_CLOSE: &str = concat!(
    "load_driver\nwait_for /dev/vport0p1\n",
    "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
    "vcg sigio-once s1 /dev/vport0p1\n",
    "echo '@@ again'\n",
    "sleep 2\n",
    "echo '@@ settled'\n",
    "dump final\n"
);

fn sigio_then_close(vm: &mut Vm, _: Driver) -> Res<Vec<String>> {
    use std::io::Write;
    let mut host = vm.connect("p1")?;
    vm.result("sigio-armed")?;
    host.write_all(b"ping").map_err(|e| e.to_string())?;
    let s1 = vm.result("s1")?;
    if s1 != "got" {
        return Err(format!(
            "SIGIO after a host write: got {s1:?}, want \"got\""
        ));
    }
    vm.result("s1-closed")?;
    vm.result("again")?;
    // The file is gone: this write must signal nobody (and touch no freed file).
    host.write_all(b"pong").map_err(|e| e.to_string())?;
    vm.result("settled")?;
    let mut out = vec![format!("s1 {s1}")];
    out.extend(vm.block("final")?);
    Ok(out)
}

pub fn all() -> Vec<Scenario> {
    // Port 1 stays, so the device outlives the console (QEMU keeps port 0 for a console).
    let mut q = serial(0);
    q.extend(console(0, 0, "con0"));
    q.extend(port(0, 1, "p1", None));
    vec![Scenario {
        name: "console_unplug_under_writer",
        about: "unplug a console port while a writer streams to /dev/hvc0 and another process holds the tty open",
        qemu: q,
        guest: UNPLUG_UNDER_WRITER,
        host: unplug_under_writer,
        rust_only: false,
        differential: true,
        timeout: 180,
    }, {
        let mut q: Vec<String> = vec!["-device".into(), "virtio-serial-pci,id=vser0".into()];
        q.push("-chardev".into());
        q.push("socket,id=p1,path=@DIR@/p1.sock,server=on,wait=off".into());
        q.push("-device".into());
        q.push("virtserialport,bus=vser0.0,chardev=p1,nr=1,id=dev-p1".into());
        Scenario {
            name: "sigio_then_close",
            about: "O_ASYNC on a port: SIGIO on host data; closing with O_ASYNC set leaves no stale signal target",
            qemu: q,
            guest: SIGIO_THEN_CLOSE,
            host: sigio_then_close,
            rust_only: false,
            differential: true,
            timeout: 120,
        }
    }]
}
