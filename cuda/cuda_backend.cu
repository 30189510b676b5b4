// The CUDA backend's device buffers (plain cudaMalloc), transfers, CUDA graphs, its two streams and the
// dispatch from graph nodes to the launchers in cuda/*.cuh. The class is in cuda/backend_impl.cuh; which
// nodes fold into a neighbour's launch is decided in cuda/fusions.cu.
#include "cuda/backend_impl.cuh"

namespace mf {

static_assert(sizeof(block_q8_0) == Q8_0_BYTES && QK8_0 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q4_0) == Q4_0_BYTES && QK4_0 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q4_1) == Q4_1_BYTES && QK4_1 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q5_0) == Q5_0_BYTES && QK5_0 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q5_1) == Q5_1_BYTES && QK5_1 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q4_K) == Q4_K_BYTES, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q5_K) == Q5_K_BYTES, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q6_K) == Q6_K_BYTES, "cuda/quants.cuh disagrees with core/quants.h");

namespace cuda_be {

namespace {

// Everything that decides what a graph's kernels do: equal signatures launch identical kernels.
std::vector<uint64_t> graph_signature(const Graph& g) {
    std::vector<uint64_t> sig;
    sig.reserve(g.nodes.size() * 24);
    for (const Tensor* n : g.nodes) {
        // The flags too: whether a SWIGLU is fused depends on its being a graph output.
        sig.push_back(uint64_t(n->op) | uint64_t(n->type) << 8 | uint64_t(n->flags & TENSOR_OUTPUT) << 16);
        sig.push_back(reinterpret_cast<uintptr_t>(n->data));
        for (int i = 0; i < MAX_DIMS; ++i) sig.push_back(uint64_t(n->ne[i]) ^ uint64_t(n->nb[i]) << 24);
        for (int i = 0; i < MAX_OP_PARAMS; i += 2)
            sig.push_back(uint64_t(uint32_t(n->op_params[i])) | uint64_t(uint32_t(n->op_params[i + 1])) << 32);
        for (const Tensor* src : n->src) {
            if (!src) continue;
            // TENSOR_ID_WEIGHT: whether the backend split the rows (splits_rows) decides the kernel.
            sig.push_back(reinterpret_cast<uintptr_t>(src->data) ^ uint64_t(src->type) << 56 ^
                          uint64_t(memory_owner(src)->flags & TENSOR_ID_WEIGHT) << 48);
            for (int i = 0; i < MAX_DIMS; ++i) sig.push_back(uint64_t(src->ne[i]) ^ uint64_t(src->nb[i]) << 24);
        }
    }
    return sig;
}

// A captured graph's kernel nodes, and the most kernels on one path through its edges (dependencies
// of every kind: a launch overlapped with the one before it still waits for it). {0, 0} when the graph
// cannot be read: the figures are a report, never a reason to fail a step (a failed query's error is
// cleared, so no later launch check sees it).
struct GraphShape {
    size_t kernels = 0, chain = 0;
};
GraphShape graph_shape(cudaGraph_t graph) {
    const auto ok = [](cudaError_t e) {
        if (e != cudaSuccess) (void)cudaGetLastError();
        return e == cudaSuccess;
    };
    size_t n = 0, n_edges = 0;
    if (!ok(cudaGraphGetNodes(graph, nullptr, &n)) || n == 0) return {};
    std::vector<cudaGraphNode_t> nodes(n);
    if (!ok(cudaGraphGetNodes(graph, nodes.data(), &n))) return {};
    if (!ok(cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &n_edges))) return {};
    // The edges' data too: a query without it fails on the overlapped launches' programmatic edges.
    std::vector<cudaGraphNode_t> from(n_edges), to(n_edges);
    std::vector<cudaGraphEdgeData> data(n_edges);
    if (n_edges > 0 && !ok(cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &n_edges))) return {};
    std::unordered_map<cudaGraphNode_t, size_t> index;
    for (size_t i = 0; i < n; ++i) index[nodes[i]] = i;
    std::vector<size_t> weight(n, 0), in(n, 0), chain(n, 0);
    std::vector<std::vector<size_t>> out(n);
    GraphShape shape;
    for (size_t i = 0; i < n; ++i) {
        cudaGraphNodeType type;
        if (!ok(cudaGraphNodeGetType(nodes[i], &type))) return {};
        weight[i] = type == cudaGraphNodeTypeKernel ? 1 : 0;
        shape.kernels += weight[i];
    }
    for (size_t e = 0; e < n_edges; ++e) {
        const auto a = index.find(from[e]), b = index.find(to[e]);
        if (a == index.end() || b == index.end()) return {};
        out[a->second].push_back(b->second);
        ++in[b->second];
    }
    // Longest path in node order of Kahn's algorithm: a node's chain is its own weight plus the
    // longest chain that reaches it.
    std::vector<size_t> ready;
    for (size_t i = 0; i < n; ++i)
        if (in[i] == 0) ready.push_back(i);
    size_t seen = 0;
    while (!ready.empty()) {
        const size_t i = ready.back();
        ready.pop_back();
        ++seen;
        chain[i] += weight[i];
        shape.chain = std::max(shape.chain, chain[i]);
        for (size_t j : out[i]) {
            chain[j] = std::max(chain[j], chain[i]);
            if (--in[j] == 0) ready.push_back(j);
        }
    }
    return seen == n ? shape : GraphShape{};
}

}  // namespace

std::string CudaBackend::last_graph_report() const {
    std::string r;
    if (captured_ && captured_kernels_ > 0)
        r = strfmt("captured step: %zu kernels, %zu of them on its longest chain of dependencies; ", captured_kernels_,
                   captured_chain_);
    return r + strfmt("%zu graph nodes folded into a neighbour's launch, %zu launched on the second stream",
                      fused_nodes_, side_launches_);
}

// Split rows (splits_rows) are read by MUL_MAT_ID's kernels only.
bool CudaBackend::supports_op(const Tensor* node) const {
    for (int i = 0; i < MAX_SRC; ++i) {
        if (node->src[i] && splits_rows(node->src[i]) && !(node->op == Op::MUL_MAT_ID && i == 0)) return false;
    }
    return cuda_supports_node(node, smem_optin_);
}

namespace {

// MUL_MAT of F16 / BF16 weights by f32 x on the tensor cores: prefill-sized 2-D products. The rest
// (decode, batched, unaligned) take the matvec kernel.
template <typename T>
bool takes_matmul_float(const Tensor* w, const Tensor* x) {
    return x->ne[1] >= MATMUL_Q_MIN_COLS &&
           matmul_float_fits<T>(w->data, shape_of(w), static_cast<const float*>(x->data), shape_of(x));
}

// Scratch a MUL_MAT of w by x needs: the quantized x for quantized weights, x's halves for the
// tensor-core F16 / BF16 kernel.
size_t mul_mat_scratch_bytes(const Tensor* w, const Tensor* x) {
    if (is_quant_weight(w->type)) return matvec_q_scratch_bytes(shape_of(x));
    if (w->type == DType::F16 && takes_matmul_float<__half>(w, x)) {
        return matmul_float_scratch_bytes<__half>(shape_of(x));
    }
    if (w->type == DType::BF16 && takes_matmul_float<__nv_bfloat16>(w, x)) {
        return matmul_float_scratch_bytes<__nv_bfloat16>(shape_of(x));
    }
    return 0;
}

}  // namespace

void CudaBackend::reserve_scratch(size_t bytes) {
    if (bytes <= scratch_size_) return;
    // A captured graph points at the old scratch.
    drop_captured_graph();
    last_signature_.clear();
    // Kernels queued by an earlier compute may still read the old scratch.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (scratch_) CUDA_CHECK(cudaFree(scratch_));
    scratch_ = nullptr;
    scratch_size_ = 0;
    throw_on_error(cudaMalloc(&scratch_, bytes), strfmt("allocating %zu bytes of scratch on GPU %d", bytes, device_).c_str());
    scratch_size_ = bytes;
}

void CudaBackend::reserve_side(size_t scratch_bytes) {
    MF_ASSERT(!on_side_);
    if (!side_.stream) {
        CUDA_CHECK(cudaStreamCreateWithFlags(&side_.stream, cudaStreamNonBlocking));
        CUDA_CHECK(cudaEventCreateWithFlags(&fork_, cudaEventDisableTiming));
        CUDA_CHECK(cudaEventCreateWithFlags(&join_, cudaEventDisableTiming));
    }
    if (scratch_bytes <= side_scratch_size_) return;
    drop_captured_graph();  // a captured graph points at the old scratch
    last_signature_.clear();
    CUDA_CHECK(cudaStreamSynchronize(side_.stream));
    if (side_.scratch) CUDA_CHECK(cudaFree(side_.scratch));
    side_.scratch = nullptr;
    side_scratch_size_ = 0;
    throw_on_error(cudaMalloc(&side_.scratch, scratch_bytes),
                   strfmt("allocating %zu bytes of scratch on GPU %d", scratch_bytes, device_).c_str());
    side_scratch_size_ = scratch_bytes;
}

void CudaBackend::compute(const Graph& g) {
    CUDA_CHECK(cudaSetDevice(device_));
    if (!timing_) {
        compute_on_stream(g);
        return;
    }
    add_timed();
    compute_on_stream(g);  // records timed_begin_ just before the work's first launch
    CUDA_CHECK(cudaEventRecord(timed_end_, stream_));
    timed_pending_ = true;
}

// With timing on, the device's clock for this compute starts here: after the host's own share
// (signature, capture), so that share counts as the host's.
void CudaBackend::begin_timed() {
    if (timing_) CUDA_CHECK(cudaEventRecord(timed_begin_, stream_));
}

void CudaBackend::compute_on_stream(const Graph& g) {
    // The graph last computed, unchanged (Graph::stamp): its scratch is reserved and its signature
    // known, and deriving them again is host time the device waits through (~80 us a V2-Lite step).
    if (use_graphs_ && g.stamp && g.stamp == last_stamp_ && !last_signature_.empty()) {
        launch_repeated(g);
        return;
    }
    last_stamp_ = 0;
    size_t scratch = 0;
    for (const Tensor* n : g.nodes) {
        if (n->op == Op::MUL_MAT || n->op == Op::MUL_MAT_ID) {
            scratch = std::max(scratch, mul_mat_scratch_bytes(n->src[0], n->src[1]));
        }
    }
    size_t attn_ws = 0;
    for (const Tensor* n : g.nodes) {
        if (n->op != Op::FLASH_ATTN) continue;
        const Tensor* q = n->src[0];
        const Tensor* k = n->src[1];
        attn_ws = std::max(attn_ws, flash_attn_workspace_bytes(q->ne[1], k->ne[2], q->ne[2], k->ne[1], n->ne[0]));
    }
    // A folded MoE block keeps x's quantization and the SWIGLU's side by side (moe_block_foldable).
    if (moe_block_) scratch = 2 * ((scratch + 255) / 256 * 256);
    attn_ws_offset_ = (scratch + 255) / 256 * 256;
    reserve_scratch(attn_ws_offset_ + attn_ws);
    if (moe_block_ && !moe_barrier_) {
        throw_on_error(cudaMalloc(&moe_barrier_, 2 * sizeof(unsigned)), "allocating the MoE block's barrier");
        CUDA_CHECK(cudaMemsetAsync(moe_barrier_, 0, 2 * sizeof(unsigned), stream_));
    }
    if (use_side_ && std::any_of(g.nodes.begin(), g.nodes.end(), [](const Tensor* n) { return n->flags & TENSOR_SIDE; }))
        reserve_side(std::max<size_t>(attn_ws_offset_, 256));
    if (!use_graphs_) {
        begin_timed();
        run_nodes(g);
        return;
    }
    std::vector<uint64_t> sig = graph_signature(g);
    if (sig != last_signature_) {
        // A graph seen once (a prefill, the first step of an attention span) runs directly:
        // capturing pays off only for graphs that come again.
        begin_timed();
        run_nodes(g);
        last_signature_ = std::move(sig);
        last_stamp_ = g.stamp;
        captured_ = false;
        return;
    }
    last_stamp_ = g.stamp;
    launch_repeated(g);
}

// A graph whose signature equals the last one's: captured as a CUDA graph the first time it comes
// again, replayed after that.
void CudaBackend::launch_repeated(const Graph& g) {
    if (!captured_) {
        drop_captured_graph();
        cudaGraph_t graph = nullptr;
        CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        run_nodes(g);
        CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
        // Destroyed on every way out (the instantiation's check and the report's allocations may throw).
        const std::unique_ptr<std::remove_pointer_t<cudaGraph_t>, cudaError_t (*)(cudaGraph_t)> owned(
            graph, cudaGraphDestroy);
        CUDA_CHECK(cudaGraphInstantiate(&graph_exec_, graph, 0));
        const GraphShape shape = graph_shape(graph);
        captured_kernels_ = shape.kernels, captured_chain_ = shape.chain;
        captured_ = true;
    }
    begin_timed();
    CUDA_CHECK(cudaGraphLaunch(graph_exec_, stream_));
}

bool CudaBackend::prepare_act(const Tensor* b, ActQuant kind, cudaStream_t s) {
    bool ready = scratch_holds(b, kind);
    if (fused_swiglu_ == b) {
        const Tensor* gate = b->src[0];
        const Tensor* up = b->src[1];
        quantize_swiglu_activations(kind, static_cast<const float*>(gate->data), shape_of(gate),
                                    static_cast<const float*>(up->data), shape_of(up), act_layout(scratch_, shape_of(b)),
                                    s);
        ready = true;
    } else if (fused_norm_ == b) {
        const Tensor* norm = b->src[0];
        const Tensor* x = norm->src[0];
        quantize_rms_norm_activations(kind, static_cast<const float*>(x->data), shape_of(x), norm->op_param_f(0),
                                      static_cast<const float*>(b->src[1]->data), act_layout(scratch_, shape_of(b)),
                                      s);
        ready = true;
    }
    scratch_act_valid_ = true;
    scratch_act_begin_ = static_cast<const char*>(b->data);
    scratch_act_end_ = data_end(b);
    scratch_act_shape_ = shape_of(b);
    scratch_act_kind_ = kind;
    return ready;
}

RowsF32 CudaBackend::rows_of(const Tensor* n, int slot) const {
    const Tensor* x = n->src[slot];
    if (x != fused_concat_) return rows_f32(static_cast<const float*>(x->data), shape_of(x));
    RowsF32 rows{static_cast<const char*>(x->src[0]->data), shape_of(x->src[0]),
                 static_cast<const char*>(x->src[1]->data), shape_of(x->src[1]), {}};
    if (const Tensor* r = folded_rope_; r && rope_behind(x->src[1]) == r) {
        const Tensor* src = r->src[0];
        rows.rope = {static_cast<const char*>(src->data),
                     shape_of(src),
                     static_cast<const int32_t*>(r->src[1]->data),
                     r->src[2] ? static_cast<const float*>(r->src[2]->data) : nullptr,
                     r->op_param_i(0),
                     r->op_param_i(1) == ROPE_NEOX,
                     double(r->op_param_f(2)),
                     double(r->op_param_f(3)),
                     rope_inputs_ready(r->src[1], r->src[2])};
    }
    return rows;
}

void CudaBackend::use_lane(bool side) {
    if (side == on_side_) return;
    Lane cur{stream_, scratch_, scratch_act_valid_, scratch_act_begin_, scratch_act_end_, scratch_act_shape_,
             scratch_act_kind_};
    stream_ = side_.stream, scratch_ = side_.scratch, scratch_act_valid_ = side_.act_valid;
    scratch_act_begin_ = side_.act_begin, scratch_act_end_ = side_.act_end, scratch_act_shape_ = side_.act_shape;
    scratch_act_kind_ = side_.act_kind;
    side_ = cur;
    on_side_ = side;
}

void CudaBackend::join_side() {
    use_lane(false);
    if (!side_open_) return;
    CUDA_CHECK(cudaEventRecord(join_, side_.stream));
    CUDA_CHECK(cudaStreamWaitEvent(stream_, join_, 0));
    side_open_ = false;
    side_read_.clear();
    side_written_.clear();
}

void CudaBackend::begin_launch(const Tensor* n, const Tensor* fused_add, const Tensor* written,
                               const Tensor* also_written) {
    const bool side = beside(n);
    // What the launch reads: the sources of n, of the nodes folded into it and of a fused ADD, less
    // those folded nodes' own results (never written) and the weights (never written).
    std::vector<ByteSpan> reads;
    auto folded = [&](const Tensor* t) { return std::find(folded_.begin(), folded_.end(), t) != folded_.end(); };
    auto read = [&](const Tensor* node) {
        if (!node) return;
        for (const Tensor* src : node->src) {
            if (!src || src == n || folded(src) || (src->flags & TENSOR_PARAM) || !src->data) continue;
            reads.push_back({static_cast<const char*>(src->data), data_end(src)});
        }
    };
    read(n);
    read(fused_add);
    for (const Tensor* f : folded_) read(f);
    folded_.clear();
    std::vector<ByteSpan> ws{{static_cast<const char*>(written->data), data_end(written)}};
    if (also_written) ws.push_back({static_cast<const char*>(also_written->data), data_end(also_written)});
    auto races = [&](const std::vector<ByteSpan>& other_read, const std::vector<ByteSpan>& other_written) {
        for (const ByteSpan& w : ws)
            if (overlaps(other_read, w.begin, w.end) || overlaps(other_written, w.begin, w.end)) return true;
        for (const ByteSpan& r : reads)
            if (overlaps(other_written, r.begin, r.end)) return true;
        return false;
    };
    if (side) {
        use_lane(true);
        if (!side_open_ || races(main_read_, main_written_)) {  // fork: after everything the main lane has queued
            CUDA_CHECK(cudaEventRecord(fork_, side_.stream));     // side_ is the main lane now
            CUDA_CHECK(cudaStreamWaitEvent(stream_, fork_, 0));
            side_open_ = true;
            main_read_.clear();
            main_written_.clear();
        }
        side_read_.insert(side_read_.end(), reads.begin(), reads.end());
        side_written_.insert(side_written_.end(), ws.begin(), ws.end());
        ++side_launches_;
        return;
    }
    use_lane(false);
    if (!side_open_) return;
    if (races(side_read_, side_written_)) {
        join_side();
        return;
    }
    main_read_.insert(main_read_.end(), reads.begin(), reads.end());
    main_written_.insert(main_written_.end(), ws.begin(), ws.end());
}

void CudaBackend::run_nodes(const Graph& g) {
    // Inputs were uploaded since the last pass: whatever the scratch holds is stale.
    use_lane(false);
    scratch_act_valid_ = side_.act_valid = false;
    side_open_ = false;
    main_read_.clear(), main_written_.clear(), side_read_.clear(), side_written_.clear(), folded_.clear();
    side_launches_ = 0;
    fused_nodes_ = quantized_inside_ = 0;
    fused_concat_ = folded_rope_ = folded_norm_ = folded_topk_ = nullptr;
    reads_.clear();
    for (const Tensor* n : g.nodes)
        for (const Tensor* src : n->src)
            if (src) ++reads_[src];
    moe_fold_ = {};
    for (size_t i = 0; i < g.nodes.size(); ++i) {
        const Tensor* n = g.nodes[i];
        if (!moe_fold_.topk) {
            if (const MoeFold f = moe_block_foldable(g, i); f.topk) {
                moe_fold_ = f;  // not launched: the down's place launches the whole block
                fused_nodes_ += 3;
                continue;
            }
        } else if (n == moe_fold_.gate_up) {
            // x quantized into the scratch here, while it is still x: the planner may give its bytes
            // to a node after its last reader, the gate_up, and before the down's place (the second
            // stream's shared experts). Nothing on this stream uses the scratch until the block.
            const Tensor* x = n->src[1];
            const ActQuant kind = act_quant_of(n->src[0]->type);
            begin_launch(n, nullptr, n);
            if (!prepare_act(x, kind, stream_))
                quantize_activations(kind, static_cast<const float*>(x->data), shape_of(x),
                                     act_layout(scratch_, shape_of(x)), stream_);
            continue;  // not launched, never written
        } else if (n == moe_fold_.swiglu) {
            continue;  // neither launched nor written
        } else if (n == moe_fold_.down) {
            const Tensor* written = n;
            if (const Tensor* r = add_fusable(g, i)) {
                written = g.nodes[++i];
                ++fused_nodes_;
                fused_add_ = static_cast<const float*>(r->data);
                fused_out_ = static_cast<float*>(written->data);
            }
            // The TOP_K's result is written, not read; its source, the logits, the down reads too. (x
            // was read at the gate_up's place; the SWIGLU's result is never written.)
            folded_.insert(folded_.end(), {moe_fold_.topk, moe_fold_.swiglu});
            begin_launch(n, written != n ? written : nullptr, written, moe_fold_.topk);
            launch_moe_fold(written);
            note_written(moe_fold_.topk);
            note_written(written);
            fused_add_ = nullptr;
            fused_out_ = nullptr;
            moe_fold_ = {};
            continue;
        }
        if (swiglu_fusable(g, i)) {
            fused_swiglu_ = n;  // not launched: the next node quantizes from its sources
            folded_.push_back(n);
            ++fused_nodes_;
            continue;
        }
        if (rope_foldable(g, i)) {
            folded_rope_ = n;  // not launched: the CONCAT's reader rotates as it reads
            folded_.push_back(n);
            ++fused_nodes_;
            continue;
        }
        if (topk_foldable(g, i)) {
            folded_topk_ = n;  // not launched: the MUL_MAT_ID after it routes, and writes n
            folded_.push_back(n);
            ++fused_nodes_;
            continue;
        }
        const bool reads_folded = folded_rope_ && n->op == Op::CONCAT && rope_behind(n->src[1]) == folded_rope_;
        if (concat_fusable(g, i, reads_folded ? folded_rope_ : nullptr)) {
            fused_concat_ = n;  // not launched: its reader reads its sources
            folded_.push_back(n);
            ++fused_nodes_;
            continue;
        }
        // norm_foldable saw this CONCAT fuse; the MUL it reads was never written.
        MF_ASSERT(!folded_norm_ || n->op != Op::CONCAT || n->src[0] != folded_norm_);
        if (norm_foldable(g, i)) {
            folded_norm_ = g.nodes[++i];  // neither the norm nor the MUL launched: the store makes the product
            folded_.insert(folded_.end(), {n, folded_norm_});
            fused_nodes_ += 2;
            continue;
        }
        ActQuant norm_kind = ActQuant::Q8_0;
        switch (norm_fusion(g, i, &norm_kind)) {
            case NormFusion::QUANTIZE:
                fused_norm_ = g.nodes[++i];  // neither launched: the next node quantizes from the norm's source
                folded_.insert(folded_.end(), {n, fused_norm_});
                fused_nodes_ += 2;
                continue;
            case NormFusion::WEIGHT: {
                const Tensor* m = g.nodes[++i];
                const Tensor* x = n->src[0];
                folded_.push_back(n);
                begin_launch(m, nullptr, m);
                launch_rms_norm_f32(static_cast<const float*>(x->data), shape_of(x), n->op_param_f(0),
                                    static_cast<const float*>(m->src[1]->data), static_cast<float*>(m->data), stream_);
                note_written(m);
                ++fused_nodes_;  // the MUL
                continue;
            }
            case NormFusion::WEIGHT_QUANTIZE: {
                const Tensor* m = g.nodes[++i];
                const Tensor* x = n->src[0];
                folded_.push_back(n);
                begin_launch(m, nullptr, m);
                quantize_rms_norm_activations(norm_kind, static_cast<const float*>(x->data), shape_of(x),
                                              n->op_param_f(0), static_cast<const float*>(m->src[1]->data),
                                              act_layout(scratch_, shape_of(m)), stream_, static_cast<float*>(m->data));
                note_written(m);
                scratch_act_valid_ = true;  // the scratch now holds m, quantized
                scratch_act_begin_ = static_cast<const char*>(m->data);
                scratch_act_end_ = data_end(m);
                scratch_act_shape_ = shape_of(m);
                scratch_act_kind_ = norm_kind;
                ++fused_nodes_;  // the MUL
                continue;
            }
            case NormFusion::NONE: break;
        }
        const Tensor* written = n;
        if (const Tensor* r = add_fusable(g, i)) {
            written = g.nodes[++i];  // the ADD: written by the MUL_MAT, not launched
            ++fused_nodes_;
            fused_add_ = static_cast<const float*>(r->data);
            fused_out_ = static_cast<float*>(written->data);
        }
        const bool launches = n->op != Op::VIEW && n->op != Op::NONE;
        // A MUL_MAT_ID routing for the folded TOP_K writes its result too.
        const Tensor* routed = folded_topk_ && n->op == Op::MUL_MAT_ID && n->src[2] == folded_topk_ ? n->src[2]
                                                                                                      : nullptr;
        if (launches) begin_launch(n, written != n ? written : nullptr, written, routed);
        run_node(n);
        if (launches && !twice_op_.empty() && twice_op_ == op_name(n->op) && repeatable(n, written)) {
            fused_swiglu_ = fused_norm_ = nullptr;  // the scratch holds x quantized: the matmul alone again
            const Tensor* topk = folded_topk_;      // reading the ids the first run wrote
            folded_topk_ = nullptr;
            run_node(n);
            folded_topk_ = topk;
        }
        if (launches) fused_concat_ = folded_rope_ = folded_norm_ = folded_topk_ = nullptr;  // their reader has run
        if (routed) note_written(routed);
        fused_swiglu_ = nullptr;
        fused_norm_ = nullptr;
        fused_add_ = nullptr;
        fused_out_ = nullptr;
        note_written(written);
    }
    join_side();
}

bool CudaBackend::repeatable(const Tensor* n, const Tensor* written) const {
    auto apart_from_sources = [&](const Tensor* node) {
        for (const Tensor* src : node->src) {
            // A SET_ROWS's destination: it rewrites the same rows.
            if (!src || !src->data || (node->op == Op::SET_ROWS && src == node->src[0])) continue;
            if (!apart(written, src)) return false;
        }
        return true;
    };
    return apart_from_sources(n) && (written == n || apart_from_sources(written));
}

void CudaBackend::note_written(const Tensor* n) {
    if (n->op == Op::NONE || n->op == Op::VIEW) return;
    const char* begin = static_cast<const char*>(n->data);
    const char* end = data_end(n);
    if (scratch_act_valid_ && begin < scratch_act_end_ && scratch_act_begin_ < end) scratch_act_valid_ = false;
    if (side_.act_valid && begin < side_.act_end && side_.act_begin < end) side_.act_valid = false;  // the other lane's
}

bool CudaBackend::scratch_holds(const Tensor* x, ActQuant kind) const {
    return reuse_act_ && scratch_act_valid_ && scratch_act_kind_ == kind && scratch_act_begin_ == x->data &&
           same_shape4(scratch_act_shape_, shape_of(x));
}

void CudaBackend::drop_captured_graph() {
    if (!graph_exec_) return;
    CUDA_CHECK(cudaStreamSynchronize(stream_));  // it may still be running
    CUDA_CHECK(cudaGraphExecDestroy(graph_exec_));
    graph_exec_ = nullptr;
    captured_ = false;
}

namespace {

// CPY from Src into a float type of any strides.
template <typename Src>
void cpy_float(DType dst_type, const void* src, const Shape4& ss, void* dst, const Shape4& sd, cudaStream_t s) {
    switch (dst_type) {
        case DType::F32: launch_cpy<Src, float>(src, ss, dst, sd, s); return;
        case DType::F16: launch_cpy<Src, __half>(src, ss, dst, sd, s); return;
        case DType::BF16: launch_cpy<Src, __nv_bfloat16>(src, ss, dst, sd, s); return;
        default: MF_ASSERT_MSG(false, "cpy_float: not a float type");
    }
}

// MUL_MAT of weights w of Block by f32 x (see launch_matvec_q for x_quantized): prefill-sized 2-D
// products of the block types the tensor-core kernel takes go to it, the rest to the matvec kernel;
// both leave the same quantized x in scratch.
template <typename Block>
void mul_mat_q(const Tensor* w, const Tensor* x, void* scratch, size_t scratch_size, bool x_quantized, float* out,
               const float* add, bool quantize_inside, cudaStream_t s) {
    const float* xd = static_cast<const float*>(x->data);
    const Shape4 sw = shape_of(w), sx = shape_of(x);
    if constexpr (matmul_q_supported<Block>()) {
        const bool two_d = sw.ne[2] == 1 && sw.ne[3] == 1 && sx.ne[2] == 1 && sx.ne[3] == 1;
        if (two_d && sx.ne[1] >= MATMUL_Q_MIN_COLS && matmul_q_fits<Block>(w->data, sw)) {
            MF_ASSERT(!add && !quantize_inside);  // add_fusable and matvec_q_quantizes_inside keep to the matvec
            launch_matmul_q<Block>(w->data, sw, xd, sx, scratch, scratch_size, x_quantized, out, s);
            return;
        }
    }
    launch_matvec_q<Block>(w->data, sw, xd, sx, scratch, scratch_size, x_quantized, out, s, add, quantize_inside);
}

// MUL_MAT of F16 / BF16 weights by f32 x; true when the tensor-core kernel ran and overwrote the
// scratch with x's halves.
template <typename T>
bool mul_mat_float(const Tensor* w, const Tensor* x, void* scratch, size_t scratch_size, float* out, cudaStream_t s) {
    const float* xd = static_cast<const float*>(x->data);
    if (takes_matmul_float<T>(w, x)) {
        launch_matmul_float<T>(w->data, shape_of(w), xd, shape_of(x), scratch, scratch_size, out, s);
        return true;
    }
    launch_matvec_float<T>(w->data, shape_of(w), xd, shape_of(x), out, s);
    return false;
}

// A FLASH_ATTN / ATTN_FUSED node's K rows' part kept apart (src4), or none.
KTail key_tail(const Tensor* node) {
    const Tensor* t = node->src[4];
    if (!t) return {};
    return KTail{static_cast<const char*>(t->data), t->ne[0], int64_t(t->nb[1]), int64_t(t->nb[2])};
}

// MUL_MAT of quantized weights w by f32 x, by weight type.
void matvec_q(const Tensor* w, const Tensor* x, void* scratch, size_t scratch_size, bool x_quantized, float* out,
              const float* add, bool quantize_inside, cudaStream_t s) {
#define MF_MUL_MAT_Q(B) mul_mat_q<B>(w, x, scratch, scratch_size, x_quantized, out, add, quantize_inside, s)
    switch (w->type) {
        case DType::Q8_0: MF_MUL_MAT_Q(BlockQ8_0); return;
        case DType::Q4_0: MF_MUL_MAT_Q(BlockQ4_0); return;
        case DType::Q4_1: MF_MUL_MAT_Q(BlockQ4_1); return;
        case DType::Q5_0: MF_MUL_MAT_Q(BlockQ5_0); return;
        case DType::Q5_1: MF_MUL_MAT_Q(BlockQ5_1); return;
        case DType::Q4_K: MF_MUL_MAT_Q(BlockQ4_K); return;
        case DType::Q5_K: MF_MUL_MAT_Q(BlockQ5_K); return;
        case DType::Q6_K: MF_MUL_MAT_Q(BlockQ6_K); return;
        default: MF_ASSERT_MSG(false, "matvec_q: not a quantized weight type");
    }
#undef MF_MUL_MAT_Q
}

}  // namespace

void CudaBackend::run_node(const Tensor* node) {
    MF_ASSERT_MSG(supports_op(node), "cuda: compute() given a node supports_op rejects");
    const Tensor* a = node->src[0];
    const Tensor* b = node->src[1];
    const Shape4 sd = shape_of(node);
    float* out = static_cast<float*>(node->data);  // every op but CPY writes f32
    cudaStream_t s = stream_;
    switch (node->op) {
        case Op::NONE:
        case Op::VIEW: return;
        case Op::GET_ROWS: {
            const int32_t* ids = static_cast<const int32_t*>(b->data);
            switch (a->type) {
                case DType::F32: launch_get_rows<float>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::F16: launch_get_rows<__half>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::BF16:
                    launch_get_rows<__nv_bfloat16>(a->data, shape_of(a), ids, shape_of(b), out, s);
                    return;
                case DType::Q8_0: launch_get_rows<BlockQ8_0>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q4_0: launch_get_rows<BlockQ4_0>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q4_1: launch_get_rows<BlockQ4_1>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q5_0: launch_get_rows<BlockQ5_0>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q5_1: launch_get_rows<BlockQ5_1>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q4_K: launch_get_rows<BlockQ4_K>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q5_K: launch_get_rows<BlockQ5_K>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                case DType::Q6_K: launch_get_rows<BlockQ6_K>(a->data, shape_of(a), ids, shape_of(b), out, s); return;
                default: break;
            }
            break;
        }
        case Op::MUL_MAT: {
            const float* x = static_cast<const float*>(b->data);
            if (is_quant_weight(a->type)) {
                const bool reuse = prepare_act(b, act_quant_of(a->type), s);
                const bool inside = !reuse && fuse_quant_ && matvec_q_quantizes_inside(a->type, shape_of(b));
                if (inside) {
                    scratch_act_valid_ = false;  // the matvec keeps its quantized x to itself
                    ++quantized_inside_;
                }
                matvec_q(a, b, scratch_, scratch_size_, reuse, fused_out_ ? fused_out_ : out, fused_add_, inside, s);
                return;
            }
            switch (a->type) {
                case DType::F32: launch_matvec_float<float>(a->data, shape_of(a), x, shape_of(b), out, s); return;
                case DType::F16:
                    if (mul_mat_float<__half>(a, b, scratch_, scratch_size_, out, s)) scratch_act_valid_ = false;
                    return;
                case DType::BF16:
                    if (mul_mat_float<__nv_bfloat16>(a, b, scratch_, scratch_size_, out, s)) scratch_act_valid_ = false;
                    return;
                default: break;
            }
            break;
        }
        case Op::MUL_MAT_ID: {
            const Tensor* ids = node->src[2];
            SlotWeights weights;
            if (const Tensor* wts = node->src[3]) {
                weights = {static_cast<const char*>(wts->data), shape_of(wts), MoeGate(node->op_param_i(0)),
                           node->op_param_f(1)};
            }
            const bool reuse = is_quant_weight(a->type) && prepare_act(b, act_quant_of(a->type), s);
            IdRoute route;  // the folded TOP_K's source: the launch ranks it and writes ids
            if (ids == folded_topk_) route = {static_cast<const char*>(ids->src[0]->data), shape_of(ids->src[0])};
            launch_mul_mat_id(a->type, a->data, shape_of(a), splits_rows(a), static_cast<const float*>(b->data),
                              shape_of(b),
                              static_cast<const int32_t*>(ids->data), shape_of(ids), scratch_, scratch_size_, reuse,
                              weights, fused_out_ ? fused_out_ : out, fused_add_, s, route);
            return;
        }
        case Op::TOP_K:
            launch_top_k_f32(a->data, shape_of(a), node->op_param_i(0), static_cast<int32_t*>(node->data), s);
            return;
        case Op::SUM_ROWS: launch_sum_rows_f32(a->data, shape_of(a), out, s); return;
        case Op::DIV: launch_div_f32(a->data, shape_of(a), b->data, shape_of(b), out, s); return;
        case Op::SIGMOID: launch_sigmoid_f32(a->data, shape_of(a), out, s); return;
        case Op::ADD: launch_binary_f32(BinaryOp::ADD, a->data, shape_of(a), b->data, shape_of(b), out, s); return;
        case Op::MUL: launch_binary_f32(BinaryOp::MUL, a->data, shape_of(a), b->data, shape_of(b), out, s); return;
        case Op::SWIGLU:
            launch_binary_f32(BinaryOp::SWIGLU, a->data, shape_of(a), b->data, shape_of(b), out, s);
            return;
        case Op::GEGLU:
            launch_binary_f32(BinaryOp::GEGLU, a->data, shape_of(a), b->data, shape_of(b), out, s);
            return;
        case Op::SCALE:
            launch_unary_f32(UnaryOp::SCALE, node->op_param_f(0), a->data, shape_of(a), out, s);
            return;
        case Op::SILU: launch_unary_f32(UnaryOp::SILU, 0.0f, a->data, shape_of(a), out, s); return;
        case Op::GELU: launch_unary_f32(UnaryOp::GELU, 0.0f, a->data, shape_of(a), out, s); return;
        case Op::RMS_NORM:
            launch_rms_norm_f32(static_cast<const float*>(a->data), shape_of(a), node->op_param_f(0), nullptr, out, s);
            return;
        case Op::ROPE: {
            const float* factors = node->src[2] ? static_cast<const float*>(node->src[2]->data) : nullptr;
            launch_rope_f32(static_cast<const float*>(a->data), shape_of(a), static_cast<const int32_t*>(b->data),
                            rope_inputs_ready(b, node->src[2]), factors, node->op_param_i(0), node->op_param_i(1) == ROPE_NEOX,
                            node->op_param_f(2), node->op_param_f(3), out, s);
            return;
        }
        case Op::SOFT_MAX: {
            const Shape4 sm = b ? shape_of(b) : Shape4{{1, 1, 1, 1}, {0, 0, 0, 0}};
            launch_soft_max_f32(static_cast<const float*>(a->data), shape_of(a),
                                b ? static_cast<const float*>(b->data) : nullptr, sm, node->op_param_f(0), out, s);
            return;
        }
        case Op::CONCAT:
            launch_concat_f32(a->data, shape_of(a), b->data, shape_of(b), node->op_param_i(0), out, s);
            return;
        case Op::SET_ROWS: {
            const float* src = static_cast<const float*>(b->data);
            const RowsF32 rows = rows_of(node, 1);
            const int32_t* ids = static_cast<const int32_t*>(node->src[2]->data);
            if (folded_norm_ && b == fused_concat_ && b->src[0] == folded_norm_) {
                const Tensor* x = folded_norm_->src[0]->src[0];
                const NormOf norm{static_cast<const char*>(x->data), shape_of(x),
                                  static_cast<const float*>(folded_norm_->src[1]->data),
                                  folded_norm_->src[0]->op_param_f(0)};
                const Shape4 ss = shape_of(b);
                switch (node->type) {
                    case DType::F32: launch_set_rows_normed<float>(rows, norm, ss, ids, node->data, sd, s); return;
                    case DType::F16: launch_set_rows_normed<__half>(rows, norm, ss, ids, node->data, sd, s); return;
                    case DType::BF16:
                        launch_set_rows_normed<__nv_bfloat16>(rows, norm, ss, ids, node->data, sd, s);
                        return;
                    default: break;
                }
                break;
            }
            switch (node->type) {
                case DType::F32: launch_set_rows<float>(rows, shape_of(b), ids, node->data, sd, s); return;
                case DType::F16: launch_set_rows<__half>(rows, shape_of(b), ids, node->data, sd, s); return;
                case DType::BF16: launch_set_rows<__nv_bfloat16>(rows, shape_of(b), ids, node->data, sd, s); return;
                case DType::Q8_0:
                case DType::Q4_0: launch_set_rows_quant(node->type, src, shape_of(b), ids, node->data, sd.nb[1], s); return;
                default: break;
            }
            break;
        }
        case Op::HADAMARD:
            launch_hadamard(static_cast<const float*>(a->data), out, a->ne[0], a->nrows(), node->op_param_i(0) != 0, s);
            return;
        case Op::FLASH_ATTN: {
            const Tensor* k = node->src[1];
            const Tensor* v = node->src[2];
            const Tensor* mask = node->src[3];
            float* ws = reinterpret_cast<float*>(static_cast<char*>(scratch_) + attn_ws_offset_);
            launch_flash_attn(k->type, v->type, rows_of(node, 0), shape_of(a), k->data, shape_of(k),
                              v->data, shape_of(v), static_cast<const float*>(mask->data), int64_t(mask->nb[1]), out, ws,
                              node->op_param_f(0), s, key_tail(node));
            return;
        }
        case Op::ATTN_FUSED: {
            const Tensor* k = node->src[1];
            const Tensor* v = node->src[2];
            const Tensor* mask = node->src[3];
            launch_attn_fused(k->type, v->type, static_cast<const float*>(a->data), shape_of(a), k->data, shape_of(k),
                              v->data, shape_of(v), static_cast<const float*>(mask->data), int64_t(mask->nb[1]), out,
                              node->op_param_f(0), smem_optin_, s, key_tail(node));
            return;
        }
        case Op::CPY: {
            const Shape4 ss = shape_of(a);
            switch (node->type) {
                case DType::Q8_0: launch_cpy_f32_q8_0(static_cast<const float*>(a->data), ss, node->data, sd, s); return;
                case DType::Q4_0: launch_cpy_f32_q4_0(static_cast<const float*>(a->data), ss, node->data, sd, s); return;
                default: break;
            }
            switch (a->type) {
                case DType::F32: cpy_float<float>(node->type, a->data, ss, node->data, sd, s); return;
                case DType::F16: cpy_float<__half>(node->type, a->data, ss, node->data, sd, s); return;
                case DType::BF16: cpy_float<__nv_bfloat16>(node->type, a->data, ss, node->data, sd, s); return;
                case DType::Q8_0:
                case DType::Q4_0: launch_cpy_kv_to_f32(a->type, a->data, ss, out, sd, s); return;
                default: break;
            }
            break;
        }
        case Op::COUNT: break;
    }
    MF_ASSERT_MSG(false, "cuda: run_node reached an op supports_op should have rejected");
}

}  // namespace cuda_be

using cuda_be::CudaBackend;

bool cuda_available(std::string* why) { return cuda_be::check_device(0, why); }

std::unique_ptr<Backend> make_cuda_backend(int device) { return std::make_unique<CudaBackend>(device); }

size_t cuda_fused_nodes(const Backend& b) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&b);
    MF_ASSERT_MSG(cuda, "cuda_fused_nodes: not a CUDA backend");
    return cuda->fused_nodes();
}

size_t cuda_quantized_inside(const Backend& b) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&b);
    MF_ASSERT_MSG(cuda, "cuda_quantized_inside: not a CUDA backend");
    return cuda->quantized_inside();
}

size_t cuda_side_launches(const Backend& b) {
    const auto* cuda = dynamic_cast<const CudaBackend*>(&b);
    MF_ASSERT_MSG(cuda, "cuda_side_launches: not a CUDA backend");
    return cuda->side_launches();
}

}  // namespace mf
