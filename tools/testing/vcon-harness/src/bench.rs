//! `make bench`: the same guest, QEMU command line and host program for the C reference and
//! the Rust driver, runs alternated, medians and spreads, a table, a CSV and an SVG chart.
//!
//! Timings come from the guest's monotonic clock (`vcg bench-*`) except hotplug, which the
//! host times from the first QMP `device_add` to the guest reporting every node.

use crate::scenarios::Driver;
use crate::vm::{Accel, Res, Vm, VmConfig};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Write sizes and the bytes moved at each, per direction.
pub const SIZES: [(usize, usize); 5] = [
    (1, 64 << 10),
    (64, 2 << 20),
    (4096, 32 << 20),
    (32768, 64 << 20),
    (1 << 20, 64 << 20),
];
/// The bytes the host sends at each write size: more than the guest writes at the small sizes,
/// where the rate depends on how many of the host's writes QEMU gathers into one receive
/// buffer, which varies with the host's pace; a longer run averages that out.
pub const H2G_SIZES: [(usize, usize); 5] = [
    (1, 2 << 20),
    (64, 16 << 20),
    (4096, 32 << 20),
    (32768, 64 << 20),
    (1 << 20, 64 << 20),
];
/// Round trips of the ping-pong. Late echoes come in bursts of a few dozen (the host's side;
/// see the performance document): in 2,000 round trips one burst was enough to set the 99th
/// percentile, in 20,000 it takes several.
const PINGS: usize = 20000;
const HVC_BYTES: usize = 4 << 20;
const HOTPLUG_PORTS: u32 = 30;

/// The least memory an opened port can hold, in KiB: both drivers lend the device a full
/// receive ring at the first open (QEMU's port queues have 128 entries) of one page each.
///
/// A measurement below it misses memory. `MemTotal - MemFree` did: pages that the guest frees
/// go to per-CPU free lists, which `MemFree` does not count, and are handed out from there
/// first, so allocations shrank `MemFree` by less than they took (the C driver's ports came
/// out at 500 KiB each). Slab pages are counted when a cache takes them, wherever from.
const RING_FLOOR_KIB: f64 = 128.0 * 4.0;

/// One measured value of one run.
type Sample = BTreeMap<String, f64>;

/// The guest's script; with `mem_only`, only the hot-plugged ports' memory is measured.
fn guest_script(mem_only: bool) -> String {
    let mut s = String::from(concat!(
        "load_driver\nfor p in 1 2 3; do wait_for /dev/vport0p$p; done\nwait_for /dev/hvc0\n",
        "for p in 0 1 2 3; do until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p$p; do sleep 0.1; done; done\n",
    ));
    if !mem_only {
        workloads_script(&mut s);
    }
    s.push_str(concat!(
        // Slab memory: every per-port allocation of both drivers is a slab object (see
        // `RING_FLOOR_KIB` for why not `MemTotal - MemFree`). Unused dentries and inodes
        // are dropped first, so only what the ports hold is counted.
        "used() { sync; echo 3 > /proc/sys/vm/drop_caches; awk '/^Slab:/{print $2}' /proc/meminfo; }\n",
        "echo \"@@ mem0 $(used)\"\n",
    ));
    s.push_str(&format!(
        "i=0; while [ $(ls /dev | grep -c '^vport1p') -lt {HOTPLUG_PORTS} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\n"
    ));
    s.push_str("sleep 0.5; echo \"@@ hp-up $(used)\"\n");
    // Each port opened once and closed: what an opened-then-closed port keeps.
    s.push_str(
        "for p in /dev/vport1p*; do : < $p; done\nsleep 0.5; echo \"@@ hp-opened $(used)\"\n",
    );
    s.push_str("i=0; while [ $(ls /dev | grep -c '^vport1p') -gt 0 ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\necho '@@ hp-down'\n");
    // The clock every timing came from: if the kernel gave up the TSC during the run (its
    // watchdog can, under TCG on a loaded host), the timings have jiffy resolution.
    s.push_str("echo \"@@ clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)\"\n");
    s
}

/// The timed workloads of the guest's script.
fn workloads_script(s: &mut String) {
    for (size, total) in SIZES {
        s.push_str(&format!(
            "vcg bench-g2h g2h-{size} /dev/vport0p1 {size} {total}\n"
        ));
    }
    for (size, total) in H2G_SIZES {
        s.push_str(&format!("vcg bench-h2g h2g-{size} /dev/vport0p2 {total}\n"));
    }
    s.push_str(&format!("vcg bench-ping ping /dev/vport0p3 {PINGS}\n"));
    s.push_str(&format!("vcg bench-g2h hvc /dev/hvc0 4096 {HVC_BYTES}\n"));
    // The same in raw mode: without n_tty's per-character output processing, which costs
    // both drivers the same, what is left is hvc and the driver.
    s.push_str(&format!(
        "vcg bench-g2h hvc-raw /dev/hvc0 4096 {HVC_BYTES} raw\n"
    ));
}

/// The clocksources a run's timings are valid with: both read the TSC (`tsc-early` is the one
/// before the TSC's frequency is refined, which under icount can outlast a short run).
const CLOCKSOURCES: [&str; 2] = ["tsc", "tsc-early"];

fn qemu_args() -> Vec<String> {
    let mut q = vec!["-device".into(), "virtio-serial-pci,id=vser0".into()];
    q.push("-chardev".into());
    q.push("socket,id=con0,path=@DIR@/con0.sock,server=on,wait=off".into());
    q.push("-device".into());
    q.push("virtconsole,bus=vser0.0,chardev=con0,nr=0".into());
    for p in 1..=3 {
        q.push("-chardev".into());
        q.push(format!(
            "socket,id=p{p},path=@DIR@/p{p}.sock,server=on,wait=off"
        ));
        q.push("-device".into());
        q.push(format!("virtserialport,bus=vser0.0,chardev=p{p},nr={p}"));
    }
    q.push("-device".into());
    q.push("virtio-serial-pci,id=vser1".into());
    q
}

/// Sends `total` bytes to the guest on `s`, `size` bytes per `write()`.
pub fn send_stream(s: &mut UnixStream, size: usize, total: usize) -> Res<()> {
    let chunk = vec![0xa5u8; size];
    let mut left = total;
    while left > 0 {
        let n = left.min(size);
        s.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
        left -= n;
    }
    Ok(())
}

/// Reads and drops everything the guest sends on `s`, in a thread of its own.
pub fn drain(mut s: std::os::unix::net::UnixStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
}

fn parse3(r: &str) -> Res<(f64, f64, f64)> {
    let v: Vec<f64> = r
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 3 {
        return Err(format!("bad result {r:?}"));
    }
    Ok((v[0], v[1], v[2]))
}

/// Rows whose time is mostly the guest waiting for the host: at one and 64 bytes per host
/// `write()` the guest gets what QEMU gathered from its socket meanwhile, as often whatever the
/// driver; a ping's 99th percentile is set by the round trips whose echo came late, in bursts
/// that hit both drivers. Their ratios are printed marked: they swing from run to run by more
/// than the drivers' costs differ (see the performance document's known limits).
const HOST_PACED: [&str; 3] = ["h2g_1", "h2g_64", "ping_p99_us"];

/// Rows that under icount count against the driver with fewer instructions, so that "worse"
/// there does not fail the run: a round trip whose vCPU halts before the echo comes lasts the
/// host's real time, while instructions count a nanosecond each, and the shorter round trip
/// halts first more often (a busy loop making the Rust round trip as long as the C one made
/// their 99th percentiles equal; see the performance document).
const AGAINST_THE_FASTER_UNDER_ICOUNT: [&str; 1] = ["ping_p99_us"];

/// What a run that must be repeated says: its timings are not valid.
const INVALID_CLOCK: &str = "timings not valid";

/// How many times a run with invalid timings is repeated.
const CLOCK_RETRIES: usize = 3;

/// One boot running every workload (with `mem_only`, only the memory rows).
fn run_once(cfg: &VmConfig, mem_only: bool) -> Res<Sample> {
    let mut vm = Vm::start(cfg)?;
    vm.wait_line("@@BOOTED", |l| (l.trim() == "@@BOOTED").then_some(()))?;
    let mut out = Sample::new();
    drain(vm.connect("p1")?);
    drain(vm.connect("con0")?);
    let mut h2g = vm.connect("p2")?;
    let echo = vm.connect("p3")?;
    std::thread::spawn(move || {
        let mut w = match echo.try_clone() {
            Ok(w) => w,
            Err(_) => return,
        };
        let mut r = echo;
        let mut b = [0u8; 64];
        while let Ok(n) = r.read(&mut b) {
            if n == 0 || w.write_all(&b[..n]).is_err() {
                break;
            }
        }
    });
    if !mem_only {
        run_workloads(&mut vm, &mut out, &mut h2g)?;
    }
    let mem0: f64 = vm.result("mem0")?.trim().parse().map_err(|_| "mem0")?;
    run_hotplug(&mut vm, &mut out, mem0)?;
    finish_run(vm, out)
}

/// The timed workloads: both directions at each size, ping, hvc.
fn run_workloads(vm: &mut Vm, out: &mut Sample, h2g: &mut UnixStream) -> Res<()> {
    // /proc/stat counts in USER_HZ, always 100.
    let hz = 100.0;
    for (size, _) in SIZES {
        let (bytes, ns, cpu) = parse3(&vm.result(&format!("g2h-{size}"))?)?;
        out.insert(format!("g2h_{size}"), bytes / (ns / 1e9) / 1048576.0);
        out.insert(
            format!("g2h_cpu_{size}"),
            cpu / hz * 1000.0 / (bytes / 1048576.0),
        );
    }
    for (size, total) in H2G_SIZES {
        vm.result(&format!("h2g-{size}-ready"))?;
        send_stream(h2g, size, total)?;
        let r = vm.result(&format!("h2g-{size}"))?;
        if r.starts_with("err ") {
            return Err(format!("h2g-{size}: the guest's read failed: {r}"));
        }
        let (bytes, ns, cpu) = parse3(&r)?;
        // The rate is of what the host sent: the guest must have read all of it.
        if bytes as usize != total {
            return Err(format!(
                "h2g-{size}: the guest read {bytes} bytes, the host sent {total}"
            ));
        }
        out.insert(format!("h2g_{size}"), bytes / (ns / 1e9) / 1048576.0);
        out.insert(
            format!("h2g_cpu_{size}"),
            cpu / hz * 1000.0 / (bytes / 1048576.0),
        );
    }
    let (count, med, p99) = parse3(&vm.result("ping")?)?;
    if count as usize != PINGS {
        return Err(format!("ping: {count} round trips instead of {PINGS}"));
    }
    out.insert("ping_median_us".into(), med / 1000.0);
    out.insert("ping_p99_us".into(), p99 / 1000.0);
    let (bytes, ns, _) = parse3(&vm.result("hvc")?)?;
    out.insert("hvc".into(), bytes / (ns / 1e9) / 1048576.0);
    let (bytes, ns, _) = parse3(&vm.result("hvc-raw")?)?;
    out.insert("hvc_raw".into(), bytes / (ns / 1e9) / 1048576.0);
    Ok(())
}

/// The hot-plug part of a run: memory per idle port, per opened port, and the plug time.
fn run_hotplug(vm: &mut Vm, out: &mut Sample, mem0: f64) -> Res<()> {
    let t0 = Instant::now();
    for nr in 1..=HOTPLUG_PORTS {
        vm.qmp(&format!(
            r#"{{"execute":"chardev-add","arguments":{{"id":"h{nr}","backend":{{"type":"null","data":{{}}}}}}}}"#
        ))?;
        vm.qmp(&format!(
            r#"{{"execute":"device_add","arguments":{{"driver":"virtserialport","bus":"vser1.0","nr":{nr},"chardev":"h{nr}","id":"hp{nr}"}}}}"#
        ))?;
    }
    let up: f64 = vm.result("hp-up")?.trim().parse().map_err(|_| "hp-up")?;
    let plug = t0.elapsed();
    // Ports no file has opened: the Rust driver lends them no receive buffers.
    out.insert(
        "mem_per_idle_port_kib".into(),
        (up - mem0) / HOTPLUG_PORTS as f64,
    );
    let opened: f64 = vm
        .result("hp-opened")?
        .trim()
        .parse()
        .map_err(|_| "hp-opened")?;
    let per_open = (opened - mem0) / HOTPLUG_PORTS as f64;
    if per_open < RING_FLOOR_KIB {
        return Err(format!(
            "memory per opened port {per_open:.2} KiB is below its receive ring's \
             {RING_FLOOR_KIB} KiB: the measurement misses memory"
        ));
    }
    out.insert("mem_per_open_port_kib".into(), per_open);
    let t1 = Instant::now();
    for nr in 1..=HOTPLUG_PORTS {
        vm.qmp(&format!(
            r#"{{"execute":"device_del","arguments":{{"id":"hp{nr}"}}}}"#
        ))?;
    }
    vm.result("hp-down")?;
    // The 0.5 s settle time before `hp-up` is not part of the plug time.
    out.insert(
        "hotplug_30_ms".into(),
        (plug.as_secs_f64() - 0.5) * 1000.0 + t1.elapsed().as_secs_f64() * 1000.0,
    );
    Ok(())
}

/// The end of a run: the clock the timings came from, and the kernel log.
fn finish_run(mut vm: Vm, out: Sample) -> Res<Sample> {
    let clock = vm.result("clocksource")?;
    let log = vm.finish()?;
    if !CLOCKSOURCES.contains(&clock.trim()) {
        let why: Vec<&str> = log
            .iter()
            .filter(|l| l.contains("clocksource") || l.contains("TSC"))
            .map(|l| l.trim())
            .collect();
        return Err(format!(
            "{INVALID_CLOCK}: the guest's clocksource was {:?} at the end of the run {why:?}",
            clock.trim()
        ));
    }
    let trouble = crate::vm::kernel_trouble(&log);
    if !trouble.is_empty() {
        return Err(format!("kernel reported problems: {trouble:?}"));
    }
    Ok(out)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

/// Guest CPU time comes from `/proc/stat` in ticks of 10 ms; a CPU row whose median is
/// fewer ticks than this, for either driver, gets no ratio.
const MIN_CPU_TICKS: f64 = 10.0;

/// For a guest CPU row (`g2h_cpu_SIZE`, `h2g_cpu_SIZE`) in ms/MiB, the ticks its value stands
/// for.
fn cpu_ticks(k: &str, ms_per_mib: f64) -> Option<f64> {
    let size: usize = k.rsplit('_').next()?.parse().ok()?;
    let sizes = if k.starts_with("h2g") {
        &H2G_SIZES
    } else {
        &SIZES
    };
    let (_, total) = sizes.iter().find(|(s, _)| *s == size)?;
    Some(ms_per_mib * (*total as f64 / 1048576.0) / 10.0)
}

/// Whether a larger value is better for a metric.
fn higher_is_better(k: &str) -> bool {
    !(k.contains("cpu") || k.contains("ping") || k.contains("mem") || k.contains("hotplug"))
}

/// The host's TSC frequency in kHz, measured against the monotonic clock over 200 ms.
///
/// Under TCG without icount the guest's TSC is the host's (QEMU reads it with `rdtsc`), but
/// the guest kernel calibrates it against the emulated PIT, which under TCG can fail ("Unable
/// to calibrate against PIT"); the test kernel has no HPET or ACPI PM timer to fall back on, so
/// it then marks the TSC unstable and times everything in jiffies.
#[cfg(target_arch = "x86_64")]
fn host_tsc_khz() -> Option<u64> {
    let t0 = Instant::now();
    // SAFETY: `rdtsc` reads a counter; it has no preconditions on an x86-64 host.
    let c0 = unsafe { core::arch::x86_64::_rdtsc() };
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: As above.
    let c1 = unsafe { core::arch::x86_64::_rdtsc() };
    let ns = t0.elapsed().as_nanos() as u64;
    (ns > 0 && c1 > c0).then(|| (c1 - c0) * 1_000_000 / ns)
}

#[cfg(not(target_arch = "x86_64"))]
fn host_tsc_khz() -> Option<u64> {
    None
}

/// Runs `reps` alternated boots per driver and writes the report into `dir`.
///
/// With `icount`, TCG runs with `-icount shift=0`: the guest clock advances one nanosecond per
/// guest instruction, so guest-side timings count the instructions the guest executes (the
/// driver's cost) and not the host's load; QEMU's own device emulation costs no guest time.
pub fn run(
    make_cfg: &dyn Fn(Driver, String) -> VmConfig,
    accel: Accel,
    icount: bool,
    reps: usize,
    mem_only: bool,
    dir: &Path,
) -> Res<bool> {
    let script = guest_script(mem_only);
    // In real time under TCG, give the guest its TSC's frequency (the host's) instead of letting
    // it calibrate, and trust it: the same for both drivers. Under icount the TSC counts guest
    // nanoseconds and calibration works; under KVM the hypervisor tells the guest.
    let tsc_khz = if !icount && accel == Accel::Tcg {
        host_tsc_khz()
    } else {
        None
    };
    let mut results: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
    for rep in 0..reps {
        // C first on even repetitions, Rust first on odd ones.
        let order = if rep % 2 == 0 {
            [Driver::C, Driver::Rust]
        } else {
            [Driver::Rust, Driver::C]
        };
        for d in order {
            let start = Instant::now();
            let mut cfg = make_cfg(d, script.clone());
            if let Some(khz) = tsc_khz {
                cfg.cmdline
                    .extend([format!("tsc_early_khz={khz}"), "tsc=reliable".to_string()]);
            }
            cfg.qemu_args = qemu_args();
            if icount {
                cfg.qemu_args
                    .extend(["-icount".to_string(), "shift=0,sleep=on".to_string()]);
            }
            cfg.timeout = Duration::from_secs(900);
            let mut tries = 0;
            let s = loop {
                match run_once(&cfg, mem_only) {
                    Err(e) if e.starts_with(INVALID_CLOCK) && tries < CLOCK_RETRIES => {
                        tries += 1;
                        eprintln!("  run {}/{reps} {:4} repeated: {e}", rep + 1, d.name());
                    }
                    r => break r.map_err(|e| format!("{} run {rep}: {e}", d.name()))?,
                }
            };
            eprintln!(
                "  run {}/{reps} {:4} {:.0}s",
                rep + 1,
                d.name(),
                start.elapsed().as_secs_f64()
            );
            results.entry(d.name()).or_default().push(s);
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let keys: Vec<String> = results["c"][0].keys().cloned().collect();
    let mut csv =
        String::from("metric,unit,c_median,c_min,c_max,rust_median,rust_min,rust_max,ratio\n");
    println!(
        "accelerator: {}{}{}; {reps} runs per driver, alternated; median [min..max]",
        accel.name(),
        if icount {
            " with -icount shift=0 (guest time = guest instructions)"
        } else {
            ""
        },
        match tsc_khz {
            Some(khz) => format!(", guest TSC given as the host's {khz} kHz"),
            None => String::new(),
        }
    );
    println!(
        "{:22} {:>8} {:>26} {:>26} {:>7}",
        "metric", "unit", "C", "Rust", "Rust/C"
    );
    let mut ok = true;
    let mut summary = BTreeMap::new();
    for k in &keys {
        let col = |d: &str| -> (f64, f64, f64) {
            let mut v: Vec<f64> = results[d]
                .iter()
                .filter_map(|s| s.get(k).copied())
                .collect();
            let m = median(&mut v);
            (
                m,
                v.first().copied().unwrap_or(0.0),
                v.last().copied().unwrap_or(0.0),
            )
        };
        let (cm, cmin, cmax) = col("c");
        let (rm, rmin, rmax) = col("rust");
        let unit = if k.contains("cpu") {
            "ms/MiB"
        } else if k.contains("ping") {
            "us"
        } else if k.contains("mem") {
            "KiB"
        } else if k.contains("hotplug") {
            "ms"
        } else {
            "MiB/s"
        };
        // Too few CPU ticks to compare: no ratio, and never "worse".
        let few_ticks = k.contains("cpu")
            && [cm, rm]
                .iter()
                .any(|v| cpu_ticks(k, *v).is_none_or(|t| t < MIN_CPU_TICKS));
        // Ratio >= 1 means Rust is better, whatever the direction of the metric.
        let ratio = if higher_is_better(k) {
            if cm > 0.0 {
                rm / cm
            } else {
                0.0
            }
        } else if rm > 0.0 {
            cm / rm
        } else {
            1.0
        };
        summary.insert(k.clone(), (cm, rm));
        // Worse than C beyond the spread of both?
        let worse = !few_ticks
            && if higher_is_better(k) {
                rmax < cmin
            } else {
                rmin > cmax
            };
        if worse && !(icount && AGAINST_THE_FASTER_UNDER_ICOUNT.contains(&k.as_str())) {
            ok = false;
        }
        let shown = if few_ticks {
            format!("{:>6} (< {MIN_CPU_TICKS} ticks)", "n/a")
        } else {
            format!(
                "{ratio:>6.2}{}{}",
                if worse { " worse" } else { "" },
                if HOST_PACED.contains(&k.as_str()) {
                    " host-paced"
                } else {
                    ""
                }
            )
        };
        println!(
            "{k:22} {unit:>8} {:>9.2} [{:>6.2}..{:>6.2}] {:>9.2} [{:>6.2}..{:>6.2}] {shown}",
            cm, cmin, cmax, rm, rmin, rmax,
        );
        let ratio_csv = if few_ticks {
            String::new()
        } else {
            ratio.to_string()
        };
        csv.push_str(&format!(
            "{k},{unit},{cm},{cmin},{cmax},{rm},{rmin},{rmax},{ratio_csv}\n"
        ));
    }
    std::fs::write(dir.join("bench.csv"), csv).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("throughput.svg"), svg(&summary)).map_err(|e| e.to_string())?;
    println!(
        "wrote {}/bench.csv and {}/throughput.svg",
        dir.display(),
        dir.display()
    );
    Ok(ok)
}

/// Throughput against write size, both directions, both drivers, log-log axes.
fn svg(m: &BTreeMap<String, (f64, f64)>) -> String {
    let (w, h, l, b, t, r) = (720.0, 420.0, 70.0, 50.0, 40.0, 170.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xs: Vec<f64> = SIZES.iter().map(|(s, _)| (*s as f64).log10()).collect();
    let (xmin, xmax) = (0.0, 6.1);
    let mut ymax: f64 = 1.0;
    for (k, (c, rr)) in m {
        if k.starts_with("g2h_") && !k.contains("cpu")
            || k.starts_with("h2g_") && !k.contains("cpu")
        {
            ymax = ymax.max(*c).max(*rr);
        }
    }
    let (ylo, yhi) = (-2.0f64, ymax.log10().ceil());
    let px = |x: f64| l + (x - xmin) / (xmax - xmin) * pw;
    let py = |y: f64| t + ph - (y.max(1e-2).log10() - ylo) / (yhi - ylo) * ph;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" font-size="15">virtio console throughput against write size (median)</text>
<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>
"#,
        l,
        t + ph,
        l + pw,
        t + ph,
        t + ph
    );
    for (i, (size, _)) in SIZES.iter().enumerate() {
        let label = match size {
            1 => "1 B".to_string(),
            64 => "64 B".to_string(),
            n if *n >= 1 << 20 => format!("{} MiB", n >> 20),
            n => format!("{} KiB", n >> 10),
        };
        s.push_str(&format!(
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            px(xs[i]),
            t + ph + 18.0
        ));
        s.push('\n');
    }
    let mut e = ylo as i32;
    while e as f64 <= yhi {
        let y = py(10f64.powi(e));
        s.push_str(&format!(
            r##"<line x1="{l}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>
"##,
            l + pw,
            l - 6.0,
            y + 4.0,
            10f64.powi(e)
        ));
        e += 1;
    }
    s.push_str(&format!(
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">MiB/s</text>
"#,
        t + ph / 2.0,
        t + ph / 2.0
    ));
    let series = [
        ("g2h_", 0usize, "#1f77b4", "guest→host C", "6 4"),
        ("g2h_", 1, "#1f77b4", "guest→host Rust", ""),
        ("h2g_", 0, "#d62728", "host→guest C", "6 4"),
        ("h2g_", 1, "#d62728", "host→guest Rust", ""),
    ];
    for (n, (prefix, which, color, name, dash)) in series.iter().enumerate() {
        let pts: Vec<String> = SIZES
            .iter()
            .enumerate()
            .map(|(i, (size, _))| {
                let v = m.get(&format!("{prefix}{size}")).map_or(0.0, |p| {
                    if *which == 0 {
                        p.0
                    } else {
                        p.1
                    }
                });
                format!("{:.1},{:.1}", px(xs[i]), py(v))
            })
            .collect();
        s.push_str(&format!(
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>
<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{name}</text>
"#,
            pts.join(" "),
            w - r + 10.0,
            t + 20.0 + n as f64 * 20.0,
            w - r + 40.0,
            t + 20.0 + n as f64 * 20.0,
            w - r + 46.0,
            t + 24.0 + n as f64 * 20.0
        ));
    }
    s.push_str(&format!(
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">write size</text>
</svg>
"#,
        l + pw / 2.0,
        h - 8.0
    ));
    s
}
