// Computation graphs: topological ordering of recorded ops, and the memory planner that packs
// intermediate tensors into one arena, reusing a tensor's bytes once its last reader has run.
#pragma once

#include <cstddef>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/tensor.h"

namespace mf {

class Backend;

struct Graph {
    std::vector<Tensor*> nodes;  // tensors made by ops, in an order where sources come first
    std::vector<Tensor*> leafs;  // tensors with no op (weights, inputs) the nodes read
    std::unordered_set<const Tensor*> visited;  // nodes and leafs, so repeated expands stay linear
    // Set by allocate_graph to a value no allocation had before (0: never allocated). An allocated
    // graph is fixed: its nodes, their shapes, strides, parameters and memory do not change (build
    // and allocate anew for that), so a backend may take an equal stamp for the same graph and skip
    // what it derived from it last time (CudaBackend's signature), as compute_graph skips its check.
    uint64_t stamp = 0;
    // The backend compute_graph found able to run every node at this stamp (a cache of that check).
    mutable const Backend* checked_on = nullptr;
};

// Adds t and everything it depends on to g (each tensor once), keeping dependency order.
void graph_expand(Graph& g, Tensor* t);
// A graph computing all of outputs; each output gets TENSOR_OUTPUT so its memory is kept.
Graph build_graph(const std::vector<Tensor*>& outputs);

// The tensor whose memory t lives in (t itself unless t is a view or a cpy into another tensor).
inline Tensor* memory_owner(Tensor* t) { return t->view_src ? t->view_src : t; }
inline const Tensor* memory_owner(const Tensor* t) { return t->view_src ? t->view_src : t; }

struct MemoryPlan {
    size_t arena_size = 0;                              // bytes the arena must have
    std::unordered_map<const Tensor*, size_t> offsets;  // arena offset of every planned tensor
    size_t naive_size = 0;                              // bytes without reuse (for reporting)
};

// Plans arena space for every graph tensor that owns memory and has none yet: op results, and
// leafs flagged TENSOR_INPUT. Inputs and outputs live for the whole graph; other results are freed
// after their last reader (through views too) and their bytes reused (best fit, adjacent merge), but
// not by the next result placed: no result lies over the sources of the nodes just before it, so a
// backend may fuse a node into its successor.
MemoryPlan plan_memory(const Graph& g, size_t alignment);

}  // namespace mf
