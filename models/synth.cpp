// Synthetic model files: the shape table, the SPM filler vocabulary, and a writer that draws each
// weight row from its own seeded stream, quantizes rows on a few threads and streams them to disk.
#include "models/synth.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

#include "core/common.h"
#include "core/dtype.h"
#include "core/gguf.h"

namespace mf {

namespace {

// Dimensions as in each model's config.json (context_length is max_position_embeddings).
struct SynthShape {
    const char* name;
    const char* model;    // the released model whose shape this is
    const char* arch;     // general.architecture
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab, n_ctx_train;
    float rope_freq_base;
    float norm_eps;
    bool tied;            // no output.weight: the token embedding is also the output matrix
    bool qkv_bias;        // attn_{q,k,v}.bias tensors (qwen2)
    SynthMLA mla;         // deepseek2's latent attention and experts (kv_lora_rank 0: none)
};

// DeepSeek-V2-Lite's config.json as llama.cpp's converter writes it: q_lora_rank null (plain
// attn_q), first_k_dense_replace 1, scoring_func softmax, norm_topk_prob false, rope_scaling yarn
// (factor 40, original_max_position_embeddings 4096, mscale_all_dim 0.707).
SynthMLA deepseek_v2_lite_mla() {
    SynthMLA m;
    m.kv_lora_rank = 512;
    m.n_rot = 64;
    m.head_dim_nope = 128;
    m.head_dim_v = 128;
    m.n_layer_dense_lead = 1;
    m.n_expert = 64;
    m.n_expert_used = 6;
    m.n_expert_shared = 2;
    m.n_ff_exp = 1408;
    m.expert_weights_scale = 1.0f;
    m.expert_weights_norm = false;
    m.expert_gating_func = 1;
    m.yarn_factor = 40.0f;
    m.yarn_n_ctx_orig = 4096;
    m.yarn_log_mul = 0.0707f;
    return m;
}

// An MLA shape's n_head_kv is the file's: one latent row serves every head.
const SynthShape kShapes[] = {
    {"llama-1b", "Llama-3.2-1B", "llama", 2048, 16, 32, 8, 8192, 128256, 131072, 500000.0f, 1e-5f, true, false, {}},
    {"llama-8b", "Llama-3.1-8B", "llama", 4096, 32, 32, 8, 14336, 128256, 131072, 500000.0f, 1e-5f, false, false, {}},
    {"smollm2-135m", "SmolLM2-135M", "llama", 576, 30, 9, 3, 1536, 49152, 8192, 100000.0f, 1e-5f, true, false, {}},
    {"qwen2-0.5b", "Qwen2-0.5B", "qwen2", 896, 24, 14, 2, 4864, 151936, 32768, 1000000.0f, 1e-6f, true, true, {}},
    {"deepseek-v2-lite", "DeepSeek-V2-Lite", "deepseek2", 2048, 27, 16, 1, 10944, 102400, 163840, 10000.0f, 1e-6f,
     false, false, deepseek_v2_lite_mla()},
};

// The weight types, with the llama_ftype each writes as general.file_type (mostly-TYPE files;
// the K-quants as their _S variants, which are the all-one-type ones).
struct SynthType {
    DType dtype;
    uint32_t file_type;
};

const SynthType kTypes[] = {
    {DType::F32, 0},   {DType::F16, 1},   {DType::BF16, 32}, {DType::Q8_0, 7},  {DType::Q4_0, 2},  {DType::Q4_1, 3},
    {DType::Q5_0, 8},  {DType::Q5_1, 9},  {DType::Q4_K, 14}, {DType::Q5_K, 16}, {DType::Q6_K, 18},
};

constexpr uint32_t GGML_QUANTIZATION_VERSION = 2;  // general.quantization_version of quantized files
constexpr size_t CHUNK_BYTES = size_t(64) << 20;     // quantized bytes generated between two writes

// Scales of the drawn values: matrices as a trained model's (std 0.02), norm weights near 1.
constexpr float MATRIX_STD = 0.02f;
constexpr float NORM_STD = 0.05f;
constexpr float BIAS_STD = 0.02f;

std::string join(const std::vector<std::string>& names) {
    std::string s;
    for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
    return s;
}

const SynthShape& find_shape(const std::string& name) {
    for (const auto& s : kShapes)
        if (name == s.name) return s;
    throw Error(strfmt("unknown shape '%s' (shapes: %s)", name.c_str(), join(synth_shape_names()).c_str()));
}

const SynthType& find_type(const std::string& name) {
    for (const auto& t : kTypes)
        if (name == dtype_name(t.dtype)) return t;
    throw Error(strfmt("unknown type '%s' (types: %s)", name.c_str(), join(synth_type_names()).c_str()));
}

SynthDims to_dims(const SynthShape& s) {
    SynthDims d;
    d.arch = s.arch;
    d.n_embd = s.n_embd, d.n_layer = s.n_layer, d.n_head = s.n_head, d.n_head_kv = s.n_head_kv;
    d.n_ff = s.n_ff, d.n_vocab = s.n_vocab, d.n_ctx_train = s.n_ctx_train;
    d.rope_freq_base = s.rope_freq_base, d.norm_eps = s.norm_eps, d.tied = s.tied, d.qkv_bias = s.qkv_bias;
    d.mla = s.mla;
    return d;
}

// One tensor of the file and how its values are drawn: mean + std * z, z unit-variance.
struct PlannedTensor {
    std::string name;
    DType type;
    int n_dims;
    int64_t ne[3];  // ggml order: ne[0] elements per row, ne[1] rows, ne[2] matrices (3-D tensors)
    float mean;
    float std;

    int64_t n_rows() const { return ne[1] * ne[2]; }
};

// MLA's attention tensors of one layer, as llama.cpp's deepseek2 files name them (q_lora none;
// attn_kv_b split into attn_k_b and attn_v_b, as current conversions write it).
void plan_mla_layer(std::vector<PlannedTensor>& ts, const std::string& p, const SynthDims& s, DType type) {
    const SynthMLA& m = s.mla;
    const int64_t n_embd = s.n_embd, n_head = s.n_head, kv_lora = m.kv_lora_rank, n_rot = m.n_rot;
    const int64_t nope = m.head_dim_nope, v_dim = m.head_dim_v;
    ts.push_back({p + "attn_q.weight", type, 2, {n_embd, n_head * (nope + n_rot), 1}, 0.0f, MATRIX_STD});
    ts.push_back({p + "attn_kv_a_mqa.weight", type, 2, {n_embd, kv_lora + n_rot, 1}, 0.0f, MATRIX_STD});
    ts.push_back({p + "attn_kv_a_norm.weight", DType::F32, 1, {kv_lora, 1, 1}, 1.0f, NORM_STD});
    ts.push_back({p + "attn_k_b.weight", type, 3, {nope, kv_lora, n_head}, 0.0f, MATRIX_STD});
    ts.push_back({p + "attn_v_b.weight", type, 3, {kv_lora, v_dim, n_head}, 0.0f, MATRIX_STD});
}

// deepseek2's expert FFN of one layer: the router (f32, as the converter keeps it), the routed
// experts stacked along ne[2], and the shared experts as one FFN.
void plan_moe_layer(std::vector<PlannedTensor>& ts, const std::string& p, const SynthDims& s, DType type) {
    const SynthMLA& m = s.mla;
    const int64_t n_embd = s.n_embd, n_expert = m.n_expert, n_ff_exp = m.n_ff_exp;
    const int64_t n_ff_sh = n_ff_exp * m.n_expert_shared;
    ts.push_back({p + "ffn_gate_inp.weight", DType::F32, 2, {n_embd, n_expert, 1}, 0.0f, MATRIX_STD});
    ts.push_back({p + "ffn_gate_exps.weight", type, 3, {n_embd, n_ff_exp, n_expert}, 0.0f, MATRIX_STD});
    ts.push_back({p + "ffn_up_exps.weight", type, 3, {n_embd, n_ff_exp, n_expert}, 0.0f, MATRIX_STD});
    ts.push_back({p + "ffn_down_exps.weight", type, 3, {n_ff_exp, n_embd, n_expert}, 0.0f, MATRIX_STD});
    if (n_ff_sh == 0) return;
    ts.push_back({p + "ffn_gate_shexp.weight", type, 2, {n_embd, n_ff_sh, 1}, 0.0f, MATRIX_STD});
    ts.push_back({p + "ffn_up_shexp.weight", type, 2, {n_embd, n_ff_sh, 1}, 0.0f, MATRIX_STD});
    ts.push_back({p + "ffn_down_shexp.weight", type, 2, {n_ff_sh, n_embd, 1}, 0.0f, MATRIX_STD});
}

// llama.cpp's tensor names and shapes for the shape (as models/model.cpp loads them); with
// s.mla, MLA attention in deepseek2's names instead of attn_k/attn_v, and experts past the
// leading dense layers.
std::vector<PlannedTensor> plan_tensors(const SynthDims& s, uint32_t n_layer, DType type) {
    const bool mla = s.mla.kv_lora_rank > 0;
    const int64_t n_embd = s.n_embd, n_ff = s.n_ff;
    const int64_t head_dim = s.n_embd / s.n_head;
    const int64_t q_dim = head_dim * s.n_head, kv_dim = head_dim * s.n_head_kv;
    const int64_t attn_out_dim = mla ? int64_t(s.n_head) * s.mla.head_dim_v : q_dim;
    std::vector<PlannedTensor> ts;
    const auto matrix = [&](std::string name, int64_t n_in, int64_t n_out) {
        ts.push_back({std::move(name), type, 2, {n_in, n_out, 1}, 0.0f, MATRIX_STD});
    };
    const auto norm = [&](std::string name) {
        ts.push_back({std::move(name), DType::F32, 1, {n_embd, 1, 1}, 1.0f, NORM_STD});
    };
    const auto bias = [&](std::string name, int64_t n) {
        ts.push_back({std::move(name), DType::F32, 1, {n, 1, 1}, 0.0f, BIAS_STD});
    };

    matrix("token_embd.weight", n_embd, s.n_vocab);
    for (uint32_t il = 0; il < n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        norm(p + "attn_norm.weight");
        if (mla) {
            plan_mla_layer(ts, p, s, type);
        } else {
            matrix(p + "attn_q.weight", n_embd, q_dim);
            matrix(p + "attn_k.weight", n_embd, kv_dim);
            matrix(p + "attn_v.weight", n_embd, kv_dim);
        }
        if (s.qkv_bias && !mla) {
            bias(p + "attn_q.bias", q_dim);
            bias(p + "attn_k.bias", kv_dim);
            bias(p + "attn_v.bias", kv_dim);
        }
        matrix(p + "attn_output.weight", attn_out_dim, n_embd);
        norm(p + "ffn_norm.weight");
        if (s.mla.n_expert > 0 && il >= s.mla.n_layer_dense_lead) {
            plan_moe_layer(ts, p, s, type);
            continue;
        }
        matrix(p + "ffn_gate.weight", n_embd, n_ff);
        matrix(p + "ffn_up.weight", n_embd, n_ff);
        matrix(p + "ffn_down.weight", n_ff, n_embd);
    }
    norm("output_norm.weight");
    if (!s.tied) matrix("output.weight", n_embd, s.n_vocab);
    return ts;
}

// Quantized rows must be whole blocks (a K-quant's 256-element super-blocks); other rows become
// q8_0 (as llama.cpp's quantizer falls back for such tensors), or f16 where q8_0's 32 do not divide
// them either (MLA's per-head matrices). Returns one notice per row length that fell back.
std::vector<std::string> apply_fallbacks(std::vector<PlannedTensor>& ts, DType type) {
    const int64_t block = dtype_traits(type).block_size;
    if (block <= 1) return {};
    std::map<int64_t, size_t> fallen;  // row length -> tensors
    for (auto& t : ts) {
        if (t.type != type || t.ne[0] % block == 0) continue;
        t.type = t.ne[0] % dtype_traits(DType::Q8_0).block_size == 0 ? DType::Q8_0 : DType::F16;
        ++fallen[t.ne[0]];
    }
    std::vector<std::string> notices;
    for (const auto& [row, n] : fallen) {
        const bool q8 = row % dtype_traits(DType::Q8_0).block_size == 0;
        notices.push_back(strfmt("%s needs rows that are a multiple of %lld elements: %zu tensor%s with rows of %lld "
                                 "written as %s",
                                 dtype_name(type), (long long)block, n, n == 1 ? "" : "s", (long long)row,
                                 q8 ? "q8_0" : "f16"));
    }
    return notices;
}

// An SPM vocabulary of n_vocab distinct pieces, laid out as Llama 2's: <unk> <s> </s>, the 256
// byte tokens, then normal pieces with decreasing scores: "▁", the printable ASCII characters,
// then every lower-case word of length 1, 2, 3, ... with and without the "▁" word prefix.
struct SynthVocab {
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;  // tokenizer.ggml.token_type: 1 normal, 2 unknown, 3 control, 6 byte
};

SynthVocab make_vocab(uint32_t n_vocab) {
    SynthVocab v;
    v.tokens.reserve(n_vocab);
    const auto add = [&](std::string text, float score, int32_t type) {
        if (v.tokens.size() >= n_vocab) return;
        v.tokens.push_back(std::move(text));
        v.scores.push_back(score);
        v.types.push_back(type);
    };
    add("<unk>", 0.0f, 2);
    add("<s>", 0.0f, 3);
    add("</s>", 0.0f, 3);
    for (int b = 0; b < 256; ++b) add(strfmt("<0x%02X>", b), 0.0f, 6);
    float score = 0.0f;
    const auto piece = [&](std::string text) { add(std::move(text), score -= 1.0f, 1); };
    const std::string space = "\xE2\x96\x81";  // U+2581, SentencePiece's word-start mark
    piece(space);
    for (char c = '!'; c <= '~'; ++c) piece(std::string(1, c));
    for (int len = 1; v.tokens.size() < n_vocab; ++len) {
        std::string word(size_t(len), 'a');
        for (;;) {
            if (len > 1) piece(word);  // the single letters came with the ASCII characters
            piece(space + word);
            if (v.tokens.size() >= n_vocab) break;
            int i = len - 1;  // next word in base 26, last letter fastest
            while (i >= 0 && word[size_t(i)] == 'z') word[size_t(i--)] = 'a';
            if (i < 0) break;
            ++word[size_t(i)];
        }
    }
    return v;
}

// A splitmix64 stream seeded per (seed, tensor, row), so each row's values do not depend on which
// thread draws it or in what order.
class RowRng {
public:
    RowRng(uint64_t seed, uint64_t tensor, uint64_t row)
        : state_(seed * 0x9E3779B97F4A7C15ull ^ (tensor + 1) * 0xC2B2AE3D27D4EB4Full ^
                 (row + 1) * 0x165667B19E3779F9ull) {
        next();
    }
    uint64_t next() {
        uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // Mean 0, variance 1: the sum of four 16-bit uniforms (Irwin-Hall, bounded at +-3.46), one
    // 64-bit draw per value instead of the several a true normal sampler costs.
    float normalish() {
        const uint64_t r = next();
        const uint32_t sum = uint32_t(r & 0xFFFF) + uint32_t((r >> 16) & 0xFFFF) + uint32_t((r >> 32) & 0xFFFF) +
                             uint32_t(r >> 48);
        constexpr float scale = 1.7320508f / 65536.0f;  // sqrt(12 / 4) per unit of the 16-bit range
        return (float(sum) - 131070.0f) * scale;
    }

private:
    uint64_t state_;
};

// Draws rows [row0, row1) of tensor t and converts them to t.type into dst (one row after another);
// scratch holds one row of floats.
void generate_rows(const PlannedTensor& t, uint64_t seed, size_t tensor_index, int64_t row0, int64_t row1,
                   uint8_t* dst, std::vector<float>& scratch) {
    const FromFloatFn from_float = dtype_traits(t.type).from_float;
    const size_t row_bytes = dtype_row_size(t.type, t.ne[0]);
    MF_ASSERT(scratch.size() == size_t(t.ne[0]) && row1 <= t.n_rows());
    for (int64_t r = row0; r < row1; ++r) {
        RowRng rng(seed, tensor_index, uint64_t(r));
        for (float& x : scratch) x = t.mean + t.std * rng.normalish();
        from_float(scratch.data(), dst + size_t(r - row0) * row_bytes, t.ne[0]);
    }
}

// A read-only mapping of zero pages that costs no memory: the data GGUFWriter writes as
// placeholders, so the file's layout comes from the project's own writer before the weights exist.
class ZeroPages {
public:
    explicit ZeroPages(size_t bytes) : size_(std::max<size_t>(bytes, 1)) {
        data_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (data_ == MAP_FAILED) throw Error(strfmt("cannot map %zu bytes: %s", size_, std::strerror(errno)));
    }
    ZeroPages(const ZeroPages&) = delete;
    ZeroPages& operator=(const ZeroPages&) = delete;
    ~ZeroPages() { munmap(data_, size_); }
    const void* data() const { return data_; }

private:
    size_t size_;
    void* data_;
};

// The output file opened for writing the weights in place; removed unless commit() ran.
class WeightSink {
public:
    explicit WeightSink(const std::string& path) : path_(path), fd_(open(path.c_str(), O_WRONLY)) {
        if (fd_ < 0) {
            const int err = errno;
            std::remove(path_.c_str());
            errno = err;
            fail("cannot open for writing");
        }
    }
    WeightSink(const WeightSink&) = delete;
    WeightSink& operator=(const WeightSink&) = delete;
    ~WeightSink() {
        if (fd_ >= 0) close(fd_);
        if (!committed_) std::remove(path_.c_str());
    }
    void write_at(const void* p, size_t n, uint64_t offset) {
        const char* c = static_cast<const char*>(p);
        while (n > 0) {
            const ssize_t k = pwrite(fd_, c, n, off_t(offset));
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) fail("write failed");
            c += k;
            n -= size_t(k);
            offset += uint64_t(k);
        }
    }
    void commit() {
        const int fd = fd_;
        fd_ = -1;
        if (close(fd) != 0) fail("write failed");
        committed_ = true;
    }

private:
    [[noreturn]] void fail(const char* what) {
        throw Error(strfmt("%s: %s: %s", path_.c_str(), what, std::strerror(errno ? errno : EIO)));
    }
    std::string path_;
    int fd_;
    bool committed_ = false;
};

// deepseek2's MLA keys (llama.cpp's names): the cache geometry is the latent row (key_length =
// kv_lora_rank + rope dims, value_length = kv_lora_rank, one KV head), the _mla keys the per-head
// sizes; then the experts and YaRN where the shape has them (a dense file: expert_count 0 only).
void set_mla_metadata(GGUFWriter& w, const SynthMLA& m, uint32_t n_layer) {
    const std::string a = "deepseek2.";
    w.set_u32(a + "attention.head_count_kv", 1);
    w.set_u32(a + "attention.kv_lora_rank", m.kv_lora_rank);
    w.set_u32(a + "attention.key_length", m.kv_lora_rank + m.n_rot);
    w.set_u32(a + "attention.value_length", m.kv_lora_rank);
    w.set_u32(a + "attention.key_length_mla", m.head_dim_nope + m.n_rot);
    w.set_u32(a + "attention.value_length_mla", m.head_dim_v);
    w.set_u32(a + "rope.dimension_count", m.n_rot);
    w.set_u32(a + "leading_dense_block_count", std::min(m.n_layer_dense_lead, n_layer));
    w.set_u32(a + "expert_count", m.n_expert);
    if (m.n_expert > 0) {
        w.set_u32(a + "expert_used_count", m.n_expert_used);
        w.set_u32(a + "expert_shared_count", m.n_expert_shared);
        w.set_u32(a + "expert_feed_forward_length", m.n_ff_exp);
        w.set_f32(a + "expert_weights_scale", m.expert_weights_scale);
        w.set_bool(a + "expert_weights_norm", m.expert_weights_norm);
        w.set_u32(a + "expert_gating_func", m.expert_gating_func);
    }
    if (m.yarn_factor > 0.0f) {
        w.set_str(a + "rope.scaling.type", "yarn");
        w.set_f32(a + "rope.scaling.factor", m.yarn_factor);
        w.set_u32(a + "rope.scaling.original_context_length", m.yarn_n_ctx_orig);
        w.set_f32(a + "rope.scaling.yarn_log_multiplier", m.yarn_log_mul);
    }
}

void set_metadata(GGUFWriter& w, const SynthDims& s, const std::string& name, const SynthType& type,
                  uint32_t n_layer) {
    const bool mla = s.mla.kv_lora_rank > 0;
    const std::string arch = mla ? "deepseek2" : s.arch;
    const std::string a = arch + ".";
    w.set_str("general.architecture", arch);
    w.set_str("general.name", "minfer synth " + name);
    w.set_u32("general.file_type", type.file_type);
    if (dtype_traits(type.dtype).is_quantized) w.set_u32("general.quantization_version", GGML_QUANTIZATION_VERSION);
    w.set_u32(a + "vocab_size", s.n_vocab);
    w.set_u32(a + "context_length", s.n_ctx_train);
    w.set_u32(a + "embedding_length", s.n_embd);
    w.set_u32(a + "block_count", n_layer);
    w.set_u32(a + "feed_forward_length", s.n_ff);
    w.set_u32(a + "attention.head_count", s.n_head);
    w.set_f32(a + "rope.freq_base", s.rope_freq_base);
    w.set_f32(a + "attention.layer_norm_rms_epsilon", s.norm_eps);
    if (mla) {
        set_mla_metadata(w, s.mla, n_layer);
    } else {
        w.set_u32(a + "attention.head_count_kv", s.n_head_kv);
        w.set_u32(a + "rope.dimension_count", s.n_embd / s.n_head);
    }

    const SynthVocab v = make_vocab(s.n_vocab);
    w.set_str("tokenizer.ggml.model", "llama");
    w.set_array_str("tokenizer.ggml.tokens", v.tokens);
    w.set("tokenizer.ggml.scores", GGUFMetaValue::array_f32(v.scores));
    w.set("tokenizer.ggml.token_type", GGUFMetaValue::array_i32(v.types));
    w.set_u32("tokenizer.ggml.bos_token_id", 1);
    w.set_u32("tokenizer.ggml.eos_token_id", 2);
    w.set_u32("tokenizer.ggml.unknown_token_id", 0);
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_bool("tokenizer.ggml.add_eos_token", false);
}

}  // namespace

uint32_t synth_mla_rope_dims(uint32_t head_dim) { return std::min<uint32_t>(64, head_dim / 2); }

SynthDims synth_shape_dims(const std::string& shape) { return to_dims(find_shape(shape)); }

std::vector<std::string> synth_shape_names() {
    std::vector<std::string> names;
    for (const auto& s : kShapes) names.push_back(s.name);
    return names;
}

std::vector<std::string> synth_type_names() {
    std::vector<std::string> names;
    for (const auto& t : kTypes) names.push_back(dtype_name(t.dtype));
    return names;
}

std::string synth_shapes_help() {
    std::string out;
    for (const auto& s : kShapes) {
        const SynthMLA& m = s.mla;
        if (m.kv_lora_rank == 0) {
            out += strfmt("  %-16s %s (%s): %u layers, n_embd %u, %u heads (%u KV) of %u, n_ff %u, vocab %u%s%s\n",
                          s.name, s.model, s.arch, s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_embd / s.n_head,
                          s.n_ff, s.n_vocab, s.tied ? ", tied embeddings" : "", s.qkv_bias ? ", QKV biases" : "");
            continue;
        }
        out += strfmt("  %-16s %s (%s): %u layers, n_embd %u, %u heads, MLA kv_lora_rank %u (q/k %u + rope %u, v %u), "
                      "vocab %u\n  %-16s n_ff %u in the first %u layer%s, then %u experts of %u (top %u, %u shared)%s\n",
                      s.name, s.model, s.arch, s.n_layer, s.n_embd, s.n_head, m.kv_lora_rank, m.head_dim_nope, m.n_rot,
                      m.head_dim_v, s.n_vocab, "", s.n_ff, m.n_layer_dense_lead, m.n_layer_dense_lead == 1 ? "" : "s",
                      m.n_expert, m.n_ff_exp, m.n_expert_used, m.n_expert_shared,
                      m.yarn_factor > 0.0f ? strfmt(", YaRN x%g", double(m.yarn_factor)).c_str() : "");
    }
    return out;
}

SynthSummary write_synth_model(const SynthOptions& opts) {
    SynthDims dims = opts.dims ? *opts.dims : to_dims(find_shape(opts.shape));
    const std::string name = opts.dims ? (opts.shape.empty() ? "custom" : opts.shape) : opts.shape;
    const SynthType& type = find_type(opts.type);
    if (opts.n_layer > 4096) throw Error(strfmt("layer count %u is out of range (1..4096)", opts.n_layer));
    if (opts.path.empty()) throw Error("no output file given");
    if (dims.n_head == 0 || dims.n_embd % dims.n_head != 0 || dims.n_layer == 0 || dims.n_ff == 0 || dims.n_vocab < 3)
        throw Error(strfmt("bad dimensions: n_embd %u, %u heads, %u layers, n_ff %u, vocab %u", dims.n_embd, dims.n_head,
                           dims.n_layer, dims.n_ff, dims.n_vocab));
    if (opts.n_head_kv > 0) {
        if (dims.n_head % opts.n_head_kv != 0)
            throw Error(strfmt("KV head count %u does not divide the %u query heads", opts.n_head_kv, dims.n_head));
        dims.n_head_kv = opts.n_head_kv;
    }
    const uint32_t head_dim = dims.n_embd / dims.n_head;
    if (dims.mla.kv_lora_rank > 0 && (opts.kv_lora_rank > 0 || opts.n_head_kv > 0))
        throw Error(strfmt("shape '%s' has MLA attention already: no KV head count or latent rank", name.c_str()));
    if (opts.kv_lora_rank > 0 && (opts.kv_lora_rank > 4096 || head_dim < 4 || opts.n_head_kv > 0))
        throw Error(strfmt("MLA latent rank %u: must be 1..4096, with heads of at least 4 and no KV head count",
                           opts.kv_lora_rank));
    struct stat st;
    if (stat(opts.path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        throw Error(strfmt("%s: not a regular file (the weights are written in place)", opts.path.c_str()));
    const uint32_t n_layer = opts.n_layer ? opts.n_layer : dims.n_layer;
    if (opts.kv_lora_rank > 0) {
        // The dense MLA variant of the base: its heads split into nope and rope dims, every layer dense.
        SynthMLA& m = dims.mla;
        m.kv_lora_rank = opts.kv_lora_rank;
        m.n_rot = synth_mla_rope_dims(head_dim);
        m.head_dim_nope = head_dim - m.n_rot;
        m.head_dim_v = head_dim;
        m.n_layer_dense_lead = n_layer;
    }
    const int n_threads = opts.n_threads > 0 ? opts.n_threads : int(std::max(1u, std::thread::hardware_concurrency()));

    std::vector<PlannedTensor> plan = plan_tensors(dims, n_layer, type.dtype);
    for (const std::string& notice : apply_fallbacks(plan, type.dtype))
        if (opts.on_notice) opts.on_notice(notice);

    // Pass 1: the writer lays out metadata, tensor infos and alignment, over zero placeholders.
    GGUFWriter w;
    set_metadata(w, dims, name, type, n_layer);
    uint64_t max_bytes = 0;
    for (const auto& t : plan) max_bytes = std::max<uint64_t>(max_bytes, dtype_row_size(t.type, t.ne[0]) * t.n_rows());
    SynthSummary summary;
    {
        const ZeroPages zeros(max_bytes);
        for (const auto& t : plan) {
            w.add_tensor(t.name, t.type, t.n_dims, t.ne, zeros.data());
            summary.n_params += uint64_t(t.ne[0] * t.n_rows());
        }
        w.write(opts.path);
    }
    WeightSink sink(opts.path);  // from here on, a failure removes the file
    std::vector<uint64_t> offsets;
    {
        const GGUFFile file = GGUFFile::open(opts.path);
        MF_ASSERT(file.n_tensors() == plan.size());
        for (size_t i = 0; i < plan.size(); ++i) {
            MF_ASSERT(file.tensor(i).name == plan[i].name);
            offsets.push_back(file.data_offset() + file.tensor(i).offset);
        }
        summary.file_bytes = file.file_size();
        summary.n_tensors = file.n_tensors();
    }

    // Pass 2: each tensor in chunks of rows; the threads split a chunk's rows, then it is written.
    std::vector<std::vector<float>> scratch(static_cast<size_t>(n_threads));
    std::vector<uint8_t> chunk;
    for (size_t i = 0; i < plan.size(); ++i) {
        const PlannedTensor& t = plan[i];
        const size_t row_bytes = dtype_row_size(t.type, t.ne[0]);
        const int64_t chunk_rows = std::max<int64_t>(1, int64_t(CHUNK_BYTES / row_bytes));
        for (auto& s : scratch) s.resize(size_t(t.ne[0]));  // here, so no thread allocates
        for (int64_t row0 = 0; row0 < t.n_rows(); row0 += chunk_rows) {
            const int64_t n_rows = std::min(chunk_rows, t.n_rows() - row0);
            chunk.resize(size_t(n_rows) * row_bytes);
            const int n = int(std::min<int64_t>(n_threads, n_rows));
            const auto work = [&](int ith) {
                const int64_t r0 = n_rows * ith / n, r1 = n_rows * (ith + 1) / n;
                generate_rows(t, opts.seed, i, row0 + r0, row0 + r1, chunk.data() + size_t(r0) * row_bytes,
                              scratch[size_t(ith)]);
            };
            std::vector<std::thread> threads;
            for (int ith = 1; ith < n; ++ith) threads.emplace_back(work, ith);
            work(0);
            for (auto& th : threads) th.join();
            sink.write_at(chunk.data(), chunk.size(), offsets[i] + uint64_t(row0) * row_bytes);
        }
        if (opts.on_progress) opts.on_progress(i + 1, plan.size());
    }
    sink.commit();
    return summary;
}

}  // namespace mf
