//! Booting a guest under QEMU, talking to its serial console, its ports and its QMP monitor.
//!
//! Every guest runs with a deadline and is killed (and its sockets removed) when the [`Vm`] is
//! dropped, whatever happened.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Result type of the harness: errors are human-readable.
pub type Res<T> = Result<T, String>;

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accel {
    Tcg,
    Kvm,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// What to boot.
pub struct VmConfig {
    pub kernel: PathBuf,
    /// Initramfs archives, concatenated in order.
    pub initrds: Vec<PathBuf>,
    /// Extra kernel command-line words (become init's environment when `key=value`).
    pub cmdline: Vec<String>,
    /// Extra QEMU arguments (devices, chardevs). `@DIR@` is replaced by the run directory.
    pub qemu_args: Vec<String>,
    pub accel: Accel,
    /// The whole run must end within this.
    pub timeout: Duration,
    /// Memory in MiB.
    pub mem: u32,
    /// The QEMU machine (`-M`): `pc`, or `microvm,acpi=off` for virtio-mmio.
    pub machine: String,
    /// Whether the kernel's console is the serial port (`console=ttyS0`); without it the
    /// command line names the console (the built-in boot's `console=hvc0`).
    pub serial_console: bool,
}

/// The machine every boot uses unless it asks for another.
pub const PC: &str = "pc";

/// A running guest.
pub struct Vm {
    child: Child,
    lines: Receiver<String>,
    /// Lines set aside by [`Vm::result_keeping_others`], read before `lines`.
    kept: std::collections::VecDeque<String>,
    /// Every line the guest printed on its console.
    pub log: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
    deadline: Instant,
    qmp: Option<BufReader<UnixStream>>,
}

static RUN_ID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Vm {
    /// Boots a guest.
    pub fn start(cfg: &VmConfig) -> Res<Vm> {
        Self::start_with(cfg, false)
    }

    /// Boots a guest; with `interactive` its console is this process's terminal (and QEMU's
    /// monitor is multiplexed on it) instead of being captured.
    pub fn start_with(cfg: &VmConfig, interactive: bool) -> Res<Vm> {
        let id = RUN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vcon-{}-{}", std::process::id(), id));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;

        // QEMU takes one initrd: concatenate the archives (the kernel unpacks them in turn).
        let initrd = dir.join("initrd.cpio");
        let mut all = Vec::new();
        for p in &cfg.initrds {
            all.extend(std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?);
        }
        std::fs::write(&initrd, all).map_err(|e| e.to_string())?;

        let d = dir.to_string_lossy().to_string();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", &cfg.machine, "-m", &cfg.mem.to_string(), "-smp", "2"])
            .args(["-accel", cfg.accel.name()])
            .args(["-display", "none", "-no-reboot", "-nodefaults"])
            .args(["-serial", if interactive { "mon:stdio" } else { "stdio" }])
            .args(["-qmp", &format!("unix:{d}/qmp.sock,server=on,wait=off")])
            .arg("-kernel")
            .arg(&cfg.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                &format!(
                    "{}panic=-1 oops=panic loglevel=6 {}",
                    if cfg.serial_console {
                        "console=ttyS0 "
                    } else {
                        ""
                    },
                    cfg.cmdline.join(" ")
                ),
            ]);
        for a in &cfg.qemu_args {
            cmd.arg(a.replace("@DIR@", &d));
        }
        let (tx, rx) = channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        if interactive {
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
            drop(tx);
            return Ok(Vm::assemble(child, rx, log, dir, cfg));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;

        let stdout = child.stdout.take().ok_or("no stdout")?;
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        if std::env::var_os("VCON_VERBOSE").is_some() {
                            eprintln!("  | {line}");
                        }
                        if let Ok(mut l) = log2.lock() {
                            l.push(line.clone());
                        }
                        if tx.send(line).is_err() {
                            // Nobody listens any more; keep draining into the log.
                        }
                    }
                }
            }
        });
        let mut stderr = child.stderr.take().ok_or("no stderr")?;
        let log3 = log.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            if let Ok(mut l) = log3.lock() {
                for line in s.lines() {
                    l.push(format!("qemu: {line}"));
                }
            }
        });
        Ok(Vm::assemble(child, rx, log, dir, cfg))
    }

    fn assemble(
        child: Child,
        lines: Receiver<String>,
        log: Arc<Mutex<Vec<String>>>,
        dir: PathBuf,
        cfg: &VmConfig,
    ) -> Vm {
        Vm {
            child,
            lines,
            kept: std::collections::VecDeque::new(),
            log,
            dir,
            deadline: Instant::now() + cfg.timeout,
            qmp: None,
        }
    }

    /// Waits for a console line for which `f` returns `Some`.
    pub fn wait_line<T>(&mut self, what: &str, mut f: impl FnMut(&str) -> Option<T>) -> Res<T> {
        while let Some(line) = self.kept.pop_front() {
            if let Some(v) = f(&line) {
                return Ok(v);
            }
        }
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out waiting for {what}"));
            }
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out waiting for {what}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("guest ended while waiting for {what}"))
                }
            }
        }
    }

    /// Waits up to `timeout` for a new result line `@@ TAG ...` and returns the text after
    /// the tag; the lines before it are kept for later waits instead of being skipped, so it
    /// can be used while other results may arrive.
    pub fn result_keeping_others(&mut self, tag: &str, timeout: Duration) -> Res<String> {
        let prefix = format!("@@ {tag} ");
        let until = (Instant::now() + timeout).min(self.deadline);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out waiting for result {tag}"));
            }
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.trim_start_matches('\r').strip_prefix(&prefix) {
                    Some(r) => return Ok(r.to_string()),
                    None => self.kept.push_back(line),
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out waiting for result {tag}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("guest ended while waiting for result {tag}"))
                }
            }
        }
    }

    /// Waits for the result line `@@ TAG ...` and returns the text after the tag.
    pub fn result(&mut self, tag: &str) -> Res<String> {
        let prefix = format!("@@ {tag} ");
        let exact = format!("@@ {tag}");
        self.wait_line(&format!("result {tag}"), |l| {
            let l = l.trim_start_matches('\r');
            if let Some(r) = l.strip_prefix(&prefix) {
                Some(r.to_string())
            } else if l == exact {
                Some(String::new())
            } else {
                None
            }
        })
    }

    /// Collects the lines between `@@BEGIN TAG` and `@@END TAG`.
    pub fn block(&mut self, tag: &str) -> Res<Vec<String>> {
        let begin = format!("@@BEGIN {tag}");
        let end = format!("@@END {tag}");
        self.wait_line(&begin, |l| (l.trim() == begin).then_some(()))?;
        let mut out = Vec::new();
        loop {
            let l = self.wait_line(&end, |l| Some(l.trim_end().to_string()))?;
            if l.trim() == end {
                return Ok(out);
            }
            // Kernel messages can interleave with the output: drop them.
            if l.starts_with('[') && l.contains("] ") {
                continue;
            }
            out.push(l);
        }
    }

    /// Connects to the host end of a port (the socket chardev with id `id`).
    pub fn connect(&self, id: &str) -> Res<UnixStream> {
        let p = self.dir.join(format!("{id}.sock"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match UnixStream::connect(&p) {
                Ok(s) => {
                    // Neither a read nor a write may wait for ever on a guest that stopped
                    // (a lost wake-up, a hang): without a write timeout, a host writing more
                    // than the socket holds to a port nobody reads blocks the harness for good.
                    s.set_read_timeout(Some(Duration::from_secs(60)))
                        .map_err(|e| e.to_string())?;
                    s.set_write_timeout(Some(Duration::from_secs(60)))
                        .map_err(|e| e.to_string())?;
                    return Ok(s);
                }
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("connect {}: {e}", p.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends a QMP command (a JSON object) and returns the reply line.
    pub fn qmp(&mut self, cmd: &str) -> Res<String> {
        if self.qmp.is_none() {
            let s =
                UnixStream::connect(self.dir.join("qmp.sock")).map_err(|e| format!("qmp: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))
                .map_err(|e| e.to_string())?;
            let mut r = BufReader::new(s);
            let mut greeting = String::new();
            r.read_line(&mut greeting)
                .map_err(|e| format!("qmp greeting: {e}"))?;
            r.get_mut()
                .write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
                .map_err(|e| e.to_string())?;
            Self::qmp_reply(&mut r)?;
            self.qmp = Some(r);
        }
        let r = self.qmp.as_mut().ok_or("qmp")?;
        r.get_mut()
            .write_all(cmd.as_bytes())
            .map_err(|e| e.to_string())?;
        r.get_mut().write_all(b"\n").map_err(|e| e.to_string())?;
        let reply = Self::qmp_reply(r)?;
        if reply.contains("\"error\"") {
            return Err(format!("qmp {cmd}: {reply}"));
        }
        Ok(reply)
    }

    fn qmp_reply(r: &mut BufReader<UnixStream>) -> Res<String> {
        loop {
            let mut line = String::new();
            let n = r
                .read_line(&mut line)
                .map_err(|e| format!("qmp read: {e}"))?;
            if n == 0 {
                return Err("qmp closed".into());
            }
            // Skip asynchronous events.
            if line.contains("\"return\"") || line.contains("\"error\"") {
                return Ok(line.trim().to_string());
            }
        }
    }

    /// Waits for the guest to finish (`@@DONE` then power-off) and returns the whole log.
    pub fn finish(self) -> Res<Vec<String>> {
        let (log, done) = self.finish_keeping_log();
        done.map(|()| log)
    }

    /// Waits for the guest to finish (`@@DONE` then power-off); returns the whole log in any
    /// case, and whether the end marker came (an error if the guest hung, crashed or ended
    /// before it).
    pub fn finish_keeping_log(mut self) -> (Vec<String>, Res<()>) {
        match self.wait_line("@@DONE", |l| (l.trim() == "@@DONE").then_some(())) {
            Ok(()) => (self.drain(), Ok(())),
            Err(e) => {
                // Lines still in flight from the reader thread.
                std::thread::sleep(Duration::from_millis(300));
                (self.log_lines(), Err(e))
            }
        }
    }

    /// After `@@DONE`: lets QEMU exit and returns the whole log.
    pub fn drain(mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.log_lines()
    }

    /// Waits until QEMU exits.
    pub fn wait_exit(&mut self) {
        let _ = self.child.wait();
    }

    /// A copy of the log so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kernel log lines that mean the kernel is unhappy, whatever the test says.
pub fn kernel_trouble(log: &[String]) -> Vec<String> {
    const BAD: [&str; 14] = [
        "WARNING:",
        "BUG:",
        "Oops",
        "Kernel panic",
        "general protection fault",
        "suspected memory leak",
        "unreferenced object",
        "UBSAN:",
        "rust_panic",
        "panicked at",
        "ODEBUG:",
        "possible circular locking",
        "inconsistent lock state",
        "invalid context",
    ];
    log.iter()
        .filter(|l| BAD.iter().any(|b| l.contains(b)))
        .cloned()
        .collect()
}

/// The line the kernel prints when `echo c > /proc/sysrq-trigger` starts a crash on purpose.
pub const SYSRQ_CRASH: &str = "sysrq: Trigger a crash";

/// For a run that panics on purpose with sysrq `c`: the kernel trouble other than that panic.
/// The sysrq line must be in the log; everything before it is checked like any run, and
/// after it only the panic's own lines (`Kernel panic - not syncing: sysrq triggered crash`)
/// are expected.
pub fn trouble_besides_sysrq_crash(log: &[String]) -> Res<Vec<String>> {
    let at = log
        .iter()
        .position(|l| l.contains(SYSRQ_CRASH))
        .ok_or_else(|| format!("no {SYSRQ_CRASH:?} line in the guest's log"))?;
    let mut trouble = kernel_trouble(&log[..at]);
    trouble.extend(
        kernel_trouble(&log[at + 1..])
            .into_iter()
            .filter(|l| !l.contains("Kernel panic - not syncing: sysrq triggered crash")),
    );
    Ok(trouble)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn only_the_intended_panic_is_expected() {
        let clean = log(&[
            "[    1.0] virtio_console_rs: loaded",
            "[    1.2] sysrq: Trigger a crash",
            "[    1.2] Kernel panic - not syncing: sysrq triggered crash",
            "[    1.3] Kernel Offset: disabled",
        ]);
        assert_eq!(trouble_besides_sysrq_crash(&clean), Ok(vec![]));
        // Trouble before the crash, or another problem after it, is reported.
        let mut before = clean.clone();
        before.insert(
            1,
            "[    1.1] WARNING: CPU: 0 PID: 1 at drivers/x.c:1".into(),
        );
        assert_eq!(trouble_besides_sysrq_crash(&before).map(|t| t.len()), Ok(1));
        let mut after = clean.clone();
        after.push("[    1.4] BUG: KFENCE: use-after-free read".into());
        assert_eq!(trouble_besides_sysrq_crash(&after).map(|t| t.len()), Ok(1));
        // A panic that is not the one asked for.
        let other = log(&["[    1.2] Kernel panic - not syncing: Fatal exception"]);
        assert!(trouble_besides_sysrq_crash(&other).is_err());
    }
}
