// Tensor helpers and the Context that owns tensors.
#include "core/tensor.h"

#include "core/common.h"

namespace mf {

const char* op_name(Op op) {
    switch (op) {
        case Op::NONE: return "NONE";
        case Op::GET_ROWS: return "GET_ROWS";
        case Op::MUL_MAT: return "MUL_MAT";
        case Op::ADD: return "ADD";
        case Op::MUL: return "MUL";
        case Op::SCALE: return "SCALE";
        case Op::RMS_NORM: return "RMS_NORM";
        case Op::ROPE: return "ROPE";
        case Op::SOFT_MAX: return "SOFT_MAX";
        case Op::SILU: return "SILU";
        case Op::GELU: return "GELU";
        case Op::SWIGLU: return "SWIGLU";
        case Op::GEGLU: return "GEGLU";
        case Op::CPY: return "CPY";
        case Op::CONCAT: return "CONCAT";
        case Op::SET_ROWS: return "SET_ROWS";
        case Op::FLASH_ATTN: return "FLASH_ATTN";
        case Op::ATTN_FUSED: return "ATTN_FUSED";
        case Op::MUL_MAT_ID: return "MUL_MAT_ID";
        case Op::TOP_K: return "TOP_K";
        case Op::SUM_ROWS: return "SUM_ROWS";
        case Op::DIV: return "DIV";
        case Op::SIGMOID: return "SIGMOID";
        case Op::HADAMARD: return "HADAMARD";
        case Op::VIEW: return "VIEW";
        case Op::COUNT: break;
    }
    return "?";
}

size_t Tensor::nbytes() const {
    const auto& tr = dtype_traits(type);
    if (nelements() == 0) return 0;
    // Last byte touched, plus one block.
    size_t bytes = tr.type_size;
    bytes += size_t(ne[0] / tr.block_size - 1) * nb[0];
    for (int i = 1; i < MAX_DIMS; ++i) bytes += size_t(ne[i] - 1) * nb[i];
    return bytes;
}

bool Tensor::rows_contiguous() const { return nb[0] == dtype_traits(type).type_size; }

bool Tensor::is_contiguous() const {
    const auto& tr = dtype_traits(type);
    size_t expect = tr.type_size;
    if (nb[0] != expect) return false;
    expect *= size_t(ne[0] / tr.block_size);
    for (int i = 1; i < MAX_DIMS; ++i) {
        if (ne[i] != 1 && nb[i] != expect) return false;
        expect *= size_t(ne[i]);
    }
    return true;
}

float Tensor::op_param_f(int i) const {
    float f;
    std::memcpy(&f, &op_params[i], sizeof f);
    return f;
}

void set_contiguous_strides(Tensor* t) {
    const auto& tr = dtype_traits(t->type);
    t->nb[0] = tr.type_size;
    t->nb[1] = tr.type_size * size_t(t->ne[0] / tr.block_size);
    for (int i = 2; i < MAX_DIMS; ++i) t->nb[i] = t->nb[i - 1] * size_t(t->ne[i - 1]);
}

Tensor* Context::new_tensor(DType type, int n_dims, const int64_t* ne) {
    MF_ASSERT(n_dims >= 1 && n_dims <= MAX_DIMS);
    const auto& tr = dtype_traits(type);
    tensors_.emplace_back();
    Tensor* t = &tensors_.back();
    t->type = type;
    for (int i = 0; i < n_dims; ++i) {
        MF_ASSERT(ne[i] >= 0);
        t->ne[i] = ne[i];
    }
    MF_ASSERT_MSG(t->ne[0] % tr.block_size == 0, "row length must be a multiple of the block size");
    set_contiguous_strides(t);
    return t;
}

Tensor* Context::new_tensor_1d(DType type, int64_t ne0) {
    const int64_t ne[1] = {ne0};
    return new_tensor(type, 1, ne);
}
Tensor* Context::new_tensor_2d(DType type, int64_t ne0, int64_t ne1) {
    const int64_t ne[2] = {ne0, ne1};
    return new_tensor(type, 2, ne);
}
Tensor* Context::new_tensor_3d(DType type, int64_t ne0, int64_t ne1, int64_t ne2) {
    const int64_t ne[3] = {ne0, ne1, ne2};
    return new_tensor(type, 3, ne);
}
Tensor* Context::new_tensor_4d(DType type, int64_t ne0, int64_t ne1, int64_t ne2, int64_t ne3) {
    const int64_t ne[4] = {ne0, ne1, ne2, ne3};
    return new_tensor(type, 4, ne);
}

Tensor* Context::find(const std::string& name) {
    for (auto& t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

std::string describe(const Tensor* t) {
    return strfmt("'%s' %s [%lld, %lld, %lld, %lld]", t->name.c_str(), dtype_name(t->type),
                  (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3]);
}

bool same_shape(const Tensor* a, const Tensor* b) {
    for (int i = 0; i < MAX_DIMS; ++i)
        if (a->ne[i] != b->ne[i]) return false;
    return true;
}

}  // namespace mf
