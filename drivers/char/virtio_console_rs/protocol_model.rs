// SPDX-License-Identifier: GPL-2.0

//! A model of what a correct guest does with the virtio console multiport protocol, for the
//! random fake-device run (`portdev_kunit.rs`).
//!
//! Written from the virtio specification and the C driver (`drivers/char/virtio_console.c`),
//! not from this driver: it decodes the control messages itself and shares no code with the
//! driver, so a bug in the driver's decoding or handling cannot hide in the model too.
//!
//! For each port id it keeps whether the port exists, its name (set once: the C driver ignores
//! a second `PORT_NAME`), whether the host end is open, whether it is a console and with which
//! vtermno, the console's window size, whether a guest file has it open and the data that file
//! has not read yet. Each event returns or records what the guest must answer on the control
//! transmit queue.
//!
//! Receive buffers: unlike the C driver, which fills a port's receive queue when the port is
//! added, a port's queue is filled when a guest file first opens the port or the port becomes
//! a console (an idle port holds no buffers; the host sends nothing to a port the guest has
//! not opened anyway). As in the C driver, the queue keeps its buffers when the port is
//! closed or removed ("Buffers are removed only by virtcons_remove(), not by
//! unplug_port()"). Data a host writes into them while the port is gone is freed with its
//! buffer by the receive interrupt (`in_intr` -> `flush_bufs`), so the next port with that id
//! never sees it; that port fills the queue again when it is first opened.

use kernel::prelude::*;

/// Control events (`include/uapi/linux/virtio_console.h`).
pub(crate) const DEVICE_READY: u16 = 0;
pub(crate) const PORT_ADD: u16 = 1;
pub(crate) const PORT_REMOVE: u16 = 2;
pub(crate) const PORT_READY: u16 = 3;
pub(crate) const CONSOLE_PORT: u16 = 4;
pub(crate) const RESIZE: u16 = 5;
pub(crate) const PORT_OPEN: u16 = 6;
pub(crate) const PORT_NAME: u16 = 7;

/// `struct virtio_console_control`: id (le32), event (le16), value (le16).
const HEADER: usize = 8;

/// A guest-to-host control message: id, event, value.
pub(crate) type Reply = (u32, u16, u16);

/// One port as a correct guest sees it.
#[derive(Default)]
pub(crate) struct ModelPort {
    /// The first name the host sent, up to its first NUL.
    pub(crate) name: Option<KVec<u8>>,
    pub(crate) host_connected: bool,
    /// The vtermno, if the port is a console.
    pub(crate) vtermno: Option<u32>,
    /// The console's window size as (rows, cols); (0, 0) until a `RESIZE`.
    pub(crate) size: (u16, u16),
    /// A guest file has the port open.
    pub(crate) file_open: bool,
    /// Data the host sent while the file was open and the file has not read yet.
    pub(crate) unread: KVec<u8>,
}

/// What became of data the host put in a port's receive buffer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum DataFate {
    /// The port's receive queue has no buffer: the host cannot send.
    NoBuffer,
    /// No such port: the interrupt frees the buffer (as the C driver's `flush_bufs`), so the
    /// next port with this id never sees the data.
    Freed,
    /// The port has no reader: the guest drops it.
    Dropped,
    /// Kept for the open file.
    Queued,
}

/// The receive queue of one port id.
#[derive(Default)]
struct RxQueue {
    /// A port with this id was opened or made a console once: the queue has buffers.
    filled: bool,
    /// Buffers the host used while no port had the id: freed, the queue is short of them
    /// until a port with this id is opened (or made a console) and fills it again.
    freed: u32,
}

/// The whole device: its ports and the replies the guest owes the host.
pub(crate) struct Model {
    max_nr_ports: u32,
    queue_size: u32,
    /// `VIRTIO_CONSOLE_F_SIZE` was negotiated: `RESIZE` reaches the console.
    size_feature: bool,
    ports: KVec<Option<ModelPort>>,
    rx: KVec<RxQueue>,
    /// vtermnos in use, from 1; a new console takes the lowest free one.
    vtermnos: KVec<u32>,
    replies: KVec<Reply>,
    /// Ids whose port went away while a file had it open: that file now gets `ENODEV`.
    dead_files: KVec<u32>,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Model {
    /// A multiport device with `max_nr_ports` and `queue_size` entries per queue, whose
    /// messages name ids below `ids`.
    pub(crate) fn new(
        max_nr_ports: u32,
        queue_size: u32,
        ids: u32,
        size_feature: bool,
    ) -> Result<Self> {
        let mut ports = KVec::with_capacity(ids as usize, GFP_KERNEL)?;
        let mut rx = KVec::with_capacity(ids as usize, GFP_KERNEL)?;
        for _ in 0..ids {
            ports.push(None, GFP_KERNEL)?;
            rx.push(RxQueue::default(), GFP_KERNEL)?;
        }
        let mut replies = KVec::new();
        // The end of a successful probe.
        replies.push((u32::MAX, DEVICE_READY, 1), GFP_KERNEL)?;
        Ok(Self {
            max_nr_ports,
            queue_size,
            size_feature,
            ports,
            rx,
            vtermnos: KVec::new(),
            replies,
            dead_files: KVec::new(),
        })
    }

    /// The port with id `id`, if it exists.
    pub(crate) fn port(&self, id: u32) -> Option<&ModelPort> {
        self.ports.get(id as usize)?.as_ref()
    }

    fn port_mut(&mut self, id: u32) -> Option<&mut ModelPort> {
        self.ports.get_mut(id as usize)?.as_mut()
    }

    /// The number of ports that exist.
    pub(crate) fn nr_ports(&self) -> usize {
        self.ports.iter().filter(|p| p.is_some()).count()
    }

    /// The replies owed since the last call, in order.
    pub(crate) fn take_replies(&mut self) -> KVec<Reply> {
        core::mem::take(&mut self.replies)
    }

    /// The ids whose open file lost its port since the last call.
    pub(crate) fn take_dead_files(&mut self) -> KVec<u32> {
        core::mem::take(&mut self.dead_files)
    }

    fn reply(&mut self, id: u32, event: u16, value: u16) -> Result {
        self.replies.push((id, event, value), GFP_KERNEL)?;
        Ok(())
    }

    fn alloc_vtermno(&mut self) -> Result<u32> {
        let mut v = 1;
        while self.vtermnos.contains(&v) {
            v += 1;
        }
        self.vtermnos.push(v, GFP_KERNEL)?;
        Ok(v)
    }

    /// The host sent a control buffer of which the guest received `msg` (the used length,
    /// capped at the buffer's size). Fails only without memory.
    pub(crate) fn control(&mut self, msg: &[u8]) -> Result {
        if msg.len() < HEADER {
            // Refused: no header.
            return Ok(());
        }
        let id = u32::from_le_bytes([msg[0], msg[1], msg[2], msg[3]]);
        let event = le16(msg, 4);
        let value = le16(msg, 6);
        let payload = &msg[HEADER..];
        if event == PORT_ADD {
            if self.port(id).is_some() {
                // A duplicate: acknowledged again.
                return self.reply(id, PORT_READY, 1);
            }
            if id >= self.max_nr_ports {
                return Ok(());
            }
            if let Some(slot) = self.ports.get_mut(id as usize) {
                *slot = Some(ModelPort::default());
                return self.reply(id, PORT_READY, 1);
            }
            // An id the run never sends.
            return Err(EINVAL);
        }
        let size_feature = self.size_feature;
        let Some(port) = self.port_mut(id) else {
            // Every other event needs an existing port.
            return Ok(());
        };
        match event {
            PORT_REMOVE => {
                let gone = self.ports.get_mut(id as usize).and_then(Option::take);
                if let Some(gone) = gone {
                    if let Some(v) = gone.vtermno {
                        self.vtermnos.retain(|x| *x != v);
                    }
                    if gone.file_open {
                        self.dead_files.push(id, GFP_KERNEL)?;
                    }
                }
            }
            CONSOLE_PORT => {
                if value != 0 && port.vtermno.is_none() {
                    let v = self.alloc_vtermno()?;
                    if let Some(port) = self.port_mut(id) {
                        port.vtermno = Some(v);
                        port.size = (0, 0);
                    }
                    self.fill(id);
                    // The spec's MUST: a console port is opened by the guest.
                    self.reply(id, PORT_OPEN, 1)?;
                }
            }
            RESIZE => {
                // Payload {cols, rows}; a short one is refused.
                if payload.len() >= 4 && port.vtermno.is_some() && size_feature {
                    port.size = (le16(payload, 2), le16(payload, 0));
                }
            }
            PORT_OPEN => port.host_connected = value != 0,
            PORT_NAME => {
                if port.name.is_none() {
                    let end = payload
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(payload.len());
                    let mut name = KVec::new();
                    name.extend_from_slice(&payload[..end], GFP_KERNEL)?;
                    port.name = Some(name);
                }
            }
            // DEVICE_READY, PORT_READY and unknown events are ignored.
            _ => {}
        }
        Ok(())
    }

    /// A guest file opens port `id`: the result it must get.
    pub(crate) fn open(&mut self, id: u32) -> Result {
        let port = self.port(id).ok_or(ENODEV)?;
        if port.vtermno.is_some() {
            // Consoles are used through their hvc tty.
            return Err(ENXIO);
        }
        if port.file_open {
            return Err(EBUSY);
        }
        let port = self.port_mut(id).ok_or(ENODEV)?;
        port.file_open = true;
        self.fill(id);
        self.reply(id, PORT_OPEN, 1)
    }

    /// Port `id`'s receive queue gets its buffers (the first open, or a new console).
    fn fill(&mut self, id: u32) {
        if let Some(rx) = self.rx.get_mut(id as usize) {
            rx.filled = true;
            rx.freed = 0;
        }
    }

    /// The guest file of port `id` is closed: unread data goes.
    pub(crate) fn close(&mut self, id: u32) -> Result {
        let port = self.port_mut(id).ok_or(ENODEV)?;
        port.file_open = false;
        port.unread.clear();
        self.reply(id, PORT_OPEN, 0)
    }

    /// The host fills a receive buffer of port `id` with `data` (as used).
    pub(crate) fn data(&mut self, id: u32, data: &[u8]) -> Result<DataFate> {
        let queue_size = self.queue_size;
        let exists = self.port(id).is_some();
        let rx = self.rx.get_mut(id as usize).ok_or(EINVAL)?;
        if !rx.filled || rx.freed == queue_size {
            return Ok(DataFate::NoBuffer);
        }
        if !exists {
            rx.freed += 1;
            return Ok(DataFate::Freed);
        }
        let Some(port) = self.port_mut(id) else {
            return Err(EINVAL);
        };
        if !port.file_open {
            // The interrupt drops it.
            return Ok(DataFate::Dropped);
        }
        port.unread.extend_from_slice(data, GFP_KERNEL)?;
        Ok(DataFate::Queued)
    }

    /// The open file of port `id` reads everything: the bytes it must get, in order, and how
    /// the read after them must end (`Ok(0)`: end of file, the host end is closed).
    pub(crate) fn read_all(&mut self, id: u32) -> Option<(KVec<u8>, Result<usize>)> {
        let port = self.port_mut(id)?;
        let end = if port.host_connected {
            Err(EAGAIN)
        } else {
            Ok(0)
        };
        Some((core::mem::take(&mut port.unread), end))
    }
}

#[kunit_tests(virtio_console_rs_protocol_model)]
mod tests {
    use super::*;

    fn msg(id: u32, event: u16, value: u16, payload: &[u8]) -> KVec<u8> {
        let mut v = KVec::new();
        let _ = v.extend_from_slice(&id.to_le_bytes(), GFP_KERNEL);
        let _ = v.extend_from_slice(&event.to_le_bytes(), GFP_KERNEL);
        let _ = v.extend_from_slice(&value.to_le_bytes(), GFP_KERNEL);
        let _ = v.extend_from_slice(payload, GFP_KERNEL);
        v
    }

    #[test]
    fn add_console_name_resize_remove() -> Result {
        let mut m = Model::new(4, 64, 6, true)?;
        assert_eq!(&m.take_replies()[..], &[(u32::MAX, DEVICE_READY, 1)]);
        m.control(&msg(1, PORT_ADD, 1, &[]))?;
        m.control(&msg(1, PORT_ADD, 1, &[]))?;
        m.control(&msg(5, PORT_ADD, 1, &[]))?;
        assert_eq!(
            &m.take_replies()[..],
            &[(1, PORT_READY, 1), (1, PORT_READY, 1)]
        );
        assert!(m.port(5).is_none());
        m.control(&msg(1, PORT_NAME, 1, b"first\0x"))?;
        m.control(&msg(1, PORT_NAME, 1, b"second"))?;
        assert_eq!(
            m.port(1).and_then(|p| p.name.as_deref()),
            Some(&b"first"[..])
        );
        m.control(&msg(1, CONSOLE_PORT, 0, &[]))?;
        assert!(m.take_replies().is_empty());
        m.control(&msg(1, CONSOLE_PORT, 1, &[]))?;
        assert_eq!(&m.take_replies()[..], &[(1, PORT_OPEN, 1)]);
        m.control(&msg(1, RESIZE, 0, &[80, 0, 25, 0]))?;
        m.control(&msg(1, RESIZE, 0, &[1, 0, 2]))?;
        assert_eq!(
            m.port(1).map(|p| (p.vtermno, p.size)),
            Some((Some(1), (25, 80)))
        );
        assert_eq!(m.open(1), Err(ENXIO));
        // Truncated below the header: nothing happens.
        m.control(&msg(1, PORT_REMOVE, 0, &[])[..7])?;
        assert_eq!(m.nr_ports(), 1);
        m.control(&msg(1, PORT_REMOVE, 0, &[]))?;
        assert_eq!(m.nr_ports(), 0);
        assert!(m.take_replies().is_empty());
        Ok(())
    }

    #[test]
    fn vtermnos_are_lowest_free_and_come_back() -> Result {
        let mut m = Model::new(4, 64, 4, false)?;
        for id in 0..3 {
            m.control(&msg(id, PORT_ADD, 1, &[]))?;
            m.control(&msg(id, CONSOLE_PORT, 1, &[]))?;
        }
        m.control(&msg(1, PORT_REMOVE, 0, &[]))?;
        m.control(&msg(3, PORT_ADD, 1, &[]))?;
        m.control(&msg(3, CONSOLE_PORT, 1, &[]))?;
        assert_eq!(m.port(3).and_then(|p| p.vtermno), Some(2));
        // Without F_SIZE a RESIZE changes nothing.
        m.control(&msg(3, RESIZE, 0, &[80, 0, 25, 0]))?;
        assert_eq!(m.port(3).map(|p| p.size), Some((0, 0)));
        Ok(())
    }

    #[test]
    fn data_reaches_only_an_open_file() -> Result {
        let mut m = Model::new(4, 64, 4, false)?;
        m.control(&msg(2, PORT_ADD, 1, &[]))?;
        // Port 1 was never added: its queue has no buffers.
        assert_eq!(m.data(1, b"x")?, DataFate::NoBuffer);
        // Port 2 was never opened: its queue has no buffers either.
        assert_eq!(m.data(2, b"x")?, DataFate::NoBuffer);
        m.open(2)?;
        assert_eq!(m.open(2), Err(EBUSY));
        assert_eq!(m.data(2, b"ab")?, DataFate::Queued);
        assert_eq!(m.data(2, b"c")?, DataFate::Queued);
        let (got, end) = m.read_all(2).ok_or(ENODEV)?;
        assert_eq!(&got[..], b"abc");
        assert_eq!(end, Ok(0));
        m.control(&msg(2, PORT_OPEN, 1, &[]))?;
        assert_eq!(m.read_all(2).map(|(_, e)| e), Some(Err(EAGAIN)));
        m.control(&msg(2, PORT_REMOVE, 0, &[]))?;
        assert_eq!(&m.take_dead_files()[..], &[2]);
        // What the host writes into the removed port's buffers is freed by the interrupt: the
        // next port 2 never sees it.
        assert_eq!(m.data(2, b"old")?, DataFate::Freed);
        m.control(&msg(2, PORT_ADD, 1, &[]))?;
        m.open(2)?;
        assert_eq!(m.data(2, b"new")?, DataFate::Queued);
        assert_eq!(m.read_all(2).map(|(d, _)| d).as_deref(), Some(&b"new"[..]));
        m.close(2)?;
        assert_eq!(m.data(2, b"x")?, DataFate::Dropped);
        m.control(&msg(2, PORT_REMOVE, 0, &[]))?;
        assert_eq!(m.data(2, b"gone")?, DataFate::Freed);
        m.control(&msg(2, PORT_ADD, 1, &[]))?;
        assert_eq!(m.data(2, b"y")?, DataFate::Dropped);
        m.open(2)?;
        assert_eq!(m.read_all(2).map(|(d, _)| d.len()), Some(0));
        assert_eq!(
            &m.take_replies()[..],
            &[
                (u32::MAX, DEVICE_READY, 1),
                (2, PORT_READY, 1),
                (2, PORT_OPEN, 1),
                (2, PORT_READY, 1),
                (2, PORT_OPEN, 1),
                (2, PORT_OPEN, 0),
                (2, PORT_READY, 1),
                (2, PORT_OPEN, 1)
            ]
        );
        Ok(())
    }
}
