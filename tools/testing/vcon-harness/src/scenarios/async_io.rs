//! Scenarios for SIGIO (`fasync`) and `splice()` on a port. The expected lines are what the C
//! driver does (read from `drivers/char/virtio_console.c` and seen in runs of
//! `virtio_console.ko`); both drivers must print them exactly.

use super::{check, expect_eq, fnv, port, serial, Res, Scenario, Stream, Vm, FNV_INIT};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

/// The FNV-1a checksum of the first `n` bytes of the stream `seed`.
fn stream_sum(seed: u64, n: usize) -> u64 {
    let mut s = Stream(seed);
    let mut h = FNV_INIT;
    let mut buf = vec![0u8; 65536];
    let mut left = n;
    while left > 0 {
        let k = left.min(buf.len());
        s.fill(&mut buf[..k]);
        h = fnv(h, &buf[..k]);
        left -= k;
    }
    h
}

/// Reads `n` bytes from the host end; returns their checksum.
fn read_sum(s: &mut UnixStream, n: usize) -> Res<u64> {
    let mut h = FNV_INIT;
    let mut got = 0;
    let mut buf = vec![0u8; 65536];
    while got < n {
        let k = s
            .read(&mut buf[..(n - got).min(65536)])
            .map_err(|e| format!("host read after {got} of {n} bytes: {e}"))?;
        if k == 0 {
            return Err(format!("host end closed after {got} of {n} bytes"));
        }
        h = fnv(h, &buf[..k]);
        got += k;
    }
    Ok(h)
}

fn send(s: &mut UnixStream, data: &[u8]) -> Res<()> {
    s.write_all(data).map_err(|e| format!("host write: {e}"))
}

/// The guest's next line `@@ sig ...`; its `failed` line (a step timed out or a call failed)
/// is an error.
fn next_sig(vm: &mut Vm, step: &str) -> Res<String> {
    let got = vm.result("sig")?;
    check(!got.starts_with("failed "), || {
        format!("guest failed before {step}: {got}")
    })?;
    Ok(got)
}

/// Waits for the guest's line `@@ sig STEP ...` and checks the rest of it; returns the line.
fn step(vm: &mut Vm, step: &str, want: &str) -> Res<String> {
    let got = next_sig(vm, step)?;
    expect_eq(&got, &format!("{step} {want}"), step)?;
    Ok(got)
}

const SIGIO_SEED: u64 = 11;

/// SIGIO: the C driver calls `kill_fasync(..., SIGIO, POLL_OUT)` when data arrives
/// (`in_intr`), when the host opens or closes its end (`PORT_OPEN`) and on unplug; never when
/// the host consumes output (`out_intr` only wakes the wait queue). Always `POLL_OUT`, so a
/// `F_SETSIG` signal carries si_code 2 (`POLL_OUT`) and si_band 0x304
/// (`POLLOUT|POLLWRNORM|POLLWRBAND`); a plain SIGIO has si_code 0x80 (`SI_KERNEL`).
pub(super) fn sigio() -> Scenario {
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.sigio")));
    Scenario {
        name: "sigio_fasync",
        about: "F_SETOWN + O_ASYNC on a port: SIGIO on data, host open/close and unplug; none on room, after O_ASYNC off or close",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "vcg sigio sig /dev/vport0p1 11\n",
        ),
        host: |vm, _| {
            let mut s = vm.connect("p01")?;
            let mut out = Vec::new();
            out.push(step(vm, "armed", "pending=none")?);
            send(&mut s, b"ping")?;
            out.push(step(vm, "data-plain", "sig=29/0x80 read=ping more=none")?);
            out.push(step(vm, "setsig", "ok")?);
            send(&mut s, b"pong")?;
            out.push(step(vm, "data-rt", "sig=40/2/0x304/fd=self read=pong more=none")?);
            out.push(step(vm, "fill-signals", "none")?);
            // The byte count depends on the driver's buffering: checked, not compared.
            let full = next_sig(vm, "full")?;
            let (bytes, sum) = full
                .strip_prefix("full ")
                .and_then(|r| r.split_once(' '))
                .and_then(|(b, h)| Some((b.parse::<usize>().ok()?, h.to_string())))
                .ok_or_else(|| format!("want `full BYTES SUM`, got {full:?}"))?;
            check(bytes > 0, || "the port took no data before EAGAIN".into())?;
            let want = format!("{:016x}", stream_sum(SIGIO_SEED, bytes));
            expect_eq(&sum, &want, "guest checksum of what the port accepted")?;
            // Room returns as the host reads; the guest's poll sees it.
            let got = read_sum(&mut s, bytes)?;
            expect_eq(&format!("{got:016x}"), &want, "host checksum")?;
            out.push(step(vm, "room", "revents=OUT")?);
            // Every signal up to this byte's arrival: the byte's own, nothing for the room.
            send(&mut s, b"m")?;
            out.push(step(vm, "after-room", "read=m signals=40/2/0x304/fd=self")?);
            out.push(step(vm, "wait-close", "ok")?);
            drop(s);
            out.push(step(vm, "host-close", "sig=40/2/0x304/fd=self revents=IN|HUP more=none")?);
            let mut s = vm.connect("p01")?;
            out.push(step(vm, "host-open", "sig=40/2/0x304/fd=self revents=OUT more=none")?);
            out.push(step(vm, "async-off", "ok")?);
            send(&mut s, b"q1")?;
            out.push(step(vm, "off", "read=q1 signals=none")?);
            out.push(step(vm, "reopened", "pending=none")?);
            send(&mut s, b"q2")?;
            out.push(step(vm, "closed", "read=q2 signals=none")?);
            out.push(step(vm, "unplug-armed", "pending=none")?);
            vm.qmp(r#"{"execute":"device_del","arguments":{"id":"dev-p01"}}"#)?;
            out.push(step(vm, "unplug", "sig=40/2/0x304/fd=self revents=HUP more=none")?);
            Ok(out)
        },
        rust_only: false,
        differential: false,
        timeout: 240,
    }
}

const SPLICE_SEED: u64 = 5;
/// 1 MiB and a bit, so the last pipe buffer ends mid-page.
const SPLICE_BYTES: usize = (1 << 20) + 4321;

/// splice(): from a pipe into a port (checked by checksum at the host), and out of a port into
/// a pipe (the C driver has no `splice_read`: `EINVAL`, and the data stays readable).
pub(super) fn splice() -> Scenario {
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.splice")));
    Scenario {
        name: "splice_pipe_port",
        about: "splice() pipe->port 1 MiB checked, port->pipe EINVAL as in C",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "vcg splice-in in /dev/vport0p1 1052897 5\n",
            "vcg splice-out so /dev/vport0p1\n",
        ),
        host: |vm, _| {
            let mut s = vm.connect("p01")?;
            let mut rs = s.try_clone().map_err(|e| e.to_string())?;
            let reader = std::thread::spawn(move || read_sum(&mut rs, SPLICE_BYTES));
            let got = reader.join().map_err(|_| "host reader panicked")??;
            let want = stream_sum(SPLICE_SEED, SPLICE_BYTES);
            expect_eq(
                &vm.result("in")?,
                &format!("spliced {SPLICE_BYTES} {want:016x} zero-returns=0"),
                "guest splice-in",
            )?;
            expect_eq(&format!("{got:016x}"), &format!("{want:016x}"), "host received")?;
            let mut out = vec![format!("host received {SPLICE_BYTES} bytes, checksum ok")];
            expect_eq(&vm.result("so")?, "ready ok", "splice-out ready")?;
            send(&mut s, b"abc")?;
            let r = vm.result("so")?;
            expect_eq(&r, "port-to-pipe revents=IN splice=err EINVAL read=abc", "port to pipe")?;
            out.push(r);
            Ok(out)
        },
        rust_only: false,
        differential: false,
        timeout: 240,
    }
}

/// splice() from an empty pipe (write end open) into a port with `SPLICE_F_NONBLOCK`: the C
/// driver's `splice_write` returns 0 when the pipe is empty, before it looks at the port or the
/// flags. (Without `SPLICE_F_NONBLOCK` it returns 0 too, where the generic
/// `iter_file_splice_write` waits for data.)
pub(super) fn splice_empty() -> Scenario {
    let mut q = serial(0);
    q.extend(port(0, 1, "p01", Some("org.test.splice")));
    Scenario {
        name: "splice_empty_pipe",
        about: "splice() from an empty pipe to a port returns 0 as in C",
        qemu: q,
        guest: concat!(
            "load_driver\nwait_for /dev/vport0p1\n",
            "until grep -q 'host_connected: 1' /sys/kernel/debug/virtio-ports/vport0p1; do sleep 0.1; done\n",
            "vcg splice-empty se /dev/vport0p1\n",
        ),
        host: |vm, _| {
            let _s = vm.connect("p01")?;
            let mut out = Vec::new();
            for want in ["blocking-port splice=ok 0", "nonblocking-port splice=ok 0"] {
                let r = vm.result("se")?;
                expect_eq(&r, want, "splice from an empty pipe")?;
                out.push(r);
            }
            Ok(out)
        },
        rust_only: false,
        differential: false,
        timeout: 120,
    }
}
