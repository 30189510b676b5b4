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

// Spins (politely) until done() holds.
template <class Pred>
void spin_until(Pred done) {
    for (int polls = 1; !done(); ++polls) {
        MF_CPU_RELAX();
        if (polls % kPollsPerYield == 0) std::this_thread::yield();
    }
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) : n_threads_(std::max(1, n_threads)) {
    workers_.reserve(size_t(n_threads_ - 1));
    for (int t = 1; t < n_threads_; ++t) workers_.emplace_back([this, t] { worker_main(t); });
}

ThreadPool::~ThreadPool() {
    stop_.store(true);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(2);
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
    // Close the previous job, then wait for workers still inside it (they are only finding its
    // counter exhausted) before its fields are overwritten. A worker that joins from now on sees
    // the odd generation and backs out without reading them.
    generation_.fetch_add(1, std::memory_order_seq_cst);
    spin_until([&] { return active_.load(std::memory_order_seq_cst) == 0; });
    job_fn_ = fn;
    job_ctx_ = ctx;
    job_n_ = n_tasks;
    // About four chunks per thread: enough to even out uneven rows and threads the OS preempts,
    // few enough that the shared counter is not contended.
    job_chunk_ = std::max(min_chunk, (n_tasks + 4 * n_threads_ - 1) / (4 * n_threads_));
    next_task_.store(0, std::memory_order_relaxed);
    done_tasks_.store(0, std::memory_order_relaxed);
    // seq_cst pairs with a sleeper's seq_cst increment of sleeping_: either the sleeper sees the
    // open job before waiting, or we see it sleeping and notify under the mutex.
    generation_.fetch_add(1, std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_seq_cst) > 0) {
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
    }
    work(0);
    // Only finished tasks are waited for, not every worker: one the OS has descheduled, or that is
    // still waking up, would otherwise hold every op back by a scheduler time slice.
    spin_until([&] { return done_tasks_.load(std::memory_order_acquire) == job_n_; });
}

void ThreadPool::work(int thread) {
    for (;;) {
        const int64_t begin = next_task_.fetch_add(job_chunk_, std::memory_order_relaxed);
        if (begin >= job_n_) return;
        const int64_t end = std::min(job_n_, begin + job_chunk_);
        job_fn_(job_ctx_, begin, end, thread);
        done_tasks_.fetch_add(end - begin, std::memory_order_release);
    }
}

uint64_t ThreadPool::wait_for_job(uint64_t seen) {
    auto open_job = [&](uint64_t g) { return g != seen && (g & 1) == 0; };
    const auto spin_deadline = std::chrono::steady_clock::now() + kSpinTime;
    for (int polls = 1;; ++polls) {
        const uint64_t g = generation_.load(std::memory_order_acquire);
        if (open_job(g) || stop_.load(std::memory_order_relaxed)) return g;
        MF_CPU_RELAX();
        if (polls % kPollsPerYield == 0) {
            std::this_thread::yield();
            if (std::chrono::steady_clock::now() > spin_deadline) break;
        }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleeping_.fetch_add(1, std::memory_order_seq_cst);
    uint64_t g = 0;
    wake_.wait(lock, [&] {
        g = generation_.load(std::memory_order_seq_cst);
        return open_job(g) || stop_.load();
    });
    sleeping_.fetch_sub(1, std::memory_order_relaxed);
    return g;
}

void ThreadPool::worker_main(int thread) {
    uint64_t seen = 0;
    for (;;) {
        const uint64_t gen = wait_for_job(seen);
        if (stop_.load()) return;
        seen = gen;
        // Join, then re-check the job is still the open one: if the caller has closed it since (it
        // finished without us), its fields may already be changing and we must not read them.
        active_.fetch_add(1, std::memory_order_seq_cst);
        if (generation_.load(std::memory_order_seq_cst) == gen) work(thread);
        active_.fetch_sub(1, std::memory_order_seq_cst);
    }
}

}  // namespace mf
