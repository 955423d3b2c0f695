// SPDX-License-Identifier: GPL-2.0

//! One port of a virtio console device: its queues, connection state, buffered input and
//! statistics, and the data paths shared by the char device and the hvc console.

use crate::{
    control::Event,
    control_tx::DeviceLink,
    tx_pool::{reuse_or_alloc, Pool, PoolItem},
};
use kernel::{
    chrdev::{band, FasyncQueue},
    new_poll_condvar, new_spinlock_irq,
    prelude::*,
    str::CString,
    sync::{poll::PollCondVar, Arc, SpinLockIrq, SpinLockIrqGuard},
    virtio::{Buffer, NestedBackend, Virtqueue, VirtqueueGuard},
};

/// Size of each receive buffer, as in the C driver.
pub(crate) const RX_BUF_SIZE: usize = kernel::page::PAGE_SIZE;

/// Most bytes one `write()` queues, as in the C driver.
pub(crate) const MAX_WRITE: usize = 32 * 1024;

/// Console writes retried (`EAGAIN`) while the transmit ring is full before output is dropped.
pub(crate) const CONSOLE_TRIES: u32 = 100_000;

/// How many bytes of consumed transmit buffers a port keeps for reuse: one largest write (one
/// buffer is kept whatever its size, see [`crate::tx_pool::Pool`]).
pub(crate) const TX_POOL_BYTES: usize = MAX_WRITE;

impl PoolItem for KBox<Buffer> {
    fn bytes(&self) -> usize {
        self.capacity()
    }
}

/// Counters shown in debugfs; never reset.
#[derive(Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_discarded: u64,
}

/// The mutable state of a port, all of it guarded by [`Port::state`].
pub(crate) struct PortState {
    /// The receive buffer being consumed and how much of it was read; `None` when the next one
    /// must come from the receive queue.
    inbuf: Option<(KBox<Buffer>, usize)>,
    /// A reader has taken `inbuf` out to copy it to user space; other readers wait.
    reading: bool,
    /// Readers asleep in [`Port::read`], waiting for data or for `reading` to end.
    readers_asleep: u32,
    /// A non-blocking reader got `EAGAIN` only because another reader had `reading` set.
    reader_refused: bool,
    /// Writers asleep in [`Port::write`], waiting for the host or for room (for the tests).
    writers_asleep: u32,
    /// A file (or the console) has the port open.
    pub(crate) guest_connected: bool,
    /// The port has lent receive buffers to its queue: at its first open, or at once for a
    /// console (see [`Port::fill_rx`]). A restore refills only such ports.
    rx_filled: bool,
    /// The host end is open.
    pub(crate) host_connected: bool,
    /// The transmit ring was full after the last send.
    pub(crate) outvq_full: bool,
    /// A writer or poller found the ring full and turned the transmit interrupt on to be
    /// woken when there is room; the next send turns it off again and wakes them.
    tx_armed: bool,
    /// Data was read since the last write: the traffic looks like requests and responses,
    /// so a write to an empty ring keeps the transmit interrupt on (see [`Port::write`]).
    read_since_write: bool,
    /// Transmit buffers the host has consumed, kept for the next writes or console output to
    /// reuse, so a steady stream allocates nothing, even when the host falls a whole ring
    /// behind and gives every buffer back at once: up to the transmit ring's size of them and
    /// [`TX_POOL_BYTES`] together, all freed when the file is closed or the port unplugged.
    /// A port gets the room for them with its receive buffers (see [`Port::fill_rx`]), so an
    /// idle port holds none.
    tx_pool: Pool<KBox<Buffer>>,
    /// The port was unplugged: every file operation fails with `ENODEV`.
    pub(crate) unplugged: bool,
    /// The port is in its device's table: until then its char device, live already, refuses
    /// `open()` with `ENXIO`, as the C driver's lookup by device number does.
    in_table: bool,
    /// The hvc vtermno, 0 when the port is not a console.
    pub(crate) vtermno: u32,
    /// The name from `PORT_NAME`, set once.
    pub(crate) name: Option<CString>,
    /// Console writes refused in a row because the transmit ring was full.
    console_full_tries: u32,
    /// Console output is being dropped: until the host consumes something, every console
    /// write is dropped at once, without trying the ring again.
    console_dropping: bool,
    /// Console bytes dropped because the host did not consume them.
    pub(crate) console_dropped: u64,
    pub(crate) stats: Stats,
}

#[cfg(CONFIG_VIRTIO_TEST_DEVICE)]
impl PortState {
    /// How many consumed transmit buffers are kept for reuse (for the tests).
    pub(crate) fn tx_pool_len(&self) -> usize {
        self.tx_pool.len()
    }

    /// How many consumed transmit buffers the port has room for (for the tests).
    pub(crate) fn tx_pool_room(&self) -> usize {
        self.tx_pool.room()
    }

    /// The bytes those buffers hold (for the tests).
    pub(crate) fn tx_pool_bytes(&self) -> usize {
        self.tx_pool.bytes()
    }

    /// How many readers are asleep in [`Port::read`] (for the tests).
    pub(crate) fn readers_asleep(&self) -> u32 {
        self.readers_asleep
    }

    /// How many writers are asleep in [`Port::write`] (for the tests).
    pub(crate) fn writers_asleep(&self) -> u32 {
        self.writers_asleep
    }

    /// Whether a writer or poller armed the transmit interrupt (for the tests).
    pub(crate) fn tx_armed(&self) -> bool {
        self.tx_armed
    }
}

/// The guard of [`Port::state`].
type StateGuard<'a> = SpinLockIrqGuard<'a, PortState>;

/// A port.
///
/// # Locking
///
/// Which lock guards each field, and from which contexts it is touched ("immutable": set when
/// the port is created, read without a lock):
///
/// | Field | Guarded by | Context |
/// |---|---|---|
/// | `id`, `link` | immutable | any |
/// | `in_vq`, `out_vq` | immutable; each queue has its own lock, taken inside `state` | any |
/// | `state` (every [`PortState`] field) | itself (IRQ-safe spinlock) | hard IRQ, atomic, process |
/// | `waitq` | its own lock; waiters check under `state` | woken: any; waited on: process |
/// | `fasync` | its own lock | signalled: any; set up: process |
///
/// - `state` is taken from the queue interrupts (hard IRQ: `rx_interrupt`, `tx_interrupt`),
///   from hvc's `put_chars`/`get_chars` (atomic) and from process context (file operations,
///   the control work item). While holding it the port's queue locks may be taken (`state` →
///   `in_vq`/`out_vq`), never the other way round; they are taken with
///   [`Virtqueue::lock_inside`], which leaves the interrupt state to `state`'s guard, as the C
///   driver drives its rings under its own `spin_lock_irqsave()`.
/// - Readers are serialised by `PortState::reading`: one reader at a time copies to user space
///   without the spinlock; the others wait on `waitq` (or get `EAGAIN`).
/// - `waitq` is woken whenever anything a reader, writer or poller waits on changes.
#[pin_data]
pub(crate) struct Port {
    pub(crate) id: u32,
    pub(crate) link: Arc<DeviceLink>,
    pub(crate) in_vq: Arc<Virtqueue>,
    pub(crate) out_vq: Arc<Virtqueue>,
    #[pin]
    pub(crate) state: SpinLockIrq<PortState>,
    #[pin]
    pub(crate) waitq: PollCondVar,
    #[pin]
    pub(crate) fasync: FasyncQueue,
}

/// The result of waiting for a port to become readable.
enum ReadReady {
    Data,
    Eof,
}

impl Port {
    pub(crate) fn new(
        id: u32,
        link: Arc<DeviceLink>,
        in_vq: Arc<Virtqueue>,
        out_vq: Arc<Virtqueue>,
    ) -> Result<Arc<Self>> {
        // No room yet: `fill_rx` gives it (see `PortState::tx_pool`).
        let tx_pool = Pool::new(0, TX_POOL_BYTES, GFP_KERNEL)?;
        Arc::pin_init(
            pin_init!(Self {
                id,
                link,
                in_vq,
                out_vq,
                state <- new_spinlock_irq!(PortState {
                    inbuf: None,
                    reading: false,
                    readers_asleep: 0,
                    reader_refused: false,
                    writers_asleep: 0,
                    guest_connected: false,
                    rx_filled: false,
                    host_connected: false,
                    outvq_full: false,
                    tx_armed: false,
                    read_since_write: true,
                    tx_pool,
                    unplugged: false,
                    in_table: false,
                    vtermno: 0,
                    name: None,
                    console_full_tries: 0,
                    console_dropping: false,
                    console_dropped: 0,
                    stats: Stats::default(),
                }),
                waitq <- new_poll_condvar!("virtio_console_rs::Port::waitq"),
                fasync <- FasyncQueue::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// Sends a control message about this port, unless it was unplugged.
    pub(crate) fn send_control(&self, event: Event, value: u16) {
        if !self.state.lock().unplugged {
            self.link.send_control(self.id, event, value);
        }
    }

    /// The port joined its device's table: files may open it from now on.
    pub(crate) fn set_in_table(&self) {
        self.state.lock().in_table = true;
    }

    /// Whether the port has lent receive buffers to its queue (see [`PortState::rx_filled`]).
    pub(crate) fn rx_filled(&self) -> bool {
        self.state.lock().rx_filled
    }

    /// Fills the receive queue with buffers. A queue that is already full (after an unplug and
    /// re-plug the old buffers are still there) is fine. Process context.
    ///
    /// The buffers are allocated first, outside any lock, and all put on the queue at once
    /// under `state`, unless the port was unplugged meanwhile: its queue may belong to a
    /// re-plugged port with the same id by then. Fails with `ENOMEM` (nothing is left on the
    /// queue), or `ENODEV` if the port was unplugged.
    ///
    /// Only a port that is opened (or a console) fills its queue: an idle port holds no
    /// buffers, and the host sends no data to a port the guest has not opened (QEMU's
    /// `virtio_serial_guest_ready` checks `guest_connected`; the C driver drops it anyway).
    pub(crate) fn fill_rx(&self) -> Result {
        let want = self.in_vq.lock().num_free() as usize;
        let mut bufs = KVec::with_capacity(want, GFP_KERNEL)?;
        for _ in 0..want {
            // Cannot fail: the capacity was reserved above.
            let _ = bufs.push_within_capacity(Buffer::new(RX_BUF_SIZE, GFP_KERNEL)?);
        }
        // The room for consumed transmit buffers, once (see `PortState::tx_pool`).
        let tx_room = self.out_vq.size() as usize;
        let room = if self.state.lock().tx_pool.room() < tx_room {
            Some(KVec::with_capacity(tx_room, GFP_KERNEL)?)
        } else {
            None
        };
        let mut guard = self.state.lock();
        if guard.unplugged {
            drop(guard);
            return Err(ENODEV);
        }
        if let Some(room) = room {
            guard.tx_pool.grow(room);
        }
        let (st, mut q) = self.in_vq.lock_inside(&mut guard);
        let mut added = 0;
        for buf in bufs.drain_all() {
            match q.add_inbuf(buf) {
                Ok(()) => added += 1,
                // The queue is full: the rest is freed.
                Err(e) if e.error == ENOSPC => break,
                Err(e) if added == 0 && want > 0 => return Err(e.error),
                Err(_) => break,
            }
        }
        st.rx_filled = true;
        if added > 0 {
            q.kick();
        }
        Ok(())
    }

    /// Gives a receive buffer back with `state` held, notifying the device only if `kick`.
    fn requeue_locked(&self, st: &mut StateGuard<'_>, buf: KBox<Buffer>, kick: bool) {
        let (_, mut q) = self.in_vq.lock_inside(st);
        // On failure (queue gone or broken) the buffer is simply freed.
        if q.add_inbuf(buf).is_ok() && kick {
            q.kick();
        }
    }

    /// Takes the next used receive buffer that carries data, counting it.
    fn pull(&self, st: &mut StateGuard<'_>) -> Option<(KBox<Buffer>, usize)> {
        let (st, mut q) = self.in_vq.lock_inside(st);
        loop {
            let buf = q.get_buf()?;
            st.stats.bytes_received += buf.len() as u64;
            if !buf.is_empty() {
                return Some((buf, 0));
            }
            // A used length of 0 carries nothing; give the buffer straight back.
            if q.add_inbuf(buf).is_ok() {
                q.kick();
            }
        }
    }

    /// Whether input is available, pulling the next used buffer from the queue if needed.
    fn has_data(&self, st: &mut StateGuard<'_>) -> bool {
        if st.reading || st.inbuf.is_some() {
            return true;
        }
        st.inbuf = self.pull(st);
        st.inbuf.is_some()
    }

    /// Drops all buffered input, counting it as discarded, and gives the buffers back.
    ///
    /// Does nothing once the port is unplugged: its queues may belong to a re-plugged port with
    /// the same id by now (the C driver checks `port->portdev` for the same reason).
    pub(crate) fn discard_input(&self, st: &mut StateGuard<'_>) {
        if st.unplugged {
            return;
        }
        let (st, mut q) = self.in_vq.lock_inside(st);
        let mut given_back = false;
        if let Some((buf, off)) = st.inbuf.take() {
            st.stats.bytes_discarded += (buf.len() - off) as u64;
            // On failure (queue gone or broken) the buffer is simply freed.
            given_back |= q.add_inbuf(buf).is_ok();
        }
        while let Some(buf) = q.get_buf() {
            st.stats.bytes_received += buf.len() as u64;
            st.stats.bytes_discarded += buf.len() as u64;
            given_back |= q.add_inbuf(buf).is_ok();
        }
        if given_back {
            q.kick();
        }
    }

    /// Takes back the transmit buffers the host has consumed (see [`Port::take_consumed_tx`]).
    pub(crate) fn reclaim_tx(&self, st: &mut StateGuard<'_>) {
        if st.unplugged {
            return;
        }
        let (st, mut q) = self.out_vq.lock_inside(st);
        if self.take_consumed_tx(st, &mut q) {
            st.outvq_full = false;
        }
    }

    /// Takes back every transmit buffer the host has consumed, keeping some of them for reuse
    /// (see [`PortState::tx_pool`]) and freeing the others. Returns whether there was any.
    ///
    /// If there was, wakes the writers and pollers that armed the transmit interrupt: whoever
    /// takes the consumed buffers back first (a poller, another writer, the console) leaves the
    /// interrupt nothing to report, so it would not wake them.
    fn take_consumed_tx(
        &self,
        st: &mut PortState,
        q: &mut VirtqueueGuard<'_, NestedBackend>,
    ) -> bool {
        let mut any = false;
        while let Some(buf) = q.get_buf() {
            any = true;
            // A full pool gives the buffer back, and it is freed here.
            let _ = st.tx_pool.put(buf);
        }
        if any && core::mem::take(&mut st.tx_armed) {
            self.waitq.notify_all();
        }
        any
    }

    /// Takes back the transmit buffers the host has consumed; if the ring is still full, turns
    /// the transmit interrupt on, so whoever waits for room is woken as soon as the host has
    /// consumed a buffer (as in the C driver, whose interrupt is always on).
    fn reclaim_tx_or_arm(&self, st: &mut StateGuard<'_>) {
        if st.unplugged {
            return;
        }
        let (st, mut q) = self.out_vq.lock_inside(st);
        loop {
            if self.take_consumed_tx(st, &mut q) {
                st.outvq_full = false;
            }
            if !st.outvq_full {
                return;
            }
            // `false`: the host consumed a buffer meanwhile; reclaim again.
            if q.enable_cb() {
                st.tx_armed = true;
                return;
            }
        }
    }

    /// Whether a write would block now, as the C `will_write_block`. The ring is only reclaimed
    /// here when it was full; otherwise the next write reclaims it under the queue lock it
    /// takes anyway, which saves a lock round trip per write.
    fn will_write_block(&self, st: &mut StateGuard<'_>) -> bool {
        if !st.host_connected {
            return true;
        }
        if st.outvq_full {
            self.reclaim_tx_or_arm(st);
        }
        st.outvq_full
    }

    fn wait_readable(&self, st: &mut StateGuard<'_>, nonblock: bool) -> Result<ReadReady> {
        loop {
            if st.unplugged || !st.guest_connected {
                return Err(ENODEV);
            }
            if st.reading {
                // Another reader is copying; wait for it like for data.
                if nonblock {
                    // It wakes the queue when it is done, for this reader's poll.
                    st.reader_refused = true;
                    return Err(EAGAIN);
                }
                if self.sleep_as_reader(st) {
                    return Err(ERESTARTSYS);
                }
                continue;
            }
            if self.has_data(st) {
                return Ok(ReadReady::Data);
            }
            if !st.host_connected {
                return Ok(ReadReady::Eof);
            }
            if nonblock {
                return Err(EAGAIN);
            }
            if self.sleep_as_reader(st) {
                return Err(ERESTARTSYS);
            }
        }
    }

    /// Sleeps on `waitq` as a reader, counted in `readers_asleep` (so a finishing reader knows
    /// to wake it); returns whether a signal is pending. Readers only: writers count themselves
    /// in `writers_asleep`.
    fn sleep_as_reader(&self, st: &mut StateGuard<'_>) -> bool {
        st.readers_asleep += 1;
        let signal = self.waitq.wait_interruptible_freezable(st);
        st.readers_asleep -= 1;
        signal
    }

    /// Reads up to `want` bytes with `copy`, which copies to user space (it may sleep) and
    /// returns how much it copied; returns the bytes read, 0 at end of file.
    ///
    /// Waits (unless `nonblock`) only for the first byte. Unlike the C driver, which returns at
    /// most one receive buffer per call, it goes on with the buffers already received, so a
    /// large read needs one system call instead of one per page; the device is notified once
    /// for all buffers given back.
    pub(crate) fn read(
        &self,
        nonblock: bool,
        want: usize,
        mut copy: impl FnMut(&[u8]) -> usize,
    ) -> Result<usize> {
        let mut st = self.state.lock();
        if want == 0 {
            // As the C driver, `ENODEV` once the port is gone or closed. Otherwise 0 at once:
            // the C driver treats it as any read (`EAGAIN`, or a wait, while no data came).
            if st.unplugged || !st.guest_connected {
                return Err(ENODEV);
            }
            return Ok(0);
        }
        match self.wait_readable(&mut st, nonblock)? {
            ReadReady::Eof => return Ok(0),
            ReadReady::Data => {}
        }
        // We are the reader now: others wait on `reading`, and nobody else takes buffers.
        st.reading = true;
        let mut total = 0;
        // Buffers were given back without notifying the device yet.
        let mut kick_owed = false;
        loop {
            let next = match st.inbuf.take() {
                Some(b) => Some(b),
                None => self.pull(&mut st),
            };
            let Some((buf, off)) = next else {
                break;
            };
            drop(st);
            let n = copy(&buf.as_slice()[off..]);
            total += n;
            st = self.state.lock();
            let off = off + n;
            if off < buf.len() {
                // The destination is full (or faulted): keep the rest for the next read.
                if !st.unplugged {
                    st.inbuf = Some((buf, off));
                }
                break;
            }
            // The last buffer of this read notifies the device for all of them, under the
            // queue lock its return takes anyway.
            let done = total >= want || st.unplugged;
            self.requeue_locked(&mut st, buf, done);
            kick_owed = !done;
            if done {
                break;
            }
        }
        st.reading = false;
        st.read_since_write = true;
        // Wake the queue if anyone may be waiting for this read to end: another reader (asleep,
        // or refused while non-blocking), or, when data is left, a reader or poller that slept
        // before it came (its interrupt may have found nothing left to report, as this reader
        // had taken the buffer already). A lone reader that took everything wakes nobody.
        let wake =
            st.readers_asleep > 0 || core::mem::take(&mut st.reader_refused) || st.inbuf.is_some();
        drop(st);
        if kick_owed {
            // No more data came: notify for the buffers given back.
            self.in_vq.lock().kick();
        }
        if wake {
            self.waitq.notify_all();
        }
        if total == 0 {
            return Err(EFAULT);
        }
        Ok(total)
    }

    /// Waits until a write can go through; returns a consumed transmit buffer to reuse, if any.
    fn wait_writable(&self, nonblock: bool) -> Result<Option<KBox<Buffer>>> {
        let mut st = self.state.lock();
        self.wait_for_room(&mut st, nonblock)?;
        Ok(st.tx_pool.take())
    }

    /// Waits (unless `nonblock`) until the host is connected and the ring has room.
    fn wait_for_room(&self, st: &mut StateGuard<'_>, nonblock: bool) -> Result {
        loop {
            if st.unplugged || !st.guest_connected {
                return Err(ENODEV);
            }
            if !self.will_write_block(st) {
                return Ok(());
            }
            if nonblock {
                return Err(EAGAIN);
            }
            st.writers_asleep += 1;
            let signal = self.waitq.wait_interruptible_freezable(st);
            st.writers_asleep -= 1;
            if signal {
                return Err(ERESTARTSYS);
            }
        }
    }

    /// Writes up to [`MAX_WRITE`] of `count` bytes, which `fill` copies from user space into a
    /// buffer (it may sleep): the spare one it is given if that is large enough, else a new
    /// one. Waits for the host to be connected and the ring to have room unless `nonblock`;
    /// does not wait for the host to consume the data.
    ///
    /// The transmit interrupt is off while the host is behind a stream of writes: the C driver
    /// takes one interrupt per buffer only to wake writers that are not waiting, whereas
    /// consumed buffers are freed here, by the next write, anyway. A writer or poller that
    /// finds the ring full turns it on ([`Port::reclaim_tx_or_arm`]); the next write turns it
    /// off and wakes them to look again. A write to an empty ring after a read keeps it on:
    /// under TCG that measurably lowers the latency of request/response traffic (see
    /// `Documentation/rust/virtio-console-rs-performance.rst`), whereas a stream of writes the
    /// host keeps up with would take one interrupt per write for nothing.
    pub(crate) fn write(
        &self,
        count: usize,
        nonblock: bool,
        fill: impl FnOnce(usize, Option<KBox<Buffer>>) -> Result<KBox<Buffer>>,
    ) -> Result<usize> {
        if count == 0 {
            return Ok(0);
        }
        let spare = self.wait_writable(nonblock)?;
        let mut buf = fill(count.min(MAX_WRITE), spare)?;
        let copied = buf.len();
        loop {
            buf = match self.send_buf(buf)? {
                None => return Ok(copied),
                Some(buf) => buf,
            };
            // Another writer sharing the file filled the ring after `wait_writable` let this
            // one through. A non-blocking writer gets `EAGAIN`; the transmit interrupt is armed,
            // so a poller (an edge-triggered epoll too) hears when there is room. A blocking
            // writer waits for room again, keeping the data it copied.
            if nonblock {
                return Err(EAGAIN);
            }
            let mut st = self.state.lock();
            self.wait_for_room(&mut st, false)?;
        }
    }

    /// Queues `buf` on the transmit ring; gives it back if the ring is full, with the transmit
    /// interrupt armed (see [`Port::reclaim_tx_or_arm`]).
    fn send_buf(&self, buf: KBox<Buffer>) -> Result<Option<KBox<Buffer>>> {
        let copied = buf.len();
        let mut guard = self.state.lock();
        if guard.unplugged {
            return Err(ENODEV);
        }
        let (st, mut q) = self.out_vq.lock_inside(&mut guard);
        let waiters = core::mem::take(&mut st.tx_armed);
        // Take back what the host has consumed (the C driver frees it in `__send_to_port`).
        self.take_consumed_tx(st, &mut q);
        let caught_up = q.num_free() == self.out_vq.size();
        let after_read = core::mem::take(&mut st.read_since_write);
        if caught_up && after_read {
            // A response to what was read: keep the interrupt (see [`Port::write`]).
            q.enable_cb();
        } else {
            q.disable_cb();
        }
        let mut buf = buf;
        let ret = loop {
            match q.add_outbuf(buf) {
                Ok(()) => {
                    q.kick();
                    st.outvq_full = q.num_free() == 0;
                    st.stats.bytes_sent += copied as u64;
                    break Ok(None);
                }
                Err(e) if e.error == ENOSPC => {
                    buf = e.buf;
                    // Room came meanwhile: try again.
                    if self.take_consumed_tx(st, &mut q) {
                        continue;
                    }
                    st.outvq_full = true;
                    // `false`: the host consumed a buffer meanwhile; reclaim and try again.
                    if !q.enable_cb() {
                        continue;
                    }
                    st.tx_armed = true;
                    break Ok(Some(buf));
                }
                Err(e) => break Err(e.error),
            }
        };
        drop(q);
        drop(guard);
        if waiters {
            // They armed an interrupt that will not come now; they look again and re-arm.
            self.waitq.notify_all();
        }
        ret
    }

    /// The `poll` mask, as the C `port_fops_poll`.
    pub(crate) fn poll_mask(&self) -> u32 {
        use kernel::chrdev::poll_mask::{HUP, IN, OUT, RDNORM};
        let mut st = self.state.lock();
        if st.unplugged {
            return HUP;
        }
        let mut mask = 0;
        if self.has_data(&mut st) || !st.host_connected {
            mask |= IN | RDNORM;
        }
        if !self.will_write_block(&mut st) {
            mask |= OUT;
        }
        if !st.host_connected {
            mask |= HUP;
        }
        mask
    }

    /// Opens the port for a file: `EBUSY` if already open, `ENXIO` if not (or no longer) in
    /// its device's table or a console.
    pub(crate) fn open(&self) -> Result {
        let filled = {
            let mut st = self.state.lock();
            if st.unplugged || !st.in_table {
                return Err(ENXIO);
            }
            if st.vtermno != 0 {
                // Console ports are used through /dev/hvcN.
                return Err(ENXIO);
            }
            if st.guest_connected {
                return Err(EBUSY);
            }
            st.guest_connected = true;
            self.reclaim_tx(&mut st);
            st.rx_filled
        };
        // The first open lends the queue its receive buffers (see [`Port::fill_rx`]); if that
        // fails, so does the open, with nothing left on the queue.
        if !filled {
            if let Err(e) = self.fill_rx() {
                self.state.lock().guest_connected = false;
                return Err(e);
            }
        }
        // Data written right after `open()` must not reach the host before it knows the port
        // is open (a chardev backend may drop data for a closed port): wait until the host
        // has taken the message, as the C driver does.
        if !self.state.lock().unplugged {
            self.link.send_control_consumed(self.id, Event::PortOpen, 1);
        }
        Ok(())
    }

    /// The file was closed: tell the host and drop unread input.
    ///
    /// The port keeps its receive buffers, as the C driver does: a virtqueue gives back
    /// buffers the device has not used only once the device is reset (`detach_unused_buf`),
    /// so they cannot be taken back from a live queue, and the next open finds them there.
    pub(crate) fn release(&self) {
        self.send_control(Event::PortOpen, 0);
        let mut st = self.state.lock();
        if st.unplugged {
            return;
        }
        st.guest_connected = false;
        self.discard_input(&mut st);
        self.reclaim_tx(&mut st);
        st.tx_pool.clear();
    }

    /// Sends `SIGIO` to the files that asked for it, if the port is open.
    pub(crate) fn notify_async(&self, st: &PortState) {
        if st.guest_connected {
            // The C driver always reports POLL_OUT here; user space may rely on it.
            self.fasync.kill(band::POLL_OUT);
        }
    }

    /// Data arrived (interrupt context). A closed data port drops it, as in the C driver;
    /// otherwise the next buffer becomes current, so the counters match the C driver's.
    pub(crate) fn rx_interrupt(&self) {
        let mut st = self.state.lock();
        if !st.guest_connected && st.vtermno == 0 {
            self.discard_input(&mut st);
        } else if st.vtermno == 0 {
            self.has_data(&mut st);
        }
        self.notify_async(&st);
        drop(st);
        self.waitq.notify_all();
    }

    /// The host consumed data (interrupt context).
    ///
    /// A writer or poller checks whether the ring is full, and if so sets `tx_armed` and goes to
    /// sleep, under `state`; reading `tx_armed` under the lock orders this wake-up after any
    /// such check, so none is lost (a writer could otherwise sleep for ever on a ring the host
    /// has already emptied). When nobody armed it, nobody waits for room: the interrupt was
    /// left on for a response (see [`Port::write`]) and there is no one to wake.
    pub(crate) fn tx_interrupt(&self) {
        let armed = self.state.lock().tx_armed;
        if armed {
            self.waitq.notify_all();
        }
    }

    /// The host end was opened or closed.
    pub(crate) fn set_host_connected(&self, open: bool) {
        let mut st = self.state.lock();
        st.host_connected = open;
        self.reclaim_tx(&mut st);
        self.notify_async(&st);
        drop(st);
        self.waitq.notify_all();
    }

    /// Marks the port unplugged, wakes everyone and drops buffered data.
    pub(crate) fn unplug(&self) {
        let mut st = self.state.lock();
        self.notify_async(&st);
        self.discard_input(&mut st);
        self.reclaim_tx(&mut st);
        st.guest_connected = false;
        st.host_connected = false;
        st.unplugged = true;
        st.tx_pool.clear();
        drop(st);
        self.waitq.notify_all();
    }

    /// The device is being frozen (it is reset already): drop buffered input and reclaim
    /// output; the host end counts as closed until the host says otherwise after the restore.
    pub(crate) fn freeze(&self) {
        let mut st = self.state.lock();
        if st.unplugged {
            return;
        }
        self.discard_input(&mut st);
        self.reclaim_tx(&mut st);
        st.host_connected = false;
        st.outvq_full = false;
        drop(st);
        self.waitq.notify_all();
    }

    /// Console input for hvc (atomic context).
    pub(crate) fn console_get(&self, out: &mut [u8]) -> usize {
        let mut st = self.state.lock();
        if st.unplugged || !self.has_data(&mut st) {
            return 0;
        }
        let Some((buf, off)) = st.inbuf.take() else {
            return 0;
        };
        let n = out.len().min(buf.len() - off);
        out[..n].copy_from_slice(&buf.as_slice()[off..off + n]);
        if off + n < buf.len() {
            st.inbuf = Some((buf, off + n));
        } else {
            self.requeue_locked(&mut st, buf, true);
        }
        n
    }

    /// Console output from hvc (atomic context). Never waits for the host: if the ring is
    /// full, `EAGAIN` makes hvc retry (kernel messages are then retried at once, tty output
    /// later); after [`CONSOLE_TRIES`] retries in a row the output is dropped and counted in
    /// `console_dropped`, so a host that stops consuming cannot freeze a CPU. From then on
    /// output is dropped at once, without trying the ring, until the host has consumed
    /// something: a burst to a stalled host costs one call per chunk, not [`CONSOLE_TRIES`].
    pub(crate) fn console_put(&self, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut guard = self.state.lock();
        if guard.unplugged {
            // Drop output for a port that is going away, so hvc does not spin.
            return Ok(data.len());
        }
        let (st, mut q) = self.out_vq.lock_inside(&mut guard);
        // No transmit interrupt: consumed buffers are taken back here, on the next call, and
        // hvc retries by itself when the ring is full.
        q.disable_cb();
        self.take_consumed_tx(st, &mut q);
        if st.console_dropping {
            if q.num_free() == 0 {
                st.console_dropped += data.len() as u64;
                return Ok(data.len());
            }
            // The host consumed something: try again.
            st.console_dropping = false;
        }
        let buf = reuse_or_alloc(
            st.tx_pool.take(),
            data.len(),
            data,
            |buf, data| {
                buf.refill_from_slice(data);
                Ok(())
            },
            |data| Buffer::from_slice(data, GFP_ATOMIC | __GFP_NOWARN).map_err(|_| ENOMEM),
        )?;
        match q.add_outbuf(buf) {
            Ok(()) => {
                q.kick();
                st.stats.bytes_sent += data.len() as u64;
                st.console_full_tries = 0;
                Ok(data.len())
            }
            Err(e) if e.error == ENOSPC => {
                // Keep the buffer for the next try, so retrying allocates nothing.
                let _ = st.tx_pool.put(e.buf);
                st.console_full_tries += 1;
                if st.console_full_tries < CONSOLE_TRIES {
                    return Err(EAGAIN);
                }
                st.console_full_tries = 0;
                st.console_dropping = true;
                st.console_dropped += data.len() as u64;
                Ok(data.len())
            }
            // A broken or removed queue will never take the data: drop it.
            Err(_) => Ok(data.len()),
        }
    }
}

impl kernel::hvc::Operations for Port {
    fn get_chars(&self, buf: &mut [u8]) -> Result<usize> {
        Ok(self.console_get(buf))
    }

    fn put_chars(&self, buf: &[u8]) -> Result<usize> {
        self.console_put(buf)
    }
}
