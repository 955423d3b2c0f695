// SPDX-License-Identifier: GPL-2.0

//! Rate limiting of messages about bad input from the host, so a hostile device cannot flood
//! the log: at most [`BURST`] messages per [`INTERVAL_MS`], then one line saying how many were
//! suppressed.

use kernel::{
    prelude::*,
    time::{Instant, Monotonic},
};

/// Length of a window in milliseconds (the kernel's `DEFAULT_RATELIMIT_INTERVAL`).
pub(crate) const INTERVAL_MS: i64 = 5000;
/// Messages allowed per window (`DEFAULT_RATELIMIT_BURST`).
pub(crate) const BURST: u32 = 10;

/// The pure state of a limiter.
#[derive(Default)]
pub(crate) struct Window {
    /// Milliseconds since the window began, when one has.
    pub(crate) started: bool,
    pub(crate) printed: u32,
    pub(crate) suppressed: u32,
}

/// What to do with one message.
#[derive(PartialEq, Eq, Debug)]
pub(crate) enum Verdict {
    /// Print it; if `suppressed > 0`, first say that many were dropped before it.
    Print { suppressed: u32 },
    /// Drop it.
    Suppress,
}

impl Window {
    /// Decides about one message, `elapsed_ms` after the window began (ignored if none has).
    /// Returns whether a new window begins now, and the verdict.
    pub(crate) fn decide(&mut self, elapsed_ms: i64) -> (bool, Verdict) {
        let mut restart = false;
        let mut suppressed = 0;
        if !self.started || elapsed_ms >= INTERVAL_MS {
            restart = true;
            suppressed = self.suppressed;
            *self = Window {
                started: true,
                printed: 0,
                suppressed: 0,
            };
        }
        if self.printed < BURST {
            self.printed += 1;
            (restart, Verdict::Print { suppressed })
        } else {
            self.suppressed += 1;
            (restart, Verdict::Suppress)
        }
    }
}

/// A limiter with a clock.
#[derive(Default)]
pub(crate) struct RateLimit {
    window: Window,
    start: Option<Instant<Monotonic>>,
}

impl RateLimit {
    /// Decides about one message now.
    pub(crate) fn check(&mut self) -> Verdict {
        let elapsed = self.start.map_or(0, |s| s.elapsed().as_millis());
        let (restart, verdict) = self.window.decide(elapsed);
        if restart {
            self.start = Some(Instant::now());
        }
        verdict
    }
}

#[kunit_tests(virtio_console_rs_ratelimit)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_suppress_then_report() {
        let mut w = Window::default();
        assert_eq!(w.decide(0), (true, Verdict::Print { suppressed: 0 }));
        for _ in 1..BURST {
            assert_eq!(w.decide(10), (false, Verdict::Print { suppressed: 0 }));
        }
        assert_eq!(w.decide(20), (false, Verdict::Suppress));
        assert_eq!(w.decide(30), (false, Verdict::Suppress));
        assert_eq!(
            w.decide(INTERVAL_MS),
            (true, Verdict::Print { suppressed: 2 })
        );
        assert_eq!(w.decide(1), (false, Verdict::Print { suppressed: 0 }));
    }
}
