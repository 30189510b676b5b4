// attn-lab (models/attn_lab.h, tools/plot.h): the variant files load with the intended attention,
// parameters and KV bytes match a hand count and the KV plan, and the PNG charts decode with their
// size, each series' colour in the plot and text in the legend.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>

#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#include "core/common.h"
#include "core/cpu/cpu_backend.h"
#include "core/gguf.h"
#include "model_fixture.h"
#include "models/attn_lab.h"
#include "models/session.h"
#include "tools/plot.h"

using namespace mf;

namespace {

// A small base: 2 layers, n_embd 256, 4 heads of 64 (MLA rope dims 32, nope 32), n_ff 512, vocab
// 300, tied embeddings.
SynthOptions small_base() {
    SynthDims d;
    d.arch = "llama";
    d.n_embd = 256, d.n_layer = 2, d.n_head = 4, d.n_head_kv = 4, d.n_ff = 512, d.n_vocab = 300, d.n_ctx_train = 1024;
    d.tied = true;
    SynthOptions o;
    o.dims = d;
    o.shape = "attn-lab-test";
    o.type = "q8_0";
    o.seed = mf_test::seed();
    o.n_threads = 2;
    return o;
}

// By hand: per layer attention tensors (E = 256, 4 heads of 64), plus what every variant shares.
constexpr uint64_t E = 256, FF = 512, V = 300, L = 2;
constexpr uint64_t SHARED = E * V + E + L * (E + E + 3 * E * FF);  // embedding, output norm, norms, FFN
constexpr uint64_t MHA_ATTN = 4 * E * E;
constexpr uint64_t GQA2_ATTN = 2 * E * E + 2 * E * 128;
constexpr uint64_t MQA_ATTN = 2 * E * E + 2 * E * 64;
// MLA-64: attn_q E x E, kv_a_mqa E x (64 + 32), kv_a_norm 64, k_b 32 x 64 x 4, v_b 64 x 64 x 4, output E x E.
constexpr uint64_t MLA64_ATTN = E * E + E * 96 + 64 + 32 * 64 * 4 + 64 * 64 * 4 + E * E;

struct Expected {
    const char* name;
    AttnKind kind;
    uint32_t n_head_kv, kv_lora_rank;
    uint64_t attn_per_layer;
    size_t kv_f16_per_layer;  // bytes per token: K + V rows of n_head_kv * 64 halves, or MLA's 96-value row
};

const Expected kExpected[] = {
    {"MHA", AttnKind::MHA, 4, 0, MHA_ATTN, 2 * 256 * 2},
    {"GQA-2", AttnKind::GQA, 2, 0, GQA2_ATTN, 2 * 128 * 2},
    {"MQA", AttnKind::MQA, 1, 0, MQA_ATTN, 2 * 64 * 2},
    {"MLA-64", AttnKind::MLA, 1, 64, MLA64_ATTN, 96 * 2},
};

int count_color(const uint8_t* px, int w, const PixelRect& r, Rgb c) {
    int n = 0;
    for (int y = r.y0; y < r.y1; ++y)
        for (int x = r.x0; x < r.x1; ++x) {
            const uint8_t* p = px + (size_t(y) * size_t(w) + size_t(x)) * 3;
            n += p[0] == c.r && p[1] == c.g && p[2] == c.b;
        }
    return n;
}

// Decodes path and checks size, each series' colour inside the plot and in the legend, and legend text.
void check_png(const std::string& path, const ChartLayout& layout, size_t n_series) {
    int w = 0, h = 0, comp = 0;
    uint8_t* px = stbi_load(path.c_str(), &w, &h, &comp, 3);
    REQUIRE_MESSAGE(px, "stb_image could not decode ", path);
    CHECK(w == 1200);
    CHECK(h == 800);
    CHECK(layout.width == w);
    CHECK(layout.height == h);
    for (size_t i = 0; i < n_series; ++i) {
        CAPTURE(i);
        CHECK(count_color(px, w, layout.plot, series_color(i)) > 50);    // bars or lines and markers
        CHECK(count_color(px, w, layout.legend, series_color(i)) > 100);  // the 22x16 swatch
    }
    // Legend names: text pixels inside the box beyond its frame (the frame alone is ~2 * (w + h)).
    const PixelRect& lg = layout.legend;
    const PixelRect inner{lg.x0 + 2, lg.y0 + 2, lg.x1 - 2, lg.y1 - 2};
    CHECK(count_color(px, w, inner, text_color()) > 40 * int(n_series));
    // The unused colour of a palette slot past the series does not appear in the plot.
    if (n_series < 7) CHECK(count_color(px, w, layout.plot, series_color(6)) == 0);
    stbi_image_free(px);
}

}  // namespace

TEST_CASE("variants: GQA groups that do not divide the heads, or repeat MHA/MQA, are skipped with a reason") {
    std::vector<std::string> skipped;
    const auto vs = attn_variants(9, {2, 3, 9, 1, 3}, {256, 512}, &skipped);
    std::vector<std::string> names;
    for (const auto& v : vs) names.push_back(v.name);
    CHECK(names == std::vector<std::string>{"MHA", "GQA-3", "MQA", "MLA-256", "MLA-512"});
    CHECK(vs[1].n_head_kv == 3);
    REQUIRE(skipped.size() == 4);
    CHECK(skipped[0] == "GQA-2: 9 query heads do not split into groups of 2");
    CHECK(skipped[1] == "GQA-9: n_head_kv = 1 is MQA");
    CHECK(skipped[2] == "GQA-1: n_head_kv = 9 is MHA");
    CHECK(skipped[3] == "GQA-3: listed twice");
    CHECK_THROWS_WITH(attn_variants(4, {}, {0}, nullptr), "attention variants: an MLA latent rank must be positive");
}

TEST_CASE("variant files load with their attention kind, and parameters and KV bytes match a hand count") {
    const SynthOptions base = small_base();
    const auto variants = attn_variants(4, {2}, {64}, nullptr);
    REQUIRE(variants.size() == 4);
    auto backend = make_cpu_backend(2);
    for (size_t i = 0; i < variants.size(); ++i) {
        const Expected& e = kExpected[i];
        CAPTURE(e.name);
        REQUIRE(variants[i].name == e.name);
        const std::string path = mf_test::temp_path(std::string("attn_lab_") + e.name + ".gguf");
        write_attn_variant(base, variants[i], path);
        {
            const GGUFFile f = GGUFFile::open(path);
            CHECK(f.get_str("general.architecture") == (e.kind == AttnKind::MLA ? "deepseek2" : "llama"));
            const ParamCounts c = count_params(f);
            CHECK(c.attn == L * e.attn_per_layer);
            CHECK(c.total == SHARED + L * e.attn_per_layer);
        }
        auto model = load_model(path, *backend);
        const HParams& hp = model->hp;
        CHECK(hp.n_head_kv[0] == e.n_head_kv);
        CHECK(hp.kv_lora_rank == e.kv_lora_rank);
        CHECK(hp.attn_kind(0) == e.kind);
        CHECK(hp.attn_kind(1) == e.kind);

        const KVBytesPerToken f16 = kv_bytes_per_token(hp, "f16");
        CHECK(f16.layer == e.kv_f16_per_layer);
        CHECK(f16.model == L * e.kv_f16_per_layer);
        // q8_0: 34 bytes per 32 values; q4_0: 18. An MLA latent quantizes c_kv alone, its rope part
        // stays f16.
        const size_t quantized = e.kind == AttnKind::MLA ? e.kv_lora_rank : e.kv_f16_per_layer / 2;
        const size_t kept = e.kv_f16_per_layer - 2 * quantized;
        CHECK(kv_bytes_per_token(hp, "q8_0").layer == quantized / 32 * 34 + kept);
        CHECK(kv_bytes_per_token(hp, "q4_0").layer == quantized / 32 * 18 + kept);
        // The plan a session allocates holds exactly n_ctx positions of these bytes.
        SessionParams sp;
        sp.n_ctx = 96;
        CHECK(session_kv_plan(hp, sp).total_bytes == 96 * f16.model);

        // It runs: a short prompt gives finite logits that are not all equal.
        Session s(*model, sp);
        const std::vector<float>& logits = s.prefill({1, 100, 200, 250});
        bool finite = true;
        for (float x : logits) finite = finite && std::isfinite(x);
        CHECK(finite);
        CHECK(*std::max_element(logits.begin(), logits.end()) > *std::min_element(logits.begin(), logits.end()));
        std::remove(path.c_str());
    }
}

TEST_CASE("an MLA variant whose rope dims do not fill a q4_0 block keeps them in f16 beside a q4_0 c_kv") {
    SynthOptions base = small_base();
    base.dims->n_head = 8;  // heads of 32: rope dims 16, nope 16 (attn_k_b rows of 16 fall back to f16)
    std::vector<std::string> notices;
    base.on_notice = [&](const std::string& n) { notices.push_back(n); };
    const std::string path = mf_test::temp_path("attn_lab_mla_small.gguf");
    write_attn_variant(base, {"MLA-64", AttnKind::MLA, 0, 64}, path);
    REQUIRE(notices.size() == 1);
    CHECK(notices[0] == "q8_0 needs rows that are a multiple of 32 elements: 2 tensors with rows of 16 written as f16");
    const GGUFFile f = GGUFFile::open(path);
    CHECK(f.find_tensor("blk.0.attn_k_b.weight")->type == DType::F16);
    const HParams hp = load_hparams(f);
    CHECK(kv_bytes_per_token(hp, "f16").layer == (64 + 16) * 2);
    CHECK(kv_bytes_per_token(hp, "q4_0").layer == 2 * 18 + 16 * 2);
    std::remove(path.c_str());
}

TEST_CASE("a GQA group count that does not divide the heads is an error from synth") {
    SynthOptions base = small_base();
    base.path = mf_test::temp_path("attn_lab_bad.gguf");
    base.n_head_kv = 3;
    CHECK_THROWS_WITH(write_synth_model(base), "KV head count 3 does not divide the 4 query heads");
}

TEST_CASE("bar and line charts decode as 1200x800 PNGs with every series plotted and a legend") {
    const std::string bar_path = mf_test::temp_path("attn_lab_bar.png");
    BarChart bar;
    bar.title = "KV bytes per token";
    bar.x_label = "variant";
    bar.y_label = "KiB";
    bar.categories = {"MHA", "GQA-4", "MQA", "MLA-256"};
    bar.series = {"f16", "q8_0", "q4_0"};
    bar.values = {{64, 16, 2, 9}, {34, 8.5, 1.1, 4.8}, {18, 4.5, 0.6, 2.5}};
    check_png(bar_path, bar_chart(bar_path, bar), 3);

    const std::string line_path = mf_test::temp_path("attn_lab_line.png");
    LineChart line;
    line.title = "Decode speed vs context";
    line.x_label = "context";
    line.y_label = "tokens/s";
    line.log2_x = true;
    line.series = {{"MHA", {128, 512, 2048, 8192}, {100, 90, 70, NAN}},
                   {"GQA-4", {128, 512, 2048, 8192}, {120, 115, 105, 80}},
                   {"MLA-512", {128, 512, 2048, 8192}, {90, 88, 85, 81}}};
    check_png(line_path, line_chart(line_path, line), 3);

    line.series[1].y.pop_back();
    CHECK_THROWS_WITH(line_chart(line_path, line),
                      "line chart 'Decode speed vs context': series 'GQA-4' has no points or unequal x and y");
    bar.values[0][1] = -1;
    CHECK_THROWS_WITH(bar_chart(bar_path, bar), "bar chart 'KV bytes per token': negative value");
    std::remove(bar_path.c_str());
    std::remove(line_path.c_str());
}
