// Backend-independent parts of the backend layer: buffers, tensor transfer, graph allocation,
// the supports_op check before compute, and the backend registry.
#include "core/backend.h"

#include <algorithm>
#include <atomic>

#include "core/common.h"

namespace mf {

Buffer::~Buffer() {
    if (base_ && owned_) backend_->free_memory(base_);
}

void tensor_set(Tensor* t, const void* src) {
    MF_ASSERT(t->data && t->buffer);
    MF_ASSERT_MSG(t->buffer->owned(), "tensor_set: the tensor is in a read-only file mapping");
    MF_ASSERT_MSG(t->is_contiguous(), "tensor_set needs a contiguous tensor");
    t->buffer->backend()->upload(t, src, 0, t->nbytes());
}

void tensor_get(const Tensor* t, void* dst) {
    MF_ASSERT(t->data && t->buffer);
    MF_ASSERT_MSG(t->is_contiguous(), "tensor_get needs a contiguous tensor");
    t->buffer->backend()->download(t, dst, 0, t->nbytes());
}

namespace {

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Points every view's data at its owner's memory (owners must be placed already).
void bind_view(Tensor* t) {
    Tensor* owner = t->view_src;
    MF_ASSERT_MSG(owner->data, "a view's source has no memory");
    t->data = static_cast<char*>(owner->data) + t->view_offs;
    t->buffer = owner->buffer;
}

}  // namespace

std::unique_ptr<Buffer> allocate_tensors(Backend& backend, const std::vector<Tensor*>& ts) {
    const size_t alignment = backend.alignment();
    size_t total = 0;
    for (const Tensor* t : ts)
        if (!t->data && !t->view_src) total = align_up(total, alignment) + t->nbytes();
    auto buf = backend.alloc(std::max<size_t>(total, 1));
    size_t offset = 0;
    for (Tensor* t : ts) {
        if (t->data || t->view_src) continue;
        offset = align_up(offset, alignment);
        t->data = static_cast<char*>(buf->base()) + offset;
        t->buffer = buf.get();
        offset += t->nbytes();
    }
    for (Tensor* t : ts)
        if (t->view_src && !t->data) bind_view(t);
    return buf;
}

std::unique_ptr<Buffer> allocate_graph(Backend& backend, Graph& g) {
    std::unique_ptr<Buffer> arena;
    allocate_graph(backend, g, arena);
    return arena;
}

void allocate_graph(Backend& backend, Graph& g, std::unique_ptr<Buffer>& arena) {
    static std::atomic<uint64_t> last_stamp{0};
    g.stamp = ++last_stamp;
    g.checked_on = nullptr;
    const MemoryPlan plan = plan_memory(g, backend.alignment());
    if (!arena || arena->size() < plan.arena_size) {
        arena.reset();  // free the old arena before taking a bigger one
        arena = backend.alloc(std::max<size_t>(plan.arena_size, 1));
    }
    Buffer* buf = arena.get();
    auto place = [&](Tensor* t) {
        auto it = plan.offsets.find(t);
        if (it != plan.offsets.end()) {
            t->data = static_cast<char*>(buf->base()) + it->second;
            t->buffer = buf;
        }
    };
    for (Tensor* t : g.leafs) {
        place(t);
        MF_ASSERT_MSG(t->data || t->view_src, "graph leaf has no memory: mark it TENSOR_INPUT or allocate it");
    }
    for (Tensor* t : g.leafs)
        if (t->view_src && !t->data) bind_view(t);
    for (Tensor* t : g.nodes) {
        if (t->view_src) {
            bind_view(t);
        } else {
            place(t);
        }
        MF_ASSERT(t->data);
    }
}

void compute_graph(Backend& backend, const Graph& g) {
    // A decode step computes the same graph again and again: the check costs a host pass over its
    // nodes (~1,500 for DeepSeek-V2-Lite) each time, while the device waits for the step's launch.
    if (!g.stamp || g.checked_on != &backend) {
        for (const Tensor* n : g.nodes) {
            if (!backend.supports_op(n)) {
                throw Error(strfmt("the %s backend cannot run %s on %s (src0 %s)", backend.name(), op_name(n->op),
                                   describe(n).c_str(), n->src[0] ? describe(n->src[0]).c_str() : "none"));
            }
        }
        g.checked_on = &backend;
    }
    backend.compute(g);
    backend.synchronize();
}

// ---- registry -------------------------------------------------------------------------------------

namespace {
std::vector<BackendEntry>& registry() {
    static std::vector<BackendEntry> entries;
    return entries;
}
}  // namespace

void register_backend(BackendEntry entry) {
    for (auto& e : registry())
        MF_ASSERT_MSG(e.name != entry.name, "backend registered twice");
    registry().push_back(std::move(entry));
}

const std::vector<BackendEntry>& backend_entries() { return registry(); }

std::unique_ptr<Backend> create_backend(const std::string& name) {
    std::string names;
    for (const auto& e : registry()) {
        if (e.name == name) {
            std::string why;
            if (!e.available(&why)) throw Error(strfmt("backend '%s' is not usable here: %s", name.c_str(), why.c_str()));
            return e.create();
        }
        names += (names.empty() ? "" : ", ") + e.name;
    }
    throw Error(strfmt("unknown backend '%s' (this build has: %s)", name.c_str(), names.c_str()));
}

std::unique_ptr<Backend> best_backend() {
    const BackendEntry* best = nullptr;
    for (const auto& e : registry()) {
        std::string why;
        if (e.available(&why) && (!best || e.priority > best->priority)) best = &e;
    }
    if (!best) throw Error("no backend is available (was register_builtin_backends() called?)");
    return best->create();
}

}  // namespace mf
