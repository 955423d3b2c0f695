// SPDX-License-Identifier: GPL-2.0

//! Kernel log dumpers: code that gets the newest kernel log lines on an oops or a panic.
//!
//! C header: [`include/linux/kmsg_dump.h`](srctree/include/linux/kmsg_dump.h)
//!
//! A [`Dumper`] is called in whatever context the oops or panic happened in, possibly with
//! other CPUs stopped: it must not sleep, allocate or take locks that might be held. The
//! [`Registration`] preallocates the buffer the log is copied into, and skips a dump if
//! another one is still using it.

use crate::{
    bindings,
    error::{to_result, Result},
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Release},
        Arc,
    },
    types::Opaque,
};
use core::cell::UnsafeCell;

/// Why the log is dumped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A kernel panic.
    Panic,
    /// An oops.
    Oops,
    /// Anything else (the dumper asked only for these two, so this is not expected).
    Other,
}

/// Receives the kernel log on an oops or a panic.
pub trait Dumper: Send + Sync + 'static {
    /// Called with the newest log lines (as many as fit in the registration's buffer), in
    /// atomic context.
    fn dump(&self, reason: Reason, log: &[u8]);
}

/// A registered dumper, unregistered on drop.
///
/// # Invariants
///
/// `dumper` is registered with `kmsg_dump_register()` while `self` lives. `buf` is only
/// accessed by the holder of `busy` (set from 0 to 1).
#[pin_data(PinnedDrop)]
pub struct Registration<T: Dumper> {
    #[pin]
    dumper: Opaque<bindings::kmsg_dumper>,
    busy: Atomic<u32>,
    buf: UnsafeCell<KVec<u8>>,
    data: Arc<T>,
}

// SAFETY: `buf` is only used by one dump at a time (`busy`); `T` is `Send + Sync`.
unsafe impl<T: Dumper> Send for Registration<T> {}
// SAFETY: As above.
unsafe impl<T: Dumper> Sync for Registration<T> {}

impl<T: Dumper> Registration<T> {
    /// Registers `data` to receive up to `buf_size` bytes of log on every oops or panic.
    pub fn new(data: Arc<T>, buf_size: usize) -> impl PinInit<Self, Error> {
        let buf = (|| -> Result<KVec<u8>> {
            let mut v = KVec::with_capacity(buf_size, GFP_KERNEL)?;
            v.resize(buf_size, 0, GFP_KERNEL)?;
            Ok(v)
        })();
        try_pin_init!(Self {
            buf: UnsafeCell::new(buf?),
            busy: Atomic::new(0),
            data,
            dumper <- Opaque::ffi_init(|p: *mut bindings::kmsg_dumper| {
                // SAFETY: `p` is ours to initialise; an all-zero `kmsg_dumper` is valid.
                unsafe {
                    p.write(core::mem::zeroed());
                    (*p).dump = Some(Self::dump_callback);
                    (*p).max_reason = bindings::kmsg_dump_reason_KMSG_DUMP_OOPS;
                }
            }),
        })
        .pin_chain(|this| {
            // SAFETY: The dumper is initialised and pinned; it is unregistered in `drop`.
            to_result(unsafe { bindings::kmsg_dump_register(this.dumper.get()) })
        })
    }

    extern "C" fn dump_callback(
        dumper: *mut bindings::kmsg_dumper,
        detail: *mut bindings::kmsg_dump_detail,
    ) {
        // SAFETY: `dumper` is the one embedded in a registered, pinned `Registration<T>`.
        let this = unsafe {
            &*crate::container_of!(dumper.cast::<Opaque<bindings::kmsg_dumper>>(), Self, dumper)
        };
        // SAFETY: The core passes a valid detail record.
        let reason = match unsafe { (*detail).reason } {
            bindings::kmsg_dump_reason_KMSG_DUMP_PANIC => Reason::Panic,
            bindings::kmsg_dump_reason_KMSG_DUMP_OOPS => Reason::Oops,
            _ => Reason::Other,
        };
        if this.busy.cmpxchg(0, 1, Acquire).is_err() {
            return;
        }
        // SAFETY: We hold `busy`, so we have exclusive access to `buf`.
        let buf = unsafe { &mut *this.buf.get() };
        let mut iter = bindings::kmsg_dump_iter::default();
        let mut len: usize = 0;
        // SAFETY: `iter` is a local iterator; `buf` is writable for its length.
        unsafe {
            bindings::kmsg_dump_rewind(&mut iter);
            bindings::kmsg_dump_get_buffer(&mut iter, false, buf.as_mut_ptr(), buf.len(), &mut len);
        }
        this.data.dump(reason, &buf[..len.min(buf.len())]);
        this.busy.store(0, Release);
    }
}

#[pinned_drop]
impl<T: Dumper> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Registered in `new`. Unregistering waits (RCU) for dumps in progress.
        unsafe { bindings::kmsg_dump_unregister(self.dumper.get()) };
    }
}
