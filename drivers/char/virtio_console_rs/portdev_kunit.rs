// SPDX-License-Identifier: GPL-2.0

//! KUnit suites that play a hostile host against the driver, through the fake virtio device
//! of [`kernel::virtio::test_device`].
//!
//! Each case binds the driver's probe to a fresh fake console, sends control messages and data
//! from the device side, and checks exactly what the driver did: its replies on the control
//! queue, its port table, and each port's state. Control messages are handled by a work
//! item, so every step ends by flushing it.

use super::*;
use crate::{
    control::le_message as msg,
    kunit_spawn::spawn,
    port::{Port, TX_POOL_BYTES},
};
use core::{
    cell::RefCell,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};
use kernel::{
    chrdev::poll_mask,
    device_class::Attribute,
    sync::SpinLock,
    time::{delay::fsleep, Delta},
    virtio::test_device::{Taken, TestDevice},
};

/// A device type no real device uses, so only the test driver binds the fake consoles.
const FAKE_CONSOLE_ID: u32 = 0xfff3;
/// Entries per virtqueue of the fake device.
const QSIZE: u32 = 64;
const C_IVQ: u32 = 2;
const C_OVQ: u32 = 3;

const EV_DEVICE_READY: u16 = 0;
const EV_PORT_ADD: u16 = 1;
const EV_PORT_REMOVE: u16 = 2;
const EV_PORT_READY: u16 = 3;
const EV_CONSOLE_PORT: u16 = 4;
const EV_RESIZE: u16 = 5;
const EV_PORT_OPEN: u16 = 6;
const EV_PORT_NAME: u16 = 7;

const F_SIZE: u64 = 1 << uapi::VIRTIO_CONSOLE_F_SIZE;
const F_MULTIPORT: u64 = 1 << uapi::VIRTIO_CONSOLE_F_MULTIPORT;

/// Names of the classes (and debugfs directories) and drivers the cases register.
const CLASS_NAMES: [&CStr; 8] = [
    c"virtio-ports-kunit0",
    c"virtio-ports-kunit1",
    c"virtio-ports-kunit2",
    c"virtio-ports-kunit3",
    c"virtio-ports-kunit4",
    c"virtio-ports-kunit5",
    c"virtio-ports-kunit6",
    c"virtio-ports-kunit7",
];
const DRIVER_NAMES: [&CStr; 8] = [
    c"virtio_console_rs_kunit0",
    c"virtio_console_rs_kunit1",
    c"virtio_console_rs_kunit2",
    c"virtio_console_rs_kunit3",
    c"virtio_console_rs_kunit4",
    c"virtio_console_rs_kunit5",
    c"virtio_console_rs_kunit6",
    c"virtio_console_rs_kunit7",
];
static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);
/// The next of [`CLASS_NAMES`], for [`FakeConsole`]'s context.
static NEXT_CLASS: AtomicUsize = AtomicUsize::new(0);

/// The test driver's context: its own class and vtermnos, and the device data of the last
/// probe.
#[pin_data]
pub(crate) struct FakeCtx {
    globals: Arc<Globals>,
    #[pin]
    bound: SpinLock<Option<Arc<PortsDevice>>>,
}

/// Fake consoles: the driver bound to [`FAKE_CONSOLE_ID`], remembering the device data.
pub(crate) struct FakeConsole;

impl crate::ConsoleBinding for FakeConsole {
    type Context = FakeCtx;
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(FAKE_CONSOLE_ID)]);

    fn context() -> Result<Arc<FakeCtx>> {
        // A case that fails an assertion ends without unwinding and leaves its device, driver
        // and class behind; fresh names keep the next cases independent of it.
        let n = NEXT_CLASS.fetch_add(1, Ordering::Relaxed) % CLASS_NAMES.len();
        let globals = Globals::new(CLASS_NAMES[n], CLASS_NAMES[n])?;
        Arc::pin_init(
            pin_init!(FakeCtx {
                globals,
                bound <- kernel::new_spinlock!(None),
            }),
            GFP_KERNEL,
        )
    }

    fn globals(ctx: &Arc<FakeCtx>) -> &Arc<Globals> {
        &ctx.globals
    }

    fn probed(ctx: &Arc<FakeCtx>, data: &Arc<PortsDevice>) {
        // Dropping device data sleeps: never under the spinlock.
        let old = ctx.bound.lock().replace(data.clone());
        drop(old);
    }
}

/// The end of a flush of the control work item, for [`Host::settle`].
#[pin_data]
struct Flushed {
    #[pin]
    done: SpinLock<bool>,
    #[pin]
    cv: kernel::sync::CondVar,
}

/// A control message as the guest sent it: id, event, value.
type Reply = (u32, u16, u16);

/// The host side of one fake console device, with the test driver registered.
struct Host {
    dev: Option<TestDevice>,
    ctx: Arc<FakeCtx>,
    /// Control messages taken from the driver and not yet returned by [`Host::replies`].
    backlog: RefCell<KVec<Reply>>,
    _driver: Pin<KBox<virtio::Registration<crate::ConsoleDriver<FakeConsole>>>>,
}

impl Host {
    /// A device offering `features` with `max_nr_ports` in its config space.
    fn new(features: u64, max_nr_ports: u32) -> Result<Self> {
        // A case that fails an assertion ends without unwinding and leaves its device, driver
        // and class behind; fresh names keep the next cases independent of it (the class name
        // comes from `FakeConsole::context`).
        let n = NEXT_NAME.fetch_add(1, Ordering::Relaxed) % DRIVER_NAMES.len();
        let driver = KBox::pin_init(
            virtio::Registration::<crate::ConsoleDriver<FakeConsole>>::new(
                DRIVER_NAMES[n],
                kernel::module::this_module::<crate::VirtioConsoleModule>(),
            ),
            GFP_KERNEL,
        )?;
        let ctx = virtio::Adapter::<crate::ConsoleDriver<FakeConsole>>::context(&driver).clone();
        let mut config = [0u8; 12];
        config[0..2].copy_from_slice(&80u16.to_le_bytes());
        config[2..4].copy_from_slice(&25u16.to_le_bytes());
        config[4..8].copy_from_slice(&max_nr_ports.to_le_bytes());
        let dev = TestDevice::new(FAKE_CONSOLE_ID, features, &config, QSIZE)?;
        Ok(Self {
            dev: Some(dev),
            ctx,
            backlog: RefCell::new(KVec::new()),
            _driver: driver,
        })
    }

    fn dev(&self) -> &TestDevice {
        // `dev` is only taken in `drop`.
        self.dev.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The driver data, if the probe succeeded.
    fn pd(&self) -> Option<Arc<PortsDevice>> {
        if !self.dev().is_bound() {
            return None;
        }
        self.ctx.bound.lock().clone()
    }

    /// Waits until the driver has handled every control message sent so far, taking the
    /// control messages the driver sends meanwhile (kept for [`Host::replies`]), as QEMU does:
    /// the driver waits for the host to take each PORT_READY.
    fn settle(&self) {
        let Some(pd) = self.pd() else {
            return;
        };
        let flushed = Arc::pin_init(
            pin_init!(Flushed {
                done <- kernel::new_spinlock!(false),
                cv <- kernel::new_condvar!(),
            }),
            GFP_KERNEL,
        );
        let Ok(flushed) = flushed else {
            // No memory for a second thread: each PORT_READY then waits its full time.
            pd.control_work.flush();
            return;
        };
        let (p, f) = (pd.clone(), flushed.clone());
        let spawned = spawn(move || {
            p.control_work.flush();
            *f.done.lock() = true;
            f.cv.notify_all();
        });
        if spawned.is_err() {
            pd.control_work.flush();
            return;
        }
        // Woken at once when the flush ends; every tick meanwhile, the driver's messages are
        // taken.
        let mut done = flushed.done.lock();
        while !*done {
            drop(done);
            self.collect_replies();
            done = flushed.done.lock();
            if !*done {
                let _ = flushed.cv.wait_interruptible_timeout(&mut done, 1);
            }
        }
    }

    /// Puts `raw` in the next control receive buffer, reporting `used_len`, without
    /// interrupting. Returns false if the driver offered no buffer.
    fn post_raw(&self, raw: &[u8], used_len: u32) -> bool {
        match self.dev().take(C_IVQ, &mut [], raw) {
            Ok(t) => self.dev().complete(C_IVQ, t.head, used_len).is_ok(),
            Err(_) => false,
        }
    }

    /// Sends one raw control message with `used_len` and waits until it is handled.
    fn send_raw(&self, raw: &[u8], used_len: u32) -> bool {
        let ok = self.post_raw(raw, used_len);
        self.dev().interrupt(C_IVQ);
        self.settle();
        ok
    }

    /// Sends one well-formed control message and waits until it is handled.
    fn send(&self, id: u32, event: u16, value: u16, payload: &[u8]) -> bool {
        let m = msg(id, event, value, payload);
        self.send_raw(&m, m.len() as u32)
    }

    /// Everything the driver sent on the control queue since the last call.
    fn replies(&self) -> KVec<Reply> {
        self.collect_replies();
        // Never borrowed elsewhere at the same time (no panic path, which objtool flags).
        match self.backlog.try_borrow_mut() {
            Ok(mut b) => core::mem::take(&mut *b),
            Err(_) => KVec::new(),
        }
    }

    /// Takes (and gives back) every control message the driver has sent, keeping them for
    /// [`Host::replies`].
    fn collect_replies(&self) {
        let Ok(mut out) = self.backlog.try_borrow_mut() else {
            return;
        };
        let mut raw = [0u8; 8];
        while let Ok(t) = self.dev().take(C_OVQ, &mut raw, &[]) {
            let _ = self.dev().complete(C_OVQ, t.head, 0);
            if t.readable >= 8 {
                let _ = out.push(parse_reply(&raw), GFP_KERNEL);
            }
        }
    }

    /// Opens `port` as a file does, the host taking the control messages meanwhile: `open()`
    /// returns only once the host has taken its PORT_OPEN (kept for [`Host::replies`]).
    fn open_file(&self, port: &Arc<Port>) -> Result {
        let done: Arc<SpinLock<Option<Result>>> =
            Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)?;
        let (p, d) = (port.clone(), done.clone());
        spawn(move || {
            let r = p.open();
            *d.lock() = Some(r);
        })?;
        for _ in 0..20_000 {
            self.collect_replies();
            if let Some(r) = done.lock().take() {
                return r;
            }
            fsleep(Delta::from_micros(100));
        }
        Err(ETIMEDOUT)
    }

    /// The ids of the driver's ports, in table order.
    fn port_ids(&self) -> KVec<u32> {
        let Ok(mut ids) = KVec::with_capacity(64, GFP_KERNEL) else {
            return KVec::new();
        };
        if let Some(pd) = self.pd() {
            for e in pd.ports.lock().iter() {
                // The tests use fewer than 64 ports.
                let _ = ids.push_within_capacity(e.port.id);
            }
        }
        ids
    }

    fn port(&self, id: u32) -> Option<Arc<Port>> {
        self.pd()?.find_port(id)
    }

    /// The window size (rows, cols) the hvc core recorded for port `id`'s console, if the
    /// port is a console.
    fn window_size(&self, id: u32) -> Option<(u16, u16)> {
        let pd = self.pd()?;
        let ports = pd.ports.lock();
        let size = ports
            .get(id)?
            .console
            .as_ref()
            .and_then(|c| c.with(|c| c.window_size()));
        size
    }

    /// Waits until the driver has handled every config change signalled so far.
    fn settle_config(&self) {
        if let Some(pd) = self.pd() {
            pd.config_work.flush();
        }
    }

    /// Adds port `id`, opens its host end and then the port itself, as a file would.
    fn open_port(&self, id: u32) -> Result<Arc<Port>> {
        self.send(id, EV_PORT_ADD, 1, &[]);
        self.send(id, EV_PORT_OPEN, 1, &[]);
        let port = self.port(id).ok_or(ENODEV)?;
        self.open_file(&port)?;
        Ok(port)
    }

    /// Hands `data` to port `id` through its receive queue, reporting `used_len`.
    fn to_port(&self, id: u32, data: &[u8], used_len: u32) -> Result<Taken> {
        let (rx, _) = control::port_queues(id);
        let t = self.dev().take(rx, &mut [], data)?;
        self.dev().complete(rx, t.head, used_len)?;
        self.dev().interrupt(rx);
        Ok(t)
    }

    /// Takes everything port `id` sent, without giving the buffers back.
    fn take_port_output(&self, id: u32, out: &mut KVec<u8>) -> KVec<Taken> {
        let (_, tx) = control::port_queues(id);
        let mut taken = KVec::new();
        let mut buf = [0u8; 256];
        while let Ok(t) = self.dev().take(tx, &mut buf, &[]) {
            let n = (t.readable as usize).min(buf.len());
            let _ = out.extend_from_slice(&buf[..n], GFP_KERNEL);
            let _ = taken.push(t, GFP_KERNEL);
        }
        taken
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Unbind first (the driver's remove runs), then forget the data; the driver
        // registration goes last.
        drop(self.dev.take());
        // The last reference to the device data goes here, outside the spinlock: dropping it
        // unregisters the char-device region, which sleeps.
        let data = self.ctx.bound.lock().take();
        drop(data);
    }
}

/// Decodes the id, event and value of a control message the driver sent.
fn parse_reply(raw: &[u8; 8]) -> Reply {
    let id = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let ev = u16::from_le_bytes([raw[4], raw[5]]);
    let val = u16::from_le_bytes([raw[6], raw[7]]);
    (id, ev, val)
}

fn name_of(port: &Port) -> Option<KVec<u8>> {
    let st = port.state.lock();
    let name = st.name.as_ref()?;
    let mut v = KVec::new();
    // Under the port's IRQ-safe spinlock: no sleeping allocation.
    v.extend_from_slice(name.to_bytes(), GFP_ATOMIC).ok()?;
    Some(v)
}

/// Writes `data` to `port` without blocking, as `file.rs` does with user memory: into the
/// consumed buffer the port hands back if it is large enough, else into a new one.
fn write_reusing(port: &Port, data: &[u8]) -> Result<usize> {
    port.write(data.len(), true, |max, spare| match spare {
        Some(mut buf) if buf.capacity() >= max => {
            buf.refill_from_slice(&data[..max]);
            Ok(buf)
        }
        _ => Buffer::from_slice(&data[..max], GFP_KERNEL),
    })
}

/// Polls `cond` every millisecond for up to two seconds; returns whether it became true.
fn eventually(cond: impl Fn() -> bool) -> bool {
    for _ in 0..2000 {
        if cond() {
            return true;
        }
        fsleep(Delta::from_millis(1));
    }
    cond()
}

/// Waits (as [`eventually`] does) until a sleeper on `port` has stored its result in `slot`;
/// returns whether it did. One never woken is woken by unplugging the port (it then fails
/// with `ENODEV`), so the case ends without leaving it asleep.
fn woken_or_unplugged<T>(port: &Port, slot: &SpinLock<Option<T>>) -> bool {
    let woken = eventually(|| slot.lock().is_some());
    if !woken {
        port.unplug();
        let _ = eventually(|| slot.lock().is_some());
    }
    woken
}

/// Writes one byte to `port` (`w`), without blocking if `nonblock`.
fn write_byte(port: &Port, nonblock: bool) -> Result<usize> {
    port.write(1, nonblock, |max, _| {
        Buffer::from_slice(&b"w"[..max], GFP_KERNEL)
    })
}

/// Fills port 1's transmit ring with one-byte writes, then starts a blocking writer, which
/// must arm the transmit interrupt and go to sleep; returns where it stores its result.
/// Fails with `EIO` if the ring does not fill as expected, `ETIMEDOUT` if the writer does not
/// go to sleep with the interrupt armed (outside a test case, no KUnit assertion).
fn writer_asleep_on_a_full_ring(port: &Arc<Port>) -> Result<Arc<SpinLock<Option<Result<usize>>>>> {
    for _ in 0..QSIZE {
        if write_byte(port, true) != Ok(1) {
            return Err(EIO);
        }
    }
    if write_byte(port, true) != Err(EAGAIN) {
        return Err(EIO);
    }
    let done: Arc<SpinLock<Option<Result<usize>>>> =
        Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)?;
    let (p, d) = (port.clone(), done.clone());
    spawn(move || {
        let r = write_byte(&p, false);
        *d.lock() = Some(r);
    })?;
    let asleep = eventually(|| {
        let st = port.state.lock();
        st.writers_asleep() == 1 && st.tx_armed()
    });
    if !asleep {
        return Err(ETIMEDOUT);
    }
    Ok(done)
}

/// The host consumes everything port 1 sent, without interrupting; `EIO` unless that was a
/// full ring.
fn host_consumes_a_full_ring(h: &Host) -> Result {
    let (_, tx) = control::port_queues(1);
    let mut out = KVec::new();
    let taken = h.take_port_output(1, &mut out);
    if taken.len() != QSIZE as usize {
        return Err(EIO);
    }
    for t in taken.iter() {
        h.dev().complete(tx, t.head, 0)?;
    }
    Ok(())
}

/// A small, seeded generator (xorshift64*), so a failing sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u32) -> u32 {
        ((self.next() >> 32) % u64::from(n)) as u32
    }
}

#[kunit_tests(virtio_console_rs_fake_device)]
mod tests {
    use super::*;

    #[test]
    fn probe_multiport_fills_control_queue_and_says_ready() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        assert!(h.dev().is_bound());
        // DRIVER_OK is set.
        assert_eq!(h.dev().status() & 4, 4);
        // Port 0's pair, the control pair, and a pair for ports 1..3.
        assert_eq!(h.dev().nr_queues(), 10);
        assert_eq!(h.dev().pending(C_IVQ), QSIZE);
        assert_eq!(&h.replies()[..], &[(control::BAD_ID, EV_DEVICE_READY, 1)]);
        assert!(h.port_ids().is_empty());
        Ok(())
    }

    #[test]
    fn probe_refuses_bad_max_nr_ports() -> Result {
        for max in [0, 0x8001, u32::MAX] {
            let h = Host::new(F_MULTIPORT, max)?;
            assert!(!h.dev().is_bound());
            assert_eq!(h.dev().nr_queues(), 0);
        }
        Ok(())
    }

    #[test]
    fn single_port_device_makes_port_zero_a_console() -> Result {
        let h = Host::new(F_SIZE, 0)?;
        assert!(h.dev().is_bound());
        assert_eq!(h.dev().nr_queues(), 2);
        assert_eq!(&h.port_ids()[..], &[0]);
        let port = h.port(0).ok_or(ENODEV)?;
        assert!(port.state.lock().vtermno >= 1);
        // Console output goes out on queue 1.
        assert_eq!(port.console_put(b"hi"), Ok(2));
        let mut out = KVec::new();
        let taken = h.take_port_output(0, &mut out);
        assert_eq!(taken.len(), 1);
        assert_eq!(&out[..], b"hi");
        // Console input comes in on queue 0.
        h.to_port(0, b"typed", 5)?;
        let mut buf = [0u8; 16];
        assert_eq!(port.console_get(&mut buf), 5);
        assert_eq!(&buf[..5], b"typed");
        // A size change is read through a config interrupt (no control queue exists).
        h.dev().config_write(0, &[100, 0, 40, 0]);
        h.dev().config_changed();
        assert!(h.replies().is_empty());
        Ok(())
    }

    #[test]
    fn multiport_resize_sets_the_console_window_size() -> Result {
        let h = Host::new(F_MULTIPORT | F_SIZE, 3)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_PORT_ADD, 1, &[]);
        h.send(1, EV_CONSOLE_PORT, 1, &[]);
        assert_eq!(h.window_size(1), Some((0, 0)));
        // The payload is {cols, rows}.
        h.send(1, EV_RESIZE, 0, &[100, 0, 40, 0]);
        assert_eq!(h.window_size(1), Some((40, 100)));
        h.send(1, EV_RESIZE, 0, &[0x2c, 0x01, 7, 0]);
        assert_eq!(h.window_size(1), Some((7, 300)));
        // A short payload changes nothing.
        h.send(1, EV_RESIZE, 0, &[9, 0, 9]);
        assert_eq!(h.window_size(1), Some((7, 300)));
        // A port that is not a console has no window.
        h.send(2, EV_RESIZE, 0, &[100, 0, 40, 0]);
        assert_eq!(h.window_size(2), None);
        Ok(())
    }

    #[test]
    fn multiport_resize_without_f_size_leaves_the_window_alone() -> Result {
        // As in the C driver, RESIZE reaches hvc only if VIRTIO_CONSOLE_F_SIZE was negotiated.
        let h = Host::new(F_MULTIPORT, 2)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(1, EV_CONSOLE_PORT, 1, &[]);
        h.send(1, EV_RESIZE, 0, &[100, 0, 40, 0]);
        assert_eq!(h.window_size(1), Some((0, 0)));
        Ok(())
    }

    #[test]
    fn single_port_config_size_sets_the_console_window_size() -> Result {
        // The probe reads {cols 80, rows 25} from the config space.
        let h = Host::new(F_SIZE, 0)?;
        assert_eq!(h.window_size(0), Some((25, 80)));
        // A config change with a new size.
        h.dev().config_write(0, &[100, 0, 40, 0]);
        h.dev().config_changed();
        h.settle_config();
        assert_eq!(h.window_size(0), Some((40, 100)));
        Ok(())
    }

    #[test]
    fn port_lifecycle_add_open_name_data_remove() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        h.replies();
        assert!(h.send(1, EV_PORT_ADD, 1, &[]));
        assert_eq!(&h.replies()[..], &[(1, EV_PORT_READY, 1)]);
        assert_eq!(&h.port_ids()[..], &[1]);
        let port = h.port(1).ok_or(ENODEV)?;
        // A port no file has opened yet holds no receive buffers.
        assert_eq!(h.dev().pending(4), 0);

        h.send(1, EV_PORT_OPEN, 1, &[]);
        assert!(port.state.lock().host_connected);
        h.send(1, EV_PORT_NAME, 1, b"org.test.one\0");
        assert_eq!(name_of(&port).as_deref(), Some(&b"org.test.one"[..]));

        // Opened, it fills its receive queue and tells the host.
        h.open_file(&port)?;
        assert_eq!(&h.replies()[..], &[(1, EV_PORT_OPEN, 1)]);
        assert_eq!(h.dev().pending(4), QSIZE);
        assert_eq!(port.open(), Err(EBUSY));
        // Closed, it keeps its buffers; data to a port no file has open is dropped and
        // counted, as in the C driver, and the buffer goes back.
        port.release();
        assert_eq!(&h.replies()[..], &[(1, EV_PORT_OPEN, 0)]);
        h.to_port(1, b"0123456789", 10)?;
        {
            let st = port.state.lock();
            assert_eq!(st.stats.bytes_received, 10);
            assert_eq!(st.stats.bytes_discarded, 10);
        }
        assert_eq!(h.dev().pending(4), QSIZE);
        // Opened again, it keeps the data.
        h.open_file(&port)?;
        assert_eq!(&h.replies()[..], &[(1, EV_PORT_OPEN, 1)]);
        h.to_port(1, b"abc", 3)?;
        assert_ne!(port.poll_mask() & poll_mask::IN, 0);
        assert_eq!(port.state.lock().stats.bytes_received, 13);

        h.send(1, EV_PORT_REMOVE, 0, &[]);
        assert!(h.port_ids().is_empty());
        assert!(port.state.lock().unplugged);
        assert_eq!(port.poll_mask(), poll_mask::HUP);
        port.release();
        // The port can come back.
        h.send(1, EV_PORT_ADD, 1, &[]);
        assert_eq!(&h.replies()[..], &[(1, EV_PORT_READY, 1)]);
        assert_eq!(&h.port_ids()[..], &[1]);
        Ok(())
    }

    #[test]
    fn control_buffers_go_back_before_their_messages_are_handled() -> Result {
        // QEMU drops a control message when it finds no receive buffer, so the driver must not
        // hold the buffers while it is busy: here the work item is held up (as by a slow
        // PORT_ADD) and the host sends three queues' worth of messages.
        let h = Host::new(F_MULTIPORT, 8)?;
        h.replies();
        let pd = h.pd().ok_or(ENODEV)?;
        // Ports 1..=4, then PORT_OPEN on them; each port's last message closes it, while the
        // last ones of the earlier bursts open it; the very last removes port 4.
        let message = |k: u32| -> KVec<u8> {
            match k {
                0..=3 => msg(k + 1, EV_PORT_ADD, 1, &[]),
                191 => msg(4, EV_PORT_REMOVE, 0, &[]),
                _ => {
                    let open = ((k / 4) % 2 == 1) != (k >= 188);
                    msg(k % 4 + 1, EV_PORT_OPEN, u16::from(open), &[])
                }
            }
        };
        // Assertions wait until the work item may run again: a failed one ends the case.
        let mut posted = 0;
        let mut back = [0; 3];
        let work = pd.removed.lock();
        for b in back.iter_mut() {
            for _ in 0..QSIZE {
                posted += u32::from(h.post_raw(&message(posted), 8));
            }
            h.dev().interrupt(C_IVQ);
            *b = h.dev().pending(C_IVQ);
        }
        // The backlog is full now: the host finds no buffer for the next message.
        let refused = !h.post_raw(&msg(5, EV_PORT_ADD, 1, &[]), 8);
        drop(work);
        assert_eq!(posted, 3 * QSIZE);
        // After each of the first two bursts every buffer was back, though no message had
        // been handled; the third burst waited in the queue.
        assert_eq!(back, [QSIZE, QSIZE, 0]);
        assert!(refused);
        h.settle();
        // Everything was handled, in order.
        assert_eq!(&h.port_ids()[..], &[1, 2, 3]);
        for id in 1..=3 {
            let port = h.port(id).ok_or(ENODEV)?;
            assert!(!port.state.lock().host_connected);
        }
        let replies = h.replies();
        assert_eq!(replies.len(), 4);
        assert!(replies.iter().all(|r| r.1 == EV_PORT_READY && r.2 == 1));
        assert_eq!(h.dev().pending(C_IVQ), QSIZE);
        Ok(())
    }

    #[test]
    fn remove_stops_a_control_backlog_at_once() -> Result {
        // A host that stopped taking control messages, a backlog of PORT_ADDs, and the work
        // item stuck sending the PORT_READY of one of them on the full control transmit ring.
        // Remove must not let the work item go through the rest: it breaks the queues before it
        // waits for it, as the C driver does.
        const EXTRA: u32 = 3;
        let mut h = Host::new(F_MULTIPORT, QSIZE + EXTRA + 1)?;
        h.replies();
        let pd = h.pd().ok_or(ENODEV)?;
        let work = pd.removed.lock();
        let mut posted = 0;
        for burst in [QSIZE, EXTRA] {
            for _ in 0..burst {
                posted += u32::from(h.post_raw(&msg(posted + 1, EV_PORT_ADD, 1, &[]), 8));
            }
            h.dev().interrupt(C_IVQ);
        }
        let backlog = pd.incoming.lock().len();
        drop(work);
        // The first QSIZE PORT_READYs fill the ring the host never empties; the next one waits
        // for room.
        let stuck = (0..10).any(|_| eventually(|| pd.incoming.lock().len() < EXTRA as usize));
        drop(h.dev.take());
        let left = pd.incoming.lock().len();
        assert_eq!(posted, QSIZE + EXTRA);
        assert_eq!(backlog, (QSIZE + EXTRA) as usize);
        assert!(stuck);
        // At most the message in progress was handled after the remove began.
        assert!(left + 1 >= EXTRA as usize - 1);
        Ok(())
    }

    #[test]
    fn freeze_stops_a_control_backlog_at_once() -> Result {
        // As `remove_stops_a_control_backlog_at_once`, with a freeze: the freeze flushes the
        // work item, which must stop at the broken queue instead of creating the backlog's
        // ports, and the backlog is dropped with the queues, as in C.
        const EXTRA: u32 = 3;
        let h = Host::new(F_MULTIPORT, QSIZE + EXTRA + 1)?;
        h.replies();
        let pd = h.pd().ok_or(ENODEV)?;
        let work = pd.removed.lock();
        for id in 1..=QSIZE + EXTRA {
            h.post_raw(&msg(id, EV_PORT_ADD, 1, &[]), 8);
            if id == QSIZE || id == QSIZE + EXTRA {
                h.dev().interrupt(C_IVQ);
            }
        }
        drop(work);
        let stuck = (0..10).any(|_| eventually(|| pd.incoming.lock().len() < EXTRA as usize));
        h.dev().freeze()?;
        let ports = pd.ports.lock().len();
        let left = pd.incoming.lock().len();
        assert!(stuck);
        // At most the message in progress was handled after the freeze began.
        assert!(ports <= (QSIZE + 2) as usize);
        assert_eq!(left, 0);
        Ok(())
    }

    #[test]
    fn duplicate_and_out_of_order_events() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        h.replies();
        // Remove, open, name, resize and console for a port that does not exist: ignored.
        h.send(2, EV_PORT_REMOVE, 0, &[]);
        h.send(2, EV_PORT_OPEN, 1, &[]);
        h.send(2, EV_PORT_NAME, 1, b"ghost\0");
        h.send(2, EV_RESIZE, 0, &[80, 0, 25, 0]);
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        assert!(h.port_ids().is_empty());
        assert!(h.replies().is_empty());

        // PORT_ADD twice: one port, and the host hears PORT_READY both times.
        h.send(2, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_PORT_ADD, 1, &[]);
        assert_eq!(&h.port_ids()[..], &[2]);
        assert_eq!(
            &h.replies()[..],
            &[(2, EV_PORT_READY, 1), (2, EV_PORT_READY, 1)]
        );

        // RESIZE on a port that is not a console changes nothing.
        h.send(2, EV_RESIZE, 0, &[80, 0, 25, 0]);
        assert!(h.replies().is_empty());

        // CONSOLE_PORT twice: one console, opened once.
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        let port = h.port(2).ok_or(ENODEV)?;
        let vtermno = port.state.lock().vtermno;
        assert!(vtermno >= 1);
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        assert_eq!(port.state.lock().vtermno, vtermno);
        assert_eq!(&h.replies()[..], &[(2, EV_PORT_OPEN, 1)]);
        // A console port cannot be opened as a file.
        assert_eq!(port.open(), Err(ENXIO));

        // CONSOLE_PORT with value 0 is not an un-console.
        h.send(2, EV_CONSOLE_PORT, 0, &[]);
        assert_eq!(port.state.lock().vtermno, vtermno);

        // PORT_NAME twice keeps the first name.
        h.send(2, EV_PORT_NAME, 1, b"first\0");
        h.send(2, EV_PORT_NAME, 1, b"second\0");
        assert_eq!(name_of(&port).as_deref(), Some(&b"first"[..]));

        // Removing it frees its vtermno: the next console gets the same number.
        h.send(2, EV_PORT_REMOVE, 0, &[]);
        h.send(3, EV_PORT_ADD, 1, &[]);
        h.send(3, EV_CONSOLE_PORT, 1, &[]);
        let port3 = h.port(3).ok_or(ENODEV)?;
        assert_eq!(port3.state.lock().vtermno, vtermno);
        Ok(())
    }

    #[test]
    fn freeze_and_restore() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(1, EV_PORT_NAME, 1, b"org.test.pm\0");
        h.send(1, EV_PORT_OPEN, 1, &[]);
        h.send(2, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        // Port 3 is never opened: it holds no receive buffers, before or after.
        h.send(3, EV_PORT_ADD, 1, &[]);
        let (p1, p2) = (h.port(1).ok_or(ENODEV)?, h.port(2).ok_or(ENODEV)?);
        let vtermno = p2.state.lock().vtermno;
        h.open_file(&p1)?;
        // Unread data at freeze time is dropped and counted.
        h.to_port(1, b"unread", 6)?;
        h.replies();

        // The test kernel has CONFIG_PM_SLEEP; without it this fails with EOPNOTSUPP.
        h.dev().freeze()?;
        assert_eq!(h.dev().status(), 0);
        assert_eq!(h.dev().nr_queues(), 0);
        {
            let st = p1.state.lock();
            assert_eq!(st.stats.bytes_discarded, 6);
            assert!(!st.host_connected);
            assert!(st.guest_connected);
        }
        // Console output while frozen is dropped, never waited for.
        assert_eq!(p2.console_put(b"zzz"), Ok(3));

        h.dev().restore()?;
        assert_eq!(h.dev().status() & 4, 4);
        assert_eq!(h.dev().nr_queues(), 10);
        assert_eq!(h.dev().pending(C_IVQ), QSIZE);
        assert_eq!(h.dev().pending(4), QSIZE);
        assert_eq!(h.dev().pending(6), QSIZE);
        assert_eq!(h.dev().pending(8), 0);
        // Every port is announced again, and the open ones say so.
        assert_eq!(
            &h.replies()[..],
            &[
                (1, EV_PORT_READY, 1),
                (1, EV_PORT_OPEN, 1),
                (2, EV_PORT_READY, 1),
                (2, EV_PORT_OPEN, 1),
                (3, EV_PORT_READY, 1)
            ]
        );
        // Same ports, names and console number; the host's answers are handled as before.
        assert_eq!(&h.port_ids()[..], &[1, 2, 3]);
        assert_eq!(p2.state.lock().vtermno, vtermno);
        h.send(1, EV_PORT_NAME, 1, b"other\0");
        assert_eq!(name_of(&p1).as_deref(), Some(&b"org.test.pm"[..]));
        h.send(1, EV_PORT_OPEN, 1, &[]);
        assert!(p1.state.lock().host_connected);
        h.to_port(1, b"after", 5)?;
        assert_eq!(p1.state.lock().stats.bytes_received, 11);
        assert_ne!(p1.poll_mask() & poll_mask::IN, 0);
        assert_eq!(p2.console_put(b"out"), Ok(3));
        let mut out = KVec::new();
        assert_eq!(h.take_port_output(2, &mut out).len(), 1);
        assert_eq!(&out[..], b"out");
        p1.release();
        Ok(())
    }

    /// A queue that cannot be refilled at restore does not stop it: as the C driver's
    /// `virtcons_restore`, the other ports get their buffers and every port is announced again.
    #[test]
    fn restore_goes_on_past_a_queue_it_cannot_refill() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        let (p1, p2) = (h.open_port(1)?, h.open_port(2)?);
        h.replies();
        // Port 1's receive queue comes back broken, then (at the next restore) the control
        // receive queue. The results are checked once the device is gone: a failed assertion
        // ends the case at once, and must not leave a device behind.
        let mut rounds = KVec::new();
        for broken in [4, C_IVQ] {
            h.dev().freeze()?;
            h.dev().break_queue_on_find(broken)?;
            let restored = h.dev().restore();
            let pending = [4, 6, C_IVQ].map(|q| h.dev().pending(q));
            rounds.push((restored, pending, h.replies()), GFP_KERNEL)?;
        }
        p1.release();
        p2.release();
        drop(h);
        let announced = [
            (1, EV_PORT_READY, 1),
            (1, EV_PORT_OPEN, 1),
            (2, EV_PORT_READY, 1),
            (2, EV_PORT_OPEN, 1),
        ];
        let expected = [[0, QSIZE, QSIZE], [QSIZE, QSIZE, 0]];
        for ((restored, pending, replies), expected) in rounds.iter().zip(expected) {
            assert_eq!(*restored, Ok(()));
            assert_eq!(*pending, expected);
            assert_eq!(&replies[..], &announced[..]);
        }
        Ok(())
    }

    #[test]
    fn console_removed_right_after_a_resize() -> Result {
        // A resize schedules the hvc core's `tty_resize` work; with no tty open, removing the
        // console at once must not free the hvc while that work is still queued.
        let h = Host::new(F_MULTIPORT | F_SIZE, 2)?;
        for i in 0..200u16 {
            for (ev, val, payload) in [
                (EV_PORT_ADD, 1, &[][..]),
                (EV_CONSOLE_PORT, 1, &[][..]),
                (EV_RESIZE, 0, &[80, 0, 25, 0][..]),
                (EV_RESIZE, 0, &[(i % 200) as u8 + 1, 0, 24, 0][..]),
                (EV_PORT_REMOVE, 0, &[][..]),
            ] {
                let m = msg(1, ev, val, payload);
                assert!(h.post_raw(&m, m.len() as u32));
            }
            h.dev().interrupt(C_IVQ);
            h.settle();
            h.replies();
        }
        assert!(h.port_ids().is_empty());
        // Every console went away with its number.
        let next = Ida::alloc_min(&h.ctx.globals.vtermnos, 1)?;
        assert_eq!(next.id(), 1);
        Ok(())
    }

    #[test]
    fn malformed_control_messages_are_refused() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        h.replies();
        // Shorter than the header, with the rest of the buffer left as it was.
        let add1 = msg(1, EV_PORT_ADD, 1, &[]);
        for len in 0..8u32 {
            assert!(h.send_raw(&add1, len));
        }
        assert!(h.port_ids().is_empty());
        // Unknown and guest-only events.
        h.send(1, 99, 1, &[]);
        h.send(1, EV_PORT_READY, 1, &[]);
        h.send(1, EV_DEVICE_READY, 1, &[]);
        // Ids out of range, including the largest ones.
        for id in [4, 5, 0x7fff, 0x8000, u32::MAX - 1, control::BAD_ID] {
            h.send(id, EV_PORT_ADD, 1, &[]);
        }
        assert!(h.port_ids().is_empty());
        assert!(h.replies().is_empty());
        // A RESIZE without its size.
        h.send(0, EV_PORT_ADD, 1, &[]);
        h.send(0, EV_CONSOLE_PORT, 1, &[]);
        h.replies();
        h.send(0, EV_RESIZE, 0, &[80, 0]);
        // Every buffer came back to the driver's control queue.
        assert_eq!(h.dev().pending(C_IVQ), QSIZE);

        // Names: empty (kept as empty, as in the C driver, whose attribute then reads "\n"),
        // one byte without NUL, cut at the first NUL, and longer than a buffer.
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_PORT_ADD, 1, &[]);
        h.send(3, EV_PORT_ADD, 1, &[]);
        let (p0, p1, p2, p3) = (
            h.port(0).ok_or(ENODEV)?,
            h.port(1).ok_or(ENODEV)?,
            h.port(2).ok_or(ENODEV)?,
            h.port(3).ok_or(ENODEV)?,
        );
        h.send(1, EV_PORT_NAME, 1, &[]);
        assert_eq!(name_of(&p1).as_deref(), Some(&b""[..]));
        h.send(2, EV_PORT_NAME, 1, b"a");
        assert_eq!(name_of(&p2).as_deref(), Some(&b"a"[..]));
        h.send(3, EV_PORT_NAME, 1, b"b\0junk");
        assert_eq!(name_of(&p3).as_deref(), Some(&b"b"[..]));
        let mut long = KVec::new();
        long.extend_from_slice(&[b'x'; 5000], GFP_KERNEL)?;
        let m = msg(0, EV_PORT_NAME, 1, &long);
        // The buffer holds 4096 bytes; the device claims all 5008.
        h.send_raw(&m, m.len() as u32);
        let n0 = name_of(&p0).ok_or(EINVAL)?;
        assert_eq!(n0.len(), control::MAX_NAME_LEN);
        assert!(n0.iter().all(|&b| b == b'x'));

        // A used length far beyond the buffer.
        let m = msg(1, EV_PORT_OPEN, 1, &[]);
        h.send_raw(&m, u32::MAX);
        assert!(p1.state.lock().host_connected);

        // The ports still work.
        assert_eq!(&h.port_ids()[..], &[0, 1, 2, 3]);
        h.open_file(&p2)?;
        h.to_port(2, b"still here", 10)?;
        assert_eq!(p2.state.lock().stats.bytes_received, 10);
        p2.release();
        Ok(())
    }

    #[test]
    fn data_used_lengths_are_clamped() -> Result {
        let h = Host::new(F_MULTIPORT, 2)?;
        let port = h.open_port(1)?;
        // Zero bytes carry nothing; the buffer goes straight back.
        h.to_port(1, b"", 0)?;
        assert_eq!(port.state.lock().stats.bytes_received, 0);
        assert_eq!(port.poll_mask() & poll_mask::IN, 0);
        // A used length past the buffer counts the buffer, not the claim.
        let t = h.to_port(1, b"abc", 1 << 30)?;
        assert_eq!(t.writable as usize, RX_BUF_SIZE);
        assert_eq!(port.state.lock().stats.bytes_received, RX_BUF_SIZE as u64);
        assert_ne!(port.poll_mask() & poll_mask::IN, 0);
        // On close the unread data is discarded and counted.
        port.release();
        assert_eq!(port.state.lock().stats.bytes_discarded, RX_BUF_SIZE as u64);
        Ok(())
    }

    #[test]
    fn broken_queues_mid_run() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        h.replies();
        let (p1, p2) = (h.port(1).ok_or(ENODEV)?, h.port(2).ok_or(ENODEV)?);
        // Port 1's receive queue breaks: its data is lost, port 2 still works.
        h.dev().break_queue(4)?;
        let _ = h.to_port(1, b"lost", 4);
        h.to_port(2, b"kept", 4)?;
        let mut buf = [0u8; 8];
        assert_eq!(p2.console_get(&mut buf), 4);
        assert_eq!(&buf[..4], b"kept");
        assert_eq!(p1.state.lock().stats.bytes_received, 0);
        // The control transmit queue breaks: adding a port neither hangs nor replies.
        h.dev().break_queue(C_OVQ)?;
        h.send(3, EV_PORT_ADD, 1, &[]);
        assert_eq!(&h.port_ids()[..], &[1, 2, 3]);
        assert!(h.replies().is_empty());
        // The console's transmit queue breaks: output is dropped, never retried for ever.
        h.dev().break_queue(7)?;
        assert_eq!(p2.console_put(b"gone"), Ok(4));
        // The control receive queue breaks: messages no longer arrive; nothing else happens.
        h.dev().break_queue(C_IVQ)?;
        h.send(3, EV_PORT_REMOVE, 0, &[]);
        assert_eq!(&h.port_ids()[..], &[1, 2, 3]);
        Ok(())
    }

    #[test]
    fn consumed_transmit_buffers_are_reused_with_the_right_length() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let write = |data: &[u8]| write_reusing(&port, data);
        let (_, tx) = control::port_queues(1);
        let mut out = KVec::new();
        // A write takes back the buffers the host consumed after it has filled its own, so
        // the third write is the first to reuse one: shorter data must not carry the old
        // tail, longer data needs a new buffer.
        let writes: [&[u8]; 6] = [
            b"0123456789",
            b"abcdefghij",
            b"xyz",
            b"hello",
            b"",
            b"a longer line than ten",
        ];
        for (i, data) in writes.into_iter().enumerate() {
            assert_eq!(port.state.lock().tx_pool_len(), usize::from(i >= 2));
            assert_eq!(write(data), Ok(data.len()));
            out.clear();
            let taken = h.take_port_output(1, &mut out);
            if data.is_empty() {
                assert!(taken.is_empty());
                continue;
            }
            assert_eq!(taken.len(), 1);
            assert_eq!(&out[..], data);
            h.dev().complete(tx, taken[0].head, 0)?;
        }
        // Console output reuses it the same way.
        h.send(2, EV_PORT_ADD, 1, &[]);
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        let console = h.port(2).ok_or(ENODEV)?;
        let (_, ctx) = control::port_queues(2);
        for data in [&b"console"[..], b"ok", b"longer than before"] {
            assert_eq!(console.console_put(data), Ok(data.len()));
            out.clear();
            let taken = h.take_port_output(2, &mut out);
            assert_eq!(taken.len(), 1);
            assert_eq!(&out[..], data);
            h.dev().complete(ctx, taken[0].head, 0)?;
        }
        assert_eq!(port.state.lock().stats.bytes_sent, 50);
        port.release();
        // Closing the file frees the spare.
        assert_eq!(port.state.lock().tx_pool_len(), 0);
        Ok(())
    }

    #[test]
    fn the_transmit_interrupt_is_on_for_a_response_and_off_for_a_stream() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let (_, tx) = control::port_queues(1);
        let mut out = KVec::new();
        // Writes `data`, lets the host consume it and raises the transmit interrupt; returns
        // whether the driver's callback ran (the device honours interrupt suppression).
        let mut write_and_consume = |data: &[u8]| -> Result<bool> {
            let n = port.write(data.len(), true, |max, _| {
                Buffer::from_slice(&data[..max], GFP_KERNEL)
            })?;
            assert_eq!(n, data.len());
            out.clear();
            let taken = h.take_port_output(1, &mut out);
            assert_eq!(taken.len(), 1);
            h.dev().complete(tx, taken[0].head, 0)?;
            Ok(h.dev().interrupt(tx))
        };
        // A first write may be a request: interrupt on.
        assert!(write_and_consume(b"hello")?);
        // Writes with no read in between are a stream the host keeps up with: no interrupt
        // per write.
        for _ in 0..3 {
            assert!(!write_and_consume(b"more")?);
        }
        // A write after a read is a response: interrupt on again.
        h.to_port(1, b"ping", 4)?;
        let mut got = [0u8; 8];
        let n = port.read(true, got.len(), |d| {
            let k = d.len().min(got.len());
            got[..k].copy_from_slice(&d[..k]);
            k
        })?;
        assert_eq!(&got[..n], b"ping");
        assert!(write_and_consume(b"pong")?);
        assert!(!write_and_consume(b"again")?);
        port.release();
        Ok(())
    }

    #[test]
    fn a_reader_waiting_behind_another_is_woken_when_that_read_ends() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        h.to_port(1, b"first", 5)?;
        h.to_port(1, b"second", 6)?;
        // What the second reader got: its result, once it is done.
        let got: Arc<SpinLock<Option<Result<KVec<u8>>>>> =
            Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)?;
        let mut spawned = Ok(());
        let mut saw_waiter = false;
        let mut first = KVec::new();
        // The first reader starts the second one while it copies, i.e. while `reading` is set,
        // and lets it go to sleep behind it before it finishes.
        let n = port.read(false, 5, |d| {
            let (p, g) = (port.clone(), got.clone());
            spawned = spawn(move || {
                let mut out = KVec::new();
                let r = p
                    .read(false, 16, |d| match out.extend_from_slice(d, GFP_KERNEL) {
                        Ok(()) => d.len(),
                        Err(_) => 0,
                    })
                    .map(|_| out);
                *g.lock() = Some(r);
            });
            saw_waiter = spawned.is_ok() && eventually(|| port.state.lock().readers_asleep() > 0);
            match first.extend_from_slice(&d[..5], GFP_KERNEL) {
                Ok(()) => 5,
                Err(_) => 0,
            }
        });
        spawned?;
        assert_eq!(n, Ok(5));
        assert_eq!(&first[..], b"first");
        assert!(saw_waiter);
        // The end of the first read wakes the second reader, which gets the next buffer.
        assert!(woken_or_unplugged(&port, &got));
        let second = got.lock().take().ok_or(ETIMEDOUT)??;
        assert_eq!(&second[..], b"second");
        assert_eq!(port.state.lock().readers_asleep(), 0);
        port.release();
        Ok(())
    }

    #[test]
    fn a_port_keeps_some_consumed_buffers_for_the_next_writes() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let write = |data: &[u8]| write_reusing(&port, data);
        let pool = || port.state.lock().tx_pool_len();
        let (_, tx) = control::port_queues(1);
        let mut out = KVec::new();
        let complete_all = |out: &mut KVec<u8>| -> Result<usize> {
            out.clear();
            let taken = h.take_port_output(1, out);
            for t in taken.iter() {
                h.dev().complete(tx, t.head, 0)?;
            }
            Ok(taken.len())
        };
        // The open gave the pool room for a whole transmit ring.
        assert!(port.state.lock().tx_pool_room() >= QSIZE as usize);
        // The host falls behind by all but one buffer of the ring, then consumes them all.
        let behind = QSIZE as usize - 1;
        for i in 0..behind {
            assert_eq!(write(&[i as u8; 16]), Ok(16));
        }
        assert_eq!(complete_all(&mut out)?, behind);
        // The next write takes them back, and the pool keeps every one: none is freed.
        assert_eq!(pool(), 0);
        assert_eq!(write(b"next"), Ok(4));
        assert_eq!(pool(), behind);
        // The following writes reuse them, one each, while the host is behind again: they
        // allocate nothing until the ring is full.
        for n in (0..behind).rev() {
            assert_eq!(write(b"again"), Ok(5));
            assert_eq!(pool(), n);
        }
        assert_eq!(complete_all(&mut out)?, behind + 1);
        // Closing the file frees them all.
        port.release();
        assert_eq!(pool(), 0);
        h.open_file(&port)?;
        // Large buffers are kept up to TX_POOL_BYTES.
        let half = KVec::from_elem(0x5au8, TX_POOL_BYTES / 2, GFP_KERNEL)?;
        let sent = port.state.lock().stats.bytes_sent;
        for _ in 0..3 {
            assert_eq!(write(&half), Ok(half.len()));
        }
        assert_eq!(complete_all(&mut out)?, 3);
        let sent_now = port.state.lock().stats.bytes_sent;
        assert_eq!(sent_now - sent, 3 * half.len() as u64);
        assert_eq!(write(b"x"), Ok(1));
        // Two of them fit the budget, the third is freed.
        assert_eq!(pool(), 2);
        assert_eq!(port.state.lock().tx_pool_bytes(), TX_POOL_BYTES);
        port.release();
        assert_eq!(pool(), 0);
        Ok(())
    }

    #[test]
    fn a_writer_waiting_for_room_is_woken_when_a_poll_takes_the_room_back() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        // A blocking writer finds the ring full, arms the transmit interrupt and sleeps.
        let done = writer_asleep_on_a_full_ring(&port)?;
        // The host consumes everything, and before its interrupt is handled a poll takes the
        // buffers back: the interrupt then finds nothing to report. The poll must wake the
        // writer itself.
        host_consumes_a_full_ring(&h)?;
        assert_ne!(port.poll_mask() & poll_mask::OUT, 0);
        assert!(woken_or_unplugged(&port, &done));
        assert_eq!(done.lock().take(), Some(Ok(1)));
        assert!(!port.state.lock().tx_armed());
        port.release();
        Ok(())
    }

    #[test]
    fn a_reader_asleep_on_an_empty_port_is_woken_when_data_arrives() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let got: Arc<SpinLock<Option<Result<KVec<u8>>>>> =
            Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)?;
        let (p, g) = (port.clone(), got.clone());
        spawn(move || {
            let mut out = KVec::new();
            let r = p
                .read(false, 16, |d| match out.extend_from_slice(d, GFP_KERNEL) {
                    Ok(()) => d.len(),
                    Err(_) => 0,
                })
                .map(|_| out);
            *g.lock() = Some(r);
        })?;
        // Nothing to read: the reader goes to sleep.
        assert!(eventually(|| port.state.lock().readers_asleep() == 1));
        assert!(got.lock().is_none());
        // The receive interrupt for the host's data must wake it.
        h.to_port(1, b"late", 4)?;
        assert!(woken_or_unplugged(&port, &got));
        let data = got.lock().take().ok_or(ETIMEDOUT)??;
        assert_eq!(&data[..], b"late");
        port.release();
        Ok(())
    }

    #[test]
    fn a_writer_asleep_on_a_full_ring_is_woken_by_the_transmit_interrupt() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let done = writer_asleep_on_a_full_ring(&port)?;
        // The host consumes everything and interrupts; nobody polls meanwhile, so only the
        // transmit interrupt can wake the writer.
        host_consumes_a_full_ring(&h)?;
        let (_, tx) = control::port_queues(1);
        h.dev().interrupt(tx);
        assert!(woken_or_unplugged(&port, &done));
        assert_eq!(done.lock().take(), Some(Ok(1)));
        port.release();
        Ok(())
    }

    #[test]
    fn console_output_is_dropped_and_counted_when_the_host_never_consumes() -> Result {
        let h = Host::new(F_MULTIPORT, 2)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(1, EV_CONSOLE_PORT, 1, &[]);
        let port = h.port(1).ok_or(ENODEV)?;
        // The ring takes QSIZE single-descriptor writes; the host takes none back.
        for _ in 0..QSIZE {
            assert_eq!(port.console_put(b"x"), Ok(1));
        }
        // Then hvc is told to retry, a bounded number of times, and the output is dropped.
        let mut again = 0u32;
        loop {
            match port.console_put(b"yz") {
                Err(e) if e == EAGAIN => again += 1,
                Ok(n) => {
                    assert_eq!(n, 2);
                    break;
                }
                Err(e) => return Err(e),
            }
            if again > crate::port::CONSOLE_TRIES {
                break;
            }
        }
        assert_eq!(again, crate::port::CONSOLE_TRIES - 1);
        assert_eq!(port.state.lock().console_dropped, 2);
        // Users see it in sysfs.
        let mut page = [0u8; 64];
        let n = <crate::ConsoleDroppedAttr as Attribute<Port>>::show(&port, &mut page);
        assert_eq!(&page[..n], b"2\n");
        assert_eq!(port.state.lock().stats.bytes_sent, u64::from(QSIZE));
        // The host drains the ring: output flows again and nothing more is dropped.
        let mut out = KVec::new();
        let taken = h.take_port_output(1, &mut out);
        assert_eq!(taken.len(), QSIZE as usize);
        for t in taken.iter() {
            h.dev().complete(5, t.head, 0)?;
        }
        h.dev().interrupt(5);
        assert_eq!(port.console_put(b"ok"), Ok(2));
        assert_eq!(port.state.lock().console_dropped, 2);
        Ok(())
    }

    #[test]
    fn a_port_not_yet_in_the_table_refuses_open() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let pd = h.pd().ok_or(ENODEV)?;
        h.replies();
        // Port 2 as `add_port` holds it before it joins the table: its char device is live
        // already, so a file may open it.
        let (rx, tx) = control::port_queues(2);
        let queue = |i: u32| pd.vqs.get(i as usize).cloned().ok_or(EINVAL);
        let early = Port::new(2, pd.link.clone(), queue(rx)?, queue(tx)?)?;
        assert_eq!(early.open(), Err(ENXIO));
        assert!(!early.state.lock().guest_connected);
        assert!(h.replies().is_empty());
        // Once in the table it opens.
        h.send(2, EV_PORT_ADD, 1, &[]);
        let port = h.port(2).ok_or(ENODEV)?;
        h.open_file(&port)?;
        assert_eq!(
            &h.replies()[..],
            &[(2, EV_PORT_READY, 1), (2, EV_PORT_OPEN, 1)]
        );
        port.release();
        Ok(())
    }

    #[test]
    fn open_returns_only_after_the_host_took_port_open() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(1, EV_PORT_OPEN, 1, &[]);
        h.replies();
        let port = h.port(1).ok_or(ENODEV)?;
        // Set by the host right before it gives PORT_OPEN back.
        let taken = Arc::new(AtomicBool::new(false), GFP_KERNEL)?;
        // What `open()` returned, and whether the host had taken PORT_OPEN by then.
        let done: Arc<SpinLock<Option<(Result, bool)>>> =
            Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)?;
        let (p, t, d) = (port.clone(), taken.clone(), done.clone());
        spawn(move || {
            let r = p.open();
            let host_had_it = t.load(Ordering::SeqCst);
            *d.lock() = Some((r, host_had_it));
        })?;
        // The host looks at its control queue now and then, as QEMU's main loop would.
        assert!(eventually(|| h.dev().pending(C_OVQ) > 0));
        let mut raw = [0u8; 8];
        let msg = h.dev().take(C_OVQ, &mut raw, &[])?;
        taken.store(true, Ordering::SeqCst);
        h.dev().complete(C_OVQ, msg.head, 0)?;
        assert_eq!(parse_reply(&raw), (1, EV_PORT_OPEN, 1));
        assert!(eventually(|| done.lock().is_some()));
        let (r, host_had_it) = done.lock().take().ok_or(ETIMEDOUT)?;
        assert_eq!(r, Ok(()));
        // Data written after `open()` returned cannot overtake PORT_OPEN.
        assert!(host_had_it);
        port.release();
        Ok(())
    }

    #[test]
    fn a_write_whose_room_another_writer_took_waits_or_arms_the_interrupt() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let (_, tx) = control::port_queues(1);
        // Another writer sharing the file fills the ring while this one copies its data (as
        // from user memory: it may sleep), after it was let through.
        let fill_ring = |p: &Port| {
            for _ in 0..QSIZE {
                if write_reusing(p, b"o") != Ok(1) {
                    return false;
                }
            }
            true
        };
        let mut filled = false;
        let r = port.write(1, true, |max, _| {
            filled = fill_ring(&port);
            Buffer::from_slice(&b"n"[..max], GFP_KERNEL)
        });
        assert!(filled);
        // Non-blocking: EAGAIN, with the transmit interrupt armed, so a poller (an
        // edge-triggered epoll waiter too) hears when the host makes room.
        assert_eq!(r, Err(EAGAIN));
        assert!(port.state.lock().tx_armed());
        let mut out = KVec::new();
        let taken = h.take_port_output(1, &mut out);
        assert_eq!(taken.len(), QSIZE as usize);
        for t in taken.iter() {
            h.dev().complete(tx, t.head, 0)?;
        }
        assert!(h.dev().interrupt(tx));

        // Blocking: the same race must not fail; the writer waits for room and sends.
        let done: Arc<SpinLock<Option<Result<usize>>>> =
            Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)?;
        let filled = Arc::new(AtomicBool::new(false), GFP_KERNEL)?;
        let (p, d, f) = (port.clone(), done.clone(), filled.clone());
        spawn(move || {
            let r = p.write(1, false, |max, _| {
                f.store(fill_ring(&p), Ordering::SeqCst);
                Buffer::from_slice(&b"b"[..max], GFP_KERNEL)
            });
            *d.lock() = Some(r);
        })?;
        let asleep = eventually(|| port.state.lock().writers_asleep() == 1);
        if !asleep {
            // It returned instead: the case fails below with what it returned.
            assert!(eventually(|| done.lock().is_some()));
            assert_eq!(done.lock().take(), Some(Ok(1)));
        }
        assert!(asleep);
        assert!(filled.load(Ordering::SeqCst));
        out.clear();
        let taken = h.take_port_output(1, &mut out);
        assert_eq!(taken.len(), QSIZE as usize);
        for t in taken.iter() {
            h.dev().complete(tx, t.head, 0)?;
        }
        h.dev().interrupt(tx);
        assert!(woken_or_unplugged(&port, &done));
        assert_eq!(done.lock().take(), Some(Ok(1)));
        out.clear();
        let taken = h.take_port_output(1, &mut out);
        assert_eq!(taken.len(), 1);
        assert_eq!(&out[..], b"b");
        port.release();
        Ok(())
    }

    #[test]
    fn two_blocking_writers_sharing_a_port_lose_nothing_to_a_slow_host() -> Result {
        /// Records each writer sends: its letter and a 16-bit sequence number.
        const WRITES: u16 = 150;
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        let (_, tx) = control::port_queues(1);
        // How each writer ended: the first error, or Ok after all its writes.
        let ends: Arc<SpinLock<[Option<Result>; 2]>> =
            Arc::pin_init(kernel::new_spinlock!([None, None]), GFP_KERNEL)?;
        for w in 0..2u8 {
            let (p, e) = (port.clone(), ends.clone());
            spawn(move || {
                let mut end = Ok(());
                for i in 0..WRITES {
                    let [lo, hi] = i.to_le_bytes();
                    let rec = [b'a' + w, lo, hi];
                    let r = p.write(rec.len(), false, |max, _| {
                        // Copying from user memory may sleep (a page fault): the other
                        // writer runs meanwhile.
                        fsleep(Delta::from_micros(200));
                        Buffer::from_slice(&rec[..max], GFP_KERNEL)
                    });
                    match r {
                        Ok(3) => {}
                        Ok(_) => end = Err(EIO),
                        Err(err) => end = Err(err),
                    }
                    if end.is_err() {
                        break;
                    }
                }
                e.lock()[w as usize] = Some(end);
            })?;
        }
        // A slow host: it waits until the writers have filled the ring and are all asleep,
        // then takes one record and interrupts, so every writer wakes for one free slot.
        let running = || ends.lock().iter().filter(|e| e.is_none()).count() as u32;
        let mut next = [0u16; 2];
        while eventually(|| {
            let r = running();
            r == 0 || (h.dev().pending(tx) == QSIZE && port.state.lock().writers_asleep() == r)
        }) {
            let mut rec = [0u8; 4];
            let Ok(t) = h.dev().take(tx, &mut rec, &[]) else {
                // Nothing left, and both writers are done.
                break;
            };
            assert_eq!(t.readable, 3);
            let w = rec[0].wrapping_sub(b'a') as usize;
            assert!(w < 2);
            // Each writer's records arrive whole and in its order.
            assert_eq!(u16::from_le_bytes([rec[1], rec[2]]), next[w]);
            next[w] += 1;
            h.dev().complete(tx, t.head, 0)?;
            h.dev().interrupt(tx);
        }
        let all_ended = ends.lock().iter().all(|e| e.is_some());
        if !all_ended {
            // A writer never finished: unplugging wakes it with ENODEV.
            port.unplug();
            let _ = eventually(|| ends.lock().iter().all(|e| e.is_some()));
        }
        assert!(all_ended);
        let got = *ends.lock();
        assert_eq!(got, [Some(Ok(())), Some(Ok(()))]);
        assert_eq!(next, [WRITES, WRITES]);
        assert_eq!(
            port.state.lock().stats.bytes_sent,
            2 * 3 * u64::from(WRITES)
        );
        port.release();
        Ok(())
    }

    #[test]
    fn a_console_burst_to_a_stalled_host_is_dropped_in_bounded_work() -> Result {
        const BURST: usize = 64 * 1024;
        /// The chunk hvc hands to `put_chars` (`N_OUTBUF`).
        const CHUNK: usize = 16;
        let h = Host::new(F_MULTIPORT, 2)?;
        h.send(1, EV_PORT_ADD, 1, &[]);
        h.send(1, EV_CONSOLE_PORT, 1, &[]);
        let port = h.port(1).ok_or(ENODEV)?;
        let (_, tx) = control::port_queues(1);
        for _ in 0..QSIZE {
            assert_eq!(port.console_put(b"x"), Ok(1));
        }
        // The host stopped consuming. A printk burst, retried on EAGAIN as
        // `hvc_console_print` does: the first chunk is retried CONSOLE_TRIES times and
        // dropped, every later one is dropped at its first call.
        let calls_needed = crate::port::CONSOLE_TRIES as usize + BURST / CHUNK - 1;
        let chunk = [b'k'; CHUNK];
        let (mut calls, mut left) = (0, BURST);
        let mut pool_max = 0;
        while left > 0 && calls < 2 * calls_needed {
            calls += 1;
            match port.console_put(&chunk[..CHUNK.min(left)]) {
                Ok(n) => left -= n,
                Err(e) if e == EAGAIN => {}
                Err(e) => return Err(e),
            }
            pool_max = pool_max.max(port.state.lock().tx_pool_len());
        }
        assert_eq!(left, 0);
        assert_eq!(calls, calls_needed);
        // The buffer the full ring refused was kept and reused by every retry: one
        // allocation for the whole burst.
        assert_eq!(pool_max, 1);
        assert_eq!(port.state.lock().console_dropped, BURST as u64);
        assert_eq!(port.state.lock().stats.bytes_sent, u64::from(QSIZE));
        // The host consumes again: output flows at once.
        let mut out = KVec::new();
        let taken = h.take_port_output(1, &mut out);
        assert_eq!(taken.len(), QSIZE as usize);
        for t in taken.iter() {
            h.dev().complete(tx, t.head, 0)?;
        }
        assert_eq!(port.console_put(b"ok"), Ok(2));
        out.clear();
        assert_eq!(h.take_port_output(1, &mut out).len(), 1);
        assert_eq!(&out[..], b"ok");
        assert_eq!(port.state.lock().console_dropped, BURST as u64);
        Ok(())
    }

    #[test]
    fn data_for_a_removed_port_is_not_delivered_to_the_next_port_with_its_id() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        // Opened once, the port lent its queue buffers, which stay there when it goes.
        h.open_port(1)?.release();
        h.send(1, EV_PORT_REMOVE, 0, &[]);
        // The host fills a receive buffer the removed port left on its queue.
        h.to_port(1, b"stale", 5)?;
        // A new port 1 must not see it.
        let port = h.open_port(1)?;
        assert_eq!(port.poll_mask() & poll_mask::IN, 0);
        assert_eq!(port.state.lock().stats.bytes_received, 0);
        h.to_port(1, b"fresh", 5)?;
        let mut got = [0u8; 16];
        let n = port.read(true, got.len(), |d| {
            let k = d.len().min(got.len());
            got[..k].copy_from_slice(&d[..k]);
            k
        })?;
        assert_eq!(&got[..n], b"fresh");
        port.release();
        Ok(())
    }

    #[test]
    fn an_idle_port_holds_no_receive_buffers_until_it_is_opened() -> Result {
        let h = Host::new(F_MULTIPORT, 4)?;
        for id in 1..=3 {
            h.send(id, EV_PORT_ADD, 1, &[]);
            h.send(id, EV_PORT_OPEN, 1, &[]);
        }
        let (p1, p3) = (h.port(1).ok_or(ENODEV)?, h.port(3).ok_or(ENODEV)?);
        for rx in [4, 6, 8] {
            assert_eq!(h.dev().pending(rx), 0);
        }
        // Nor room for consumed transmit buffers.
        assert_eq!(p1.state.lock().tx_pool_room(), 0);
        // The host has no buffer to send into.
        assert_eq!(h.to_port(1, b"x", 1).err(), Some(EAGAIN));
        // The first open fills only that port's queue.
        h.open_file(&p1)?;
        assert_eq!(h.dev().pending(4), QSIZE);
        assert_eq!(h.dev().pending(6), 0);
        assert!(p1.state.lock().tx_pool_room() >= QSIZE as usize);
        // A console fills at once.
        h.send(2, EV_CONSOLE_PORT, 1, &[]);
        assert_eq!(h.dev().pending(6), QSIZE);
        let p2 = h.port(2).ok_or(ENODEV)?;
        assert!(p2.state.lock().tx_pool_room() >= QSIZE as usize);
        // Closing keeps the buffers; opening again adds none.
        p1.release();
        assert_eq!(h.dev().pending(4), QSIZE);
        h.open_file(&p1)?;
        assert_eq!(h.dev().pending(4), QSIZE);
        p1.release();
        // A port that went away before its open fills nothing.
        h.send(3, EV_PORT_REMOVE, 0, &[]);
        assert_eq!(p3.open(), Err(ENXIO));
        assert_eq!(h.dev().pending(8), 0);
        Ok(())
    }

    #[test]
    fn a_zero_length_read_takes_nothing_and_fails_once_the_port_is_gone() -> Result {
        let h = Host::new(F_MULTIPORT, 3)?;
        let port = h.open_port(1)?;
        h.to_port(1, b"kept", 4)?;
        let mut copies = 0;
        assert_eq!(
            port.read(true, 0, |_| {
                copies += 1;
                0
            }),
            Ok(0)
        );
        assert_eq!(copies, 0);
        assert_ne!(port.poll_mask() & poll_mask::IN, 0);
        // After an unplug it fails with ENODEV, as in the C driver.
        h.send(1, EV_PORT_REMOVE, 0, &[]);
        assert_eq!(port.read(true, 0, |_| 0), Err(ENODEV));
        port.release();
        Ok(())
    }
}

/// The random run, checked against a model of the protocol.
#[path = "portdev_random_kunit.rs"]
mod random;
