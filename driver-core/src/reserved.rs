//! Xattr namespaces that a layer may not carry, as data.
//!
//! Some drivers keep their own bookkeeping in xattrs of a layer's files (a union
//! filesystem reads its whiteouts, redirects and metadata-only copies from them). A layer tar that set such an
//! xattr would be read as that bookkeeping by the driver that owns the namespace, while
//! every other driver kept it as content: the drivers would disagree about what exists.
//! So every driver refuses, in apply and in diff, the namespaces *any* driver of the set
//! reserves. Each driver names its own ([`crate::lifecycle::LayerFs::reserved_xattrs`]);
//! whoever assembles the set of drivers (the `strata` binary) hands the union to each
//! ([`crate::lifecycle::Layered::reserving`]). The tar engine only tests names against
//! the list; it knows no driver.

use std::sync::Arc;

/// A list of reserved xattr name prefixes (`"trusted.<fs>."`, say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReservedXattrs(Arc<[String]>);

impl ReservedXattrs {
    /// No reserved namespace.
    pub fn none() -> Self {
        Self::default()
    }

    /// The given prefixes, each ending in `.` so that it names a namespace.
    pub fn new<S: Into<String>>(prefixes: impl IntoIterator<Item = S>) -> Self {
        let mut v: Vec<String> = prefixes.into_iter().map(Into::into).collect();
        v.sort();
        v.dedup();
        ReservedXattrs(v.into())
    }

    /// These prefixes and `other`'s.
    pub fn union(&self, other: &ReservedXattrs) -> Self {
        Self::new(self.0.iter().chain(other.0.iter()).cloned())
    }

    /// The prefix of the namespace `name` is in, when it is reserved.
    pub fn matching(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|p| name.starts_with(p.as_str())).map(String::as_str)
    }

    /// Whether `name` is in a reserved namespace.
    pub fn contains(&self, name: &str) -> bool {
        self.matching(name).is_some()
    }

    /// The prefixes, sorted.
    pub fn prefixes(&self) -> &[String] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_namespaces_and_union_dedups() {
        let a = ReservedXattrs::new(["trusted.x.", "user.x."]);
        let b = ReservedXattrs::new(["user.x.", "security.y."]);
        let u = a.union(&b);
        assert_eq!(u.prefixes(), ["security.y.", "trusted.x.", "user.x."]);
        assert_eq!(u.matching("trusted.x.opaque"), Some("trusted.x."));
        assert!(!u.contains("trusted.xattr"), "a prefix names a namespace, not a word start");
        assert!(!ReservedXattrs::none().contains("trusted.x.opaque"));
    }
}
