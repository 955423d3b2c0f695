// SPDX-License-Identifier: GPL-2.0

//! ID allocation with the kernel's IDA.
//!
//! C header: [`include/linux/idr.h`](srctree/include/linux/idr.h)
//!
//! An [`Ida`] hands out the lowest free integer in a range. Each allocation is an [`IdaId`]
//! that owns the id and frees it when dropped, so an id can neither leak nor be freed twice.
//!
//! # Examples
//!
//! ```
//! use kernel::{ida::Ida, sync::Arc};
//!
//! let ida = Arc::pin_init(Ida::new(), GFP_KERNEL)?;
//! let a = Ida::alloc_min(&ida, 1)?;
//! let b = Ida::alloc_min(&ida, 1)?;
//! assert_eq!((a.id(), b.id()), (1, 2));
//! drop(a);
//! // The lowest free id is reused.
//! let c = Ida::alloc_min(&ida, 1)?;
//! assert_eq!(c.id(), 1);
//! let d = Ida::alloc_range(&ida, 10, 10)?;
//! assert_eq!(d.id(), 10);
//! assert!(Ida::alloc_range(&ida, 10, 10).is_err());
//! # Ok::<(), Error>(())
//! ```

use crate::{bindings, prelude::*, sync::Arc, types::Opaque};

/// An ID allocator (`struct ida`). It locks internally, so it can be shared.
#[pin_data(PinnedDrop)]
pub struct Ida {
    #[pin]
    ida: Opaque<bindings::ida>,
}

// SAFETY: The IDA functions lock internally and may be called from any thread.
unsafe impl Send for Ida {}
// SAFETY: See above.
unsafe impl Sync for Ida {}

impl Ida {
    /// Creates an empty allocator.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `ida_init` initialises the memory it is given.
            ida <- Opaque::ffi_init(|p| unsafe { bindings::ida_init(p) }),
        })
    }

    /// Allocates the lowest free id in `min..=max` (`ida_alloc_range`).
    ///
    /// Fails with `ENOSPC` when the range is full.
    pub fn alloc_range(this: &Arc<Self>, min: u32, max: u32) -> Result<IdaId> {
        if min > max || max > i32::MAX as u32 {
            return Err(EINVAL);
        }
        // SAFETY: The IDA is initialised and pinned inside the `Arc`.
        let ret =
            unsafe { bindings::ida_alloc_range(this.ida.get(), min, max, GFP_KERNEL.as_raw()) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(IdaId {
            ida: this.clone(),
            id: ret as u32,
        })
    }

    /// Allocates the lowest free id that is at least `min` (`ida_alloc_min`).
    pub fn alloc_min(this: &Arc<Self>, min: u32) -> Result<IdaId> {
        Self::alloc_range(this, min, i32::MAX as u32)
    }
}

#[pinned_drop]
impl PinnedDrop for Ida {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: Every `IdaId` holds an `Arc` to us, so none is left; this frees the memory
        // the IDA allocated internally.
        unsafe { bindings::ida_destroy(self.ida.get()) };
    }
}

/// An allocated id, freed when dropped.
pub struct IdaId {
    ida: Arc<Ida>,
    id: u32,
}

impl IdaId {
    /// The id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl Drop for IdaId {
    fn drop(&mut self) {
        // SAFETY: `id` was allocated from `ida` and is freed only here.
        unsafe { bindings::ida_free(self.ida.ida.get(), self.id) };
    }
}

impl core::fmt::Debug for IdaId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IdaId({})", self.id)
    }
}
