//! `vcg`: the guest-side tool of the test harness. Runs inside the busybox initramfs and does
//! the file operations that need exact errnos, which shell tools hide. Every result is one line
//! on stdout that the host parses.

use std::ffi::CString;
use std::io::Write;

#[path = "vcg/async_io.rs"]
mod async_io;

fn errno_name(e: i32) -> String {
    let name = match e {
        libc_consts::EAGAIN => "EAGAIN",
        libc_consts::EBUSY => "EBUSY",
        libc_consts::ENXIO => "ENXIO",
        libc_consts::ENODEV => "ENODEV",
        libc_consts::ENOENT => "ENOENT",
        libc_consts::EINTR => "EINTR",
        libc_consts::EFAULT => "EFAULT",
        libc_consts::EINVAL => "EINVAL",
        libc_consts::EIO => "EIO",
        libc_consts::EPIPE => "EPIPE",
        _ => return format!("E{e}"),
    };
    name.to_string()
}

/// The few libc constants we need, for x86_64 Linux.
mod libc_consts {
    pub const EINTR: i32 = 4;
    pub const EIO: i32 = 5;
    pub const ENXIO: i32 = 6;
    pub const EAGAIN: i32 = 11;
    pub const EFAULT: i32 = 14;
    pub const EBUSY: i32 = 16;
    pub const ENODEV: i32 = 19;
    pub const EINVAL: i32 = 22;
    pub const EPIPE: i32 = 32;
    pub const ENOENT: i32 = 2;
    pub const O_RDWR: i32 = 2;
    pub const O_NONBLOCK: i32 = 0o4000;
    pub const POLLIN: i16 = 1;
    pub const POLLOUT: i16 = 4;
    pub const POLLHUP: i16 = 16;
}

extern "C" {
    fn open(path: *const i8, flags: i32, ...) -> i32;
    fn close(fd: i32) -> i32;
    fn read(fd: i32, buf: *mut u8, n: usize) -> isize;
    fn write(fd: i32, buf: *const u8, n: usize) -> isize;
    fn poll(fds: *mut PollFd, n: u64, timeout: i32) -> i32;
    fn __errno_location() -> *mut i32;
    fn tcgetattr(fd: i32, t: *mut Termios) -> i32;
    fn tcsetattr(fd: i32, when: i32, t: *const Termios) -> i32;
    fn cfmakeraw(t: *mut Termios);
}

/// glibc's `struct termios` (60 bytes on x86_64), only ever filled and read by libc.
#[repr(C, align(4))]
struct Termios([u8; 64]);

/// Puts the terminal `fd` in raw mode (`cfmakeraw`: no output processing, no echo).
fn make_raw(fd: i32) -> Result<(), i32> {
    let mut t = Termios([0; 64]);
    // SAFETY: `t` is large enough for glibc's termios; `fd` is open.
    unsafe {
        if tcgetattr(fd, &mut t) != 0 {
            return Err(errno());
        }
        cfmakeraw(&mut t);
        if tcsetattr(fd, 0, &t) != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

#[repr(C)]
struct PollFd {
    fd: i32,
    events: i16,
    revents: i16,
}

fn errno() -> i32 {
    // SAFETY: libc's thread-local errno.
    unsafe { *__errno_location() }
}

fn sys_open(path: &str, flags: i32) -> Result<i32, i32> {
    let c = CString::new(path).map_err(|_| libc_consts::EINVAL)?;
    // SAFETY: valid C string.
    let fd = unsafe { open(c.as_ptr(), flags) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

fn sys_read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: valid buffer.
    let n = unsafe { read(fd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

fn sys_write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: valid buffer.
    let n = unsafe { write(fd, buf.as_ptr(), buf.len()) };
    if n < 0 {
        Err(errno())
    } else {
        Ok(n as usize)
    }
}

/// Opens `path`, runs `f` on the descriptor and closes it; reports a failed open as
/// `@@ TAG open-err ERRNO`.
fn with_open(tag: &str, path: &str, flags: i32, f: impl FnOnce(i32)) {
    match sys_open(path, flags) {
        Ok(fd) => {
            f(fd);
            // SAFETY: fd is ours and no longer used.
            unsafe { close(fd) };
        }
        Err(e) => println!("@@ {tag} open-err {}", errno_name(e)),
    }
}

fn result_line(tag: &str, r: Result<usize, i32>) {
    match r {
        Ok(n) => println!("@@ {tag} ok {n}"),
        Err(e) => println!("@@ {tag} err {}", errno_name(e)),
    }
}

/// A deterministic byte stream shared with the host: xorshift of the seed.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 24) as u8;
        }
    }
}

/// FNV-1a, the checksum the host computes too.
fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

const FNV_INIT: u64 = 0xcbf29ce484222325;

/// Busy guest CPU time in jiffies (user, nice, system, irq, softirq of all CPUs).
fn cpu_jiffies() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    [0usize, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum()
}

/// Reads until `total` bytes, end of file or an error (other than `EINTR`); returns the bytes
/// read, their FNV-1a checksum and the error, if any.
fn read_checksummed(fd: i32, total: usize) -> (usize, u64, Option<i32>) {
    let mut h = FNV_INIT;
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    while got < total {
        match sys_read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h = fnv(h, &buf[..n]);
                got += n;
            }
            Err(e) if e == libc_consts::EINTR => {}
            Err(e) => return (got, h, Some(e)),
        }
    }
    (got, h, None)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cmd = args.get(1).map(String::as_str).unwrap_or("");
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let tag = args.get(2).cloned().unwrap_or_default();
    match cmd {
        // open TAG PATH [nonblock]: try to open, report, close.
        "open" => {
            let flags = libc_consts::O_RDWR
                | if arg(4) == "nonblock" {
                    libc_consts::O_NONBLOCK
                } else {
                    0
                };
            let r = sys_open(&arg(3), flags);
            result_line(
                &tag,
                r.map(|fd| {
                    // SAFETY: fd is ours.
                    unsafe { close(fd) };
                    0
                }),
            );
        }
        // open-twice TAG PATH: the second open's result while the first is held.
        "open-twice" => match sys_open(&arg(3), libc_consts::O_RDWR) {
            Ok(fd) => {
                let r = sys_open(&arg(3), libc_consts::O_RDWR).map(|fd2| {
                    // SAFETY: fd2 is ours.
                    unsafe { close(fd2) };
                    0
                });
                result_line(&tag, r);
                // SAFETY: fd is ours.
                unsafe { close(fd) };
            }
            Err(e) => println!("@@ {tag} first-open-failed {}", errno_name(e)),
        },
        // read TAG PATH N [nonblock]: one read() of up to N bytes; prints the data as text.
        "read" => {
            let flags = libc_consts::O_RDWR
                | if arg(5) == "nonblock" {
                    libc_consts::O_NONBLOCK
                } else {
                    0
                };
            with_open(&tag, &arg(3), flags, |fd| {
                println!("@@ {tag}-opened");
                let _ = std::io::stdout().flush();
                let want: usize = arg(4).parse().unwrap_or(65536);
                let mut buf = vec![0u8; want.max(1)];
                let r = sys_read(fd, &mut buf);
                match r {
                    Ok(n) => println!("@@ {tag} ok {n} {}", String::from_utf8_lossy(&buf[..n])),
                    Err(e) => println!("@@ {tag} err {}", errno_name(e)),
                }
            });
        }
        // write TAG PATH TEXT [nonblock]
        "write" => {
            let flags = libc_consts::O_RDWR
                | if arg(5) == "nonblock" {
                    libc_consts::O_NONBLOCK
                } else {
                    0
                };
            with_open(&tag, &arg(3), flags, |fd| {
                result_line(&tag, sys_write(fd, arg(4).as_bytes()));
            });
        }
        // poll TAG PATH: the revents of one poll with timeout 0.
        "poll" => match sys_open(&arg(3), libc_consts::O_RDWR | libc_consts::O_NONBLOCK) {
            Ok(fd) => {
                std::thread::sleep(std::time::Duration::from_millis(200));
                let mut p = PollFd {
                    fd,
                    events: libc_consts::POLLIN | libc_consts::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { poll(&mut p, 1, 0) };
                let mut s = Vec::new();
                if p.revents & libc_consts::POLLIN != 0 {
                    s.push("IN");
                }
                if p.revents & libc_consts::POLLOUT != 0 {
                    s.push("OUT");
                }
                if p.revents & libc_consts::POLLHUP != 0 {
                    s.push("HUP");
                }
                println!(
                    "@@ {tag} mask {}",
                    if s.is_empty() {
                        "0".to_string()
                    } else {
                        s.join("|")
                    }
                );
                // SAFETY: fd is ours.
                unsafe { close(fd) };
            }
            Err(e) => println!("@@ {tag} open-err {}", errno_name(e)),
        },
        // hold TAG PATH SECS: open, announce, then block in read() and report how it ended
        // (used to unplug a port under a reader).
        "hold-read" => match sys_open(&arg(3), libc_consts::O_RDWR) {
            Ok(fd) => {
                println!("@@ {tag} opened");
                let _ = std::io::stdout().flush();
                let mut buf = [0u8; 16];
                let r = sys_read(fd, &mut buf);
                result_line(&format!("{tag}-read"), r);
                result_line(&format!("{tag}-read-again"), sys_read(fd, &mut buf));
                result_line(&format!("{tag}-write"), sys_write(fd, b"x"));
                // SAFETY: fd is ours.
                unsafe { close(fd) };
            }
            Err(e) => println!("@@ {tag} open-err {}", errno_name(e)),
        },
        // sigio-once TAG PATH: ask for SIGIO on the file (O_ASYNC), report when one arrives
        // (or after 60 s without), then close the file with O_ASYNC still set.
        "sigio-once" => match sys_open(&arg(3), libc_consts::O_RDWR) {
            Ok(fd) => {
                println!("@@ {tag} {}", async_io::wait_one(fd));
                // SAFETY: fd is ours.
                unsafe { close(fd) };
                println!("@@ {tag}-closed");
            }
            Err(e) => println!("@@ {tag} open-err {}", errno_name(e)),
        },
        // send TAG PATH BYTES SEED: write a deterministic stream, print its checksum.
        "send" => {
            let total: usize = arg(4).parse().unwrap_or(0);
            let seed: u64 = arg(5).parse().unwrap_or(1);
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                let mut s = Stream(seed);
                let mut h = FNV_INIT;
                let mut left = total;
                let mut buf = vec![0u8; 32768];
                let mut err = None;
                // The sum of what the writes returned: the count reported.
                let mut sent = 0usize;
                'outer: while left > 0 {
                    let n = left.min(buf.len());
                    s.fill(&mut buf[..n]);
                    h = fnv(h, &buf[..n]);
                    left -= n;
                    let mut off = 0;
                    while off < n {
                        match sys_write(fd, &buf[off..n]) {
                            Ok(k) => {
                                off += k;
                                sent += k;
                            }
                            Err(e) if e == libc_consts::EINTR => {}
                            Err(e) => {
                                err = Some(e);
                                break 'outer;
                            }
                        }
                    }
                }
                match err {
                    None => println!("@@ {tag} sent {sent} {h:016x}"),
                    Some(e) => println!("@@ {tag} err {} after {sent}", errno_name(e)),
                }
            });
        }
        // recv TAG PATH BYTES: read that many bytes, print length and checksum.
        "recv" => {
            let total: usize = arg(4).parse().unwrap_or(0);
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                println!("@@ {tag} opened");
                let _ = std::io::stdout().flush();
                let (got, h, err) = read_checksummed(fd, total);
                if let Some(e) = err {
                    println!("@@ {tag} err {}", errno_name(e));
                }
                println!("@@ {tag} received {got} {h:016x}");
            });
        }
        // bench-g2h TAG PATH SIZE TOTAL [raw]: write TOTAL bytes in SIZE-byte writes; report
        // time and guest CPU jiffies. With `raw` the terminal PATH is put in raw mode first.
        "bench-g2h" => {
            let size: usize = arg(4).parse().unwrap_or(4096).max(1);
            let total: usize = arg(5).parse().unwrap_or(1 << 20);
            let raw = arg(6) == "raw";
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                if raw {
                    if let Err(e) = make_raw(fd) {
                        println!("@@ {tag} err {}", errno_name(e));
                        return;
                    }
                }
                let buf = vec![0x5au8; size];
                let cpu0 = cpu_jiffies();
                let t0 = std::time::Instant::now();
                let mut left = total;
                let mut err = None;
                while left > 0 {
                    let n = left.min(size);
                    match sys_write(fd, &buf[..n]) {
                        Ok(k) => left -= k,
                        Err(e) if e == libc_consts::EINTR => {}
                        Err(e) => {
                            err = Some(e);
                            break;
                        }
                    }
                }
                let ns = t0.elapsed().as_nanos();
                let cpu = cpu_jiffies() - cpu0;
                match err {
                    None => println!("@@ {tag} {total} {ns} {cpu}"),
                    Some(e) => println!("@@ {tag} err {}", errno_name(e)),
                }
            });
        }
        // bench-h2g TAG PATH TOTAL: announce, then read TOTAL bytes; time from the first byte;
        // `@@ TAG BYTES NS CPU_JIFFIES READS`.
        // A read error ends the run with `@@ TAG err ERRNO after BYTES`.
        "bench-h2g" => {
            let total: usize = arg(4).parse().unwrap_or(1 << 20);
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                println!("@@ {tag}-ready");
                let _ = std::io::stdout().flush();
                let mut buf = vec![0u8; 65536];
                let mut got = 0;
                let mut reads = 0u64;
                let mut t0 = None;
                let mut cpu0 = 0;
                while got < total {
                    match sys_read(fd, &mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if t0.is_none() {
                                t0 = Some(std::time::Instant::now());
                                cpu0 = cpu_jiffies();
                            }
                            got += n;
                            reads += 1;
                        }
                        Err(e) if e == libc_consts::EINTR => {}
                        Err(e) => {
                            println!("@@ {tag} err {} after {got}", errno_name(e));
                            return;
                        }
                    }
                }
                let ns = t0.map_or(0, |t| t.elapsed().as_nanos());
                let cpu = cpu_jiffies() - cpu0;
                println!("@@ {tag} {got} {ns} {cpu} {reads}");
            });
        }
        // bench-ping TAG PATH N: N one-byte round trips with a host that echoes; median and
        // 99th percentile in ns.
        "bench-ping" => {
            let n: usize = arg(4).parse().unwrap_or(1000).max(1);
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                let mut lat = Vec::with_capacity(n);
                let mut b = [0u8; 1];
                let mut err = None;
                'pings: for _ in 0..n {
                    let t0 = std::time::Instant::now();
                    if let Err(e) = sys_write(fd, b"p") {
                        err = Some(("write", e));
                        break;
                    }
                    loop {
                        match sys_read(fd, &mut b) {
                            Ok(1) => break,
                            Ok(_) => {}
                            Err(e) if e == libc_consts::EINTR => {}
                            Err(e) => {
                                err = Some(("read", e));
                                break 'pings;
                            }
                        }
                    }
                    lat.push(t0.elapsed().as_nanos());
                }
                if let Some((op, e)) = err {
                    println!(
                        "@@ {tag} err {op} {} after {} pings",
                        errno_name(e),
                        lat.len()
                    );
                    return;
                }
                lat.sort_unstable();
                let med = lat.get(lat.len() / 2).copied().unwrap_or(0);
                let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0);
                println!("@@ {tag} {} {med} {p99}", lat.len());
            });
        }
        // twothreads TAG PATH N SEED: one fd, one thread writing N bytes of the stream SEED in
        // 1 KiB writes while another reads until it has N bytes back (the host echoes) and
        // compares them with the stream; reports both counts, where the data read first
        // differs and the first error of each thread.
        "twothreads" => {
            let n: usize = arg(4).parse().unwrap_or(1 << 20);
            let seed: u64 = arg(5).parse().unwrap_or(1);
            let mut data = vec![0u8; n];
            Stream(seed).fill(&mut data);
            let data = std::sync::Arc::new(data);
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                let src = data.clone();
                let writer = std::thread::spawn(move || {
                    let mut sent = 0;
                    while sent < n {
                        match sys_write(fd, &src[sent..n.min(sent + 1024)]) {
                            Ok(k) => sent += k,
                            Err(e) if e == libc_consts::EINTR => {}
                            Err(e) => return (sent, Some(e)),
                        }
                    }
                    (sent, None)
                });
                let mut got = 0;
                let mut differs = None;
                let mut rerr = None;
                let mut buf = vec![0u8; 4096];
                while got < n {
                    match sys_read(fd, &mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            let want = &data[got.min(n)..(got + k).min(n)];
                            if differs.is_none() && (k > n - got || buf[..k] != *want) {
                                let at = buf[..k].iter().zip(want).take_while(|(a, b)| a == b);
                                differs = Some(got + at.count());
                            }
                            got += k;
                        }
                        Err(e) if e == libc_consts::EINTR => {}
                        Err(e) => {
                            rerr = Some(e);
                            break;
                        }
                    }
                }
                let (wrote, werr) = writer.join().unwrap_or((0, Some(libc_consts::EIO)));
                let name = |e: Option<i32>| e.map_or("none".into(), errno_name);
                let differs = differs.map_or("none".into(), |d| d.to_string());
                println!(
                    "@@ {tag} wrote {wrote} read {got} differs-at {differs} write-err {} read-err {}",
                    name(werr),
                    name(rerr)
                );
            });
        }
        // duplex TAG PATH BYTES SEED: one fd; one thread writes BYTES of the stream SEED
        // while the main thread reads BYTES; prints both counts and checksums.
        "duplex" => {
            let total: usize = arg(4).parse().unwrap_or(0);
            let seed: u64 = arg(5).parse().unwrap_or(1);
            with_open(&tag, &arg(3), libc_consts::O_RDWR, |fd| {
                let writer = std::thread::spawn(move || {
                    let mut s = Stream(seed);
                    let mut h = FNV_INIT;
                    let mut sent = 0usize;
                    let mut buf = vec![0u8; 32768];
                    'outer: while sent < total {
                        let n = (total - sent).min(buf.len());
                        s.fill(&mut buf[..n]);
                        h = fnv(h, &buf[..n]);
                        let mut off = 0;
                        while off < n {
                            match sys_write(fd, &buf[off..n]) {
                                Ok(k) => off += k,
                                Err(e) if e == libc_consts::EINTR => {}
                                Err(_) => break 'outer,
                            }
                        }
                        sent += n;
                    }
                    (sent, h)
                });
                let (got, h, _) = read_checksummed(fd, total);
                let (sent, hs) = writer.join().unwrap_or((0, 0));
                println!("@@ {tag} sent {sent} {hs:016x} received {got} {h:016x}");
            });
        }
        // sigio TAG PATH SEED / splice-in TAG PATH BYTES SEED / splice-out|splice-empty TAG PATH
        "sigio" => async_io::sigio(&tag, &arg(3), arg(4).parse().unwrap_or(1)),
        "splice-in" => async_io::splice_in(
            &tag,
            &arg(3),
            arg(4).parse().unwrap_or(0),
            arg(5).parse().unwrap_or(1),
        ),
        "splice-out" => async_io::splice_out(&tag, &arg(3)),
        "splice-empty" => async_io::splice_empty(&tag, &arg(3)),
        _ => {
            eprintln!(
                "usage: vcg open|open-twice|read|write|poll|hold-read|send|recv|duplex TAG PATH ..."
            );
            std::process::exit(2);
        }
    }
    let _ = std::io::stdout().flush();
}
