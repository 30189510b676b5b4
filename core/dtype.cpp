// The dtype table: block sizes and byte sizes of every ggml type (so any llama.cpp file can be sized),
// and the kernels of the types minfer computes with, fast paths chosen over scalar ones where compiled.
#include "core/dtype.h"

#include <array>
#include <cctype>

#include "core/common.h"
#include "core/quants.h"

namespace mf {

namespace {

constexpr uint32_t k_table_size = 42;  // one past the largest ggml type id (Q1_0 = 41)

// A type minfer can only size (and perhaps dequantize): no from_float, no vec_dot.
DTypeTraits sized(const char* name, int64_t block_size, size_t type_size, DType vec_dot_type,
                  ToFloatFn to_float = nullptr) {
    return {name, block_size, type_size, block_size > 1, false, vec_dot_type, to_float, nullptr, nullptr, nullptr,
            nullptr};
}

// A type with kernels. The table points at the AVX2 ones when this build has them (the AVX2
// quantizers are bit-identical to the reference ones, so from_float stays a reference conversion).
DTypeTraits computed(const char* name, DType t, int64_t block_size, size_t type_size, DType vec_dot_type,
                     ToFloatFn to_float, FromFloatFn from_float_ref) {
    const VecDotFn fast_dot = vec_dot_avx2(t);
    const FromFloatFn fast_from = from_float_avx2(t);
    return {name, block_size, type_size, block_size > 1, true, vec_dot_type, to_float,
            fast_from ? fast_from : from_float_ref, fast_dot ? fast_dot : vec_dot_ref(t), vec_dot4_avx2(t),
            vec_dot_rows4_avx2(t)};
}

// An activation format: quantized into, read back, but never a matmul weight.
DTypeTraits activation(const char* name, DType t, int64_t block_size, size_t type_size, ToFloatFn to_float,
                       FromFloatFn from_float_ref) {
    const FromFloatFn fast = from_float_avx2(t);
    return {name, block_size, type_size, true, false, t, to_float, fast ? fast : from_float_ref, nullptr, nullptr,
            nullptr};
}

std::array<DTypeTraits, k_table_size> build_table() {
    std::array<DTypeTraits, k_table_size> t{};
    auto set = [&t](DType type, const DTypeTraits& traits) { t[uint32_t(type)] = traits; };

    // Sizes follow ggml's type_traits (ggml.c) and block structs (ggml-common.h).
    set(DType::F32, computed("f32", DType::F32, 1, 4, DType::F32, f32_to_float, f32_from_float));
    set(DType::F16, computed("f16", DType::F16, 1, 2, DType::F32, f16_to_float, f16_from_float));
    set(DType::BF16, computed("bf16", DType::BF16, 1, 2, DType::F32, bf16_to_float, bf16_from_float));
    set(DType::Q4_0, computed("q4_0", DType::Q4_0, QK4_0, sizeof(block_q4_0), DType::Q8_0, dequantize_row_q4_0,
                              quantize_row_q4_0_ref));
    set(DType::Q4_1, computed("q4_1", DType::Q4_1, QK4_1, sizeof(block_q4_1), DType::Q8_1, dequantize_row_q4_1,
                              quantize_row_q4_1_ref));
    set(DType::Q5_0, computed("q5_0", DType::Q5_0, QK5_0, sizeof(block_q5_0), DType::Q8_0, dequantize_row_q5_0,
                              quantize_row_q5_0_ref));
    set(DType::Q5_1, computed("q5_1", DType::Q5_1, QK5_1, sizeof(block_q5_1), DType::Q8_1, dequantize_row_q5_1,
                              quantize_row_q5_1_ref));
    set(DType::Q8_0, computed("q8_0", DType::Q8_0, QK8_0, sizeof(block_q8_0), DType::Q8_0, dequantize_row_q8_0,
                              quantize_row_q8_0_ref));
    set(DType::Q4_K, computed("q4_k", DType::Q4_K, QK_K, sizeof(block_q4_K), DType::Q8_K, dequantize_row_q4_K,
                              quantize_row_q4_K_ref));
    set(DType::Q5_K, computed("q5_k", DType::Q5_K, QK_K, sizeof(block_q5_K), DType::Q8_K, dequantize_row_q5_K,
                              quantize_row_q5_K_ref));
    set(DType::Q6_K, computed("q6_k", DType::Q6_K, QK_K, sizeof(block_q6_K), DType::Q8_K, dequantize_row_q6_K,
                              quantize_row_q6_K_ref));

    set(DType::Q8_1, activation("q8_1", DType::Q8_1, QK8_1, sizeof(block_q8_1), dequantize_row_q8_1,
                                quantize_row_q8_1_ref));
    set(DType::Q8_K, activation("q8_k", DType::Q8_K, QK_K, sizeof(block_q8_K), dequantize_row_q8_K,
                                quantize_row_q8_K_ref));

    set(DType::Q2_K, sized("q2_k", QK_K, 84, DType::Q8_K, dequantize_row_q2_K));
    set(DType::Q3_K, sized("q3_k", QK_K, 110, DType::Q8_K, dequantize_row_q3_K));
    set(DType::IQ2_XXS, sized("iq2_xxs", QK_K, 66, DType::Q8_K));
    set(DType::IQ2_XS, sized("iq2_xs", QK_K, 74, DType::Q8_K));
    set(DType::IQ3_XXS, sized("iq3_xxs", QK_K, 98, DType::Q8_K));
    set(DType::IQ1_S, sized("iq1_s", QK_K, 50, DType::Q8_K));
    set(DType::IQ4_NL, sized("iq4_nl", 32, 18, DType::Q8_0));
    set(DType::IQ3_S, sized("iq3_s", QK_K, 110, DType::Q8_K));
    set(DType::IQ2_S, sized("iq2_s", QK_K, 82, DType::Q8_K));
    set(DType::IQ4_XS, sized("iq4_xs", QK_K, 136, DType::Q8_K));
    set(DType::IQ1_M, sized("iq1_m", QK_K, 56, DType::Q8_K));
    set(DType::TQ1_0, sized("tq1_0", QK_K, 54, DType::Q8_K));
    set(DType::TQ2_0, sized("tq2_0", QK_K, 66, DType::Q8_K));
    set(DType::MXFP4, sized("mxfp4", 32, 17, DType::Q8_0));
    set(DType::NVFP4, sized("nvfp4", 64, 36, DType::Q8_0));
    set(DType::Q1_0, sized("q1_0", 128, 18, DType::Q8_0));

    // Integer and f64 tensors are carried (token ids, positions), never multiplied.
    set(DType::I8, sized("i8", 1, 1, DType::F32));
    set(DType::I16, sized("i16", 1, 2, DType::F32));
    set(DType::I32, sized("i32", 1, 4, DType::F32));
    set(DType::I64, sized("i64", 1, 8, DType::F32));
    set(DType::F64, sized("f64", 1, 8, DType::F32));
    return t;
}

const std::array<DTypeTraits, k_table_size>& table() {
    static const std::array<DTypeTraits, k_table_size> t = build_table();
    return t;
}

}  // namespace

bool dtype_is_known(uint32_t id) { return id < k_table_size && table()[id].name != nullptr; }

const DTypeTraits& dtype_traits(DType t) {
    MF_ASSERT_MSG(dtype_is_known(uint32_t(t)), "unknown dtype");
    return table()[uint32_t(t)];
}

bool dtype_from_name(const char* name, DType* out) {
    if (!name) return false;
    for (uint32_t id = 0; id < k_table_size; ++id) {
        const char* known = table()[id].name;
        if (!known) continue;
        size_t i = 0;
        while (known[i] && name[i] && std::tolower((unsigned char)name[i]) == known[i]) ++i;
        if (!known[i] && !name[i]) {
            *out = DType(id);
            return true;
        }
    }
    return false;
}

size_t dtype_row_size(DType t, int64_t ne0) {
    const DTypeTraits& tr = dtype_traits(t);
    MF_ASSERT_MSG(ne0 % tr.block_size == 0, "row length must be a multiple of the block size");
    return tr.type_size * size_t(ne0 / tr.block_size);
}

}  // namespace mf
