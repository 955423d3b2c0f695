// SPDX-License-Identifier: GPL-2.0

//! Waiting for and cancelling work items.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)
//!
//! Extends [`Work`] with `cancel_work_sync()` and `flush_work()`, which drivers need on
//! teardown to be sure no work item of theirs still runs (or runs module code after unload).

use crate::{bindings, workqueue::Work};

impl<T: ?Sized, const ID: u64> Work<T, ID> {
    /// Cancels the work item if it is pending and waits for a running instance to finish.
    ///
    /// Returns whether it was pending. Must not be called from the work item itself. Note that
    /// a cancelled item's owner reference taken at enqueue time is not released by the C side;
    /// use this only for work items whose [`crate::workqueue::WorkItem`] pointer type tolerates
    /// that (for example a pinned, owned object) or call [`Work::flush`] instead.
    pub fn cancel_sync(&self) -> bool {
        // SAFETY: `self` is a valid, initialised work item.
        unsafe { bindings::cancel_work_sync(Work::raw_get(self)) }
    }

    /// Waits for the work item to finish if it is queued or running.
    ///
    /// Returns whether it had to wait. Must not be called from the work item itself.
    pub fn flush(&self) -> bool {
        // SAFETY: `self` is a valid, initialised work item.
        unsafe { bindings::flush_work(Work::raw_get(self)) }
    }
}
