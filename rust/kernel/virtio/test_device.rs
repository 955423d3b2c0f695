// SPDX-License-Identifier: GPL-2.0

//! A virtio device without hardware, played from the device side by KUnit tests.
//!
//! C header: [`include/linux/virtio_test_device.h`](srctree/include/linux/virtio_test_device.h)
//!
//! A test creates a [`TestDevice`] with the feature bits and config space of its choosing; the
//! driver under test binds to it on the virtio bus. The test then acts as the host: it
//! [`take`](TestDevice::take)s the buffers the driver made available, reads and writes them,
//! [`complete`](TestDevice::complete)s them with any used length (also a wrong one), raises
//! [`interrupt`](TestDevice::interrupt)s and config changes, and breaks queues. A buffer the
//! test never completes stays with the device, as with a host that stopped consuming.
//!
//! The device offers only split rings, without indirect descriptors or event indices.

use crate::{
    bindings,
    error::{to_result, Result},
    prelude::*,
};
use core::{mem::ManuallyDrop, ptr::NonNull};

/// The `VIRTIO_F_VERSION_1` feature bit, which [`TestDevice::new`] always offers.
pub const F_VERSION_1: u32 = bindings::VIRTIO_F_VERSION_1;

/// How a test device's config space is reached, for [`TestDevice::new_with_config_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ConfigMode {
    /// Writes never sleep, as on virtio-pci and virtio-mmio (the default).
    Atomic = bindings::virtio_test_config_mode_VIRTIO_TEST_CONFIG_ATOMIC,
    /// Writes may sleep, as on vDPA, CCW and UML.
    Sleeping = bindings::virtio_test_config_mode_VIRTIO_TEST_CONFIG_SLEEPING,
    /// No config access at all, as virtio-pci modern without a device-config capability.
    None = bindings::virtio_test_config_mode_VIRTIO_TEST_CONFIG_NONE,
}

/// A buffer taken from a virtqueue by [`TestDevice::take`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The descriptor head to give back to [`TestDevice::complete`].
    pub head: u32,
    /// Bytes the driver offered for the device to read.
    pub readable: u32,
    /// Bytes the driver offered for the device to write.
    pub writable: u32,
}

/// A fake virtio device on the virtio bus.
///
/// Dropping it unbinds the driver (which sees an ordinary device removal) and frees it.
///
/// # Examples
///
/// A device no driver matches: nothing binds and no queue exists, but the config space works.
///
/// ```
/// use kernel::virtio::test_device::TestDevice;
///
/// let dev = TestDevice::new(0xfff0, 0, &[1, 2, 3, 4], 64)?;
/// assert!(!dev.is_bound());
/// assert_eq!(dev.nr_queues(), 0);
/// assert_eq!(dev.take(0, &mut [], &[]), Err(ENODEV));
/// dev.config_write(2, &[9, 9, 9]);
/// let mut cfg = [0u8; 6];
/// dev.config_read(0, &mut cfg);
/// assert_eq!(cfg, [1, 2, 9, 9, 0, 0]);
/// assert!(TestDevice::new(0xfff0, 0, &[], 100).is_err());
/// # Ok::<(), Error>(())
/// ```
///
/// # Invariants
///
/// `ptr` points to a live device made by `virtio_test_device_create`. Except for the borrowed
/// view that [`TestDevice::with_device_of`] lends (which is never dropped), the object owns
/// the device and destroys it only in [`Drop`].
pub struct TestDevice {
    ptr: NonNull<bindings::virtio_test_device>,
}

// SAFETY: The C device serialises its device-side operations with its own locks, so the
// handle can be used from any thread.
unsafe impl Send for TestDevice {}
// SAFETY: See `Send`; every method takes `&self` and locks inside.
unsafe impl Sync for TestDevice {}

impl TestDevice {
    /// Creates a device of type `device_id` offering `features` (a bit mask of feature numbers,
    /// [`F_VERSION_1`] added) and `config` as its config space, with `queue_size` entries per
    /// virtqueue, and registers it. A matching driver probes it before this returns.
    ///
    /// Fails with `EINVAL` for a queue size that is not a power of two up to 1024.
    pub fn new(device_id: u32, features: u64, config: &[u8], queue_size: u32) -> Result<Self> {
        Self::new_with_config_mode(device_id, features, config, queue_size, ConfigMode::Atomic)
    }

    /// As [`TestDevice::new`], with the config space reached as `mode` says.
    pub fn new_with_config_mode(
        device_id: u32,
        features: u64,
        config: &[u8],
        queue_size: u32,
        mode: ConfigMode,
    ) -> Result<Self> {
        let features = features | (1u64 << F_VERSION_1);
        // SAFETY: `config` is valid for reading `config.len()` bytes; the C side copies it.
        let raw = unsafe {
            bindings::virtio_test_device_create(
                device_id,
                features,
                config.as_ptr().cast(),
                config.len(),
                queue_size,
            )
        };
        let ptr = NonNull::new(raw).ok_or(EINVAL)?;
        // INVARIANT: `ptr` was just created and is owned by nobody else.
        let dev = Self { ptr };
        // SAFETY: `ptr` is valid by the type invariant and not yet registered; `mode` is one of
        // the C enum's values.
        to_result(unsafe {
            bindings::virtio_test_device_set_config_mode(dev.ptr.as_ptr(), mode as u32)
        })?;
        // SAFETY: `ptr` is valid by the type invariant and not yet registered. On failure the
        // device is freed by `drop` below.
        to_result(unsafe { bindings::virtio_test_device_register(dev.ptr.as_ptr()) })?;
        Ok(dev)
    }

    /// Calls `f` with the test device behind `dev`, or returns `None` if `dev` is not one.
    ///
    /// For a driver under test that plays its device's side from its own callbacks, for
    /// example to raise an interrupt from inside probe. Not from every callback: raising a
    /// queue's interrupt from a queue callback, or a config change from the config callback,
    /// takes the lock the callback runs under again, and [`TestDevice::freeze`] or
    /// [`TestDevice::restore`] from probe takes the device lock again; each deadlocks.
    pub fn with_device_of<R>(dev: &super::Device, f: impl FnOnce(&TestDevice) -> R) -> Option<R> {
        // SAFETY: `dev` is a valid virtio device for the duration of the borrow.
        let raw = unsafe { bindings::virtio_test_device_of(dev.as_raw()) };
        // INVARIANT: A non-null result is the live test device that embeds `dev`; it outlives
        // the borrow of `dev`, and `ManuallyDrop` keeps this view from destroying it.
        let view = ManuallyDrop::new(Self {
            ptr: NonNull::new(raw)?,
        });
        Some(f(&view))
    }

    fn raw(&self) -> *mut bindings::virtio_test_device {
        self.ptr.as_ptr()
    }

    /// Whether a driver is bound (its probe succeeded).
    pub fn is_bound(&self) -> bool {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_bound(self.raw()) }
    }

    /// The bus index of the device (the `N` of `virtioN`).
    pub fn index(&self) -> u32 {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_index(self.raw()) }
    }

    /// The status byte the driver last wrote (`VIRTIO_CONFIG_S_*`).
    pub fn status(&self) -> u8 {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_status(self.raw()) }
    }

    /// How many virtqueues the driver set up.
    pub fn nr_queues(&self) -> u32 {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_nr_queues(self.raw()) }
    }

    /// Takes the next buffer the driver made available on queue `q`: copies its readable part
    /// into `out` (as much as fits) and `input` into its writable part (as much as fits).
    ///
    /// Fails with `EAGAIN` if nothing is available, `ENODEV` if the queue does not exist and
    /// `EIO` if the descriptor chain is malformed.
    pub fn take(&self, q: u32, out: &mut [u8], input: &[u8]) -> Result<Taken> {
        let mut buf = bindings::virtio_test_buf {
            head: 0,
            readable: 0,
            writable: 0,
        };
        // SAFETY: `raw()` is valid; `out` is valid for writing and `input` for reading their
        // lengths, and `buf` for writing.
        to_result(unsafe {
            bindings::virtio_test_device_take(
                self.raw(),
                q,
                out.as_mut_ptr().cast(),
                out.len(),
                input.as_ptr().cast(),
                input.len(),
                &mut buf,
            )
        })?;
        Ok(Taken {
            head: buf.head,
            readable: buf.readable,
            writable: buf.writable,
        })
    }

    /// Gives a taken buffer back to the driver with `used_len` as its used length, right or
    /// wrong. Does not interrupt the driver.
    pub fn complete(&self, q: u32, head: u32, used_len: u32) -> Result {
        // SAFETY: `raw()` is valid by the type invariant.
        to_result(unsafe { bindings::virtio_test_device_complete(self.raw(), q, head, used_len) })
    }

    /// Buffers available on queue `q` and not yet taken.
    pub fn pending(&self, q: u32) -> u32 {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_pending(self.raw(), q) }
    }

    /// Buffers taken from queue `q` and not yet completed.
    pub fn outstanding(&self, q: u32) -> u32 {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_outstanding(self.raw(), q) }
    }

    /// Notifications the driver sent on queue `q`.
    pub fn kicks(&self, q: u32) -> u32 {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_kicks(self.raw(), q) }
    }

    /// Raises the interrupt of queue `q`, unless the driver suppressed it; the callback runs
    /// with interrupts off. Returns whether the driver's callback ran.
    pub fn interrupt(&self, q: u32) -> bool {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_interrupt(self.raw(), q) }
    }

    /// Raises the config-change interrupt.
    pub fn config_changed(&self) {
        // SAFETY: `raw()` is valid by the type invariant.
        unsafe { bindings::virtio_test_device_config_changed(self.raw()) }
    }

    /// Reads the config space at `offset` into `buf`; bytes past its end read as zero.
    pub fn config_read(&self, offset: u32, buf: &mut [u8]) {
        // SAFETY: `raw()` is valid; `buf` is valid for writing `buf.len()` bytes.
        unsafe {
            bindings::virtio_test_device_config_read(
                self.raw(),
                offset,
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    }

    /// Changes the config space at `offset`, as the device; bytes past its end are ignored.
    /// Does not interrupt the driver; see [`TestDevice::config_changed`].
    pub fn config_write(&self, offset: u32, data: &[u8]) {
        // SAFETY: `raw()` is valid; `data` is valid for reading `data.len()` bytes.
        unsafe {
            bindings::virtio_test_device_config_write(
                self.raw(),
                offset,
                data.as_ptr().cast(),
                data.len(),
            )
        }
    }

    /// Freezes the device as a system sleep does (`virtio_device_freeze`, device lock held).
    ///
    /// Fails with `EOPNOTSUPP` without `CONFIG_PM_SLEEP`, or with the driver's error.
    pub fn freeze(&self) -> Result {
        // SAFETY: `raw()` is valid by the type invariant.
        to_result(unsafe { bindings::virtio_test_device_freeze(self.raw()) })
    }

    /// Restores the device as a wake-up does (`virtio_device_restore`, device lock held); the
    /// driver finds fresh, empty queues.
    pub fn restore(&self) -> Result {
        // SAFETY: `raw()` is valid by the type invariant.
        to_result(unsafe { bindings::virtio_test_device_restore(self.raw()) })
    }

    /// Starts a transport reset (`virtio_device_reset_prepare`) as virtio-pci does, without
    /// the virtio device's lock, so it can run while the driver is being unbound. The device
    /// stays reset until it is restored or removed.
    ///
    /// Fails with the driver's error, or `EOPNOTSUPP` if it has no `reset_prepare`.
    pub fn reset_prepare(&self) -> Result {
        // SAFETY: `raw()` is valid by the type invariant.
        to_result(unsafe { bindings::virtio_test_device_reset_prepare(self.raw()) })
    }

    /// Marks queue `q` broken: from now on the driver's operations on it fail.
    pub fn break_queue(&self, q: u32) -> Result {
        // SAFETY: `raw()` is valid by the type invariant.
        to_result(unsafe { bindings::virtio_test_device_break_queue(self.raw(), q) })
    }

    /// Makes the next `find_vqs` (a probe, or a restore after a freeze) create queue `q`
    /// broken, so the driver's first operations on it fail. Fails with `EINVAL` for a queue
    /// index beyond what a device can have.
    pub fn break_queue_on_find(&self, q: u32) -> Result {
        // SAFETY: `raw()` is valid by the type invariant.
        to_result(unsafe { bindings::virtio_test_device_break_queue_on_find(self.raw(), q) })
    }
}

/// Whether local interrupts are off on this CPU (`irqs_disabled()`), for tests of the context a
/// driver callback runs in.
pub fn irqs_disabled() -> bool {
    // SAFETY: Reading the local interrupt state is always allowed.
    unsafe { bindings::virtio_test_irqs_disabled() }
}

impl Drop for TestDevice {
    fn drop(&mut self) {
        // SAFETY: `raw()` is valid and owned by us; it is not used again.
        unsafe { bindings::virtio_test_device_destroy(self.raw()) }
    }
}
