// SPDX-License-Identifier: GPL-2.0

//! Waiting for and cancelling work items.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)
//!
//! Extends [`Work`] with `cancel_work_sync()` and `flush_work()`, which drivers need on
//! teardown to be sure no work item of theirs still runs (or runs module code after unload),
//! and gives the per-CPU system queue under its new name.

use crate::{
    bindings,
    workqueue::{Queue, Work},
};

/// Returns the per-CPU system work queue (`system_percpu_wq`).
///
/// It is the one `schedule_work()` uses, and what [`crate::workqueue::system`] (`system_wq`)
/// was before that name was deprecated: queueing on `system_wq` logs a warning once per boot.
///
/// # Examples
///
/// ```
/// use kernel::workqueue_sync::system_percpu;
///
/// system_percpu().try_spawn(GFP_KERNEL, || pr_info!("ran on system_percpu_wq\n"))?;
/// # Ok::<(), Error>(())
/// ```
pub fn system_percpu() -> &'static Queue {
    // SAFETY: `system_percpu_wq` is a C global, set up before any module or initcall that could
    // call this, and never freed.
    unsafe { Queue::from_raw(bindings::system_percpu_wq) }
}

impl<T: ?Sized, const ID: u64> Work<T, ID> {
    /// Cancels the work item if it is pending and waits for a running instance to finish.
    ///
    /// Returns whether it was pending. Called from the work item itself, it waits for itself
    /// forever. A cancelled item never runs, so the owner reference its
    /// [`crate::workqueue::WorkItem`] pointer took at enqueue time is never given back: the
    /// object leaks (memory stays valid, nothing dangles). Where that matters, use
    /// [`Work::flush`], which lets it run.
    pub fn cancel_sync(&self) -> bool {
        // SAFETY: `self` is a valid, initialised work item.
        unsafe { bindings::cancel_work_sync(Work::raw_get(self)) }
    }

    /// Waits for the work item to finish if it is queued or running.
    ///
    /// Returns whether it had to wait. Called from the work item itself, it waits for itself
    /// forever.
    pub fn flush(&self) -> bool {
        // SAFETY: `self` is a valid, initialised work item.
        unsafe { bindings::flush_work(Work::raw_get(self)) }
    }
}
