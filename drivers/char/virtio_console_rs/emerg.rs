// SPDX-License-Identifier: GPL-2.0

//! The emergency writer: on oops and panic, the newest part of the kernel log goes to the host
//! through the `emerg_wr` config field (`VIRTIO_CONSOLE_F_EMERG_WRITE`).

use kernel::{
    device::Bound,
    kmsg_dump,
    prelude::*,
    sync::Arc,
    time::{delay::udelay, Delta},
    uapi, virtio,
};

/// `offset_of!(struct virtio_console_config, emerg_wr)`.
const CONFIG_EMERG_WR: usize = 8;

/// How much of the kernel log (the newest part) an oops or panic sends through `emerg_wr`.
///
/// One config write per byte, paced (see [`EMERG_BYTE_DELAY_US`]): about 50 ms at panic time.
const EMERG_LOG_BYTES: usize = 1024;

/// Pause after each emergency byte.
const EMERG_BYTE_DELAY_US: i64 = 50;

/// Sends the kernel log on oops and panic through the `emerg_wr` config field
/// (`VIRTIO_CONSOLE_F_EMERG_WRITE`), which needs no virtqueue: it works even when the queues
/// are stuck or not set up yet. The C driver never negotiates the feature.
pub(crate) struct EmergWriter {
    config: virtio::AtomicConfigWriter,
}

impl kmsg_dump::Dumper for EmergWriter {
    fn dump(&self, _reason: kmsg_dump::Reason, log: &[u8]) {
        for &b in log {
            if !self.config.write_u32(CONFIG_EMERG_WR, u32::from(b)) {
                // The device is gone.
                return;
            }
            // Pace the bytes: QEMU hands each one to the chardev at once and drops what the
            // chardev cannot take right then.
            udelay(Delta::from_micros(EMERG_BYTE_DELAY_US));
        }
    }
}

/// The registered emergency writer of a device; dropping it unregisters it.
pub(crate) type Emerg = Pin<KBox<kmsg_dump::Registration<EmergWriter>>>;

/// Registers the emergency writer of `vdev`, if the device offers the feature.
///
/// Only where the config field can be written without sleeping (at panic time); the device
/// works without it.
pub(crate) fn register(vdev: &virtio::Device<Bound>) -> Result<Option<Emerg>> {
    if !vdev.has_feature(uapi::VIRTIO_CONSOLE_F_EMERG_WRITE) {
        return Ok(None);
    }
    match vdev.atomic_config_writer() {
        Ok(config) => {
            let writer = Arc::new(EmergWriter { config }, GFP_KERNEL)?;
            Ok(Some(KBox::pin_init(
                kmsg_dump::Registration::new(writer, EMERG_LOG_BYTES),
                GFP_KERNEL,
            )?))
        }
        Err(_) => {
            dev_info!(
                vdev.as_ref(),
                "no emergency write: the transport cannot write config atomically\n"
            );
            Ok(None)
        }
    }
}
