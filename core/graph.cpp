// Graph ordering and the arena memory planner.
#include "core/graph.h"

#include <algorithm>
#include <iterator>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/common.h"

namespace mf {

namespace {

// Depth-first post-order: a tensor is appended after everything it reads (and, for views and
// cpy-into, after the tensor whose memory it shares, so that tensor is allocated first).
void visit(Graph& g, std::unordered_set<const Tensor*>& seen, Tensor* t) {
    if (!t || seen.count(t)) return;
    seen.insert(t);
    for (Tensor* s : t->src) visit(g, seen, s);
    visit(g, seen, t->view_src);
    if (t->op == Op::NONE) {
        g.leafs.push_back(t);
    } else {
        g.nodes.push_back(t);
    }
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Free ranges of the arena, kept sorted by offset so neighbours can merge.
class FreeList {
public:
    // Best fit among free ranges; otherwise grows the arena (reusing a free range at its end).
    size_t take(size_t size) {
        auto best = ranges_.end();
        for (auto it = ranges_.begin(); it != ranges_.end(); ++it)
            if (it->size >= size && (best == ranges_.end() || it->size < best->size)) best = it;
        if (best != ranges_.end()) {
            size_t off = best->offset;
            best->offset += size;
            best->size -= size;
            if (best->size == 0) ranges_.erase(best);
            return off;
        }
        if (!ranges_.empty() && ranges_.back().offset + ranges_.back().size == end_) {
            size_t off = ranges_.back().offset;
            ranges_.pop_back();
            end_ = off + size;
            return off;
        }
        size_t off = end_;
        end_ += size;
        return off;
    }

    void give(size_t offset, size_t size) {
        auto it = std::lower_bound(ranges_.begin(), ranges_.end(), offset,
                                   [](const Range& r, size_t o) { return r.offset < o; });
        it = ranges_.insert(it, Range{offset, size});
        auto next = std::next(it);
        if (next != ranges_.end() && it->offset + it->size == next->offset) {
            it->size += next->size;
            ranges_.erase(next);
        }
        if (it != ranges_.begin()) {
            auto prev = std::prev(it);
            if (prev->offset + prev->size == it->offset) {
                prev->size += it->size;
                ranges_.erase(it);
            }
        }
    }

    size_t end() const { return end_; }

private:
    struct Range {
        size_t offset, size;
    };
    std::vector<Range> ranges_;
    size_t end_ = 0;
};

}  // namespace

void graph_expand(Graph& g, Tensor* t) { visit(g, g.visited, t); }

Graph build_graph(const std::vector<Tensor*>& outputs) {
    Graph g;
    for (Tensor* t : outputs) {
        MF_ASSERT(t);
        t->flags |= TENSOR_OUTPUT;
        visit(g, g.visited, t);
    }
    return g;
}

MemoryPlan plan_memory(const Graph& g, size_t alignment) {
    MF_ASSERT(alignment > 0 && (alignment & (alignment - 1)) == 0);
    MemoryPlan plan;
    FreeList free_list;

    auto needs_arena = [](const Tensor* t) {
        return !t->view_src && !t->data && !(t->flags & TENSOR_PARAM) &&
               (t->op != Op::NONE || (t->flags & TENSOR_INPUT));
    };
    auto place = [&](const Tensor* t) {
        const size_t size = align_up(std::max<size_t>(t->nbytes(), 1), alignment);
        plan.offsets[t] = free_list.take(size);
        plan.naive_size += size;
    };

    // Inputs first: they are written before compute and must not overlap anything.
    for (const Tensor* t : g.leafs)
        if (needs_arena(t)) place(t);

    // The last node (by index) that reads each memory owner.
    std::unordered_map<const Tensor*, size_t> last_use;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Tensor* n = g.nodes[i];
        for (const Tensor* s : n->src)
            if (s) last_use[memory_owner(const_cast<Tensor*>(s))] = i;
        if (n->view_src) last_use[n->view_src] = std::max(last_use[n->view_src], i);
    }

    // Owners of outputs (an output may be a view) stay alive to the end.
    std::unordered_set<const Tensor*> kept;
    for (Tensor* n : g.nodes)
        if (n->flags & TENSOR_OUTPUT) kept.insert(memory_owner(n));

    // Bytes of owners whose last reader has run, given back only once the next result has been placed:
    // a result never lies over the sources of the node before it (views and results not placed in
    // between), so a backend may fuse a node into the next one, one kernel writing the second's result
    // while it still reads the first's sources.
    std::vector<std::pair<size_t, size_t>> held;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Tensor* n = g.nodes[i];
        if (needs_arena(n)) {
            place(n);
            for (const auto& [offset, size] : held) free_list.give(offset, size);
            held.clear();
        }
        // Release owners whose last reader was this node. Releasing after placing n keeps n from
        // overwriting its own sources while it runs.
        auto release = [&](const Tensor* owner) {
            auto it = plan.offsets.find(owner);
            if (it == plan.offsets.end()) return;
            if ((owner->flags & TENSOR_INPUT) || kept.count(owner)) return;
            auto lu = last_use.find(owner);
            if (lu == last_use.end() || lu->second != i) return;
            held.emplace_back(it->second, align_up(std::max<size_t>(owner->nbytes(), 1), alignment));
            last_use.erase(lu);
        };
        for (const Tensor* s : n->src)
            if (s) release(memory_owner(const_cast<Tensor*>(s)));
        if (n->view_src) release(n->view_src);
        // A result nobody reads (and not an output) is dead as soon as it is written.
        if (needs_arena(n) && !last_use.count(n) && !kept.count(n))
            free_list.give(plan.offsets[n], align_up(std::max<size_t>(n->nbytes(), 1), alignment));
    }
    plan.arena_size = free_list.end();
    return plan;
}

}  // namespace mf
