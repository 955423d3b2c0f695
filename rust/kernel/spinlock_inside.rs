// SPDX-License-Identifier: GPL-2.0

//! Taking an IRQ-safe spinlock inside another one.
//!
//! C header: [`include/linux/spinlock.h`](srctree/include/linux/spinlock.h)
//!
//! [`SpinLockIrq::lock`] turns local interrupts off (through `local_interrupt_disable()`) and
//! back on for every lock. In C, a `spinlock_t` taken inside a section that already runs with
//! interrupts off (`spin_lock_irqsave()` on the outer lock) is taken with a plain
//! `spin_lock()`. [`SpinLockIrq::lock_inside`] is that for Rust: holding the outer guard is the
//! proof, and the borrow checker keeps the inner guard from outliving it.
//!
//! This is not C's `spin_lock_nested()`, a lockdep annotation for two locks of one class: the
//! two locks must be of different classes, always taken in the same order.

use crate::sync::{SpinLock, SpinLockGuard, SpinLockIrq, SpinLockIrqGuard};

impl<T> SpinLockIrq<T> {
    /// Locks `self` while `outer`, the guard of another [`SpinLockIrq`], is held, without
    /// changing the local interrupt state again.
    ///
    /// Returns the outer lock's data and the new guard; both borrow `outer`, so the inner lock is
    /// released before the outer one can be.
    ///
    /// This is sound on every configuration: without `PREEMPT_RT`, local interrupts are off for
    /// as long as `outer` exists, which is all that [`SpinLockIrq::lock`] would add to a plain
    /// `spin_lock()`; with `PREEMPT_RT`, `spin_lock_irq_disable()` is `spin_lock()` (neither
    /// touches interrupts, as `spinlock_t` is a sleeping lock there). It is not
    /// [`SpinLockIrq::lock_with`] under `LocalInterruptDisabled::assume_disabled()`, because on
    /// `PREEMPT_RT` an outer [`SpinLockIrq`] does not turn interrupts off, which that token
    /// claims (and lockdep asserts).
    ///
    /// # Examples
    ///
    /// A device's state and, always inside it, the state of its current request:
    ///
    /// ```
    /// use kernel::sync::{new_spinlock_irq, SpinLockIrq};
    ///
    /// fn complete(device: &SpinLockIrq<u32>, request: &SpinLockIrq<bool>) {
    ///     let mut outer = device.lock();
    ///     let (in_flight, mut done) = request.lock_inside(&mut outer);
    ///     *in_flight -= 1;
    ///     *done = true;
    /// }
    ///
    /// let device = KBox::pin_init(new_spinlock_irq!(1u32), GFP_KERNEL)?;
    /// let request = KBox::pin_init(new_spinlock_irq!(false), GFP_KERNEL)?;
    /// complete(&device, &request);
    /// assert_eq!((*device.lock(), *request.lock()), (0, true));
    /// # Ok::<(), Error>(())
    /// ```
    #[inline]
    pub fn lock_inside<'a, U: ?Sized + Unpin>(
        &'a self,
        outer: &'a mut SpinLockIrqGuard<'_, U>,
    ) -> (&'a mut U, SpinLockGuard<'a, T>) {
        let plain = core::ptr::from_ref(self).cast::<SpinLock<T>>();
        // SAFETY: `Lock` is `#[repr(C)]` and both backends keep a `spinlock_t` as their state, so
        // `SpinLockIrq<T>` and `SpinLock<T>` have the same layout (the kernel crate relies on the
        // same for `SpinLockIrq::lock_with`). Taking it through the `SpinLock` backend only
        // differs in leaving the interrupt state alone, which `outer` makes right (see above).
        let plain = unsafe { &*plain };
        (&mut **outer, plain.lock())
    }
}
