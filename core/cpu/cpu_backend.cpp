// The CPU backend: aligned host buffers, the op support table, and the dispatch of graph nodes to
// the kernels of core/cpu/ops_*.cpp, which spread their rows over the backend's thread pool.
#include "core/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/common.h"
#include "core/cpu/cpu_ops.h"

namespace mf {

namespace {

constexpr size_t kAlignment = 64;  // one cache line; also what AVX-512 loads like

constexpr size_t kHugePage = size_t(2) << 20;

// A buffer of a huge page or more starts on a huge-page boundary and asks for transparent huge pages
// (best effort: a kernel without them ignores the advice). Under the kernel's default THP mode,
// `madvise`, they were 4 KiB pages; in huge pages copied weights decoded ~13% faster on a 2-vCPU Xeon
// VM (V2-Lite q4_0 --no-mmap, docs/PERFORMANCE.md "Nineteenth session").
void* aligned_host_alloc(size_t bytes) {
    void* p = nullptr;
    const bool huge = bytes >= kHugePage;
    if (posix_memalign(&p, huge ? kHugePage : kAlignment, std::max<size_t>(bytes, kAlignment)) != 0) return nullptr;
    if (huge) (void)madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

class CpuBackend : public Backend {
public:
    CpuBackend(int n_threads, bool map_weights) : ctx_(n_threads), map_weights_(map_weights) {}

    const char* name() const override { return "cpu"; }

    std::unique_ptr<Buffer> alloc(size_t size) override {
        void* p = aligned_host_alloc(size);
        if (!p) throw Error(strfmt("out of host memory: %zu bytes", size));
        {
            std::lock_guard<std::mutex> lock(mutex_);
            sizes_[p] = size;
            in_use_ += size;
        }
        return std::make_unique<Buffer>(this, p, size);
    }

    void free_memory(void* base) override {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            const auto it = sizes_.find(base);
            MF_ASSERT_MSG(it != sizes_.end(), "free_memory: not a buffer of this backend");
            in_use_ -= it->second;
            sizes_.erase(it);
        }
        std::free(base);
    }

    size_t memory_used() const override {
        std::lock_guard<std::mutex> lock(mutex_);
        return in_use_;
    }

    size_t alignment() const override { return kAlignment; }
    bool maps_weights() const override { return map_weights_; }

    void upload(Tensor* t, const void* src, size_t offset, size_t size) override {
        MF_ASSERT(t->data);
        std::memcpy(static_cast<char*>(t->data) + offset, src, size);
    }

    void download(const Tensor* t, void* dst, size_t offset, size_t size) override {
        MF_ASSERT(t->data);
        std::memcpy(dst, static_cast<const char*>(t->data) + offset, size);
    }

    bool supports_op(const Tensor* node) const override {
        switch (node->op) {
            case Op::NONE:
            case Op::VIEW: return true;
            case Op::MUL_MAT: return supports_mul_mat(node);
            case Op::ADD:
            case Op::MUL:
            case Op::SCALE:
            case Op::SILU:
            case Op::GELU:
            case Op::SWIGLU:
            case Op::GEGLU:
            case Op::CONCAT: return supports_elementwise(node);
            case Op::RMS_NORM:
            case Op::ROPE:
            case Op::SOFT_MAX: return supports_norm_rope(node);
            case Op::GET_ROWS:
            case Op::SET_ROWS:
            case Op::CPY: return supports_rows(node);
            case Op::FLASH_ATTN:
            case Op::ATTN_FUSED:
            case Op::HADAMARD: return supports_attention(node);
            case Op::MUL_MAT_ID:
            case Op::TOP_K:
            case Op::SUM_ROWS:
            case Op::DIV:
            case Op::SIGMOID: return supports_moe(node);
            case Op::COUNT: break;
        }
        return false;
    }

    void compute(const Graph& g) override {
        for (Tensor* node : g.nodes) {
            MF_ASSERT_MSG(node->data, "compute: graph is not allocated");
            switch (node->op) {
                case Op::NONE:
                case Op::VIEW: break;
                case Op::MUL_MAT: compute_mul_mat(ctx_, node); break;
                case Op::ADD:
                case Op::MUL:
                case Op::SCALE:
                case Op::SILU:
                case Op::GELU:
                case Op::SWIGLU:
                case Op::GEGLU:
                case Op::CONCAT: compute_elementwise(ctx_, node); break;
                case Op::RMS_NORM:
                case Op::ROPE:
                case Op::SOFT_MAX: compute_norm_rope(ctx_, node); break;
                case Op::GET_ROWS:
                case Op::SET_ROWS:
                case Op::CPY: compute_rows(ctx_, node); break;
                case Op::FLASH_ATTN:
                case Op::ATTN_FUSED:
                case Op::HADAMARD: compute_attention(ctx_, node); break;
                case Op::MUL_MAT_ID:
                case Op::TOP_K:
                case Op::SUM_ROWS:
                case Op::DIV:
                case Op::SIGMOID: compute_moe(ctx_, node); break;
                case Op::COUNT: MF_ASSERT_MSG(false, "compute: Op::COUNT is not an op");
            }
        }
    }

    // Every kernel has finished when compute returns.
    void synchronize() override {}

private:
    CpuContext ctx_;
    bool map_weights_;
    mutable std::mutex mutex_;                  // guards the two below (buffers may be freed anywhere)
    std::unordered_map<void*, size_t> sizes_;  // live buffers and their sizes
    size_t in_use_ = 0;                         // their sum
};

}  // namespace

void* ScratchBuffer::get(size_t bytes) {
    if (bytes > size_ || !data_) {
        // Grow geometrically so a slowly growing demand (longer contexts) reallocates rarely.
        const size_t want = round_up(std::max(bytes, size_ + size_ / 2), kAlignment);
        data_.reset();
        void* p = aligned_host_alloc(want);
        if (!p) throw Error(strfmt("out of host memory: %zu bytes", want));
        data_.reset(p);
        size_ = want;
    }
    return data_.get();
}

void CpuContext::reserve_per_thread(size_t bytes) {
    per_thread_stride_ = round_up(std::max<size_t>(bytes, 1), kAlignment);
    per_thread_base_ = static_cast<char*>(per_thread_.get(per_thread_stride_ * size_t(pool.n_threads())));
}

std::unique_ptr<Backend> make_cpu_backend(int n_threads, bool map_weights) {
    if (n_threads <= 0) n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
    return std::make_unique<CpuBackend>(n_threads, map_weights);
}

}  // namespace mf
