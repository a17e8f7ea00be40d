//! An entry's owner, mode, times and xattrs, read from its header and PAX records.

use std::io::{self, Read};

use nix::sys::time::TimeSpec;

use driver_core::error::Cause;
use driver_core::sys;
use driver_core::ReservedXattrs;

/// Owner, mode, times and xattrs of an entry.
pub(super) type Meta = sys::NodeMeta;

/// Parses a PAX time (`1700000000.123456789`, possibly negative).
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? as i64 * 10i64.pow(8 - i as u32);
    }
    let total = if neg { -(secs * 1_000_000_000 + nanos) } else { secs * 1_000_000_000 + nanos };
    Some(TimeSpec::new(total.div_euclid(1_000_000_000), total.rem_euclid(1_000_000_000)))
}

/// Reads owner, mode, times and xattrs from the header and its PAX records.
pub(super) fn read_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    reserved: &ReservedXattrs,
) -> std::result::Result<Meta, Cause> {
    let header = entry.header();
    let bad = |what: &str, e: io::Error| Cause::BadTar(format!("bad {what} in header: {e}"));
    let mode = header.mode().map_err(|e| bad("mode", e))? & 0o7777;
    let uid = header.uid().map_err(|e| bad("uid", e))?;
    let gid = header.gid().map_err(|e| bad("gid", e))?;
    let mtime = header.mtime().map_err(|e| bad("mtime", e))?;
    let mut meta = Meta {
        mode,
        uid: u32::try_from(uid).map_err(|_| Cause::BadTar(format!("uid {uid} does not fit in 32 bits")))?,
        gid: u32::try_from(gid).map_err(|_| Cause::BadTar(format!("gid {gid} does not fit in 32 bits")))?,
        atime: TimeSpec::new(0, 0),
        mtime: TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0),
        xattrs: Vec::new(),
    };
    let mut atime = None;
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX records", e))? {
        for ext in pax {
            let ext = ext.map_err(|e| bad("PAX record", e))?;
            let key = ext.key_bytes();
            let value = ext.value_bytes();
            let num = |v: &[u8]| -> std::result::Result<u32, Cause> {
                std::str::from_utf8(v).ok().and_then(|s| s.parse::<u32>().ok()).ok_or_else(|| {
                    Cause::BadTar(format!("PAX {} is not a 32-bit number", String::from_utf8_lossy(key)))
                })
            };
            match key {
                b"uid" => meta.uid = num(value)?,
                b"gid" => meta.gid = num(value)?,
                b"mtime" => {
                    meta.mtime = parse_pax_time(value).ok_or_else(|| Cause::BadTar("PAX mtime is not a time".into()))?
                }
                b"atime" => atime = parse_pax_time(value),
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = String::from_utf8_lossy(&k[b"SCHILY.xattr.".len()..]).into_owned();
                    meta.xattrs.push((name, value.to_vec()));
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(Cause::Unsupported(
                        "PAX-format sparse files (GNU.sparse.* records); the old GNU sparse format is supported".into(),
                    ))
                }
                _ => {}
            }
        }
    }
    meta.atime = atime.unwrap_or(meta.mtime);
    for (name, _) in &meta.xattrs {
        if let Some(ns) = reserved.matching(name) {
            return Err(Cause::Refused(format!(
                "the layer sets the xattr {name}; {ns}* is a storage driver's own namespace, which only it may set"
            )));
        }
    }
    meta.xattrs.sort();
    meta.xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5"), Some(TimeSpec::new(1700000000, 500_000_000)));
        assert_eq!(parse_pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        assert_eq!(parse_pax_time(b"-1.5"), Some(TimeSpec::new(-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
