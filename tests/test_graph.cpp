// Graph building and the memory planner: dependency order, lazy recording, and arena reuse
// that never lets two live tensors share bytes.
#include <doctest/doctest.h>

#include <algorithm>
#include <unordered_map>

#include "core/graph.h"
#include "core/ops.h"
#include "test_util.h"

using namespace mf;

namespace {

size_t index_of(const std::vector<Tensor*>& v, const Tensor* t) {
    return size_t(std::find(v.begin(), v.end(), t) - v.begin());
}

// Checks that no two tensors whose lifetimes overlap were given overlapping arena bytes.
// Lifetime of an owner: [index where it is produced, last index where it (or a view of it) is read].
void check_no_live_overlap(const Graph& g, const MemoryPlan& plan) {
    std::unordered_map<const Tensor*, std::pair<size_t, size_t>> life;
    const size_t end = g.nodes.size();
    for (const Tensor* t : g.leafs)
        if (plan.offsets.count(t)) life[t] = {0, end};
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Tensor* n = g.nodes[i];
        if (plan.offsets.count(n)) life[n] = {i, (n->flags & TENSOR_OUTPUT) ? end : i};
    }
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Tensor* n = g.nodes[i];
        for (Tensor* s : n->src) {
            if (!s) continue;
            auto it = life.find(memory_owner(s));
            if (it != life.end()) it->second.second = std::max(it->second.second, i);
        }
    }
    for (auto& [a, la] : life) {
        for (auto& [b, lb] : life) {
            if (a >= b) continue;
            const bool live_together = la.first <= lb.second && lb.first <= la.second;
            if (!live_together) continue;
            const size_t a0 = plan.offsets.at(a), a1 = a0 + a->nbytes();
            const size_t b0 = plan.offsets.at(b), b1 = b0 + b->nbytes();
            INFO("tensors " << describe(a) << " and " << describe(b));
            CHECK((a1 <= b0 || b1 <= a0));
        }
    }
}

// Checks that no placed result lies over the sources of the nodes run since the result placed before
// it: a backend may fuse a node into the next one (one kernel writing the second's result while it
// reads the first's sources).
void check_next_result_apart(const Graph& g, const MemoryPlan& plan) {
    size_t since = 0;  // the first node whose sources the next placed result must avoid
    for (size_t j = 0; j < g.nodes.size(); ++j) {
        const Tensor* n = g.nodes[j];
        auto placed = plan.offsets.find(n);
        if (placed == plan.offsets.end()) continue;
        const size_t n0 = placed->second, n1 = n0 + n->nbytes();
        for (size_t i = since; i < j; ++i) {
            for (Tensor* s : g.nodes[i]->src) {
                if (!s) continue;
                auto it = plan.offsets.find(memory_owner(s));
                if (it == plan.offsets.end()) continue;
                const size_t s0 = it->second, s1 = s0 + memory_owner(s)->nbytes();
                INFO("result " << describe(n) << " and " << describe(g.nodes[i]) << "'s source " << describe(s));
                CHECK((n1 <= s0 || s1 <= n0));
            }
        }
        since = j;
    }
}

}  // namespace

TEST_CASE("ops only record nodes; nothing is computed while building") {
    Context ctx;
    Tensor* a = ctx.new_tensor_2d(DType::F32, 8, 4);
    Tensor* b = ctx.new_tensor_2d(DType::F32, 8, 4);
    Tensor* c = add(ctx, a, b);
    CHECK(c->op == Op::ADD);
    CHECK(c->src[0] == a);
    CHECK(c->src[1] == b);
    CHECK(c->data == nullptr);
}

TEST_CASE("build_graph orders every node after its sources and lists leafs once") {
    Context ctx;
    Tensor* x = ctx.new_tensor_2d(DType::F32, 16, 3);
    Tensor* w = ctx.new_tensor_2d(DType::F32, 16, 32);
    Tensor* h = mul_mat(ctx, w, x);
    Tensor* g = silu(ctx, h);
    Tensor* y = mul(ctx, g, h);   // h used twice
    Tensor* z = add(ctx, y, scale(ctx, y, 0.5f));
    Graph gr = build_graph({z});
    CHECK(gr.leafs.size() == 2);
    CHECK(gr.nodes.size() == 5);
    for (size_t i = 0; i < gr.nodes.size(); ++i)
        for (Tensor* s : gr.nodes[i]->src)
            if (s && s->op != Op::NONE) CHECK(index_of(gr.nodes, s) < i);
    CHECK((z->flags & TENSOR_OUTPUT) != 0);
}

TEST_CASE("the planner reuses memory along a chain and keeps live tensors apart") {
    Context ctx;
    Tensor* x = ctx.new_tensor_1d(DType::F32, 1024);
    x->flags |= TENSOR_INPUT;
    Tensor* t = x;
    for (int i = 0; i < 20; ++i) t = (i % 2) ? silu(ctx, t) : scale(ctx, t, 1.5f);
    Graph g = build_graph({t});
    const MemoryPlan plan = plan_memory(g, 64);
    // A chain needs the input and at most three results alive at once (the output among them): the
    // one being written, its source, and the source's source (not reused by the very next result).
    CHECK(plan.arena_size <= 4 * 4096);
    CHECK(plan.naive_size == 21 * 4096);
    check_no_live_overlap(g, plan);
    check_next_result_apart(g, plan);
}

TEST_CASE("views keep their owner alive until the view's last reader") {
    Context ctx;
    Tensor* x = ctx.new_tensor_2d(DType::F32, 64, 8);
    x->flags |= TENSOR_INPUT;
    Tensor* a = scale(ctx, x, 2.0f);                        // owner
    Tensor* v = view_2d(ctx, a, 32, 8, a->nb[1], 0);         // half of each row
    Tensor* b = silu(ctx, x);
    Tensor* c = silu(ctx, b);
    Tensor* d = cont(ctx, v);                                // reads a through the view, late
    Tensor* out = add(ctx, concat(ctx, d, d, 0), c);
    Graph g = build_graph({out});
    const MemoryPlan plan = plan_memory(g, 32);
    check_no_live_overlap(g, plan);
    check_next_result_apart(g, plan);
    CHECK(plan.offsets.count(v) == 0);   // views own no memory
}

TEST_CASE("the planner places tensors it must not touch nowhere: params, cpy targets") {
    Context ctx;
    Tensor* w = ctx.new_tensor_2d(DType::F32, 32, 32);
    w->flags |= TENSOR_PARAM;
    Tensor* cache = ctx.new_tensor_2d(DType::F16, 32, 16);
    cache->flags |= TENSOR_PARAM;
    Tensor* x = ctx.new_tensor_2d(DType::F32, 32, 2);
    x->flags |= TENSOR_INPUT;
    Tensor* y = mul_mat(ctx, w, x);
    Tensor* store = cpy(ctx, y, view_2d(ctx, cache, 32, 2, cache->nb[1], 4 * cache->nb[1]));
    Graph g = build_graph({store, y});
    const MemoryPlan plan = plan_memory(g, 64);
    CHECK(plan.offsets.count(w) == 0);
    CHECK(plan.offsets.count(cache) == 0);
    CHECK(plan.offsets.count(store) == 0);
    CHECK(plan.offsets.count(x) == 1);
    CHECK(plan.offsets.count(y) == 1);
    CHECK(store->view_src == cache);
    CHECK(store->view_offs == 4 * cache->nb[1]);
}

TEST_CASE("random graphs never overlap live tensors") {
    for (int trial = 0; trial < 50; ++trial) {
        Context ctx;
        std::vector<Tensor*> pool;
        for (int i = 0; i < 3; ++i) {
            Tensor* in = ctx.new_tensor_2d(DType::F32, 32, 4);
            in->flags |= TENSOR_INPUT;
            pool.push_back(in);
        }
        std::uniform_int_distribution<int> pick_op(0, 3);
        for (int i = 0; i < 40; ++i) {
            std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
            Tensor* a = pool[pick(mf_test::rng())];
            Tensor* b = pool[pick(mf_test::rng())];
            switch (pick_op(mf_test::rng())) {
                case 0: pool.push_back(add(ctx, a, b)); break;
                case 1: pool.push_back(mul(ctx, a, b)); break;
                case 2: pool.push_back(silu(ctx, a)); break;
                default: pool.push_back(scale(ctx, a, 0.5f)); break;
            }
        }
        Graph g = build_graph({pool.back(), pool[pool.size() / 2]});
        const MemoryPlan plan = plan_memory(g, 16);
        CHECK(plan.arena_size <= plan.naive_size);
        check_no_live_overlap(g, plan);
        check_next_result_apart(g, plan);
    }
}
