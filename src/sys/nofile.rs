//! The open-file limit (`RLIMIT_NOFILE`): every WebSocket is a descriptor, so the master
//! (whose workers inherit the limit) and `wsfleet bench` both raise the soft limit to the
//! hard limit before they start.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The open-file limit after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFile {
    /// The soft limit before, to report a raise.
    pub before: u64,
    /// The soft limit now: how many descriptors this process may open.
    pub soft: u64,
    /// The hard limit (the most the soft limit could be raised to).
    pub hard: u64,
    /// Why the soft limit could not be raised, when it was below the hard limit.
    pub raise_error: Option<nix::Error>,
}

/// Raises the soft open-file limit to the hard limit (children inherit it). Fails only if
/// the limit cannot be read at all.
pub fn raise() -> Result<NoFile, nix::Error> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut out = NoFile {
        before,
        soft: before,
        hard,
        raise_error: None,
    };
    if before < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => out.soft = hard,
            Err(e) => out.raise_error = Some(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_reaches_the_hard_limit_or_says_why() {
        let n = raise().unwrap();
        assert!(n.soft >= n.before);
        assert!(n.soft == n.hard || n.raise_error.is_some());
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, n.soft);
    }
}
