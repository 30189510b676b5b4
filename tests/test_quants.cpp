// The dtype table and the block quantization kernels: sizes against llama.cpp, bit layouts from hand-built
// blocks, quantization error, dot products against double references, AVX2 against scalar, f16/bf16 rounding.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/dtype.h"
#include "core/quants.h"
#include "test_util.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

using namespace mf;

namespace {

const DType k_computable[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                              DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

// Types that can be quantized into and read back (weights plus the activation-only formats).
const DType k_round_trip[] = {DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                              DType::Q8_0, DType::Q8_1, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K};

std::vector<uint8_t> quantize(DType t, const std::vector<float>& x) {
    std::vector<uint8_t> q(dtype_row_size(t, int64_t(x.size())));
    dtype_traits(t).from_float(x.data(), q.data(), int64_t(x.size()));
    return q;
}

std::vector<float> dequantize(DType t, const void* q, int64_t n) {
    std::vector<float> y(size_t(n), std::nanf(""));
    dtype_traits(t).to_float(q, y.data(), n);
    return y;
}

template <typename Block>
std::vector<float> decode(DType t, const Block& b) {
    return dequantize(t, &b, dtype_traits(t).block_size);
}

// A weight row and its activation row, quantized the way the matmul does it.
struct DotCase {
    std::vector<uint8_t> w;    // weight row in type t
    std::vector<uint8_t> act;  // activation row in t's vec_dot_type
    std::vector<float> act_f32;
    std::vector<float> w_deq, act_deq;
};

DotCase make_dot_case(DType t, int64_t n) {
    DotCase c;
    const DType vt = dtype_traits(t).vec_dot_type;
    c.w = quantize(t, mf_test::random_floats(size_t(n)));
    c.act_f32 = mf_test::random_floats(size_t(n));
    c.act = quantize(vt, c.act_f32);
    c.w_deq = dequantize(t, c.w.data(), n);
    c.act_deq = dequantize(vt, c.act.data(), n);
    return c;
}

double sum_abs_products(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += std::fabs(double(a[i]) * double(b[i]));
    return s;
}

double dot_double(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
    return s;
}

uint16_t h(float f) { return fp32_to_fp16(f); }

std::string name(DType t) { return dtype_name(t); }

}  // namespace

TEST_CASE("the dtype table matches llama.cpp's type sizes and names") {
    struct Row {
        DType t;
        const char* name;
        int64_t block_size;
        size_t type_size;
    };
    // From ggml's type_traits (ggml.c) and block structs (ggml-common.h).
    const Row rows[] = {
        {DType::F32, "f32", 1, 4},          {DType::F16, "f16", 1, 2},          {DType::Q4_0, "q4_0", 32, 18},
        {DType::Q4_1, "q4_1", 32, 20},      {DType::Q5_0, "q5_0", 32, 22},      {DType::Q5_1, "q5_1", 32, 24},
        {DType::Q8_0, "q8_0", 32, 34},      {DType::Q8_1, "q8_1", 32, 36},      {DType::Q2_K, "q2_k", 256, 84},
        {DType::Q3_K, "q3_k", 256, 110},    {DType::Q4_K, "q4_k", 256, 144},    {DType::Q5_K, "q5_k", 256, 176},
        {DType::Q6_K, "q6_k", 256, 210},    {DType::Q8_K, "q8_k", 256, 292},    {DType::IQ2_XXS, "iq2_xxs", 256, 66},
        {DType::IQ2_XS, "iq2_xs", 256, 74}, {DType::IQ3_XXS, "iq3_xxs", 256, 98}, {DType::IQ1_S, "iq1_s", 256, 50},
        {DType::IQ4_NL, "iq4_nl", 32, 18},  {DType::IQ3_S, "iq3_s", 256, 110},  {DType::IQ2_S, "iq2_s", 256, 82},
        {DType::IQ4_XS, "iq4_xs", 256, 136}, {DType::I8, "i8", 1, 1},           {DType::I16, "i16", 1, 2},
        {DType::I32, "i32", 1, 4},          {DType::I64, "i64", 1, 8},          {DType::F64, "f64", 1, 8},
        {DType::IQ1_M, "iq1_m", 256, 56},   {DType::BF16, "bf16", 1, 2},        {DType::TQ1_0, "tq1_0", 256, 54},
        {DType::TQ2_0, "tq2_0", 256, 66},   {DType::MXFP4, "mxfp4", 32, 17},    {DType::NVFP4, "nvfp4", 64, 36},
        {DType::Q1_0, "q1_0", 128, 18},
    };
    int n_known = 0;
    for (uint32_t id = 0; id < 256; ++id) n_known += dtype_is_known(id);
    CHECK(n_known == int(sizeof rows / sizeof rows[0]));

    for (const Row& r : rows) {
        CAPTURE(r.name);
        REQUIRE(dtype_is_known(uint32_t(r.t)));
        const DTypeTraits& tr = dtype_traits(r.t);
        CHECK(std::string(tr.name) == r.name);
        CHECK(tr.block_size == r.block_size);
        CHECK(tr.type_size == r.type_size);
        CHECK(tr.is_quantized == (r.block_size > 1));
        DType back;
        REQUIRE(dtype_from_name(r.name, &back));
        CHECK(back == r.t);
        CHECK(dtype_row_size(r.t, 4 * r.block_size) == 4 * r.type_size);
    }

    // Ids ggml retired or never used (Q4_2, Q4_3, the repacked Q4_0_x_x / IQ4_NL_x_x) and past the end.
    for (uint32_t id : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u, 0xFFFFFFFFu}) CHECK_FALSE(dtype_is_known(id));

    DType t;
    CHECK(dtype_from_name("Q4_K", &t));  // llama.cpp prints "q4_K"; any case is accepted
    CHECK(t == DType::Q4_K);
    CHECK_FALSE(dtype_from_name("q4_k_m", &t));
    CHECK_FALSE(dtype_from_name("q4", &t));
    CHECK_FALSE(dtype_from_name("", &t));
    CHECK(dtype_row_size(DType::Q4_K, 4096) == 16 * 144);
    CHECK(dtype_row_size(DType::Q6_K, 4096) == 16 * 210);

    // The computable set and its activation formats.
    const std::pair<DType, DType> vec_dot_types[] = {
        {DType::F32, DType::F32},   {DType::F16, DType::F32},   {DType::BF16, DType::F32},  {DType::Q4_0, DType::Q8_0},
        {DType::Q5_0, DType::Q8_0}, {DType::Q8_0, DType::Q8_0}, {DType::Q4_1, DType::Q8_1}, {DType::Q5_1, DType::Q8_1},
        {DType::Q4_K, DType::Q8_K}, {DType::Q5_K, DType::Q8_K}, {DType::Q6_K, DType::Q8_K},
    };
    int n_computable = 0;
    for (uint32_t id = 0; id < 64; ++id) n_computable += dtype_is_known(id) && dtype_traits(DType(id)).computable;
    CHECK(n_computable == 11);
    for (const auto& wa : vec_dot_types) {
        const DType w = wa.first, a = wa.second;
        CAPTURE(name(w));
        const DTypeTraits& tr = dtype_traits(w);
        CHECK(tr.computable);
        CHECK(tr.vec_dot_type == a);
        CHECK((tr.to_float != nullptr));
        CHECK((tr.from_float != nullptr));
        CHECK((tr.vec_dot != nullptr));
        CHECK((vec_dot_ref(w) != nullptr));
        CHECK((dtype_traits(a).from_float != nullptr));
        CHECK((dtype_traits(a).to_float != nullptr));
    }
    for (DType a : {DType::Q8_1, DType::Q8_K}) {
        CHECK_FALSE(dtype_traits(a).computable);
        CHECK((dtype_traits(a).vec_dot == nullptr));
    }
    for (DType u : {DType::IQ4_XS, DType::IQ2_XXS, DType::TQ2_0, DType::I32, DType::MXFP4}) {
        CAPTURE(name(u));
        CHECK_FALSE(dtype_traits(u).computable);
        CHECK((dtype_traits(u).vec_dot == nullptr));
        CHECK((dtype_traits(u).from_float == nullptr));
        CHECK((vec_dot_ref(u) == nullptr));
    }
}

// The split row layout (rows_split): each row's blocks' quants in order, then their scales in order;
// rows_join restores the stored bytes. Random bytes (any bit pattern is a block), rows of 3 and 4 blocks.
TEST_CASE("rows_split puts a row's quants first and its scales after, and rows_join undoes it") {
    CHECK(rows_split_fits(DType::Q4_0));
    CHECK(rows_split_fits(DType::Q8_0));
    for (DType t : {DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q6_K, DType::F16})
        CHECK_FALSE(rows_split_fits(t));
    for (DType t : {DType::Q4_0, DType::Q8_0}) {
        for (int64_t n_blk : {3, 4}) {
            const size_t block = dtype_traits(t).type_size, body = block - 2, n_rows = 5;
            const size_t row = size_t(n_blk) * block;
            std::vector<uint8_t> stored(n_rows * row), split(stored.size()), back(stored.size());
            for (auto& b : stored) b = uint8_t(mf_test::rng()());
            rows_split(t, n_blk * 32, n_rows, stored.data(), split.data());
            for (size_t r = 0; r < n_rows; ++r) {
                for (size_t b = 0; b < size_t(n_blk); ++b) {
                    INFO(dtype_name(t) << " row " << r << " block " << b);
                    const uint8_t* blk = stored.data() + r * row + b * block;
                    CHECK(std::memcmp(split.data() + r * row + b * body, blk + 2, body) == 0);
                    CHECK(std::memcmp(split.data() + r * row + n_blk * body + 2 * b, blk, 2) == 0);
                }
            }
            rows_join(t, n_blk * 32, n_rows, split.data(), back.data());
            CHECK(back == stored);
        }
    }
}

TEST_CASE("hand-built legacy blocks decode to hand-computed values") {
    SUBCASE("q4_0: low nibbles are elements 0-15, high nibbles 16-31, x = d (q - 8)") {
        block_q4_0 b{};
        b.d = h(0.5f);
        for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
        const auto y = decode(DType::Q4_0, b);
        CHECK(y[0] == -4.0f);
        CHECK(y[15] == 3.5f);
        CHECK(y[16] == 3.5f);
        CHECK(y[31] == -4.0f);
        for (int j = 0; j < 16; ++j) {
            CHECK(y[j] == 0.5f * float(j - 8));
            CHECK(y[16 + j] == 0.5f * float(7 - j));
        }
    }
    SUBCASE("q4_1: x = d q + m") {
        block_q4_1 b{};
        b.d = h(0.5f);
        b.m = h(-1.0f);
        for (int j = 0; j < 16; ++j) b.qs[j] = uint8_t(j | ((15 - j) << 4));
        const auto y = decode(DType::Q4_1, b);
        CHECK(y[0] == -1.0f);
        CHECK(y[15] == 6.5f);
        CHECK(y[16] == 6.5f);
        CHECK(y[31] == -1.0f);
    }
    SUBCASE("q5_0: bit j of the little-endian qh is the fifth bit of element j") {
        block_q5_0 b{};
        b.d = h(1.0f);
        const uint8_t qh[4] = {0x01, 0x00, 0x00, 0x80};  // bits 0 and 31
        std::memcpy(b.qh, qh, 4);
        std::memset(b.qs, 0x21, 16);  // low nibble 1, high nibble 2
        const auto y = decode(DType::Q5_0, b);
        CHECK(y[0] == 1.0f);  // 17 - 16
        for (int j = 1; j < 16; ++j) CHECK(y[j] == -15.0f);
        for (int j = 16; j < 31; ++j) CHECK(y[j] == -14.0f);
        CHECK(y[31] == 2.0f);  // 18 - 16
    }
    SUBCASE("q5_1: x = d q + m with the same high bits") {
        block_q5_1 b{};
        b.d = h(1.0f);
        b.m = h(0.5f);
        const uint8_t qh[4] = {0x01, 0x00, 0x00, 0x80};
        std::memcpy(b.qh, qh, 4);
        std::memset(b.qs, 0x21, 16);
        const auto y = decode(DType::Q5_1, b);
        CHECK(y[0] == 17.5f);
        CHECK(y[1] == 1.5f);
        CHECK(y[16] == 2.5f);
        CHECK(y[31] == 18.5f);
    }
    SUBCASE("q8_0 and q8_1: x = d q") {
        block_q8_0 b{};
        b.d = h(0.25f);
        for (int j = 0; j < 32; ++j) b.qs[j] = int8_t(j - 16);
        b.qs[0] = -128;
        auto y = decode(DType::Q8_0, b);
        CHECK(y[0] == -32.0f);
        CHECK(y[1] == -3.75f);
        CHECK(y[31] == 3.75f);
        block_q8_1 c{};
        c.d = h(0.25f);
        c.s = h(1000.0f);  // the sum is for dots only; decoding ignores it
        for (int j = 0; j < 32; ++j) c.qs[j] = int8_t(j - 16);
        y = decode(DType::Q8_1, c);
        CHECK(y[1] == -3.75f);
        CHECK(y[31] == 3.75f);
    }
    SUBCASE("f16 and bf16 rows") {
        const uint16_t f16[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00};
        std::vector<float> y(5);
        dtype_traits(DType::F16).to_float(f16, y.data(), 5);
        CHECK(y[0] == 1.0f);
        CHECK(y[1] == -2.0f);
        CHECK(y[2] == 65504.0f);
        CHECK(y[3] == std::ldexp(1.0f, -24));
        CHECK(std::isinf(y[4]));
        const uint16_t bf16[] = {0x3F80, 0xC040};
        dtype_traits(DType::BF16).to_float(bf16, y.data(), 2);
        CHECK(y[0] == 1.0f);
        CHECK(y[1] == -3.0f);
    }
}

TEST_CASE("hand-built K-quant blocks decode to hand-computed values") {
    // Sub-block 0: scale 3, min 1 (plain 6-bit bytes 0 and 4). Sub-block 5: scale 33 = 0b100001 and
    // min 18 = 0b010010, split into nibbles of byte 9 and top bits of bytes 1 (scale) and 5 (min).
    const uint8_t k4_scales[12] = {3, 0x80, 0, 0, 1, 0x40, 0, 0, 0, 0x21, 0, 0};

    SUBCASE("q4_k: 6-bit scale packing and nibble order") {
        block_q4_K b{};
        b.d = h(1.0f);
        b.dmin = h(0.5f);
        std::memcpy(b.scales, k4_scales, 12);
        std::memset(b.qs, 0x52, sizeof b.qs);  // low nibble 2, high nibble 5
        b.qs[3] = 0x5F;                        // element 3 (sub-block 0) -> 15
        b.qs[64 + 3] = 0xF2;                   // element 163 (sub-block 5, high nibbles of chunk 2) -> 15
        const auto y = decode(DType::Q4_K, b);
        for (int e = 0; e < 256; ++e) {
            CAPTURE(e);
            float expect = 0.0f;  // sub-blocks other than 0 and 5 have scale 0 and min 0
            if (e / 32 == 0) expect = e == 3 ? 3 * 15 - 0.5f : 3 * 2 - 0.5f;
            if (e / 32 == 5) expect = e == 163 ? 33 * 15 - 9.0f : 33 * 5 - 9.0f;
            CHECK(y[size_t(e)] == expect);
        }
    }
    SUBCASE("q5_k: bit 2c / 2c + 1 of qh[l] is the fifth bit of element 64c + l / 64c + 32 + l") {
        block_q5_K b{};
        b.d = h(1.0f);
        b.dmin = h(0.5f);
        std::memcpy(b.scales, k4_scales, 12);
        std::memset(b.qs, 0x52, sizeof b.qs);
        b.qh[7] = 1 << 0;  // element 7 (sub-block 0)
        b.qh[3] = 1 << 5;  // element 64 * 2 + 32 + 3 = 163 (sub-block 5)
        const auto y = decode(DType::Q5_K, b);
        CHECK(y[0] == 5.5f);
        CHECK(y[7] == 3 * 18 - 0.5f);
        CHECK(y[160] == 156.0f);
        CHECK(y[163] == 33 * 21 - 9.0f);
        CHECK(y[3] == 5.5f);
        CHECK(y[32] == 0.0f);
    }
    SUBCASE("q6_k: ql nibbles, qh bit pairs and int8 scales per 16 elements") {
        block_q6_K b{};
        b.d = h(0.5f);
        for (int k = 0; k < 16; ++k) b.scales[k] = int8_t(k % 2 ? -(k + 1) : k + 1);
        b.ql[5] = 0x3A;            // element 5 low nibble 10, element 69 low nibble 3
        b.qh[5] = 0xE4;            // bit pairs 00, 01, 10, 11 for elements 5, 37, 69, 101
        b.ql[64 + 32 + 1] = 0xF0;  // second half: element 161 gets 0, element 225 gets 15
        const auto y = decode(DType::Q6_K, b);
        CHECK(y[5] == 0.5f * 1 * -22);
        CHECK(y[37] == 0.5f * 3 * -16);
        CHECK(y[69] == 0.5f * 5 * 3);
        CHECK(y[101] == 0.5f * 7 * 16);
        CHECK(y[161] == 0.5f * 11 * -32);
        CHECK(y[225] == 0.5f * 15 * -17);
        CHECK(y[16] == 0.5f * -2 * -32);  // untouched elements are q = 0 - 32
        CHECK(y[255] == 0.5f * -16 * -32);
    }
    SUBCASE("q8_k: float d times int8") {
        block_q8_K b{};
        b.d = 0.125f;
        for (int j = 0; j < 256; ++j) b.qs[j] = int8_t(j - 128);
        const auto y = decode(DType::Q8_K, b);
        CHECK(y[0] == -16.0f);
        CHECK(y[255] == 15.875f);
    }
    SUBCASE("q2_k: 2-bit levels, scale and min nibbles per 16 elements") {
        uint8_t b[84] = {};  // scales[16], qs[64], d, dmin
        b[0] = 0x23;         // elements 0-15: scale 3, min 2
        b[1] = 0x10;         // elements 16-31: scale 0, min 1
        b[2] = 0x07;         // elements 32-47: scale 7
        b[8] = 0x05;         // elements 128-143: scale 5
        b[16 + 0] = 0xE4;    // qs[0]: bits 0-1 -> element 0 (0), bits 2-3 -> element 32 (1)
        b[16 + 16] = 0x03;   // qs[16] -> element 16 (3)
        b[16 + 32] = 0x02;   // qs[32] -> element 128 (2)
        const uint16_t d = h(1.0f), dmin = h(0.5f);
        std::memcpy(b + 80, &d, 2);
        std::memcpy(b + 82, &dmin, 2);
        const auto y = dequantize(DType::Q2_K, b, 256);
        CHECK(y[0] == -1.0f);
        CHECK(y[1] == -1.0f);
        CHECK(y[16] == -0.5f);
        CHECK(y[32] == 7.0f);
        CHECK(y[33] == 0.0f);
        CHECK(y[128] == 10.0f);
        CHECK(y[129] == 0.0f);
    }
    SUBCASE("q3_k: hmask high bits and 6-bit signed scales") {
        uint8_t b[110] = {};  // hmask[32], qs[64], scales[12], d
        std::memset(b, 0xFF, 32);
        b[0] = 0xFE;             // element 0: high bit clear -> level - 4
        b[17] = 0xEF;            // element 145 (second 128, shift 0, l = 17): mask bit 4 clear
        b[32 + 0] = 0x03;        // qs[0] -> element 0: 3
        b[32 + 48] = 0x02;       // qs[48] -> element 144: 2
        b[32 + 49] = 0x01;       // qs[49] -> element 145: 1
        b[96 + 0] = 0x01;        // scale 0 = 33: low nibble 1 ...
        b[96 + 8] = 0x02;        // ... top bits 2 in byte 8 bits 0-1
        b[96 + 1] = 0xE0;        // scale 9 = 30: low nibble 14 in the high nibble of byte 1 ...
        b[96 + 9] = 0x10;        // ... top bits 1 in byte 9 bits 2-3
        const uint16_t d = h(1.0f);
        std::memcpy(b + 108, &d, 2);
        const auto y = dequantize(DType::Q3_K, b, 256);
        CHECK(y[0] == -1.0f);   // scale 1, level 3 - 4
        CHECK(y[144] == -4.0f);  // scale -2, level 2
        CHECK(y[145] == 6.0f);   // scale -2, level 1 - 4
        CHECK(y[1] == 0.0f);
        CHECK(y[146] == 0.0f);
    }
}

namespace {

// Inputs for the golden hashes: an LCG, so they do not depend on the standard library's distributions.
struct Lcg {
    uint32_t s;
    uint32_t next() { return s = s * 1664525u + 1013904223u; }
    float uniform() { return float(next() >> 8) * (2.0f / 16777216.0f) - 1.0f; }  // [-1, 1), exact
};

uint64_t fnv1a(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    uint64_t hash = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i) hash = (hash ^ b[i]) * 1099511628211ull;
    return hash;
}

}  // namespace

TEST_CASE("quantization and dequantization are byte-identical to llama.cpp's reference") {
    // The hashes come from llama.cpp's own ggml-quants.c (as vendored in llama-cpp-python 0.3.36, compiled
    // -std=c11 -O2) run on exactly these inputs: quantize_row_*_ref on 4096 LCG floats with every 97th
    // scaled by 8, and dequantize_row_* on LCG bytes whose fp16 scale fields hold LCG floats in [-2, 2).
    const int64_t n = 4096;
    std::vector<float> x(static_cast<size_t>(n));
    Lcg g{12345};
    for (int64_t i = 0; i < n; ++i) x[size_t(i)] = g.uniform() * (i % 97 == 0 ? 8.0f : 1.0f);
    const std::pair<DType, uint64_t> quant_hashes[] = {
        {DType::Q4_0, 0xe0b10ef4391f631aull}, {DType::Q4_1, 0x4d17bcc93efb8fbbull}, {DType::Q5_0, 0xffd2081190ac9d66ull},
        {DType::Q5_1, 0x731d189ab2c36406ull}, {DType::Q8_0, 0x2a4b706a0a06620full}, {DType::Q8_1, 0x125d94d8b64e1900ull},
        {DType::Q4_K, 0xa6b6cc1a66047fddull}, {DType::Q5_K, 0x3083bcddd8c37fc2ull}, {DType::Q6_K, 0x094016667eec509dull},
        {DType::Q8_K, 0x9c3a76780817a7ccull},
    };
    for (const auto& th : quant_hashes) {
        CAPTURE(name(th.first));
        const auto q = quantize(th.first, x);
        CHECK(fnv1a(q.data(), q.size()) == th.second);
    }

    struct DequantCase {
        DType t;
        std::vector<size_t> half_offsets;  // the fp16 fields of a block, given sane values
        uint64_t hash;
    };
    const DequantCase dequant_cases[] = {
        {DType::Q4_0, {0}, 0x43084fdec93c6622ull},      {DType::Q4_1, {0, 2}, 0x64c3e2242c5715cfull},
        {DType::Q5_0, {0}, 0x0767d0e15a5b7352ull},      {DType::Q5_1, {0, 2}, 0x15a205cb4591f990ull},
        {DType::Q8_0, {0}, 0x7928b724a7738587ull},      {DType::Q2_K, {80, 82}, 0xd74106988558a521ull},
        {DType::Q3_K, {108}, 0xac85ad83a9e0ac96ull},    {DType::Q4_K, {0, 2}, 0x5e2668eb2723a71cull},
        {DType::Q5_K, {0, 2}, 0x694123a901d4a416ull},   {DType::Q6_K, {208}, 0x0fa9fd7fcb9941e0ull},
    };
    for (const DequantCase& c : dequant_cases) {
        CAPTURE(name(c.t));
        Lcg r{777};
        const size_t ts = dtype_traits(c.t).type_size;
        std::vector<uint8_t> b(dtype_row_size(c.t, n));
        for (auto& byte : b) byte = uint8_t(r.next() >> 24);
        for (size_t k = 0; k < b.size() / ts; ++k) {
            for (size_t off : c.half_offsets) {
                const uint16_t half = fp32_to_fp16(r.uniform() * 2);
                std::memcpy(&b[k * ts + off], &half, 2);
            }
        }
        const auto y = dequantize(c.t, b.data(), n);
        CHECK(fnv1a(y.data(), y.size() * sizeof(float)) == c.hash);
    }
}

TEST_CASE("quantize then dequantize stays within each type's error bound") {
    const int64_t n = 4096;
    const auto x = mf_test::random_floats(size_t(n));
    std::vector<double> xd(x.begin(), x.end());
    // Relative RMS error ||deq - x|| / ||x|| on uniform [-1, 1) data, whose RMS is max/sqrt(3). Rounding to a
    // grid of step s costs s/sqrt(12) RMS, so expect: Q8 (s = max/127) 0.0039; Q5_0 (s = max/16) 0.031;
    // Q5_1 (s = range/31) 0.032; Q4_0 (s = max/8) 0.062; Q4_1 (s = range/15) 0.067; the K-quants fit a scale
    // (and min) per 16 or 32 elements, so do a little better than their legacy cousins (measured: Q6_K 0.013,
    // Q5_K 0.028, Q4_K 0.055); f16 keeps 11 significant bits (0.00018) and bf16 8 (0.0015). Each bound is
    // about 1.25x the measured value (which varies by under 5% between seeds at n = 4096); each floor is
    // about half of it, so a quantizer that silently kept more precision than its format fails too.
    struct Bound {
        DType t;
        double max, min;
    };
    const Bound bounds[] = {
        {DType::F16, 2.5e-4, 9e-5},  {DType::BF16, 2e-3, 7e-4},   {DType::Q8_0, 5e-3, 2e-3},  {DType::Q8_1, 5e-3, 2e-3},
        {DType::Q8_K, 5e-3, 2e-3},   {DType::Q6_K, 0.017, 6e-3},  {DType::Q5_0, 0.04, 0.015}, {DType::Q5_1, 0.038, 0.015},
        {DType::Q5_K, 0.035, 0.013}, {DType::Q4_0, 0.08, 0.03},   {DType::Q4_1, 0.077, 0.03}, {DType::Q4_K, 0.07, 0.027},
    };
    for (const Bound& b : bounds) {
        CAPTURE(name(b.t));
        const auto y = dequantize(b.t, quantize(b.t, x).data(), n);
        const double err = mf_test::rel_error(y.data(), xd.data(), size_t(n));
        CHECK(err < b.max);
        CHECK(err > b.min);
    }

    // An all-zero row must come back as exact zeros (no 0/0 scales).
    const std::vector<float> zeros(size_t(n), 0.0f);
    for (DType t : k_round_trip) {
        CAPTURE(name(t));
        for (float v : dequantize(t, quantize(t, zeros).data(), n)) REQUIRE(v == 0.0f);
    }
    // F32 round-trips exactly.
    CHECK(dequantize(DType::F32, quantize(DType::F32, x).data(), n) == x);
}

TEST_CASE("quantizing an already-quantized row reproduces it") {
    // Dequantized values lie on the type's grid, so a second quantization must land on the same levels;
    // a mismatch between the quantizer's and the dequantizer's layout would break this.
    const int64_t n = 1024;
    for (DType t : {DType::Q4_0, DType::Q5_0, DType::Q8_0, DType::Q8_K}) {
        CAPTURE(name(t));
        const auto y1 = dequantize(t, quantize(t, mf_test::random_floats(size_t(n))).data(), n);
        const auto y2 = dequantize(t, quantize(t, y1).data(), n);
        double err = 0;
        for (int64_t i = 0; i < n; ++i) err = std::max(err, std::fabs(double(y1[size_t(i)]) - y2[size_t(i)]));
        CHECK(err < 1e-3);
    }
}

TEST_CASE("vec_dot matches a double dot of the dequantized rows") {
    const int64_t n = 4096;
    // Bound on the gap to the f32 (unquantized) activation, relative to sum |w a|. The activation's
    // rounding error (step/2 per element, random sign) mostly cancels: over many trials Q8 activations
    // stay under 1e-3, so 3e-3 holds with margin, while dropping one block of 128 already costs ~8e-3.
    struct ActBound {
        DType t;
        double rel;
    };
    const ActBound act_bounds[] = {
        {DType::F32, 1e-5},  {DType::F16, 1e-5},  {DType::BF16, 1e-5}, {DType::Q4_0, 3e-3},
        {DType::Q4_1, 3e-3}, {DType::Q5_0, 3e-3}, {DType::Q5_1, 3e-3}, {DType::Q8_0, 3e-3},
        {DType::Q4_K, 3e-3}, {DType::Q5_K, 3e-3}, {DType::Q6_K, 3e-3},
    };
    for (const ActBound& ab : act_bounds) {
        const DType t = ab.t;
        CAPTURE(name(t));
        const DotCase c = make_dot_case(t, n);
        const double scale = sum_abs_products(c.w_deq, c.act_deq);
        const double exact = dot_double(c.w_deq, c.act_deq);
        // The integer block dots are exact and the float accumulation rounds to ~3e-8 of sum |w a|
        // (measured), so 1e-6 leaves 30x. Q4_1 and Q5_1 also use the activation's fp16-rounded block
        // sum s (2^-11 relative) for the min term, which the bound adds block by block.
        double tol = 1e-6 * scale;
        if (t == DType::Q4_1 || t == DType::Q5_1) {
            const size_t bw = dtype_traits(t).type_size;
            for (int64_t b = 0; b < n / 32; ++b) {
                uint16_t m, s;
                std::memcpy(&m, c.w.data() + size_t(b) * bw + 2, 2);
                std::memcpy(&s, c.act.data() + size_t(b) * 36 + 2, 2);
                tol += std::fabs(double(fp16_to_fp32(m)) * fp16_to_fp32(s)) * std::ldexp(1.0, -11);
            }
        }
        for (VecDotFn dot : {dtype_traits(t).vec_dot, vec_dot_ref(t)}) {
            const float got = dot(n, c.w.data(), c.act.data());
            CHECK(std::fabs(got - exact) <= tol);
            CHECK(std::fabs(got - dot_double(c.w_deq, c.act_f32)) <= ab.rel * sum_abs_products(c.w_deq, c.act_f32));
        }
    }
}

TEST_CASE("AVX2 fast paths agree with the scalar kernels") {
    bool any = false;
    for (DType t : k_computable) any = any || vec_dot_avx2(t) != nullptr;
    if (!any) {
        MESSAGE("this build has no AVX2+FMA fast paths; nothing to compare");
        return;
    }
    for (DType t : k_computable) {
        CAPTURE(name(t));
        const VecDotFn fast = vec_dot_avx2(t);
        REQUIRE((fast != nullptr));
        CHECK((dtype_traits(t).vec_dot == fast));
        for (int64_t n : {256, 512, 4096, 4096 + 37}) {
            if (n % dtype_traits(t).block_size != 0) continue;
            CAPTURE(n);
            const DotCase c = make_dot_case(t, n);
            const float f = fast(n, c.w.data(), c.act.data());
            const float r = vec_dot_ref(t)(n, c.w.data(), c.act.data());
            // Integer block dots are exact in both; only the float accumulation order differs, which
            // moves the result by under 1e-7 of sum |w a| (measured), so 1e-6 leaves 10x.
            CHECK(std::fabs(double(f) - r) <= 1e-6 * sum_abs_products(c.w_deq, c.act_deq));
        }
    }

    // The AVX2 activation quantizers are bit-identical to the reference ones, including on ties and on
    // blocks whose largest magnitude appears with both signs.
    const std::pair<DType, FromFloatFn> quantizers[] = {
        {DType::Q8_0, quantize_row_q8_0_ref}, {DType::Q8_1, quantize_row_q8_1_ref}, {DType::Q8_K, quantize_row_q8_K_ref}};
    for (const auto& tq : quantizers) {
        const DType t = tq.first;
        const FromFloatFn ref = tq.second;
        CAPTURE(name(t));
        const FromFloatFn fast = from_float_avx2(t);
        REQUIRE((fast != nullptr));
        CHECK((dtype_traits(t).from_float == fast));
        const int64_t n = 4096;
        auto x = mf_test::random_floats(size_t(n), -3.0f, 3.0f);
        for (int64_t i = 0; i < 256; ++i) x[size_t(i)] = float(i % 64 - 32) * 0.5f;  // exact halves: ties
        x[300] = 2.5f;
        x[301] = -2.5f;   // equal magnitudes, positive first
        x[600] = -7.0f;
        x[601] = 7.0f;    // negative first
        for (int64_t i = 1024; i < 1024 + 256; ++i) x[size_t(i)] = 0.0f;  // an all-zero block
        std::vector<uint8_t> a(dtype_row_size(t, n)), b(dtype_row_size(t, n));
        ref(x.data(), a.data(), n);
        fast(x.data(), b.data(), n);
        CHECK(std::memcmp(a.data(), b.data(), a.size()) == 0);
    }
}

TEST_CASE("the four-row AVX2 dots give each row the single-row dot's bits") {
    bool any = false;
    for (DType t : k_computable) any = any || vec_dot4_avx2(t) != nullptr;
    if (!any) {
        MESSAGE("this build has no four-row dots; nothing to compare");
        return;
    }
    for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
        CAPTURE(name(t));
        const VecDot4Fn dot4 = vec_dot4_avx2(t);
        REQUIRE((dot4 != nullptr));
        CHECK((dtype_traits(t).vec_dot4 == dot4));
        const DType vt = dtype_traits(t).vec_dot_type;
        for (int64_t n : {32, 96, 256, 4096, 4096 + 32}) {  // odd block counts reach the pair kernels' tails
            if (n % dtype_traits(t).block_size != 0) continue;
            CAPTURE(n);
            const std::vector<uint8_t> w = quantize(t, mf_test::random_floats(size_t(n)));
            // Four activation rows at a stride wider than a row, as a matmul's scratch may lay them out.
            const size_t row = dtype_row_size(vt, n), stride = row + 64;
            std::vector<uint8_t> act(4 * stride);
            for (int c = 0; c < 4; ++c) {
                const std::vector<uint8_t> a = quantize(vt, mf_test::random_floats(size_t(n)));
                std::memcpy(act.data() + size_t(c) * stride, a.data(), row);
            }
            std::vector<float> act_d(size_t(n / 32) * 8);
            if (vt == DType::Q8_0) q8_0_scales4(act.data(), stride, n, act_d.data());
            if (vt == DType::Q8_1) q8_1_scales4(act.data(), stride, n, act_d.data());
            float got[4];
            dot4(n, w.data(), act.data(), stride, act_d.data(), got);
            for (int c = 0; c < 4; ++c) {
                CAPTURE(c);
                const float want = dtype_traits(t).vec_dot(n, w.data(), act.data() + size_t(c) * stride);
                CHECK(std::memcmp(&got[c], &want, sizeof(float)) == 0);
            }
        }
    }
}

TEST_CASE("the four-weight-row AVX2 dots give each row the single-row dot's bits") {
    bool any = false;
    for (DType t : k_computable) any = any || vec_dot_rows4_avx2(t) != nullptr;
    if (!any) {
        MESSAGE("this build has no four-weight-row dots; nothing to compare");
        return;
    }
    for (DType t : k_computable) {
        const VecDotRows4Fn rows4 = vec_dot_rows4_avx2(t);
        if (!rows4) continue;
        CAPTURE(name(t));
        CHECK((dtype_traits(t).vec_dot_rows4 == rows4));
        const DType vt = dtype_traits(t).vec_dot_type;
        for (int64_t n : {32, 96, 256, 4096, 4096 + 32}) {  // odd block counts reach the pair kernels' tails
            if (n % dtype_traits(t).block_size != 0) continue;
            CAPTURE(n);
            // Four weight rows at a stride wider than a row, as a weight view's may be.
            const size_t row = dtype_row_size(t, n), stride = row + 64;
            std::vector<uint8_t> w(4 * stride);
            for (int r = 0; r < 4; ++r) {
                const std::vector<uint8_t> q = quantize(t, mf_test::random_floats(size_t(n)));
                std::memcpy(w.data() + size_t(r) * stride, q.data(), row);
            }
            const std::vector<uint8_t> act = quantize(vt, mf_test::random_floats(size_t(n)));
            float got[4];
            rows4(n, w.data(), stride, act.data(), got);
            for (int r = 0; r < 4; ++r) {
                CAPTURE(r);
                const float want = dtype_traits(t).vec_dot(n, w.data() + size_t(r) * stride, act.data());
                CHECK(std::memcmp(&got[r], &want, sizeof(float)) == 0);
            }
        }
    }
}

TEST_CASE("f16 conversion: exact when representable, round to nearest even, inf, nan, subnormals") {
    // Every finite half survives the round trip through f32 unchanged.
    for (uint32_t bits = 0; bits < 0x10000; ++bits) {
        const float f = fp16_to_fp32(uint16_t(bits));
        if (std::isnan(f)) {
            CHECK((bits & 0x7C00) == 0x7C00);
            CHECK(std::isnan(fp16_to_fp32(fp32_to_fp16(f))));
            continue;
        }
        REQUIRE(fp32_to_fp16(f) == bits);
    }
    CHECK(fp32_to_fp16(1.0f + std::ldexp(1.0f, -11)) == 0x3C00);      // halfway: to even (1.0)
    CHECK(fp32_to_fp16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3C02);  // halfway: to even (mantissa 2)
    CHECK(fp32_to_fp16(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)) == 0x3C01);  // past halfway: up
    CHECK(fp32_to_fp16(65504.0f) == 0x7BFF);
    CHECK(fp32_to_fp16(65519.0f) == 0x7BFF);
    CHECK(fp32_to_fp16(65520.0f) == 0x7C00);  // halfway to 65536 rounds to even, which is inf
    CHECK(fp32_to_fp16(INFINITY) == 0x7C00);
    CHECK(fp32_to_fp16(-INFINITY) == 0xFC00);
    CHECK((fp32_to_fp16(NAN) & 0x7FFF) > 0x7C00);
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -24)) == 0x0001);        // smallest subnormal
    CHECK(fp32_to_fp16(std::ldexp(1.0f, -25)) == 0x0000);        // half of it: ties to even (0)
    CHECK(fp32_to_fp16(1.5f * std::ldexp(1.0f, -24)) == 0x0002);  // 1.5 ulp: ties to even (2)
    CHECK(fp32_to_fp16(-std::ldexp(1.0f, -24)) == 0x8001);
    CHECK(fp16_to_fp32(0x03FF) == 1023 * std::ldexp(1.0f, -24));  // largest subnormal
    CHECK(fp16_to_fp32(0x8000) == 0.0f);
    CHECK(std::signbit(fp16_to_fp32(0x8000)));

#if defined(__F16C__)
    // The hardware converter is an independent oracle for round-to-nearest-even on arbitrary floats.
    std::uniform_int_distribution<uint32_t> any_bits;
    for (int i = 0; i < 200000; ++i) {
        const uint32_t u = any_bits(mf_test::rng()) & 0x8FFFFFFFu;  // exponents up to 2^16ish and down to 0
        const float f = fp32_from_bits(u);
        REQUIRE(fp32_to_fp16(f) == _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    }
#endif
}

TEST_CASE("bf16 conversion: exact when representable, round to nearest even, inf, nan") {
    for (uint32_t bits = 0; bits < 0x10000; ++bits) {
        const float f = bf16_to_fp32(uint16_t(bits));
        if (std::isnan(f)) {
            CHECK(std::isnan(bf16_to_fp32(fp32_to_bf16(f))));
            continue;
        }
        REQUIRE(fp32_to_bf16(f) == bits);
    }
    CHECK(fp32_to_bf16(fp32_from_bits(0x3F808000u)) == 0x3F80);  // halfway: to even
    CHECK(fp32_to_bf16(fp32_from_bits(0x3F818000u)) == 0x3F82);  // halfway: to even
    CHECK(fp32_to_bf16(fp32_from_bits(0x3F808001u)) == 0x3F81);  // past halfway: up
    CHECK(fp32_to_bf16(fp32_from_bits(0x7F7FFFFFu)) == 0x7F80);  // FLT_MAX rounds up to inf
    CHECK(fp32_to_bf16(-INFINITY) == 0xFF80);
    CHECK(fp32_to_bf16(fp32_from_bits(0x00000001u)) == 0x0000);  // f32 subnormals below bf16's ulp: 0
    CHECK(fp32_to_bf16(fp32_from_bits(0x00010000u)) == 0x0001);  // a bf16 subnormal is kept
    const uint16_t nan_bits = fp32_to_bf16(fp32_from_bits(0x7F800001u));  // signalling NaN, payload in low bits
    CHECK(std::isnan(bf16_to_fp32(nan_bits)));
    CHECK((nan_bits & 0x0040) != 0);  // quiet

    // Row conversions agree with the scalar ones.
    const auto x = mf_test::random_floats(1000, -100.0f, 100.0f);
    for (DType t : {DType::F16, DType::BF16}) {
        const auto q = quantize(t, x);
        for (size_t i = 0; i < x.size(); ++i) {
            uint16_t v;
            std::memcpy(&v, q.data() + 2 * i, 2);
            REQUIRE(v == (t == DType::F16 ? fp32_to_fp16(x[i]) : fp32_to_bf16(x[i])));
        }
    }
}
