//! The process's file descriptor limit: raised at start from the soft limit to the hard one, as
//! Go's runtime does (many systems start processes with a soft limit of 1024, and each
//! connection is a descriptor), and read back for the summary when it still capped the
//! connections.

/// The soft and hard `RLIMIT_NOFILE`, if they can be read.
pub(crate) fn get() -> Option<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    // rlim_t is u64 on Linux and the BSDs.
    ok.then_some((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft limit to the hard one; quietly keeps it where it is if that is refused
/// (the limits are the process's to set, and the client copes with fewer descriptors).
pub(crate) fn raise() {
    let Some((soft, hard)) = get() else { return };
    if soft >= hard {
        return;
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct it is given and nothing else.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}
