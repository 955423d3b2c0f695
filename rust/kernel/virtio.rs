// SPDX-License-Identifier: GPL-2.0

//! Abstractions for the virtio bus.
//!
//! C header: [`include/linux/virtio.h`](srctree/include/linux/virtio.h) and
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h)
//!
//! A virtio driver implements [`Driver`] and registers it with a [`Registration`], which is the
//! driver core's [`driver::Registration`] with the bus [`Adapter`] (or, for a module with one
//! driver, [`module_virtio_driver!`](crate::module_virtio_driver), built on
//! [`module_driver!`](crate::module_driver)). The bus calls [`Driver::probe`] for every device
//! that matches [`Driver::ID_TABLE`]; the driver finds its virtqueues with [`Device::find_vqs`]
//! and returns its per-device data in an [`Arc`].
//!
//! # Where the state lives
//!
//! - The driver-wide context ([`Driver::Context`]) lives in the registration: the adapter builds
//!   it with [`Driver::context`] before it registers the driver, hands it to every probe
//!   (found from the device's driver pointer) and drops it after the driver is unregistered.
//! - The per-device data ([`Driver::Data`]) is owned by the driver core, as the device's
//!   drvdata, as on the other buses: stored when probe succeeds, borrowed by every callback,
//!   dropped by the driver core after remove (or never stored, when probe fails).
//! - The adapter's own bookkeeping of a bound device (interrupts recorded during probe, the
//!   serialisation of freeze and restore with remove, the queues, the binding that handles
//!   revoke) lives in `vdev->priv`: it must exist before the driver data (interrupts come
//!   during probe) and outlive a freeze that the driver core runs concurrently with an unbind,
//!   so it is reference counted, which drvdata is not.
//!
//! # Device contexts
//!
//! As for the other buses, a [`Device`] reference carries what is known about the device's
//! binding (see [`device::DeviceContext`]):
//!
//! - `&Device<Core>` in [`Driver::probe`] and [`Driver::remove`]: the bus callbacks that set
//!   the device up and tear it down ([`Device::find_vqs`], [`Device::reset`]);
//! - `&Device<Bound>` in every other callback, and through a [`BoundHandle`] from process
//!   context: the device is bound to this driver for as long as the reference lives, so the
//!   transport operations ([`Device::config`], [`Device::device_ready`],
//!   [`Device::atomic_config_writer`], ...) are available;
//! - `ARef<Device>` (the `Normal` context): a counted reference that may outlive the binding,
//!   which only reaches what stays valid on an unbound device (the index, the negotiated
//!   features and the byte-order conversions they decide).
//!
//! # Callbacks during probe
//!
//! Virtqueue and config-change interrupts may fire as soon as the driver calls
//! [`Device::device_ready`], which is usually inside `probe`, before the driver data exists.
//! The adapter records such interrupts and, once `probe` has returned successfully and the data
//! is published, replays them: every virtqueue that was signalled gets one call of
//! [`Driver::vq_interrupt`], and a recorded config change one call of
//! [`Driver::config_changed`]. Spurious calls are always allowed by virtio, so drivers need no
//! special handling and can never observe a half-built device.
//!
//! # Lifetimes
//!
//! Virtqueues are handed out as [`Arc<Virtqueue>`]. When the device goes away, after
//! [`Driver::remove`] has returned, the adapter revokes every virtqueue (all of its operations
//! fail from then on, and the buffers the device still owned are dropped) and only then deletes
//! the queues. A driver object that outlives its device (for example an open file) therefore
//! cannot touch freed queues.
//!
//! Callbacks only borrow the driver data; the driver core drops it after remove has returned,
//! in process context, and remove resets the device (waiting for callbacks in flight) before
//! that, so no driver object is ever dropped by the adapter in interrupt context.

use crate::{
    bindings,
    device::{self, Bound, BoundInternal, Core, CoreInternal, DeviceContext, Normal},
    driver,
    error::{to_result, Error, Result},
    prelude::*,
    str::CStr,
    sync::aref::{ARef, AlwaysRefCounted},
    sync::atomic::{Acquire, Atomic, Relaxed, Release},
    sync::{new_condvar, new_mutex, new_spinlock_irq, rcu, Arc, CondVar, Mutex, SpinLockIrq},
    types::Opaque,
    ThisModule,
};
use core::{
    marker::PhantomData,
    mem::{offset_of, ManuallyDrop, MaybeUninit},
    ptr::NonNull,
};

#[cfg(CONFIG_VIRTIO_TEST_DEVICE)]
pub mod test_device;
mod virtqueue;
pub use virtqueue::{Buffer, Dead, NestedBackend, Virtqueue, VirtqueueGuard};

/// The virtio device ID of a console (`VIRTIO_ID_CONSOLE`).
pub const ID_CONSOLE: u32 = bindings::VIRTIO_ID_CONSOLE;
/// The virtio device ID of an entropy source (`VIRTIO_ID_RNG`).
pub const ID_RNG: u32 = bindings::VIRTIO_ID_RNG;

/// Matches any vendor in a [`DeviceId`] (`VIRTIO_DEV_ANY_ID`).
pub const DEV_ANY_ID: u32 = bindings::VIRTIO_DEV_ANY_ID;

/// A virtio device id, laid out as `struct virtio_device_id`.
///
/// A driver lists its ids once, with [`virtio_device_table!`](crate::virtio_device_table): the
/// same table is what the bus matches against ([`Driver::ID_TABLE`]) and what modpost turns
/// into `virtio:d<device>v<vendor>` aliases, so that udev loads the module when such a device
/// appears.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct DeviceId {
    /// The device type, for example [`ID_CONSOLE`].
    pub device: u32,
    /// The vendor, or [`DEV_ANY_ID`].
    pub vendor: u32,
}

// SAFETY: `DeviceId` is `#[repr(C)]` with the fields of `struct virtio_device_id` in the same
// order and of the same types, so the two are layout-compatible.
unsafe impl crate::device_id::RawDeviceId for DeviceId {
    type RawType = bindings::virtio_device_id;
}

const _: () =
    assert!(core::mem::size_of::<DeviceId>() == core::mem::size_of::<bindings::virtio_device_id>());

/// The id table of a virtio driver ([`Driver::ID_TABLE`]): a zero-terminated array of
/// [`DeviceId`]s.
pub type IdTable = &'static dyn crate::device_id::IdTable<DeviceId, ()>;

/// Declares the virtio id table `$table_name` of a module: a static that the driver names in
/// [`Driver::ID_TABLE`], and that modpost turns into `MODULE_ALIAS`es (`virtio:d00000003v*` for
/// a console driver), as `MODULE_DEVICE_TABLE(virtio, ...)` does in C.
///
/// # Examples
///
/// ```ignore
/// kernel::virtio_device_table!(CONSOLE_IDS, [virtio::DeviceId::new(virtio::ID_CONSOLE)]);
///
/// impl virtio::Driver for Console {
///     const ID_TABLE: virtio::IdTable = &CONSOLE_IDS;
///     // ...
/// }
/// ```
#[macro_export]
macro_rules! virtio_device_table {
    ($table_name:ident, [$($id:expr),* $(,)?]) => {
        $crate::module_device_table!(
            "virtio",
            $crate::virtio::DeviceId,
            $table_name,
            @none,
            [$($id),*]
        );
    };
}

impl DeviceId {
    /// An id that matches a device type from any vendor.
    pub const fn new(device: u32) -> Self {
        Self {
            device,
            vendor: DEV_ANY_ID,
        }
    }
}

/// Description of one virtqueue for [`Device::find_vqs`].
#[derive(Clone, Copy)]
pub struct VirtqueueInfo {
    /// The name of the queue, shown by the transport (for example in `/proc/interrupts`).
    pub name: &'static CStr,
    /// Whether used-buffer notifications call [`Driver::vq_interrupt`].
    pub callback: bool,
}

/// A virtio driver.
///
/// Callbacks marked "atomic context" run in hard interrupt context: they must not sleep and may
/// only allocate with `GFP_ATOMIC`.
pub trait Driver: Send + Sync + 'static {
    /// Driver-wide state handed to every [`Driver::probe`], owned by the [`Registration`]:
    /// built by [`Driver::context`] before the driver is registered, dropped after it is
    /// unregistered, and reachable through [`Adapter::context`].
    type Context: Send + Sync;

    /// Per-device data returned by [`Driver::probe`].
    type Data: Send + Sync;

    /// The devices the driver binds to, from [`virtio_device_table!`](crate::virtio_device_table).
    const ID_TABLE: IdTable;

    /// The feature bits the driver supports; the core negotiates their intersection with the
    /// device's.
    const FEATURES: &'static [u32];

    /// Builds the driver's context when the driver is registered; an error fails the
    /// registration.
    fn context() -> Result<Arc<Self::Context>>;

    /// Binds the driver to `dev`.
    ///
    /// The data returned is owned by the driver core from then on (drvdata): every callback
    /// borrows it, and the driver core drops it after the device is unbound (after
    /// [`Driver::remove`], in process context).
    fn probe(dev: &Device<Core<'_>>, ctx: &Arc<Self::Context>) -> Result<Arc<Self::Data>>;

    /// Unbinds the driver from `dev`.
    ///
    /// The device is already broken and reset, and no callback runs any more; the queues are
    /// still allocated but broken (adding a buffer fails with `EIO`, `get_buf` finds nothing,
    /// a kick does nothing) and are revoked and deleted after `remove` returns. The queues were
    /// broken before the adapter waited for anything, so a work item still running sees them
    /// broken and can stop (as the C drivers' loops on `virtqueue_get_buf()` do).
    ///
    /// The driver core drops its reference to `data` when this returns.
    fn remove(dev: &Device<Core<'_>>, data: &Arc<Self::Data>);

    /// A used-buffer notification on the queue with index `index` (atomic context).
    fn vq_interrupt(dev: &Device<Bound>, data: &Arc<Self::Data>, index: u32);

    /// The device's configuration space changed (atomic context).
    ///
    /// Reading the config space may sleep: defer it, for example to a work item that reads it
    /// through a [`BoundHandle`].
    fn config_changed(dev: &Device<Bound>, data: &Arc<Self::Data>) {
        let _ = (dev, data);
    }

    /// The system is going to sleep, or the transport is about to reset the device.
    ///
    /// The device is already broken (as in [`Driver::remove`]) and reset, and no callback runs
    /// any more. The driver stops its deferred work and forgets what it had lent the device.
    /// When this returns, the adapter revokes every queue (dropping the buffers the device
    /// still owned) and deletes them; the [`Virtqueue`] objects stay valid and are attached to
    /// new queues before [`Driver::restore`].
    ///
    /// An error aborts the sleep (or the transport reset); the adapter then brings the device
    /// back at once: the queues are deleted, found again empty, and [`Driver::restore`] runs
    /// as after a wake-up, so the driver must cope with a restore after a partial freeze.
    fn freeze(dev: &Device<Bound>, data: &Arc<Self::Data>) -> Result {
        let _ = (dev, data);
        Ok(())
    }

    /// The system woke up, or the transport reset is over.
    ///
    /// The features are negotiated again and the driver's queues exist again, empty. The
    /// driver refills them and calls [`Device::device_ready`] (the core does if it does not).
    fn restore(dev: &Device<Bound>, data: &Arc<Self::Data>) -> Result {
        let _ = (dev, data);
        Ok(())
    }
}

/// A virtio device, in the context `Ctx` (see the module documentation).
///
/// # Invariants
///
/// `self.0` is a valid `struct virtio_device`, alive for as long as a reference to `Device`
/// exists. For `Ctx` = [`Bound`] (and [`Core`], which dereferences to it), the device is bound
/// to a driver of this module's [`Registration`] for as long as the reference lives; for
/// [`Core`], the reference lives inside that driver's probe or remove.
#[repr(transparent)]
pub struct Device<Ctx: DeviceContext = Normal>(Opaque<bindings::virtio_device>, PhantomData<Ctx>);

// SAFETY: `Device` is a transparent wrapper of a type that does not depend on its generic
// argument.
kernel::impl_device_context_deref!(unsafe { Device });
kernel::impl_device_context_into_aref!(Device);

impl<Ctx: DeviceContext> Device<Ctx> {
    /// Creates a reference from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `struct virtio_device` that stays alive for `'a`, in the
    /// state `Ctx` promises (see the type invariants) for all of `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::virtio_device) -> &'a Self {
        // SAFETY: `Device` is a transparent wrapper of `struct virtio_device`; the caller
        // guarantees validity and the context for `'a`.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut bindings::virtio_device {
        self.0.get()
    }
}

/// What is valid on any device, bound or not: the device stays allocated while referenced, and
/// these fields are set before it is registered (the features when a driver probes it).
impl Device {
    /// The bus index of the device, the `N` of `virtioN`.
    pub fn index(&self) -> u32 {
        // SAFETY: By the type invariant `self.0` is valid; `index` is set before the device is
        // registered and never changes afterwards.
        unsafe { (*self.as_raw()).index as u32 }
    }

    /// Whether feature bit `fbit` was negotiated.
    pub fn has_feature(&self, fbit: u32) -> bool {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio_has_feature(self.as_raw(), fbit) }
    }

    /// Converts a CPU value to the device's 16-bit wire format (`cpu_to_virtio16`).
    pub fn cpu_to_virtio16(&self, val: u16) -> u16 {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::cpu_to_virtio16(self.as_raw(), val) }
    }

    /// Converts a CPU value to the device's 32-bit wire format (`cpu_to_virtio32`).
    pub fn cpu_to_virtio32(&self, val: u32) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::cpu_to_virtio32(self.as_raw(), val) }
    }

    /// Converts a 16-bit value in the device's wire format to CPU order (`virtio16_to_cpu`).
    pub fn virtio16_to_cpu(&self, val: u16) -> u16 {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio16_to_cpu(self.as_raw(), val) }
    }

    /// Converts a 32-bit value in the device's wire format to CPU order (`virtio32_to_cpu`).
    pub fn virtio32_to_cpu(&self, val: u32) -> u32 {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio32_to_cpu(self.as_raw(), val) }
    }

    /// Takes a counted reference to the device, which may outlive the binding.
    pub fn get(&self) -> ARef<Device> {
        ARef::from(self)
    }
}

/// Transport operations: only while the device is bound (a virtio-pci device's registers are
/// unmapped after its removal, and `priv` belongs to whichever driver is bound).
impl Device<Bound> {
    /// Whether the transport gives access to the configuration space (virtio-pci modern
    /// without a device-config capability does not).
    pub fn config_accessible(&self) -> bool {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio_config_accessible(self.as_raw()) }
    }

    /// The configuration space, or `None` if the transport gives no access to it.
    pub fn config(&self) -> Option<Config<'_>> {
        // INVARIANT: Checked just above; `self` is bound.
        self.config_accessible().then_some(Config { dev: self })
    }

    /// A writer of configuration fields that never sleeps, for atomic context such as a
    /// panic-time [`crate::kmsg_dump`] dumper; it stops writing when the device is unbound.
    ///
    /// Fails with `EOPNOTSUPP` unless the transport is known to write the config space without
    /// sleeping: virtio-pci and virtio-mmio, which write device registers (decided by the
    /// driver of the transport device; see `rust_helper_virtio_config_set_atomic`). vDPA, CCW
    /// and UML, whose writes may sleep, and a transport without config access are refused.
    /// Fails with `ENODEV` for a device not bound to a Rust driver of this module.
    pub fn atomic_config_writer(&self) -> Result<AtomicConfigWriter> {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        if !unsafe { bindings::virtio_config_set_atomic(self.as_raw()) } {
            return Err(EOPNOTSUPP);
        }
        let binding = self.state().ok_or(ENODEV)?.binding.clone();
        // INVARIANT: Checked just above; `binding` is revoked when the device is unbound.
        Ok(AtomicConfigWriter { binding })
    }

    /// A handle that gives this device back as `&Device<Bound>` from process context (a work
    /// item) for as long as it stays bound. Fails with `ENODEV` for a device not bound to a
    /// Rust driver of this module.
    pub fn handle(&self) -> Result<BoundHandle> {
        let binding = self.state().ok_or(ENODEV)?.binding.clone();
        Ok(BoundHandle { binding })
    }

    /// The adapter's state of this device, if it is bound to a Rust driver.
    fn state(&self) -> Option<&DeviceState> {
        // SAFETY: `self` is bound (type invariant), so `priv_` is owned by the bound driver; if
        // it is one of ours, the adapter set it to a `DeviceState` before calling `probe`, and
        // frees the state only after `remove`.
        let p = unsafe { (*self.as_raw()).priv_ };
        // SAFETY: See above; the state outlives every `&Device<Bound>` handed to the driver.
        (!p.is_null()).then(|| unsafe { &*p.cast::<DeviceState>() })
    }

    /// Sets `DRIVER_OK`, so the device may use the queues while `probe` is still running.
    pub fn device_ready(&self) {
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio_device_ready(self.as_raw()) }
    }

    /// Marks every queue of the device broken (`virtio_break_device()`), for the adapter, first
    /// thing in remove and freeze, as the C drivers do before they wait for their work
    /// (`virtcons_remove`: "Device is going away, exit any polling for buffers"): from then on
    /// adding a buffer fails with `EIO`, `get_buf` finds nothing and a kick does not notify, so
    /// a work item still handling a backlog, or polling a ring the device will never consume,
    /// ends at once. Not offered to drivers: nothing unbreaks a queue (the queues that restore
    /// finds are new ones, unbroken, or with `CONFIG_VIRTIO_HARDEN_NOTIFICATION` unbroken by
    /// `virtio_device_ready()`), so a driver that broke its device outside these paths could
    /// not recover it.
    fn break_queues(&self) {
        // SAFETY: By the type invariant `self.as_raw()` is valid; `virtio_break_device` only
        // sets the `broken` flag of each queue on the device's list, under its lock.
        unsafe { bindings::virtio_break_device(self.as_raw()) }
    }

    /// [`Device::reset`], for the adapter (and `Device<Core>`).
    fn reset_inner(&self) {
        crate::task::might_sleep();
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio_reset_device(self.as_raw()) };
        // Not every transport's reset waits for callbacks in flight (virtio-pci does,
        // virtio-mmio does not); make sure they are done.
        // SAFETY: By the type invariant `self.as_raw()` is valid.
        unsafe { bindings::virtio_synchronize_cbs(self.as_raw()) };
        // Some transports have neither (remoteproc, vDPA, UML, mlxbf-tmfifo, which calls
        // `vring_interrupt()` from a work item). The adapter's callbacks run in RCU read-side
        // critical sections, so a grace period waits for them on every transport.
        rcu::synchronize_rcu();
    }

    /// Resets the device ([`Device::reset`]) and returns the proof that its queues are dead.
    ///
    /// For the adapter only: the proof must be dropped before the queues are found again.
    fn reset_dead(&self) -> Dead<'_> {
        self.reset_inner();
        // SAFETY: The device was just reset; the adapter drops the proof before the callback
        // (remove, a failed probe, freeze) returns, so before any queue is found again.
        unsafe { Dead::new(self) }
    }
}

/// Set-up and teardown: only in [`Driver::probe`] and [`Driver::remove`].
impl<'a> Device<Core<'a>> {
    /// Resets the device: it stops using the queues and raising interrupts, and callbacks
    /// already running have finished when this returns. Sleeps (an RCU grace period).
    pub fn reset(&self) {
        self.reset_inner();
    }

    /// Finds the device's virtqueues, in the order of `infos`. Once per binding (`EBUSY`
    /// after that).
    ///
    /// The queues stay usable until the device is removed; see the module documentation.
    pub fn find_vqs(&self, infos: &[VirtqueueInfo]) -> Result<KVec<Arc<Virtqueue>>> {
        let state = self.state().ok_or(EINVAL)?;
        let n = infos.len();
        let mut queues = state.queues.lock();
        if !queues.vqs.is_empty() || queues.frozen {
            return Err(EBUSY);
        }
        queues.vqs.reserve(n, GFP_KERNEL)?;
        let mut saved = KVec::with_capacity(n, GFP_KERNEL)?;
        saved.extend_from_slice(infos, GFP_KERNEL)?;
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        let raw = state.find_raw(self, infos)?;
        let mut result = Ok(());
        for &raw_vq in raw.iter() {
            // SAFETY: `raw_vq` was just returned by `find_vqs` and is deleted only by `del_vqs`,
            // after every wrapper was revoked (see `DeviceState::teardown` and `freeze`).
            let vq = match Arc::pin_init(unsafe { Virtqueue::new(raw_vq) }, GFP_KERNEL) {
                Ok(vq) => vq,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            // Cannot fail: both vectors were allocated with capacity `n`.
            if let Err(e) = queues.vqs.push(vq.clone(), GFP_KERNEL) {
                result = Err(e.into());
                break;
            }
            if let Err(e) = out.push(vq, GFP_KERNEL) {
                result = Err(e.into());
                break;
            }
        }
        if let Err(e) = result {
            // No wrapper reached the driver, so no buffer was queued.
            for vq in queues.vqs.drain_all() {
                vq.forget_unused();
            }
            // SAFETY: The queues were found above and every wrapper has forgotten them.
            unsafe { bindings::virtio_del_vqs(self.as_raw()) };
            return Err(e);
        }
        queues.infos = saved;
        Ok(out)
    }
}

/// The configuration space of a device whose transport gives access to it, from
/// [`Device::config`].
///
/// Every access may sleep (some transports wait for the device). Use `core::mem::offset_of!`
/// on the uapi config struct for the offsets; out-of-range offsets are the transport's to
/// handle.
///
/// # Invariants
///
/// The transport of `dev` has both a `get` and a `set` config operation.
#[derive(Clone, Copy)]
pub struct Config<'a> {
    dev: &'a Device<Bound>,
}

impl Config<'_> {
    /// Reads a 16-bit field at byte `offset`, converted from virtio endianness.
    pub fn read_u16(&self, offset: usize) -> u16 {
        // SAFETY: `dev` is valid and bound (type invariant of `Device<Bound>`), and its
        // transport has a `get` (type invariant); out-of-range offsets are handled by the
        // transport.
        unsafe { bindings::virtio_cread16(self.dev.as_raw(), offset as u32) }
    }

    /// Reads a 32-bit field at byte `offset`, converted from virtio endianness.
    pub fn read_u32(&self, offset: usize) -> u32 {
        // SAFETY: As for `read_u16`.
        unsafe { bindings::virtio_cread32(self.dev.as_raw(), offset as u32) }
    }

    /// Writes a 32-bit field at byte `offset`, converted to virtio endianness.
    pub fn write_u32(&self, offset: usize, val: u32) {
        // SAFETY: `dev` is valid and bound, and its transport has a `set` (type invariant).
        unsafe { bindings::virtio_cwrite32(self.dev.as_raw(), offset as u32, val) }
    }
}

/// Writes configuration fields without sleeping, from [`Device::atomic_config_writer`]; a
/// write after the device was unbound does nothing.
///
/// # Invariants
///
/// The transport of the device of `binding` has a `set` config operation that never sleeps.
pub struct AtomicConfigWriter {
    binding: Arc<Binding>,
}

impl AtomicConfigWriter {
    /// Writes a 32-bit field at byte `offset`, converted to virtio endianness, from any
    /// context. Returns `false`, writing nothing, once the device is unbound.
    pub fn write_u32(&self, offset: usize, val: u32) -> bool {
        let _rcu = rcu::read_lock();
        if !self.binding.live.load(Acquire) {
            return false;
        }
        // SAFETY: The device is still bound: `Binding::revoke` clears `live` and then waits
        // for a grace period before the device is unbound, and we hold the RCU read lock. Its
        // transport's `set` exists and does not sleep (type invariant).
        unsafe { bindings::virtio_cwrite32_atomic(self.binding.vdev, offset as u32, val) };
        true
    }
}

/// The binding of one device to a Rust driver, shared by the adapter, [`BoundHandle`]s and
/// [`AtomicConfigWriter`]s; revoked when the driver is unbound.
///
/// # Invariants
///
/// `vdev` is a valid device bound to a driver of this module while `live` is `true` (for a
/// reader under the RCU read lock) and while `bound` holds `true` (for its lock holder). Both
/// turn `false` once, in [`Binding::revoke`], before the device is unbound.
#[pin_data]
struct Binding {
    vdev: *mut bindings::virtio_device,
    /// For atomic users, under the RCU read lock.
    live: Atomic<bool>,
    /// For sleeping users ([`BoundHandle::with`]).
    #[pin]
    bound: Mutex<bool>,
}

// SAFETY: `vdev` is only used while the device is bound (type invariant), from any thread.
unsafe impl Send for Binding {}
// SAFETY: See `Send`; the flags are an atomic and a mutex.
unsafe impl Sync for Binding {}

impl Binding {
    /// Stops every user: waits for a [`BoundHandle::with`] in progress. Atomic users may still
    /// be inside their RCU read-side critical section: the caller waits for a grace period
    /// (the reset that follows) before the device is unbound.
    fn revoke(&self) {
        let mut bound = self.bound.lock();
        *bound = false;
        self.live.store(false, Release);
    }
}

/// A handle to a bound device, for process context outside the driver's callbacks (a work
/// item): [`BoundHandle::with`] gives the device as `&Device<Bound>` until it is unbound.
#[derive(Clone)]
pub struct BoundHandle {
    binding: Arc<Binding>,
}

impl BoundHandle {
    /// Calls `f` with the device if it is still bound, and returns its result; returns `None`
    /// once the device's removal has begun.
    ///
    /// May sleep. The device stays bound until `f` returns: its removal waits for `f` before
    /// it calls [`Driver::remove`] (the handle is revoked first, so a work item that
    /// [`Driver::remove`] flushes finds `None` and ends).
    pub fn with<R>(&self, f: impl FnOnce(&Device<Bound>) -> R) -> Option<R> {
        let bound = self.binding.bound.lock();
        if !*bound {
            return None;
        }
        // SAFETY: `bound` is held and `true`, so the device is valid and bound until it is
        // released, after `f` returns (type invariant of `Binding`).
        let dev = unsafe { Device::<Bound>::from_raw(self.binding.vdev) };
        Some(f(dev))
    }
}

impl<Ctx: DeviceContext> AsRef<device::Device<Ctx>> for Device<Ctx> {
    fn as_ref(&self) -> &device::Device<Ctx> {
        // SAFETY: By the type invariant `self.as_raw()` is valid, so is its embedded
        // `struct device`, for as long as `self` lives, in the same context.
        unsafe { device::Device::from_raw(&raw mut (*self.as_raw()).dev) }
    }
}

// SAFETY: Instances are always reference counted through the embedded `struct device`.
unsafe impl AlwaysRefCounted for Device {
    fn inc_ref(&self) {
        // SAFETY: The existence of a shared reference means that the refcount is non-zero.
        unsafe { bindings::get_device(&raw mut (*self.as_raw()).dev) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The safety requirements guarantee that the refcount is non-zero.
        unsafe {
            bindings::put_device(&raw mut (*obj.cast::<bindings::virtio_device>().as_ptr()).dev)
        }
    }
}

// SAFETY: A `Device` is a refcounted C object whose methods may be called from any thread.
unsafe impl Send for Device {}
// SAFETY: All methods take `&self` and are safe to call concurrently.
unsafe impl Sync for Device {}
// SAFETY: As for `Device<Normal>`; `Bound` is a zero-sized marker.
unsafe impl Sync for Device<Bound> {}

/// What the adapter keeps in `vdev->priv` while a Rust driver is bound.
///
/// The first field lets the driver-independent [`Device::find_vqs`] install the typed interrupt
/// trampoline of the bound driver.
#[repr(C)]
#[pin_data]
struct DeviceState {
    vq_callback: unsafe extern "C" fn(*mut bindings::virtqueue),
    /// Every queue found, revoked before `del_vqs`. Touched in process context only, from probe,
    /// remove, freeze and restore, which the adapter serialises (`BoundState::pm`).
    #[pin]
    queues: Mutex<Queues>,
    /// Revoked when the driver is unbound.
    binding: Arc<Binding>,
}

/// The queues of a bound device.
struct Queues {
    vqs: KVec<Arc<Virtqueue>>,
    /// What [`Device::find_vqs`] was asked for, to find the same queues again on restore.
    infos: KVec<VirtqueueInfo>,
    /// A freeze deleted the queues and no restore found them again: every wrapper is revoked.
    frozen: bool,
}

impl DeviceState {
    /// Finds the queues described by `infos`; on success every entry is non-null.
    fn find_raw(
        &self,
        dev: &Device<Bound>,
        infos: &[VirtqueueInfo],
    ) -> Result<KVec<NonNull<bindings::virtqueue>>> {
        let n = infos.len();
        let mut raw_infos = KVec::with_capacity(n, GFP_KERNEL)?;
        for info in infos {
            raw_infos.push(
                bindings::virtqueue_info {
                    name: info.name.as_char_ptr(),
                    callback: if info.callback {
                        Some(self.vq_callback)
                    } else {
                        None
                    },
                    ctx: false,
                },
                GFP_KERNEL,
            )?;
        }
        let mut raw_vqs: KVec<*mut bindings::virtqueue> = KVec::with_capacity(n, GFP_KERNEL)?;
        raw_vqs.resize(n, core::ptr::null_mut(), GFP_KERNEL)?;
        let mut out = KVec::with_capacity(n, GFP_KERNEL)?;
        // SAFETY: `dev.as_raw()` is valid; both arrays hold `n` entries.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                dev.as_raw(),
                n as u32,
                raw_vqs.as_mut_ptr(),
                raw_infos.as_mut_ptr(),
            )
        })?;
        for &raw in raw_vqs.iter() {
            match NonNull::new(raw) {
                // Cannot fail: `out` has room for `n` entries.
                Some(vq) => out.push(vq, GFP_KERNEL)?,
                None => {
                    // SAFETY: The queues were just found and nothing uses them yet.
                    unsafe { bindings::virtio_del_vqs(dev.as_raw()) };
                    return Err(EINVAL);
                }
            }
        }
        Ok(out)
    }

    /// Revokes every queue and deletes them, after the device was reset (`dead`).
    fn teardown(&self, dev: &Device<Bound>, dead: &Dead<'_>) {
        let mut queues = self.queues.lock();
        if queues.frozen {
            // Revoked and deleted by the freeze already.
            queues.vqs.clear();
            return;
        }
        if queues.vqs.is_empty() {
            return;
        }
        for vq in queues.vqs.drain_all() {
            vq.revoke(dead);
        }
        // SAFETY: The device was reset and every `Virtqueue` wrapper is revoked, so nothing
        // uses the raw queues any more.
        unsafe { bindings::virtio_del_vqs(dev.as_raw()) };
    }

    /// Revokes and deletes every queue but keeps the wrappers, for [`Self::thaw`], after the
    /// device was reset (`dead`).
    fn freeze(&self, dev: &Device<Bound>, dead: &Dead<'_>) {
        let mut queues = self.queues.lock();
        if queues.frozen || queues.vqs.is_empty() {
            return;
        }
        for vq in queues.vqs.iter() {
            vq.revoke(dead);
        }
        // SAFETY: The device was reset and every `Virtqueue` wrapper is revoked.
        unsafe { bindings::virtio_del_vqs(dev.as_raw()) };
        queues.frozen = true;
    }

    /// Finds the queues again after [`Self::freeze`] and attaches the wrappers to them.
    fn thaw(&self, dev: &Device<Bound>) -> Result {
        let mut queues = self.queues.lock();
        if !queues.frozen {
            return Ok(());
        }
        let raw = self.find_raw(dev, &queues.infos)?;
        for (vq, &raw_vq) in queues.vqs.iter().zip(raw.iter()) {
            // SAFETY: `raw_vq` was just found and is deleted only after its wrapper is
            // revoked again (`teardown` or `freeze`).
            if let Err(e) = unsafe { vq.reattach(raw_vq) } {
                // The driver's `restore` has not run yet, so no buffer was queued.
                for vq in queues.vqs.iter() {
                    vq.forget_unused();
                }
                // SAFETY: Every wrapper has forgotten the new queues again.
                unsafe { bindings::virtio_del_vqs(dev.as_raw()) };
                return Err(e);
            }
        }
        queues.frozen = false;
        Ok(())
    }
}

/// Interrupts seen before the driver data was published.
#[derive(Default)]
struct Pending {
    /// Bit `i` is set when queue `i` (or, for bit 63, any queue `>= 63`) was signalled.
    vqs: u64,
    config: bool,
}

/// The adapter's bookkeeping of one device bound to driver `T`, kept in `vdev->priv`.
///
/// The driver's data is not here: the driver core owns it (drvdata, see [`Adapter`]). What is
/// here must exist before the driver data does (interrupts recorded during probe), or must be
/// reachable by callbacks that the driver core does not serialise with the unbind (freeze and
/// restore, through `priv` under the RCU read lock and a reference count), which drvdata,
/// freed by the driver core right after remove, cannot be.
///
/// # Invariants
///
/// `published` turns `true` once, after `probe` has succeeded and its data was stored as the
/// device's drvdata (an `Arc<T::Data>`), and `false` once, when remove begins, before the
/// device is reset. The driver core drops the drvdata only after remove has returned
/// (`post_unbind_rust`), so after that reset, which waits for callbacks in flight
/// ([`Device::reset`]: the callbacks run under the RCU read lock and it waits for a grace
/// period, whatever the transport).
#[pin_data]
#[repr(C)]
struct BoundState<T: Driver> {
    #[pin]
    common: DeviceState,
    /// Whether the driver data is in drvdata. Stored in process context (probe and remove)
    /// with `pending` held; loaded without a lock by the callbacks, in interrupt context, so
    /// that the hot path of an interrupt takes no lock and touches no reference count.
    published: Atomic<bool>,
    /// Interrupts seen while `published` was `false`. Touched from interrupt context (the
    /// callbacks) and process context (probe, when it publishes the data).
    #[pin]
    pending: SpinLockIrq<Pending>,
    /// Serialises probe, remove, freeze, restore, reset-prepare and reset-done of the device.
    ///
    /// The driver core holds the virtio device's lock for probe and remove only. virtio-pci
    /// calls freeze/restore and `reset_prepare`/`reset_done` (a PCI function reset, which user
    /// space can start through the PCI device's sysfs `reset` file) with the PCI device's lock
    /// held, not the virtio device's; without this lock an unbind of the virtio device through
    /// sysfs could free the state, and the driver core the driver data, under a reset-prepare.
    #[pin]
    pm: Mutex<PmState>,
    /// Signalled when `PmState::restoring` turns `false`.
    #[pin]
    pm_done: CondVar,
    _p: PhantomData<T>,
}

/// What [`BoundState::pm`] guards.
#[derive(Default)]
struct PmState {
    /// The device was removed, or its probe failed: PM callbacks do nothing.
    removed: bool,
    /// A failed freeze is bringing the device back through the core's `reset_done`, which
    /// calls `restore_callback` (so without `pm` held): remove waits until it is over.
    restoring: bool,
}

impl<T: Driver> BoundState<T> {
    /// Calls `f` with the driver data or, while `probe` runs, records the interrupt with
    /// `record` so that it is replayed once the data is published.
    ///
    /// Called from the callbacks only (interrupt context, between `find_vqs` and the reset in
    /// `remove`, or the config callback while it is enabled), with `vdev` the device of this
    /// state.
    fn with_data(
        &self,
        vdev: *mut bindings::virtio_device,
        record: impl FnOnce(&mut Pending),
        f: impl FnOnce(&Arc<T::Data>),
    ) {
        if !self.published.load(Acquire) {
            let pending = self.pending.lock();
            // `probe` publishes with `pending` held: either it has done so by now, or it will
            // find this record when it does.
            if !self.published.load(Relaxed) {
                let mut pending = pending;
                record(&mut pending);
                return;
            }
        }
        // SAFETY: `vdev` is valid and bound to our driver: its callbacks run, and `published`
        // was `true`, so remove has not reset the device yet (type invariant).
        let dev = unsafe { Device::<BoundInternal>::from_raw(vdev) };
        // SAFETY: `published` was `true`: probe stored an `Arc<T::Data>` as drvdata before it
        // set the flag (`Release`, read with `Acquire` or under `pending`), and the driver core
        // drops it only after remove's reset, which waits for this callback (type invariant).
        let data = unsafe { dev.as_ref().drvdata_borrow::<Arc<T::Data>>() };
        f(data.get_ref());
    }

    /// Publishes the driver data (already in drvdata) and returns the interrupts recorded
    /// before.
    fn publish(&self) -> Pending {
        let mut pending = self.pending.lock();
        self.published.store(true, Release);
        core::mem::take(&mut *pending)
    }

    /// Unpublishes the driver data: callbacks that start from now on record, and do not reach
    /// the driver.
    fn unpublish(&self) {
        let _pending = self.pending.lock();
        self.published.store(false, Relaxed);
    }

    /// The bound device and the driver data, for a PM callback, both borrowed for as long as
    /// `pm` is held; `None` if the driver is not bound (probe failed or is still running, or
    /// remove has begun).
    ///
    /// # Safety
    ///
    /// `vdev` must be the device of this state, valid while `pm` is held.
    unsafe fn bound<'g>(
        &self,
        pm: &'g crate::sync::MutexGuard<'_, PmState>,
        vdev: *mut bindings::virtio_device,
    ) -> Option<(&'g Device<BoundInternal>, &'g Arc<T::Data>)> {
        if pm.removed || !self.published.load(Acquire) {
            return None;
        }
        // SAFETY: `vdev` is valid while `pm` is held (safety requirements). Probe succeeded
        // (the data is published) and remove has not begun: it sets `removed` under `pm`
        // first, so the device stays bound to our driver while `pm`, which bounds the
        // borrow, is held.
        let dev = unsafe { Device::<BoundInternal>::from_raw(vdev) };
        // SAFETY: The data is published, so in drvdata as an `Arc<T::Data>`, and the driver
        // core drops it only after remove, so not while `pm` is held (see above).
        let data = unsafe { dev.as_ref().drvdata_borrow::<Arc<T::Data>>() };
        Some((dev, data.get_ref()))
    }
}

/// Declares a kernel module whose only job is one virtio driver: registers `type` (a
/// [`Driver`]) under the module's name through [`Registration`], and unregisters it when the
/// module goes away. The driver's context comes from [`Driver::context`]. The other fields are
/// those of [`module!`](crate::prelude::module).
///
/// # Examples
///
/// ```ignore
/// kernel::module_virtio_driver! {
///     type: RngDriver,
///     name: "rust_virtio_rng",
///     authors: ["..."],
///     description: "...",
///     license: "GPL",
/// }
/// ```
#[macro_export]
macro_rules! module_virtio_driver {
    ($($f:tt)*) => {
        $crate::module_driver!(<T>, $crate::virtio::Adapter<T>, { $($f)* });
    };
}

/// The registration of virtio driver `T`: dropping it unregisters the driver, which unbinds
/// every device, and then drops the driver's context.
///
/// `Registration::<T>::new(name, module)` registers the driver; [`Adapter::context`] gives its
/// context.
pub type Registration<T> = driver::Registration<Adapter<T>>;

/// The driver structure of a Rust virtio driver ([`driver::DriverLayout::DriverType`] of
/// [`Adapter`]): the C `struct virtio_driver` and the driver's context, which the adapter's
/// probe finds from the device's driver pointer with `container_of`.
///
/// # Invariants
///
/// `ctx` is initialised from the start of a successful [`driver::RegistrationOps::register`]
/// (before the driver is registered with the bus) until the matching
/// [`driver::RegistrationOps::unregister`] (after it is unregistered), and only read in
/// between.
#[repr(C)]
pub struct RawDriver<T: Driver> {
    drv: bindings::virtio_driver,
    ctx: MaybeUninit<Arc<T::Context>>,
}

impl<T: Driver> Default for RawDriver<T> {
    fn default() -> Self {
        Self {
            drv: bindings::virtio_driver::default(),
            ctx: MaybeUninit::uninit(),
        }
    }
}

/// The bus adapter of virtio driver `T`, for [`driver::Registration`].
///
/// # Where things live
///
/// - The driver's context ([`Driver::Context`]): in the registration's [`RawDriver`], built by
///   [`Driver::context`] before the driver is registered and dropped after it is unregistered.
/// - The driver's per-device data ([`Driver::Data`]): owned by the driver core, as the device's
///   drvdata (an `Arc<T::Data>` in a `KBox`): stored when `probe` succeeds, borrowed by every
///   callback, dropped by the driver core after the driver is unbound (`post_unbind_rust`,
///   after remove, in process context), as for the other buses.
/// - The adapter's own bookkeeping of a bound device (interrupts recorded during probe, the
///   lock that serialises freeze and restore with remove, the queues and the binding that
///   handles revoke): in `vdev->priv`, which virtio reserves for the bound driver. It exists
///   before the driver data (interrupts may come during probe) and is reference counted, so a
///   freeze that the driver core runs concurrently with an unbind holds it alive.
pub struct Adapter<T: Driver>(PhantomData<T>);

// SAFETY:
// - `RawDriver<T>` is `#[repr(C)]`.
// - `DriverData` is the type of the device's drvdata, which the adapter stores in probe.
// - `RawDriver<T>` embeds a `struct virtio_driver`, which embeds a `struct device_driver`, at
//   `DEVICE_DRIVER_OFFSET`.
unsafe impl<T: Driver> driver::DriverLayout for Adapter<T> {
    type DriverType = RawDriver<T>;
    type DriverData<'bound> = Arc<T::Data>;
    const DEVICE_DRIVER_OFFSET: usize =
        offset_of!(RawDriver<T>, drv) + offset_of!(bindings::virtio_driver, driver);
}

// SAFETY: `unregister` only unregisters a driver that `register` registered, and drops the
// context that it stored.
unsafe impl<T: Driver> driver::RegistrationOps for Adapter<T> {
    unsafe fn register(
        reg: &Opaque<RawDriver<T>>,
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result {
        let ctx = T::context()?;
        let raw = reg.get();
        // SAFETY: `reg` is initialised and not registered yet (`driver::Registration::new`), so
        // nothing else accesses it; the id table is a zero-terminated static.
        // INVARIANT: `ctx` is initialised before the driver is registered.
        unsafe {
            (*raw).ctx.write(ctx);
            let drv = &raw mut (*raw).drv;
            (*drv).driver.name = name.as_char_ptr();
            (*drv).id_table = T::ID_TABLE.as_ptr();
            (*drv).feature_table = T::FEATURES.as_ptr();
            (*drv).feature_table_size = T::FEATURES.len() as u32;
            (*drv).probe = Some(Self::probe_callback);
            (*drv).remove = Some(Self::remove_callback);
            (*drv).config_changed = Some(Self::config_callback);
            (*drv).freeze = Some(Self::freeze_callback);
            (*drv).restore = Some(Self::restore_callback);
            // A transport reset (PCI FLR) is a freeze and a restore.
            (*drv).reset_prepare = Some(Self::freeze_callback);
            (*drv).reset_done = Some(Self::restore_callback);
        }
        // SAFETY: The driver is fully set up and, by the safety requirements, stays pinned and
        // valid until `unregister`.
        let ret = to_result(unsafe {
            bindings::__register_virtio_driver(&raw mut (*raw).drv, module.as_ptr())
        });
        if ret.is_err() {
            // SAFETY: `ctx` was initialised above and the driver is not registered, so no
            // probe reads it; there is no `unregister` after a failed `register`.
            unsafe { (*raw).ctx.assume_init_drop() };
        }
        ret
    }

    unsafe fn unregister(reg: &Opaque<RawDriver<T>>) {
        let raw = reg.get();
        // SAFETY: By the safety requirements, `register` registered this driver.
        unsafe { bindings::unregister_virtio_driver(&raw mut (*raw).drv) };
        // SAFETY: `register` succeeded, so `ctx` is initialised (type invariant); the driver is
        // unregistered, every device unbound, so no callback reads it any more.
        unsafe { (*raw).ctx.assume_init_drop() };
    }
}

impl<T: Driver> Adapter<T> {
    /// The context of the registered driver `reg`, built by [`Driver::context`].
    pub fn context(reg: &Registration<T>) -> &Arc<T::Context> {
        let raw = reg.driver_type().get();
        // SAFETY: A `driver::Registration` exists only after a successful `register` and until
        // its `unregister`, so `ctx` is initialised and only read (type invariant of
        // `RawDriver`) for as long as `reg` is borrowed.
        unsafe { (*raw).ctx.assume_init_ref() }
    }

    /// The context of the driver that `vdev` is bound to.
    ///
    /// # Safety
    ///
    /// `vdev` must be valid and bound (or being bound) to driver `T`, in one of its callbacks;
    /// the result must not outlive the callback.
    unsafe fn context_of<'a>(vdev: *mut bindings::virtio_device) -> &'a Arc<T::Context> {
        // SAFETY: In a callback of driver `T`, `dev.driver` is the `device_driver` embedded in
        // the `virtio_driver` that starts a registered `RawDriver<T>` (`#[repr(C)]`), whose
        // `ctx` is initialised while it is registered (type invariant), which lasts at least
        // until the device is unbound.
        unsafe {
            let drv = crate::container_of!((*vdev).dev.driver, bindings::virtio_driver, driver);
            let raw = crate::container_of!(drv, RawDriver<T>, drv);
            (*raw).ctx.assume_init_ref()
        }
    }

    extern "C" fn probe_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The bus calls probe with a valid device being bound to our driver.
        let ctx = unsafe { Self::context_of(vdev) };
        // SAFETY: `vdev` is valid for the duration of probe, which the bus calls with the
        // device being bound to our driver.
        let dev = unsafe { Device::<CoreInternal<'_>>::from_raw(vdev) };
        let binding = Arc::pin_init(
            pin_init!(Binding {
                vdev,
                live: Atomic::new(true),
                bound <- new_mutex!(true),
            }),
            GFP_KERNEL,
        );
        let binding = match binding {
            Ok(b) => b,
            Err(e) => return e.to_errno(),
        };

        let state = Arc::pin_init(
            pin_init!(BoundState::<T> {
                common <- pin_init!(DeviceState {
                    vq_callback: Self::vq_callback,
                    queues <- new_mutex!(Queues {
                        vqs: KVec::new(),
                        infos: KVec::new(),
                        frozen: false,
                    }),
                    binding,
                }),
                published: Atomic::new(false),
                pending <- new_spinlock_irq!(Pending::default()),
                pm <- new_mutex!(PmState::default()),
                pm_done <- new_condvar!(),
                _p: PhantomData,
            }),
            GFP_KERNEL,
        );
        let state = match state {
            Ok(s) => s,
            Err(e) => return e.to_errno(),
        };
        // A PM callback that finds the state waits until probe is over.
        let pm = state.pm.lock();
        // `priv` owns a reference, taken back below on failure or by `remove_callback`.
        let raw = Arc::into_raw(state.clone()).cast_mut();
        // SAFETY: `priv` belongs to the bound driver, which is us; `vdev` is valid.
        unsafe { Self::set_priv(vdev, raw) };

        let data = match T::probe(dev, ctx) {
            Ok(data) => data,
            Err(e) => return Self::abort_probe(dev, &state, pm, raw, None, e),
        };
        // The driver core owns the data from here on, and drops it after the unbind
        // (`post_unbind_rust`). Storing it allocates: on failure, undo the probe.
        if let Err(e) = dev.as_ref().set_drvdata(Ok::<_, Error>(data.clone())) {
            return Self::abort_probe(dev, &state, pm, raw, Some(&data), e);
        }
        let pending = state.publish();
        Self::replay(dev, &state.common, &data, pending);
        drop(pm);
        0
    }

    /// Undoes a probe that failed with `e` (`data` is the driver's if its probe succeeded) and
    /// returns the errno: as [`Self::remove_callback`] does, with `pm` held.
    fn abort_probe(
        dev: &Device<CoreInternal<'_>>,
        state: &BoundState<T>,
        mut pm: crate::sync::MutexGuard<'_, PmState>,
        raw: *mut BoundState<T>,
        data: Option<&Arc<T::Data>>,
        e: Error,
    ) -> c_int {
        pm.removed = true;
        // Callbacks from now on find no state, and the reset in `unbind` waits for those that
        // did, before the state can be freed.
        // SAFETY: `dev` is valid for the duration of probe.
        unsafe { Self::set_priv(dev.as_raw(), core::ptr::null_mut()) };
        Self::unbind(dev, &state.common, data);
        drop(pm);
        // SAFETY: `raw` came from `Arc::into_raw` in `probe_callback`; `priv` no longer holds
        // it.
        drop(unsafe { Arc::from_raw(raw) });
        e.to_errno()
    }

    /// Stops the device for good, for remove and a failed probe: breaks and resets the device,
    /// calls [`Driver::remove`] with `data` if the driver was bound, and revokes and deletes the
    /// queues. Callbacks that start from now on find the data unpublished (the caller has done
    /// that) and record, and the reset waits for those in flight.
    fn unbind(dev: &Device<Core<'_>>, common: &DeviceState, data: Option<&Arc<T::Data>>) {
        // Break the queues before anything waits for the driver: a `BoundHandle::with` or work
        // item that polls a ring or handles a backlog stops at once (see `break_queues`).
        dev.break_queues();
        // No `BoundHandle::with` or atomic config write starts from now on, and none is in
        // progress (atomic ones end before the grace period in the reset below), so the driver
        // may flush work items that use them.
        common.binding.revoke();
        let dead = dev.reset_dead();
        if let Some(data) = data {
            T::remove(dev, data);
        }
        common.teardown(dev, &dead);
    }

    /// Reads `priv`, which callbacks read concurrently with probe and remove writing it
    /// (`READ_ONCE`).
    ///
    /// # Safety
    ///
    /// `vdev` must be valid.
    unsafe fn priv_state(vdev: *mut bindings::virtio_device) -> *mut BoundState<T> {
        // SAFETY: The caller guarantees that `vdev` is valid.
        unsafe { core::ptr::read_volatile(&raw const (*vdev).priv_) }.cast()
    }

    /// Writes `priv` (`WRITE_ONCE`); see [`Self::priv_state`].
    ///
    /// # Safety
    ///
    /// `vdev` must be valid and bound to this driver, in probe or remove.
    unsafe fn set_priv(vdev: *mut bindings::virtio_device, state: *mut BoundState<T>) {
        // SAFETY: The caller guarantees that `vdev` is valid.
        unsafe { core::ptr::write_volatile(&raw mut (*vdev).priv_, state.cast()) };
    }

    /// Delivers interrupts that arrived while `probe` was running, with local interrupts off,
    /// as the callbacks' documented context (hard IRQ) promises: a driver may rely on it, for
    /// example by taking a lock that its process-context paths take with interrupts off.
    fn replay(dev: &Device<Bound>, common: &DeviceState, data: &Arc<T::Data>, pending: Pending) {
        // The queue count is read under a mutex, so before interrupts go off.
        let n = if pending.vqs != 0 {
            common.queues.lock().vqs.len() as u32
        } else {
            0
        };
        let _irqs_off = crate::interrupt::local_interrupt_disable();
        for i in 0..n {
            if pending.vqs & (1u64 << i.min(63)) != 0 {
                T::vq_interrupt(dev, data, i);
            }
        }
        if pending.config {
            T::config_changed(dev, data);
        }
    }

    extern "C" fn remove_callback(vdev: *mut bindings::virtio_device) {
        // SAFETY: The bus calls remove with a valid device that probed successfully, still
        // bound to our driver for the duration of the callback.
        let dev = unsafe { Device::<CoreInternal<'_>>::from_raw(vdev) };
        // SAFETY: Set by `probe_callback`, which gave it a reference that we take back at the
        // end of this function.
        let raw = unsafe { (*vdev).priv_ }.cast::<BoundState<T>>();
        // SAFETY: See above.
        let state = unsafe { &*raw };
        // Wait for a freeze or restore in progress; those that come later see the flag.
        let mut pm = state.pm.lock();
        while pm.restoring {
            state.pm_done.wait(&mut pm);
        }
        pm.removed = true;
        // SAFETY: Remove runs only after a successful probe, which stored an `Arc<T::Data>` as
        // drvdata; the driver core drops it only after remove returns.
        let data = unsafe { dev.as_ref().drvdata_borrow::<Arc<T::Data>>() };
        // Unpublish the data and the state first, so no new callback reaches either (one that
        // a transport runs late, after the reset, finds no state and returns), then reset,
        // which also waits for callbacks in flight (`Device::reset`): the driver core drops
        // the data after remove, in process context, when no callback can hold it.
        state.unpublish();
        // SAFETY: `vdev` is valid; the adapter keeps using `state` through `raw`.
        unsafe { Self::set_priv(vdev, core::ptr::null_mut()) };
        Self::unbind(dev, &state.common, Some(data.get_ref()));
        drop(pm);
        // SAFETY: `raw` came from `Arc::into_raw` in `probe_callback` and `priv` no longer
        // holds it; a PM callback that found it holds its own reference.
        drop(unsafe { Arc::from_raw(raw) });
    }

    /// A reference to the bound state of a device, for a PM callback.
    ///
    /// # Safety
    ///
    /// `vdev` must be valid.
    unsafe fn state_ref(vdev: *mut bindings::virtio_device) -> Option<Arc<BoundState<T>>> {
        // `remove_callback` clears `priv` before the grace period in its reset and drops
        // `priv`'s reference only after it: a reference found under the RCU read lock is live.
        let _rcu = rcu::read_lock();
        // SAFETY: The caller guarantees that `vdev` is valid.
        let raw = unsafe { Self::priv_state(vdev) };
        if raw.is_null() {
            return None;
        }
        // SAFETY: A non-null `priv` came from `Arc::into_raw` and its reference is alive (see
        // above); `ManuallyDrop` leaves it to `priv`, and `clone` takes our own.
        let borrowed = ManuallyDrop::new(unsafe { Arc::from_raw(raw.cast_const()) });
        Some(Arc::clone(&borrowed))
    }

    extern "C" fn freeze_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The core calls freeze with a valid device.
        let Some(state) = (unsafe { Self::state_ref(vdev) }) else {
            return 0;
        };
        let mut pm = state.pm.lock();
        // SAFETY: `vdev` is our state's device, valid for the duration of the callback.
        let Some((dev, data)) = (unsafe { state.bound(&pm, vdev) }) else {
            return 0;
        };
        let dev: &Device<Bound> = dev;
        // Reset first (waiting for callbacks in flight), so the device no longer touches the
        // queues while the driver and the adapter empty them.
        let result = {
            // As in remove: work items the driver flushes in `freeze` stop at once.
            dev.break_queues();
            let dead = dev.reset_dead();
            let result = T::freeze(dev, data);
            // The queues are deleted either way: on success until `restore`, on failure to
            // find them again at once (below, after the proof is gone).
            state.common.freeze(dev, &dead);
            result
        };
        pm.restoring = result.is_err();
        drop(pm);
        if let Err(e) = result {
            // The sleep or the transport reset is aborted but the device is reset: bring it
            // back as after a transport reset (status, features, `restore_callback`, which
            // finds the queues again and lets the driver refill them, then `DRIVER_OK`).
            // Without `pm`, which `restore_callback` takes; `restoring` keeps a remove waiting
            // until it is over.
            // SAFETY: `vdev` is valid and bound to this driver, whose `reset_done` is set.
            let ret = unsafe { bindings::virtio_device_reset_done(vdev) };
            state.pm.lock().restoring = false;
            state.pm_done.notify_all();
            if ret != 0 {
                // SAFETY: `vdev` is valid for the duration of the callback; `Normal` claims
                // nothing more.
                let dev = unsafe { Device::<Normal>::from_raw(vdev) };
                dev_err!(
                    dev.as_ref(),
                    "restoring the device after a failed freeze failed: {}\n",
                    ret
                );
            }
            return e.to_errno();
        }
        0
    }

    extern "C" fn restore_callback(vdev: *mut bindings::virtio_device) -> c_int {
        // SAFETY: The core calls restore with a valid device.
        let Some(state) = (unsafe { Self::state_ref(vdev) }) else {
            return 0;
        };
        let pm = state.pm.lock();
        // SAFETY: As in `freeze_callback`.
        let Some((dev, data)) = (unsafe { state.bound(&pm, vdev) }) else {
            return 0;
        };
        let dev: &Device<Bound> = dev;
        if let Err(e) = state.common.thaw(dev) {
            return e.to_errno();
        }
        match T::restore(dev, data) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    extern "C" fn vq_callback(vq: *mut bindings::virtqueue) {
        // The state and the driver data stay alive until a grace period after the reset in
        // `remove` (see `Device::reset`).
        let _rcu = rcu::read_lock();
        // SAFETY: The transport calls this with a valid queue of a bound device; queue
        // callbacks can only fire between `find_vqs` and `del_vqs`, while `priv` holds our
        // state.
        let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
        // SAFETY: See above.
        let raw = unsafe { Self::priv_state(vdev) };
        if raw.is_null() {
            return;
        }
        // SAFETY: See above.
        let state = unsafe { &*raw };
        // SAFETY: `priv` holds our state, so the device is bound to our driver, and stays so
        // until a grace period after the reset in `remove`.
        let dev = unsafe { Device::<Bound>::from_raw(vdev) };
        state.with_data(
            vdev,
            |p| p.vqs |= 1u64 << index.min(63),
            |data| T::vq_interrupt(dev, data, index),
        );
    }

    extern "C" fn config_callback(vdev: *mut bindings::virtio_device) {
        // As in `vq_callback`.
        let _rcu = rcu::read_lock();
        // SAFETY: The core calls this with a valid device bound to our driver.
        let raw = unsafe { Self::priv_state(vdev) };
        if raw.is_null() {
            return;
        }
        // SAFETY: `priv` holds our state while the device is bound.
        let state = unsafe { &*raw };
        // SAFETY: As in `vq_callback`.
        let dev = unsafe { Device::<Bound>::from_raw(vdev) };
        state.with_data(
            vdev,
            |p| p.config = true,
            |data| T::config_changed(dev, data),
        );
    }
}
