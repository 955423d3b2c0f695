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
    /// Suites seen (top-level result lines).
    pub suites: Vec<String>,
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
            s.suites.push(name.clone());
            if !ok {
                s.failed.push(format!("suite {name}"));
            }
            continue;
        }
        if directive.starts_with("SKIP") {
            s.skipped += 1;
        } else if ok {
            s.passed += 1;
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
        assert_eq!(s.suites, vec!["a".to_string(), "b".to_string()]);
    }
}
