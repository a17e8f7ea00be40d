//! Reading and atomically writing the small JSON records kept beside the layers.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Cause, Error, Result};

/// Reads the record at `p`; `None` if there is none. A record that does not parse is
/// [`Cause::Corrupt`].
pub fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<Option<T>> {
    match fs::read(p) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::new(Cause::Corrupt(format!("{}: {e}", p.display())))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::new(e).with_path(p)),
    }
}

/// Writes `value` to `p` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_json<T: Serialize>(p: &Path, value: &T) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = p.parent().expect("a record has a directory");
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value).map_err(io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, p)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::new(e).with_path(p)
    })
}
