//! How the adapter uses the machine: background work (reading scrapes,
//! parsing, merging) runs on low-priority threads so that answering queries
//! is never stuck behind it, and the allocator is told to hand memory of
//! dropped snapshots back to the operating system.

use std::ffi::CStr;
use std::sync::OnceLock;
use std::time::Duration;

/// Tunes glibc malloc for this workload: a few large arrays per snapshot
/// that are replaced every scrape, and many small strings.
///
/// - Two arenas: by default glibc creates up to eight per core as threads
///   allocate, and memory freed in one arena cannot serve another.
/// - A fixed 64 KiB mmap threshold: arrays above it (a snapshot's column
///   from about 5,500 streams up) get their own mapping and go back to the
///   OS when dropped. By default the threshold grows after such frees, and
///   freed arrays then stay in the heap. (Trimming the heap instead holds
///   the allocator's locks and stalls queries.)
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Puts the calling thread in the SCHED_IDLE class: it runs on cores no
/// other thread wants, and a thread woken to serve a request preempts it at
/// once (a mere nice value lets it keep a core for milliseconds). Failing
/// to is harmless.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: sched_setscheduler on the calling thread (pid 0) with a zero
    // priority; moving to SCHED_IDLE needs no privilege.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// Offers the core to any thread waiting for it. Long background work calls
/// this between slices of about a millisecond or less: the kernel does not
/// always preempt a SCHED_IDLE thread when a serving thread wakes on its
/// core (a woken serving thread can wait a whole scheduler tick behind a
/// merge), but it does switch on a yield.
pub fn make_way() {
    std::thread::yield_now();
}

/// Runs `work`, which may take milliseconds, on the calling serving thread
/// after handing the thread's other requests to another one (Tokio's
/// `block_in_place`), so that they are not held up meanwhile. On a
/// current-thread runtime, which cannot hand over, it just runs `work`.
pub fn run_long<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Starts `work` at once on a low-priority thread named `name` (for `top`
/// and `perf`); the returned future yields its result, or `None` if no
/// thread could be started or the work did not finish.
pub fn run_in_background<T: Send + 'static>(
    name: &'static CStr,
    work: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Option<T>> {
    let task = background_threads().map(|pool| {
        pool.spawn_blocking(move || {
            name_thread(name);
            work()
        })
    });
    async move { task?.await.ok() }
}

/// Idle threads are kept this long for the next background work: at least
/// a default scrape interval, so that steady scraping starts no thread.
const BACKGROUND_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(60);

/// The low-priority threads that parse and merge, reused: starting one per
/// scrape and per merge (many a second under load) cost a
/// stack mapping, its page faults and its unmapping each time. A Tokio
/// runtime's blocking pool, as nothing else is run on that runtime.
fn background_threads() -> Option<&'static tokio::runtime::Runtime> {
    static POOL: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool = tokio::runtime::Builder::new_current_thread()
            .thread_name("background")
            .on_thread_start(lower_thread_priority)
            .thread_keep_alive(BACKGROUND_THREAD_KEEP_ALIVE)
            .build();
        pool.inspect_err(|error| tracing::error!(%error, "cannot start the background threads")).ok()
    })
    .as_ref()
}

/// Names the calling thread (at most 15 bytes are kept).
fn name_thread(name: &CStr) {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_NAME reads a NUL-terminated string and renames the
    // calling thread only.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

/// The process's open-files limit (the soft RLIMIT_NOFILE); `None` if
/// unlimited or unknown.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (known && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Starts a single-threaded Tokio runtime on a new low-priority thread, for
/// I/O that must not compete with serving (reading 10,000-stream scrape
/// bodies costs the serving threads milliseconds); it runs as long as the
/// process does.
pub fn background_runtime(name: &str) -> std::io::Result<tokio::runtime::Handle> {
    let (handle_sender, handle) = std::sync::mpsc::channel();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        lower_thread_priority();
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => {
                let _ = handle_sender.send(Ok(runtime.handle().clone()));
                runtime.block_on(std::future::pending::<()>());
            }
            Err(error) => {
                let _ = handle_sender.send(Err(error));
            }
        }
    })?;
    handle.recv().map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn long_work_runs_on_the_asking_thread_on_either_kind_of_runtime() {
        let current_thread = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let multi_thread = tokio::runtime::Builder::new_multi_thread().worker_threads(1).build().unwrap();
        for runtime in [current_thread, multi_thread] {
            let task = runtime.spawn(async { (thread::current().id(), run_long(|| thread::current().id())) });
            let (asked, ran) = runtime.block_on(task).unwrap();
            assert_eq!(asked, ran);
        }
    }

    #[tokio::test]
    async fn background_work_reuses_named_low_priority_threads() {
        let job = || {
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
            // SAFETY: sched_getscheduler only reads the calling thread's policy.
            let policy = unsafe { libc::sched_getscheduler(0) };
            (thread::current().id(), comm.trim_end().to_owned(), policy)
        };
        const JOBS: usize = 10;
        let mut threads = std::collections::HashSet::new();
        for _ in 0..JOBS {
            let (thread, name, policy) = run_in_background(c"test-job", job).await.unwrap();
            assert_eq!((&*name, policy), ("test-job", libc::SCHED_IDLE));
            threads.insert(thread);
            // Other tests share the pool: give the thread time to become idle.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(threads.len() < JOBS, "a thread was started for every job");
    }
}
