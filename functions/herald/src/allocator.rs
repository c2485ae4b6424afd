//! The global allocator and its one setting.

// The SQLite writer and the HTTP workers allocate small blocks on different threads; glibc's
// arenas spent a sixth of the writer's time in malloc/free (perf, docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the same index in v2 and v3); `libmimalloc-sys`
/// exports no constant for it.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages stay with mimalloc before they go back to the OS, in ms. v3 keeps
/// them a second, which held about 40 MB at the drain's allocation rate. Measured under
/// `herald bench` (server peak / bulk accept): 1,000 ms 104-113 MB / 72k per s; 100 ms 93-95 MB;
/// 10 ms 77 MB / 67k per s; 0 ms 67-74 MB / 63k per s. The drain was the same in all four.
const PURGE_DELAY_MS: std::os::raw::c_long = 10;

/// What mimalloc reads the purge delay from (`MIMALLOC_RESET_DELAY` is its old name).
const PURGE_DELAY_VARIABLES: [&str; 2] = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"];

/// Sets the purge delay; a purge delay in the environment still wins, for experiments.
#[allow(unsafe_code)]
pub fn return_freed_memory_soon() {
    if PURGE_DELAY_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return;
    }
    // SAFETY: mi_option_set stores a number in mimalloc's option table; every value of the
    // purge delay is valid, and the call is thread-safe.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn purge_delay() -> std::os::raw::c_long {
        // SAFETY: reads one entry of mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
    }

    #[test]
    fn the_purge_delay_is_the_option_we_set() {
        for v in PURGE_DELAY_VARIABLES {
            if std::env::var_os(v).is_some() {
                panic!("unset {v} to run this test: it checks mimalloc's default");
            }
        }
        // mimalloc's defaults for the purge delay: 10 ms in v2, 1,000 ms in v3. Anything else
        // means index 15 is another option in this mimalloc, and the setting would miss.
        assert!(
            [10, 1000].contains(&purge_delay()),
            "index {PURGE_DELAY} read {}, not a purge-delay default",
            purge_delay()
        );
        return_freed_memory_soon();
        assert_eq!(purge_delay(), PURGE_DELAY_MS);
    }
}
