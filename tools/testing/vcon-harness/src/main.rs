//! `vcon-harness`: boots QEMU guests to test `virtio_console_rs` against the C reference.
//!
//! ```text
//! vcon-harness test  [--driver rust|c|both] [--only NAME] [--no-kunit]   run the test suite
//! vcon-harness kunit                                                     KUnit only
//! vcon-harness run   [--driver rust|c]                                   the demo guest
//! vcon-harness list                                                      list scenarios
//! ```
//!
//! Paths come from the environment: `VCON_OUT` (bzImage and modules), `VCON_VCG` (the static
//! guest tool), `VCON_CACHE` (where the accelerator probe is remembered).

mod bench;
mod builtin_boot;
mod initramfs;
mod ktap;
mod profile;
mod scenarios;
mod scenarios_scale;
mod scenarios_teardown;
mod selftest;
mod transport;
mod vm;

use scenarios::{Driver, Scenario};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use transport::Transport;
use vm::{Accel, Res, Vm, VmConfig};

struct Env {
    out: PathBuf,
    base_initrd: PathBuf,
    accel: Accel,
    /// Prefix of test names ("" or "debug:").
    label: String,
    /// Extra kernel command-line words of this profile.
    cmdline: Vec<String>,
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /tmp
# The built-in boot (console=hvc0): a line on the console, then the harness's lines go to
# the serial port.
if [ -n "$vcon_ctl" ]; then
    echo "@@ init-on-console $vcon_driver"
    exec >"/dev/$vcon_ctl" 2>&1
fi
case "$vcon_driver" in
c) KO=/lib/vcon/virtio_console.ko ;;
*) KO=/lib/vcon/virtio_console_rs.ko ;;
esac
export KO
load_driver() { insmod $KO; }
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
}
# Under the debug profile, forget what boot left for kmemleak and report what the run leaks.
if [ -e /sys/kernel/debug/kmemleak ]; then
    echo scan > /sys/kernel/debug/kmemleak
    echo clear > /sys/kernel/debug/kmemleak
fi
echo "@@cmdline $(cat /proc/cmdline)"
echo "@@BOOTED"
if [ -f /scenario.sh ]; then . /scenario.sh; fi
if [ -e /sys/kernel/debug/kmemleak ]; then
    # kmemleak reports only objects older than 5 s (MSECS_MIN_AGE): wait that out, so what
    # the last seconds leaked (the final rmmod) is reported too.
    sleep 6
    echo scan > /sys/kernel/debug/kmemleak
    echo scan > /sys/kernel/debug/kmemleak
    cat /sys/kernel/debug/kmemleak | head -n 60
    echo "@@ kmemleak-scanned"
fi
echo "@@DONE"
if [ "$vcon_shell" = 1 ]; then setsid cttyhack sh; fi
reboot -f
"#;

fn out_dir() -> PathBuf {
    std::env::var_os("VCON_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("out"))
}

fn cache_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("VCON_CACHE") {
        return PathBuf::from(c);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"))
        .join("virtio-console-rs")
}

/// Builds the base initramfs: busybox, the guest tool, init and the modules.
fn build_base(out: &Path) -> Res<PathBuf> {
    let mut c = initramfs::Cpio::default();
    for d in [
        "bin", "sbin", "dev", "proc", "sys", "tmp", "root", "lib", "lib/vcon",
    ] {
        c.dir(d);
    }
    let busybox = std::fs::read("/bin/busybox")
        .map_err(|e| format!("/bin/busybox: {e} (apt-get install busybox-static)"))?;
    c.file("bin/busybox", 0o755, &busybox);
    c.symlink("bin/sh", "busybox");
    let vcg_path = std::env::var_os("VCON_VCG")
        .map(PathBuf::from)
        .ok_or("VCON_VCG is not set")?;
    let vcg = std::fs::read(&vcg_path).map_err(|e| format!("{}: {e}", vcg_path.display()))?;
    c.file("bin/vcg", 0o755, &vcg);
    c.file("init", 0o755, INIT.as_bytes());
    add_qemu_ga(&mut c)?;
    for ko in [
        "virtio_console_rs.ko",
        "virtio_console.ko",
        "rust_virtio_rng.ko",
    ] {
        let p = out.join(ko);
        let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        c.file(&format!("lib/vcon/{ko}"), 0o644, &data);
    }
    let path = out.join("initramfs-base.cpio");
    std::fs::write(&path, c.finish()).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Adds the words of `VCON_CMDLINE` (for example `slub_debug=FZPU` for the debug profile).
fn with_extra_cmdline(env: &Env, mut v: Vec<String>) -> Vec<String> {
    v.extend(env.cmdline.iter().cloned());
    if let Ok(extra) = std::env::var("VCON_CMDLINE") {
        v.extend(extra.split_whitespace().map(String::from));
    }
    v
}

/// Adds the directories leading to `path` (relative, no leading `/`).
fn add_parents(c: &mut initramfs::Cpio, path: &str) {
    let mut d = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        if !d.is_empty() {
            d.push('/');
        }
        d.push_str(part);
        if !["bin", "sbin", "lib", "tmp", "dev", "proc", "sys", "root"].contains(&d.as_str()) {
            c.dir(&d);
        }
    }
}

/// Adds a dynamically linked program at `dest` and the shared libraries `ldd` finds for it
/// (looking in `extra_libs` too), each at the path the loader will look for it.
fn add_program(
    c: &mut initramfs::Cpio,
    src: &Path,
    dest: &str,
    extra_libs: Option<&Path>,
) -> Res<()> {
    let mut cmd = std::process::Command::new("ldd");
    cmd.arg(src);
    if let Some(l) = extra_libs {
        cmd.env("LD_LIBRARY_PATH", l);
    }
    let out = cmd.output().map_err(|e| format!("ldd: {e}"))?;
    let mut files = vec![(src.to_path_buf(), dest.to_string())];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            let p = PathBuf::from(p);
            // Libraries found through `extra_libs` go to the standard directory.
            let dest = if extra_libs.is_some_and(|l| p.starts_with(l)) {
                format!(
                    "lib/x86_64-linux-gnu/{}",
                    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
                )
            } else {
                p.to_string_lossy().trim_start_matches('/').to_string()
            };
            files.push((p, dest));
        }
    }
    for (src, dest) in files {
        let data = std::fs::read(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        add_parents(c, &dest);
        c.file(&dest, 0o755, &data);
    }
    Ok(())
}

/// Adds Debian's qemu-guest-agent, and systemd-udevd with the stock `50-udev-default.rules`
/// (unpacked by set-up), with their libraries.
fn add_qemu_ga(c: &mut initramfs::Cpio) -> Res<()> {
    let bin = Path::new("/usr/sbin/qemu-ga");
    if !bin.exists() {
        return Err("/usr/sbin/qemu-ga is missing (apt-get install qemu-guest-agent)".into());
    }
    add_program(c, bin, "usr/sbin/qemu-ga", None)?;
    c.dir("etc");
    if let Ok(os) = std::fs::read("/etc/os-release") {
        c.file("etc/os-release", 0o644, &os);
    }
    let udev = cache_dir().join("udev/root");
    if !udev.join("bin/udevadm").exists() {
        return Err(format!(
            "{} is missing: run 'make setup'",
            udev.join("bin/udevadm").display()
        ));
    }
    add_program(
        c,
        &udev.join("bin/udevadm"),
        "usr/bin/udevadm",
        Some(&udev.join("usr/lib/x86_64-linux-gnu/systemd")),
    )?;
    add_parents(c, "lib/systemd/systemd-udevd");
    c.symlink("lib/systemd/systemd-udevd", "/usr/bin/udevadm");
    let rules = udev.join("lib/udev/rules.d/50-udev-default.rules");
    let data = std::fs::read(&rules).map_err(|e| format!("{}: {e}", rules.display()))?;
    add_parents(c, "lib/udev/rules.d/50-udev-default.rules");
    c.file("lib/udev/rules.d/50-udev-default.rules", 0o644, &data);
    Ok(())
}

fn scenario_initrd(dir: &Path, name: &str, script: &str) -> Res<PathBuf> {
    let mut c = initramfs::Cpio::default();
    let mut body = String::from(scenarios::prelude());
    body.push_str(script);
    c.file("scenario.sh", 0o644, body.as_bytes());
    let p = dir.join(format!("scenario-{name}.cpio"));
    std::fs::write(&p, c.finish()).map_err(|e| e.to_string())?;
    Ok(p)
}

/// Decides the accelerator: KVM only if a short probe boot reaches init; remembered in the
/// cache. `VCON_ACCEL=tcg|kvm` overrides.
fn pick_accel(out: &Path, base: &Path) -> Accel {
    match std::env::var("VCON_ACCEL").as_deref() {
        Ok("tcg") => return Accel::Tcg,
        Ok("kvm") => return Accel::Kvm,
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let memo = cache_dir().join("kvm-probe");
    if let Ok(s) = std::fs::read_to_string(&memo) {
        return if s.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
    }
    eprintln!("probing KVM with a short boot (20 s at most)...");
    let cfg = VmConfig {
        kernel: out.join("bzImage"),
        initrds: vec![base.to_path_buf()],
        cmdline: vec!["kunit.enable=0".into()],
        qemu_args: vec![],
        accel: Accel::Kvm,
        timeout: Duration::from_secs(20),
        mem: 256,
        machine: vm::PC.into(),
        serial_console: true,
    };
    let ok = Vm::start(&cfg)
        .and_then(|mut vm| vm.wait_line("@@BOOTED", |l| (l.trim() == "@@BOOTED").then_some(())))
        .is_ok();
    let a = if ok { Accel::Kvm } else { Accel::Tcg };
    let _ = std::fs::create_dir_all(cache_dir());
    let _ = std::fs::write(&memo, a.name());
    a
}

fn setup() -> Res<Env> {
    setup_profile(out_dir(), "", vec![])
}

fn setup_profile(out: PathBuf, label: &str, cmdline: Vec<String>) -> Res<Env> {
    for f in ["bzImage", "virtio_console_rs.ko", "virtio_console.ko"] {
        if !out.join(f).exists() {
            return Err(format!(
                "{} is missing: run 'make build' first",
                out.join(f).display()
            ));
        }
    }
    let base = build_base(&out)?;
    let accel = pick_accel(&out, &base);
    Ok(Env {
        out,
        base_initrd: base,
        accel,
        label: label.to_string(),
        cmdline,
    })
}

fn run_scenario(env: &Env, s: &Scenario, driver: Driver) -> Res<Vec<String>> {
    run_scenario_on(env, s, driver, None)
}

/// Runs a scenario on the default transport (`None`) or on another one, whose check must
/// then pass too.
fn run_scenario_on(
    env: &Env,
    s: &Scenario,
    driver: Driver,
    tr: Option<Transport>,
) -> Res<Vec<String>> {
    let run_name = match tr {
        Some(t) => format!("{}-{}", t.name(), s.name),
        None => s.name.to_string(),
    };
    let mut script = s.guest.to_string();
    let mut cmdline = vec![
        format!("vcon_driver={}", driver.name()),
        "kunit.enable=0".into(),
    ];
    if let Some(t) = tr {
        script.push_str(t.guest());
        cmdline.extend(t.cmdline());
    }
    let extra = scenario_initrd(&env.out, &run_name, &script)?;
    let cfg = VmConfig {
        kernel: env.out.join("bzImage"),
        initrds: vec![env.base_initrd.clone(), extra],
        cmdline: with_extra_cmdline(env, cmdline),
        qemu_args: tr.map_or_else(|| s.qemu.clone(), |t| t.qemu(&s.qemu)),
        accel: env.accel,
        timeout: Duration::from_secs(s.timeout),
        mem: 512,
        machine: tr.map_or(vm::PC, Transport::machine).into(),
        serial_console: true,
    };
    let mut vm = Vm::start(&cfg)?;
    let result = (|| {
        vm.wait_line("@@BOOTED", |l| (l.trim() == "@@BOOTED").then_some(()))?;
        (s.host)(&mut vm, driver)
    })();
    let panicked = matches!(&result, Ok(o) if o.iter().any(|l| l == scenarios::PANIC_EXPECTED));
    // The log is kept whatever happened: after a panic on purpose, after an error of the host
    // side, and when the guest crashes or hangs before its end marker.
    let (log, finished) = match result {
        Ok(_) if panicked => {
            std::thread::sleep(Duration::from_millis(500));
            (vm.log_lines(), Ok(()))
        }
        Ok(_) => vm.finish_keeping_log(),
        Err(_) => {
            std::thread::sleep(Duration::from_millis(300));
            (vm.log_lines(), Ok(()))
        }
    };
    let saved = env.out.join("logs");
    let _ = std::fs::create_dir_all(&saved);
    let _ = std::fs::write(
        saved.join(format!("{run_name}-{}.log", driver.name())),
        log.join("\n"),
    );
    let out = result?;
    let trouble = if panicked {
        vm::trouble_besides_sysrq_crash(&log)?
    } else {
        vm::kernel_trouble(&log)
    };
    if let Err(e) = finished {
        return Err(format!(
            "{}: {e}; kernel: {trouble:?}",
            selftest::NOT_FINISHED
        ));
    }
    if !trouble.is_empty() {
        return Err(format!("kernel reported problems: {trouble:?}"));
    }
    check_cmdline(env, &log)?;
    if let Some(t) = tr {
        t.check(&log)
            .map_err(|e| format!("not on transport {}: {e}", t.name()))?;
    }
    Ok(out)
}

/// The guest's `/proc/cmdline` (the `@@cmdline` line init prints) must hold every word of the
/// profile's command line: the debug profile's SLUB debugging and KFENCE options.
fn check_cmdline(env: &Env, log: &[String]) -> Res<()> {
    let words = cmdline_of(log).ok_or("the guest printed no @@cmdline line")?;
    for want in &env.cmdline {
        if !words.iter().any(|w| w == want) {
            return Err(format!(
                "the guest booted without {want:?}: /proc/cmdline is {:?}",
                words.join(" ")
            ));
        }
    }
    Ok(())
}

/// The words of the guest's `/proc/cmdline`, from the `@@cmdline` line of its log.
fn cmdline_of(log: &[String]) -> Option<Vec<String>> {
    log.iter().find_map(|l| {
        l.trim_start_matches('\r')
            .strip_prefix("@@cmdline ")
            .map(|c| c.split_whitespace().map(String::from).collect())
    })
}

/// Boots with KUnit enabled, loads the driver so its suites run too, and parses KTAP.
fn run_kunit(env: &Env) -> Res<ktap::Summary> {
    // Module parameters for the driver's suites, for example a longer random run:
    // VCON_KUNIT_MODARGS="fake_seed=7 fake_messages=1000000".
    let modargs = std::env::var("VCON_KUNIT_MODARGS").unwrap_or_default();
    if !modargs
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | ' '))
    {
        return Err(format!(
            "VCON_KUNIT_MODARGS: only name=value pairs, got {modargs:?}"
        ));
    }
    let extra = scenario_initrd(
        &env.out,
        "kunit",
        &format!("insmod /lib/vcon/virtio_console_rs.ko {modargs}\nrmmod virtio_console_rs\n"),
    )?;
    let cfg = VmConfig {
        kernel: env.out.join("bzImage"),
        initrds: vec![env.base_initrd.clone(), extra],
        // KTAP is printed at KERN_INFO.
        cmdline: with_extra_cmdline(env, vec!["loglevel=7".into()]),
        qemu_args: vec![],
        accel: env.accel,
        timeout: Duration::from_secs(300),
        mem: 512,
        machine: vm::PC.into(),
        serial_console: true,
    };
    let mut vm = Vm::start(&cfg)?;
    let done = vm.wait_line("@@DONE", |l| (l.trim() == "@@DONE").then_some(()));
    let _ = std::fs::create_dir_all(env.out.join("logs"));
    if let Err(e) = done {
        // Keep what the guest printed: it says why it ended.
        let _ = std::fs::write(env.out.join("logs/kunit.log"), vm.log_lines().join("\n"));
        return Err(e);
    }
    let log = vm.drain();
    let _ = std::fs::write(env.out.join("logs/kunit.log"), log.join("\n"));
    let summary = ktap::parse(log.iter().map(String::as_str));
    let trouble = vm::kernel_trouble(&log);
    if !trouble.is_empty() {
        return Err(format!("kernel reported problems: {trouble:?}"));
    }
    check_cmdline(env, &log)?;
    Ok(summary)
}

struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, r: &Res<()>, secs: f64) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name} ({secs:.1}s)");
            }
            Err(e) => {
                self.failed.push(name.to_string());
                println!("FAIL {name} ({secs:.1}s): {e}");
            }
        }
    }
}

fn cmd_test(args: &[String]) -> Res<bool> {
    let mut drivers = vec![Driver::C, Driver::Rust];
    let mut only: Option<String> = None;
    let mut kunit = true;
    let mut debug_only = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--driver" => {
                i += 1;
                drivers = match args.get(i).map(String::as_str) {
                    Some("rust") => vec![Driver::Rust],
                    Some("c") => vec![Driver::C],
                    Some("both") => vec![Driver::C, Driver::Rust],
                    other => return Err(format!("--driver rust|c|both, not {other:?}")),
                };
            }
            "--only" => {
                i += 1;
                only = args.get(i).cloned();
            }
            "--no-kunit" => kunit = false,
            "--debug-only" => debug_only = true,
            a => return Err(format!("unknown argument {a}")),
        }
        i += 1;
    }
    let mut t = Tally {
        passed: 0,
        failed: Vec::new(),
    };
    let mut profiles = if debug_only { vec![] } else { vec![setup()?] };
    // The debug profile (KFENCE, SLUB debugging, kmemleak, lockdep, ...) runs everything
    // again when its kernel was built (`VCON_DEBUG_OUT`, set by `make test`).
    if let Some(d) = std::env::var_os("VCON_DEBUG_OUT") {
        profiles.push(setup_profile(
            PathBuf::from(d),
            "debug:",
            vec!["slub_debug=FZPU".into(), "kfence.sample_interval=1".into()],
        )?);
    }
    let Some(first) = profiles.first() else {
        return Err("--debug-only needs VCON_DEBUG_OUT (use make test-debug)".into());
    };
    println!("accelerator: {}", first.accel.name());
    for (i, env) in profiles.iter().enumerate() {
        // The harness's self-check runs once, with the first profile.
        run_profile(env, &mut t, &drivers, only.as_deref(), kunit, i == 0);
    }
    // The built-in kernel (`make kernel-builtin`, VCON_BUILTIN_OUT) has no debug variant.
    if !debug_only && only.as_deref().is_none_or(|o| o == builtin_boot::NAME) {
        let env = &profiles[0];
        let out = std::env::var_os("VCON_BUILTIN_OUT")
            .map(PathBuf::from)
            .unwrap_or_else(|| env.out.join("builtin"));
        for &d in &drivers {
            let start = Instant::now();
            let r = builtin_boot::run(&out, &env.base_initrd, env.accel, d);
            t.record(
                &format!("{}[{}]", builtin_boot::NAME, d.name()),
                &r,
                start.elapsed().as_secs_f64(),
            );
        }
    }
    println!("{} passed, {} failed", t.passed, t.failed.len());
    Ok(t.failed.is_empty())
}

fn run_profile(
    env: &Env,
    t: &mut Tally,
    drivers: &[Driver],
    only: Option<&str>,
    kunit: bool,
    selfcheck: bool,
) {
    if selfcheck && only.is_none_or(|o| o == selftest::LATE_PANIC) {
        let start = Instant::now();
        let s = selftest::late_panic();
        let verdict = run_scenario(env, &s, selftest::DRIVER);
        let log = env
            .out
            .join(format!("logs/{}-{}.log", s.name, selftest::DRIVER.name()));
        t.record(
            &format!("{}{}", env.label, s.name),
            &selftest::judge(&verdict, &log),
            start.elapsed().as_secs_f64(),
        );
    }
    if kunit && only.is_none_or(|o| o == "kunit") {
        let start = Instant::now();
        let r = run_kunit(env).and_then(|s| {
            let suites: Vec<String> = s
                .suites
                .iter()
                .map(|x| format!("{} ({})", x.name, x.passed))
                .collect();
            println!(
                "kunit: {} cases passed, {} skipped, {} failed; suites (cases passed): {}",
                s.passed,
                s.skipped,
                s.failed.len(),
                suites.join(", ")
            );
            ktap::gate(&s, &ktap::REQUIRED_SUITES)
        });
        t.record(
            &format!("{}kunit", env.label),
            &r,
            start.elapsed().as_secs_f64(),
        );
    }
    for s in scenarios::all() {
        if only.is_some_and(|o| o != s.name) {
            continue;
        }
        let mut outputs = Vec::new();
        for &d in drivers {
            if s.rust_only && d != Driver::Rust {
                continue;
            }
            let start = Instant::now();
            let r = run_scenario(env, &s, d);
            let name = format!("{}{}[{}]", env.label, s.name, d.name());
            t.record(
                &name,
                &r.as_ref().map(|_| ()).map_err(Clone::clone),
                start.elapsed().as_secs_f64(),
            );
            if let Ok(o) = r {
                outputs.push((d, o));
            }
        }
        if s.differential && outputs.len() == 2 {
            let r = if outputs[0].1.is_empty() {
                Err("a differential scenario returned nothing to compare".into())
            } else if outputs[0].1 == outputs[1].1 {
                Ok(())
            } else {
                let diff: Vec<String> = outputs[0]
                    .1
                    .iter()
                    .zip(outputs[1].1.iter())
                    .filter(|(a, b)| a != b)
                    .map(|(a, b)| format!("c: {a:?} rust: {b:?}"))
                    .take(5)
                    .collect();
                Err(format!(
                    "C and Rust differ ({} vs {} lines): {diff:?}",
                    outputs[0].1.len(),
                    outputs[1].1.len()
                ))
            };
            t.record(&format!("{}{}[c==rust]", env.label, s.name), &r, 0.0);
        }
    }
    // Some scenarios again on the other transports, named `TRANSPORT:SCENARIO`.
    for tr in Transport::ALL {
        for s in scenarios::all() {
            let name = format!("{}:{}", tr.name(), s.name);
            if !tr.scenarios().contains(&s.name) || only.is_some_and(|o| o != name) {
                continue;
            }
            for &d in drivers {
                let start = Instant::now();
                let r = run_scenario_on(env, &s, d, Some(tr)).map(|_| ());
                t.record(
                    &format!("{}{name}[{}]", env.label, d.name()),
                    &r,
                    start.elapsed().as_secs_f64(),
                );
            }
        }
    }
}

fn cmd_bench(args: &[String]) -> Res<bool> {
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let icount = args.iter().any(|a| a == "--icount");
    // Only the hot-plugged ports' rows (memory per idle and per opened port, plug time).
    let mem_only = args.iter().any(|a| a == "--mem-only");
    let env = setup()?;
    if icount && env.accel != Accel::Tcg {
        return Err("--icount needs TCG (VCON_ACCEL=tcg)".into());
    }
    let make_cfg = |d: Driver, script: String| workload_vm(&env, "bench", d, &script);
    bench::run(
        &make_cfg,
        env.accel,
        icount,
        reps,
        mem_only,
        &env.out.join("bench"),
    )
}

/// The guest `make bench` and `make profile` boot: driver `d`, no KUnit, `script` in an initrd
/// named after `what` and the driver; the caller adds its QEMU arguments.
fn workload_vm(env: &Env, what: &str, d: Driver, script: &str) -> VmConfig {
    let extra =
        scenario_initrd(&env.out, &format!("{what}-{}", d.name()), script).unwrap_or_default();
    VmConfig {
        kernel: env.out.join("bzImage"),
        initrds: vec![env.base_initrd.clone(), extra],
        cmdline: with_extra_cmdline(
            env,
            vec![format!("vcon_driver={}", d.name()), "kunit.enable=0".into()],
        ),
        qemu_args: vec![],
        accel: env.accel,
        timeout: Duration::from_secs(900),
        mem: 512,
        machine: vm::PC.into(),
        serial_console: true,
    }
}

/// `profile [c|rust] [hvc [raw] | ping | h2g] [--size N] [--writes N] [--top N]`: instructions per write by
/// kernel function (see `profile.rs`); needs `VCON_TCG_PROFILE`, the plugin's path.
fn cmd_profile(args: &[String]) -> Res<bool> {
    let opt = |name: &str, default: usize| -> Res<usize> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number")),
        }
    };
    let driver = if args.iter().any(|a| a == "c") {
        Driver::C
    } else {
        Driver::Rust
    };
    let hvc = args.iter().any(|a| a == "hvc");
    let w = profile::Workload {
        node: if hvc { "/dev/hvc0" } else { "/dev/vport0p1" }.into(),
        size: opt("--size", 4096)?,
        writes: opt("--writes", 4096)?,
        raw: args.iter().any(|a| a == "raw"),
        ping: args.iter().any(|a| a == "ping"),
        h2g: args.iter().any(|a| a == "h2g"),
    };
    let top = opt("--top", 40)?;
    let plugin = std::env::var_os("VCON_TCG_PROFILE")
        .map(PathBuf::from)
        .ok_or("VCON_TCG_PROFILE (the plugin's path) is not set")?;
    let env = setup()?;
    if env.accel != Accel::Tcg {
        return Err("profiling needs TCG (VCON_ACCEL=tcg)".into());
    }
    let make_cfg = |d: Driver, script: String| workload_vm(&env, "profile", d, &script);
    profile::run(
        &make_cfg,
        driver,
        &w,
        &plugin,
        &env.out,
        &env.out.join("profile"),
        top,
    )
}

fn cmd_run(args: &[String]) -> Res<bool> {
    let driver = if args.iter().any(|a| a == "c") {
        Driver::C
    } else {
        Driver::Rust
    };
    let env = setup()?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let mut q = Vec::new();
    for (d, ports) in [
        (0u32, vec![(1u32, "org.demo.alpha"), (2, "org.demo.beta")]),
        (1, vec![(1, "org.demo.gamma")]),
    ] {
        q.push("-device".to_string());
        q.push(format!("virtio-serial-pci,id=vser{d}"));
        q.push("-chardev".into());
        q.push(format!(
            "socket,id=con{d},path=@DIR@/con{d}.sock,server=on,wait=off"
        ));
        q.push("-device".into());
        q.push(format!("virtconsole,bus=vser{d}.0,chardev=con{d},nr=0"));
        for (nr, name) in ports {
            q.push("-chardev".into());
            q.push(format!(
                "socket,id=p{d}{nr},path=@DIR@/p{d}{nr}.sock,server=on,wait=off"
            ));
            q.push("-device".into());
            q.push(format!(
                "virtserialport,bus=vser{d}.0,chardev=p{d}{nr},nr={nr},name={name}"
            ));
        }
    }
    let script = r#"
echo "== loading $KO"
load_driver
wait_for /dev/vport1p1
until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done
echo "== /dev nodes:"; ls -l /dev | grep -E 'vport|hvc0'
echo "== names:"; for f in /sys/class/virtio-ports/*; do echo "$(basename $f): $(cat $f/name 2>/dev/null)"; done
echo "== guest -> host -> guest on /dev/vport0p1 (the host echoes each line):"
exec 3<>/dev/vport0p1
echo "hello host, this is the guest" >&3
read -r reply <&3; echo "guest read: $reply"
exec 3<&-
echo "== console output on /dev/hvc0"; echo "hello from hvc0" > /dev/hvc0
echo "== debugfs:"; for f in /sys/kernel/debug/virtio-ports/*; do echo "--- $f"; cat $f; done
"#;
    let extra = scenario_initrd(&env.out, "demo", script)?;
    let mut cmdline = vec![
        format!("vcon_driver={}", driver.name()),
        "kunit.enable=0".into(),
    ];
    if interactive {
        cmdline.push("vcon_shell=1".into());
    }
    let cfg = VmConfig {
        kernel: env.out.join("bzImage"),
        initrds: vec![env.base_initrd.clone(), extra],
        cmdline,
        qemu_args: q,
        accel: env.accel,
        timeout: Duration::from_secs(if interactive { 86400 } else { 180 }),
        mem: 512,
        machine: vm::PC.into(),
        serial_console: true,
    };
    println!(
        "booting a {} guest with the {} driver ...",
        env.accel.name(),
        driver.name()
    );
    let mut vm = Vm::start_with(&cfg, interactive)?;
    // The host end of org.demo.alpha: an echo service, in both modes.
    let port = vm.connect("p01")?;
    let chatty = !interactive;
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut w = match port.try_clone() {
            Ok(w) => w,
            Err(_) => return,
        };
        let r = std::io::BufReader::new(port);
        for line in r.lines() {
            let Ok(line) = line else { break };
            if chatty {
                println!("host | received on org.demo.alpha: {line:?}");
            }
            if w.write_all(format!("host echoes: {line}\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
    });
    let con = vm.connect("con0")?;
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(con).lines() {
            let Ok(line) = line else { break };
            if chatty {
                println!("host | received on the console port: {line:?}");
            }
        }
    });
    if interactive {
        println!("(guest shell on this terminal; Ctrl-A X quits QEMU)");
        vm.wait_exit();
        return Ok(true);
    }
    vm.wait_line("@@DONE", |l| {
        if !l.starts_with("@@") {
            println!("guest| {l}");
        }
        (l.trim() == "@@DONE").then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let log = vm.log_lines();
    let trouble = vm::kernel_trouble(&log);
    if !trouble.is_empty() {
        return Err(format!("kernel reported problems: {trouble:?}"));
    }
    println!("demo finished");
    Ok(true)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("test") => cmd_test(&args[1..]),
        Some("kunit") => cmd_test(&["--only".into(), "kunit".into()]),
        Some("run") => cmd_run(&args[1..]),
        Some("bench") => cmd_bench(&args[1..]),
        Some("profile") => cmd_profile(&args[1..]),
        Some("list") => {
            for s in scenarios::all().into_iter().chain([selftest::late_panic()]) {
                println!("{:32} {}", s.name, s.about);
            }
            println!(
                "{:32} built-in drivers, console=hvc0 only: boot messages replayed, init, login",
                builtin_boot::NAME
            );
            for tr in Transport::ALL {
                for s in tr.scenarios() {
                    println!(
                        "{:32} {s} on {}",
                        format!("{}:{s}", tr.name()),
                        tr.machine()
                    );
                }
            }
            Ok(true)
        }
        _ => Err("usage: vcon-harness test|kunit|run|list".into()),
    };
    match r {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
