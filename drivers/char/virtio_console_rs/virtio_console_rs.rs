// SPDX-License-Identifier: GPL-2.0

//! Virtio console driver in Rust.
//!
//! Binds virtio console devices (`virtio-serial-pci` in QEMU), follows the multiport control
//! protocol, registers console ports as hvc consoles and exposes the other ports as
//! `/dev/vportNpM`, with the sysfs `name` attribute and
//! `/sys/kernel/debug/virtio-ports/vportNpM`, as
//! [`drivers/char/virtio_console.c`](srctree/drivers/char/virtio_console.c) does.
//!
//! Differences from the C driver, all invisible to well-behaved hosts:
//! - every control message is validated (length, id, name) and bad ones are logged,
//!   rate-limited, and ignored;
//! - control messages and console output never busy-wait for the host;
//! - concurrent readers of one file are serialised.

#[cfg(CONFIG_VIRTIO_TEST_DEVICE)]
mod adapter_kunit;
mod control;
mod control_tx;
mod debugfs_fmt;
mod emerg;
mod fifo;
mod file;
#[cfg(CONFIG_KUNIT)]
mod hvc_kunit;
#[cfg(CONFIG_KUNIT)]
mod kunit_spawn;
mod port;
mod port_table;
mod portdev;
#[cfg(CONFIG_VIRTIO_TEST_DEVICE)]
mod protocol_model;
mod ratelimit;
mod tx_pool;

use core::marker::PhantomData;
use kernel::{
    debugfs,
    device::{Bound, Core},
    device_class::{Attribute, Class},
    ida::Ida,
    prelude::*,
    sync::Arc,
    virtio::{self, DeviceId},
};
use port::Port;
use portdev::PortsDevice;

module! {
    type: VirtioConsoleModule,
    name: "virtio_console_rs",
    authors: ["The virtio_console_rs authors"],
    description: "Virtio console driver (Rust)",
    license: "GPL",
    params: {
        fake_seed: u64 {
            default: 0x5eed_c0de,
            description: "Seed of the fake-device KUnit random run",
        },
        fake_messages: u64 {
            default: 100000,
            description: "Control messages in the fake-device KUnit random run",
        },
    },
}

/// State shared by all devices: the class, the vtermno allocator and the debugfs directory.
pub(crate) struct Globals {
    pub(crate) class: Arc<Class>,
    /// hvc vtermnos, from 1, unique across every device, recycled when a console goes away.
    pub(crate) vtermnos: Arc<Ida>,
    pub(crate) debugfs: debugfs::Dir,
}

impl Globals {
    /// Creates the class `class` and the debugfs directory `debugfs`.
    pub(crate) fn new(class: &'static CStr, debugfs: &'static CStr) -> Result<Arc<Self>> {
        Ok(Arc::new(
            Globals {
                class: Class::new(class)?,
                vtermnos: Arc::pin_init(Ida::new(), GFP_KERNEL)?,
                debugfs: debugfs::Dir::new(debugfs),
            },
            GFP_KERNEL,
        )?)
    }
}

/// The sysfs `name` attribute of a port.
pub(crate) struct NameAttr;

impl Attribute<Port> for NameAttr {
    const NAME: &'static CStr = c"name";

    fn show(port: &Port, out: &mut [u8]) -> usize {
        let st = port.state.lock();
        let name = st.name.as_ref().map_or(&[][..], |n| n.to_bytes());
        let n = name.len().min(out.len().saturating_sub(1));
        out[..n].copy_from_slice(&name[..n]);
        out[n] = b'\n';
        n + 1
    }
}

/// The sysfs `console_dropped_bytes` attribute of a port: console output dropped because the
/// host stopped consuming it (see [`Port::console_put`]). Not in the C driver, which
/// busy-waits instead; an extra file, so the C driver's `name` and debugfs lines are unchanged.
pub(crate) struct ConsoleDroppedAttr;

impl Attribute<Port> for ConsoleDroppedAttr {
    const NAME: &'static CStr = c"console_dropped_bytes";

    fn show(port: &Port, out: &mut [u8]) -> usize {
        let dropped = port.state.lock().console_dropped;
        let mut f = kernel::str::Formatter::new(out);
        // A u64 and a newline always fit in a sysfs page.
        let _ = core::fmt::Write::write_fmt(&mut f, format_args!("{dropped}\n"));
        f.bytes_written()
    }
}

/// How a console driver is bound: to which devices, with which globals, and what it does
/// after a successful probe. The module binds real consoles; the KUnit suites bind the same
/// driver to fake devices with a class of their own.
pub(crate) trait ConsoleBinding: Send + Sync + 'static {
    /// The registration's context.
    type Context: Send + Sync;
    /// The devices to bind.
    const ID_TABLE: virtio::IdTable;
    /// Builds the registration's context.
    fn context() -> Result<Arc<Self::Context>>;
    /// The class, vtermno allocator and debugfs directory for the devices.
    fn globals(ctx: &Arc<Self::Context>) -> &Arc<Globals>;
    /// Called with the device data after a successful probe.
    fn probed(ctx: &Arc<Self::Context>, data: &Arc<PortsDevice>) {
        let _ = (ctx, data);
    }
}

/// The virtio console driver, for the devices of binding `B`.
pub(crate) struct ConsoleDriver<B>(PhantomData<B>);

impl<B: ConsoleBinding> virtio::Driver for ConsoleDriver<B> {
    type Context = B::Context;
    type Data = PortsDevice;

    const ID_TABLE: virtio::IdTable = B::ID_TABLE;
    const FEATURES: &'static [u32] = &[
        kernel::uapi::VIRTIO_CONSOLE_F_SIZE,
        kernel::uapi::VIRTIO_CONSOLE_F_MULTIPORT,
        kernel::uapi::VIRTIO_CONSOLE_F_EMERG_WRITE,
    ];

    fn context() -> Result<Arc<B::Context>> {
        B::context()
    }

    fn probe(dev: &virtio::Device<Core<'_>>, ctx: &Arc<B::Context>) -> Result<Arc<PortsDevice>> {
        let data = PortsDevice::probe(dev, B::globals(ctx))?;
        B::probed(ctx, &data);
        Ok(data)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, data: &Arc<PortsDevice>) {
        data.remove();
    }

    fn vq_interrupt(_dev: &virtio::Device<Bound>, data: &Arc<PortsDevice>, index: u32) {
        data.vq_interrupt(index);
    }

    fn config_changed(_dev: &virtio::Device<Bound>, data: &Arc<PortsDevice>) {
        data.config_changed();
    }

    fn freeze(_dev: &virtio::Device<Bound>, data: &Arc<PortsDevice>) -> Result {
        data.freeze()
    }

    fn restore(dev: &virtio::Device<Bound>, data: &Arc<PortsDevice>) -> Result {
        data.restore(dev)
    }
}

/// Real virtio consoles.
struct VirtioConsole;

impl ConsoleBinding for VirtioConsole {
    type Context = Globals;
    const ID_TABLE: virtio::IdTable = &VIRTIO_CONSOLE_IDS;

    fn context() -> Result<Arc<Globals>> {
        Globals::new(c"virtio-ports", c"virtio-ports")
    }

    fn globals(ctx: &Arc<Globals>) -> &Arc<Globals> {
        ctx
    }
}

// The one table the bus matches against and modpost turns into the module's alias.
kernel::virtio_device_table!(VIRTIO_CONSOLE_IDS, [DeviceId::new(virtio::ID_CONSOLE)]);

#[pin_data]
struct VirtioConsoleModule {
    #[pin]
    driver: virtio::Registration<ConsoleDriver<VirtioConsole>>,
}

impl kernel::InPlaceModule for VirtioConsoleModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            driver <- virtio::Registration::new(c"virtio_console_rs", module),
        })
    }
}
