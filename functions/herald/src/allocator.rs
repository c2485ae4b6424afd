//! The global allocator and its two settings.

// The SQLite writer and the HTTP workers allocate small blocks on different threads; glibc's
// arenas spent a sixth of the writer's time in malloc/free (perf, docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A mimalloc option we set: its index in `mi_option_t` (mimalloc.h; the same in v2 and v3,
/// and `libmimalloc-sys` exports no constant for these), our value, and the environment
/// variables that override it, for experiments.
struct Setting {
    option: libmimalloc_sys::mi_option_t,
    value: std::os::raw::c_long,
    variables: &'static [&'static str],
}

/// How long freed pages stay with mimalloc before they go back to the OS, in ms. v3 keeps
/// them a second, which held about 40 MB at the drain's allocation rate. Measured under
/// `herald bench` (server peak / bulk accept): 1,000 ms 104-113 MB / 72k per s; 100 ms 93-95 MB;
/// 10 ms 77 MB / 67k per s; 0 ms 67-74 MB / 63k per s. The drain was the same in all four.
const PURGE_DELAY: Setting = Setting {
    option: 15,
    value: 10,
    // `MIMALLOC_RESET_DELAY` is its old name.
    variables: &["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"],
};

/// Whether arenas are committed up front: mimalloc's default on Linux is yes, and then a
/// purge leaves the pages resident. One bulk request of 10,000 recipients took the server from
/// 38 MB to 87 MB with it, 53 MB without, at the same rate (docs/performance.md).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const ARENA_EAGER_COMMIT: Setting = Setting {
    option: 4,
    value: 0,
    variables: &[
        "MIMALLOC_ARENA_EAGER_COMMIT",
        "MIMALLOC_EAGER_REGION_COMMIT",
    ],
};

/// Sets the purge delay; a purge delay in the environment still wins.
pub fn return_freed_memory_soon() {
    if PURGE_DELAY
        .variables
        .iter()
        .any(|v| std::env::var_os(v).is_some())
    {
        return;
    }
    set(&PURGE_DELAY);
}

#[allow(unsafe_code)]
fn set(s: &Setting) {
    // SAFETY: mi_option_set stores a number in mimalloc's option table; 0 and every delay are
    // valid values of these two options, and the call is thread-safe.
    unsafe { libmimalloc_sys::mi_option_set(s.option, s.value) };
}

/// mimalloc's default for arena eager commit: "on systems that overcommit".
#[cfg(target_os = "linux")]
const EAGER_ON_OVERCOMMIT: std::os::raw::c_long = 2;

/// Arena eager commit must be set before the first allocation makes an arena, which is before
/// `main` (Rust's runtime allocates first). So it is set from `.init_array`, after mimalloc's
/// own constructor (priority 101) has read the environment and before any allocation; a value
/// other than mimalloc's default in the environment wins.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn commit_arenas_lazily() {
    // SAFETY: reads one entry of mimalloc's option table; allocates nothing.
    let current = unsafe { libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT.option) };
    if current == EAGER_ON_OVERCOMMIT {
        set(&ARENA_EAGER_COMMIT);
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[link_section = ".init_array"]
static COMMIT_ARENAS_LAZILY: extern "C" fn() = commit_arenas_lazily;

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn get(s: &Setting) -> std::os::raw::c_long {
        // SAFETY: reads one entry of mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(s.option) }
    }

    #[test]
    fn the_settings_are_the_options_we_mean() {
        for s in [&PURGE_DELAY, &ARENA_EAGER_COMMIT] {
            for v in s.variables {
                if std::env::var_os(v).is_some() {
                    panic!("unset {v} to run this test: it checks mimalloc's defaults");
                }
            }
        }
        // mimalloc's default purge delay: 10 ms in v2, 1,000 ms in v3. Anything else means the
        // index is another option in this mimalloc, and the setting would miss.
        assert!(
            [10, 1000].contains(&get(&PURGE_DELAY)),
            "index {} read {}, not a purge-delay default",
            PURGE_DELAY.option,
            get(&PURGE_DELAY)
        );
        return_freed_memory_soon();
        assert_eq!(get(&PURGE_DELAY), PURGE_DELAY.value);
        // Set before main, in this test binary too; 2 would mean the constructor did not run.
        #[cfg(target_os = "linux")]
        assert_eq!(
            get(&ARENA_EAGER_COMMIT),
            ARENA_EAGER_COMMIT.value,
            "index {} is not arena eager commit, or .init_array did not run",
            ARENA_EAGER_COMMIT.option
        );
    }
}
