// SPDX-License-Identifier: GPL-2.0

//! A second thread for KUnit cases: a closure run once on the system work queue.
//!
//! Not `Queue::try_spawn`: its work item's lock class is a static of the kernel crate, and the
//! copy instantiated in this module has the same name at another address, which lockdep
//! reports as a bug. Here the class belongs to this module.

use kernel::{
    impl_has_work, new_work,
    prelude::*,
    sync::{Arc, SpinLock},
    workqueue::{system_percpu, Work, WorkItem},
};

/// What [`spawn`] runs.
pub(crate) trait Task: FnOnce() + Send + Unpin + 'static {}

impl<F: FnOnce() + Send + Unpin + 'static> Task for F {}

#[pin_data]
struct Job<F: Task> {
    #[pin]
    work: Work<Job<F>>,
    /// Taken by the work item when it runs. Process context.
    #[pin]
    f: SpinLock<Option<F>>,
}

impl_has_work! {
    impl{F: Task} HasWork<Self> for Job<F> { self.work }
}

impl<F: Task> WorkItem for Job<F> {
    type Pointer = Arc<Job<F>>;

    fn run(this: Arc<Self>) {
        let f = this.f.lock().take();
        if let Some(f) = f {
            f();
        }
    }
}

/// Runs `f` once on the system work queue.
pub(crate) fn spawn<F: Task>(f: F) -> Result {
    let job = Arc::pin_init(
        pin_init!(Job {
            work <- new_work!("virtio_console_rs::kunit_spawn::Job::work"),
            f <- kernel::new_spinlock!(Some(f)),
        }),
        GFP_KERNEL,
    )?;
    system_percpu().enqueue(job).map_err(|_| EBUSY)
}
