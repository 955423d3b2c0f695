//! `vcg sigio` and `vcg splice-*`: the guest side of the `sigio_fasync` and `splice_pipe_port`
//! scenarios. Each step prints one `@@ TAG STEP ...` line of what it saw; the host asserts them.
//! Every wait is bounded (60 s): a step that times out prints `timeout` and ends the command.

use super::{errno, errno_name, fnv, libc_consts, sys_open, sys_read, sys_write, Stream, FNV_INIT};

const SIGIO: i32 = 29;
/// The real-time signal chosen with `F_SETSIG`: queued once per `kill_fasync`, with siginfo.
const SIGRT: i32 = 40;
const F_GETFL: i32 = 3;
const F_SETFL: i32 = 4;
const F_SETOWN: i32 = 8;
const F_SETSIG: i32 = 10;
const O_ASYNC: i32 = 0o20000;
const SIG_BLOCK: i32 = 0;
const SI_KERNEL: i32 = 0x80;
const SPLICE_F_NONBLOCK: u32 = 2;
const WAIT_MS: i32 = 60_000;

/// glibc's `sigset_t` (1024 bits).
#[repr(C)]
struct SigSet([u64; 16]);

/// The kernel's `siginfo_t` (128 bytes); for `SIGPOLL` codes `si_band` is at 16 and `si_fd`
/// at 24 (x86_64).
#[repr(C, align(8))]
struct SigInfo([u8; 128]);

impl SigInfo {
    fn int(&self, off: usize) -> i32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        i32::from_ne_bytes(b)
    }
    fn long(&self, off: usize) -> i64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[off..off + 8]);
        i64::from_ne_bytes(b)
    }
    fn signo(&self) -> i32 {
        self.int(0)
    }
    fn code(&self) -> i32 {
        self.int(8)
    }
    fn band(&self) -> i64 {
        self.long(16)
    }
    fn fd(&self) -> i32 {
        self.int(24)
    }
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn getpid() -> i32;
    fn sigemptyset(set: *mut SigSet) -> i32;
    fn sigaddset(set: *mut SigSet, sig: i32) -> i32;
    fn sigprocmask(how: i32, set: *const SigSet, old: *mut SigSet) -> i32;
    fn sigtimedwait(set: *const SigSet, info: *mut SigInfo, t: *const Timespec) -> i32;
    fn pipe(fds: *mut i32) -> i32;
    fn splice(
        fd_in: i32,
        off_in: *mut i64,
        fd_out: i32,
        off_out: *mut i64,
        len: usize,
        flags: u32,
    ) -> isize;
    fn close(fd: i32) -> i32;
}

fn sigset(sigs: &[i32]) -> SigSet {
    let mut s = SigSet([0; 16]);
    // SAFETY: `s` is a valid sigset_t.
    unsafe {
        sigemptyset(&mut s);
        for &sig in sigs {
            sigaddset(&mut s, sig);
        }
    }
    s
}

/// Waits up to `ms` milliseconds (0: only what is pending now) for one of `sigs`.
fn wait_signal(sigs: &[i32], ms: i32) -> Option<SigInfo> {
    let set = sigset(sigs);
    let mut info = SigInfo([0; 128]);
    let t = Timespec {
        sec: i64::from(ms / 1000),
        nsec: i64::from(ms % 1000) * 1_000_000,
    };
    loop {
        // SAFETY: valid set, siginfo buffer and timespec.
        let r = unsafe { sigtimedwait(&set, &mut info, &t) };
        if r > 0 {
            return Some(info);
        }
        if errno() != libc_consts::EINTR {
            return None;
        }
    }
}

/// Takes every pending signal of `sigs`; describes each as `SIGNO/CODE/BAND` (`none` if none).
fn drain(sigs: &[i32], fd: i32) -> String {
    let mut seen = Vec::new();
    while let Some(i) = wait_signal(sigs, 0) {
        seen.push(describe(&i, fd));
        if seen.len() > 64 {
            break;
        }
    }
    if seen.is_empty() {
        "none".into()
    } else {
        seen.join(",")
    }
}

/// `SIGNO/CODE` for a plain `SIGIO`, `SIGNO/CODE/BAND/fd=self|N` for a queued one.
fn describe(i: &SigInfo, fd: i32) -> String {
    if i.code() == SI_KERNEL {
        format!("{}/0x{:x}", i.signo(), i.code())
    } else {
        let f = if i.fd() == fd {
            "self".to_string()
        } else {
            i.fd().to_string()
        };
        format!("{}/{}/0x{:x}/fd={f}", i.signo(), i.code(), i.band())
    }
}

fn fcntl_int(fd: i32, cmd: i32, arg: i32) -> Result<i32, i32> {
    // SAFETY: an fcntl command with an int argument.
    let r = unsafe { fcntl(fd, cmd, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

fn set_async(fd: i32, on: bool) -> Result<(), i32> {
    let fl = fcntl_int(fd, F_GETFL, 0)?;
    let fl = if on { fl | O_ASYNC } else { fl & !O_ASYNC };
    fcntl_int(fd, F_SETFL, fl).map(|_| ())
}

/// The revents of one `poll` for `events`, waiting up to `ms`.
fn poll_mask(fd: i32, events: i16, ms: i32) -> String {
    let mut p = super::PollFd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { super::poll(&mut p, 1, ms) };
    if n < 0 {
        return format!("err-{}", errno_name(errno()));
    }
    let mut s = Vec::new();
    for (bit, name) in [
        (libc_consts::POLLIN, "IN"),
        (libc_consts::POLLOUT, "OUT"),
        (libc_consts::POLLHUP, "HUP"),
    ] {
        if p.revents & bit != 0 {
            s.push(name);
        }
    }
    if s.is_empty() {
        "0".into()
    } else {
        s.join("|")
    }
}

/// Reads exactly `n` bytes from the non-blocking `fd`, polling up to 60 s for each part.
fn read_n(fd: i32, n: usize) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while out.len() < n {
        if poll_mask(fd, libc_consts::POLLIN, WAIT_MS) == "0" {
            return Err("timeout".into());
        }
        match sys_read(fd, &mut buf[..n - out.len()]) {
            Ok(0) => return Err("eof".into()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e == libc_consts::EAGAIN || e == libc_consts::EINTR => {}
            Err(e) => return Err(errno_name(e)),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Writes the stream `seed` to the non-blocking `fd` in 4 KiB writes until `EAGAIN` (at most
/// 64 MiB); returns the bytes accepted and their checksum.
fn fill(fd: i32, seed: u64) -> Result<(usize, u64), String> {
    let mut s = Stream(seed);
    let mut h = FNV_INIT;
    let mut total = 0usize;
    let mut buf = [0u8; 4096];
    let mut have = 0usize;
    while total < 64 << 20 {
        if have == 0 {
            s.fill(&mut buf);
            have = buf.len();
        }
        let off = buf.len() - have;
        match sys_write(fd, &buf[off..]) {
            Ok(k) => {
                h = fnv(h, &buf[off..off + k]);
                total += k;
                have -= k;
            }
            Err(e) if e == libc_consts::EAGAIN => return Ok((total, h)),
            Err(e) if e == libc_consts::EINTR => {}
            Err(e) => return Err(errno_name(e)),
        }
    }
    Err("never-full".into())
}

/// `sigio TAG PATH SEED`: `F_SETOWN` + `O_ASYNC` on the port, then the signals (or none) for
/// data from the host, room after a full port, the host closing and reopening its end,
/// `O_ASYNC` cleared, the file closed and reopened, and the port unplugged. The host plays
/// along step by step.
pub(super) fn sigio(tag: &str, path: &str, seed: u64) {
    let both = [SIGIO, SIGRT];
    let blocked = sigset(&both);
    // SAFETY: a valid set; the signals stay pending for sigtimedwait instead of killing us.
    if unsafe { sigprocmask(SIG_BLOCK, &blocked, std::ptr::null_mut()) } != 0 {
        println!("@@ {tag} armed sigprocmask-err {}", errno_name(errno()));
        return;
    }
    let fd = match sys_open(path, libc_consts::O_RDWR | libc_consts::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => return println!("@@ {tag} armed open-err {}", errno_name(e)),
    };
    let r = (|| -> Result<(), String> {
        let e = |what: &'static str| move |e: i32| format!("{what}-err {}", errno_name(e));
        // SAFETY: no arguments.
        fcntl_int(fd, F_SETOWN, unsafe { getpid() }).map_err(e("setown"))?;
        set_async(fd, true).map_err(e("async"))?;
        say(tag, "armed", &format!("pending={}", drain(&both, fd)));

        // Plain SIGIO (no F_SETSIG): data from the host.
        let sig = wait_signal(&both, WAIT_MS).ok_or("data-plain timeout")?;
        let data = read_n(fd, 4)?;
        let more = drain(&both, fd);
        say(
            tag,
            "data-plain",
            &format!("sig={} read={data} more={more}", describe(&sig, fd)),
        );

        // F_SETSIG: one queued signal per kill_fasync, with its code and band.
        fcntl_int(fd, F_SETSIG, SIGRT).map_err(e("setsig"))?;
        say(tag, "setsig", "ok");
        let sig = wait_signal(&both, WAIT_MS).ok_or("data-rt timeout")?;
        let data = read_n(fd, 4)?;
        let more = drain(&both, fd);
        say(
            tag,
            "data-rt",
            &format!("sig={} read={data} more={more}", describe(&sig, fd)),
        );

        // Room: fill the port while the host does not read, then let it read everything.
        let (bytes, sum) = fill(fd, seed)?;
        say(tag, "fill-signals", &drain(&both, fd));
        say(tag, "full", &format!("{bytes} {sum:016x}"));
        say(
            tag,
            "room",
            &format!("revents={}", poll_mask(fd, libc_consts::POLLOUT, WAIT_MS)),
        );
        // The host sends one byte once it has read everything: the signals queued until then.
        // Wait for the first signal before touching the port: the driver signals from the
        // byte's interrupt, and a poll or read that took the used buffer from the ring first
        // (woken by the transmit interrupts of the host's draining) would leave that interrupt
        // nothing to find, so it would send no signal (the C driver's `vring_interrupt` does
        // not call back for an empty ring). Then let the interrupt settle and take whatever
        // else is pending: a signal for the room would have been queued before the byte's and
        // shows as the first of two.
        let signals = match wait_signal(&both, WAIT_MS) {
            Some(first) => {
                std::thread::sleep(std::time::Duration::from_millis(500));
                let more = drain(&both, fd);
                if more == "none" {
                    describe(&first, fd)
                } else {
                    format!("{},{more}", describe(&first, fd))
                }
            }
            None => "none".to_string(),
        };
        let data = read_n(fd, 1)?;
        say(tag, "after-room", &format!("read={data} signals={signals}"));

        // The host end closes, then reopens.
        say(tag, "wait-close", "ok");
        let sig = wait_signal(&both, WAIT_MS).ok_or("host-close timeout")?;
        let mask = poll_mask(fd, libc_consts::POLLIN | libc_consts::POLLOUT, 0);
        let more = drain(&both, fd);
        say(
            tag,
            "host-close",
            &format!("sig={} revents={mask} more={more}", describe(&sig, fd)),
        );
        let sig = wait_signal(&both, WAIT_MS).ok_or("host-open timeout")?;
        let mask = poll_mask(fd, libc_consts::POLLIN | libc_consts::POLLOUT, 0);
        let more = drain(&both, fd);
        say(
            tag,
            "host-open",
            &format!("sig={} revents={mask} more={more}", describe(&sig, fd)),
        );

        // O_ASYNC cleared: data arrives, no signal.
        set_async(fd, false).map_err(e("async-off"))?;
        say(tag, "async-off", "ok");
        let data = read_n(fd, 2)?;
        say(
            tag,
            "off",
            &format!("read={data} signals={}", drain(&both, fd)),
        );
        Ok(())
    })();
    if let Err(what) = r {
        // SAFETY: fd is ours.
        unsafe { close(fd) };
        return say(tag, "failed", &what);
    }
    // O_ASYNC on again, then the file closed: a new file without it gets no signal.
    if let Err(e) = set_async(fd, true) {
        return say(tag, "failed", &format!("async-on-err {}", errno_name(e)));
    }
    // SAFETY: fd is ours and no longer used.
    unsafe { close(fd) };
    let fd = match sys_open(path, libc_consts::O_RDWR | libc_consts::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => return say(tag, "failed", &format!("reopen-err {}", errno_name(e))),
    };
    say(tag, "reopened", &format!("pending={}", drain(&both, fd)));
    let r = (|| -> Result<(), String> {
        let data = read_n(fd, 2)?;
        say(
            tag,
            "closed",
            &format!("read={data} signals={}", drain(&both, fd)),
        );
        // The port unplugged under a file with O_ASYNC.
        let e = |what: &'static str| move |e: i32| format!("{what}-err {}", errno_name(e));
        // SAFETY: no arguments.
        fcntl_int(fd, F_SETOWN, unsafe { getpid() }).map_err(e("setown"))?;
        fcntl_int(fd, F_SETSIG, SIGRT).map_err(e("setsig"))?;
        set_async(fd, true).map_err(e("async"))?;
        say(
            tag,
            "unplug-armed",
            &format!("pending={}", drain(&both, fd)),
        );
        let sig = wait_signal(&both, WAIT_MS).ok_or("unplug timeout")?;
        let mask = poll_mask(fd, libc_consts::POLLIN | libc_consts::POLLOUT, 0);
        let more = drain(&both, fd);
        say(
            tag,
            "unplug",
            &format!("sig={} revents={mask} more={more}", describe(&sig, fd)),
        );
        Ok(())
    })();
    if let Err(what) = r {
        say(tag, "failed", &what);
    }
    // SAFETY: fd is ours.
    unsafe { close(fd) };
}

fn say(tag: &str, step: &str, what: &str) {
    use std::io::Write;
    println!("@@ {tag} {step} {what}");
    let _ = std::io::stdout().flush();
}

fn sys_pipe() -> Result<(i32, i32), i32> {
    let mut fds = [0i32; 2];
    // SAFETY: room for two descriptors.
    if unsafe { pipe(fds.as_mut_ptr()) } != 0 {
        return Err(errno());
    }
    Ok((fds[0], fds[1]))
}

fn sys_splice(from: i32, to: i32, len: usize, flags: u32) -> Result<usize, i32> {
    // SAFETY: no offsets (both ends are streams).
    let n = unsafe {
        splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// `splice-in TAG PATH BYTES SEED`: sends BYTES of the stream SEED to the port with splice()
/// from a pipe, in rounds: up to 60,001 bytes written to the pipe (odd sizes, so pipe buffers
/// end mid-page), then spliced until the pipe is empty. Prints the count and checksum, the
/// number of splice calls that moved nothing (none expected: the pipe is never empty then).
pub(super) fn splice_in(tag: &str, path: &str, total: usize, seed: u64) {
    let Ok(port) = sys_open(path, libc_consts::O_RDWR) else {
        return say(tag, "failed", &format!("open-err {}", errno_name(errno())));
    };
    let (pr, pw) = match sys_pipe() {
        Ok(p) => p,
        Err(e) => return say(tag, "failed", &format!("pipe-err {}", errno_name(e))),
    };
    let mut s = Stream(seed);
    let mut h = FNV_INIT;
    let mut sent = 0usize;
    let mut zero = 0usize;
    let mut buf = vec![0u8; 60_001];
    let mut err = None;
    'rounds: while sent < total {
        let n = (total - sent).min(buf.len());
        s.fill(&mut buf[..n]);
        h = fnv(h, &buf[..n]);
        let mut off = 0;
        while off < n {
            match sys_write(pw, &buf[off..n]) {
                Ok(k) => off += k,
                Err(e) => {
                    err = Some(format!("pipe-write-err {}", errno_name(e)));
                    break 'rounds;
                }
            }
        }
        let mut left = n;
        while left > 0 {
            match sys_splice(pr, port, left, 0) {
                Ok(0) => {
                    zero += 1;
                    if zero > 1000 {
                        err = Some("splice-stuck".into());
                        break 'rounds;
                    }
                }
                Ok(k) => left -= k,
                Err(e) if e == libc_consts::EINTR => {}
                Err(e) => {
                    err = Some(format!("splice-err {}", errno_name(e)));
                    break 'rounds;
                }
            }
        }
        sent += n;
    }
    match err {
        None => say(
            tag,
            "spliced",
            &format!("{sent} {h:016x} zero-returns={zero}"),
        ),
        Some(e) => say(tag, "failed", &e),
    }
    // SAFETY: our descriptors.
    unsafe {
        close(pr);
        close(pw);
        close(port);
    }
}

/// `splice-out TAG PATH`: once the host's 3 bytes are readable, splice() from the port into a
/// pipe (the C driver has no `splice_read`), then read() them.
pub(super) fn splice_out(tag: &str, path: &str) {
    let Ok(port) = sys_open(path, libc_consts::O_RDWR | libc_consts::O_NONBLOCK) else {
        return say(tag, "failed", &format!("open-err {}", errno_name(errno())));
    };
    let (pr, pw) = match sys_pipe() {
        Ok(p) => p,
        Err(e) => return say(tag, "failed", &format!("pipe-err {}", errno_name(e))),
    };
    say(tag, "ready", "ok");
    let mask = poll_mask(port, libc_consts::POLLIN, WAIT_MS);
    let from_port = match sys_splice(port, pw, 4096, SPLICE_F_NONBLOCK) {
        Ok(n) => format!("ok {n}"),
        Err(e) => format!("err {}", errno_name(e)),
    };
    let data = read_n(port, 3).unwrap_or_else(|e| format!("<{e}>"));
    say(
        tag,
        "port-to-pipe",
        &format!("revents={mask} splice={from_port} read={data}"),
    );
    // SAFETY: our descriptors.
    unsafe {
        close(pr);
        close(pw);
        close(port);
    }
}

/// `splice-empty TAG PATH`: splice() with `SPLICE_F_NONBLOCK` from an empty pipe whose write
/// end is open to the port (open with and without `O_NONBLOCK`): the C driver's
/// `splice_write` returns 0 for an empty pipe before anything else.
pub(super) fn splice_empty(tag: &str, path: &str) {
    for (step, flags) in [
        ("blocking-port", libc_consts::O_RDWR),
        (
            "nonblocking-port",
            libc_consts::O_RDWR | libc_consts::O_NONBLOCK,
        ),
    ] {
        let port = match sys_open(path, flags) {
            Ok(fd) => fd,
            Err(e) => return say(tag, "failed", &format!("open-err {}", errno_name(e))),
        };
        let (pr, pw) = match sys_pipe() {
            Ok(p) => p,
            Err(e) => return say(tag, "failed", &format!("pipe-err {}", errno_name(e))),
        };
        let r = match sys_splice(pr, port, 4096, SPLICE_F_NONBLOCK) {
            Ok(n) => format!("ok {n}"),
            Err(e) => format!("err {}", errno_name(e)),
        };
        say(tag, step, &format!("splice={r}"));
        // SAFETY: our descriptors.
        unsafe {
            close(pr);
            close(pw);
            close(port);
        }
    }
}

/// `sigio-once`: asks for `SIGIO` on `fd` (`F_SETOWN` to us, `O_ASYNC`), prints
/// `@@ sigio-armed`, and waits 60 s at most for one; returns `got`, `timeout` or `setup-err`.
pub(super) fn wait_one(fd: i32) -> &'static str {
    let set = sigset(&[SIGIO]);
    // SAFETY: a valid set; SIGIO stays pending for sigtimedwait instead of killing us.
    if unsafe { sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut()) } != 0 {
        return "setup-err";
    }
    // SAFETY: no arguments.
    if fcntl_int(fd, F_SETOWN, unsafe { getpid() }).is_err() || set_async(fd, true).is_err() {
        return "setup-err";
    }
    println!("@@ sigio-armed");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match wait_signal(&[SIGIO], WAIT_MS) {
        Some(_) => "got",
        None => "timeout",
    }
}
