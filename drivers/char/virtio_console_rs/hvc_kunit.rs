// SPDX-License-Identifier: GPL-2.0

//! KUnit suite for the lifetime rules of [`kernel::hvc`]: a backend stays alive for as long as
//! a callback of the hvc core runs it, even across the drop of its registration.
//!
//! The hvc core keeps calling a terminal whose tty is still open after `hvc_remove()`. The case
//! plays such a call: it holds a `put_chars` inside the backend, drops the registration on
//! another thread, and checks that the drop does not return before the call has.

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    hvc,
    prelude::*,
    sync::{Arc, Completion},
    time::{delay::fsleep, Delta},
};

use crate::kunit_spawn::spawn;

/// A vtermno no real terminal uses.
const VTERMNO: u32 = 0x7ff0_0001;

/// A backend whose first armed `put_chars` waits inside until the case lets it go.
#[pin_data]
struct HeldBackend {
    /// The next `put_chars` holds.
    armed: AtomicBool,
    /// Set while the held call runs, cleared when it returns.
    running: AtomicBool,
    /// Completed when the held call has entered the backend.
    #[pin]
    entered: Completion,
    /// Completed by the case to let the held call return.
    #[pin]
    release: Completion,
    /// Completed when the registration's drop has returned.
    #[pin]
    dropped: Completion,
    /// Completed when the held call has returned to the caller.
    #[pin]
    returned: Completion,
    /// Whether the backend was running a call when the registration's drop returned.
    dropped_while_running: AtomicBool,
}

impl hvc::Operations for HeldBackend {
    fn get_chars(&self, _buf: &mut [u8]) -> Result<usize> {
        Ok(0)
    }

    fn put_chars(&self, buf: &[u8]) -> Result<usize> {
        // Only the case's own call holds; anything else (a console print, say) passes.
        if self.armed.swap(false, Ordering::AcqRel) {
            self.running.store(true, Ordering::Release);
            self.entered.complete_all();
            // Called from a work item here, not from the hvc core, so it may sleep.
            self.release.wait_for_completion();
            self.running.store(false, Ordering::Release);
        }
        Ok(buf.len())
    }
}

/// A [`HeldBackend`] whose first `put_chars` holds the callback if `armed`.
fn held_backend(armed: bool) -> Result<Arc<HeldBackend>> {
    Arc::pin_init(
        pin_init!(HeldBackend {
            armed: AtomicBool::new(armed),
            running: AtomicBool::new(false),
            entered <- Completion::new(),
            release <- Completion::new(),
            dropped <- Completion::new(),
            returned <- Completion::new(),
            dropped_while_running: AtomicBool::new(false),
        }),
        GFP_KERNEL,
    )
}

#[kunit_tests(virtio_console_rs_hvc)]
mod tests {
    use super::*;

    /// Arguments the hvc core cannot take are refused before it sees them: an empty or
    /// oversized output buffer, and the vtermno the core uses to mark a free console slot.
    #[test]
    fn refuses_what_the_core_cannot_take() -> Result {
        let backend = held_backend(false)?;
        let empty = hvc::Registration::new(VTERMNO, backend.clone(), 0, false).err();
        let huge = hvc::Registration::new(VTERMNO, backend.clone(), 1 << 31, false).err();
        let free_mark = hvc::Registration::new(u32::MAX, backend.clone(), 16, false).err();
        assert_eq!(empty, Some(EINVAL));
        assert_eq!(huge, Some(EINVAL));
        assert_eq!(free_mark, Some(EINVAL));
        // Nothing of the refused calls is left: the vtermno is free.
        let reg = hvc::Registration::new(VTERMNO, backend, 16, false);
        assert!(reg.is_ok());
        Ok(())
    }

    /// `Registration::drop` returns only after a callback running its backend has returned.
    #[test]
    fn drop_waits_for_a_running_callback() -> Result {
        let backend = held_backend(true)?;
        // The case keeps its own reference, so even a wrong drop frees nothing under the call.
        let reg = hvc::Registration::new(VTERMNO, backend.clone(), 16, false)?;
        let caller = backend.clone();
        spawn(move || {
            let _ = hvc::testing::put_chars(VTERMNO, b"held");
            caller.returned.complete_all();
        })?;
        backend.entered.wait_for_completion();
        let dropper = backend.clone();
        spawn(move || {
            drop(reg);
            let running = dropper.running.load(Ordering::Acquire);
            dropper
                .dropped_while_running
                .store(running, Ordering::Release);
            dropper.dropped.complete_all();
        })?;
        // Give a wrong drop the time to return under the held call (a right one never does
        // before `release`); the verdict does not depend on this time, only the chance to see
        // a wrong drop does.
        for _ in 0..200 {
            if backend.dropped_while_running.load(Ordering::Acquire) {
                break;
            }
            fsleep(Delta::from_millis(10));
        }
        backend.release.complete_all();
        backend.returned.wait_for_completion();
        backend.dropped.wait_for_completion();
        assert!(!backend.dropped_while_running.load(Ordering::Acquire));
        // The terminal is gone: the core's next call gets `-EPIPE` and reaches no backend.
        assert_eq!(
            hvc::testing::put_chars(VTERMNO, b"late"),
            EPIPE.to_errno() as isize
        );
        Ok(())
    }

    /// Opening the tty of a terminal whose registration is gone fails with `EINVAL` (the hvc
    /// core then fails the open), as with the C driver's `notifier_add_vio`; a live terminal
    /// opens.
    #[test]
    fn opening_a_removed_terminal_fails() -> Result {
        let backend = held_backend(false)?;
        let reg = hvc::Registration::new(VTERMNO, backend, 16, false)?;
        assert_eq!(hvc::testing::notifier_add(VTERMNO), 0);
        drop(reg);
        assert_eq!(hvc::testing::notifier_add(VTERMNO), EINVAL.to_errno());
        Ok(())
    }
}
