// SPDX-License-Identifier: GPL-2.0

//! KUnit cases for the virtio bus adapter of the kernel crate ([`kernel::virtio`]) itself,
//! with a minimal driver on the fake virtio device instead of the console driver.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::{
    device::{Bound, Core},
    prelude::*,
    sync::{Arc, CondVar, Mutex, SpinLock},
    time::msecs_to_jiffies,
    virtio::{
        self,
        test_device::{self, TestDevice},
        Buffer, Virtqueue, VirtqueueInfo,
    },
};

use crate::kunit_spawn::spawn;

/// A registered test driver.
type Registered<T> = Pin<KBox<virtio::Registration<T>>>;

/// Registers test driver `T` under `name`; returns the registration and the context that the
/// driver built, which the test looks at.
fn register<T: virtio::Driver>(name: &'static CStr) -> Result<(Registered<T>, Arc<T::Context>)> {
    let reg = KBox::pin_init(
        virtio::Registration::<T>::new(
            name,
            kernel::module::this_module::<crate::VirtioConsoleModule>(),
        ),
        GFP_KERNEL,
    )?;
    let ctx = virtio::Adapter::<T>::context(&reg).clone();
    Ok((reg, ctx))
}

/// A device type no real device uses; only [`EarlyIrq`] binds it.
const EARLY_IRQ_ID: u32 = 0xfff4;

/// What the test wants to see of [`EarlyIrq`]'s probe.
#[pin_data]
struct EarlyCtx {
    /// The queue callback of the C ring code ran while probe was still running.
    called_in_probe: AtomicBool,
    /// The driver data of the last probe.
    #[pin]
    bound: SpinLock<Option<Arc<EarlyData>>>,
}

/// The driver data: the queue and what reached the driver through it.
struct EarlyData {
    vq: Arc<Virtqueue>,
    /// Calls of [`virtio::Driver::vq_interrupt`].
    calls: AtomicU32,
    /// Bytes in the buffers those calls took back.
    received: AtomicU32,
    /// Calls that ran with local interrupts on, although the trait promises hard-IRQ context.
    irqs_on: AtomicU32,
}

/// A driver that, from its own probe, has the device fill a buffer and interrupt: the
/// interrupt comes before the adapter has the driver data to give it.
struct EarlyIrq;

impl virtio::Driver for EarlyIrq {
    type Context = EarlyCtx;
    type Data = EarlyData;
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(EARLY_IRQ_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<EarlyCtx>> {
        Arc::pin_init(
            pin_init!(EarlyCtx {
                called_in_probe: AtomicBool::new(false),
                bound <- kernel::new_spinlock!(None),
            }),
            GFP_KERNEL,
        )
    }

    fn probe(dev: &virtio::Device<Core<'_>>, ctx: &Arc<EarlyCtx>) -> Result<Arc<EarlyData>> {
        let vqs = dev.find_vqs(&[VirtqueueInfo {
            name: c"early",
            callback: true,
        }])?;
        let vq = vqs.first().ok_or(EINVAL)?.clone();
        let buf = Buffer::new(16, GFP_KERNEL)?;
        {
            let mut q = vq.lock();
            q.add_inbuf(buf).map_err(|e| e.error)?;
            q.kick();
        }
        dev.device_ready();
        let called = TestDevice::with_device_of(dev, |host| -> Result<bool> {
            let taken = host.take(0, &mut [], b"early")?;
            host.complete(0, taken.head, 5)?;
            Ok(host.interrupt(0))
        })
        .ok_or(ENODEV)??;
        ctx.called_in_probe.store(called, Ordering::Relaxed);
        let data = Arc::new(
            EarlyData {
                vq,
                calls: AtomicU32::new(0),
                received: AtomicU32::new(0),
                irqs_on: AtomicU32::new(0),
            },
            GFP_KERNEL,
        )?;
        // Dropping driver data may sleep: never under the spinlock.
        let old = ctx.bound.lock().replace(data.clone());
        drop(old);
        Ok(data)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, _data: &Arc<EarlyData>) {}

    fn vq_interrupt(_dev: &virtio::Device<Bound>, data: &Arc<EarlyData>, _index: u32) {
        data.calls.fetch_add(1, Ordering::Relaxed);
        if !test_device::irqs_disabled() {
            data.irqs_on.fetch_add(1, Ordering::Relaxed);
        }
        let mut q = data.vq.lock();
        while let Some(buf) = q.get_buf() {
            data.received.fetch_add(buf.len() as u32, Ordering::Relaxed);
        }
    }
}

/// A device type no real device uses; only [`ConfigProbe`] binds it.
const CONFIG_PROBE_ID: u32 = 0xfff5;

/// What [`ConfigProbe`]'s probe saw of the config space.
struct ConfigSeen {
    /// [`virtio::Device::config`] gave access.
    accessible: AtomicBool,
    /// The errno of [`virtio::Device::atomic_config_writer`], 0 if it gave a writer.
    writer: core::sync::atomic::AtomicI32,
}

/// A driver that only looks at the config space of its device, and writes `0x41` at offset 0
/// through an atomic writer if it gets one.
struct ConfigProbe;

impl virtio::Driver for ConfigProbe {
    type Context = ConfigSeen;
    type Data = ();
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(CONFIG_PROBE_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<ConfigSeen>> {
        Ok(Arc::new(
            ConfigSeen {
                accessible: AtomicBool::new(false),
                writer: core::sync::atomic::AtomicI32::new(1),
            },
            GFP_KERNEL,
        )?)
    }

    fn probe(dev: &virtio::Device<Core<'_>>, seen: &Arc<ConfigSeen>) -> Result<Arc<()>> {
        seen.accessible
            .store(dev.config().is_some(), Ordering::Relaxed);
        let errno = match dev.atomic_config_writer() {
            Ok(w) => {
                w.write_u32(0, 0x41);
                0
            }
            Err(e) => e.to_errno(),
        };
        seen.writer.store(errno, Ordering::Relaxed);
        Ok(Arc::new((), GFP_KERNEL)?)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, _data: &Arc<()>) {}

    fn vq_interrupt(_dev: &virtio::Device<Bound>, _data: &Arc<()>, _index: u32) {}
}

/// Binds [`ConfigProbe`] to a device whose config space is reached as `mode` says; returns
/// whether the config was accessible, the writer's errno and the first config byte after probe.
fn probe_config(mode: test_device::ConfigMode) -> Result<(bool, i32, u8)> {
    let (_driver, seen) = register::<ConfigProbe>(c"virtio_console_rs_kunit_config")?;
    let dev = TestDevice::new_with_config_mode(CONFIG_PROBE_ID, 0, &[0; 8], 8, mode)?;
    let mut byte = [0u8; 1];
    dev.config_read(0, &mut byte);
    Ok((
        seen.accessible.load(Ordering::Relaxed),
        seen.writer.load(Ordering::Relaxed),
        byte[0],
    ))
}

/// A device type no real device uses; only [`FailFreeze`] binds it.
const FAIL_FREEZE_ID: u32 = 0xfff6;

/// The driver data of [`FailFreeze`].
struct FailData {
    vq: Arc<Virtqueue>,
    /// Calls of [`virtio::Driver::restore`].
    restores: AtomicU32,
    /// Calls of [`virtio::Driver::vq_interrupt`].
    calls: AtomicU32,
}

/// A driver with one receive buffer on one queue whose freeze always fails.
struct FailFreeze;

impl FailFreeze {
    fn refill(vq: &Virtqueue) -> Result {
        let buf = Buffer::new(16, GFP_KERNEL)?;
        let mut q = vq.lock();
        q.add_inbuf(buf).map_err(|e| e.error)?;
        q.kick();
        Ok(())
    }
}

impl virtio::Driver for FailFreeze {
    type Context = SpinLock<Option<Arc<FailData>>>;
    type Data = FailData;
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(FAIL_FREEZE_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<SpinLock<Option<Arc<FailData>>>>> {
        Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)
    }

    fn probe(
        dev: &virtio::Device<Core<'_>>,
        bound: &Arc<SpinLock<Option<Arc<FailData>>>>,
    ) -> Result<Arc<FailData>> {
        let vqs = dev.find_vqs(&[VirtqueueInfo {
            name: c"fail-freeze",
            callback: true,
        }])?;
        let vq = vqs.first().ok_or(EINVAL)?.clone();
        Self::refill(&vq)?;
        dev.device_ready();
        let data = Arc::new(
            FailData {
                vq,
                restores: AtomicU32::new(0),
                calls: AtomicU32::new(0),
            },
            GFP_KERNEL,
        )?;
        // Dropping driver data may sleep: never under the spinlock.
        let old = bound.lock().replace(data.clone());
        drop(old);
        Ok(data)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, _data: &Arc<FailData>) {}

    fn vq_interrupt(_dev: &virtio::Device<Bound>, data: &Arc<FailData>, _index: u32) {
        data.calls.fetch_add(1, Ordering::Relaxed);
        let mut q = data.vq.lock();
        while q.get_buf().is_some() {}
    }

    fn freeze(_dev: &virtio::Device<Bound>, _data: &Arc<FailData>) -> Result {
        Err(EBUSY)
    }

    fn restore(_dev: &virtio::Device<Bound>, data: &Arc<FailData>) -> Result {
        data.restores.fetch_add(1, Ordering::Relaxed);
        Self::refill(&data.vq)
    }
}

/// A device type no real device uses; only [`KeepHandle`] binds it.
const KEEP_HANDLE_ID: u32 = 0xfff7;

/// What [`KeepHandle`]'s probe kept: a handle and an atomic config writer, which outlive the
/// binding in the test.
type Kept = SpinLock<Option<(virtio::BoundHandle, virtio::AtomicConfigWriter)>>;

/// A driver that keeps a [`virtio::BoundHandle`] and a [`virtio::AtomicConfigWriter`] of its
/// device where the test can use them after the device is gone.
struct KeepHandle;

impl virtio::Driver for KeepHandle {
    type Context = Kept;
    type Data = ();
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(KEEP_HANDLE_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<Kept>> {
        Arc::pin_init(kernel::new_spinlock!(None), GFP_KERNEL)
    }

    fn probe(dev: &virtio::Device<Core<'_>>, kept: &Arc<Kept>) -> Result<Arc<()>> {
        let handle = dev.handle()?;
        let writer = dev.atomic_config_writer()?;
        *kept.lock() = Some((handle, writer));
        Ok(Arc::new((), GFP_KERNEL)?)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, _data: &Arc<()>) {}

    fn vq_interrupt(_dev: &virtio::Device<Bound>, _data: &Arc<()>, _index: u32) {}
}

/// A device type no real device uses; only [`SlowFreeze`] binds it.
const SLOW_FREEZE_ID: u32 = 0xfff8;

/// What the threads of [`a_removal_waits_for_a_reset_prepare`] saw.
#[derive(Default)]
struct RaceEvents {
    /// [`SlowFreeze`]'s freeze has begun.
    in_freeze: bool,
    /// [`SlowFreeze`]'s remove has run.
    removed: bool,
    /// The remove ran while the freeze was still running.
    removed_during_freeze: bool,
    /// The thread that reset the device is done.
    reset_done: bool,
    /// The thread that unregistered the driver is done.
    unbound: bool,
}

/// The events of the race and the condition variable every change signals.
#[pin_data]
struct RaceCtx {
    #[pin]
    ev: Mutex<RaceEvents>,
    #[pin]
    cv: CondVar,
}

impl RaceCtx {
    /// Records a change with `f` and wakes the waiters.
    fn note(&self, f: impl FnOnce(&mut RaceEvents)) {
        f(&mut self.ev.lock());
        self.cv.notify_all();
    }

    /// Waits until `done` holds, for at most about `secs` seconds; returns whether it held.
    fn wait_for(&self, secs: u32, done: impl Fn(&RaceEvents) -> bool) -> bool {
        let mut ev = self.ev.lock();
        for _ in 0..secs * 10 {
            if done(&ev) {
                return true;
            }
            let _ = self
                .cv
                .wait_interruptible_timeout(&mut ev, msecs_to_jiffies(100));
        }
        done(&ev)
    }
}

/// A driver whose freeze (here: a transport's reset-prepare) waits up to two seconds for its
/// remove to run; with the adapter serialising the two, it never does.
struct SlowFreeze;

impl virtio::Driver for SlowFreeze {
    type Context = RaceCtx;
    type Data = Arc<RaceCtx>;
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(SLOW_FREEZE_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<RaceCtx>> {
        Arc::pin_init(
            pin_init!(RaceCtx {
                ev <- kernel::new_mutex!(RaceEvents::default()),
                cv <- kernel::new_condvar!(),
            }),
            GFP_KERNEL,
        )
    }

    fn probe(_dev: &virtio::Device<Core<'_>>, ctx: &Arc<RaceCtx>) -> Result<Arc<Arc<RaceCtx>>> {
        Ok(Arc::new(ctx.clone(), GFP_KERNEL)?)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, ctx: &Arc<Arc<RaceCtx>>) {
        ctx.note(|ev| ev.removed = true);
    }

    fn vq_interrupt(_dev: &virtio::Device<Bound>, _ctx: &Arc<Arc<RaceCtx>>, _index: u32) {}

    fn freeze(_dev: &virtio::Device<Bound>, ctx: &Arc<Arc<RaceCtx>>) -> Result {
        ctx.note(|ev| ev.in_freeze = true);
        let removed = ctx.wait_for(2, |ev| ev.removed);
        ctx.note(|ev| ev.removed_during_freeze = removed);
        Ok(())
    }
}

/// A device type no real device uses; only [`DropOrder`] binds it.
const DROP_ORDER_ID: u32 = 0xfff9;

/// What [`DropOrder`] saw of its remove and of the drop of its data.
#[derive(Default)]
struct DropSeen {
    /// [`virtio::Driver::remove`] ran.
    removed: AtomicBool,
    /// The driver data was dropped.
    dropped: AtomicBool,
    /// The data was already dropped when remove ran.
    dropped_at_remove: AtomicBool,
    /// Remove had run when the data was dropped.
    removed_at_drop: AtomicBool,
}

/// The driver data of [`DropOrder`]: notes its drop in the context.
struct Tracked {
    seen: Arc<DropSeen>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let removed = self.seen.removed.load(Ordering::Relaxed);
        self.seen.removed_at_drop.store(removed, Ordering::Relaxed);
        self.seen.dropped.store(true, Ordering::Relaxed);
    }
}

/// A driver that notes when its remove runs and when its data is dropped.
struct DropOrder;

impl virtio::Driver for DropOrder {
    type Context = DropSeen;
    type Data = Tracked;
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(DROP_ORDER_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<DropSeen>> {
        Ok(Arc::new(DropSeen::default(), GFP_KERNEL)?)
    }

    fn probe(_dev: &virtio::Device<Core<'_>>, seen: &Arc<DropSeen>) -> Result<Arc<Tracked>> {
        Ok(Arc::new(Tracked { seen: seen.clone() }, GFP_KERNEL)?)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, data: &Arc<Tracked>) {
        let dropped = data.seen.dropped.load(Ordering::Relaxed);
        data.seen
            .dropped_at_remove
            .store(dropped, Ordering::Relaxed);
        data.seen.removed.store(true, Ordering::Relaxed);
    }

    fn vq_interrupt(_dev: &virtio::Device<Bound>, _data: &Arc<Tracked>, _index: u32) {}
}

/// A device type no real device uses; only [`CtxLife`] binds it.
const CTX_LIFE_ID: u32 = 0xfffa;

/// Contexts of [`CtxLife`] dropped so far (a context cannot report its own drop through
/// itself).
static CTX_DROPS: AtomicU32 = AtomicU32::new(0);
/// [`CTX_DROPS`] as [`CtxLife`]'s remove saw it, plus one (0: remove did not run).
static CTX_DROPS_AT_REMOVE: AtomicU32 = AtomicU32::new(0);

/// The context of [`CtxLife`]: counts its drop.
struct LifeCtx;

impl Drop for LifeCtx {
    fn drop(&mut self) {
        CTX_DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

/// A driver that notes, in its remove, whether its context is still alive.
struct CtxLife;

impl virtio::Driver for CtxLife {
    type Context = LifeCtx;
    type Data = ();
    const ID_TABLE: virtio::IdTable =
        &kernel::device_id::IdArray::new_without_index([virtio::DeviceId::new(CTX_LIFE_ID)]);
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<LifeCtx>> {
        Ok(Arc::new(LifeCtx, GFP_KERNEL)?)
    }

    fn probe(_dev: &virtio::Device<Core<'_>>, _ctx: &Arc<LifeCtx>) -> Result<Arc<()>> {
        Ok(Arc::new((), GFP_KERNEL)?)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, _data: &Arc<()>) {
        let drops = CTX_DROPS.load(Ordering::Relaxed);
        CTX_DROPS_AT_REMOVE.store(drops + 1, Ordering::Relaxed);
    }

    fn vq_interrupt(_dev: &virtio::Device<Bound>, _data: &Arc<()>, _index: u32) {}
}

#[kunit_tests(virtio_console_rs_virtio_adapter)]
mod tests {
    use super::*;

    /// An interrupt that fires while probe runs is recorded and replayed exactly once when
    /// probe has returned, and the driver then finds the buffer the device filled.
    #[test]
    fn an_interrupt_during_probe_is_replayed_once_after_it() -> Result {
        let (_driver, ctx) = register::<EarlyIrq>(c"virtio_console_rs_kunit_early")?;
        let dev = TestDevice::new(EARLY_IRQ_ID, 0, &[], 8)?;
        // A failed assertion ends the case without unwinding: look first, assert after the
        // device and the driver are gone, so a failure leaves nothing registered behind.
        let bound = dev.is_bound();
        let data = ctx.bound.lock().clone();
        let calls = |d: &Option<Arc<EarlyData>>| {
            d.as_ref().map(|d| {
                (
                    d.calls.load(Ordering::Relaxed),
                    d.received.load(Ordering::Relaxed),
                    d.irqs_on.load(Ordering::Relaxed),
                )
            })
        };
        let after_probe = calls(&data);
        // An interrupt after probe goes straight to the driver.
        let mut late = false;
        if let Some(d) = &data {
            let buf = Buffer::new(16, GFP_KERNEL)?;
            let mut q = d.vq.lock();
            let added = q.add_inbuf(buf).is_ok();
            q.kick();
            drop(q);
            if added {
                let taken = dev.take(0, &mut [], b"late")?;
                dev.complete(0, taken.head, 4)?;
                late = dev.interrupt(0);
            }
        }
        let after_late = calls(&data);
        drop(dev);
        drop(_driver);
        let alive = data.as_ref().map(|d| d.vq.lock().is_alive());

        assert!(bound);
        // The ring code ran the adapter's callback inside probe...
        assert!(ctx.called_in_probe.load(Ordering::Relaxed));
        // ... which reached the driver once, after probe, with the device's 5 bytes, with
        // interrupts off as for a real interrupt.
        assert_eq!(after_probe, Some((1, 5, 0)));
        assert!(late);
        assert_eq!(after_late, Some((2, 9, 0)));
        // The device is gone: the queue is revoked, the driver data outlives it safely.
        assert_eq!(alive, Some(false));
        Ok(())
    }

    /// A freeze that the driver refuses aborts the sleep, and the device comes back at once:
    /// running, with its queue found again and refilled by the driver, and interrupts reach
    /// the driver.
    #[test]
    fn a_failed_freeze_brings_the_device_back() -> Result {
        let (_driver, bound) = register::<FailFreeze>(c"virtio_console_rs_kunit_fail_freeze")?;
        let dev = TestDevice::new(FAIL_FREEZE_ID, 0, &[], 8)?;
        let data = bound.lock().clone();
        let frozen = dev.freeze();
        let status = dev.status();
        let queues = dev.nr_queues();
        // The buffer lent before the freeze was dropped with the old queue; the one `restore`
        // added is the only one the device finds.
        let pending = dev.pending(0);
        let mut ran = false;
        if pending == 1 {
            let taken = dev.take(0, &mut [], b"back")?;
            dev.complete(0, taken.head, 4)?;
            ran = dev.interrupt(0);
        }
        let counts = data.as_ref().map(|d| {
            (
                d.restores.load(Ordering::Relaxed),
                d.calls.load(Ordering::Relaxed),
                d.vq.lock().is_alive(),
            )
        });
        drop(dev);
        drop(_driver);

        assert_eq!(frozen, Err(EBUSY));
        let driver_ok = kernel::uapi::VIRTIO_CONFIG_S_DRIVER_OK as u8;
        assert_eq!(status & driver_ok, driver_ok);
        assert_eq!(queues, 1);
        assert_eq!(pending, 1);
        assert!(ran);
        assert_eq!(counts, Some((1, 1, true)));
        Ok(())
    }

    /// A handle and an atomic config writer reach the device only while it is bound: after
    /// the unbind, the handle gives nothing and the writer writes nothing (an `ARef<Device>`
    /// used to reach the transport there, which virtio-pci has unmapped by then).
    #[test]
    fn handles_end_with_the_binding() -> Result {
        let (_driver, kept) = register::<KeepHandle>(c"virtio_console_rs_kunit_keep_handle")?;
        let dev = TestDevice::new(KEEP_HANDLE_ID, 0, &[1, 2, 3, 4], 8)?;
        let pair = kept.lock().take();
        let bound = pair.as_ref().map(|(h, w)| {
            (
                h.with(|d| d.config().map(|c| c.read_u32(0))),
                w.write_u32(0, 0x55),
            )
        });
        let mut cfg = [0u8; 1];
        dev.config_read(0, &mut cfg);
        drop(dev);
        let unbound = pair
            .as_ref()
            .map(|(h, w)| (h.with(|d| d.index()), w.write_u32(0, 0x66)));
        drop(pair);
        drop(_driver);

        let config = u32::from_le_bytes([1, 2, 3, 4]);
        assert_eq!(bound, Some((Some(Some(config)), true)));
        assert_eq!(cfg[0], 0x55);
        assert_eq!(unbound, Some((None, false)));
        Ok(())
    }

    /// A transport reset (reset-prepare, which virtio-pci calls without the virtio device's
    /// lock) and an unbind of the driver at the same time: the removal waits until the freeze
    /// is over, so the driver's remove never runs under its freeze. Without that, the adapter
    /// freed its state under the freeze.
    #[test]
    fn a_removal_waits_for_a_reset_prepare() -> Result {
        let (driver, ctx) = register::<SlowFreeze>(c"virtio_console_rs_kunit_slow_freeze")?;
        let dev = Arc::new(TestDevice::new(SLOW_FREEZE_ID, 0, &[], 8)?, GFP_KERNEL)?;
        let bound = dev.is_bound();
        let (d, c) = (dev.clone(), ctx.clone());
        spawn(move || {
            let _ = d.reset_prepare();
            c.note(|ev| ev.reset_done = true);
        })?;
        let in_freeze = ctx.wait_for(10, |ev| ev.in_freeze);
        let c = ctx.clone();
        spawn(move || {
            drop(driver);
            c.note(|ev| ev.unbound = true);
        })?;
        let finished = ctx.wait_for(30, |ev| ev.reset_done && ev.unbound);
        let (removed, during) = {
            let ev = ctx.ev.lock();
            (ev.removed, ev.removed_during_freeze)
        };
        drop(dev);

        assert!(bound);
        assert!(in_freeze);
        assert!(finished);
        assert!(removed);
        assert!(!during);
        Ok(())
    }

    /// The config space is offered only where the transport has one, and the atomic writer
    /// (the console's panic-time emergency write) only where writing it never sleeps.
    #[test]
    fn config_access_follows_the_transport() -> Result {
        use test_device::ConfigMode;
        // Register-like transports (virtio-pci, virtio-mmio): both, and the write lands.
        assert_eq!(probe_config(ConfigMode::Atomic)?, (true, 0, 0x41));
        // A transport whose config write may sleep (vDPA, CCW, UML): no atomic writer.
        assert_eq!(
            probe_config(ConfigMode::Sleeping)?,
            (true, EOPNOTSUPP.to_errno(), 0)
        );
        // No config access at all (virtio-pci modern without a device-config capability).
        assert_eq!(
            probe_config(ConfigMode::None)?,
            (false, EOPNOTSUPP.to_errno(), 0)
        );
        Ok(())
    }

    /// The driver core owns the driver data (drvdata): it stays alive while the device is
    /// bound and is dropped when the device is unbound, after the driver's remove.
    #[test]
    fn the_driver_core_drops_the_data_after_remove() -> Result {
        let (driver, seen) = register::<DropOrder>(c"virtio_console_rs_kunit_drop_order")?;
        let dev = TestDevice::new(DROP_ORDER_ID, 0, &[], 8)?;
        let bound = dev.is_bound();
        let alive_while_bound = !seen.dropped.load(Ordering::Relaxed);
        drop(dev);
        let removed = seen.removed.load(Ordering::Relaxed);
        let dropped = seen.dropped.load(Ordering::Relaxed);
        drop(driver);

        assert!(bound);
        assert!(alive_while_bound);
        assert!(removed);
        assert!(dropped);
        assert!(!seen.dropped_at_remove.load(Ordering::Relaxed));
        assert!(seen.removed_at_drop.load(Ordering::Relaxed));
        Ok(())
    }

    /// The registration owns the context that [`virtio::Driver::context`] built: alive while
    /// a device is bound (the unregistration unbinds it first), dropped once the driver is
    /// unregistered.
    #[test]
    fn the_registration_drops_the_context_after_unregistering() -> Result {
        let before = CTX_DROPS.load(Ordering::Relaxed);
        CTX_DROPS_AT_REMOVE.store(0, Ordering::Relaxed);
        let driver = KBox::pin_init(
            virtio::Registration::<CtxLife>::new(
                c"virtio_console_rs_kunit_ctx_life",
                kernel::module::this_module::<crate::VirtioConsoleModule>(),
            ),
            GFP_KERNEL,
        )?;
        let dev = TestDevice::new(CTX_LIFE_ID, 0, &[], 8)?;
        let bound = dev.is_bound();
        let alive_while_registered = CTX_DROPS.load(Ordering::Relaxed) == before;
        // The unregistration unbinds the device, which is still there.
        drop(driver);
        let at_remove = CTX_DROPS_AT_REMOVE.load(Ordering::Relaxed);
        let after = CTX_DROPS.load(Ordering::Relaxed);
        drop(dev);

        assert!(bound);
        assert!(alive_while_registered);
        assert_eq!(at_remove, before + 1);
        assert_eq!(after, before + 1);
        Ok(())
    }
}
