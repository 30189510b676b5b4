// The CUDA backend: device buffers (plain cudaMalloc), transfers and every kernel on one stream, the
// exact supports_op table, and the dispatch from graph nodes to the launchers in cuda/*.cuh.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <string>
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

static_assert(sizeof(block_q8_0) == Q8_0_BYTES && QK8_0 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q4_0) == Q4_0_BYTES && QK4_0 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q4_1) == Q4_1_BYTES && QK4_1 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q5_0) == Q5_0_BYTES && QK5_0 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q5_1) == Q5_1_BYTES && QK5_1 == QK, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q4_K) == Q4_K_BYTES, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q5_K) == Q5_K_BYTES, "cuda/quants.cuh disagrees with core/quants.h");
static_assert(sizeof(block_q6_K) == Q6_K_BYTES, "cuda/quants.cuh disagrees with core/quants.h");

namespace {

// The activation format launch_matvec_q quantizes x to for weights of type t (is_quant_weight(t)).
ActQuant act_quant_of(DType t) {
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

bool same_shape4(const Shape4& a, const Shape4& b) {
    for (int i = 0; i < 4; ++i)
        if (a.ne[i] != b.ne[i] || a.nb[i] != b.nb[i]) return false;
    return true;
}

// One past the last byte of t's elements (its first byte is t->data): the last element's, or for
// block types the last block's (nb[0] is then a block's stride, and ne[0] counts elements).
const char* data_end(const Tensor* t) {
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
bool rope_inputs_ready(const Tensor* pos, const Tensor* factors) {
    const Tensor* owner = pos->view_src ? pos->view_src : pos;
    const bool pos_ready = owner->op == Op::NONE && (owner->flags & TENSOR_INPUT) && owner->type == DType::I32;
    return pos_ready && (!factors || (factors->view_src ? factors->view_src : factors)->op == Op::NONE);
}

// Bytes [begin, end) of device memory.
struct ByteSpan {
    const char* begin;
    const char* end;
};

bool overlaps(const std::vector<ByteSpan>& spans, const char* begin, const char* end) {
    for (const ByteSpan& s : spans)
        if (begin < s.end && s.begin < end) return true;
    return false;
}

// Whether a's and b's bytes lie apart. A fused kernel writes a node's result while it reads tensors
// whose last reader the planner took to have run already. The planner keeps the next result off those
// (core/graph.h); the fusions check it all the same, as a graph may be planned otherwise.
bool apart(const Tensor* a, const Tensor* b) {
    return data_end(a) <= static_cast<const char*>(b->data) || data_end(b) <= static_cast<const char*>(a->data);
}

// The CUDA error of a call that bad input (a size, a missing device) can make fail, as an Error.
void throw_on_error(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();  // these errors are not sticky; clear them so later checks start clean
    throw Error(strfmt("cuda: %s: %s", what, cudaGetErrorString(err)));
}

// Compute capability of device, or false with *why filled in when it cannot run this build's code.
bool check_device(int device, std::string* why) {
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
    // readers. DeepSeek-V2's router, one launch a layer. Opt-in until measured:
    // MINFER_CUDA_FUSE_TOPK=1 (docs/bench/2026-12-05-s16b.sh).
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
    // never written. Opt-in until measured: MINFER_CUDA_MOE_BLOCK=1.
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

    std::vector<void*> pinned_;  // host memory pin_host registered

    // time_computes / computed_seconds.
    bool timing_ = false, timed_pending_ = false;
    cudaEvent_t timed_begin_ = nullptr, timed_end_ = nullptr;
    double computed_s_ = 0.0;
};

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

// Split rows (splits_rows) are read by MUL_MAT_ID's kernels only.
bool CudaBackend::supports_op(const Tensor* node) const {
    for (int i = 0; i < MAX_SRC; ++i) {
        if (node->src[i] && splits_rows(node->src[i]) && !(node->op == Op::MUL_MAT_ID && i == 0)) return false;
    }
    return cuda_supports_node(node, smem_optin_);
}

// Activation columns from which MUL_MAT of 32-element block (and F16 / BF16) weights runs a tensor-core kernel
// (cuda/matmul) instead of the matvec kernel. Decode (N = 1) and small batches stay on the matvec
// kernel, which reads each weight row once per 4 columns and pads nothing; the tensor-core kernel reads
// it once per 64-column tile but pads N up to a tile. 16 is where the matvec kernel already makes 4
// passes over the weights; a first choice, to be tuned by measuring on the device.
constexpr int64_t MATMUL_Q_MIN_COLS = 16;

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
        CUDA_CHECK(cudaGraphInstantiate(&graph_exec_, graph, 0));
        CUDA_CHECK(cudaGraphDestroy(graph));
        captured_ = true;
    }
    begin_timed();
    CUDA_CHECK(cudaGraphLaunch(graph_exec_, stream_));
}

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

namespace {

// The ROPE node whose result t is: directly, or as one view of it that keeps its rows (the same
// row length, contiguous, the whole result; rows counted on in order), made straight from it.
const Tensor* rope_behind(const Tensor* t) {
    if (!t) return nullptr;
    if (t->op == Op::ROPE) return t;
    const Tensor* v = t->view_src;
    return t->op == Op::VIEW && v && v->op == Op::ROPE && t->src[0] == v && t->is_contiguous() &&
                   t->ne[0] == v->ne[0] && t->nelements() == v->nelements() && t->data == v->data &&
                   !(t->flags & TENSOR_OUTPUT)
               ? v
               : nullptr;
}

}  // namespace

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
    auto next = [&](size_t j, bool skip_side) {  // the next node from j that is not a view (or beside)
        while (j < g.nodes.size() && (g.nodes[j]->op == Op::VIEW || g.nodes[j]->op == Op::NONE ||
                                      (skip_side && (g.nodes[j]->flags & TENSOR_SIDE))))
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
    const bool side = use_side_ && side_.stream && (n->flags & TENSOR_SIDE) && n->op != Op::FLASH_ATTN;
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
            folded_.push_back(moe_fold_.topk);
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
                              node->op_param_f(0), s);
            return;
        }
        case Op::ATTN_FUSED: {
            const Tensor* k = node->src[1];
            const Tensor* v = node->src[2];
            const Tensor* mask = node->src[3];
            launch_attn_fused(k->type, v->type, static_cast<const float*>(a->data), shape_of(a), k->data, shape_of(k),
                              v->data, shape_of(v), static_cast<const float*>(mask->data), int64_t(mask->nb[1]), out,
                              node->op_param_f(0), smem_optin_, s);
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

}  // namespace

bool cuda_available(std::string* why) { return check_device(0, why); }

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
