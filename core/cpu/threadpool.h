// A persistent thread pool for the CPU backend: n_threads - 1 workers plus the calling thread.
// Workers spin briefly between jobs (ops arrive back to back) and then sleep on a condition variable.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace mf {

class ThreadPool {
public:
    // n_threads >= 1 counts the caller; n_threads - 1 worker threads start now and live until destruction.
    explicit ThreadPool(int n_threads);
    ~ThreadPool();
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    int n_threads() const { return n_threads_; }

    // Calls fn(begin, end, thread) over disjoint ranges covering [0, n_tasks), thread in [0, n_threads);
    // returns once every range is done. Ranges are handed out dynamically in chunks of at least
    // min_chunk tasks, so which thread runs a task varies between calls: a task's result must not
    // depend on the thread (use `thread` only to pick per-thread scratch). Not reentrant.
    template <class Fn>
    void parallel_for(int64_t n_tasks, Fn&& fn, int64_t min_chunk = 1) {
        using F = std::remove_reference_t<Fn>;
        run(n_tasks, min_chunk, [](void* ctx, int64_t b, int64_t e, int t) { (*static_cast<F*>(ctx))(b, e, t); },
            const_cast<void*>(static_cast<const void*>(&fn)));
    }

private:
    using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end, int thread);

    void run(int64_t n_tasks, int64_t min_chunk, RangeFn fn, void* ctx);
    // Claims chunks of the current job until none is left.
    void work(int thread);
    void worker_main(int thread);
    // Blocks until generation_ holds an open job newer than seen (or the pool stops); returns it.
    uint64_t wait_for_job(uint64_t seen);

    int n_threads_;
    std::vector<std::thread> workers_;

    // The current job. The caller writes it while generation_ is odd (closed) and no worker is
    // inside a job (active_ == 0); workers read it only after seeing the even generation again.
    RangeFn job_fn_ = nullptr;
    void* job_ctx_ = nullptr;
    int64_t job_n_ = 0;
    int64_t job_chunk_ = 1;

    alignas(64) std::atomic<int64_t> next_task_{0};   // first unclaimed task
    alignas(64) std::atomic<int64_t> done_tasks_{0};  // tasks finished; the job ends at job_n_
    alignas(64) std::atomic<uint64_t> generation_{0};  // even: a job is open; odd: being replaced
    alignas(64) std::atomic<int> active_{0};           // workers between joining and leaving a job
    std::atomic<int> sleeping_{0};
    std::atomic<bool> stop_{false};
    std::mutex mutex_;
    std::condition_variable wake_;
};

}  // namespace mf
