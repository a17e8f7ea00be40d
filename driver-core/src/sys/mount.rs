//! Mounts: a read-only bind, the one unmount, and this process's mount table
//! (`/proc/self/mountinfo`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::errno;

/// The type of the filesystem under `path`, as the kernel names it: the type of the
/// mount that holds it (the last-mounted of the longest mount point above it, from
/// mountinfo). No table of `statfs` magic numbers to keep up: every filesystem the
/// kernel mounts has its name, `fuse.sshfs` and the like included.
pub fn fs_type(path: &Path) -> io::Result<String> {
    let path = std::fs::canonicalize(path)?;
    mounts()
        .into_iter()
        .filter(|m| path.starts_with(&m.point))
        // max_by_key keeps the last of equals: the mount on top.
        .max_by_key(|m| m.point.components().count())
        .map(|m| m.fs_type)
        .ok_or_else(|| io::Error::other(format!("no mount holds {} in /proc/self/mountinfo", path.display())))
}

/// Bind-mounts `src` on `target` read-only: a bind mount takes the source's flags, so
/// read-only needs a second call (`MS_REMOUNT | MS_BIND | MS_RDONLY`), as `mount
/// --bind -o ro` does (util-linux; the kernel ignores MS_RDONLY on the first call).
pub fn bind_readonly(src: &Path, target: &Path) -> io::Result<()> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let none: Option<&str> = None;
    mount(Some(src), target, none, MsFlags::MS_BIND, none).map_err(errno)?;
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if let Err(e) = mount(none, target, none, ro, none) {
        let _ = umount2(target, MntFlags::MNT_DETACH);
        return Err(errno(e));
    }
    Ok(())
}

/// Unmounts `target`; not being mounted is fine, busy detaches lazily.
pub fn unmount(target: &Path) -> io::Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(target, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH).map_err(errno),
        Err(e) => Err(errno(e)),
    }
}

/// One line of `/proc/self/mountinfo`: where, and what filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// The mount point (field 5).
    pub point: PathBuf,
    /// The filesystem type (the first field after the ` - ` separator).
    pub fs_type: String,
}

/// This process's mounts, in mount order.
pub fn mounts() -> Vec<MountEntry> {
    mounts_in(&std::fs::read("/proc/self/mountinfo").unwrap_or_default())
}

/// The mount points of this process (field 5 of `/proc/self/mountinfo`), in mount order.
pub fn mount_points() -> Vec<PathBuf> {
    mounts().into_iter().map(|m| m.point).collect()
}

/// The mounts in a mountinfo text. The kernel writes a space, tab, newline or
/// backslash in a path as an octal escape (`\040`, `\011`, `\012`, `\134`; fs/proc_namespace.c
/// `mangle`), so a line always has its fields apart by single spaces; a variable number
/// of optional fields ends with a lone `-`, then comes the type.
fn mounts_in(info: &[u8]) -> Vec<MountEntry> {
    info.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().skip(6).position(|f| *f == b"-")? + 6;
            let fs_type = String::from_utf8_lossy(&unescape(fields.get(sep + 1)?)).into_owned();
            Some(MountEntry { point: PathBuf::from(OsStr::from_bytes(&unescape(point))), fs_type })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (field[i], octal) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Whether `path` is a mount point (listed in this process's mountinfo).
pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mount_points().into_iter().filter(|p| p.starts_with(dir)).collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        let info = concat!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
            "97 22 0:52 / /tmp/a\\040b rw shared:40 - tmpfs tmpfs rw\n",
            "98 22 0:53 / /tmp/tab\\011nl\\012bs\\134end rw shared:41 - tmpfs tmpfs rw\n",
            "99 22 0:54 / /tmp/not\\8octal rw shared:42 - tmpfs tmpfs rw\n",
        );
        let got: Vec<PathBuf> = mounts_in(info.as_bytes()).into_iter().map(|m| m.point).collect();
        let want = ["/", "/tmp/a b", "/tmp/tab\tnl\nbs\\end", "/tmp/not\\8octal"];
        assert_eq!(got, want.iter().map(PathBuf::from).collect::<Vec<_>>());
    }

    #[test]
    fn mountinfo_types_follow_the_optional_fields() {
        let info = concat!(
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n",
            "97 22 0:52 / /mnt rw shared:40 master:3 - fuse.sshfs host:/ rw\n",
            "98 22 0:53 / /none rw - xfs /dev/loop0 rw\n",
        );
        let got: Vec<(String, String)> =
            mounts_in(info.as_bytes()).into_iter().map(|m| (m.point.display().to_string(), m.fs_type)).collect();
        let want = [("/", "ext4"), ("/mnt", "fuse.sshfs"), ("/none", "xfs")];
        assert_eq!(got, want.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect::<Vec<_>>());
    }

    #[test]
    fn fs_type_names_the_mount_that_holds_a_path() {
        // /proc is procfs wherever this runs; a path inside it takes its type, not /'s.
        assert_eq!(fs_type(Path::new("/proc/self")).unwrap(), "proc");
        assert_eq!(fs_type(Path::new("/proc")).unwrap(), "proc");
    }
}
