//! A minimal writer for the `newc` cpio format the kernel unpacks as its initramfs.

/// An archive being built in memory.
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, body: &[u8]) {
        self.ino += 1;
        let name_len = name.len() + 1;
        let hdr =
            format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino, mode, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, name_len, 0
        );
        self.data.extend_from_slice(hdr.as_bytes());
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad();
        self.data.extend_from_slice(body);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.data.len().is_multiple_of(4) {
            self.data.push(0);
        }
    }

    /// Adds a directory.
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[]);
    }

    /// Adds a regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, body: &[u8]) {
        self.entry(name, 0o100000 | perm, body);
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes());
    }

    /// Finishes the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        while !self.data.len().is_multiple_of(512) {
            self.data.push(0);
        }
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let mut c = Cpio::default();
        c.file("init", 0o755, b"#!/bin/sh\n");
        let d = c.finish();
        assert_eq!(&d[..6], b"070701");
        // name "init" follows the 110-byte header, then padding to 4.
        assert_eq!(&d[110..114], b"init");
        assert_eq!(d.len() % 512, 0);
    }
}
