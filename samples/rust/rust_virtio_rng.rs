// SPDX-License-Identifier: GPL-2.0

//! Rust virtio entropy source sample.
//!
//! Binds `virtio-rng` devices with the `kernel::virtio` abstractions and shows what it reads
//! in `/sys/kernel/debug/rust_virtio_rng/virtioN`: every read of the file asks the device for
//! a fresh block of 32 bytes and shows the last one received and the total.

use core::fmt::Write;
use kernel::{
    debugfs,
    device::{Bound, Core},
    new_spinlock_irq,
    prelude::*,
    str::CString,
    sync::{Arc, SpinLockIrq},
    virtio::{self, Buffer, DeviceId, Virtqueue, VirtqueueInfo},
};

kernel::module_virtio_driver! {
    type: RngDriver,
    name: "rust_virtio_rng",
    authors: ["The virtio_console_rs authors"],
    description: "Rust virtio entropy source sample",
    license: "GPL",
}

const BLOCK: usize = 32;

struct State {
    total: u64,
    last: [u8; BLOCK],
    pending: bool,
}

#[pin_data]
struct Rng {
    vq: Arc<Virtqueue>,
    /// Touched from the queue interrupt and from debugfs reads.
    #[pin]
    state: SpinLockIrq<State>,
}

impl Rng {
    /// Asks the device for a block unless a request is outstanding.
    fn request(&self) {
        let mut st = self.state.lock();
        if st.pending {
            return;
        }
        let Ok(buf) = Buffer::new(BLOCK, GFP_ATOMIC) else {
            return;
        };
        let mut q = self.vq.lock();
        if q.add_inbuf(buf).is_ok() {
            q.kick();
            st.pending = true;
        }
    }

    fn show(this: &Arc<Rng>, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (total, last) = {
            let st = this.state.lock();
            (st.total, st.last)
        };
        this.request();
        write!(f, "bytes: {total}\nlast: ")?;
        for b in last {
            write!(f, "{b:02x}")?;
        }
        f.write_char('\n')
    }
}

struct Globals {
    dir: debugfs::Dir,
}

/// A bound device: the entropy source and its debugfs file.
struct BoundRng {
    rng: Arc<Rng>,
    _file: Pin<KBox<debugfs::File<Arc<Rng>>>>,
}

struct RngDriver;

kernel::virtio_device_table!(RNG_IDS, [DeviceId::new(virtio::ID_RNG)]);

impl virtio::Driver for RngDriver {
    type Context = Globals;
    type Data = BoundRng;

    const ID_TABLE: virtio::IdTable = &RNG_IDS;
    const FEATURES: &'static [u32] = &[];

    fn context() -> Result<Arc<Globals>> {
        Ok(Arc::new(
            Globals {
                dir: debugfs::Dir::new(c"rust_virtio_rng"),
            },
            GFP_KERNEL,
        )?)
    }

    fn probe(dev: &virtio::Device<Core<'_>>, ctx: &Arc<Globals>) -> Result<Arc<BoundRng>> {
        let vqs = dev.find_vqs(&[VirtqueueInfo {
            name: c"input",
            callback: true,
        }])?;
        let vq = vqs.first().ok_or(EINVAL)?.clone();
        let rng = Arc::pin_init(
            pin_init!(Rng {
                vq,
                state <- new_spinlock_irq!(State { total: 0, last: [0; BLOCK], pending: false }),
            }),
            GFP_KERNEL,
        )?;
        let name = CString::try_from_fmt(fmt!("virtio{}", dev.index()))?;
        let file = KBox::pin_init(
            ctx.dir.read_callback_file(&name, rng.clone(), &Rng::show),
            GFP_KERNEL,
        )?;
        dev.device_ready();
        rng.request();
        dev_info!(dev.as_ref(), "rust_virtio_rng bound\n");
        Ok(Arc::new(BoundRng { rng, _file: file }, GFP_KERNEL)?)
    }

    fn remove(_dev: &virtio::Device<Core<'_>>, _data: &Arc<BoundRng>) {}

    fn freeze(_dev: &virtio::Device<Bound>, data: &Arc<BoundRng>) -> Result {
        // The adapter drops the outstanding request with the queue.
        data.rng.state.lock().pending = false;
        Ok(())
    }

    fn restore(dev: &virtio::Device<Bound>, data: &Arc<BoundRng>) -> Result {
        dev.device_ready();
        data.rng.request();
        Ok(())
    }

    fn vq_interrupt(_dev: &virtio::Device<Bound>, data: &Arc<BoundRng>, _index: u32) {
        let rng = &data.rng;
        let mut st = rng.state.lock();
        while let Some(buf) = rng.vq.lock().get_buf() {
            let n = buf.len().min(BLOCK);
            st.last[..n].copy_from_slice(&buf.as_slice()[..n]);
            st.total += buf.len() as u64;
            st.pending = false;
        }
    }
}
