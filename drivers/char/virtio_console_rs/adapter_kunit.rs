// SPDX-License-Identifier: GPL-2.0

//! KUnit cases for the virtio bus adapter of the kernel crate ([`kernel::virtio`]) itself,
//! with a minimal driver on the fake virtio device instead of the console driver.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use kernel::{
    prelude::*,
    sync::{Arc, SpinLock},
    virtio::{self, test_device::{self, TestDevice}, Buffer, Virtqueue, VirtqueueInfo},
};

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
    const ID_TABLE: &'static [virtio::DeviceId] = &[virtio::DeviceId::new(EARLY_IRQ_ID)];
    const FEATURES: &'static [u32] = &[];

    fn probe(dev: &virtio::Device, ctx: &Arc<EarlyCtx>) -> Result<Arc<EarlyData>> {
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

    fn remove(_dev: &virtio::Device, _data: Arc<EarlyData>) {}

    fn vq_interrupt(data: &Arc<EarlyData>, _index: u32) {
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

#[kunit_tests(virtio_console_rs_virtio_adapter)]
mod tests {
    use super::*;

    /// An interrupt that fires while probe runs is recorded and replayed exactly once when
    /// probe has returned, and the driver then finds the buffer the device filled.
    #[test]
    fn an_interrupt_during_probe_is_replayed_once_after_it() -> Result {
        let ctx = Arc::pin_init(
            pin_init!(EarlyCtx {
                called_in_probe: AtomicBool::new(false),
                bound <- kernel::new_spinlock!(None),
            }),
            GFP_KERNEL,
        )?;
        let _driver = KBox::pin_init(
            virtio::Registration::<EarlyIrq>::new(
                c"virtio_console_rs_kunit_early",
                ctx.clone(),
                kernel::module::this_module::<crate::VirtioConsoleModule>(),
            ),
            GFP_KERNEL,
        )?;
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
}
