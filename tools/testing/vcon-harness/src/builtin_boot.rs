//! The built-in boot: a kernel with both drivers built in (`make kernel-builtin`), one of them
//! kept from running by `initcall_blacklist=`, booted with `console=hvc0` and no serial
//! console. The host end of the virtconsole must get the kernel's messages from the first
//! line (those logged before the device was probed are replayed, none lost), then init's
//! output, and a login on `hvc0` must work. Init talks to the harness on the serial port.

use crate::scenarios::Driver;
use crate::vm::{Res, Vm, VmConfig};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const NAME: &str = "builtin_console_hvc0";

/// The driver name a device binds to, and the init function `initcall_blacklist=` names to
/// keep the driver from registering (the Rust one is what `module!` emits for a built-in
/// module: `__<name>_init`).
fn driver_facts(d: Driver) -> (&'static str, &'static str) {
    match d {
        Driver::C => ("virtio_console", "virtio_console_init"),
        Driver::Rust => ("virtio_console_rs", "__virtio_console_rs_init"),
    }
}

/// How much of the boot log each driver's console gets (see [`Replay`]).
fn replay_of(d: Driver) -> Replay {
    match d {
        Driver::C => Replay::BeforeInit,
        Driver::Rust => Replay::Whole,
    }
}

fn other(d: Driver) -> Driver {
    match d {
        Driver::C => Driver::Rust,
        Driver::Rust => Driver::C,
    }
}

const GUEST: &str = r#"
bound=""
for d in /sys/bus/virtio/devices/*; do bound="$bound $(basename "$(readlink $d/driver)")"; done
echo "@@ bound$bound"
echo "@@ registered $(ls /sys/bus/virtio/drivers | tr '\n' ' ')"
echo "@@ dropped $(cat /sys/class/virtio-ports/vport0p0/console_dropped_bytes 2>/dev/null || echo -)"
echo "@@BEGIN dmesg"
dmesg | sed 's/^/K /'
echo "@@END dmesg"
mkdir -p /etc /root
echo 'root::0:0:root:/root:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
setsid getty -L 115200 hvc0 vt100 &
echo '@@ getty-started'
i=0; while [ ! -e /tmp/login-done ] && [ $i -lt 900 ]; do sleep 0.1; i=$((i+1)); done
echo "@@ login-end $(cat /tmp/login-done 2>/dev/null)"
"#;

/// The command line of a boot of the built-in kernel with driver `d`.
pub fn cmdline(d: Driver) -> Vec<String> {
    vec![
        "console=hvc0".into(),
        format!("initcall_blacklist={}", driver_facts(other(d)).1),
        // Every message goes to the console, so all of dmesg must be there.
        "ignore_loglevel".into(),
        "kunit.enable=0".into(),
        format!("vcon_driver={}", d.name()),
        // init says hello on the console, then talks to the harness on ttyS0.
        "vcon_ctl=ttyS0".into(),
    ]
}

/// What the host end of the console has received so far.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<u8>>>);

impl Received {
    fn text(&self) -> String {
        let b = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&b).to_string()
    }

    /// Waits (60 s at most) until `pat` appears after byte `from`; returns where it ends.
    fn wait_for(&self, from: usize, pat: &str, what: &str) -> Res<usize> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.text();
            if let Some(at) = t.get(from..).and_then(|rest| rest.find(pat)) {
                return Ok(from + at + pat.len());
            }
            if Instant::now() >= deadline {
                let tail: String = t
                    .get(from..)
                    .unwrap_or("")
                    .chars()
                    .rev()
                    .take(300)
                    .collect();
                return Err(format!(
                    "{what}: {pat:?} never came on hvc0 (last bytes reversed: {tail:?})"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where the console's copy of the kernel log must start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Replay {
    /// From `Linux version`: what was logged before the device was probed is replayed.
    Whole,
    /// From some line before init starts (`Run /init as init process`). The C driver's
    /// replay is lost: `hvc_alloc()` registers the console and prints the backlog through
    /// `put_chars()` before `init_port_console()` has put the port on the list that
    /// `put_chars()` looks the vtermno up in, so every line printed until then (the backlog
    /// and whatever other CPUs log meanwhile) gets -EPIPE; where that ends varies by run.
    BeforeInit,
}

/// Checks that the console got the lines of `dmesg` in order with none lost, from where
/// `replay` says on: the kernel lines of the console (those starting with `[`) are exactly
/// the lines of `dmesg` from that point.
pub fn replayed(console: &str, dmesg: &[String], replay: Replay) -> Res<()> {
    let first = dmesg.first().ok_or("the guest's dmesg is empty")?;
    if !first.contains("] Linux version ") {
        return Err(format!(
            "dmesg does not start with Linux version: {first:?}"
        ));
    }
    // The harness's serial reader drops trailing blanks (x86/PAT's line has some).
    let kernel: Vec<&str> = console
        .split('\n')
        .map(|l| l.trim_end())
        .filter(|l| l.starts_with('['))
        .collect();
    let head = *kernel.first().ok_or("no kernel line on the console")?;
    let start = match replay {
        Replay::Whole => {
            let lead = console.trim_start_matches(['\r', '\n']);
            if !lead.starts_with(first.trim_end()) {
                return Err(format!(
                    "the console does not start with dmesg's first line {first:?}: {:?}",
                    lead.lines().next()
                ));
            }
            0
        }
        Replay::BeforeInit => {
            let init = dmesg
                .iter()
                .position(|l| l.contains("] Run /init as init process"))
                .ok_or("no 'Run /init as init process' line in dmesg")?;
            let at = dmesg
                .iter()
                .position(|l| l.trim_end() == head)
                .ok_or_else(|| {
                    format!("the console's first kernel line {head:?} is not in dmesg")
                })?;
            if at > init {
                return Err(format!(
                    "the console starts at dmesg line {}, after init started (line {})",
                    at + 1,
                    init + 1
                ));
            }
            at
        }
    };
    for (i, want) in dmesg[start..].iter().enumerate() {
        match kernel.get(i) {
            Some(got) if *got == want.trim_end() => {}
            got => {
                return Err(format!(
                    "kernel line {} of {} differs on the console: got {got:?}, dmesg has {want:?}",
                    start + i + 1,
                    dmesg.len()
                ))
            }
        }
    }
    Ok(())
}

/// Boots the built-in kernel in `out` with driver `d` and runs the checks.
pub fn run(out: &Path, base_initrd: &Path, accel: crate::vm::Accel, d: Driver) -> Res<()> {
    let kernel = out.join("bzImage");
    if !kernel.exists() {
        return Err(format!(
            "{} is missing: run 'make kernel-builtin'",
            kernel.display()
        ));
    }
    let extra = crate::scenario_initrd(out, &format!("{NAME}-{}", d.name()), GUEST)?;
    // The console's host end is a pair of FIFOs (QEMU's `pipe` chardev), opened here before
    // QEMU starts so nothing the guest writes is missed. Not a Unix socket: QEMU stops taking
    // console output when a socket's send buffer is full, which a burst of short writes (the
    // replay, 16 bytes at a time) reaches after a few hundred of them if the harness is slow
    // to run, and the Rust driver then drops output (`console_dropped_bytes`) instead of
    // spinning. A FIFO holds 64 KiB, more than the whole boot log.
    let fifo_dir = out.join(format!("{NAME}-{}.fifo", d.name()));
    let _ = std::fs::remove_dir_all(&fifo_dir);
    std::fs::create_dir_all(&fifo_dir).map_err(|e| format!("{}: {e}", fifo_dir.display()))?;
    let base = fifo_dir.join("con0");
    let open_fifo = |suffix: &str| -> Res<std::fs::File> {
        let p = base.with_extension(suffix);
        let ok = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .map_err(|e| format!("mkfifo: {e}"))?
            .success();
        if !ok {
            return Err(format!("mkfifo {} failed", p.display()));
        }
        // Read and write: opening a FIFO so never waits for the other end.
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    let mut reader = open_fifo("out")?;
    let s = open_fifo("in")?;
    let mut qemu = crate::scenarios::serial(0);
    qemu.extend([
        "-chardev".to_string(),
        format!("pipe,id=con0,path={}", base.display()),
        "-device".to_string(),
        "virtconsole,bus=vser0.0,chardev=con0,nr=0,id=dev-con0".to_string(),
    ]);
    let cfg = VmConfig {
        kernel,
        initrds: vec![base_initrd.to_path_buf(), extra],
        cmdline: cmdline(d),
        qemu_args: qemu,
        accel,
        timeout: Duration::from_secs(240),
        mem: 512,
        machine: crate::vm::PC.into(),
        serial_console: false,
    };
    let rx = Received::default();
    let sink = rx.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        // The read end is also a write end, so no end-of-file comes: after the run this
        // thread stays blocked, one idle thread per boot, until the harness exits.
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 {
                break;
            }
            if let Ok(mut v) = sink.0.lock() {
                v.extend_from_slice(&b[..n]);
            }
        }
    });
    let mut vm = Vm::start(&cfg)?;
    let r = check(&mut vm, &rx, s, d);
    let (serial, done) = if r.is_ok() {
        vm.finish_keeping_log()
    } else {
        std::thread::sleep(Duration::from_millis(300));
        (vm.log_lines(), Ok(()))
    };
    let logs = out.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let _ = std::fs::write(
        logs.join(format!("{NAME}-{}.serial.log", d.name())),
        serial.join("\n"),
    );
    let _ = std::fs::write(
        logs.join(format!("{NAME}-{}.hvc0.log", d.name())),
        rx.text(),
    );
    let _ = std::fs::remove_dir_all(&fifo_dir);
    r?;
    done?;
    let trouble =
        crate::vm::kernel_trouble(&rx.text().lines().map(String::from).collect::<Vec<_>>());
    if !trouble.is_empty() {
        return Err(format!("kernel reported problems on hvc0: {trouble:?}"));
    }
    Ok(())
}

fn check(vm: &mut Vm, rx: &Received, mut s: std::fs::File, d: Driver) -> Res<()> {
    vm.wait_line("@@BOOTED", |l| (l.trim() == "@@BOOTED").then_some(()))?;
    let (want, _) = driver_facts(d);
    let (unwanted, _) = driver_facts(other(d));
    let bound = vm.result("bound")?;
    if bound.trim() != want {
        return Err(format!(
            "the console device is bound to {bound:?}, not {want}"
        ));
    }
    let registered = vm.result("registered")?;
    let names: Vec<&str> = registered.split_whitespace().collect();
    if !names.contains(&want) || names.contains(&unwanted) {
        return Err(format!(
            "registered virtio drivers {names:?}: want {want} and not {unwanted}"
        ));
    }
    // The Rust driver counts console output it dropped for a host that did not take it.
    let dropped = vm.result("dropped")?;
    let dmesg: Vec<String> = vm
        .block("dmesg")?
        .iter()
        .filter_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix("K ")
                .map(String::from)
        })
        .collect();
    let last = dmesg.last().ok_or("the guest's dmesg is empty")?;
    rx.wait_for(0, last, "the last line of dmesg")?;
    replayed(&rx.text(), &dmesg, replay_of(d))
        .map_err(|e| format!("{e} (console_dropped_bytes: {dropped})"))?;
    rx.wait_for(
        0,
        &format!("@@ init-on-console {}", d.name()),
        "init's output",
    )?;
    // A login on hvc0, as getty_login_hvc0 does with the module.
    vm.result("getty-started")?;
    let at = rx.text().len();
    s.write_all(b"\n").map_err(|e| e.to_string())?;
    let at = rx.wait_for(at, "login:", "getty prompt")?;
    s.write_all(b"root\n").map_err(|e| e.to_string())?;
    let at = rx.wait_for(at, "#", "shell prompt")?;
    s.write_all(b"echo HELLO-$((6*7)); id -u > /tmp/login-done\n")
        .map_err(|e| e.to_string())?;
    rx.wait_for(at, "HELLO-42", "command output")?;
    let end = vm.result("login-end")?;
    if end != "0" {
        return Err(format!("login-end {end:?}, want 0 (root)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_lost_or_late_line_is_caught() {
        let dmesg = v(&[
            "[    0.000000] Linux version 7.3.4",
            "[    0.1] a",
            "[    0.2] printk: legacy console [hvc0] enabled",
            "[    0.3] Run /init as init process",
        ]);
        let whole = "[    0.000000] Linux version 7.3.4\r\n[    0.1] a\r\n[    0.2] printk: legacy console [hvc0] enabled\r\n[    0.3] Run /init as init process\r\n@@ init\r\n";
        assert!(replayed(whole, &dmesg, Replay::Whole).is_ok());
        assert!(replayed(whole, &dmesg, Replay::BeforeInit).is_ok());
        // Init's lines are not kernel lines.
        let init_between = whole.replace("[    0.3]", "@@ x\r\n[    0.3]");
        assert!(replayed(&init_between, &dmesg, Replay::Whole).is_ok());
        // No replay: fine only if the console worked before init.
        let tail = "[    0.3] Run /init as init process\r\n";
        assert!(replayed(tail, &dmesg, Replay::Whole).is_err());
        assert!(replayed(tail, &dmesg, Replay::BeforeInit).is_ok());
        // One lost after the start, one out of order, a start after init.
        let lost = whole.replace("[    0.1] a\r\n", "");
        assert!(replayed(&lost, &dmesg, Replay::Whole).is_err());
        let lost_after = "[    0.2] printk: legacy console [hvc0] enabled\r\n\r\n";
        assert!(replayed(lost_after, &dmesg, Replay::BeforeInit).is_err());
        let swapped = "[    0.000000] Linux version 7.3.4\r\n[    0.2] printk: legacy console [hvc0] enabled\r\n[    0.1] a\r\n[    0.3] Run /init as init process\r\n";
        assert!(replayed(swapped, &dmesg, Replay::Whole).is_err());
        assert!(replayed("", &[], Replay::Whole).is_err());
        let late = v(&[
            "[    0.000000] Linux version 7.3.4",
            "[    0.1] a",
            "[    0.2] console [hvc0] enabled",
            "[    0.3] Run /init as init process",
            "[    0.4] c",
        ]);
        assert!(replayed("[    0.4] c\r\n", &late, Replay::BeforeInit).is_err());
    }
}
