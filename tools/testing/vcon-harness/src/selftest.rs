//! Checks of the harness itself: a failure the harness must not let pass.

use crate::scenarios::{Driver, Scenario};
use crate::vm::{Res, SYSRQ_CRASH};
use std::path::Path;

/// The name the check is reported under.
pub const LATE_PANIC: &str = "harness_selftest_late_panic";

/// How `run_scenario` reports a guest that crashed or hung after its host side passed.
pub const NOT_FINISHED: &str = "the host side passed but the guest did not finish";

/// A scenario whose host side gets every answer it asks for, but whose guest crashes right
/// after its last answer, before its end marker. No driver is loaded: the harness is tested.
pub fn late_panic() -> Scenario {
    Scenario {
        name: LATE_PANIC,
        about: "harness self-test: a guest that panics after its last answer must fail its test",
        qemu: vec![],
        guest: "echo '@@ answer 42'\nsleep 0.2\necho c > /proc/sysrq-trigger\nsleep 60\n",
        host: |vm, _| {
            let a = vm.result("answer")?;
            if a != "42" {
                return Err(format!("answer {a:?}, want \"42\""));
            }
            Ok(vec![])
        },
        rust_only: true,
        differential: false,
        timeout: 120,
    }
}

/// What the harness's own check concludes from `run_scenario`'s verdict on [`late_panic`] and
/// the log it kept at `log`: it passes only if the run failed because the guest did not finish
/// (not for another reason, such as a boot that never came up) and the log shows the crash.
pub fn judge(verdict: &Res<Vec<String>>, log: &Path) -> Res<()> {
    let e = match verdict {
        Ok(_) => {
            return Err("run_scenario passed a guest that panicked after its last answer".into())
        }
        Err(e) => e,
    };
    if !e.starts_with(NOT_FINISHED) {
        return Err(format!(
            "the run failed, but not because the guest did not finish: {e}"
        ));
    }
    let kept = std::fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    for want in ["@@ answer 42", SYSRQ_CRASH] {
        if !kept.contains(want) {
            return Err(format!("the kept log {} lacks {want:?}", log.display()));
        }
    }
    Ok(())
}

/// The driver the check boots with (it loads none).
pub const DRIVER: Driver = Driver::Rust;
