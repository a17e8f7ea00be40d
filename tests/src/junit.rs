//! The gate's JUnit file read by a real JUnit reader (Python's junitparser), for the
//! bench tests.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// The JUnit file as a real JUnit reader sees it (Python's junitparser, Debian's
/// python3-junitparser): per test case (class name, name, result: passed, failure,
/// error or skipped, its message), and the suite's (tests, failures, errors, skipped).
/// A JUnit test case as read: (class name, name, result, message).
pub type Case = (String, String, String, String);

pub fn junit_cases(path: &Path) -> (Vec<Case>, [u64; 4]) {
    let script = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
cases, totals = [], [0, 0, 0, 0]
for suite in xml:
    totals = [totals[0] + suite.tests, totals[1] + suite.failures, totals[2] + suite.errors, totals[3] + suite.skipped]
    for case in suite:
        kind, message = "passed", ""
        for r in case.result:
            kind = {Failure: "failure", Error: "error", Skipped: "skipped"}.get(type(r), "other")
            message = r.message or ""
        cases.append([case.classname or "", case.name or "", kind, message])
print(json.dumps({"cases": cases, "totals": totals}))
"#;
    let o = Command::new("/usr/bin/python3").arg("-c").arg(script).arg(path).output().expect("/usr/bin/python3 runs");
    assert!(
        o.status.success(),
        "junitparser could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let cases = v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (0..4).map(|i| c[i].as_str().unwrap().to_string()).collect::<Vec<_>>())
        .map(|c| (c[0].clone(), c[1].clone(), c[2].clone(), c[3].clone()))
        .collect();
    let t: Vec<u64> = v["totals"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    (cases, [t[0], t[1], t[2], t[3]])
}

/// Whether Python's junitparser is there (Debian: python3-junitparser, in .ci/run).
pub fn junitparser() -> bool {
    let ok =
        Command::new("/usr/bin/python3").args(["-c", "import junitparser"]).output().is_ok_and(|o| o.status.success());
    strata_scratch::require("the JUnit output test", (!ok).then_some("python3-junitparser installed"))
}
