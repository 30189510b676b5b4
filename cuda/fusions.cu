// The CUDA backend's folds: which graph nodes are not launched, their work done by a neighbour's
// launch (CudaBackend::run_nodes takes the decisions in node order). Each keeps the unfused
// kernels' bits; docs/ARCHITECTURE.md lists them.
#include "cuda/backend_impl.cuh"

namespace mf {
namespace cuda_be {

namespace {

// Node m is a MUL_MAT / MUL_MAT_ID of block weights whose activations are x.
bool quantizes(const Tensor* m, const Tensor* x) {
    return (m->op == Op::MUL_MAT || m->op == Op::MUL_MAT_ID) && m->src[1] == x && m->src[0] != x &&
           is_quant_weight(m->src[0]->type);
}

}  // namespace

bool CudaBackend::swiglu_fusable(const Graph& g, size_t i) const {
    const Tensor* n = g.nodes[i];
    if (!fuse_swiglu_ || n->op != Op::SWIGLU || i + 1 >= g.nodes.size() || (n->flags & TENSOR_OUTPUT)) return false;
    const Tensor* m = g.nodes[i + 1];
    return quantizes(m, n) &&
           quantize_swiglu_fits(act_quant_of(m->src[0]->type), shape_of(n->src[0]), shape_of(n->src[1])) &&
           reads_of(n) == 1;
}

CudaBackend::NormFusion CudaBackend::norm_fusion(const Graph& g, size_t i, ActQuant* kind) const {
    const Tensor* n = g.nodes[i];
    if (!fuse_norm_ || n->op != Op::RMS_NORM || i + 1 >= g.nodes.size() || (n->flags & TENSOR_OUTPUT))
        return NormFusion::NONE;
    const Tensor* m = g.nodes[i + 1];
    const Tensor* w = m->src[1];
    if (m->op != Op::MUL || m->src[0] != n || w == n || !is_f32(w) || !w->is_contiguous() ||
        w->ne[0] != n->ne[0] || w->nelements() != n->ne[0] || reads_of(n) != 1)
        return NormFusion::NONE;
    const Tensor* x = n->src[0];
    if (i + 2 < g.nodes.size() && !(m->flags & TENSOR_OUTPUT)) {
        const Tensor* mm = g.nodes[i + 2];
        if (quantizes(mm, m) && quantize_rms_norm_fits(act_quant_of(mm->src[0]->type), shape_of(x)) &&
            reads_of(m) == 1)
            return NormFusion::QUANTIZE;  // writes only the scratch
    }
    // One kernel reads x and writes the product: safe apart from x (as the planner places it), or
    // exactly on it (element for element).
    if (!apart(m, x) && !(x->data == m->data && x->is_contiguous())) return NormFusion::NONE;
    // The first later node that quantizes the product, unless a matmul of another x (which may use
    // the scratch) comes first: it finds the product quantized there (run_node keeps the scratch's
    // state, so anything overwriting it in between only costs a quantization).
    if (reuse_act_ && m->is_contiguous() && !(m->flags & TENSOR_OUTPUT))
        for (size_t j = i + 2; j < g.nodes.size(); ++j) {
            const Tensor* mm = g.nodes[j];
            const bool matmul = mm->op == Op::MUL_MAT || mm->op == Op::MUL_MAT_ID;
            if (!matmul || is_f32(mm->src[0])) continue;  // f32 weights: the matvec, no scratch
            if (!quantizes(mm, m)) break;
            const ActQuant k = act_quant_of(mm->src[0]->type);
            if (!quantize_rms_norm_fits(k, shape_of(x))) break;
            *kind = k;
            return NormFusion::WEIGHT_QUANTIZE;
        }
    return NormFusion::WEIGHT;
}

bool CudaBackend::rope_foldable(const Graph& g, size_t i) const {
    const Tensor* r = g.nodes[i];
    if (!fuse_concat_ || r->op != Op::ROPE || (r->flags & TENSOR_OUTPUT) || reads_of(r) != 1) return false;
    size_t j = i + 1;
    while (j < g.nodes.size() && (g.nodes[j]->op == Op::VIEW || g.nodes[j]->op == Op::NONE)) ++j;
    if (j == g.nodes.size()) return false;
    const Tensor* c = g.nodes[j];
    if (c->op != Op::CONCAT || rope_behind(c->src[1]) != r) return false;
    if (c->src[1] != r && reads_of(c->src[1]) != 1) return false;  // the view is read by the CONCAT only
    size_t k = j + 1;
    while (k < g.nodes.size() && (g.nodes[k]->op == Op::VIEW || g.nodes[k]->op == Op::NONE)) ++k;
    return k < g.nodes.size() && g.nodes[k]->op == Op::SET_ROWS && concat_fusable(g, j, r);
}

bool CudaBackend::concat_fusable(const Graph& g, size_t i, const Tensor* rope) const {
    const Tensor* n = g.nodes[i];
    if (!fuse_concat_ || n->op != Op::CONCAT || n->op_param_i(0) != 0 || (n->flags & TENSOR_OUTPUT) ||
        reads_of(n) != 1)
        return false;
    const Tensor* a = n->src[0];
    // What the reader reads for the second part: b, or the source of the ROPE folded into it.
    const Tensor* b = rope ? rope->src[0] : n->src[1];
    if (!is_f32(a) || !is_f32(b) || a->nb[0] != sizeof(float) || b->nb[0] != sizeof(float) ||
        !is_f32(n->src[1]) || (!rope && n->src[1]->nb[0] != sizeof(float)))
        return false;
    for (int d = 1; d < MAX_DIMS; ++d)
        if (a->ne[d] != n->src[1]->ne[d]) return false;
    size_t j = i + 1;
    while (j < g.nodes.size() && (g.nodes[j]->op == Op::VIEW || g.nodes[j]->op == Op::NONE)) ++j;
    if (j == g.nodes.size()) return false;
    const Tensor* m = g.nodes[j];
    // The reader's result (a planned tensor, or the cache SET_ROWS writes) apart from both sources.
    if (m->op == Op::FLASH_ATTN && m->src[0] == n) {
        const Tensor* k = m->src[1];
        const Tensor* v = m->src[2];
        if (!flash_attn_takes_split_q(k->type, v->type, shape_of(n), k->data, shape_of(k), v->data, shape_of(v)))
            return false;
        // The result apart from the sources (as the planner places it), or the kernel reads every
        // query before it writes.
        return (apart(m, a) && apart(m, b)) || flash_attn_split_q_reads_first(shape_of(n), shape_of(k));
    }
    return m->op == Op::SET_ROWS && m->src[1] == n && m->src[0] != n &&
           (m->type == DType::F32 || m->type == DType::F16 || m->type == DType::BF16) && n->ne[2] == 1 &&
           n->ne[3] == 1 && apart(m, a) && apart(m, b);
}

bool CudaBackend::topk_foldable(const Graph& g, size_t i) const {
    const Tensor* n = g.nodes[i];
    if (!fuse_topk_ || n->op != Op::TOP_K || (n->flags & TENSOR_OUTPUT) || !n->is_contiguous()) return false;
    const Tensor* logits = n->src[0];
    size_t j = i + 1;
    while (j < g.nodes.size() && (g.nodes[j]->op == Op::VIEW || g.nodes[j]->op == Op::NONE)) ++j;
    if (j == g.nodes.size()) return false;
    const Tensor* m = g.nodes[j];
    if (m->op != Op::MUL_MAT_ID || m->src[2] != n || m->src[3] || m->src[0] == n || m->src[1] == n ||
        (m->flags & TENSOR_SIDE) || !is_f32(logits))
        return false;
    const Tensor* w = m->src[0];
    // The launch reads the logits and writes both results: each apart from what the other reads.
    return mul_mat_id_routes(w->type, splits_rows(w), shape_of(w), shape_of(logits), shape_of(n)) &&
           apart(m, logits) && apart(m, n) && apart(n, m->src[1]);
}

CudaBackend::MoeFold CudaBackend::moe_block_foldable(const Graph& g, size_t i) const {
    const Tensor* n = g.nodes[i];
    // The ids are read by the gate_up and the down only: they are written where the down launches,
    // after the nodes between (the second stream's) are issued.
    if (!moe_block_ || !twice_op_.empty() || n->op != Op::TOP_K || n->ne[1] != 1 || (n->flags & TENSOR_OUTPUT) ||
        !n->is_contiguous() || !is_f32(n->src[0]) || reads_of(n) != 2)
        return {};
    // The next node from j that is not a view (nor, with skip_side, one launched on the second stream,
    // which has its own scratch: one on this stream would overwrite x's quantization).
    auto next = [&](size_t j, bool skip_side) {
        while (j < g.nodes.size() && (g.nodes[j]->op == Op::VIEW || g.nodes[j]->op == Op::NONE ||
                                      (skip_side && beside(g.nodes[j]))))
            ++j;
        return j;
    };
    const size_t j_gu = next(i + 1, false);
    if (j_gu == g.nodes.size()) return {};
    const Tensor* gu = g.nodes[j_gu];
    if (gu->op != Op::MUL_MAT_ID || gu->src[2] != n || gu->src[3] || (gu->flags & (TENSOR_SIDE | TENSOR_OUTPUT)) ||
        gu->src[1]->ne[1] != 1 || gu->src[1]->ne[2] != 1 || reads_of(gu) != 2)
        return {};
    const size_t j_sw = next(j_gu + 1, true);
    if (j_sw + 1 >= g.nodes.size()) return {};
    const Tensor* sw = g.nodes[j_sw];
    const Tensor* down = g.nodes[j_sw + 1];
    const int64_t n_ff = gu->ne[0] / 2;
    // The SWIGLU reads the two halves of gu's rows: gate first, then up.
    auto half = [&](const Tensor* v, int64_t k) {
        return v->op == Op::VIEW && v->view_src == gu && v->data == static_cast<const char*>(gu->data) + k * n_ff * 4 &&
               v->ne[0] == n_ff && v->ne[1] == gu->ne[1] && v->ne[2] == 1 && v->nb[1] == gu->nb[1] && reads_of(v) == 1 &&
               !(v->flags & TENSOR_OUTPUT);
    };
    if (sw->op != Op::SWIGLU || (sw->flags & (TENSOR_SIDE | TENSOR_OUTPUT)) || !half(sw->src[0], 0) ||
        !half(sw->src[1], 1) || reads_of(sw) != 1)
        return {};
    // The down reads the logits (SOFTMAX gating), so they stay alive until the launch at its place.
    if (down->op != Op::MUL_MAT_ID || down->src[1] != sw || down->src[2] != n || down->src[3] != n->src[0] ||
        (down->flags & TENSOR_SIDE) || down->src[0]->type != gu->src[0]->type)
        return {};
    const Tensor* w_gu = gu->src[0];
    const Tensor* w_d = down->src[0];
    if (!splits_rows(w_gu) || !splits_rows(w_d) ||
        !moe_block_fits(w_gu->type, shape_of(w_gu), shape_of(w_d), shape_of(n->src[0]), shape_of(n)))
        return {};
    // x's quantization at the scratch's start, the SWIGLU's after it, both before the attention's room.
    const size_t h_at = (matvec_q_scratch_bytes(shape_of(gu->src[1])) + 255) / 256 * 256;
    if (h_at + matvec_q_scratch_bytes(shape_of(sw)) > attn_ws_offset_) return {};
    // The launch reads the logits and x and writes the ids and the down's result: apart from each other.
    if (!apart(down, n->src[0]) || !apart(down, n) || !apart(n, gu->src[1])) return {};
    return {n, gu, sw, down};
}

void CudaBackend::launch_moe_fold(const Tensor* written) {
    const MoeFold& f = moe_fold_;
    const Tensor* w_gu = f.gate_up->src[0];
    const Tensor* w_d = f.down->src[0];
    const Tensor* x = f.gate_up->src[1];
    const Tensor* wts = f.down->src[3];
    const size_t h_at = (matvec_q_scratch_bytes(shape_of(x)) + 255) / 256 * 256;
    MoeBlockArgs a{};
    a.sx = shape_of(x), a.x_act = act_layout(scratch_, a.sx);  // quantized at the gate_up's place
    a.w_gu = static_cast<const char*>(w_gu->data), a.s_gu = shape_of(w_gu);
    a.w_d = static_cast<const char*>(w_d->data), a.s_d = shape_of(w_d);
    a.route = {static_cast<const char*>(f.topk->src[0]->data), shape_of(f.topk->src[0])};
    a.ids = static_cast<int32_t*>(f.topk->data), a.si = shape_of(f.topk);
    a.sh = shape_of(f.swiglu), a.h_act = act_layout(static_cast<char*>(scratch_) + h_at, a.sh);
    a.slot_w = {static_cast<const char*>(wts->data), shape_of(wts), MoeGate(f.down->op_param_i(0)),
                f.down->op_param_f(1)};
    a.dst = fused_out_ ? fused_out_ : static_cast<float*>(written->data), a.add = fused_add_;
    a.barrier = moe_barrier_;
    launch_moe_block(w_gu->type, a, stream_);
}

bool CudaBackend::norm_foldable(const Graph& g, size_t i) const {
    const Tensor* n = g.nodes[i];
    if (!fuse_concat_ || n->op != Op::RMS_NORM || i + 1 >= g.nodes.size() || (n->flags & TENSOR_OUTPUT) ||
        reads_of(n) != 1)
        return false;
    const Tensor* x = n->src[0];
    const Tensor* m = g.nodes[i + 1];
    const Tensor* w = m->src[1];
    if (m->op != Op::MUL || m->src[0] != n || w == n || !is_f32(w) || !w->is_contiguous() || w->ne[0] != n->ne[0] ||
        w->nelements() != n->ne[0] || (m->flags & TENSOR_OUTPUT) || reads_of(m) != 1)
        return false;
    if (!is_f32(x) || x->nb[0] != sizeof(float) || x->ne[2] != 1 || x->ne[3] != 1) return false;
    // From the MUL to the CONCAT that reads it: views, and at most the ROPE it takes as its second
    // part, folded. Nothing launched (run_nodes takes these decisions again, the same ones).
    const Tensor* rope = nullptr;
    size_t j = i + 2;
    for (; j < g.nodes.size(); ++j) {
        const Tensor* t = g.nodes[j];
        if (t->op == Op::VIEW || t->op == Op::NONE) continue;
        if (t->op == Op::ROPE && !rope && rope_foldable(g, j)) {
            rope = t;
            continue;
        }
        break;
    }
    if (j == g.nodes.size()) return false;
    const Tensor* c = g.nodes[j];
    if (c->op != Op::CONCAT || c->src[0] != m || (rope && rope_behind(c->src[1]) != rope) ||
        !concat_fusable(g, j, rope))
        return false;
    // concat_fusable found its reader, the next launching node: a float cache's SET_ROWS here.
    size_t k = j + 1;
    while (k < g.nodes.size() && (g.nodes[k]->op == Op::VIEW || g.nodes[k]->op == Op::NONE)) ++k;
    if (k == g.nodes.size()) return false;
    const Tensor* store = g.nodes[k];
    return store->op == Op::SET_ROWS && store->src[1] == c && apart(store, x) && apart(store, w);
}

const Tensor* CudaBackend::add_fusable(const Graph& g, size_t i) const {
    const Tensor* n = g.nodes[i];
    // A quantized MUL_MAT on the matvec kernels, or a weighted MUL_MAT_ID (its [M, T] sums).
    const bool matvec = n->op == Op::MUL_MAT && is_quant_weight(n->src[0]->type) &&
                        n->src[1]->ne[1] < MATMUL_Q_MIN_COLS;
    const bool weighted_id = n->op == Op::MUL_MAT_ID && n->src[3];
    if (!fuse_add_ || !(matvec || weighted_id) || i + 1 >= g.nodes.size() || (n->flags & TENSOR_OUTPUT))
        return nullptr;
    const Tensor* m = g.nodes[i + 1];
    if (m->op != Op::ADD || (m->src[0] == n) == (m->src[1] == n)) return nullptr;
    const Tensor* r = m->src[0] == n ? m->src[1] : m->src[0];
    if (!is_f32(r) || !r->is_contiguous() || !same_shape(r, n) || !same_shape(m, n) || reads_of(n) != 1)
        return nullptr;
    // n's kernel writes the ADD's result while it reads r and its own sources (a MUL_MAT_ID's ids and
    // slot weights; x, unless the weights are quantized: then a kernel before n's put x in the
    // scratch). The planner keeps the result off all of them; checked all the same.
    if (!apart(m, r)) return nullptr;
    for (int s = 0; s < MAX_SRC; ++s) {
        const Tensor* src = n->src[s];
        if (src && !(s == 1 && is_quant_weight(n->src[0]->type)) && !apart(m, src)) return nullptr;
    }
    return r;
}

}  // namespace cuda_be
}  // namespace mf
