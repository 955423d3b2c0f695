// SPDX-License-Identifier: GPL-2.0

//! The virtio console control protocol: decoding and validating what the host sends, encoding
//! what the guest sends.
//!
//! Pure logic, no device access, so KUnit tests it directly. Multi-byte fields are in the
//! device's byte order (`__virtio16`/`__virtio32`); callers pass converters for them.

use kernel::prelude::*;

/// The header of every control message (`struct virtio_console_control`).
pub(crate) const HEADER_LEN: usize = 8;

/// `VIRTIO_CONSOLE_BAD_ID`: the id of messages about the device, not a port.
pub(crate) const BAD_ID: u32 = u32::MAX;

/// The largest `max_nr_ports` the driver accepts (the C driver's `VIRTCONS_MAX_PORTS`).
pub(crate) const MAX_PORTS: u32 = 0x8000;

/// Longest port name kept: what fits in a control buffer (a page) after the header, as in
/// the C driver.
pub(crate) const MAX_NAME_LEN: usize = 4096 - HEADER_LEN;

/// The control events the guest sends (`VIRTIO_CONSOLE_*` in
/// `include/uapi/linux/virtio_console.h`); the host's are decoded into [`HostMessage`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u16)]
pub(crate) enum Event {
    DeviceReady = 0,
    PortReady = 3,
    PortOpen = 6,
}

/// A validated host-to-guest control message.
#[derive(PartialEq, Eq, Debug)]
pub(crate) enum HostMessage<'a> {
    /// A port appeared (`VIRTIO_CONSOLE_PORT_ADD`, the spec's `DEVICE_ADD`).
    PortAdd { id: u32 },
    /// A port went away (`VIRTIO_CONSOLE_PORT_REMOVE`).
    PortRemove { id: u32 },
    /// The port is a console (`value != 0`) or not.
    ConsolePort { id: u32, console: bool },
    /// New console size.
    Resize { id: u32, cols: u16, rows: u16 },
    /// The host end was opened or closed.
    PortOpen { id: u32, open: bool },
    /// The port's name: the payload up to its first NUL, at most [`MAX_NAME_LEN`] bytes.
    PortName { id: u32, name: &'a [u8] },
    /// An event the guest never receives (`DEVICE_READY`, `PORT_READY`) or does not know; the
    /// C driver ignores these silently and so do we.
    Ignored { id: u32, event: u16 },
}

/// Why a message was refused.
#[derive(PartialEq, Eq, Debug)]
pub(crate) enum Invalid {
    /// Shorter than the header.
    Short { len: usize },
    /// A `RESIZE` without its 4-byte payload.
    ShortResize { len: usize },
}

impl kernel::fmt::Display for Invalid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Invalid::Short { len } => write!(f, "control message of {len} bytes is too short"),
            Invalid::ShortResize { len } => {
                write!(f, "resize message of {len} bytes has no size")
            }
        }
    }
}

/// Decodes the `len` valid bytes of a control buffer.
///
/// `u16`/`u32` convert the device's byte order to the CPU's. The id is not range-checked here:
/// that depends on the device (see [`id_in_range`]).
pub(crate) fn decode<'a>(
    buf: &'a [u8],
    u16_to_cpu: impl Fn(u16) -> u16,
    u32_to_cpu: impl Fn(u32) -> u32,
) -> Result<HostMessage<'a>, Invalid> {
    if buf.len() < HEADER_LEN {
        return Err(Invalid::Short { len: buf.len() });
    }
    let id = u32_to_cpu(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]));
    let event = u16_to_cpu(u16::from_ne_bytes([buf[4], buf[5]]));
    let value = u16_to_cpu(u16::from_ne_bytes([buf[6], buf[7]]));
    let payload = &buf[HEADER_LEN..];
    Ok(match event {
        1 => HostMessage::PortAdd { id },
        2 => HostMessage::PortRemove { id },
        4 => HostMessage::ConsolePort {
            id,
            console: value != 0,
        },
        5 => {
            if payload.len() < 4 {
                return Err(Invalid::ShortResize { len: buf.len() });
            }
            HostMessage::Resize {
                id,
                cols: u16_to_cpu(u16::from_ne_bytes([payload[0], payload[1]])),
                rows: u16_to_cpu(u16::from_ne_bytes([payload[2], payload[3]])),
            }
        }
        6 => HostMessage::PortOpen {
            id,
            open: value != 0,
        },
        7 => {
            let end = payload
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(payload.len());
            HostMessage::PortName {
                id,
                name: &payload[..end.min(MAX_NAME_LEN)],
            }
        }
        event => HostMessage::Ignored { id, event },
    })
}

/// Whether a port id names a port of a device with `max_nr_ports` ports.
pub(crate) fn id_in_range(id: u32, max_nr_ports: u32) -> bool {
    id < max_nr_ports
}

/// Validates the device's `max_nr_ports` as the C driver does: 1 to [`MAX_PORTS`].
pub(crate) fn valid_max_nr_ports(n: u32) -> bool {
    (1..=MAX_PORTS).contains(&n)
}

/// Encodes a guest-to-host message; `u16`/`u32` convert to the device's byte order.
pub(crate) fn encode(
    id: u32,
    event: Event,
    value: u16,
    cpu_to_u16: impl Fn(u16) -> u16,
    cpu_to_u32: impl Fn(u32) -> u32,
) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&cpu_to_u32(id).to_ne_bytes());
    out[4..6].copy_from_slice(&cpu_to_u16(event as u16).to_ne_bytes());
    out[6..8].copy_from_slice(&cpu_to_u16(value).to_ne_bytes());
    out
}

/// The virtqueue indices of port `id`: (receive, transmit), as in the virtio spec.
pub(crate) fn port_queues(id: u32) -> (u32, u32) {
    if id == 0 {
        (0, 1)
    } else {
        (2 + 2 * id, 3 + 2 * id)
    }
}

/// Which port a data queue belongs to, and whether it is the receive queue; `None` for the
/// control queues (2 and 3).
pub(crate) fn queue_port(index: u32) -> Option<(u32, bool)> {
    match index {
        0 => Some((0, true)),
        1 => Some((0, false)),
        2 | 3 => None,
        i => Some(((i - 2) / 2, i % 2 == 0)),
    }
}

/// The number of virtqueues of a device.
pub(crate) fn nr_queues(multiport: bool, max_nr_ports: u32) -> usize {
    if multiport {
        (max_nr_ports as usize + 1) * 2
    } else {
        2
    }
}

/// Builds a host-to-guest control message in little-endian (VERSION_1) byte order, for tests.
#[cfg(CONFIG_KUNIT)]
pub(crate) fn le_message(id: u32, event: u16, value: u16, payload: &[u8]) -> KVec<u8> {
    let mut v = KVec::new();
    let _ = v.extend_from_slice(&id.to_le_bytes(), GFP_KERNEL);
    let _ = v.extend_from_slice(&event.to_le_bytes(), GFP_KERNEL);
    let _ = v.extend_from_slice(&value.to_le_bytes(), GFP_KERNEL);
    let _ = v.extend_from_slice(payload, GFP_KERNEL);
    v
}

#[kunit_tests(virtio_console_rs_control)]
mod tests {
    use super::*;

    fn le16(v: u16) -> u16 {
        u16::from_le(v)
    }
    fn le32(v: u32) -> u32 {
        u32::from_le(v)
    }
    use super::le_message as msg;

    #[test]
    fn short_messages_are_refused() {
        for len in 0..HEADER_LEN {
            let m = msg(1, 1, 1, &[]);
            assert_eq!(decode(&m[..len], le16, le32), Err(Invalid::Short { len }));
        }
    }

    #[test]
    fn every_event_decodes() {
        assert_eq!(
            decode(&msg(3, 1, 1, &[]), le16, le32),
            Ok(HostMessage::PortAdd { id: 3 })
        );
        assert_eq!(
            decode(&msg(3, 2, 0, &[]), le16, le32),
            Ok(HostMessage::PortRemove { id: 3 })
        );
        assert_eq!(
            decode(&msg(0, 4, 1, &[]), le16, le32),
            Ok(HostMessage::ConsolePort {
                id: 0,
                console: true
            })
        );
        assert_eq!(
            decode(&msg(0, 4, 0, &[]), le16, le32),
            Ok(HostMessage::ConsolePort {
                id: 0,
                console: false
            })
        );
        assert_eq!(
            decode(&msg(2, 6, 1, &[]), le16, le32),
            Ok(HostMessage::PortOpen { id: 2, open: true })
        );
        assert_eq!(
            decode(&msg(2, 6, 0, &[]), le16, le32),
            Ok(HostMessage::PortOpen { id: 2, open: false })
        );
        assert_eq!(
            decode(&msg(BAD_ID, 0, 1, &[]), le16, le32),
            Ok(HostMessage::Ignored {
                id: BAD_ID,
                event: 0
            })
        );
        assert_eq!(
            decode(&msg(1, 3, 1, &[]), le16, le32),
            Ok(HostMessage::Ignored { id: 1, event: 3 })
        );
        assert_eq!(
            decode(&msg(1, 0x7777, 1, &[]), le16, le32),
            Ok(HostMessage::Ignored {
                id: 1,
                event: 0x7777
            })
        );
    }

    #[test]
    fn resize_is_cols_then_rows_and_needs_its_payload() {
        let m = msg(1, 5, 0, &[80, 0, 25, 0]);
        assert_eq!(
            decode(&m, le16, le32),
            Ok(HostMessage::Resize {
                id: 1,
                cols: 80,
                rows: 25
            })
        );
        let m = msg(1, 5, 0, &[80, 0, 25]);
        assert_eq!(
            decode(&m, le16, le32),
            Err(Invalid::ShortResize { len: 11 })
        );
    }

    #[test]
    fn names_with_and_without_nul() {
        let m = msg(1, 7, 1, b"org.qemu.guest_agent.0\0");
        assert_eq!(
            decode(&m, le16, le32),
            Ok(HostMessage::PortName {
                id: 1,
                name: b"org.qemu.guest_agent.0"
            })
        );
        let m = msg(1, 7, 1, b"abc");
        assert_eq!(
            decode(&m, le16, le32),
            Ok(HostMessage::PortName {
                id: 1,
                name: b"abc"
            })
        );
        let m = msg(1, 7, 1, b"a\0bc");
        assert_eq!(
            decode(&m, le16, le32),
            Ok(HostMessage::PortName { id: 1, name: b"a" })
        );
        assert_eq!(
            decode(&msg(1, 7, 1, b""), le16, le32),
            Ok(HostMessage::PortName { id: 1, name: b"" })
        );
        assert_eq!(
            decode(&msg(1, 7, 1, b"\0"), le16, le32),
            Ok(HostMessage::PortName { id: 1, name: b"" })
        );
    }

    #[test]
    fn long_names_are_cut() {
        let mut long = KVec::new();
        let _ = long.resize(5000, b'x', GFP_KERNEL);
        let m = msg(1, 7, 1, &long);
        match decode(&m, le16, le32) {
            Ok(HostMessage::PortName { name, .. }) => assert_eq!(name.len(), MAX_NAME_LEN),
            _ => assert!(false),
        }
    }

    #[test]
    fn encode_round_trips() {
        let m = encode(BAD_ID, Event::DeviceReady, 1, u16::to_le, u32::to_le);
        assert_eq!(m, [0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0]);
        let m = encode(5, Event::PortOpen, 1, u16::to_le, u32::to_le);
        assert_eq!(m, [5, 0, 0, 0, 6, 0, 1, 0]);
    }

    #[test]
    fn limits_and_queue_numbering() {
        assert!(!valid_max_nr_ports(0));
        assert!(valid_max_nr_ports(1));
        assert!(valid_max_nr_ports(0x8000));
        assert!(!valid_max_nr_ports(0x8001));
        assert!(id_in_range(30, 31));
        assert!(!id_in_range(31, 31));
        assert!(!id_in_range(BAD_ID, 31));
        assert_eq!(port_queues(0), (0, 1));
        assert_eq!(port_queues(1), (4, 5));
        assert_eq!(port_queues(30), (62, 63));
        assert_eq!(queue_port(0), Some((0, true)));
        assert_eq!(queue_port(3), None);
        assert_eq!(queue_port(4), Some((1, true)));
        assert_eq!(queue_port(63), Some((30, false)));
        assert_eq!(nr_queues(true, 31), 64);
        assert_eq!(nr_queues(false, 1), 2);
    }
}
