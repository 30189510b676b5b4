// The CPU backend's thread pool: one job at a time, handed out as dynamically claimed chunks.
// Wake-up is a generation counter workers spin on, with a condition variable once they give up spinning.
#include "core/cpu/threadpool.h"

#include <algorithm>
#include <chrono>

#include "core/common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MF_CPU_RELAX() _mm_pause()
#else
#define MF_CPU_RELAX() ((void)0)
#endif

namespace mf {

namespace {

// Ops of one token arrive microseconds apart, so a worker spins this long before sleeping; waking
// a sleeping thread costs a futex call and tens of microseconds of scheduler latency.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// Yield every few polls so spinning threads do not starve others when cores are oversubscribed.
constexpr int kPollsPerYield = 64;

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    workers_.reserve(size_t(n_threads_ - 1));
    for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_main(t); });
}

ThreadPool::~ThreadPool() {
    stop_.store(true);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
}

void ThreadPool::run(int64_t n_tasks, int64_t min_chunk, RangeFn fn, void* ctx) {
    if (n_tasks <= 0) return;
    min_chunk = std::max<int64_t>(1, min_chunk);
    if (n_threads_ == 1 || n_tasks <= min_chunk) {
        fn(ctx, 0, n_tasks, 0);
        return;
    }
    // About four chunks per thread: enough to even out uneven rows and threads the OS preempts,
    // few enough that the shared counter is not contended.
    job_fn_ = fn;
    job_ctx_ = ctx;
    job_n_ = n_tasks;
    job_chunk_ = std::max(min_chunk, (n_tasks + 4 * n_threads_ - 1) / (4 * n_threads_));
    next_task_.store(0, std::memory_order_relaxed);
    busy_workers_.store(n_threads_ - 1, std::memory_order_relaxed);
    // seq_cst pairs with the sleeper's seq_cst increment of sleeping_: either the sleeper sees the
    // new generation before waiting, or we see it sleeping and notify under the mutex.
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
    }
    work(0);
    // Every worker must acknowledge the job before its fields may be overwritten by the next one.
    int polls = 0;
    while (busy_workers_.load(std::memory_order_acquire) != 0) {
        MF_CPU_RELAX();
        if (++polls % kPollsPerYield == 0) std::this_thread::yield();
    }
}

void ThreadPool::work(int thread) {
    for (;;) {
        const int64_t begin = next_task_.fetch_add(job_chunk_, std::memory_order_relaxed);
        if (begin >= job_n_) return;
        job_fn_(job_ctx_, begin, std::min(job_n_, begin + job_chunk_), thread);
    }
}

void ThreadPool::worker_main(int thread) {
    uint64_t seen = 0;
    for (;;) {
        uint64_t gen = generation_.load(std::memory_order_acquire);
        if (gen == seen) {
            const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
            int polls = 0;
            while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
                MF_CPU_RELAX();
                if (++polls % kPollsPerYield == 0) {
                    std::this_thread::yield();
                    if (std::chrono::steady_clock::now() > spin_until) break;
                }
            }
            if (gen == seen) {
                std::unique_lock<std::mutex> lock(mutex_);
                sleeping_.fetch_add(1, std::memory_order_seq_cst);
                wake_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
                sleeping_.fetch_sub(1, std::memory_order_relaxed);
                continue;
            }
        }
        if (stop_.load()) return;
        seen = gen;
        work(thread);
        busy_workers_.fetch_sub(1, std::memory_order_release);
    }
}

}  // namespace mf
