// SPDX-License-Identifier: GPL-2.0

//! One virtio console device: probe, the control protocol, port hotplug and removal.

use crate::{
    control::{self, Event, HostMessage},
    control_tx::DeviceLink,
    emerg::{self, Emerg},
    fifo::Fifo,
    file::PortFile,
    port::{Port, RX_BUF_SIZE},
    port_table::PortTable,
    ConsoleDroppedAttr, Globals, NameAttr,
};
use kernel::{
    chrdev::{Cdev, Region},
    debugfs,
    device::{Bound, Core},
    device_class::{ClassDevice, Uevent},
    hvc,
    ida::{Ida, IdaId},
    impl_has_work, new_mutex, new_spinlock_irq, new_work,
    prelude::*,
    str::CString,
    sync::{Arc, Mutex, SpinLockIrq},
    uapi,
    virtio::{self, Buffer, Virtqueue, VirtqueueInfo},
    workqueue::{system_percpu, Work, WorkItem},
};

/// `offset_of!(struct virtio_console_config, cols/rows/max_nr_ports)`.
const CONFIG_COLS: usize = 0;
const CONFIG_ROWS: usize = 2;
const CONFIG_MAX_NR_PORTS: usize = 4;

/// Control messages the interrupt handler can take off the receive queue ahead of the work
/// item that handles them (32 bytes each).
///
/// QEMU drops a control message when it finds no receive buffer, so buffers must go back to
/// the device as soon as possible, not after a slow PORT_ADD or PORT_REMOVE has been handled;
/// with QEMU's 32-entry control queue the host can then run 160 messages ahead of the guest.
const CONTROL_BACKLOG: usize = 128;

/// A control message taken off the receive queue by [`PortsDevice::take_control_messages`].
enum Incoming {
    /// A copy of the message; its buffer went straight back to the device.
    Copy(KVec<u8>),
    /// The buffer itself (there was no memory for a copy); it goes back once handled.
    Held(KBox<Buffer>),
}

/// A port's hvc console, behind a lock of its own, so that the receive interrupt polls it
/// after releasing the device-wide `ports` lock, as the C driver's `in_intr` does: the
/// interrupt clones the handle under `ports` and polls under the console's lock. Taking the
/// console out of service ([`ConsoleSlot::remove`]) takes the registration out under that
/// lock, so it waits for a poll in progress, and an interrupt never drops the registration
/// (its clone may be the last one, of an empty slot).
#[derive(Clone)]
struct ConsoleSlot(Arc<SpinLockIrq<Option<hvc::Registration<Port>>>>);

impl ConsoleSlot {
    fn new(reg: hvc::Registration<Port>) -> Result<Self> {
        Ok(Self(Arc::pin_init(
            new_spinlock_irq!(Some(reg)),
            GFP_KERNEL,
        )?))
    }

    /// Runs `f` on the console, unless it was removed. Any context.
    fn with<R>(&self, f: impl FnOnce(&hvc::Registration<Port>) -> R) -> Option<R> {
        self.0.lock().as_ref().map(f)
    }

    /// Removes the console; the registration is dropped (which sleeps) outside the lock.
    fn remove(&self) {
        let reg = self.0.lock().take();
        drop(reg);
    }
}

/// What a live port holds: the port and everything that makes it visible.
///
/// Dropping it removes the hvc console, frees the vtermno, removes the char device, the class
/// device (and with it the `name` attribute) and the debugfs file.
struct PortEntry {
    port: Arc<Port>,
    /// The hvc console; declared before `vtermno` so the console goes before its number is
    /// freed.
    console: Option<ConsoleSlot>,
    vtermno: Option<IdaId>,
    debugfs: Option<Pin<KBox<debugfs::File<Arc<Port>>>>>,
    /// Shared so the name can be published without the table lock; only the entry's
    /// reference is ever the last one, and entries are dropped outside the lock.
    classdev: Option<Arc<ClassDevice<Port>>>,
    cdev: Option<Cdev<PortFile>>,
}

impl Drop for PortEntry {
    fn drop(&mut self) {
        // The console goes before its number is freed, whoever else holds the slot.
        if let Some(console) = self.console.take() {
            console.remove();
        }
    }
}

/// The driver data of one device.
///
/// # Locking
///
/// Which lock guards each field, and from which contexts it is touched ("immutable": set at
/// probe, read without a lock):
///
/// | Field | Guarded by | Context |
/// |---|---|---|
/// | `link`, `globals`, `multiport`, `max_nr_ports`, `index`, `region` | immutable | any |
/// | `bound` | immutable; revoked by the bus when the device is unbound | process (config work) |
/// | `vqs` | immutable; each queue has its own lock | any |
/// | `ports` | itself (IRQ-safe spinlock) | hard IRQ (queue interrupts), process |
/// | `incoming` | itself (IRQ-safe spinlock) | hard IRQ (control queue interrupt), process |
/// | `removed` | itself (mutex) | process (control work item, `remove`) |
/// | `emerg` | itself (mutex) | process (probe, `remove`); the writer runs at panic without it |
/// | `control_work`, `config_work` | the workqueue | queued from hard IRQ, run in process |
///
/// - `ports`: the queue interrupts look ports up in it (the hvc console is polled after it is
///   released, under the console's own lock, see [`ConsoleSlot`]). Entries are added and taken
///   out under it, but always allocated and dropped outside it, since dropping one sleeps (the
///   table itself is allocated at probe, see [`PortTable`]). It nests outside the ports'
///   `state` locks and the consoles' locks.
/// - `incoming`: the control queue interrupt fills it, the work item empties it. It nests
///   outside the control receive queue's lock, so messages enter it in the order the host sent
///   them.
/// - `removed`: the control work item holds it for its whole run, so it also serialises the
///   control protocol with `remove`.
#[pin_data]
pub(crate) struct PortsDevice {
    link: Arc<DeviceLink>,
    /// The device while it is bound, for the config work item.
    bound: virtio::BoundHandle,
    globals: Arc<Globals>,
    multiport: bool,
    max_nr_ports: u32,
    index: u32,
    region: Region,
    vqs: KVec<Arc<Virtqueue>>,
    #[pin]
    ports: SpinLockIrq<PortTable<PortEntry>>,
    #[pin]
    incoming: SpinLockIrq<Fifo<Incoming>>,
    /// The device is being removed: the control work item handles no more messages.
    #[pin]
    removed: Mutex<bool>,
    /// The panic-time log writer, dropped (unregistered) in `remove`, before the device goes.
    #[pin]
    emerg: Mutex<Option<Emerg>>,
    #[pin]
    control_work: Work<PortsDevice, 0>,
    #[pin]
    config_work: Work<PortsDevice, 1>,
}

impl_has_work! {
    impl HasWork<Self, 0> for PortsDevice { self.control_work }
    impl HasWork<Self, 1> for PortsDevice { self.config_work }
}

impl WorkItem<0> for PortsDevice {
    type Pointer = Arc<PortsDevice>;

    fn run(this: Arc<Self>) {
        this.handle_control();
    }
}

impl WorkItem<1> for PortsDevice {
    type Pointer = Arc<PortsDevice>;

    fn run(this: Arc<Self>) {
        this.bound.with(|dev| this.update_size_from_config(dev));
    }
}

impl PortsDevice {
    pub(crate) fn probe(
        vdev: &virtio::Device<Core<'_>>,
        globals: &Arc<Globals>,
    ) -> Result<Arc<Self>> {
        let multiport = vdev.has_feature(uapi::VIRTIO_CONSOLE_F_MULTIPORT);
        let size = vdev.has_feature(uapi::VIRTIO_CONSOLE_F_SIZE);
        let config = vdev.config();
        if (multiport || size) && config.is_none() {
            dev_err!(vdev.as_ref(), "config access disabled\n");
            return Err(EINVAL);
        }
        let mut max_nr_ports = 1;
        if let (true, Some(config)) = (multiport, config) {
            max_nr_ports = config.read_u32(CONFIG_MAX_NR_PORTS);
            if !control::valid_max_nr_ports(max_nr_ports) {
                dev_err!(vdev.as_ref(), "Invalidate max_nr_ports {}\n", max_nr_ports);
                return Err(EINVAL);
            }
        }
        let region = Region::new(c"virtio-portsdev", max_nr_ports)?;
        let table = PortTable::new(max_nr_ports)?;

        let n = control::nr_queues(multiport, max_nr_ports);
        let mut infos = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n as u32 {
            let info = match i {
                2 => VirtqueueInfo {
                    name: c"control-i",
                    callback: true,
                },
                3 => VirtqueueInfo {
                    name: c"control-o",
                    callback: false,
                },
                i if i % 2 == 0 => VirtqueueInfo {
                    name: c"input",
                    callback: true,
                },
                _ => VirtqueueInfo {
                    name: c"output",
                    callback: true,
                },
            };
            infos.push(info, GFP_KERNEL)?;
        }
        let vqs = vdev.find_vqs(&infos)?;
        let emerg = emerg::register(vdev)?;
        let bound = vdev.handle()?;
        let incoming = Fifo::new(if multiport { CONTROL_BACKLOG } else { 0 }, GFP_KERNEL)?;
        let link = Arc::pin_init(
            DeviceLink::new(
                vdev.get(),
                if multiport {
                    Some(vqs[3].clone())
                } else {
                    None
                },
            ),
            GFP_KERNEL,
        )?;
        let this = Arc::pin_init(
            pin_init!(Self {
                link,
                bound,
                globals: globals.clone(),
                multiport,
                max_nr_ports,
                index: vdev.index(),
                region,
                vqs,
                ports <- new_spinlock_irq!(table),
                incoming <- new_spinlock_irq!(incoming),
                removed <- new_mutex!(false),
                emerg <- new_mutex!(emerg),
                control_work <- new_work!("virtio_console_rs::control_work"),
                config_work <- new_work!("virtio_console_rs::config_work"),
            }),
            GFP_KERNEL,
        )?;

        vdev.device_ready();
        if multiport {
            if let Err(e) = this.fill_control_rx() {
                this.link
                    .send_control(control::BAD_ID, Event::DeviceReady, 0);
                return Err(e);
            }
        } else {
            // Port 0 of a single-port device is a console; like the C driver, the device stays
            // bound if it cannot be set up.
            let _ = this.add_port(0);
        }
        this.link
            .send_control(control::BAD_ID, Event::DeviceReady, 1);
        this.update_size_from_config(vdev);
        Ok(this)
    }

    fn fill_control_rx(&self) -> Result {
        let vq = &self.vqs[2];
        let mut added = 0;
        loop {
            let buf = Buffer::new(RX_BUF_SIZE, GFP_KERNEL)?;
            let mut q = vq.lock();
            if q.num_free() == 0 {
                break;
            }
            if let Err(e) = q.add_inbuf(buf) {
                if added == 0 {
                    return Err(e.error);
                }
                break;
            }
            added += 1;
        }
        vq.lock().kick();
        Ok(())
    }

    /// The device is going away (it is already reset).
    pub(crate) fn remove(&self) {
        // Stop the control protocol; the work item sees the flag and does nothing more.
        *self.removed.lock() = true;
        drop(self.emerg.lock().take());
        self.control_work.flush();
        self.config_work.flush();
        let mut entries = core::mem::replace(&mut *self.ports.lock(), PortTable::empty());
        for id in 0..self.max_nr_ports {
            if let Some(entry) = entries.take(id) {
                Self::unplug_entry(entry);
            }
        }
        drop(entries);
    }

    /// The live ports, in table order.
    fn ports_snapshot(&self) -> Result<KVec<Arc<Port>>> {
        let mut out = KVec::new();
        loop {
            let want = self.ports.lock().len();
            out.reserve(want, GFP_KERNEL)?;
            let ports = self.ports.lock();
            if ports.len() > out.capacity() {
                continue;
            }
            for e in ports.iter() {
                // Cannot fail: the capacity was checked under the lock.
                let _ = out.push_within_capacity(e.port.clone());
            }
            return Ok(out);
        }
    }

    /// The system is going to sleep (the device is reset already): stop the control protocol
    /// and let every port drop what it had lent the device. The bus adapter then revokes and
    /// deletes the queues. As the C driver's `virtcons_freeze`.
    pub(crate) fn freeze(&self) -> Result {
        let ports = self.ports_snapshot()?;
        // The work items may still be running from before the reset (the control one stops at
        // its next message: the queues are broken).
        self.control_work.flush();
        self.config_work.flush();
        // What the host sent before the freeze is lost with the queues, as in C; after restore
        // the host announces its ports again.
        while self.incoming.lock().pop().is_some() {}
        for port in ports.iter() {
            port.freeze();
        }
        Ok(())
    }

    /// The system woke up: the queues exist again, empty. Refill them and tell the host about
    /// every port again; the host answers with each port's open state (and name). As the C
    /// driver's `virtcons_restore`.
    pub(crate) fn restore(&self, vdev: &virtio::Device<Bound>) -> Result {
        let ports = self.ports_snapshot()?;
        vdev.device_ready();
        // As the C driver, a queue that cannot be refilled does not stop the restore: the
        // other ports come back all the same. Unlike it, the failure is logged.
        if self.multiport {
            if let Err(e) = self.fill_control_rx() {
                dev_err!(vdev.as_ref(), "Error {:?} refilling the control queue\n", e);
            }
        }
        for port in ports.iter() {
            // Only the ports that had lent buffers before the freeze (opened once, or
            // consoles): an idle port stays free of them.
            if port.rx_filled() {
                if let Err(e) = port.fill_rx() {
                    dev_err!(vdev.as_ref(), "Error {:?} refilling port {}\n", e, port.id);
                }
            }
            port.send_control(Event::PortReady, 1);
            if port.state.lock().guest_connected {
                port.send_control(Event::PortOpen, 1);
            }
        }
        Ok(())
    }

    /// A virtqueue interrupt (hard IRQ context).
    pub(crate) fn vq_interrupt(self: &Arc<Self>, index: u32) {
        match control::queue_port(index) {
            None => {
                if index == 2 {
                    self.take_control_messages();
                    let _ = system_percpu().enqueue::<Arc<Self>, 0>(self.clone());
                }
            }
            Some(_) => {
                let console = {
                    let ports = self.ports.lock();
                    let Some((entry, rx)) = ports.of_queue(index) else {
                        drop(ports);
                        self.flush_used(index);
                        return;
                    };
                    if !rx {
                        entry.port.tx_interrupt();
                        return;
                    }
                    entry.port.rx_interrupt();
                    entry.console.clone()
                };
                // `hvc_poll` pushes the input to the tty: not under the device-wide lock, as in
                // the C driver (see [`ConsoleSlot`]).
                if let Some(console) = console {
                    console.with(|c| {
                        if c.poll() != 0 {
                            c.kick();
                        }
                    });
                }
            }
        }
    }

    /// Frees the used buffers of queue `index`, whose port is not in the table (gone, or not
    /// in it yet), as the C driver's `flush_bufs`: left on the ring, they would be delivered
    /// to the next port with that id. Any context.
    fn flush_used(&self, index: u32) {
        if let Some(vq) = self.vqs.get(index as usize) {
            let mut q = vq.lock();
            while q.get_buf().is_some() {}
        }
    }

    /// A config change (hard IRQ context): only single-port devices care, for the size.
    pub(crate) fn config_changed(self: &Arc<Self>) {
        if !self.multiport {
            let _ = system_percpu().enqueue::<Arc<Self>, 1>(self.clone());
        }
    }

    fn update_size_from_config(&self, vdev: &virtio::Device<Bound>) {
        if self.multiport || !vdev.has_feature(uapi::VIRTIO_CONSOLE_F_SIZE) {
            return;
        }
        let Some(config) = vdev.config() else {
            return;
        };
        let cols = config.read_u16(CONFIG_COLS);
        let rows = config.read_u16(CONFIG_ROWS);
        let ports = self.ports.lock();
        if let Some(console) = ports.get(0).and_then(|e| e.console.as_ref()) {
            console.with(|c| c.resize(rows, cols));
        }
    }

    /// Moves the control messages the host has sent from the receive queue to `incoming`, in
    /// order, and gives each buffer straight back to the device when a copy could be made.
    /// Any context (the control queue interrupt, the work item).
    ///
    /// The C driver gives a buffer back only after handling its message, so a host that sends
    /// faster than the guest handles (port hotplug under load) finds the queue empty, and QEMU
    /// then drops the message: a lost PORT_REMOVE leaves a dead port with its readers asleep for
    /// ever. Here the host can run [`CONTROL_BACKLOG`] messages further ahead.
    fn take_control_messages(&self) {
        let mut incoming = self.incoming.lock();
        let mut q = self.vqs[2].lock();
        let mut given_back = false;
        while !incoming.is_full() {
            let Some(buf) = q.get_buf() else {
                break;
            };
            let mut copy = KVec::new();
            // Atomic allocation: interrupts are off. Without memory, the buffer itself waits.
            let item = match copy.extend_from_slice(buf.as_slice(), GFP_ATOMIC) {
                Ok(()) => {
                    // A queue that fails here is broken or gone; the buffer is just freed.
                    given_back |= q.add_inbuf(buf).is_ok();
                    Incoming::Copy(copy)
                }
                Err(_) => Incoming::Held(buf),
            };
            // Cannot fail: the queue is not full.
            let _ = incoming.push(item);
        }
        if given_back {
            q.kick();
        }
    }

    /// Handles every control message the host has sent, in order. Process context.
    fn handle_control(&self) {
        let removed = self.removed.lock();
        if *removed {
            return;
        }
        loop {
            // The adapter breaks the queues first thing in remove and freeze: stop there, as the
            // C driver's loop ends when `virtqueue_get_buf()` finds nothing on a broken queue.
            if self.vqs[2].lock().is_broken() {
                break;
            }
            self.take_control_messages();
            let Some(item) = self.incoming.lock().pop() else {
                break;
            };
            match item {
                Incoming::Copy(msg) => self.handle_message(&msg),
                Incoming::Held(buf) => {
                    self.handle_message(buf.as_slice());
                    let mut q = self.vqs[2].lock();
                    match q.add_inbuf(buf) {
                        Ok(()) => {
                            q.kick();
                        }
                        Err(e) => {
                            self.link
                                .warn(fmt!("Error adding buffer to queue: {:?}", e.error));
                        }
                    }
                }
            }
        }
        drop(removed);
    }

    fn has_port(&self, id: u32) -> bool {
        self.ports.lock().get(id).is_some()
    }

    fn find_port(&self, id: u32) -> Option<Arc<Port>> {
        self.ports.lock().get(id).map(|e| e.port.clone())
    }

    fn handle_message(&self, buf: &[u8]) {
        let vdev = &self.link.vdev;
        let msg = match control::decode(
            buf,
            |v| vdev.virtio16_to_cpu(v),
            |v| vdev.virtio32_to_cpu(v),
        ) {
            Ok(m) => m,
            Err(e) => {
                self.link.warn(fmt!("{e}, ignored"));
                return;
            }
        };
        match msg {
            HostMessage::PortAdd { id } => {
                if self.has_port(id) {
                    // The host may resend PORT_ADD (for example after a reset of its side).
                    self.link.send_control(id, Event::PortReady, 1);
                } else if !control::id_in_range(id, self.max_nr_ports) {
                    self.link.warn(fmt!(
                        "Request for port with out-of-bound id {id}, max. id: {}",
                        self.max_nr_ports - 1
                    ));
                } else {
                    // `add_port` tells the host about failures itself.
                    let _ = self.add_port(id);
                }
            }
            HostMessage::PortRemove { id } => {
                let entry = self.ports.lock().take(id);
                match entry {
                    Some(entry) => Self::unplug_entry(entry),
                    None => self.unknown_port(id),
                }
            }
            HostMessage::ConsolePort { id, console } => {
                if !self.has_port(id) {
                    return self.unknown_port(id);
                }
                if console {
                    self.make_console(id);
                }
            }
            HostMessage::Resize { id, cols, rows } => {
                let ports = self.ports.lock();
                let Some(entry) = ports.get(id) else {
                    drop(ports);
                    return self.unknown_port(id);
                };
                if let Some(console) = &entry.console {
                    console.with(|c| {
                        c.set_interrupt_driven(true);
                        c.resize(rows, cols);
                    });
                }
            }
            HostMessage::PortOpen { id, open } => match self.find_port(id) {
                Some(port) => port.set_host_connected(open),
                None => self.unknown_port(id),
            },
            HostMessage::PortName { id, name } => self.set_name(id, name),
            HostMessage::Ignored { .. } => {}
        }
    }

    fn unknown_port(&self, id: u32) {
        dev_dbg!(
            self.link.vdev.as_ref(),
            "Invalid index {} in control packet\n",
            id
        );
    }

    /// Creates port `id`: its char device, class device and debugfs file; tells the host
    /// whether it worked (PORT_READY).
    fn add_port(&self, id: u32) -> Result {
        let ret = self.try_add_port(id);
        if let Err(e) = &ret {
            dev_err!(
                self.link.vdev.as_ref(),
                "Error {:?} adding port {}\n",
                e,
                id
            );
            self.link.send_control(id, Event::PortReady, 0);
        }
        ret
    }

    fn try_add_port(&self, id: u32) -> Result {
        let (rx, tx) = control::port_queues(id);
        let in_vq = self.vqs.get(rx as usize).ok_or(EINVAL)?.clone();
        let out_vq = self.vqs.get(tx as usize).ok_or(EINVAL)?.clone();
        let devt = self.region.devt(id).ok_or(EINVAL)?;
        let port = Port::new(id, self.link.clone(), in_vq, out_vq)?;
        let mut entry = KBox::new(
            PortEntry {
                port: port.clone(),
                console: None,
                vtermno: None,
                debugfs: None,
                classdev: None,
                cdev: None,
            },
            GFP_KERNEL,
        )?;
        let setup = (|| -> Result {
            entry.cdev = Some(Cdev::new(
                devt,
                port.clone(),
                kernel::module::this_module::<crate::VirtioConsoleModule>(),
            )?);
            let name = CString::try_from_fmt(fmt!("vport{}p{}", self.index, id))?;
            entry.classdev = Some(Arc::new(
                ClassDevice::new(
                    &self.globals.class,
                    self.link.vdev.as_ref(),
                    devt,
                    port.clone(),
                    &name,
                )?,
                GFP_KERNEL,
            )?);
            if let Some(classdev) = &entry.classdev {
                classdev.add_attribute::<ConsoleDroppedAttr>()?;
            }
            // No receive buffers yet: the first open (or `attach_console`) lends them.
            if !self.multiport {
                let (reg, vtermno) = self.attach_console(&port)?;
                entry.vtermno = Some(vtermno);
                entry.console = Some(ConsoleSlot::new(reg)?);
            }
            // debugfs is best effort, as in the C driver.
            entry.debugfs = KBox::pin_init(
                self.globals.debugfs.read_binary_file(&name, port.clone()),
                GFP_KERNEL,
            )
            .ok();
            Ok(())
        })();
        if let Err(e) = setup {
            // A file may have opened the node meanwhile: it must see a dead port.
            Self::unplug_entry(entry);
            return Err(e);
        }
        self.insert_entry(entry)?;
        port.set_in_table();
        // The host answers each PORT_READY with up to three messages (CONSOLE_PORT, PORT_NAME,
        // PORT_OPEN) and drops those that find no receive buffer. A host that takes several
        // PORT_READYs at once (many ports announced together: up to 31 at DEVICE_READY, and
        // QEMU with ioeventfd handles the control queue after the guest has gone on) answers
        // them all in one go, more than its 32-entry control queue holds: the C driver waits
        // for each message to be taken. Here a PORT_READY waits only until the host has taken
        // the messages before it, so at most one is outstanding and the answers come one port
        // at a time; a host that takes each message at once never makes it wait.
        if !self.link.wait_control_taken() {
            self.link.warn(fmt!(
                "control messages before PORT_READY {id} not taken by the host"
            ));
        }
        port.send_control(Event::PortReady, 1);
        Ok(())
    }

    /// Adds an entry to the port table, which allocates nothing. On failure (the id is out of
    /// range or taken: callers check both first) the port is unplugged and the entry dropped,
    /// outside the lock.
    fn insert_entry(&self, entry: KBox<PortEntry>) -> Result {
        let id = entry.port.id;
        let ret = self.ports.lock().insert(id, entry);
        if let Err(entry) = ret {
            Self::unplug_entry(entry);
            return Err(EEXIST);
        }
        Ok(())
    }

    /// Turns a port into an hvc console (CONSOLE_PORT). The port stays in the table (and
    /// reachable by interrupts) all along.
    fn make_console(&self, id: u32) {
        let port = {
            let ports = self.ports.lock();
            let Some(entry) = ports.get(id) else {
                return;
            };
            if entry.console.is_some() {
                return;
            }
            entry.port.clone()
        };
        let console = self
            .attach_console(&port)
            .and_then(|(reg, vtermno)| Ok((ConsoleSlot::new(reg)?, vtermno)));
        match console {
            Ok((console, vtermno)) => {
                let mut ports = self.ports.lock();
                // Only this (serialised) work item removes entries, so it is still there.
                if let Some(entry) = ports.get_mut(id) {
                    entry.console = Some(console);
                    entry.vtermno = Some(vtermno);
                    return;
                }
                drop(ports);
            }
            Err(e) => dev_err!(
                self.link.vdev.as_ref(),
                "Error {:?} initializing console for port {}\n",
                e,
                id
            ),
        }
    }

    /// Registers `port` as an hvc console with a fresh vtermno and tells the host. A console
    /// is open for good, so its receive queue is filled at once.
    fn attach_console(&self, port: &Arc<Port>) -> Result<(hvc::Registration<Port>, IdaId)> {
        port.fill_rx()?;
        let vtermno = Ida::alloc_min(&self.globals.vtermnos, 1)?;
        let resize = self.link.vdev.has_feature(uapi::VIRTIO_CONSOLE_F_SIZE);
        let reg = hvc::Registration::new(vtermno.id(), port.clone(), RX_BUF_SIZE, resize)?;
        {
            let mut st = port.state.lock();
            st.vtermno = vtermno.id();
            st.guest_connected = true;
        }
        port.send_control(Event::PortOpen, 1);
        Ok((reg, vtermno))
    }

    fn set_name(&self, id: u32, name: &[u8]) {
        let Some(port) = self.find_port(id) else {
            return self.unknown_port(id);
        };
        if port.state.lock().name.is_some() {
            // The host sends the name again after a restore; keep the first.
            return;
        }
        let Ok(cname) = bytes_to_cstring(name) else {
            return;
        };
        port.state.lock().name = Some(cname);
        // Sysfs calls sleep: work on a reference to the class device, outside the lock.
        let classdev = self.ports.lock().get(id).and_then(|e| e.classdev.clone());
        if let Some(classdev) = classdev {
            if let Err(e) = classdev.add_attribute::<NameAttr>() {
                dev_err!(
                    self.link.vdev.as_ref(),
                    "Error {:?} when creating sysfs device attributes\n",
                    e
                );
            } else {
                let _ = classdev.uevent(Uevent::Change);
            }
        }
    }

    /// Takes a port out of service; the entry is dropped here, outside any lock.
    fn unplug_entry(mut entry: KBox<PortEntry>) {
        entry.port.unplug();
        // Console first, then its number, then the device nodes.
        if let Some(console) = entry.console.take() {
            console.remove();
        }
        entry.vtermno = None;
        if let Some(classdev) = &entry.classdev {
            classdev.remove_attribute::<NameAttr>();
            classdev.remove_attribute::<ConsoleDroppedAttr>();
        }
        drop(entry);
    }
}

#[cfg(CONFIG_VIRTIO_TEST_DEVICE)]
#[path = "portdev_kunit.rs"]
mod kunit;

/// Copies a name (which [`control::decode`] cut at its first NUL) into a C string.
fn bytes_to_cstring(name: &[u8]) -> Result<CString> {
    let mut v = KVec::with_capacity(name.len() + 1, GFP_KERNEL)?;
    v.extend_from_slice(name, GFP_KERNEL)?;
    v.push(0, GFP_KERNEL)?;
    let s = CStr::from_bytes_with_nul(&v).map_err(|_| EINVAL)?;
    Ok(CString::try_from(s)?)
}
