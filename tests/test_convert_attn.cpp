// Attention conversion (models/convert_attn.h) on tiny random llama/qwen2 files, CPU: pooled GQA/MQA
// files against originals whose grouped heads are equal, MLA exactness and truncation, the SVD, bad specs.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <deque>
#include <functional>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "model_fixture.h"
#include "models/convert_attn.h"
#include "models/model.h"
#include "models/session.h"

using namespace mf;

namespace {

bool file_exists(const std::string& p) {
    std::FILE* f = std::fopen(p.c_str(), "rb");
    if (f) std::fclose(f);
    return f != nullptr;
}

// Copies the f32 file in to out, letting edit change any tensor's values (name, ne, values).
void rewrite(const std::string& in, const std::string& out,
             const std::function<void(const std::string&, const int64_t*, std::vector<float>&)>& edit) {
    const GGUFFile f = GGUFFile::open(in);
    GGUFWriter w;
    for (size_t i = 0; i < f.n_kv(); ++i) w.set(std::string(f.kv(i).key()), GGUFMetaValue::copy_of(f.kv(i)));
    std::deque<std::vector<float>> data;
    for (size_t i = 0; i < f.n_tensors(); ++i) {
        const GGUFTensorInfo& t = f.tensor(i);
        REQUIRE(t.type == DType::F32);
        const float* p = static_cast<const float*>(t.data);
        data.emplace_back(p, p + t.n_elements);
        edit(t.name, t.ne, data.back());
        w.add_tensor(t.name, DType::F32, std::max(1, t.n_dims), t.ne, data.back().data());
    }
    w.write(out);
}

// Makes the K/V heads (and biases) of each group of g consecutive KV heads equal to the group's first.
void equalize_kv_groups(const std::string& in, const std::string& out, int64_t head_dim, int64_t g) {
    rewrite(in, out, [&](const std::string& name, const int64_t* ne, std::vector<float>& v) {
        const bool kv = name.find("attn_k.") != std::string::npos || name.find("attn_v.") != std::string::npos;
        if (!kv) return;
        const bool bias = name.find(".bias") != std::string::npos;
        const int64_t ne0 = bias ? 1 : ne[0], n_heads = (bias ? ne[0] : ne[1]) / head_dim;
        for (int64_t h = 0; h < n_heads; ++h)
            for (int64_t r = 0; r < head_dim; ++r)
                for (int64_t c = 0; c < ne0; ++c)
                    v[size_t((h * head_dim + r) * ne0 + c)] = v[size_t(((h / g * g) * head_dim + r) * ne0 + c)];
    });
}

// Logits after every one of tokens [T * n_vocab], and the model's KV-head count.
std::vector<float> all_logits(const std::string& path, const std::vector<int32_t>& tokens, uint32_t* n_head_kv = nullptr) {
    auto backend = make_cpu_backend(2);
    auto model = load_model(path, *backend);
    if (n_head_kv) *n_head_kv = model->hp.n_head_kv[0];
    Session s(*model, SessionParams{64, 256});
    return s.prefill_all(tokens);
}

AttnConvertSummary convert(const std::string& in, const std::string& out, const std::string& spec,
                           MlaNorm norm = MlaNorm::LINEAR) {
    AttnConvertOptions o;
    o.in_path = in;
    o.out_path = out;
    o.spec = parse_attn_spec(spec);
    o.type = DType::F32;
    o.mla_norm = norm;
    o.n_threads = 2;
    return convert_attention(o);
}

}  // namespace

TEST_CASE("attention specs parse, and malformed ones are refused with the spec quoted") {
    CHECK(parse_attn_spec("mqa").kind == AttnSpec::Kind::GQA);
    CHECK(parse_attn_spec("mqa").group == 0);
    CHECK(parse_attn_spec("gqa:4").group == 4);
    const AttnSpec m = parse_attn_spec("mla:128:16");
    CHECK(m.kind == AttnSpec::Kind::MLA);
    CHECK(m.rank == 128);
    CHECK(m.rope_dim == 16);
    CHECK(parse_attn_spec("mla:64").rope_dim == 0);
    for (const char* bad : {"mla:0", "gqa:", "gqa:x", "mla:8:3", "mha", "gqa:-2", "mla:8:", ""})
        CHECK_THROWS_WITH_AS(parse_attn_spec(bad), doctest::Contains("--attn"), Error);
}

TEST_CASE("top_right_singular: orthonormal rows, descending values, the best rank-k error, completion past the rank") {
    for (auto [m, n] : {std::pair<int64_t, int64_t>{12, 30}, {40, 18}}) {
        // A rank-8 matrix plus nothing: singular values past 8 are zero and the rows past 8 complete the basis.
        const int64_t rank = 8;
        const std::vector<float> x = mf_test::random_floats(size_t(m * rank)), y = mf_test::random_floats(size_t(rank * n));
        std::vector<double> a(size_t(m * n), 0.0);
        for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j)
                for (int64_t r = 0; r < rank; ++r) a[size_t(i * n + j)] += double(x[size_t(i * rank + r)]) * y[size_t(r * n + j)];
        double a2 = 0.0;
        for (double v : a) a2 += v * v;
        std::vector<double> err;
        for (int64_t k : {int64_t(2), int64_t(4), int64_t(8), std::min(m, n)}) {
            const TopSubspace t = top_right_singular(a, m, n, k);
            for (int64_t i = 0; i < k; ++i)
                for (int64_t j = 0; j < k; ++j) {
                    double d = 0.0;
                    for (int64_t c = 0; c < n; ++c) d += t.vt[size_t(i * n + c)] * t.vt[size_t(j * n + c)];
                    CHECK(std::fabs(d - (i == j ? 1.0 : 0.0)) < 1e-10);  // Gram-Schmidt twice in double
                }
            for (int64_t i = 1; i < k; ++i) CHECK(t.s[size_t(i)] <= t.s[size_t(i - 1)] * (1 + 1e-12));
            // ||A V||^2 = sum of the kept s^2 (the projection keeps exactly that energy).
            double kept = 0.0, s2 = 0.0;
            for (int64_t i = 0; i < m; ++i)
                for (int64_t r = 0; r < k; ++r) {
                    double d = 0.0;
                    for (int64_t c = 0; c < n; ++c) d += a[size_t(i * n + c)] * t.vt[size_t(r * n + c)];
                    kept += d * d;
                }
            for (double s : t.s) s2 += s * s;
            CHECK(kept == doctest::Approx(s2).epsilon(1e-9));
            err.push_back(std::sqrt(std::max(0.0, a2 - kept) / a2));
        }
        CHECK(err[0] > err[1]);
        CHECK(err[2] < 1e-7);  // rank 8 is all of it (Gram matrix eigenvalues: relative error ~1e-16 in s^2)
        CHECK(err[3] < 1e-7);
    }
}

TEST_CASE("gqa/mqa: a file whose grouped K/V heads are equal keeps its logits after pooling") {
    struct Case {
        std::string arch;
        uint32_t n_head_kv;
        std::string spec;
        uint32_t want_kv;
    };
    for (const Case& c : {Case{"llama", 4, "gqa:2", 2}, Case{"llama", 4, "mqa", 1}, Case{"llama", 2, "mqa", 1},
                          Case{"qwen2", 4, "gqa:2", 2}, Case{"llama", 2, "gqa:2", 2}}) {
        CAPTURE(c.arch);
        CAPTURE(c.spec);
        CAPTURE(c.n_head_kv);
        mf_test::TinyLlama tiny;
        tiny.arch = c.arch;
        tiny.n_head_kv = c.n_head_kv;
        const std::string raw = mf_test::temp_path("cattn_raw.gguf"), eq = mf_test::temp_path("cattn_eq.gguf"),
                          out = mf_test::temp_path("cattn_out.gguf");
        tiny.write(raw);
        equalize_kv_groups(raw, eq, tiny.n_embd / tiny.n_head, c.n_head_kv / c.want_kv);
        const AttnConvertSummary sum = convert(eq, out, c.spec);
        CHECK(sum.n_head_kv_out == c.want_kv);
        const std::vector<int32_t> toks = mf_test::random_tokens(12, int32_t(tiny.n_vocab));
        uint32_t kv_in = 0, kv_out = 0;
        const std::vector<float> want = all_logits(eq, toks, &kv_in), got = all_logits(out, toks, &kv_out);
        CHECK(kv_in == c.n_head_kv);
        CHECK(kv_out == c.want_kv);
        // The same f32 arithmetic on the same cached f16 values (a mean of equal floats is that float);
        // only the order of heads inside the kernels differs.
        CHECK(mf_test::max_rel_diff(got, want) < 1e-5);
        // And on the raw file (heads differ) pooling does change the model: the check above can fail.
        if (c.n_head_kv != c.want_kv) {
            convert(raw, out, c.spec);
            CHECK(mf_test::max_rel_diff(all_logits(out, toks), all_logits(raw, toks)) > 1e-3);
        }
        for (const auto& p : {raw, eq, out}) std::remove(p.c_str());
    }
}

// An MQA source with partial RoPE (8 of 16 head dims rotated): its unrotated dims are exactly MLA's
// nope part and its one KV head is exactly the shared k_pe, so only the latent can lose anything.
struct MlaFixture {
    mf_test::TinyLlama tiny;
    std::string src = mf_test::temp_path("cattn_mla_src.gguf"), out = mf_test::temp_path("cattn_mla_out.gguf");
    std::vector<int32_t> toks;
    std::vector<float> want;
    explicit MlaFixture(uint32_t n_head_kv) {
        tiny.n_head_kv = n_head_kv;
        tiny.extra_kv.emplace("llama.rope.dimension_count", GGUFMetaValue::u32(8));
        tiny.write(src);
        toks = mf_test::random_tokens(16, int32_t(tiny.n_vocab));
        want = all_logits(src, toks);
    }
    ~MlaFixture() {
        std::remove(src.c_str());
        std::remove(out.c_str());
    }
    // max_rel_diff of the converted file's logits, per position, averaged.
    double error(const std::string& spec, MlaNorm norm = MlaNorm::LINEAR) {
        convert(src, out, spec, norm);
        const std::vector<float> got = all_logits(out, toks);
        const size_t V = tiny.n_vocab;
        REQUIRE(got.size() == want.size());
        double sum = 0.0;
        for (size_t t = 0; t < toks.size(); ++t)
            sum += mf_test::max_rel_diff(std::vector<float>(got.begin() + t * V, got.begin() + (t + 1) * V),
                                         std::vector<float>(want.begin() + t * V, want.begin() + (t + 1) * V));
        return sum / double(toks.size());
    }
};

TEST_CASE("mla: exact from an MQA source at full rank, and with the linear norm at any rank >= rank([K_nope; V])") {
    MlaFixture f(1);
    // The cache holds the latent and k_pe as f16 where the original holds K and V as f16: both round at
    // ~5e-4 relative, which reaches the logits as a few 1e-4 on this model; 2e-3 leaves room for that.
    const double tol = 2e-3;
    const double full_linear = f.error("mla:64:8"), full_rms = f.error("mla:64:8", MlaNorm::RMS);
    MESSAGE("R = n_embd = 64: linear norm " << full_linear << ", rms norm " << full_rms);
    CHECK(full_linear < tol);
    CHECK(full_rms < tol);
    // rank([K_nope; V]) = 1 KV head * (8 + 16) = 24. The linear norm is exact there; the rms scheme
    // divides every token's latent by its own rms, which no longer equals rms(u) (V_R spans 24 of 64 dims).
    const double r24_linear = f.error("mla:24:8"), r24_rms = f.error("mla:24:8", MlaNorm::RMS);
    MESSAGE("R = 24: linear norm " << r24_linear << ", rms norm " << r24_rms);
    CHECK(r24_linear < tol);
    CHECK(r24_rms > 5 * tol);
}

// The error measure (the largest logit difference relative to the largest logit, averaged over tokens)
// saturates near 1 once the attention output is mostly lost: R = 8 and R = 4 both sit at 0.7-1.2 on
// these random models, and over 201 seeds their order was reversed 7 times (R = 8 against R = 16:
// never, the ratio at least 1.14). So R = 4 is checked against R = 16 only.
TEST_CASE("mla: truncating the latent below the K/V rank costs more the smaller it gets") {
    MlaFixture f(1);
    const double e16 = f.error("mla:16:8"), e8 = f.error("mla:8:8"), e4 = f.error("mla:4:8");
    MESSAGE("logit error at R = 16, 8, 4: " << e16 << ", " << e8 << ", " << e4);
    CHECK(e16 > 2e-3);
    CHECK(e8 > e16);
    CHECK(e4 > e16);
}

TEST_CASE("mla from a GQA source loads as deepseek2 with one latent KV row and runs") {
    MlaFixture f(2);
    const AttnConvertSummary s = convert(f.src, f.out, "mla:32:4");
    CHECK(s.arch_out == "deepseek2");
    CHECK(s.kv_values_out == 36);
    CHECK(s.kv_values_in == 2 * 32);
    CHECK(s.k_pe_rel_error > 0.1);  // two random KV heads' rope rows are far from their mean
    auto backend = make_cpu_backend(2);
    auto model = load_model(f.out, *backend);
    CHECK(model->hp.kv_lora_rank == 32);
    CHECK(model->hp.n_rot == 4);
    CHECK(model->hp.head_dim_k_mla == 16);
    Session sess(*model, SessionParams{64, 256});
    for (float x : sess.prefill(f.toks)) REQUIRE(std::isfinite(x));
}

TEST_CASE("attention conversion refuses specs the model cannot take, naming them, and leaves no file") {
    mf_test::TinyLlama tiny;  // n_head 4, n_head_kv 2, n_embd 64
    const std::string src = mf_test::temp_path("cattn_bad_src.gguf"), out = mf_test::temp_path("cattn_bad_out.gguf");
    tiny.write(src);
    CHECK_THROWS_WITH_AS(convert(src, out, "gqa:3"), doctest::Contains("must divide attention.head_count"), Error);
    CHECK_THROWS_WITH_AS(convert(src, out, "gqa:1"), doctest::Contains("asks for 4 KV heads"), Error);
    CHECK_THROWS_WITH_AS(convert(src, out, "mla:65"), doctest::Contains("at most embedding_length"), Error);
    CHECK_THROWS_WITH_AS(convert(src, out, "mla:8:16"), doctest::Contains("rope dims"), Error);
    tiny.arch = "qwen2";
    tiny.write(src);
    CHECK_THROWS_WITH_AS(convert(src, out, "mla:8"), doctest::Contains("biases"), Error);
    tiny.arch = "gemma3";
    tiny.write(src);
    CHECK_THROWS_WITH_AS(convert(src, out, "mqa"), doctest::Contains("not architecture 'gemma3'"), Error);
    CHECK(!file_exists(out));
    CHECK(!file_exists(out + ".tmp"));
    std::remove(src.c_str());
}
