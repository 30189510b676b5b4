// The Backend interface every device implements (the CPU in core/cpu/, CUDA in cuda/), device
// buffers, graph allocation on a backend, and the registry that picks the best available device.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/graph.h"
#include "core/tensor.h"

namespace mf {

class Backend;

// A block of device memory; frees itself through its backend. Or (owned false) memory the backend
// computes on in place without having allocated it, a model file's mapping (maps_weights):
// never freed through the backend, and never written (the mapping is read-only).
class Buffer {
public:
    Buffer(Backend* backend, void* base, size_t size, bool owned = true)
        : backend_(backend), base_(base), size_(size), owned_(owned) {}
    ~Buffer();
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    void* base() const { return base_; }
    size_t size() const { return size_; }
    Backend* backend() const { return backend_; }
    bool owned() const { return owned_; }

private:
    Backend* backend_;
    void* base_;
    size_t size_;
    bool owned_;
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual const char* name() const = 0;
    // Device memory of at least size bytes, aligned to alignment(); throws Error when out of memory.
    virtual std::unique_ptr<Buffer> alloc(size_t size) = 0;
    // Returns memory obtained by alloc (called by ~Buffer).
    virtual void free_memory(void* base) = 0;
    virtual size_t alignment() const { return 64; }
    // True when a model's weights may stay in the file's read-only mapping (32-byte aligned) instead
    // of being copied into alloc's memory (load_model): a backend computing on host memory (the CPU,
    // unless made to copy).
    virtual bool maps_weights() const { return false; }
    // The device's peak memory bandwidth in bytes/s, or 0 when unknown (bench reports the fraction).
    virtual double peak_bandwidth() const { return 0.0; }
    // Bytes of device memory in use as the device itself reports it (CUDA: total minus free over the
    // whole GPU; CPU: the bytes this backend's buffers hold), so a difference taken around an
    // allocation measures what it really cost, allocator rounding included. 0 when unknown.
    virtual size_t memory_used() const { return 0; }
    // Copies size bytes between host memory and t's data at byte offset.
    virtual void upload(Tensor* t, const void* src, size_t offset, size_t size) = 0;
    virtual void download(const Tensor* t, void* dst, size_t offset, size_t size) = 0;
    // True exactly when compute() can run this node (types, shapes and strides included).
    virtual bool supports_op(const Tensor* node) const = 0;
    // Runs every node of an allocated graph in order (may return before the device finishes).
    virtual void compute(const Graph& g) = 0;
    // Waits until all work queued on the backend has finished.
    virtual void synchronize() = 0;
    // The device's own time spent running compute()'s work, summed since timing was switched on
    // (`minfer bench --busy`): what a step costs the device apart from the host's share of it. A
    // backend that cannot time itself returns false from time_computes and < 0 from computed_seconds.
    virtual bool time_computes(bool /*on*/) { return false; }
    virtual double computed_seconds() { return -1.0; }
    // One line on how the backend ran the last graph it computed, or empty (`minfer bench --busy`
    // prints it; CUDA: the kernels of the last captured step and their longest chain of dependencies,
    // and the nodes folded into a neighbour's launch).
    virtual std::string last_graph_report() const { return {}; }
    // Page-locks host memory that results are read into again and again (a session's logits), so
    // those downloads go straight into it at the bus's speed instead of through the driver's staging
    // (CUDA: 400 KB of logits took ~75 us pageable). unpin_host(p) undoes it before p is freed. A
    // backend without a bus between it and the host does nothing; so does one that cannot pin (the
    // downloads are then only slower). An upload from pinned memory may still be reading it after
    // upload returns: write it again only after the next synchronize.
    virtual void pin_host(void* /*p*/, size_t /*size*/) {}
    virtual void unpin_host(void* /*p*/) {}
};

// Host memory pinned on a backend for as long as this lives (Backend::pin_host); it must die before
// the memory is freed.
class HostPin {
public:
    HostPin() = default;
    HostPin(Backend& backend, void* p, size_t size) : backend_(&backend), p_(p) { backend.pin_host(p, size); }
    HostPin(const HostPin&) = delete;
    HostPin& operator=(const HostPin&) = delete;
    ~HostPin() {
        if (p_) backend_->unpin_host(p_);
    }

private:
    Backend* backend_ = nullptr;
    void* p_ = nullptr;
};

// Uploads a whole tensor from contiguous host memory / downloads it into one.
void tensor_set(Tensor* t, const void* src);
void tensor_get(const Tensor* t, void* dst);

// Allocates one buffer holding every tensor in ts that has no data (each at an aligned offset) and
// points their data at it. Used for weights and caches, which outlive any one graph.
std::unique_ptr<Buffer> allocate_tensors(Backend& backend, const std::vector<Tensor*>& ts);

// Plans g's memory, allocates the arena on backend and sets data for every node and input.
// The returned buffer must outlive every compute of g.
std::unique_ptr<Buffer> allocate_graph(Backend& backend, Graph& g);
// As above, placing g in arena, which is replaced by a larger buffer only when g needs more bytes
// (a session computes one graph per step and keeps one arena).
void allocate_graph(Backend& backend, Graph& g, std::unique_ptr<Buffer>& arena);

// Checks that backend supports every node (throws Error naming the first op it cannot run), then
// computes g and waits for it.
void compute_graph(Backend& backend, const Graph& g);

// ---- registry -----------------------------------------------------------------------------------
struct BackendEntry {
    std::string name;  // "cpu", "cuda"
    int priority;      // higher wins in best_backend()
    // True when the device is usable here; otherwise fills *why (e.g. "no CUDA device found").
    std::function<bool(std::string* why)> available;
    std::function<std::unique_ptr<Backend>()> create;
};

void register_backend(BackendEntry entry);
// Every registered backend, in registration order.
const std::vector<BackendEntry>& backend_entries();
// The named backend; throws Error naming the choices, or why that device is not usable.
std::unique_ptr<Backend> create_backend(const std::string& name);
// The available backend with the highest priority (the CPU when nothing else is usable).
std::unique_ptr<Backend> best_backend();

// Defined above core (tools/backends.cpp), so core never names CUDA: registers cpu and, when this
// build has it, cuda. Programs call it once at start-up; calling it again does nothing.
void register_builtin_backends();

}  // namespace mf
