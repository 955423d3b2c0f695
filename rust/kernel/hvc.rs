// SPDX-License-Identifier: GPL-2.0

//! Hypervisor virtual consoles (hvc).
//!
//! C header: [`drivers/tty/hvc/hvc_console.h`](srctree/drivers/tty/hvc/hvc_console.h)
//!
//! A backend implements [`Operations`] and creates a [`Registration`] for a virtual terminal
//! number (vtermno). The hvc core then calls [`Operations::put_chars`] for console and tty output
//! and [`Operations::get_chars`] when it polls for input.
//!
//! The C callbacks identify a terminal only by its vtermno, so this module keeps a table from
//! vtermno to backend. An entry is added before `hvc_alloc()` and removed when its
//! [`Registration`] is dropped, after `hvc_remove()`.
//!
//! `hvc_remove()` does not end the callbacks: a `struct hvc_struct` whose tty is still open
//! stays on the core's list until the tty's last reference goes, and `khvcd` keeps polling it
//! (`__hvc_poll()` under `hp->lock` only). So each callback marks its entry busy while it runs
//! the backend, outside the table lock, and [`Registration`]'s drop first closes the entry to new
//! callbacks, then waits until none is running, and only then releases the backend. A callback
//! that comes later finds no entry and returns `-EPIPE`, which makes the core drop the output.
//!
//! # Lock order
//!
//! `hp->lock` (held by the hvc core around `put_chars`/`get_chars`) nests outside whatever the
//! backend takes; the table lock is a leaf, never held while a backend runs. An [`Operations`]
//! method that calls into hvc (polls, resizes or drops a [`Registration`]) deadlocks: the core
//! holds `hp->lock`, and a dropped registration waits for the callback it is called from.

use crate::{
    bindings,
    error::{from_err_ptr, Result},
    prelude::*,
    sync::{new_condvar, new_spinlock_irq, Arc, CondVar, SetOnce, SpinLockIrq},
};
use core::ptr::NonNull;

/// A console backend.
///
/// Both methods run in atomic context (with `hp->lock` held, interrupts off): they must not
/// sleep and may only allocate with `GFP_ATOMIC`.
pub trait Operations: Send + Sync + 'static {
    /// Copies pending input into `buf`; returns the number of bytes copied (0 for none).
    fn get_chars(&self, buf: &mut [u8]) -> Result<usize>;

    /// Sends `buf`; returns how many bytes were taken. Returning fewer than `buf.len()` makes the
    /// core retry the rest later.
    fn put_chars(&self, buf: &[u8]) -> Result<usize>;
}

/// One registered terminal.
struct Entry {
    vtermno: u32,
    ops: NonNull<dyn Operations>,
    /// Window size as (rows, cols), pushed to the tty on open when `resize_enabled`.
    size: (u16, u16),
    resize_enabled: bool,
    /// Callbacks running the backend now (see [`with_ops`]).
    busy: u32,
    /// Set when the registration is being dropped: no new callback may reach `ops`.
    closed: bool,
}

// SAFETY: `ops` points to a `Send + Sync` backend kept alive by the owning `Registration`.
unsafe impl Send for Entry {}

/// The vtermno table and the condition a dropped registration waits on for its callbacks.
#[pin_data]
struct Table {
    #[pin]
    entries: SpinLockIrq<KVec<Entry>>,
    /// Notified when a callback of a closed entry ends.
    #[pin]
    idle: CondVar,
}

/// The vtermno table, created on first use and never freed (it lives in vmlinux).
static TABLE: SetOnce<Pin<KBox<Table>>> = SetOnce::new();

fn table() -> Result<&'static Table> {
    if let Some(t) = TABLE.as_ref() {
        return Ok(t);
    }
    let t = KBox::pin_init(
        pin_init!(Table {
            entries <- new_spinlock_irq!(KVec::new(), "hvc::TABLE"),
            idle <- new_condvar!("hvc::TABLE::idle"),
        }),
        GFP_KERNEL,
    )?;
    // Whoever wins the race populates it; the loser's box is dropped. A loser can see the
    // winner's store still in progress (a few instructions, which never sleep): wait for it
    // rather than fail.
    TABLE.populate(t);
    loop {
        if let Some(t) = TABLE.as_ref() {
            return Ok(t);
        }
        core::hint::spin_loop();
    }
}

/// A registered virtual terminal, removed on drop.
///
/// # Invariants
///
/// `hp` is the live `struct hvc_struct` returned by `hvc_alloc()` for `vtermno`, and the table
/// has an entry for `vtermno` pointing at `*ops`.
pub struct Registration<T: Operations> {
    hp: NonNull<bindings::hvc_struct>,
    vtermno: u32,
    ops: Arc<T>,
}

// SAFETY: The hvc functions used through `&self` lock internally and may be called from any
// thread; `ops` is `Send + Sync`.
unsafe impl<T: Operations> Send for Registration<T> {}
// SAFETY: See above.
unsafe impl<T: Operations> Sync for Registration<T> {}

static HV_OPS: bindings::hv_ops = bindings::hv_ops {
    get_chars: Some(get_chars),
    put_chars: Some(put_chars),
    flush: None,
    notifier_add: Some(notifier_add),
    notifier_del: Some(notifier_del),
    notifier_hangup: Some(notifier_del),
    tiocmget: None,
    tiocmset: None,
    dtr_rts: None,
};

impl<T: Operations> Registration<T> {
    /// Allocates terminal `vtermno` with an output buffer of `outbuf_size` bytes.
    ///
    /// With `resize_enabled`, [`Registration::resize`] and opening the tty push the window size
    /// to the tty layer. Fails with `EBUSY` if `vtermno` is taken, and with `EINVAL` for
    /// vtermno `u32::MAX` (the hvc core's mark of a free console slot) or an output buffer of 0
    /// or more than `i32::MAX` bytes (the core's `int`).
    pub fn new(
        vtermno: u32,
        ops: Arc<T>,
        outbuf_size: usize,
        resize_enabled: bool,
    ) -> Result<Self> {
        let outbuf_size = c_int::try_from(outbuf_size)
            .ok()
            .filter(|&n| n > 0)
            .ok_or(EINVAL)?;
        if vtermno == u32::MAX {
            return Err(EINVAL);
        }
        let table = table()?;
        let dyn_ops: &dyn Operations = &*ops;
        let mut entry = Entry {
            vtermno,
            ops: NonNull::from(dyn_ops),
            size: (0, 0),
            resize_enabled,
            busy: 0,
            closed: false,
        };
        // Never allocate under the table lock: an allocation failure prints, and printing
        // reaches `put_chars`, which takes the same lock. Grow a spare vector outside it.
        let mut spare = KVec::new();
        loop {
            let mut entries = table.entries.lock();
            if entries.iter().any(|e| e.vtermno == vtermno) {
                return Err(EBUSY);
            }
            if entries.len() < entries.capacity() {
                entry = match entries.push_within_capacity(entry) {
                    Ok(()) => break,
                    Err(e) => e.0,
                };
            } else if spare.capacity() > entries.len() {
                core::mem::swap(&mut *entries, &mut spare);
                for e in spare.drain_all() {
                    // `entries` (the spare) has room for all of them and one more.
                    let _ = entries.push_within_capacity(e);
                }
                entry = match entries.push_within_capacity(entry) {
                    Ok(()) => break,
                    Err(e) => e.0,
                };
            }
            let want = entries.len() + 1;
            drop(entries);
            spare = KVec::with_capacity(want, GFP_KERNEL)?;
        }
        // The old storage, if we swapped it out, is freed here, outside the lock.
        drop(spare);
        // SAFETY: `HV_OPS` is static; the table entry for `vtermno` exists, so callbacks find
        // `ops`, which `Arc` keeps at a stable address.
        let hp = unsafe { bindings::hvc_alloc(vtermno, 0, &HV_OPS, outbuf_size) };
        match from_err_ptr(hp).map(NonNull::new) {
            Ok(Some(hp)) => Ok(Self { hp, vtermno, ops }),
            Ok(None) | Err(_) => {
                Self::forget(vtermno);
                from_err_ptr(hp)?;
                Err(ENOMEM)
            }
        }
    }

    /// Removes the entry of `vtermno` once no callback runs its backend any more.
    fn forget(vtermno: u32) {
        let Some(table) = TABLE.as_ref() else {
            return;
        };
        let mut entries = table.entries.lock();
        if let Some(e) = entries.iter_mut().find(|e| e.vtermno == vtermno) {
            e.closed = true;
        }
        while entries.iter().any(|e| e.vtermno == vtermno && e.busy != 0) {
            table.idle.wait(&mut entries);
        }
        entries.retain(|e| e.vtermno != vtermno);
    }

    /// The terminal number.
    pub fn vtermno(&self) -> u32 {
        self.vtermno
    }

    /// The backend.
    pub fn ops(&self) -> &Arc<T> {
        &self.ops
    }

    /// Polls the backend for input and pushes it to the tty (`hvc_poll`). Atomic-safe.
    ///
    /// Returns non-zero if more input may be pending.
    pub fn poll(&self) -> i32 {
        // SAFETY: By the type invariant `hp` is live.
        unsafe { bindings::hvc_poll(self.hp.as_ptr()) }
    }

    /// Wakes the hvc thread so it polls soon (`hvc_kick`).
    pub fn kick(&self) {
        // SAFETY: Always safe to call.
        unsafe { bindings::hvc_kick() }
    }

    /// Tells the core that input is interrupt driven, so its thread does not poll in a loop.
    pub fn set_interrupt_driven(&self, on: bool) {
        // SAFETY: By the type invariant `hp` is live.
        unsafe { bindings::hvc_set_irq_requested(self.hp.as_ptr(), c_int::from(on)) }
    }

    /// Records a new window size and, if resizing is enabled, applies it to the tty.
    pub fn resize(&self, rows: u16, cols: u16) {
        // The table exists: `self` has an entry in it. No allocation here, so this may run in
        // atomic context.
        let apply = TABLE.as_ref().is_some_and(|table| {
            let mut entries = table.entries.lock();
            match entries.iter_mut().find(|e| e.vtermno == self.vtermno) {
                Some(e) => {
                    e.size = (rows, cols);
                    e.resize_enabled
                }
                None => false,
            }
        });
        if apply {
            // SAFETY: By the type invariant `hp` is live.
            unsafe { bindings::hvc_resize(self.hp.as_ptr(), rows, cols) };
        }
    }

    /// The window size the hvc core last recorded for the tty (`hp->ws`), as (rows, cols).
    ///
    /// The core applies it to the tty when one is open; this reads what it recorded.
    pub fn window_size(&self) -> (u16, u16) {
        let (mut rows, mut cols) = (0u16, 0u16);
        // SAFETY: By the type invariant `hp` is live; the helper reads `hp->ws` under
        // `hp->lock`, which `__hvc_resize` callers hold when they write it.
        unsafe { bindings::hvc_get_winsize(self.hp.as_ptr(), &mut rows, &mut cols) };
        (rows, cols)
    }
}

impl<T: Operations> Drop for Registration<T> {
    fn drop(&mut self) {
        // A resize schedules `hp->tty_resize`, which the hvc core cancels only when a tty
        // closes or hangs up: with no tty open, `hvc_remove` would free `hp` with the work
        // still queued. No resize can come from us any more (`drop` has `&mut self`); one
        // from a tty opened meanwhile is cancelled by the hangup `hvc_remove` does.
        // SAFETY: By the type invariant `hp` is live; `hvc_alloc` initialised `tty_resize`.
        unsafe { bindings::cancel_work_sync(&raw mut (*self.hp.as_ptr()).tty_resize) };
        // SAFETY: By the type invariant `hp` is live; this is its only removal. An hp whose tty
        // is still open outlives this call, and its callbacks with it: `forget` below waits for
        // those running and shuts out later ones before `ops` is released.
        unsafe { bindings::hvc_remove(self.hp.as_ptr()) };
        Self::forget(self.vtermno);
    }
}

/// Runs `f` on the backend of `vtermno`, or returns `None` if it has none (any more).
///
/// The table lock is only held to look the entry up and to mark it busy, so a backend that
/// prints (and so re-enters the console) cannot deadlock on it.
fn with_ops<R>(vtermno: u32, f: impl FnOnce(&dyn Operations) -> R) -> Option<R> {
    let table = TABLE.as_ref()?;
    let ops = {
        let mut entries = table.entries.lock();
        let e = entries
            .iter_mut()
            .find(|e| e.vtermno == vtermno && !e.closed)?;
        e.busy += 1;
        e.ops
    };
    // SAFETY: The entry was open and is now busy: `Registration::forget` waits for `busy` to
    // drop to zero before it removes the entry, and the registration releases the backend only
    // after that, so the backend outlives the call.
    let r = f(unsafe { ops.as_ref() });
    let mut entries = table.entries.lock();
    // The entry is still there: it was busy, so `forget` has not removed it.
    if let Some(e) = entries.iter_mut().find(|e| e.vtermno == vtermno) {
        e.busy -= 1;
        if e.closed && e.busy == 0 {
            table.idle.notify_all();
        }
    }
    Some(r)
}

/// What the hvc core sees, for tests.
#[cfg(CONFIG_KUNIT)]
pub mod testing {
    /// Calls the backend of `vtermno` as the hvc core calls `put_chars`, and returns what the
    /// core would get: the bytes taken, or `-EPIPE` once the terminal is gone.
    pub fn put_chars(vtermno: u32, buf: &[u8]) -> isize {
        super::put_chars(vtermno, buf.as_ptr(), buf.len())
    }

    /// What the core's `notifier_add` returns when the tty of `vtermno` is first opened: 0, or
    /// `-EINVAL` once the terminal is gone (the open then fails).
    pub fn notifier_add(vtermno: u32) -> crate::ffi::c_int {
        match super::open_terminal(vtermno) {
            Ok(_) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

extern "C" fn get_chars(vtermno: u32, buf: *mut u8, count: usize) -> isize {
    // SAFETY: The hvc core passes a buffer of `count` writable bytes.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf, count) };
    match with_ops(vtermno, |ops| ops.get_chars(buf)) {
        Some(Ok(n)) => n.min(count) as isize,
        Some(Err(e)) => e.to_errno() as isize,
        None => EPIPE.to_errno() as isize,
    }
}

extern "C" fn put_chars(vtermno: u32, buf: *const u8, count: usize) -> isize {
    // SAFETY: The hvc core passes `count` readable bytes.
    let buf = unsafe { core::slice::from_raw_parts(buf, count) };
    match with_ops(vtermno, |ops| ops.put_chars(buf)) {
        Some(Ok(n)) => n.min(count) as isize,
        Some(Err(e)) => e.to_errno() as isize,
        None => EPIPE.to_errno() as isize,
    }
}

/// What opening the tty of `vtermno` finds: its window size to push to the tty (`None` when
/// resizing is off), or `EINVAL` if the terminal is gone (its [`Registration`] was dropped,
/// while a tty still held the `hvc_struct`), as the C virtio console's `notifier_add_vio`
/// fails for a port it no longer finds.
fn open_terminal(vtermno: u32) -> Result<Option<(u16, u16)>> {
    let table = TABLE.as_ref().ok_or(EINVAL)?;
    let entries = table.entries.lock();
    let e = entries
        .iter()
        .find(|e| e.vtermno == vtermno && !e.closed)
        .ok_or(EINVAL)?;
    Ok(e.resize_enabled.then_some(e.size))
}

/// `hvc_open` calls this for the first opener of a tty; a non-zero return fails the open.
extern "C" fn notifier_add(hp: *mut bindings::hvc_struct, _data: c_int) -> c_int {
    // SAFETY: The core passes a live `hp` that it holds a reference on.
    let vtermno = unsafe { bindings::hvc_vtermno(hp) };
    let size = match open_terminal(vtermno) {
        Ok(size) => size,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: As above.
    unsafe { bindings::hvc_set_irq_requested(hp, 1) };
    if let Some((rows, cols)) = size {
        // SAFETY: As above; no table lock is held here.
        unsafe { bindings::hvc_resize(hp, rows, cols) };
    }
    0
}

extern "C" fn notifier_del(hp: *mut bindings::hvc_struct, _data: c_int) {
    // SAFETY: The core passes a live `hp`.
    unsafe { bindings::hvc_set_irq_requested(hp, 0) };
}
