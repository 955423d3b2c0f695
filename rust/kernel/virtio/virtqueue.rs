// SPDX-License-Identifier: GPL-2.0

//! Virtqueues and the buffers they carry.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h)
//!
//! A [`Buffer`] handed to a queue belongs to the device until the device returns it through
//! [`VirtqueueGuard::get_buf`] or, once the device is reset, the queue gives it back with
//! [`VirtqueueGuard::detach_unused`], which needs a [`Dead`] proof that only the bus adapter
//! makes; the type system makes it impossible to touch or free it in between. When the queue
//! is revoked (device removal), every buffer still owned by the device is detached and
//! dropped, so none is ever leaked.

use crate::{
    alloc::Flags,
    bindings,
    error::{to_result, Error, Result},
    iov::IovIterSource,
    prelude::*,
    sync::{
        lock::{spinlock::SpinLockIrqBackend, Backend, Guard},
        new_spinlock_irq, SpinLockIrq, SpinLockIrqGuard,
    },
};
use core::{marker::PhantomData, ptr::NonNull};

/// Proof that a device was reset, so it no longer reads or writes any buffer it was lent and
/// the buffers still queued may be detached ([`VirtqueueGuard::detach_unused`]; the C API says
/// `virtqueue_detach_unused_buf()` is "not valid on an active queue").
///
/// Only the bus adapter makes one, right after it reset the device in remove, in a failed
/// probe and in freeze, and drops it before the queues can be found again; a driver never
/// holds one.
///
/// # Invariants
///
/// The device `vdev` was reset (and callbacks in flight have finished) and its queues are not
/// re-enabled for as long as the proof lives.
pub struct Dead<'a> {
    vdev: *mut bindings::virtio_device,
    _p: PhantomData<&'a super::Device>,
}

impl<'a> Dead<'a> {
    /// Records that `dev` was just reset.
    ///
    /// # Safety
    ///
    /// `dev` must have been reset ([`super::Device::reset`]), and none of its queues may be
    /// found again or re-enabled while the result lives.
    pub(super) unsafe fn new(dev: &'a super::Device) -> Self {
        // INVARIANT: The caller guarantees that `dev` is reset and stays so.
        Self {
            vdev: dev.as_raw(),
            _p: PhantomData,
        }
    }
}

/// A kmalloc-backed byte buffer that can be lent to a virtqueue.
///
/// # Invariants
///
/// `len <= data.len()`; `data.len()` is the buffer's capacity and never changes.
pub struct Buffer {
    data: KVec<u8>,
    len: usize,
    device_writable: bool,
}

impl Buffer {
    /// Allocates a zeroed buffer with `capacity` bytes and a length of 0.
    ///
    /// Fails with `EINVAL` for a capacity of 0: a virtqueue cannot carry an empty buffer.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::virtio::Buffer;
    ///
    /// let mut buf = Buffer::new(16, GFP_KERNEL)?;
    /// buf.as_mut_full()[..3].copy_from_slice(b"abc");
    /// buf.set_len(3);
    /// assert_eq!(buf.as_slice(), b"abc");
    /// buf.set_len(100);
    /// assert_eq!(buf.len(), 16);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn new(capacity: usize, flags: Flags) -> Result<KBox<Self>> {
        if capacity == 0 {
            return Err(EINVAL);
        }
        let mut data = KVec::with_capacity(capacity, flags)?;
        data.resize(capacity, 0, flags)?;
        Ok(KBox::new(
            Self {
                data,
                len: 0,
                device_writable: false,
            },
            flags,
        )?)
    }

    /// Allocates a buffer holding a copy of `data` (capacity and length `data.len()`), without
    /// zeroing it first.
    pub fn from_slice(data: &[u8], flags: Flags) -> Result<KBox<Self>> {
        if data.is_empty() {
            return Err(EINVAL);
        }
        let mut v = KVec::with_capacity(data.len(), flags)?;
        v.extend_from_slice(data, flags)?;
        Self::from_vec(v, flags)
    }

    /// Allocates a buffer and fills it with up to `max` bytes from `src` (for example a
    /// `write()`), without zeroing it first. Its capacity and length are the bytes copied;
    /// fails with `EFAULT` if none could be.
    pub fn from_iov(src: &mut IovIterSource<'_>, max: usize, flags: Flags) -> Result<KBox<Self>> {
        let mut v = KVec::with_capacity(max, flags)?;
        let spare = v.spare_capacity_mut();
        let room = max.min(spare.len());
        let n = src.copy_from_iter_raw(&mut spare[..room]).len();
        if n == 0 {
            return Err(EFAULT);
        }
        // SAFETY: `copy_from_iter_raw` initialised the first `n` bytes of the spare capacity.
        unsafe { v.inc_len(n) };
        Self::from_vec(v, flags)
    }

    fn from_vec(data: KVec<u8>, flags: Flags) -> Result<KBox<Self>> {
        let len = data.len();
        // INVARIANT: `len == data.len()`.
        Ok(KBox::new(
            Self {
                data,
                len,
                device_writable: false,
            },
            flags,
        )?)
    }

    /// Refills the buffer with up to `max` bytes from `src`, reusing its memory (no more than
    /// its capacity), and makes them its valid bytes. Returns how many were copied; fails with
    /// `EFAULT` if none could be (the buffer then holds no valid bytes).
    ///
    /// # Examples
    ///
    /// A consumed transmit buffer can carry the next message without a new allocation:
    ///
    /// ```
    /// use kernel::virtio::Buffer;
    ///
    /// let mut buf = Buffer::from_slice(b"hello", GFP_KERNEL)?;
    /// assert_eq!(buf.refill_from_slice(b"abc"), 3);
    /// assert_eq!(buf.as_slice(), b"abc");
    /// assert_eq!(buf.capacity(), 5);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn refill_from_iov(&mut self, src: &mut IovIterSource<'_>, max: usize) -> Result<usize> {
        let room = max.min(self.data.len());
        let n = src.copy_from_iter(&mut self.data[..room]);
        // INVARIANT: `n <= room <= data.len()`.
        self.len = n;
        if n == 0 {
            return Err(EFAULT);
        }
        Ok(n)
    }

    /// Refills the buffer with as much of `data` as fits, reusing its memory, and makes it its
    /// valid bytes. Returns how many bytes were copied.
    pub fn refill_from_slice(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.data.len());
        self.data[..n].copy_from_slice(&data[..n]);
        // INVARIANT: `n <= data.len()` of the buffer.
        self.len = n;
        n
    }

    /// The number of valid bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no valid bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer's size.
    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Sets the number of valid bytes, clamped to the capacity.
    pub fn set_len(&mut self, len: usize) {
        // INVARIANT: clamped to `data.len()`.
        self.len = len.min(self.data.len());
    }

    /// The valid bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.data[..self.len]
    }

    /// The whole buffer, for filling it before [`Buffer::set_len`].
    pub fn as_mut_full(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

/// Why adding a buffer failed, with the buffer given back.
///
/// A failed add leaves the buffer as it was (contents, length and capacity) and the ring as it
/// was: no descriptor stays taken and no token is queued (`virtqueue_add()` checks for a broken
/// queue and for room first, and undoes its DMA mappings when one fails). One side effect
/// stays, from the C ring code: an `add_outbuf` that fails with `ENOSPC` notifies the device,
/// as a kick would ("for historical reasons, we force a notify here if there are outgoing
/// parts to the buffer", `virtqueue_add_split()`).
pub struct AddError {
    /// The error: `ENOSPC` when the ring is full, `ENODEV` when the queue was revoked, `EIO`
    /// when it is broken, `ENOMEM` when the ring code could not allocate or map.
    pub error: Error,
    /// The buffer, as it was before the add.
    pub buf: KBox<Buffer>,
}

/// The state behind a [`Virtqueue`]'s lock.
struct Inner {
    /// The C queue, or `None` once revoked.
    vq: Option<NonNull<bindings::virtqueue>>,
}

// SAFETY: The raw queue is only used under the lock, from any context.
unsafe impl Send for Inner {}

/// A virtqueue of a bound device.
///
/// All operations go through [`Virtqueue::lock`], which serialises them with an IRQ-safe
/// spinlock (virtqueue operations must not run concurrently) and checks that the queue still
/// exists.
///
/// # Invariants
///
/// While `inner.vq` is `Some`, it points to a live `struct virtqueue`, and every token queued on
/// it is a `KBox<Buffer>` turned into a raw pointer.
#[pin_data]
pub struct Virtqueue {
    /// Touched from process and interrupt context.
    #[pin]
    inner: SpinLockIrq<Inner>,
    index: u32,
    size: u32,
}

impl Virtqueue {
    /// Wraps a queue found by `find_vqs`.
    ///
    /// # Safety
    ///
    /// `vq` must be live until [`Virtqueue::revoke`] has been called, and carry no buffers yet.
    pub(super) unsafe fn new(vq: NonNull<bindings::virtqueue>) -> impl PinInit<Self> {
        // SAFETY: The caller guarantees that `vq` is live.
        let (index, size) = unsafe {
            (
                (*vq.as_ptr()).index,
                bindings::virtqueue_get_vring_size(vq.as_ptr()),
            )
        };
        pin_init!(Self {
            inner <- new_spinlock_irq!(Inner { vq: Some(vq) }),
            index,
            size,
        })
    }

    /// The queue's index on its device.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The number of descriptors in the ring.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Locks the queue for a sequence of operations.
    pub fn lock(&self) -> VirtqueueGuard<'_> {
        VirtqueueGuard(self.inner.lock())
    }

    /// Locks the queue while `outer`, the guard of another IRQ-safe spinlock (typically the
    /// driver's lock for the state the queue serves), is held, without turning interrupts off
    /// again: the C pattern of a ring driven under the driver's `spin_lock_irqsave()`.
    ///
    /// Returns the outer lock's data and the queue's guard; see [`SpinLockIrq::lock_inside`].
    #[inline]
    pub fn lock_inside<'a, U: ?Sized + Unpin>(
        &'a self,
        outer: &'a mut SpinLockIrqGuard<'_, U>,
    ) -> (&'a mut U, VirtqueueGuard<'a, NestedBackend>) {
        let (data, guard) = self.inner.lock_inside(outer);
        (data, VirtqueueGuard(guard))
    }

    /// Detaches and drops every buffer the device still owns, then forgets the C queue.
    ///
    /// Called by the bus adapter after the device was reset (`dead`), before `del_vqs`.
    pub(super) fn revoke(&self, dead: &Dead<'_>) {
        let mut guard = self.lock();
        while guard.detach_unused(dead).is_some() {}
        guard.0.vq = None;
    }

    /// Forgets the C queue of a wrapper no driver has seen yet, so no buffer was ever queued on
    /// it; for the adapter's error paths before `del_vqs`.
    pub(super) fn forget_unused(&self) {
        self.lock().0.vq = None;
    }

    /// Attaches a revoked wrapper to a new C queue with the same index and size (after the
    /// device was frozen and restored).
    ///
    /// Fails with `EINVAL` if the new queue does not match, leaving the wrapper revoked.
    ///
    /// # Safety
    ///
    /// `vq` must be live until [`Virtqueue::revoke`] has been called again, and carry no
    /// buffers yet.
    pub(super) unsafe fn reattach(&self, vq: NonNull<bindings::virtqueue>) -> Result {
        // SAFETY: The caller guarantees that `vq` is live.
        let (index, size) = unsafe {
            (
                (*vq.as_ptr()).index,
                bindings::virtqueue_get_vring_size(vq.as_ptr()),
            )
        };
        if index != self.index || size != self.size {
            return Err(EINVAL);
        }
        let mut guard = self.lock();
        if guard.0.vq.is_some() {
            return Err(EBUSY);
        }
        // INVARIANT: The caller guarantees that `vq` is live and empty.
        guard.0.vq = Some(vq);
        Ok(())
    }
}

/// The lock backend of a queue locked with [`Virtqueue::lock_inside`].
pub type NestedBackend = crate::sync::lock::spinlock::SpinLockBackend;

/// A locked [`Virtqueue`], by [`Virtqueue::lock`] or, with `B` = [`NestedBackend`], by
/// [`Virtqueue::lock_inside`].
pub struct VirtqueueGuard<'a, B: Backend = SpinLockIrqBackend>(Guard<'a, Inner, B>);

impl<B: Backend> VirtqueueGuard<'_, B> {
    fn raw(&self) -> Option<*mut bindings::virtqueue> {
        self.0.vq.map(NonNull::as_ptr)
    }

    /// Whether the queue still exists (its device was not removed).
    pub fn is_alive(&self) -> bool {
        self.0.vq.is_some()
    }

    fn add(&mut self, mut buf: KBox<Buffer>, device_writable: bool) -> Result<(), AddError> {
        let Some(vq) = self.raw() else {
            return Err(AddError { error: ENODEV, buf });
        };
        let len = if device_writable {
            buf.capacity()
        } else {
            buf.len()
        };
        let was_writable = core::mem::replace(&mut buf.device_writable, device_writable);
        let mut sg = core::mem::MaybeUninit::<bindings::scatterlist>::zeroed();
        let ptr = buf.data.as_mut_ptr();
        // SAFETY: `sg` is writable; `ptr` points to `len` bytes of kmalloc memory, which is
        // what the DMA API and `virt_to_page` need.
        unsafe { bindings::sg_init_one(sg.as_mut_ptr(), ptr.cast(), len as u32) };
        let token = KBox::into_raw(buf);
        // SAFETY: `vq` is live (type invariant, we hold the lock); `sg` is initialised; the
        // token is a leaked `KBox<Buffer>` whose memory stays put until it comes back.
        let ret = unsafe {
            if device_writable {
                bindings::virtqueue_add_inbuf(
                    vq,
                    sg.as_mut_ptr(),
                    1,
                    token.cast(),
                    GFP_ATOMIC.as_raw(),
                )
            } else {
                bindings::virtqueue_add_outbuf(
                    vq,
                    sg.as_mut_ptr(),
                    1,
                    token.cast(),
                    GFP_ATOMIC.as_raw(),
                )
            }
        };
        match to_result(ret) {
            Ok(()) => Ok(()),
            Err(error) => {
                // SAFETY: The queue refused the token, so we still own it.
                let mut buf = unsafe { KBox::from_raw(token) };
                // As it was before the add (see `AddError`).
                buf.device_writable = was_writable;
                Err(AddError { error, buf })
            }
        }
    }

    /// Lends `buf` to the device to be filled. Its whole capacity is offered.
    pub fn add_inbuf(&mut self, buf: KBox<Buffer>) -> Result<(), AddError> {
        self.add(buf, true)
    }

    /// Lends the valid bytes of `buf` to the device to be read.
    pub fn add_outbuf(&mut self, buf: KBox<Buffer>) -> Result<(), AddError> {
        self.add(buf, false)
    }

    /// Notifies the device of new buffers. Returns `false` if the queue is broken or gone.
    pub fn kick(&mut self) -> bool {
        match self.raw() {
            // SAFETY: `vq` is live while we hold the lock.
            Some(vq) => unsafe { bindings::virtqueue_kick(vq) },
            None => false,
        }
    }

    /// Takes back a buffer the device has used.
    ///
    /// For a buffer the device wrote, its length becomes the used length reported by the
    /// device, clamped to the buffer's capacity (a device cannot make us read past it).
    pub fn get_buf(&mut self) -> Option<KBox<Buffer>> {
        let vq = self.raw()?;
        let mut len: u32 = 0;
        // SAFETY: `vq` is live while we hold the lock; `len` is writable.
        let token = unsafe { bindings::virtqueue_get_buf(vq, &mut len) };
        if token.is_null() {
            return None;
        }
        // SAFETY: By the type invariant every token is a leaked `KBox<Buffer>`, and the device
        // has given this one back.
        let mut buf = unsafe { KBox::from_raw(token.cast::<Buffer>()) };
        if buf.device_writable {
            buf.set_len(len as usize);
        }
        Some(buf)
    }

    /// Takes back a buffer the device has not used yet, for teardown.
    ///
    /// `dead` proves that the device was reset, so it no longer touches the buffer. Returns
    /// `None` when no buffer is left, and also when `dead` is about another device.
    pub fn detach_unused(&mut self, dead: &Dead<'_>) -> Option<KBox<Buffer>> {
        let vq = self.raw()?;
        // SAFETY: `vq` is live while we hold the lock.
        if unsafe { (*vq).vdev } != dead.vdev {
            return None;
        }
        // SAFETY: `vq` is live while we hold the lock; by the invariant of `Dead` its device
        // was reset and the queue is not re-enabled, so the device no longer uses its buffers.
        let token = unsafe { bindings::virtqueue_detach_unused_buf(vq) };
        // SAFETY: By the type invariant every token is a leaked `KBox<Buffer>`; the queue has
        // just dropped its reference to this one.
        (!token.is_null()).then(|| unsafe { KBox::from_raw(token.cast::<Buffer>()) })
    }

    /// Re-enables used-buffer callbacks. Returns `false` if buffers are pending, so the caller
    /// should process them (the usual race-free loop).
    pub fn enable_cb(&mut self) -> bool {
        match self.raw() {
            // SAFETY: `vq` is live while we hold the lock.
            Some(vq) => unsafe { bindings::virtqueue_enable_cb(vq) },
            None => true,
        }
    }

    /// Disables used-buffer callbacks (a hint; callbacks may still arrive).
    pub fn disable_cb(&mut self) {
        if let Some(vq) = self.raw() {
            // SAFETY: `vq` is live while we hold the lock.
            unsafe { bindings::virtqueue_disable_cb(vq) }
        }
    }

    /// Whether the queue is broken (or gone): the device will not use buffers any more.
    pub fn is_broken(&self) -> bool {
        match self.raw() {
            // SAFETY: `vq` is live while we hold the lock.
            Some(vq) => unsafe { bindings::virtqueue_is_broken(vq) },
            None => true,
        }
    }

    /// The number of free descriptors.
    pub fn num_free(&self) -> u32 {
        match self.raw() {
            // SAFETY: `vq` is live while we hold the lock; `num_free` is maintained under our
            // lock by the ring code.
            Some(vq) => unsafe { (*vq).num_free },
            None => 0,
        }
    }
}
