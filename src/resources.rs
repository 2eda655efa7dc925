//! How the adapter uses the machine: background work (reading scrapes,
//! parsing, merging) runs on low-priority threads so that answering queries
//! is never stuck behind it, and the allocator is told to hand memory of
//! dropped snapshots back to the operating system.

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
/// core (measured here: woken serving threads waited up to a 4 ms tick
/// behind a merge), but it does switch on a yield.
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

/// Starts `work` on a new low-priority thread at once; the returned future
/// yields its result, or `None` if the thread could not be started or did
/// not finish its work.
pub fn run_in_background<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> impl std::future::Future<Output = Option<T>> {
    let (done, result) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        lower_thread_priority();
        let _ = done.send(work());
    });
    if let Err(error) = &spawned {
        tracing::error!(%error, "cannot start a background thread");
    }
    async move { result.await.ok() }
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
}
