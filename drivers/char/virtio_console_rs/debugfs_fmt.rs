// SPDX-License-Identifier: GPL-2.0

//! The text of `/sys/kernel/debug/virtio-ports/vportNpM`: the nine `key: value` lines of the
//! C driver's `port_debugfs_show()`, in its order and format.

use crate::port::{Port, PortState, Stats};
use core::fmt::{self, Write};
use kernel::{
    alloc::Flags, debugfs::BinaryWriter, fs::file::Offset, prelude::*, uaccess::UserSliceWriter,
};

/// Room for the eight lines after the name, at their longest (three `u64` and a `u32`).
const TEXT_BYTES: usize = 256;

/// A snapshot of what the file shows.
pub(crate) struct Snapshot<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) guest_connected: bool,
    pub(crate) host_connected: bool,
    pub(crate) outvq_full: bool,
    pub(crate) stats: Stats,
    pub(crate) vtermno: u32,
}

impl<'a> Snapshot<'a> {
    fn of(st: &'a PortState) -> Self {
        Snapshot {
            name: st.name.as_ref().map_or(&[][..], |n| n.to_bytes()),
            guest_connected: st.guest_connected,
            host_connected: st.host_connected,
            outvq_full: st.outvq_full,
            stats: st.stats,
            vtermno: st.vtermno,
        }
    }
}

/// Appends formatted text to a byte vector, growing it with `flags`.
struct Text<'a>(&'a mut KVec<u8>, Flags);

impl Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0
            .extend_from_slice(s.as_bytes(), self.1)
            .map_err(|_| fmt::Error)
    }
}

/// Appends the nine lines to `out` (growing it with `flags` if needed), byte for byte as the C
/// driver's `seq_printf(s, "name: %s\n", port->name)` and the rest: the name's bytes are the
/// host's, whether or not they are UTF-8.
pub(crate) fn write(s: &Snapshot<'_>, out: &mut KVec<u8>, flags: Flags) -> Result {
    out.extend_from_slice(b"name: ", flags)?;
    out.extend_from_slice(s.name, flags)?;
    let mut f = Text(out, flags);
    (|| -> fmt::Result {
        writeln!(f)?;
        writeln!(f, "guest_connected: {}", u8::from(s.guest_connected))?;
        writeln!(f, "host_connected: {}", u8::from(s.host_connected))?;
        writeln!(f, "outvq_full: {}", u8::from(s.outvq_full))?;
        writeln!(f, "bytes_sent: {}", s.stats.bytes_sent)?;
        writeln!(f, "bytes_received: {}", s.stats.bytes_received)?;
        writeln!(f, "bytes_discarded: {}", s.stats.bytes_discarded)?;
        writeln!(
            f,
            "is_console: {}",
            if s.vtermno != 0 { "yes" } else { "no" }
        )?;
        writeln!(f, "console_vtermno: {}", s.vtermno)
    })()
    .map_err(|_| ENOMEM)
}

/// The file's text for `port`, now.
fn render(port: &Port) -> Result<KVec<u8>> {
    let name_len = {
        let st = port.state.lock();
        st.name.as_ref().map_or(0, |n| n.to_bytes().len())
    };
    let mut out = KVec::with_capacity(name_len + TEXT_BYTES, GFP_KERNEL)?;
    let st = port.state.lock();
    // The name is set at most once: unless it was set just now, all of it fits and nothing is
    // allocated under the spinlock; if it was, the vector grows atomically.
    write(&Snapshot::of(&st), &mut out, GFP_ATOMIC)?;
    Ok(out)
}

/// The debugfs file of a port: the text is made afresh for each `read()`, from the offset asked
/// for (the C driver's `seq_file` makes it once per open).
impl BinaryWriter for Port {
    fn write_to_slice(&self, writer: &mut UserSliceWriter, offset: &mut Offset) -> Result<usize> {
        writer.write_slice_file(&render(self)?, offset)
    }
}

#[kunit_tests(virtio_console_rs_debugfs)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_c_format() {
        let mut out = KVec::new();
        let snap = Snapshot {
            name: b"org.qemu.guest_agent.0",
            guest_connected: true,
            host_connected: false,
            outvq_full: false,
            stats: Stats {
                bytes_sent: 5,
                bytes_received: 4096,
                bytes_discarded: 7,
            },
            vtermno: 0,
        };
        assert!(write(&snap, &mut out, GFP_KERNEL).is_ok());
        assert_eq!(
            &out[..],
            &b"name: org.qemu.guest_agent.0\nguest_connected: 1\nhost_connected: 0\n\
outvq_full: 0\nbytes_sent: 5\nbytes_received: 4096\nbytes_discarded: 7\n\
is_console: no\nconsole_vtermno: 0\n"[..]
        );
    }

    #[test]
    fn console_without_name() {
        let mut out = KVec::new();
        let snap = Snapshot {
            name: b"",
            guest_connected: true,
            host_connected: true,
            outvq_full: true,
            stats: Stats::default(),
            vtermno: 3,
        };
        assert!(write(&snap, &mut out, GFP_KERNEL).is_ok());
        assert_eq!(
            &out[..],
            &b"name: \nguest_connected: 1\nhost_connected: 1\noutvq_full: 1\nbytes_sent: 0\n\
bytes_received: 0\nbytes_discarded: 0\nis_console: yes\nconsole_vtermno: 3\n"[..]
        );
    }

    /// A name that is not UTF-8 comes out as the host's bytes, as `%s` prints them in C.
    #[test]
    fn a_name_that_is_not_utf8_is_printed_as_its_bytes() {
        let mut out = KVec::new();
        let snap = Snapshot {
            name: b"p\xff\xfe.\xc3",
            guest_connected: false,
            host_connected: false,
            outvq_full: false,
            stats: Stats::default(),
            vtermno: 0,
        };
        assert!(write(&snap, &mut out, GFP_KERNEL).is_ok());
        assert_eq!(
            &out[..],
            &b"name: p\xff\xfe.\xc3\nguest_connected: 0\nhost_connected: 0\noutvq_full: 0\n\
bytes_sent: 0\nbytes_received: 0\nbytes_discarded: 0\nis_console: no\nconsole_vtermno: 0\n"[..]
        );
    }
}
