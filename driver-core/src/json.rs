//! Reading and atomically writing the small JSON records kept beside the layers.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::durability::Durability;
use crate::error::{Cause, Error, Result};

/// A record that does not parse: the field serde stopped at (`diff_id`, `a.b[0]`; `.`
/// for the record itself) and serde's words, with line and column.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {source}")]
pub struct ParseError {
    pub field: String,
    pub source: serde_json::Error,
}

/// Parses the JSON record `data`, naming the field it fails at.
pub fn parse<T: for<'de> Deserialize<'de>>(data: &[u8]) -> std::result::Result<T, ParseError> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    serde_path_to_error::deserialize(de).map_err(|e| ParseError { field: e.path().to_string(), source: e.into_inner() })
}

/// Reads the record at `p`; `None` if there is none. A record that does not parse is
/// [`Cause::Corrupt`], naming the file and the field (one line: the cause is a string).
pub fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    match fs::read(p) {
        Ok(data) => parse(&data).map(Some).map_err(|e| Error::new(Cause::Corrupt(format!("{}: {e}", p.display())))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(e).with_path(p)),
    }
}

/// Writes the file `p` whole or not at all: `fill` writes a temp file beside it
/// (`.tmp-<pid>-<n>`, so a collector can tell whose it is), which is synced, renamed over
/// `p`, and the directory synced; a crash leaves the old file or the new one, never a
/// mix. Returns the file, still open: a lock `fill` took on it stays, under the new name.
pub fn write_atomic(p: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<File> {
    write_atomic_as(p, Durability::Chain, fill)
}

/// [`write_atomic`], synced as `mode` says: under `--sync none` the file and its
/// directory are not synced (a crash may then leave the old file, the new one, or an
/// empty one: the readers take an empty or torn record for a corrupt one).
pub fn write_atomic_as(p: &Path, mode: Durability, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<File> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // A bare file name (`--json out.json`) has the parent "", which open(2) refuses.
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let write = || -> io::Result<File> {
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        mode.sync_record(&f)?;
        fs::rename(&tmp, p)?;
        mode.sync_record_dir(dir)?;
        Ok(f)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Writes `path` whole or not at all ([`write_atomic`]), `fill` writing through a
/// buffer: a layer diff, a metrics file. An error of `fill` is returned as it is.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let mut failed = None;
    let written = write_atomic(path, |file| {
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        if let Err(e) = fill(&mut w) {
            failed = Some(e);
            return Err(io::Error::other("the writer failed"));
        }
        w.flush()
    });
    match (written, failed) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(Error::new(e).with_path(path)),
        (Ok(_), None) => Ok(()),
    }
}

/// `value` as the records keep it (pretty JSON).
pub fn to_bytes<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(io::Error::other)
}

/// Writes `value` to `p` atomically ([`write_atomic`]).
pub fn write_json<T: Serialize>(p: &Path, value: &T) -> Result<()> {
    write_json_as(p, value, Durability::Chain)
}

/// [`write_json`] synced as `mode` says ([`write_atomic_as`]).
pub fn write_json_as<T: Serialize>(p: &Path, value: &T, mode: Durability) -> Result<()> {
    write_atomic_as(p, mode, |f| f.write_all(&to_bytes(value)?)).map(drop).map_err(|e| Error::new(e).with_path(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare file name is written in the working directory (it failed with ENOENT:
    /// its parent is "", which cannot be opened to sync).
    #[test]
    fn a_bare_file_name_is_written_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "json::tests::bare_name_child", "--nocapture", "--include-ignored"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(fs::read(dir.path().join("bare.json")).unwrap(), b"{}");
        assert_eq!(names(dir.path()), ["bare.json"], "no temp file is left");
    }

    /// Run by [`a_bare_file_name_is_written_in_the_working_directory`] in its own
    /// process, whose working directory it chose.
    #[test]
    #[ignore = "run in a child process by a_bare_file_name_is_written_in_the_working_directory"]
    fn bare_name_child() {
        write_atomic_with(Path::new("bare.json"), |w| w.write_all(b"{}").map_err(Error::new)).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_failed_write_leaves_the_old_record_and_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("r.json");
        write_json(&p, &vec![1, 2]).unwrap();
        let e = write_atomic(&p, |f| {
            f.write_all(b"[3, ")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![1, 2]));
        assert_eq!(names(tmp.path()), ["r.json"]);
        write_json(&p, &vec![3]).unwrap();
        assert_eq!(read_json::<Vec<u32>>(&p).unwrap(), Some(vec![3]));
        assert_eq!(names(tmp.path()), ["r.json"]);
    }

    #[test]
    fn a_lock_taken_while_writing_holds_under_the_new_name() {
        use nix::fcntl::{Flock, FlockArg};
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("pending.json");
        let mut lock = None;
        write_atomic(&p, |f| {
            lock = Some(
                Flock::lock(f.try_clone()?, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| io::Error::from(e))?,
            );
            f.write_all(b"{}")
        })
        .unwrap();
        let other = File::open(&p).unwrap();
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_err(), "the lock held after the rename");
        drop(lock);
        let other = File::open(&p).unwrap();
        assert!(Flock::lock(other, FlockArg::LockExclusiveNonblock).is_ok(), "and went with its holder");
    }

    /// A record that does not parse names its file, the field and serde's cause (the
    /// field was missing: `expected u32` alone does not say which of many).
    #[test]
    fn a_record_that_does_not_parse_names_its_file_and_field() {
        #[derive(Debug, Deserialize)]
        struct R {
            #[allow(dead_code)]
            a: Vec<u32>,
        }
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("r.json");
        fs::write(&p, r#"{"a": [1, "x"]}"#).unwrap();
        let e = read_json::<R>(&p).unwrap_err();
        let Cause::Corrupt(words) = &e.cause else { panic!("{e:?}") };
        let want = format!("{}: a[1]: invalid type: string \"x\", expected u32 at line 1 column ", p.display());
        assert!(words.starts_with(&want), "{words}");
        let e = parse::<R>(b"{\"a\": [1,").unwrap_err();
        assert_eq!(e.field, "a");
        assert!(e.source.is_eof(), "{e}");
    }

    /// A layer's record and its content record that do not parse name the field (the
    /// layer's record flattens the driver's facts beside the layer's, which hid it).
    #[test]
    fn a_layer_record_that_does_not_parse_names_the_field() {
        use crate::store::{discard_tree, Store};
        let tmp = tempfile::tempdir().unwrap();
        let s = Store::open(tmp.path(), std::sync::Arc::new(discard_tree)).unwrap();
        let meta = s.record_file("a");
        fs::write(&meta, r#"{"id": "a", "parent": null, "writable": false, "size": "big", "mounts": 0}"#).unwrap();
        let e = s.get("a").unwrap_err();
        let Cause::Corrupt(words) = &e.cause else { panic!("{e:?}") };
        assert!(words.starts_with("size: invalid type: string \"big\", expected u64"), "{words}");
        let line = e.to_string();
        assert!(line.starts_with(&format!("layer a: {}: metadata store is corrupt: size: ", meta.display())), "{line}");
        fs::write(s.files_path("a"), r#"{"version": 1, "usage": {"bytes": -1}}"#).unwrap();
        let e = s.content_record("a").unwrap_err();
        let Cause::Corrupt(words) = &e.cause else { panic!("{e:?}") };
        assert!(words.starts_with("content record: usage.bytes: invalid value: integer `-1`"), "{words}");
    }
}
