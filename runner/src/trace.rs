//! The trace: what a recorded command did to the filesystem, one operation a line.
//!
//! The format is documented in docs/trace.md. A trace is JSON Lines: the first line is
//! a [`Header`] (`{"strata_trace":1,...}`) naming the format version and the image and
//! top layer the command ran on; every other line is a [`Record`]: the time offset in
//! microseconds, the calling process, and one [`Op`] with its arguments as the
//! kernel applied them (paths relative to the container's root, modes as octal
//! strings, flags as names), so two traces can be read and diffed as text.

use std::io::{self, BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;

/// A parsing error names the line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace line {line}: {msg}")]
    Line { line: usize, msg: String },
    #[error("trace: {0}")]
    Io(#[from] io::Error),
    /// The trace file could not be opened (its errno kept; callers name the path, as
    /// they name it for the other variants too).
    #[error("cannot open it: {source}")]
    Open { path: std::path::PathBuf, source: io::Error },
}

/// The first line of a trace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The format version ([`VERSION`]).
    pub strata_trace: u32,
    /// The image the container was made on (its name in the store), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The container's parent layer (the image's top layer, a chain ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// The command that was run.
    #[serde(default)]
    pub command: Vec<String>,
    /// Whether write records carry the bytes written (`--record-data`).
    #[serde(default)]
    pub data: bool,
}

/// One operation, when and by whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Microseconds since the command started.
    pub t: u64,
    /// The process (thread) that made the call, as the host numbers it.
    pub pid: u32,
    #[serde(flatten)]
    pub op: Op,
}

/// A permission mode, written as an octal string ("644", "4755").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:o}", self.0))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let s = String::deserialize(d)?;
        u32::from_str_radix(&s, 8).map(Mode).map_err(|_| serde::de::Error::custom(format!("mode {s:?} is not octal")))
    }
}

/// A node's type, for [`Op::Mknod`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    File,
    Fifo,
    Char,
    Block,
    Socket,
}

/// A filesystem-changing operation, as it succeeded in the recorded run. Paths are
/// relative to the container's root, with no symbolic link on the way (the recorder
/// resolves them as the kernel did), and name the node the call changed: a call that
/// followed a final symlink (chmod, chown, utimensat, setxattr) names the link's target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// open/openat/openat2/creat that may write: access mode and creation flags by name
    /// (`wronly`, `rdwr`, `creat`, `excl`, `trunc`, `append`); `mode`, `uid`, `gid` are
    /// the file's after the call (what a creation made).
    Open {
        path: String,
        flags: Vec<String>,
        mode: Mode,
        uid: u32,
        gid: u32,
    },
    /// write/pwrite64/writev/pwritev(2), and what reached a file by copy_file_range,
    /// sendfile, splice (`via`) or a shared writable mapping (`via: "mmap"`).
    Write {
        path: String,
        offset: u64,
        len: u64,
        /// How well the bytes compress (zstd level 1 size / size, of at most the first
        /// 64 KiB): replay writes synthetic bytes that compress as well.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        z: Option<f32>,
        /// The bytes, base64 (with `--record-data`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        via: Option<String>,
    },
    /// truncate/ftruncate.
    Truncate {
        path: String,
        len: u64,
    },
    /// fallocate; `mode` names its flags (`keep_size`, `punch_hole`, `zero_range`,
    /// `collapse_range`, `insert_range`, `unshare_range`).
    Fallocate {
        path: String,
        mode: Vec<String>,
        offset: u64,
        len: u64,
    },
    Mkdir {
        path: String,
        mode: Mode,
        uid: u32,
        gid: u32,
    },
    Rmdir {
        path: String,
    },
    Unlink {
        path: String,
    },
    /// rename/renameat/renameat2; `flags`: `noreplace`, `exchange`, `whiteout`.
    Rename {
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        flags: Vec<String>,
    },
    /// link/linkat: `to` is the new name of `from`'s node.
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
        uid: u32,
        gid: u32,
    },
    /// mknod/mknodat (fifos, devices, sockets, plain files).
    Mknod {
        path: String,
        kind: NodeKind,
        mode: Mode,
        rdev: u64,
        uid: u32,
        gid: u32,
    },
    /// chmod family: the mode after the call.
    Chmod {
        path: String,
        mode: Mode,
    },
    /// chown family: the owner after the call.
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    /// utimensat/utimes/futimesat/utime: the times after the call, [seconds, nanoseconds].
    Utimes {
        path: String,
        atime: [i64; 2],
        mtime: [i64; 2],
    },
    /// setxattr family; `value` base64.
    Setxattr {
        path: String,
        name: String,
        value: String,
    },
    Removexattr {
        path: String,
        name: String,
    },
    /// fsync (`data_only: false`) or fdatasync (`true`); msync(MS_SYNC) too.
    Fsync {
        path: String,
        data_only: bool,
    },
    SyncFileRange {
        path: String,
        offset: u64,
        len: u64,
    },
    /// syncfs on any file of the container, or sync.
    Sync,
}

impl Op {
    /// The class an operation is counted under (in [`crate::replay::ReplayStats`] and
    /// docs/trace.md): its `op` name.
    pub fn class(&self) -> &'static str {
        match self {
            Op::Open { .. } => "open",
            Op::Write { .. } => "write",
            Op::Truncate { .. } => "truncate",
            Op::Fallocate { .. } => "fallocate",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Mknod { .. } => "mknod",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Utimes { .. } => "utimes",
            Op::Setxattr { .. } => "setxattr",
            Op::Removexattr { .. } => "removexattr",
            Op::Fsync { .. } => "fsync",
            Op::SyncFileRange { .. } => "sync_file_range",
            Op::Sync => "sync",
        }
    }

    /// Every path the operation names.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::Open { path, .. }
            | Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Unlink { path }
            | Op::Symlink { path, .. }
            | Op::Mknod { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Utimes { path, .. }
            | Op::Setxattr { path, .. }
            | Op::Removexattr { path, .. }
            | Op::Fsync { path, .. }
            | Op::SyncFileRange { path, .. } => vec![path],
            Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
            Op::Sync => vec![],
        }
    }
}

/// Every operation class, in the order docs/trace.md lists them.
pub const CLASSES: [&str; 19] = [
    "open",
    "write",
    "truncate",
    "fallocate",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "link",
    "symlink",
    "mknod",
    "chmod",
    "chown",
    "utimes",
    "setxattr",
    "removexattr",
    "fsync",
    "sync_file_range",
    "sync",
];

/// A whole trace in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    pub header: Header,
    pub records: Vec<Record>,
}

/// Whether a recorded path is one replay may use: relative, normal components only
/// (no `..`, no `.`, no empty component), and not the root itself.
pub fn valid_path(p: &str) -> bool {
    !p.is_empty() && !p.contains('\0') && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Trace {
    /// Reads a trace, checking the header's version and every path.
    pub fn parse(input: impl BufRead) -> Result<Trace, TraceError> {
        let mut lines = input.lines().enumerate();
        let header = match lines.next() {
            None => return Err(TraceError::Line { line: 1, msg: "empty file, no header".into() }),
            Some((_, line)) => {
                let line = line?;
                let h: Header = serde_json::from_str(&line)
                    .map_err(|e| TraceError::Line { line: 1, msg: format!("not a strata trace header: {e}") })?;
                if h.strata_trace != VERSION {
                    return Err(TraceError::Line {
                        line: 1,
                        msg: format!("format version {} (this strata reads version {VERSION})", h.strata_trace),
                    });
                }
                h
            }
        };
        let mut records = Vec::new();
        for (i, line) in lines {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = |msg: String| TraceError::Line { line: i + 1, msg };
            let r: Record = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
            if let Some(p) = r.op.paths().into_iter().find(|p| !valid_path(p)) {
                return Err(bad(format!("path {p:?} is not relative to the container's root")));
            }
            records.push(r);
        }
        Ok(Trace { header, records })
    }

    /// Reads the trace in file `path`.
    pub fn read(path: &Path) -> Result<Trace, TraceError> {
        let f = std::fs::File::open(path).map_err(|source| TraceError::Open { path: path.to_path_buf(), source })?;
        Trace::parse(io::BufReader::new(f))
    }

    /// Writes the trace in its text form.
    pub fn write(&self, mut out: impl Write) -> io::Result<()> {
        write_line(&mut out, &self.header)?;
        for r in &self.records {
            write_line(&mut out, r)?;
        }
        out.flush()
    }

    /// How many records of each class, in [`CLASSES`] order (classes with none left out).
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        CLASSES
            .iter()
            .map(|c| (*c, self.records.iter().filter(|r| r.op.class() == *c).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// One JSON object and a newline.
pub fn write_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_reads_back_as_written() {
        let t = Trace {
            header: Header { strata_trace: VERSION, image: Some("debian".into()), data: false, ..Default::default() },
            records: vec![
                Record {
                    t: 5,
                    pid: 7,
                    op: Op::Open {
                        path: "a/b".into(),
                        flags: vec!["wronly".into(), "creat".into()],
                        mode: Mode(0o644),
                        uid: 0,
                        gid: 0,
                    },
                },
                Record {
                    t: 6,
                    pid: 7,
                    op: Op::Write { path: "a/b".into(), offset: 3, len: 9, z: Some(0.5), data: None, via: None },
                },
                Record { t: 9, pid: 8, op: Op::Sync },
            ],
        };
        let mut text = Vec::new();
        t.write(&mut text).unwrap();
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(s.contains(r#""mode":"644""#), "{s}");
        assert!(s.starts_with(r#"{"strata_trace":1,"#), "{s}");
        assert_eq!(Trace::parse(&text[..]).unwrap(), t);
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "", "a/./b"] {
            let line =
                format!("{{\"strata_trace\":1}}\n{}\n", serde_json::json!({"t":0,"pid":1,"op":"unlink","path":bad}));
            let err = Trace::parse(line.as_bytes()).unwrap_err();
            assert!(matches!(err, TraceError::Line { line: 2, .. }), "{bad}: {err}");
        }
        // A later format is refused at its header, naming the version it is.
        let future = "{\"strata_trace\":2}\n";
        let err = Trace::parse(future.as_bytes()).unwrap_err();
        assert!(matches!(&err, TraceError::Line { line: 1, msg } if msg.contains("version 2")), "{err}");
    }
}
