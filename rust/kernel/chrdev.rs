// SPDX-License-Identifier: GPL-2.0

//! Character device regions and cdevs.
//!
//! C headers: [`include/linux/cdev.h`](srctree/include/linux/cdev.h) and
//! [`include/linux/fs.h`](srctree/include/linux/fs.h)
//!
//! A [`Region`] reserves a dynamically allocated major with a range of minors. A [`Cdev`] makes
//! one device number live with the file operations of a [`FileOperations`] implementation.
//!
//! # Lifetimes
//!
//! The `struct cdev` comes from `cdev_alloc()`, so it is reference counted by its kobject: an
//! open file keeps it alive after [`Cdev`] is dropped (`cdev_del()`), and the VFS frees it on the
//! last `fput()`. The file operations hold a reference to the owning module for as long as a
//! file is open, so the module cannot be unloaded under an open file. What a file reaches after
//! its device is gone is up to the `Ptr` that [`FileOperations::open`] returned; drivers keep
//! an `Arc` to an object that records the removal.

use crate::{
    bindings,
    error::{to_result, Result, VTABLE_DEFAULT_ERROR},
    fs::File,
    iov::{IovIterDest, IovIterSource},
    prelude::*,
    str::CStr,
    sync::{new_mutex, new_spinlock, poll::PollTable, Arc, ArcBorrow, Mutex, SetOnce, SpinLock},
    types::ForeignOwnable,
    ThisModule,
};
use core::{
    cell::UnsafeCell,
    marker::{PhantomData, PhantomPinned},
    ptr::NonNull,
};

/// A device number (`dev_t`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DevT(u32);

impl DevT {
    const MINOR_BITS: u32 = 20;
    const MINOR_MASK: u32 = (1 << Self::MINOR_BITS) - 1;

    /// Builds a device number (`MKDEV`).
    ///
    /// ```
    /// use kernel::chrdev::DevT;
    ///
    /// let d = DevT::new(240, 5);
    /// assert_eq!((d.major(), d.minor()), (240, 5));
    /// ```
    pub const fn new(major: u32, minor: u32) -> Self {
        Self((major << Self::MINOR_BITS) | (minor & Self::MINOR_MASK))
    }

    /// Wraps a raw `dev_t`.
    pub const fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw `dev_t`.
    pub const fn as_raw(self) -> u32 {
        self.0
    }

    /// The major number (`MAJOR`).
    pub const fn major(self) -> u32 {
        self.0 >> Self::MINOR_BITS
    }

    /// The minor number (`MINOR`).
    pub const fn minor(self) -> u32 {
        self.0 & Self::MINOR_MASK
    }
}

/// A range of device numbers with a dynamically allocated major, released on drop.
///
/// # Invariants
///
/// `base..base + count` was allocated by `alloc_chrdev_region()` and is still held.
pub struct Region {
    base: DevT,
    count: u32,
}

impl Region {
    /// Allocates `count` minors starting at 0 under a new major, listed as `name` in
    /// `/proc/devices`.
    pub fn new(name: &'static CStr, count: u32) -> Result<Self> {
        let mut dev: bindings::dev_t = 0;
        // SAFETY: `dev` is writable and `name` is static.
        to_result(unsafe {
            bindings::alloc_chrdev_region(&mut dev, 0, count, name.as_char_ptr())
        })?;
        Ok(Self {
            base: DevT(dev),
            count,
        })
    }

    /// The major number.
    pub fn major(&self) -> u32 {
        self.base.major()
    }

    /// The device number of `minor`, if it is in the region.
    pub fn devt(&self, minor: u32) -> Option<DevT> {
        (minor < self.count).then(|| DevT::new(self.base.major(), self.base.minor() + minor))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the range is held by us.
        unsafe { bindings::unregister_chrdev_region(self.base.0, self.count) };
    }
}

/// The file operations of a character device.
///
/// Each [`Cdev`] carries an `Arc<OpenData>`; `open` turns it into the driver's per-file object
/// `Ptr`, which the other methods borrow.
#[vtable]
pub trait FileOperations: Sized + 'static {
    /// What a [`Cdev`] hands to `open`.
    type OpenData: Send + Sync + 'static;

    /// Whether `splice(2)` from an empty pipe to the file returns 0 at once (end of input), even
    /// while the pipe still has writers, instead of waiting for data (or failing with `EAGAIN`
    /// under `SPLICE_F_NONBLOCK`) as `iter_file_splice_write()` does. Drivers that replace a C
    /// driver with that behaviour (the virtio console's `port_fops_splice_write`) set it.
    const SPLICE_EMPTY_PIPE_ENDS: bool = false;

    /// The per-file object stored in `file->private_data`.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Opens a file on the cdev that carries `data`. The file is non-seekable
    /// (`stream_open`).
    fn open(data: &Arc<Self::OpenData>, file: &File) -> Result<Self::Ptr>;

    /// The last reference to the file went away.
    fn release(this: Self::Ptr, file: &File) {
        let _ = file;
        drop(this);
    }

    /// `read(2)`: copy at most `dest.len()` bytes into `dest`.
    fn read(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _dest: &mut IovIterDest<'_>,
    ) -> Result<usize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `write(2)`: consume up to `src.len()` bytes of `src`. Also serves `splice(2)` to the
    /// file, through `iter_file_splice_write()`.
    fn write(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _src: &mut IovIterSource<'_>,
    ) -> Result<usize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `poll(2)`: register on the wait queues in `table` and return the ready `POLL*` mask.
    fn poll(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _table: &PollTable<'_>,
    ) -> u32 {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// `fcntl(F_SETFL, FASYNC)` and its undoing when the file is released: hand `request` to
    /// the [`FasyncQueue`] the file's signals come from, and return its reply.
    fn fasync(
        _this: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _request: FasyncRequest<'_>,
    ) -> FasyncReply {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
}

/// One live cdev and the open data of its [`Cdev`] (an `Arc<T::OpenData>` turned into a raw
/// pointer).
struct OpenEntry {
    cdev: usize,
    data: usize,
}

/// Open data by cdev, created on first use and never freed (it lives in vmlinux).
///
/// The key is the `struct cdev` pointer, not the device number: a file being opened names its
/// cdev in `inode->i_cdev`, which stays allocated while the inode refers to it, so a cdev that
/// was replaced by another on the same number can never be confused with it.
static OPEN_DATA: SetOnce<Pin<KBox<Mutex<KVec<OpenEntry>>>>> = SetOnce::new();

fn open_data() -> Result<&'static Mutex<KVec<OpenEntry>>> {
    if let Some(t) = OPEN_DATA.as_ref() {
        return Ok(t);
    }
    let t = KBox::pin_init(new_mutex!(KVec::new()), GFP_KERNEL)?;
    // Whoever wins the race populates it; the loser's box is dropped. A loser can see the
    // winner's store still in progress (a few instructions, which never sleep): wait for it
    // rather than fail.
    OPEN_DATA.populate(t);
    loop {
        if let Some(t) = OPEN_DATA.as_ref() {
            return Ok(t);
        }
        core::hint::spin_loop();
    }
}

/// A live character device, removed on drop.
///
/// # Invariants
///
/// `cdev` was returned by `cdev_alloc()` and added with `cdev_add()`; we hold the reference
/// `cdev_alloc()` gave. The open-data table maps `cdev` to the `Arc<T::OpenData>` in `data`.
pub struct Cdev<T: FileOperations> {
    cdev: NonNull<bindings::cdev>,
    data: Arc<T::OpenData>,
}

// SAFETY: The cdev functions may be called from any thread.
unsafe impl<T: FileOperations> Send for Cdev<T> {}
// SAFETY: `&Cdev` exposes nothing.
unsafe impl<T: FileOperations> Sync for Cdev<T> {}

impl<T: FileOperations> Cdev<T> {
    /// Makes `devt` live with `T`'s file operations; opens get `data`.
    pub fn new(devt: DevT, data: Arc<T::OpenData>, module: &'static ThisModule) -> Result<Self> {
        let table = open_data()?;
        // SAFETY: No preconditions.
        let cdev = NonNull::new(unsafe { bindings::cdev_alloc() }).ok_or(ENOMEM)?;
        // Publish the open data before the cdev goes live; reserve and push under one lock
        // hold, so the push cannot fail for want of room.
        let published = {
            let mut entries = table.lock();
            entries.reserve(1, GFP_KERNEL).map(|()| {
                let _ = entries.push_within_capacity(OpenEntry {
                    cdev: cdev.as_ptr() as usize,
                    data: Arc::as_ptr(&data) as usize,
                });
            })
        };
        if let Err(e) = published {
            // SAFETY: A cdev that was never added is released by dropping its kobject.
            unsafe { bindings::kobject_put(&raw mut (*cdev.as_ptr()).kobj) };
            return Err(e.into());
        }
        // SAFETY: `cdev` was just allocated and is not live yet.
        unsafe {
            (*cdev.as_ptr()).ops = &FopsVTable::<T>::VTABLE;
            (*cdev.as_ptr()).owner = module.as_ptr();
        }
        // SAFETY: `cdev` is initialised.
        let ret = unsafe { bindings::cdev_add(cdev.as_ptr(), devt.0, 1) };
        if ret != 0 {
            Self::forget(cdev);
            // SAFETY: A cdev that was never added is released by dropping its kobject.
            unsafe { bindings::kobject_put(&raw mut (*cdev.as_ptr()).kobj) };
            return Err(Error::from_errno(ret));
        }
        Ok(Self { cdev, data })
    }

    fn forget(cdev: NonNull<bindings::cdev>) {
        if let Ok(table) = open_data() {
            table.lock().retain(|e| e.cdev != cdev.as_ptr() as usize);
        }
    }

    /// The open data.
    pub fn data(&self) -> &Arc<T::OpenData> {
        &self.data
    }
}

impl<T: FileOperations> Drop for Cdev<T> {
    fn drop(&mut self) {
        // Forget the open data first: `cdev_del` may free the cdev, and a new cdev at the same
        // address must not find our entry. Opens in progress hold the table lock while they
        // take their own reference; later opens of this cdev fail with `ENXIO`.
        Self::forget(self.cdev);
        // SAFETY: By the type invariant; `cdev_del` drops our reference, open files keep theirs.
        unsafe { bindings::cdev_del(self.cdev.as_ptr()) };
    }
}

struct FopsVTable<T>(PhantomData<T>);

impl<T: FileOperations> FopsVTable<T> {
    const VTABLE: bindings::file_operations = bindings::file_operations {
        open: Some(Self::open),
        release: Some(Self::release),
        // Plain `read`/`write` as well: `read(2)`/`write(2)` then skip building a kiocb per call
        // (`new_sync_read`/`new_sync_write`); vectored and spliced I/O use the `_iter` ones.
        read: if T::HAS_READ {
            Some(Self::read_plain)
        } else {
            None
        },
        write: if T::HAS_WRITE {
            Some(Self::write_plain)
        } else {
            None
        },
        read_iter: if T::HAS_READ {
            Some(Self::read_iter)
        } else {
            None
        },
        write_iter: if T::HAS_WRITE {
            Some(Self::write_iter)
        } else {
            None
        },
        splice_write: if !T::HAS_WRITE {
            None
        } else if T::SPLICE_EMPTY_PIPE_ENDS {
            Some(Self::splice_write_empty_ends)
        } else {
            Some(bindings::iter_file_splice_write)
        },
        poll: if T::HAS_POLL { Some(Self::poll) } else { None },
        fasync: if T::HAS_FASYNC {
            Some(Self::fasync)
        } else {
            None
        },
        owner: crate::module::this_module::<T::OwnerModule>().as_ptr(),
        ..pin_init::zeroed()
    };

    /// `splice_write` for [`FileOperations::SPLICE_EMPTY_PIPE_ENDS`]: 0 for an empty pipe,
    /// otherwise `iter_file_splice_write()`.
    ///
    /// # Safety
    ///
    /// Called by the VFS (`do_splice_from`) with the arguments of a `splice_write` call on a file
    /// of ours.
    unsafe extern "C" fn splice_write_empty_ends(
        pipe: *mut bindings::pipe_inode_info,
        file: *mut bindings::file,
        ppos: *mut bindings::loff_t,
        len: usize,
        flags: c_uint,
    ) -> isize {
        // SAFETY: The VFS holds a reference to `pipe` for the whole call; `pipe_lock` takes its
        // mutex, which `pipe_is_empty` needs for a stable answer, and `pipe_unlock` drops it.
        let empty = unsafe {
            bindings::pipe_lock(pipe);
            let empty = bindings::pipe_is_empty(pipe);
            bindings::pipe_unlock(pipe);
            empty
        };
        if empty {
            return 0;
        }
        // SAFETY: The VFS's own arguments, passed on unchanged to the generic implementation
        // that `splice_write` would otherwise point at.
        unsafe { bindings::iter_file_splice_write(pipe, file, ppos, len, flags) }
    }

    /// # Safety
    ///
    /// Called by the VFS for a file being opened on one of our cdevs.
    unsafe extern "C" fn open(inode: *mut bindings::inode, raw: *mut bindings::file) -> c_int {
        // SAFETY: Valid inode and file being opened; `i_cdev` was set by `chrdev_open`.
        let cdev = unsafe { (*inode).__bindgen_anon_5.i_cdev } as usize;
        let data = {
            let Ok(table) = open_data() else {
                return ENXIO.to_errno();
            };
            let entries = table.lock();
            let Some(e) = entries.iter().find(|e| e.cdev == cdev) else {
                return ENXIO.to_errno();
            };
            // SAFETY: The entry exists, so the `Cdev<T>` that published it is alive and holds
            // the `Arc` (only `Cdev<T>` creates entries for cdevs with `T`'s operations, and this
            // inode's cdev has them). We hold the table lock, so it cannot go away meanwhile.
            unsafe { ArcBorrow::<T::OpenData>::from_raw(e.data as *const T::OpenData) }.into()
        };
        let data: Arc<T::OpenData> = data;
        // SAFETY: Valid inode and file being opened.
        let ret = unsafe { bindings::stream_open(inode, raw) };
        if ret != 0 {
            return ret;
        }
        // SAFETY: The file is valid for the duration of `open`; no fdget_pos region is active.
        let file = unsafe { File::from_raw_file(raw) };
        match T::open(&data, file) {
            Ok(ptr) => {
                // SAFETY: The open call owns `private_data`.
                unsafe { (*raw).private_data = ptr.into_foreign() };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    ///
    /// Called by the VFS for the last reference of a file opened by `open`.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, raw: *mut bindings::file) -> c_int {
        if T::HAS_FASYNC {
            // SAFETY: The file is in its `release` operation.
            unsafe { FasyncQueue::release_file(raw) };
        }
        // SAFETY: `private_data` was set by `open` and release owns it.
        let ptr = unsafe { T::Ptr::from_foreign((*raw).private_data) };
        // SAFETY: The file is valid for the duration of the call.
        T::release(ptr, unsafe { File::from_raw_file(raw) });
        0
    }

    /// # Safety
    ///
    /// `file` must be a file opened by `open`.
    unsafe fn borrow<'a>(
        file: *mut bindings::file,
    ) -> (<T::Ptr as ForeignOwnable>::Borrowed<'a>, &'a File) {
        // SAFETY: `private_data` holds a `T::Ptr` until `release`, which cannot run during
        // another file operation.
        let this = unsafe { T::Ptr::borrow((*file).private_data) };
        // SAFETY: The file is valid during the file operation.
        (this, unsafe { File::from_raw_file(file) })
    }

    /// Reads from one of our files into `iter`.
    ///
    /// # Safety
    ///
    /// `raw` must be a file opened by `open` and `iter` a valid destination iterator, both for
    /// the duration of the call.
    unsafe fn read_into(raw: *mut bindings::file, iter: *mut bindings::iov_iter) -> isize {
        // SAFETY: The caller guarantees both pointers.
        let ((this, file), dest) = unsafe { (Self::borrow(raw), IovIterDest::from_raw(iter)) };
        match T::read(this, file, dest) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    /// Writes `iter` to one of our files.
    ///
    /// # Safety
    ///
    /// `raw` must be a file opened by `open` and `iter` a valid source iterator, both for the
    /// duration of the call.
    unsafe fn write_from(raw: *mut bindings::file, iter: *mut bindings::iov_iter) -> isize {
        // SAFETY: The caller guarantees both pointers.
        let ((this, file), src) = unsafe { (Self::borrow(raw), IovIterSource::from_raw(iter)) };
        match T::write(this, file, src) {
            Ok(n) => n as isize,
            Err(e) => e.to_errno() as isize,
        }
    }

    extern "C" fn read_iter(kiocb: *mut bindings::kiocb, iter: *mut bindings::iov_iter) -> isize {
        // SAFETY: The VFS passes a valid kiocb of one of our files and a destination iterator.
        unsafe { Self::read_into((*kiocb).ki_filp, iter) }
    }

    extern "C" fn write_iter(kiocb: *mut bindings::kiocb, iter: *mut bindings::iov_iter) -> isize {
        // SAFETY: The VFS passes a valid kiocb of one of our files and a source iterator.
        unsafe { Self::write_from((*kiocb).ki_filp, iter) }
    }

    extern "C" fn read_plain(
        raw: *mut bindings::file,
        buf: *mut c_char,
        len: usize,
        _pos: *mut bindings::loff_t,
    ) -> isize {
        let mut iter = core::mem::MaybeUninit::<bindings::iov_iter>::uninit();
        // SAFETY: `iov_iter_ubuf` initialises every field of `iter` to describe the user
        // buffer `buf` of `len` bytes; the VFS checked the range with `access_ok`.
        unsafe { bindings::iov_iter_ubuf(iter.as_mut_ptr(), bindings::ITER_DEST, buf.cast(), len) };
        // SAFETY: `raw` is one of our files; `iter` is initialised and lives through the call.
        unsafe { Self::read_into(raw, iter.as_mut_ptr()) }
    }

    extern "C" fn write_plain(
        raw: *mut bindings::file,
        buf: *const c_char,
        len: usize,
        _pos: *mut bindings::loff_t,
    ) -> isize {
        let mut iter = core::mem::MaybeUninit::<bindings::iov_iter>::uninit();
        // SAFETY: `iov_iter_ubuf` initialises every field of `iter` to describe the user
        // buffer `buf` of `len` bytes; the VFS checked the range with `access_ok`. The
        // iterator only reads from it.
        unsafe {
            bindings::iov_iter_ubuf(
                iter.as_mut_ptr(),
                bindings::ITER_SOURCE,
                buf.cast_mut().cast(),
                len,
            )
        };
        // SAFETY: `raw` is one of our files; `iter` is initialised and lives through the call.
        unsafe { Self::write_from(raw, iter.as_mut_ptr()) }
    }

    extern "C" fn poll(
        raw: *mut bindings::file,
        table: *mut bindings::poll_table_struct,
    ) -> bindings::__poll_t {
        // SAFETY: One of our files.
        let (this, file) = unsafe { Self::borrow(raw) };
        // SAFETY: A valid (possibly null) poll table for the duration of the call.
        let table = unsafe { PollTable::from_raw(table) };
        T::poll(this, file, &table)
    }

    extern "C" fn fasync(fd: c_int, raw: *mut bindings::file, on: c_int) -> c_int {
        // SAFETY: One of our files.
        let (this, file) = unsafe { Self::borrow(raw) };
        // INVARIANT: The VFS asks on behalf of one of our files, whose operations have this
        // `fasync` (so the VFS calls it again with `on == 0` before the file is freed), and
        // the request carries the VFS's own `on`.
        let request = FasyncRequest {
            fd,
            file,
            on: on != 0,
        };
        T::fasync(this, request).0
    }
}

/// A list of files that asked for `SIGIO` (`struct fasync_struct *`).
///
/// A file on the list must come off it before it is freed, or [`FasyncQueue::kill`] signals a
/// freed file. The VFS asks for that with a last `fasync(off)` on release, but only to whichever
/// queue the driver routes that call to; so this module also records each (file, queue) pair
/// that [`FasyncQueue::helper`] adds, and takes the file off every queue it is still on when the
/// file is released, whatever the driver did.
///
/// # Invariants
///
/// `head` is only changed by `fasync_helper()` and read by `kill_fasync()`, which synchronise
/// internally (a spinlock and RCU). The queue is pinned; while a file is on it, the link table
/// has an entry for the pair (see [`FasyncQueue::helper`]).
#[pin_data(PinnedDrop)]
pub struct FasyncQueue {
    head: UnsafeCell<*mut bindings::fasync_struct>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: See the type invariant.
unsafe impl Send for FasyncQueue {}
// SAFETY: See the type invariant.
unsafe impl Sync for FasyncQueue {}

/// One file added to one queue, until the file is released or the queue is dropped.
struct FasyncLink {
    file: usize,
    queue: usize,
}

/// Every (file, queue) pair [`FasyncQueue::helper`] added; created on first use, never freed.
static FASYNC_LINKS: SetOnce<Pin<KBox<SpinLock<KVec<FasyncLink>>>>> = SetOnce::new();

fn fasync_links() -> Result<&'static SpinLock<KVec<FasyncLink>>> {
    if let Some(t) = FASYNC_LINKS.as_ref() {
        return Ok(t);
    }
    let t = KBox::pin_init(new_spinlock!(KVec::new()), GFP_KERNEL)?;
    // As in `open_data`: the loser of a race waits for the winner's store.
    FASYNC_LINKS.populate(t);
    loop {
        if let Some(t) = FASYNC_LINKS.as_ref() {
            return Ok(t);
        }
        core::hint::spin_loop();
    }
}

impl FasyncQueue {
    /// An empty queue.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            head: UnsafeCell::new(core::ptr::null_mut()),
            _pin: PhantomPinned,
        })
    }

    /// Adds or removes the file of `request` (`fasync_helper`), as the VFS asked.
    ///
    /// The reply goes back to the VFS unchanged.
    pub fn helper(&self, request: FasyncRequest<'_>) -> FasyncReply {
        let file = request.file.as_ptr();
        // SAFETY: `file` is valid for the call; `head` is only used through the fasync
        // functions.
        let ret = unsafe {
            bindings::fasync_helper(request.fd, file, c_int::from(request.on), self.head.get())
        };
        // Removal leaves the link: a link whose file is off the queue is harmless, and
        // dropping it here could race with a concurrent add of the same file.
        if !request.on || ret < 0 {
            return FasyncReply(ret);
        }
        // INVARIANT: The file is on the queue (it was added or already there): make sure the
        // pair is linked before the VFS can release the file, which it cannot do while this
        // `fasync` call runs. If that fails, take the file off again.
        let linked = fasync_links().and_then(|links| {
            let mut links = links.lock();
            let me = core::ptr::from_ref(self) as usize;
            if links
                .iter()
                .any(|l| l.file == file as usize && l.queue == me)
            {
                return Ok(());
            }
            links.push(
                FasyncLink {
                    file: file as usize,
                    queue: me,
                },
                GFP_ATOMIC,
            )?;
            Ok(())
        });
        match linked {
            Ok(()) => FasyncReply(ret),
            Err(e) => {
                // SAFETY: As above.
                unsafe { bindings::fasync_helper(request.fd, file, 0, self.head.get()) };
                FasyncReply(e.to_errno())
            }
        }
    }

    /// Takes a file being released off every queue it is still on.
    ///
    /// # Safety
    ///
    /// `file` is a valid file in its `release` operation (it is freed after).
    unsafe fn release_file(file: *mut bindings::file) {
        let Some(links) = FASYNC_LINKS.as_ref() else {
            return;
        };
        links.lock().retain(|l| {
            if l.file != file as usize {
                return true;
            }
            // SAFETY: The link exists, so its queue has not been dropped (its drop removes its
            // links under this lock first) and, being pinned, has not moved. `file` is valid
            // by the caller's guarantee.
            unsafe {
                let queue = &*(l.queue as *const FasyncQueue);
                bindings::fasync_helper(-1, file, 0, queue.head.get());
            }
            false
        });
    }

    /// Sends `SIGIO` with poll band `band` (a `POLL_*` code) to every registered file
    /// (`kill_fasync`). Safe in any context.
    pub fn kill(&self, band: i32) {
        // SAFETY: See the type invariant.
        unsafe { bindings::kill_fasync(self.head.get(), bindings::SIGIO as c_int, band) };
    }
}

#[pinned_drop]
impl PinnedDrop for FasyncQueue {
    fn drop(self: Pin<&mut Self>) {
        // Nobody can signal through a dropped queue, so files still on it are harmless; forget
        // the links, so their release does not reach the queue. Their list entries are left
        // for the RCU-freed slab they came from to keep (a queue outlived by its files leaks
        // them).
        if let Some(links) = FASYNC_LINKS.as_ref() {
            let me = core::ptr::from_ref::<Self>(&*self) as usize;
            links.lock().retain(|l| l.queue != me);
        }
    }
}

/// A `fasync` call of the VFS on a file of a [`Cdev`], for [`FasyncQueue::helper`].
///
/// # Invariants
///
/// Only the `fasync` operation of a [`Cdev`] makes one, for one of the cdev's own files and with
/// the `on` the VFS passed. Such a file's `release` operation is this module's, which takes the
/// file off every queue [`FasyncQueue::helper`] put it on.
pub struct FasyncRequest<'a> {
    fd: c_int,
    file: &'a File,
    on: bool,
}

impl FasyncRequest<'_> {
    /// The file.
    pub fn file(&self) -> &File {
        self.file
    }

    /// Whether the file asks to be added (`true`) or removed.
    pub fn on(&self) -> bool {
        self.on
    }
}

/// What [`FasyncQueue::helper`] did, handed back to the VFS by [`FileOperations::fasync`]:
/// a count or a negative error code.
pub struct FasyncReply(c_int);

impl FasyncReply {
    /// The error, if the request failed.
    pub fn error(&self) -> Option<Error> {
        (self.0 < 0).then(|| Error::from_errno(self.0))
    }
}

/// Poll band codes for [`FasyncQueue::kill`].
pub mod band {
    /// Output possible (`POLL_OUT`).
    pub const POLL_OUT: i32 = crate::bindings::POLL_OUT as i32;
    /// Input available (`POLL_IN`).
    pub const POLL_IN: i32 = crate::bindings::POLL_IN as i32;
}

/// Event bits for the mask [`FileOperations::poll`] returns.
pub mod poll_mask {
    /// Data to read (`POLLIN`).
    pub const IN: u32 = crate::bindings::POLLIN;
    /// Normal data to read (`POLLRDNORM`).
    pub const RDNORM: u32 = crate::bindings::POLLRDNORM;
    /// Writing will not block (`POLLOUT`).
    pub const OUT: u32 = crate::bindings::POLLOUT;
    /// The other end hung up (`POLLHUP`).
    pub const HUP: u32 = crate::bindings::POLLHUP;
}
