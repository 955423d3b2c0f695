// SPDX-License-Identifier: GPL-2.0

//! The text of `/sys/kernel/debug/virtio-ports/vportNpM`: the nine `key: value` lines of the
//! C driver's `port_debugfs_show()`, in its order and format.

use crate::port::{Port, Stats};
use core::fmt::{self, Write};
use kernel::{prelude::*, sync::Arc};

/// A snapshot of what the file shows.
pub(crate) struct Snapshot<'a> {
    pub(crate) name: &'a [u8],
    pub(crate) guest_connected: bool,
    pub(crate) host_connected: bool,
    pub(crate) outvq_full: bool,
    pub(crate) stats: Stats,
    pub(crate) vtermno: u32,
}

/// Writes the nine lines.
pub(crate) fn write(s: &Snapshot<'_>, f: &mut dyn Write) -> fmt::Result {
    f.write_str("name: ")?;
    // Names are bytes from the host; UTF-8 ones (all real ones) come out as they are.
    match core::str::from_utf8(s.name) {
        Ok(name) => f.write_str(name)?,
        Err(_) => {
            for &b in s.name {
                f.write_char(if b.is_ascii() { b as char } else { '?' })?;
            }
        }
    }
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
}

/// The debugfs callback.
pub(crate) fn show(port: &Arc<Port>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let st = port.state.lock();
    let snap = Snapshot {
        name: st.name.as_ref().map_or(&[][..], |n| n.to_bytes()),
        guest_connected: st.guest_connected,
        host_connected: st.host_connected,
        outvq_full: st.outvq_full,
        stats: st.stats,
        vtermno: st.vtermno,
    };
    write(&snap, f)
}

#[kunit_tests(virtio_console_rs_debugfs)]
mod tests {
    use super::*;

    struct Buf(KVec<u8>);
    impl Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0
                .extend_from_slice(s.as_bytes(), GFP_KERNEL)
                .map_err(|_| fmt::Error)
        }
    }

    #[test]
    fn matches_the_c_format() {
        let mut out = Buf(KVec::new());
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
        assert!(write(&snap, &mut out).is_ok());
        assert_eq!(
            &out.0[..],
            &b"name: org.qemu.guest_agent.0\nguest_connected: 1\nhost_connected: 0\n\
outvq_full: 0\nbytes_sent: 5\nbytes_received: 4096\nbytes_discarded: 7\n\
is_console: no\nconsole_vtermno: 0\n"[..]
        );
    }

    #[test]
    fn console_without_name() {
        let mut out = Buf(KVec::new());
        let snap = Snapshot {
            name: b"",
            guest_connected: true,
            host_connected: true,
            outvq_full: true,
            stats: Stats::default(),
            vtermno: 3,
        };
        assert!(write(&snap, &mut out).is_ok());
        assert_eq!(
            &out.0[..],
            &b"name: \nguest_connected: 1\nhost_connected: 1\noutvq_full: 1\nbytes_sent: 0\n\
bytes_received: 0\nbytes_discarded: 0\nis_console: yes\nconsole_vtermno: 3\n"[..]
        );
    }
}
