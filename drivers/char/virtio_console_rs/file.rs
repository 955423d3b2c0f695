// SPDX-License-Identifier: GPL-2.0

//! The file operations of `/dev/vportNpM`.

use crate::{port::Port, tx_pool::reuse_or_alloc};
use kernel::{
    chrdev::{FasyncReply, FasyncRequest, FileOperations},
    fs::{file::flags::O_NONBLOCK, File},
    iov::{IovIterDest, IovIterSource},
    prelude::*,
    sync::{poll::PollTable, Arc, ArcBorrow},
    virtio::Buffer,
};

/// The char device of a port.
pub(crate) struct PortFile;

#[vtable]
impl FileOperations for PortFile {
    type OpenData = Port;
    type Ptr = Arc<Port>;
    // `splice(2)` from an empty pipe returns 0, as the C driver's does.
    const SPLICE_EMPTY_PIPE_ENDS: bool = true;

    fn open(port: &Arc<Port>, _file: &File) -> Result<Arc<Port>> {
        port.open()?;
        Ok(port.clone())
    }

    fn release(port: Arc<Port>, _file: &File) {
        port.release();
    }

    fn read(port: ArcBorrow<'_, Port>, file: &File, dest: &mut IovIterDest<'_>) -> Result<usize> {
        let nonblock = file.flags() & O_NONBLOCK != 0;
        let want = dest.len();
        port.read(nonblock, want, |data| dest.copy_to_iter(data))
    }

    fn write(port: ArcBorrow<'_, Port>, file: &File, src: &mut IovIterSource<'_>) -> Result<usize> {
        let nonblock = file.flags() & O_NONBLOCK != 0;
        port.write(src.len(), nonblock, |max, spare| {
            reuse_or_alloc(
                spare,
                max,
                src,
                |buf, src| buf.refill_from_iov(src, max).map(|_| ()),
                |src| Buffer::from_iov(src, max, GFP_KERNEL),
            )
        })
    }

    fn poll(port: ArcBorrow<'_, Port>, file: &File, table: &PollTable<'_>) -> u32 {
        table.register_wait(file, &port.waitq);
        port.poll_mask()
    }

    fn fasync(port: ArcBorrow<'_, Port>, request: FasyncRequest<'_>) -> FasyncReply {
        port.fasync.helper(request)
    }
}
