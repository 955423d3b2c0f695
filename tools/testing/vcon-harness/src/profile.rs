//! `make profile`: where the guest's instructions go, per kernel function, for one workload.
//!
//! The guest runs under `-icount shift=0` with the `vcon-tcg-profile` QEMU plugin, which counts
//! the instructions executed in every kernel translation block. Two boots run the same
//! workload, once with N units (writes) and once with 2N; the difference of the two counts is
//! the cost of N units without the boot, the module load or the symbol dump, so it is divided
//! by N and attributed to the kernel function (from `System.map`, and for modules from the
//! guest's `/proc/kallsyms`) each block starts in.

use crate::bench::{drain, send_stream};
use crate::scenarios::Driver;
use crate::vm::{Res, Vm, VmConfig};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// What one profiled boot runs.
pub struct Workload {
    /// `/dev/vport0p1` or `/dev/hvc0`.
    pub node: String,
    /// Bytes per `write()`.
    pub size: usize,
    /// Writes in the smaller of the two boots.
    pub writes: usize,
    /// Put the terminal in raw mode first (for `/dev/hvc0`).
    pub raw: bool,
    /// A 1-byte ping-pong instead of a stream (the host echoes; `size` is ignored).
    pub ping: bool,
    /// Host to guest instead: the host writes `size` bytes per `write()` and the guest reads.
    pub h2g: bool,
}

fn guest_script(w: &Workload, writes: usize) -> String {
    format!(
        concat!(
            "load_driver\nwait_for /dev/vport0p1\nwait_for /dev/hvc0\n",
            "for p in 0 1; do until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p$p; do sleep 0.1; done; done\n",
            "echo '@@BEGIN syms'; grep virtio_console /proc/modules; echo '@@END syms'\n",
            "irqs() {{ awk '/virtio/{{for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i}} END{{print s + 0}}' /proc/interrupts; }}\n",
            "i0=$(irqs)\n",
            "{work}\n",
            "echo \"@@ irqs $(( $(irqs) - i0 ))\"\n",
        ),
        work = if w.ping {
            format!("vcg bench-ping work {} {writes}", w.node)
        } else if w.h2g {
            format!("vcg bench-h2g work {} {}", w.node, w.size * writes)
        } else {
            format!(
                "vcg bench-g2h work {} {} {} {}",
                w.node,
                w.size,
                w.size * writes,
                if w.raw { "raw" } else { "" }
            )
        },
    )
}

fn qemu_args(plugin: &Path, out: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-serial-pci,id=vser0".into(),
        "-chardev".into(),
        "socket,id=con0,path=@DIR@/con0.sock,server=on,wait=off".into(),
        "-device".into(),
        "virtconsole,bus=vser0.0,chardev=con0,nr=0".into(),
        "-chardev".into(),
        "socket,id=p1,path=@DIR@/p1.sock,server=on,wait=off".into(),
        "-device".into(),
        "virtserialport,bus=vser0.0,chardev=p1,nr=1".into(),
        "-icount".into(),
        "shift=0,sleep=on".into(),
        "-plugin".into(),
        format!("{},arg=out={}", plugin.display(), out.display()),
    ]
}

fn echo(s: std::os::unix::net::UnixStream) {
    std::thread::spawn(move || {
        let Ok(mut w) = s.try_clone() else {
            return;
        };
        let mut r = s;
        let mut b = [0u8; 64];
        while let Ok(n) = r.read(&mut b) {
            if n == 0 || std::io::Write::write_all(&mut w, &b[..n]).is_err() {
                break;
            }
        }
    });
}

/// Instructions per block start address, and the user-space total.
type Counts = (HashMap<u64, u64>, u64);

fn read_counts(p: &Path) -> Res<Counts> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut m = HashMap::new();
    let mut user = 0;
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let (Some(a), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        let n: u64 = n.parse().map_err(|_| format!("bad line {l:?}"))?;
        if a == "user" {
            user = n;
        } else {
            m.insert(
                u64::from_str_radix(a, 16).map_err(|_| format!("bad line {l:?}"))?,
                n,
            );
        }
    }
    Ok((m, user))
}

/// Boots once with `writes` units of `w`; returns the counts and the guest's module and
/// `_text` symbol lines.
fn boot(cfg: &VmConfig, out: &Path, w: &Workload, writes: usize) -> Res<(Counts, Vec<String>)> {
    let mut vm = Vm::start(cfg)?;
    vm.wait_line("@@BOOTED", |l| (l.trim() == "@@BOOTED").then_some(()))?;
    let p1 = vm.connect("p1")?;
    let mut host_writer = None;
    if w.ping {
        echo(p1);
    } else if w.h2g {
        host_writer = Some(p1);
    } else {
        drain(p1);
    }
    drain(vm.connect("con0")?);
    let syms = vm.block("syms")?;
    // Kept open until the guest has read everything: QEMU drops what it has not delivered
    // yet when the host end closes, and the guest would see the end of file early.
    if let Some(s) = host_writer.as_mut() {
        vm.result("work-ready")?;
        send_stream(s, w.size, w.size * writes)?;
    }
    let r = vm.result("work")?;
    drop(host_writer);
    if w.h2g && r.split_whitespace().next() != Some(&(w.size * writes).to_string()) {
        return Err(format!(
            "the guest did not read all {} bytes: {r}",
            w.size * writes
        ));
    }
    eprintln!("  guest: {}", r.trim());
    eprintln!(
        "  virtio interrupts during the work: {}",
        vm.result("irqs")?.trim()
    );
    vm.finish()?;
    Ok((read_counts(out)?, syms))
}

/// A readable short form of a Rust v0 symbol: its last identifiers joined by `::`
/// (a heuristic that skips hashes and back-references, good enough for a profile).
fn short_name(sym: &str) -> String {
    if !sym.starts_with("_R") {
        return sym.to_string();
    }
    let b = sym.as_bytes();
    let mut idents = Vec::new();
    let mut i = 2;
    while i < b.len() {
        if b[i].is_ascii_digit() && !b[i - 1].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            let len: usize = sym[i..j].parse().unwrap_or(0);
            let id = sym.get(j..j + len).unwrap_or("");
            let first = id.bytes().next().unwrap_or(b'0');
            if len >= 3
                && (first.is_ascii_alphabetic() || first == b'_')
                && !id[1..].starts_with(|c: char| c.is_ascii_digit())
                && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                idents.push(id);
                i = j + len;
                continue;
            }
        }
        i += 1;
    }
    let keep: Vec<&str> = idents
        .iter()
        .copied()
        .filter(|s| !matches!(*s, "kernel" | "core" | "alloc"))
        .collect();
    keep[keep.len().saturating_sub(3)..].join("::")
}

/// Functions of a module's `.text`, as offsets from it, from `readelf`.
fn module_text_symbols(ko: &Path) -> Res<Vec<(u64, String)>> {
    let out = std::process::Command::new("readelf")
        .arg("-SsW")
        .arg(ko)
        .output()
        .map_err(|e| format!("readelf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut text_index = None;
    let mut v = Vec::new();
    for l in text.lines() {
        let l = l.trim();
        // Section headers: "[ 1] .text PROGBITS ...".
        if let Some(rest) = l.strip_prefix('[') {
            if let Some((idx, tail)) = rest.split_once(']') {
                if tail.split_whitespace().next() == Some(".text") {
                    text_index = idx.trim().parse::<u32>().ok();
                }
            }
            continue;
        }
        // Symbols: "20: 0000000000000683 29 FUNC LOCAL DEFAULT 1 name".
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 8 && f[3] == "FUNC" && f[6].parse::<u32>().ok() == text_index {
            if let Ok(a) = u64::from_str_radix(f[1], 16) {
                v.push((a, f[7].to_string()));
            }
        }
    }
    Ok(v)
}

/// Symbol table: sorted start addresses and names. The kernel has no kallsyms here, so
/// vmlinux symbols come from `System.map` (the kernel is not relocated: no KASLR) and the
/// module's from its `.ko`, placed at the base `/proc/modules` gives (`.text` comes first).
fn symbols(out: &Path, guest: &[String]) -> Res<Vec<(u64, String)>> {
    let system_map = out.join("System.map");
    let text = std::fs::read_to_string(&system_map)
        .map_err(|e| format!("{}: {e} (run 'make build')", system_map.display()))?;
    let mut v = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || !matches!(f[1], "t" | "T" | "w" | "W") {
            continue;
        }
        if let Ok(a) = u64::from_str_radix(f[0], 16) {
            v.push((a, short_name(f[2])));
        }
    }
    // "virtio_console_rs 622592 0 - Live 0xffffffffa0000000".
    for l in guest {
        let f: Vec<&str> = l.split_whitespace().collect();
        let (Some(name), Some(base)) = (f.first(), f.iter().find(|w| w.starts_with("0x"))) else {
            continue;
        };
        let Ok(base) = u64::from_str_radix(base.trim_start_matches("0x"), 16) else {
            continue;
        };
        for (off, sym) in module_text_symbols(&out.join(format!("{name}.ko")))? {
            v.push((base + off, format!("[{name}] {}", short_name(&sym))));
        }
    }
    v.sort();
    Ok(v)
}

/// Runs the two boots for `driver` and prints instructions per write by function.
pub fn run(
    make_cfg: &dyn Fn(Driver, String) -> VmConfig,
    driver: Driver,
    w: &Workload,
    plugin: &Path,
    out_dir: &Path,
    dir: &Path,
    top: usize,
) -> Res<bool> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    for k in [1, 2] {
        let out = dir.join(format!("{}-{k}.counts", driver.name()));
        let _ = std::fs::remove_file(&out);
        let mut cfg = make_cfg(driver, guest_script(w, w.writes * k));
        cfg.qemu_args = qemu_args(plugin, &out);
        eprintln!(
            "  {} boot with {} writes of {} bytes to {}",
            driver.name(),
            w.writes * k,
            w.size,
            w.node
        );
        runs.push(boot(&cfg, &out, w, w.writes * k)?);
    }
    let ((small, user1), _) = &runs[0];
    let ((large, user2), syms) = &runs[1];
    let table = symbols(out_dir, syms)?;
    if table.iter().all(|s| !s.1.starts_with('[')) {
        eprintln!("  warning: no module symbols; /proc/modules said {syms:?}");
    }
    let mut by_fn: BTreeMap<String, i64> = BTreeMap::new();
    let mut total = 0i64;
    let keys: std::collections::BTreeSet<u64> = small.keys().chain(large.keys()).copied().collect();
    for a in keys {
        let d = *large.get(&a).unwrap_or(&0) as i64 - *small.get(&a).unwrap_or(&0) as i64;
        if d == 0 {
            continue;
        }
        total += d;
        let name = match table.partition_point(|s| s.0 <= a) {
            0 => format!("{a:#x}"),
            i => table[i - 1].1.clone(),
        };
        *by_fn.entry(name).or_default() += d;
    }
    let n = w.writes as f64;
    let mut v: Vec<(String, i64)> = by_fn.into_iter().collect();
    v.sort_by_key(|x| -x.1.abs());
    println!(
        "{}: {} bytes per {} {}{}: guest kernel instructions per write {:.0}, user {:.0}",
        driver.name(),
        if w.ping { 1 } else { w.size },
        if w.h2g {
            "host write, read from"
        } else {
            "write to"
        },
        w.node,
        if w.ping {
            " (ping-pong, per round trip)"
        } else if w.raw {
            " (raw)"
        } else {
            ""
        },
        total as f64 / n,
        (*user2 as f64 - *user1 as f64) / n
    );
    for (name, d) in v.iter().take(top) {
        println!("  {:>9.1}  {name}", *d as f64 / n);
    }
    Ok(true)
}
