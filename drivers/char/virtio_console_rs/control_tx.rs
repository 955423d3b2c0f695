// SPDX-License-Identifier: GPL-2.0

//! The control sender: what a port needs of its device to talk to the host (control messages
//! on the control transmit queue) and the rate-limited log of bad input from the device.

use crate::{
    control::{self, Event},
    ratelimit::{RateLimit, Verdict},
};
use kernel::{
    new_spinlock_irq,
    prelude::*,
    sync::{aref::ARef, Arc, SpinLockIrq},
    time::{delay::fsleep, Delta, Instant, Monotonic},
    virtio::{self, Buffer, Virtqueue},
};

/// Tries (100 us apart) to queue a control message while the ring is full.
const CONTROL_TRIES: u32 = 10_000;

/// How long `open()` waits for the host to take its `PORT_OPEN`, in milliseconds.
const CONTROL_WAIT_MS: i64 = 1000;

/// What a port needs of its device to talk to the host; shared by all ports of a device.
#[pin_data]
pub(crate) struct DeviceLink {
    pub(crate) vdev: ARef<virtio::Device>,
    /// The control transmit queue; `None` without `VIRTIO_CONSOLE_F_MULTIPORT`.
    pub(crate) c_ovq: Option<Arc<Virtqueue>>,
    /// Limits messages about bad input from this device. Any context.
    #[pin]
    log: SpinLockIrq<RateLimit>,
}

impl DeviceLink {
    pub(crate) fn new(
        vdev: ARef<virtio::Device>,
        c_ovq: Option<Arc<Virtqueue>>,
    ) -> impl PinInit<Self> {
        pin_init!(Self {
            vdev,
            c_ovq,
            log <- new_spinlock_irq!(RateLimit::default()),
        })
    }

    /// Logs a warning about the device, rate-limited. Any context.
    pub(crate) fn warn(&self, msg: core::fmt::Arguments<'_>) {
        let verdict = self.log.lock().check();
        if let Verdict::Print { suppressed } = verdict {
            if suppressed > 0 {
                dev_warn!(self.vdev.as_ref(), "{} messages suppressed\n", suppressed);
            }
            dev_warn!(self.vdev.as_ref(), "{}\n", msg);
        }
    }

    /// Sends a control message to the host. Does nothing without multiport.
    ///
    /// The C driver busy-waits until the host returns each message; we only wait while the
    /// ring is full (the ring keeps the messages in order, and used ones are reclaimed on the
    /// next send), sleeping between tries and giving up after about a second with a warning,
    /// so a host that stops consuming cannot hang the guest. Process context.
    pub(crate) fn send_control(&self, id: u32, event: Event, value: u16) {
        self.queue_control(id, event, value);
    }

    /// Sends a control message as [`DeviceLink::send_control`] does, then waits until the host
    /// has taken it, as the C driver's `__send_control_msg` does for every message: sleeping
    /// between looks, and giving up with a warning after [`CONTROL_WAIT_MS`]. Process context.
    ///
    /// The control transmit queue raises no interrupt, so the wait polls. "Taken" is "the ring
    /// is empty": another sender may reclaim this message's buffer along with its own, so the
    /// buffer itself cannot be watched; an empty ring means it was consumed.
    pub(crate) fn send_control_consumed(&self, id: u32, event: Event, value: u16) {
        if !self.queue_control(id, event, value) {
            return;
        }
        if !self.wait_control_taken() {
            self.warn(fmt!(
                "control message {:?} for port {} not taken by the host",
                event,
                id
            ));
        }
    }

    /// Waits until the host has taken every control message sent so far (see
    /// [`DeviceLink::send_control_consumed`]), sleeping between looks, for at most
    /// [`CONTROL_WAIT_MS`]; returns whether it has. Process context.
    pub(crate) fn wait_control_taken(&self) -> bool {
        let Some(vq) = &self.c_ovq else {
            return true;
        };
        let start = Instant::<Monotonic>::now();
        loop {
            {
                let mut q = vq.lock();
                while q.get_buf().is_some() {}
                if q.num_free() == vq.size() || q.is_broken() {
                    return true;
                }
            }
            if start.elapsed().as_millis() >= CONTROL_WAIT_MS {
                return false;
            }
            fsleep(Delta::from_micros(100));
        }
    }

    /// Queues a control message (see [`DeviceLink::send_control`]); returns whether it was.
    fn queue_control(&self, id: u32, event: Event, value: u16) -> bool {
        let Some(vq) = &self.c_ovq else {
            return false;
        };
        let msg = control::encode(
            id,
            event,
            value,
            |v| self.vdev.cpu_to_virtio16(v),
            |v| self.vdev.cpu_to_virtio32(v),
        );
        let Ok(mut buf) = Buffer::from_slice(&msg, GFP_KERNEL) else {
            self.warn(fmt!("no memory for a control message"));
            return false;
        };
        let mut tries = 0;
        loop {
            let mut q = vq.lock();
            while q.get_buf().is_some() {}
            match q.add_outbuf(buf) {
                Ok(()) => {
                    q.kick();
                    return true;
                }
                Err(e) if e.error == ENOSPC && tries < CONTROL_TRIES && !q.is_broken() => {
                    drop(q);
                    buf = e.buf;
                    tries += 1;
                    fsleep(Delta::from_micros(100));
                }
                // Revoked, or broken by the adapter for remove or freeze: dropped silently, as
                // the C driver ignores a failed add.
                Err(e) if e.error == ENODEV || q.is_broken() => return false,
                Err(e) => {
                    self.warn(fmt!(
                        "control message {:?} for port {} dropped ({:?})",
                        event,
                        id,
                        e.error
                    ));
                    return false;
                }
            }
        }
    }
}
