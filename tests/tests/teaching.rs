//! docs/teaching.md runs from its own text: every `console` block's `$ ` commands (with
//! `> ` continuation lines) run in order in one bash (`set -euo pipefail`) from the
//! repository root, with the `strata` under test first on PATH, `TMPDIR` in a temp dir
//! and podman on its own storage there. Each command must succeed, and the output the
//! document shows under it must appear in what it printed, in order, once the parts
//! that change from run to run are masked: numbers, hex IDs and the temp folder's name.
//! A shown line `...` skips any lines. Whatever the lesson leaves behind (mounts, loop
//! devices, podman's storage) goes when the test ends, also when it fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_tests::{installed, privileged, strata_bin};

struct Step {
    line: usize,
    command: String,
    shown: Vec<String>,
}

/// The `console` blocks of the document, as commands and the output shown for each.
fn steps(doc: &str) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_block = false;
    for (i, line) in doc.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block && line.trim() == "```console";
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Step { line: i + 1, command: cmd.to_string(), shown: Vec::new() });
        } else if let (Some(cont), Some(last)) = (line.strip_prefix("> "), out.last_mut()) {
            last.command.push('\n');
            last.command.push_str(cont);
        } else if let Some(last) = out.last_mut() {
            last.shown.push(line.to_string());
        }
    }
    out
}

/// Masks what changes between runs: the temp folder's name, hex runs of 6 or more,
/// then every number; and squeezes blanks.
fn mask(line: &str) -> String {
    let mut s = String::new();
    let mut rest = line;
    // …/tmp.XXXXXXXXXX (mktemp -d, wherever TMPDIR is) → T
    while let Some(i) = rest.find("/tmp.") {
        let start = rest[..i].rfind(|c: char| c.is_whitespace() || c == '(' || c == '=').map_or(0, |k| k + 1);
        s.push_str(&rest[..start]);
        s.push('T');
        let tail = &rest[i + 5..];
        let end = tail.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    s.push_str(rest);
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let hex = chars[i..].iter().take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()).count();
        if hex >= 6 {
            out.push('H');
            i += hex;
        } else if chars[i].is_ascii_digit() {
            out.push('N');
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether every shown line (masked) appears in `got`, in order; `...` skips.
fn shown_in(shown: &[String], got: &str) -> Result<(), String> {
    let got: Vec<String> = got.lines().map(mask).collect();
    let mut at = 0;
    for want in shown.iter().map(|l| mask(l)).filter(|l| !l.is_empty() && l != "...") {
        match got[at..].iter().position(|g| *g == want) {
            Some(k) => at += k + 1,
            None => return Err(want),
        }
    }
    Ok(())
}

/// Unmounts what the lesson mounted under `dir` and detaches its loop devices, even
/// when a step failed half-way.
struct Cleanup {
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let dir = self.dir.display().to_string();
        // Deepest first.
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg(&m).status();
            if driver_core::sys::is_mount_point(Path::new(&m)) {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
        let out = Command::new("losetup").args(["-nO", "NAME,BACK-FILE"]).output();
        for line in out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default().lines() {
            let mut f = line.split_whitespace();
            if let (Some(dev), Some(back)) = (f.next(), f.next()) {
                if back.starts_with(&dir) {
                    let _ = Command::new("losetup").args(["-d", dev]).status();
                }
            }
        }
    }
}

#[test]
fn teaching_md_runs_as_written() {
    if !privileged("docs/teaching.md")
        || !installed(&["podman", "mkfs.btrfs", "mkfs.ext4", "losetup"], "docs/teaching.md")
    {
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let doc = fs::read_to_string(repo.join("docs/teaching.md")).unwrap();
    let steps = steps(&doc);
    assert!(steps.len() >= 15, "the lesson's commands were not found ({} steps)", steps.len());
    // The fixture builds once, cached, before the lesson's clock starts.
    strata_tests::debian_fixture();

    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup { dir: tmp.path().to_path_buf() };
    let storage = tmp.path().join("storage.conf");
    fs::write(
        &storage,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = {:?}\nrunroot = {:?}\n",
            tmp.path().join("podman/root"),
            tmp.path().join("podman/run")
        ),
    )
    .unwrap();
    // One script: each step, then a marker with its exit status.
    const MARK: &str = "@@teaching-step-done@@";
    let mut script = String::from("set -euo pipefail\n");
    for (i, s) in steps.iter().enumerate() {
        script.push_str(&format!("{}\necho {MARK} {i}\n", s.command));
    }
    let bin_dir = strata_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("exec 2>&1\n{script}"))
        .current_dir(&repo)
        .env("PATH", path)
        .env("TMPDIR", tmp.path())
        .env("CONTAINERS_STORAGE_CONF", &storage)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rest = text.as_str();
    for (i, s) in steps.iter().enumerate() {
        let marker = format!("{MARK} {i}\n");
        let Some(end) = rest.find(&marker) else {
            panic!("docs/teaching.md line {}: `{}` failed ({}):\n{rest}", s.line, s.command, out.status);
        };
        let got = &rest[..end];
        if let Err(missing) = shown_in(&s.shown, got) {
            panic!(
                "docs/teaching.md line {}: `{}` did not print what the document shows\n(missing, masked: {missing:?})\n--- printed:\n{got}",
                s.line, s.command
            );
        }
        rest = &rest[end + marker.len()..];
    }
    assert!(out.status.success(), "{}", out.status);
}

#[test]
fn masking_keeps_words_and_hides_what_varies() {
    assert_eq!(mask("real\t0m0.512s"), mask("real 0m12.5s"));
    assert_eq!(mask("/tmp/tmp.AbC123xyz/ext4 sha256:792538e50c03"), "T/extN shaN:H");
    assert_eq!(mask("at /tmp/.tmpQ1/tmp.AbC123xyz/ext4,"), mask("at /tmp/tmp.zz/ext4,"));
    assert_ne!(mask("D /etc/issue"), mask("A /etc/issue"));
    let shown = vec!["a 1".to_string(), "...".to_string(), "c".to_string()];
    assert!(shown_in(&shown, "a 2\nb\nc\n").is_ok());
    assert_eq!(shown_in(&shown, "c\na 2\n"), Err("c".to_string()));
}
