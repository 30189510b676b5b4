// The CUDA backend class (make_cuda_backend, cuda/cuda_backend.h) and the host helpers its two source
// files share: cuda/cuda_backend.cu (memory, transfers, graphs, streams, dispatch) and cuda/fusions.cu
// (which nodes fold into a neighbour's launch). Internal to the backend.
#pragma once

#include "cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/common.h"
#include "core/quants.h"
#include "cuda/act_quant.cuh"
#include "cuda/attention.cuh"
#include "cuda/common.cuh"
#include "cuda/elementwise.cuh"
#include "cuda/kv.cuh"
#include "cuda/matmul.cuh"
#include "cuda/matvec.cuh"
#include "cuda/moe.cuh"
#include "cuda/node_util.cuh"
#include "cuda/norm_rope.cuh"
#include "cuda/quants.cuh"

namespace mf {
namespace cuda_be {

// The activation format launch_matvec_q quantizes x to for weights of type t (is_quant_weight(t)).
inline ActQuant act_quant_of(DType t) {
    switch (t) {
        case DType::Q8_0: return BlockTraits<BlockQ8_0>::act;
        case DType::Q4_0: return BlockTraits<BlockQ4_0>::act;
        case DType::Q4_1: return BlockTraits<BlockQ4_1>::act;
        case DType::Q5_0: return BlockTraits<BlockQ5_0>::act;
        case DType::Q5_1: return BlockTraits<BlockQ5_1>::act;
        case DType::Q4_K: return BlockTraits<BlockQ4_K>::act;
        case DType::Q5_K: return BlockTraits<BlockQ5_K>::act;
        case DType::Q6_K: return BlockTraits<BlockQ6_K>::act;
        default: MF_ASSERT_MSG(false, "act_quant_of: not a quantized weight type");
    }
    return ActQuant::Q8_0;
}

inline bool same_shape4(const Shape4& a, const Shape4& b) {
    for (int i = 0; i < 4; ++i)
        if (a.ne[i] != b.ne[i] || a.nb[i] != b.nb[i]) return false;
    return true;
}

// One past the last byte of t's elements (its first byte is t->data): the last element's, or for
// block types the last block's (nb[0] is then a block's stride, and ne[0] counts elements).
inline const char* data_end(const Tensor* t) {
    const DTypeTraits& traits = dtype_traits(t->type);
    if (t->nelements() == 0) return static_cast<const char*>(t->data);
    int64_t extent = int64_t(traits.type_size) + (t->ne[0] / traits.block_size - 1) * int64_t(t->nb[0]);
    for (int i = 1; i < MAX_DIMS; ++i) extent += (t->ne[i] - 1) * int64_t(t->nb[i]);
    return static_cast<const char*>(t->data) + extent;
}

// Whether a ROPE's positions and frequency factors may be read before the kernel's wait for the
// kernel before it: the positions (a view of) a step input, uploaded on the stream before the graph
// runs (I32: no op of the graph writes an I32 leaf; SET_ROWS and CPY write float or block types), the
// factors absent or a leaf (a model's rope_freqs weight).
inline bool rope_inputs_ready(const Tensor* pos, const Tensor* factors) {
    const Tensor* owner = pos->view_src ? pos->view_src : pos;
    const bool pos_ready = owner->op == Op::NONE && (owner->flags & TENSOR_INPUT) && owner->type == DType::I32;
    return pos_ready && (!factors || (factors->view_src ? factors->view_src : factors)->op == Op::NONE);
}

// Bytes [begin, end) of device memory.
struct ByteSpan {
    const char* begin;
    const char* end;
};

inline bool overlaps(const std::vector<ByteSpan>& spans, const char* begin, const char* end) {
    for (const ByteSpan& s : spans)
        if (begin < s.end && s.begin < end) return true;
    return false;
}

// Whether a's and b's bytes lie apart. A fused kernel writes a node's result while it reads tensors
// whose last reader the planner took to have run already. The planner keeps the next result off those
// (core/graph.h); the fusions check it all the same, as a graph may be planned otherwise.
inline bool apart(const Tensor* a, const Tensor* b) {
    return data_end(a) <= static_cast<const char*>(b->data) || data_end(b) <= static_cast<const char*>(a->data);
}

// The CUDA error of a call that bad input (a size, a missing device) can make fail, as an Error.
inline void throw_on_error(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();  // these errors are not sticky; clear them so later checks start clean
    throw Error(strfmt("cuda: %s: %s", what, cudaGetErrorString(err)));
}

// Compute capability of device, or false with *why filled in when it cannot run this build's code.
inline bool check_device(int device, std::string* why) {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
        cudaGetLastError();
        if (why) {
            *why = "no CUDA device found";
            if (err != cudaSuccess && err != cudaErrorNoDevice) *why += strfmt(" (%s)", cudaGetErrorString(err));
        }
        return false;
    }
    if (device < 0 || device >= count) {
        if (why) *why = strfmt("no CUDA device %d (this machine has %d)", device, count);
        return false;
    }
    cudaDeviceProp prop;
    const cudaError_t perr = cudaGetDeviceProperties(&prop, device);
    if (perr != cudaSuccess) {
        cudaGetLastError();
        if (why) *why = strfmt("cannot query CUDA device %d: %s", device, cudaGetErrorString(perr));
        return false;
    }
    // The build carries sm_90 code plus compute_90 PTX, which newer GPUs compile at load time.
    if (prop.major < 9) {
        if (why)
            *why = strfmt("GPU %s has compute capability %d.%d; this build needs sm_90", prop.name, prop.major,
                          prop.minor);
        return false;
    }
    return true;
}

// The ROPE node whose result t is: directly, or as one view of it that keeps its rows (the same
// row length, contiguous, the whole result; rows counted on in order), made straight from it.
inline const Tensor* rope_behind(const Tensor* t) {
    if (!t) return nullptr;
    if (t->op == Op::ROPE) return t;
    const Tensor* v = t->view_src;
    return t->op == Op::VIEW && v && v->op == Op::ROPE && t->src[0] == v && t->is_contiguous() &&
                   t->ne[0] == v->ne[0] && t->nelements() == v->nelements() && t->data == v->data &&
                   !(t->flags & TENSOR_OUTPUT)
               ? v
               : nullptr;
}

// Activation columns from which MUL_MAT of 32-element block (and F16 / BF16) weights runs a tensor-core kernel
// (cuda/matmul) instead of the matvec kernel. Decode (N = 1) and small batches stay on the matvec
// kernel, which reads each weight row once per 4 columns and pads nothing; the tensor-core kernel reads
// it once per 64-column tile but pads N up to a tile. 16 is where the matvec kernel already makes 4
// passes over the weights; a first choice, to be tuned by measuring on the device.
constexpr int64_t MATMUL_Q_MIN_COLS = 16;

class CudaBackend final : public Backend {
public:
    explicit CudaBackend(int device) : device_(device) {
        std::string why;
        if (!check_device(device, &why)) throw Error("cuda: " + why);
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
        int smem = 0;
        CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device_));
        smem_optin_ = size_t(smem);
        use_graphs_ = switched_on("MINFER_CUDA_GRAPHS");
        reuse_act_ = switched_on("MINFER_CUDA_ACT_REUSE");
        fuse_swiglu_ = switched_on("MINFER_CUDA_FUSE_SWIGLU");
        fuse_norm_ = switched_on("MINFER_CUDA_FUSE_NORM");
        fuse_add_ = switched_on("MINFER_CUDA_FUSE_ADD");
        fuse_concat_ = switched_on("MINFER_CUDA_FUSE_CONCAT");
        fuse_quant_ = switched_on("MINFER_CUDA_FUSE_QUANT");
        split_rows_ = switched_on("MINFER_CUDA_SPLIT_ROWS");
        use_side_ = switched_on("MINFER_CUDA_SIDE");
        if (const char* v = std::getenv("MINFER_CUDA_FUSE_TOPK")) fuse_topk_ = std::string(v) == "1";
        if (const char* v = std::getenv("MINFER_CUDA_MOE_BLOCK")) moe_block_ = std::string(v) == "1";
        if (const char* op = std::getenv("MINFER_CUDA_TWICE")) twice_op_ = op;
    }

    // Every Buffer this backend allocated must be gone by now (they free through it). A backend held
    // in a static may be destroyed after the CUDA runtime has shut down at exit, which frees
    // everything anyway; only then are the errors ignored.
    ~CudaBackend() override {
        if (cudaSetDevice(device_) == cudaErrorCudartUnloading) return;
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        drop_captured_graph();
        if (scratch_) CUDA_CHECK(cudaFree(scratch_));
        if (moe_barrier_) CUDA_CHECK(cudaFree(moe_barrier_));
        if (side_.scratch) CUDA_CHECK(cudaFree(side_.scratch));
        if (side_.stream) {
            CUDA_CHECK(cudaStreamSynchronize(side_.stream));
            CUDA_CHECK(cudaStreamDestroy(side_.stream));
            CUDA_CHECK(cudaEventDestroy(fork_));
            CUDA_CHECK(cudaEventDestroy(join_));
        }
        if (timed_begin_) {
            CUDA_CHECK(cudaEventDestroy(timed_begin_));
            CUDA_CHECK(cudaEventDestroy(timed_end_));
        }
        CUDA_CHECK(cudaStreamDestroy(stream_));
    }

    const char* name() const override { return "cuda"; }

    // cudaMalloc returns 256-byte aligned memory, which is what alignment() promises.
    std::unique_ptr<Buffer> alloc(size_t size) override {
        CUDA_CHECK(cudaSetDevice(device_));
        void* base = nullptr;
        throw_on_error(cudaMalloc(&base, size), strfmt("allocating %zu bytes on GPU %d", size, device_).c_str());
        return std::make_unique<Buffer>(this, base, size);
    }

    void free_memory(void* base) override {
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaFree(base));
    }

    size_t alignment() const override { return 256; }

    size_t memory_used() const override {
        CUDA_CHECK(cudaSetDevice(device_));
        size_t free = 0, total = 0;
        CUDA_CHECK(cudaMemGetInfo(&free, &total));
        return total - free;
    }

    // DRAM peak: two transfers per memory clock (DDR) across the bus width.
    double peak_bandwidth() const override {
        int clock_khz = 0, bus_bits = 0;
        if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device_) != cudaSuccess ||
            cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device_) != cudaSuccess)
            return 0.0;
        return 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0;
    }

    // From pageable host memory cudaMemcpyAsync returns once src has been staged, so the caller may
    // reuse src at once; the copy itself is ordered before later kernels on the stream.
    // A tensor whose rows this backend keeps split (splits_rows) is split on the way in and joined on
    // the way out, whole rows at a time.
    void upload(Tensor* t, const void* src, size_t offset, size_t size) override {
        check_transfer(t, offset, size);
        CUDA_CHECK(cudaSetDevice(device_));
        char* to = static_cast<char*>(t->data) + offset;
        if (splits_rows(t)) {
            std::vector<uint8_t> split(size);
            rows_split(t->type, t->ne[0], split_row_count(t, to, size), src, split.data());
            CUDA_CHECK(cudaMemcpyAsync(to, split.data(), size, cudaMemcpyHostToDevice, stream_));
            CUDA_CHECK(cudaStreamSynchronize(stream_));  // split is freed on return
            return;
        }
        CUDA_CHECK(cudaMemcpyAsync(to, src, size, cudaMemcpyHostToDevice, stream_));
    }

    void download(const Tensor* t, void* dst, size_t offset, size_t size) override {
        check_transfer(t, offset, size);
        CUDA_CHECK(cudaSetDevice(device_));
        const char* from = static_cast<const char*>(t->data) + offset;
        std::vector<uint8_t> split(splits_rows(t) ? size : 0);
        CUDA_CHECK(cudaMemcpyAsync(split.empty() ? dst : split.data(), from, size, cudaMemcpyDeviceToHost, stream_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
        if (!split.empty()) rows_join(t->type, t->ne[0], split_row_count(t, from, size), split.data(), dst);
    }

    // t's memory holds split rows (rows_split, core/quants.h): a MUL_MAT_ID expert weight
    // (TENSOR_ID_WEIGHT) of a type rows_split takes, rows 4-byte aligned, unless
    // MINFER_CUDA_SPLIT_ROWS=0. Its quants then load as whole vectors (launch_matvec_q_id).
    bool splits_rows(const Tensor* t) const {
        const Tensor* root = memory_owner(t);
        return split_rows_ && (root->flags & TENSOR_ID_WEIGHT) && rows_split_fits(root->type) &&
               root->rows_contiguous() && root->nb[1] % 4 == 0;
    }

    // A failed registration (some hosts refuse to lock pages) leaves the memory pageable: downloads
    // into it then take the driver's staged path, slower but the same bytes.
    void pin_host(void* p, size_t size) override {
        CUDA_CHECK(cudaSetDevice(device_));
        if (cudaHostRegister(p, size, cudaHostRegisterDefault) == cudaSuccess) {
            pinned_.push_back(p);
        } else {
            (void)cudaGetLastError();  // clears the failed call's error
        }
    }
    void unpin_host(void* p) override {
        auto it = std::find(pinned_.begin(), pinned_.end(), p);
        if (it == pinned_.end()) return;
        pinned_.erase(it);
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaHostUnregister(p));
    }

    bool supports_op(const Tensor* node) const override;
    void compute(const Graph& g) override;

    // A kernel fault (an illegal address, say) surfaces here; it is a bug, so CUDA_CHECK aborts.
    void synchronize() override {
        CUDA_CHECK(cudaSetDevice(device_));
        CUDA_CHECK(cudaStreamSynchronize(stream_));
    }

    // cuda_fused_nodes (cuda/cuda_backend.h).
    size_t fused_nodes() const { return fused_nodes_; }
    // cuda_quantized_inside (cuda/cuda_backend.h).
    size_t quantized_inside() const { return quantized_inside_; }
    // cuda_side_launches (cuda/cuda_backend.h).
    size_t side_launches() const { return side_launches_; }
    std::string last_graph_report() const override;

    // Two events bracket each compute's work on the stream; the time between them is added when the
    // next compute, or computed_seconds, finds them done (waiting for them if need be).
    bool time_computes(bool on) override {
        CUDA_CHECK(cudaSetDevice(device_));
        if (on && !timed_begin_) {
            CUDA_CHECK(cudaEventCreate(&timed_begin_));
            CUDA_CHECK(cudaEventCreate(&timed_end_));
        }
        add_timed();
        timing_ = on;
        return true;
    }
    double computed_seconds() override {
        add_timed();
        return computed_s_;
    }

private:
    void check_transfer(const Tensor* t, size_t offset, size_t size) const {
        MF_ASSERT(t->data && t->buffer && t->buffer->backend() == this);
        MF_ASSERT(offset + size <= t->nbytes());
    }
    // The whole rows of split tensor t in the size bytes at p (which must start and end on rows).
    static size_t split_row_count(const Tensor* t, const char* p, size_t size) {
        const Tensor* root = memory_owner(t);
        const size_t row = root->nb[1], from = size_t(p - static_cast<const char*>(root->data));
        MF_ASSERT_MSG(t->ne[0] == root->ne[0] && from % row == 0 && size % row == 0,
                      "cuda: a split tensor is transferred in whole rows");
        return size / row;
    }
    void reserve_scratch(size_t bytes);
    void reserve_side(size_t scratch_bytes);
    void run_node(const Tensor* node);
    void run_nodes(const Graph& g);
    bool scratch_holds(const Tensor* x, ActQuant kind) const;
    void drop_captured_graph();
    void compute_on_stream(const Graph& g);
    void launch_repeated(const Graph& g);
    void begin_timed();
    // Adds the last timed compute's device time to computed_s_ once its events are recorded.
    void add_timed() {
        if (!timed_pending_) return;
        CUDA_CHECK(cudaEventSynchronize(timed_end_));
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, timed_begin_, timed_end_));
        computed_s_ += ms * 1e-3;
        timed_pending_ = false;
    }

    int device_;
    cudaStream_t stream_ = nullptr;
    // Per-op temporary memory (activations quantized for MUL_MAT), sized before a graph's first
    // kernel so nothing is allocated while kernels run (and a captured CUDA graph can reuse it).
    void* scratch_ = nullptr;
    size_t scratch_size_ = 0;
    size_t attn_ws_offset_ = 0;  // FLASH_ATTN's split partials live in the scratch past the activations

    // What the scratch holds after the last quantized MUL_MAT of this run_nodes pass: its activations
    // (data, shape) quantized to `kind`. q, k and v (and gate and up) multiply one activation, so
    // the next MUL_MAT with the same x and kind skips quantizing it again, unless a node in between
    // wrote into x's bytes. The decision follows from the node sequence alone (pointers, shapes,
    // types), never from data, so a captured CUDA graph makes the same decisions on every replay.
    // MINFER_CUDA_ACT_REUSE=0 turns this off (to measure what it buys).
    bool reuse_act_ = true;
    bool scratch_act_valid_ = false;
    const char* scratch_act_begin_ = nullptr;
    const char* scratch_act_end_ = nullptr;
    Shape4 scratch_act_shape_{};
    ActQuant scratch_act_kind_ = ActQuant::Q8_0;

    // Nodes flagged TENSOR_SIDE (the shared experts of a MoE layer) run on a second stream, beside
    // the nodes around them. A lane is a stream with its own activation scratch and what that holds;
    // stream_, scratch_ and scratch_act_* above are the current lane's, and side_ keeps the other one
    // (swapped by use_lane), so every launch path works on either lane unchanged. The side lane never
    // runs FLASH_ATTN (its workspace lives in the main scratch).
    // Ordering, per launch (begin_launch): a launch is ordered after every launch of the other lane
    // whose memory it could race with: it writes what the other lane read or wrote, or reads what
    // the other lane wrote, since the lanes last met (byte ranges, so the planner's reuse of freed
    // memory counts too). The side lane meets the main one by waiting on an event recorded on the
    // main stream (fork), the main lane by waiting on one recorded on the side stream (join); every
    // pass ends joined, so stream_ alone orders what follows (transfers, a CUDA graph's end).
    // MINFER_CUDA_SIDE=0 runs everything on one stream.
    struct Lane {
        cudaStream_t stream = nullptr;
        void* scratch = nullptr;
        bool act_valid = false;
        const char* act_begin = nullptr;
        const char* act_end = nullptr;
        Shape4 act_shape{};
        ActQuant act_kind = ActQuant::Q8_0;
    };
    bool use_side_ = true;
    // A measurement (MINFER_CUDA_TWICE=OP, an op name such as MUL_MAT_ID): every node of that op whose
    // result lies apart from what it reads is launched twice in a row, the second time on warm caches,
    // so a decode step's growth is about what those launches cost in place, apart from their DRAM
    // traffic. Not for use: it only slows a step down.
    std::string twice_op_;
    bool repeatable(const Tensor* n, const Tensor* written) const;
    Lane side_;                  // the lane not current
    size_t side_scratch_size_ = 0;
    bool on_side_ = false;       // the current lane is the side one
    bool side_open_ = false;     // the side stream has work the main one has not joined
    cudaEvent_t fork_ = nullptr, join_ = nullptr;
    // What each lane's launches read and wrote since the other lane last waited for them.
    std::vector<ByteSpan> main_read_, main_written_, side_read_, side_written_;
    std::vector<const Tensor*> folded_;  // nodes not launched since the last launch: its sources too
    size_t side_launches_ = 0;           // launches on the side stream, the last run
    void use_lane(bool side);
    // Whether node n launches on the second stream.
    bool beside(const Tensor* n) const {
        return use_side_ && side_.stream && (n->flags & TENSOR_SIDE) && n->op != Op::FLASH_ATTN;
    }
    // Before a launch of `n` (and the nodes folded into it) that writes `written`: picks its lane,
    // makes it current and orders it against the other lane.
    // also_written: a folded node's result the launch writes too (a routing MUL_MAT_ID's ids).
    void begin_launch(const Tensor* n, const Tensor* fused_add, const Tensor* written,
                      const Tensor* also_written = nullptr);
    void join_side();

    // SWIGLU fused into the quantization of the MUL_MAT that reads it: a SWIGLU node whose only
    // reader is the next node, a MUL_MAT / MUL_MAT_ID of 32-element block weights, is not launched;
    // that MUL_MAT quantizes silu(gate) * up straight from gate and up (one launch and one pass over
    // the FFN's hidden activations fewer, the same bits). MINFER_CUDA_FUSE_SWIGLU=0 turns it off.
    bool fuse_swiglu_ = true;
    const Tensor* fused_swiglu_ = nullptr;  // the SWIGLU node the next run_node quantizes from
    bool swiglu_fusable(const Graph& g, size_t i) const;
    // RMS_NORM times its weight: an RMS_NORM whose only reader is the next node, a MUL by an f32 row of
    // ne0 values, is one launch that writes the MUL's result (WEIGHT). When that MUL's only reader is
    // the node after it, a MUL_MAT / MUL_MAT_ID of 32-element block weights, the MUL is not written
    // either: that MUL_MAT quantizes rms_norm(x) * w straight from x (QUANTIZE; one launch for three,
    // the same bits). When the MUL has several readers and one of them is such a MUL_MAT, the one
    // launch writes the MUL's result and leaves its quantized copy in the scratch, where that MUL_MAT
    // (and any other reading it as the scratch's content) finds it (WEIGHT_QUANTIZE: a MoE layer's
    // normed x, read by the router in f32 and by the experts quantized). MINFER_CUDA_FUSE_NORM=0 turns
    // them off.
    enum class NormFusion { NONE, WEIGHT, QUANTIZE, WEIGHT_QUANTIZE };
    bool fuse_norm_ = true;
    const Tensor* fused_norm_ = nullptr;  // the MUL node the next run_node quantizes from
    // kind: for WEIGHT_QUANTIZE, the activation kind its quantizing reader wants.
    NormFusion norm_fusion(const Graph& g, size_t i, ActQuant* kind) const;
    // A MUL_MAT and the ADD that reads it (a residual): a MUL_MAT of block weights on the matvec path
    // (or a weighted MUL_MAT_ID, whose slots' sum the ADD takes) whose only reader is the next node,
    // an ADD of it and an f32 tensor r of its shape (contiguous, apart from the ADD's result), stores
    // dot + r straight into the ADD's result, the same bits; the ADD is not launched.
    // MINFER_CUDA_FUSE_ADD=0 turns it off.
    bool fuse_add_ = true;
    const float* fused_add_ = nullptr;  // what the next run_node's MUL_MAT adds as it stores ...
    float* fused_out_ = nullptr;        // ... into this, the ADD's result, instead of its own
    const Tensor* add_fusable(const Graph& g, size_t i) const;  // r, or null
    // A CONCAT along dim 0 of two f32 tensors, read only by the next node that launches (views
    // between launch nothing) as the q of a FLASH_ATTN on the MLA kernel or the source of a SET_ROWS
    // into a float cache: not launched; that node reads its two sources side by side (RowsF32), the
    // same values. MLA's latent row and its queries, one launch each a layer.
    // MINFER_CUDA_FUSE_CONCAT=0 turns it off.
    bool fuse_concat_ = true;
    const Tensor* fused_concat_ = nullptr;  // the CONCAT the next run_node reads from its sources
    // rope: a ROPE node that is (through a reshaping view) the CONCAT's second source, taken as not
    // launched: its reader applies it (the checks then look at the ROPE's source).
    bool concat_fusable(const Graph& g, size_t i, const Tensor* rope = nullptr) const;
    // A ROPE read only by (a view of it read only by) the next launching node, a CONCAT that then
    // fuses into a SET_ROWS: not launched either; the store rotates as it reads (RowsF32::rope).
    // MLA's k_pe, one launch a layer. (Not for the MLA kernel's queries: inlined into its unrolled
    // query loads, the double-precision angles grew the kernel fivefold.) Part of
    // MINFER_CUDA_FUSE_CONCAT.
    const Tensor* folded_rope_ = nullptr;
    bool rope_foldable(const Graph& g, size_t i) const;
    // MUL(RMS_NORM(x), w) read only by (the first source of) such a CONCAT into the cache: neither
    // node is launched; the store normalizes x's rows as it reads them (launch_set_rows_normed, NormOf).
    // MLA's latent c_kv, one launch a layer. Taken only when nothing is launched between the RMS_NORM's
    // place and the store: the nodes between are the MUL, views, the folded ROPE and the fused CONCAT.
    // Then x and w hold at the store what they held where the RMS_NORM would have run, even though the
    // RMS_NORM and the MUL were their last readers in the graph and the planner may have placed later
    // results (the ROPE's, the CONCAT's) over them: those results are never written. The store's own
    // result, the cache, is checked apart from x and w. Part of MINFER_CUDA_FUSE_CONCAT.
    const Tensor* folded_norm_ = nullptr;  // the MUL the store makes from the norm's source
    bool norm_foldable(const Graph& g, size_t i) const;
    // A TOP_K whose next launching node is an unweighted MUL_MAT_ID that takes it as ids and can route
    // (mul_mat_id_routes: split Q4_0 / Q8_0 experts, at most 64): not launched; that MUL_MAT_ID ranks
    // the TOP_K's source itself and writes the ids where the TOP_K would have (IdRoute), for the later
    // readers. DeepSeek-V2's router, one launch a layer. Opt-in, MINFER_CUDA_FUSE_TOPK=1: measured
    // -3.3% on V2-Lite q4_0 (s16b, PERFORMANCE "Nineteenth session"): the rounds lengthen every warp's
    // chain by more than the launch saved.
    bool fuse_topk_ = false;
    const Tensor* folded_topk_ = nullptr;
    bool topk_foldable(const Graph& g, size_t i) const;
    // A decode token's routed experts in one launch (launch_moe_block, moe_block_fits): a TOP_K as
    // topk_foldable takes it, whose MUL_MAT_ID is a stacked gate_up read only through the two halves'
    // views by a SWIGLU, and the weighted MUL_MAT_ID of that SWIGLU right after it, with its ADD when
    // add_fusable. The nodes between may be views and the second stream's (the shared experts). The
    // TOP_K, the gate_up and the SWIGLU are not launched; x is quantized into the scratch at the
    // gate_up's place (unless it is there already), and at the down's place one launch writes the ids,
    // the quantized SWIGLU (in the scratch after x's) and the down's result; the gate_up's result is
    // never written. Opt-in, MINFER_CUDA_MOE_BLOCK=1: measured -3.7% on V2-Lite q4_0 (s17a, PERFORMANCE
    // "Nineteenth session"), where a grid barrier cost as much as a launch.
    struct MoeFold {
        const Tensor* topk = nullptr;
        const Tensor* gate_up = nullptr;
        const Tensor* swiglu = nullptr;
        const Tensor* down = nullptr;
    };
    bool moe_block_ = false;
    MoeFold moe_fold_;
    unsigned* moe_barrier_ = nullptr;  // launch_moe_block's two words, zeroed once
    MoeFold moe_block_foldable(const Graph& g, size_t i) const;
    void launch_moe_fold(const Tensor* written);
    // A quantized MUL_MAT whose x is not already quantized in scratch and fits
    // matvec_q_quantizes_inside (decode, rows of at most 512: MLA's per-head W_UK and W_UV) has the
    // matvec quantize x itself, the same bits; no quantizer launch. MINFER_CUDA_FUSE_QUANT=0 turns it
    // off.
    bool fuse_quant_ = true;
    size_t quantized_inside_ = 0;  // such MUL_MATs, the last run
    bool split_rows_ = true;  // splits_rows; MINFER_CUDA_SPLIT_ROWS=0 keeps every weight as stored
    // n's source slot `slot` as f32 rows: the fused CONCAT's two sources, or the tensor itself.
    RowsF32 rows_of(const Tensor* n, int slot) const;
    // Whether the result scratch_ is taken to hold survives node n's write.
    void note_written(const Tensor* n);
    size_t fused_nodes_ = 0;  // nodes the fusions folded into a neighbour's launch, the last run
    // The fusions skip a node only when its one reader is the node that takes it over: the graph's
    // source slots that read each tensor, counted once a run (readers through views count).
    std::unordered_map<const Tensor*, int> reads_;
    int reads_of(const Tensor* t) const {
        const auto it = reads_.find(t);
        return it == reads_.end() ? 0 : it->second;
    }
    // Quantizes the MUL_MAT's x (b, of activation kind) into the scratch unless it is there already;
    // returns whether the launcher may take the scratch as holding b.
    bool prepare_act(const Tensor* b, ActQuant kind, cudaStream_t s);

    // CUDA graphs: a decode step launches hundreds of small kernels, and launching them one by one
    // from the host costs more than many of them take to run. A graph whose signature (every node's
    // op, shape, strides, parameters and memory) equals the previous compute's is captured once and
    // then replayed with one launch per step. The session keeps the KV-cache write position in input
    // data and pads attention spans, so a decode graph repeats for up to 256 steps.
    // MINFER_CUDA_GRAPHS=0 turns this off (to measure what it buys).
    bool use_graphs_ = true;
    size_t smem_optin_ = 0;  // shared memory a block may opt in to: bounds ATTN_FUSED's span
    std::vector<uint64_t> last_signature_;
    uint64_t last_stamp_ = 0;  // Graph::stamp of the graph last_signature_ was taken from; 0: none
    bool captured_ = false;  // graph_exec_ holds last_signature_'s graph
    cudaGraphExec_t graph_exec_ = nullptr;
    // The captured graph's kernel nodes and the most of them on one chain of dependencies (edges of
    // either kind, overlapped launches' included): what a step launches, and how many of those wait
    // one after another. 0 when nothing is captured or the graph could not be read.
    size_t captured_kernels_ = 0, captured_chain_ = 0;

    std::vector<void*> pinned_;  // host memory pin_host registered

    // time_computes / computed_seconds.
    bool timing_ = false, timed_pending_ = false;
    cudaEvent_t timed_begin_ = nullptr, timed_end_ = nullptr;
    double computed_s_ = 0.0;
};

}  // namespace cuda_be
}  // namespace mf
