//! Parsing of the KTAP output of KUnit, as printed on the guest console.

/// What a KTAP log says.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    /// Test cases that passed (lines `ok N name` nested in a suite).
    pub passed: usize,
    /// Test cases that failed, by name.
    pub failed: Vec<String>,
    /// Test cases that were skipped.
    pub skipped: usize,
    /// Suites seen (top-level result lines), in order.
    pub suites: Vec<Suite>,
}

/// One suite's result.
#[derive(Debug, Default, PartialEq)]
pub struct Suite {
    pub name: String,
    /// Its test cases (results one level down) that passed, not counting skipped ones.
    pub passed: usize,
}

/// The suites `make test` requires, each with the fewest cases that must pass in it (the
/// counts of a run; raise them when cases are added): the driver's suites (every
/// `#[kunit_tests(...)]` in drivers/char/virtio_console_rs) and the kernel crate's doctests,
/// which include the new abstractions' examples.
pub const REQUIRED_SUITES: [(&str, usize); 12] = [
    ("rust_doctests_kernel", 366),
    ("virtio_console_rs_control", 7),
    ("virtio_console_rs_debugfs", 3),
    ("virtio_console_rs_ratelimit", 1),
    ("virtio_console_rs_fifo", 4),
    ("virtio_console_rs_tx_pool", 6),
    ("virtio_console_rs_fake_device", 33),
    ("virtio_console_rs_port_table", 4),
    ("virtio_console_rs_fake_random", 1),
    ("virtio_console_rs_virtio_adapter", 7),
    ("virtio_console_rs_protocol_model", 3),
    ("virtio_console_rs_hvc", 3),
];

/// Checks that every suite of `required` ran, with at least its number of passed cases,
/// that some case ran and none failed.
pub fn gate(s: &Summary, required: &[(&str, usize)]) -> Result<(), String> {
    for &(name, min) in required {
        let Some(suite) = s.suites.iter().find(|x| x.name == name) else {
            return Err(format!("suite {name} did not run"));
        };
        if suite.passed < min {
            return Err(format!(
                "suite {name}: {} cases passed, at least {min} expected",
                suite.passed
            ));
        }
    }
    if s.passed == 0 {
        return Err("no KUnit case ran".into());
    }
    if s.failed.is_empty() {
        Ok(())
    } else {
        Err(format!("failed: {:?}", s.failed))
    }
}

/// Removes the `[    1.234567] ` timestamp the console adds.
fn strip_time(line: &str) -> &str {
    let t = line.trim_start_matches('\r');
    if let Some(rest) = t.strip_prefix('[') {
        if let Some(end) = rest.find("] ") {
            return &rest[end + 2..];
        }
    }
    t
}

/// Parses every result line of a console log.
pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Summary {
    let mut s = Summary::default();
    // Cases of the suite being read, counted until its result line.
    let mut in_suite = 0;
    for raw in lines {
        let line = strip_time(raw);
        let indent = line.len() - line.trim_start().len();
        let body = line.trim_start();
        let (ok, rest) = if let Some(r) = body.strip_prefix("not ok ") {
            (false, r)
        } else if let Some(r) = body.strip_prefix("ok ") {
            (true, r)
        } else {
            continue;
        };
        let mut parts = rest.splitn(2, ' ');
        let num = parts.next().unwrap_or("");
        if num.parse::<u32>().is_err() {
            continue;
        }
        let name_and_directive = parts.next().unwrap_or("").trim();
        let (name, directive) = match name_and_directive.split_once(" # ") {
            Some((n, d)) => (n.trim().to_string(), d.trim().to_string()),
            None => (name_and_directive.to_string(), String::new()),
        };
        if indent == 0 {
            s.suites.push(Suite {
                name: name.clone(),
                passed: std::mem::take(&mut in_suite),
            });
            if !ok {
                s.failed.push(format!("suite {name}"));
            }
            continue;
        }
        if directive.starts_with("SKIP") {
            s.skipped += 1;
        } else if ok {
            s.passed += 1;
            // A case's own result, not one of its parameters' (nested deeper).
            if indent == 4 {
                in_suite += 1;
            }
        } else {
            s.failed.push(name);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nested_results() {
        let log = [
            "[    1.000000] KTAP version 1",
            "[    1.000001] 1..2",
            "[    1.000002]     # Subtest: a",
            "[    1.000003]     ok 1 t1",
            "[    1.000004]     not ok 2 t2",
            "[    1.000005] not ok 1 a",
            "[    1.000006]     ok 1 t3 # SKIP no hw",
            "[    1.000007] ok 2 b",
            "random line ok 3 x",
        ];
        let s = parse(log);
        assert_eq!(s.passed, 1);
        assert_eq!(s.skipped, 1);
        assert_eq!(s.failed, vec!["t2".to_string(), "suite a".to_string()]);
        let names: Vec<&str> = s.suites.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// Two suites as KUnit prints them, `b` with a parameterised case.
    const TWO_SUITES: [&str; 14] = [
        "[    1.000000] KTAP version 1",
        "[    1.000001] 1..2",
        "[    1.000002]     KTAP version 1",
        "[    1.000003]     # Subtest: a",
        "[    1.000004]     ok 1 t1",
        "[    1.000005]     ok 2 t2",
        "[    1.000006] ok 1 a",
        "[    1.000007]     # Subtest: b",
        "[    1.000008]         # Subtest: p",
        "[    1.000009]         ok 1 p0",
        "[    1.000010]         ok 2 p1",
        "[    1.000011]     ok 1 p",
        "[    1.000012]     ok 2 t3 # SKIP no hw",
        "[    1.000013] ok 2 b",
    ];

    #[test]
    fn counts_cases_per_suite() {
        let s = parse(TWO_SUITES);
        let counts: Vec<(&str, usize)> = s
            .suites
            .iter()
            .map(|x| (x.name.as_str(), x.passed))
            .collect();
        assert_eq!(counts, [("a", 2), ("b", 1)]);
        assert_eq!(gate(&s, &[("a", 2), ("b", 1)]), Ok(()));
    }

    #[test]
    fn gate_fails_without_a_suite_or_with_too_few_cases() {
        // The transcript without suite `a`.
        let without_a: Vec<&str> = TWO_SUITES
            .iter()
            .copied()
            .filter(|l| !l.contains(" a") && !l.contains("t1") && !l.contains("t2"))
            .collect();
        let s = parse(without_a);
        assert_eq!(
            gate(&s, &[("a", 2), ("b", 1)]),
            Err("suite a did not run".into())
        );
        // Suite `a` with one case fewer than required.
        let s = parse(TWO_SUITES.iter().copied().filter(|l| !l.contains("t2")));
        assert_eq!(
            gate(&s, &[("a", 2), ("b", 1)]),
            Err("suite a: 1 cases passed, at least 2 expected".into())
        );
        // A failed case fails the gate.
        let failing: Vec<String> = TWO_SUITES
            .iter()
            .map(|l| l.replace("ok 2 t2", "not ok 2 t2"))
            .collect();
        let s = parse(failing.iter().map(String::as_str));
        assert_eq!(
            gate(&s, &[("a", 1), ("b", 1)]),
            Err("failed: [\"t2\"]".into())
        );
    }

    #[test]
    fn the_required_suites_are_the_drivers() {
        // Every `#[kunit_tests(...)]` suite of the driver is required.
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../drivers/char/virtio_console_rs"
        );
        let mut found = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
            for part in text.split("#[kunit_tests(").skip(1) {
                found.push(part.split(')').next().unwrap().to_string());
            }
        }
        assert!(!found.is_empty());
        for name in found {
            assert!(
                REQUIRED_SUITES.iter().any(|(r, _)| *r == name),
                "suite {name} is not in REQUIRED_SUITES"
            );
        }
    }
}
