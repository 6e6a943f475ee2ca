//! Allocator tuning, so memory taken in a spike goes back to the OS when the process idles.
//!
//! jemalloc keeps freed pages ("dirty") for reuse and returns them as they decay, but by
//! default only when the thread that freed them allocates again: a worker that served a
//! spike and then sat idle kept its peak RSS (issue 15, finding 10). Here one background
//! thread per process purges on a timer, and dirty pages decay in about a second and are
//! then released at once (no "muzzy" stage). Master, workers and `bench` all run `main`,
//! so every process of the fleet is tuned the same way. An operator who sets
//! `_RJEM_MALLOC_CONF` (the prefixed `MALLOC_CONF` of this build) gets exactly that instead.

use tikv_jemalloc_ctl::{Access, AsName};

/// How long freed pages are kept for reuse before they are returned (jemalloc: 10 s).
const DIRTY_DECAY_MS: isize = 1_000;
/// 0: decayed pages are released (`MADV_DONTNEED`) instead of lazily (`MADV_FREE`),
/// so RSS drops when they go.
const MUZZY_DECAY_MS: isize = 0;

/// Applies the decay settings and starts the background purging thread.
pub fn give_back_when_idle() -> Result<(), tikv_jemalloc_ctl::Error> {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
        return Ok(());
    }
    // Arenas created from now on (one per thread, lazily)...
    b"arenas.dirty_decay_ms\0".name().write(DIRTY_DECAY_MS)?;
    b"arenas.muzzy_decay_ms\0".name().write(MUZZY_DECAY_MS)?;
    // ...and those that exist already; slots not yet initialised refuse, which is fine.
    let mut dirty = b"arena.0.dirty_decay_ms\0".name().mib::<[usize; 3]>()?;
    let mut muzzy = b"arena.0.muzzy_decay_ms\0".name().mib::<[usize; 3]>()?;
    for arena in 0..tikv_jemalloc_ctl::arenas::narenas::read()? as usize {
        dirty[1] = arena;
        muzzy[1] = arena;
        let _ = dirty.write(DIRTY_DECAY_MS);
        let _ = muzzy.write(MUZZY_DECAY_MS);
    }
    tikv_jemalloc_ctl::max_background_threads::write(1)?;
    tikv_jemalloc_ctl::background_thread::write(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_is_short_and_a_background_thread_purges() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            eprintln!("skipped: _RJEM_MALLOC_CONF is set, the settings are the operator's");
            return;
        }
        give_back_when_idle().unwrap();
        let dirty: isize = b"arenas.dirty_decay_ms\0".name().read().unwrap();
        let muzzy: isize = b"arenas.muzzy_decay_ms\0".name().read().unwrap();
        assert_eq!((dirty, muzzy), (DIRTY_DECAY_MS, MUZZY_DECAY_MS));
        let arena0: isize = b"arena.0.dirty_decay_ms\0".name().read().unwrap();
        assert_eq!(arena0, DIRTY_DECAY_MS);
        assert!(tikv_jemalloc_ctl::background_thread::read().unwrap());
    }
}
