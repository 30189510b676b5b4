// GGUF metadata values: the type table, typed access with range checks (integers widen to any
// type that holds them), array element access without copies, and the printing `minfer info` uses.
#include "core/gguf.h"

#include <cstdlib>
#include <cstring>
#include <limits>

#include "core/common.h"

namespace mf {

namespace {

struct TypeInfo {
    const char* name;
    size_t size;
};

const TypeInfo kTypes[] = {
    {"u8", 1}, {"i8", 1}, {"u16", 2}, {"i16", 2}, {"u32", 4}, {"i32", 4}, {"f32", 4},
    {"bool", 1}, {"str", 0}, {"arr", 0}, {"u64", 8}, {"i64", 8}, {"f64", 8},
};

template <typename T>
T load(const uint8_t* p) {
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
}

bool is_integer_type(GGUFType t) {
    switch (t) {
        case GGUFType::UINT8: case GGUFType::INT8: case GGUFType::UINT16: case GGUFType::INT16:
        case GGUFType::UINT32: case GGUFType::INT32: case GGUFType::UINT64: case GGUFType::INT64:
            return true;
        default:
            return false;
    }
}

// An integer value widened: negative ones are exact in i, the others in u.
struct WideInt {
    bool negative = false;
    uint64_t u = 0;
    int64_t i = 0;
    WideInt(bool neg, uint64_t unsigned_value, int64_t signed_value = 0)
        : negative(neg), u(unsigned_value), i(signed_value) {}
};

WideInt widen(GGUFType t, const uint8_t* p) {
    int64_t s = 0;
    switch (t) {
        case GGUFType::UINT8: return {false, load<uint8_t>(p)};
        case GGUFType::UINT16: return {false, load<uint16_t>(p)};
        case GGUFType::UINT32: return {false, load<uint32_t>(p)};
        case GGUFType::UINT64: return {false, load<uint64_t>(p)};
        case GGUFType::INT8: s = load<int8_t>(p); break;
        case GGUFType::INT16: s = load<int16_t>(p); break;
        case GGUFType::INT32: s = load<int32_t>(p); break;
        case GGUFType::INT64: s = load<int64_t>(p); break;
        default: MF_ASSERT(false);
    }
    if (s < 0) return {true, 0, s};
    return {false, uint64_t(s), s};
}

// Shortest %g form that reads back as the same value, so `info` shows 1e-05 rather than 9.99999975e-06.
std::string format_float(double v, bool single) {
    const int max_precision = single ? 9 : 17;
    char buf[64];
    for (int p = single ? 6 : 15; p <= max_precision; ++p) {
        std::snprintf(buf, sizeof(buf), "%.*g", p, v);
        const double back = std::strtod(buf, nullptr);
        if (single ? float(back) == float(v) : back == v) break;
    }
    return buf;
}

}  // namespace

const char* gguf_type_name(GGUFType t) {
    MF_ASSERT(gguf_type_is_known(uint32_t(t)));
    return kTypes[uint32_t(t)].name;
}

size_t gguf_type_size(GGUFType t) {
    MF_ASSERT(gguf_type_is_known(uint32_t(t)));
    return kTypes[uint32_t(t)].size;
}

bool gguf_type_is_known(uint32_t id) { return id < sizeof(kTypes) / sizeof(kTypes[0]); }

std::string gguf_escape(std::string_view s, size_t max_len) {
    std::string out;
    out.reserve(std::min(s.size(), max_len) + 8);
    for (size_t i = 0; i < s.size() && i < max_len; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        switch (c) {
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            case '\\': out += "\\\\"; break;
            case '"': out += "\\\""; break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    out += strfmt("\\x%02x", c);
                } else {
                    out += char(c);
                }
        }
    }
    if (s.size() > max_len) out += "...";
    return out;
}

void GGUFValue::type_error(const char* expected) const {
    throw Error(strfmt("%s: key '%s' has type %s, expected %s", source_ ? source_->c_str() : "gguf",
                       gguf_escape(key_, 64).c_str(), type_str().c_str(), expected));
}

bool GGUFValue::is_integer() const { return is_integer_type(type_); }

bool GGUFValue::is_float() const { return type_ == GGUFType::FLOAT32 || type_ == GGUFType::FLOAT64; }

uint32_t GGUFValue::as_u32() const {
    if (!is_integer()) type_error("an integer (u32)");
    const WideInt w = widen(type_, data_);
    if (w.negative || w.u > std::numeric_limits<uint32_t>::max()) type_error("a value that fits u32");
    return uint32_t(w.u);
}

int32_t GGUFValue::as_i32() const {
    if (!is_integer()) type_error("an integer (i32)");
    const WideInt w = widen(type_, data_);
    if (w.negative ? w.i < std::numeric_limits<int32_t>::min() : w.u > uint64_t(std::numeric_limits<int32_t>::max())) {
        type_error("a value that fits i32");
    }
    return w.negative ? int32_t(w.i) : int32_t(w.u);
}

uint64_t GGUFValue::as_u64() const {
    if (!is_integer()) type_error("an integer (u64)");
    const WideInt w = widen(type_, data_);
    if (w.negative) type_error("a value that fits u64");
    return w.u;
}

int64_t GGUFValue::as_i64() const {
    if (!is_integer()) type_error("an integer (i64)");
    const WideInt w = widen(type_, data_);
    if (!w.negative && w.u > uint64_t(std::numeric_limits<int64_t>::max())) type_error("a value that fits i64");
    return w.negative ? w.i : int64_t(w.u);
}

double GGUFValue::as_f64() const {
    if (type_ == GGUFType::FLOAT32) return load<float>(data_);
    if (type_ == GGUFType::FLOAT64) return load<double>(data_);
    if (!is_integer()) type_error("a number (f32)");
    const WideInt w = widen(type_, data_);
    return w.negative ? double(w.i) : double(w.u);
}

float GGUFValue::as_f32() const { return float(as_f64()); }

bool GGUFValue::as_bool() const {
    if (type_ != GGUFType::BOOL) type_error("bool");
    return data_[0] != 0;
}

std::string_view GGUFValue::as_str() const {
    if (type_ != GGUFType::STRING) type_error("str");
    return std::string_view(reinterpret_cast<const char*>(data_), count_);
}

GGUFType GGUFValue::elem_type() const {
    if (type_ != GGUFType::ARRAY) type_error("an array");
    return elem_type_;
}

uint64_t GGUFValue::size() const {
    if (type_ != GGUFType::ARRAY) type_error("an array");
    return count_;
}

GGUFValue GGUFValue::at(uint64_t i) const {
    if (type_ != GGUFType::ARRAY) type_error("an array");
    MF_ASSERT(i < count_);
    if (elem_type_ == GGUFType::ARRAY) return items_[i];
    GGUFValue v;
    v.type_ = elem_type_;
    v.key_ = key_;
    v.source_ = source_;
    if (elem_type_ == GGUFType::STRING) {
        v.data_ = reinterpret_cast<const uint8_t*>(strs_[i].data());
        v.count_ = strs_[i].size();
    } else {
        v.data_ = data_ + i * gguf_type_size(elem_type_);
    }
    return v;
}

std::string_view GGUFValue::str(uint64_t i) const {
    require_array("an array of str");
    if (elem_type_ != GGUFType::STRING) type_error("an array of str");
    MF_ASSERT(i < count_);
    return strs_[i];
}

const void* GGUFValue::raw_data() const {
    require_array("an array");
    if (gguf_type_size(elem_type_) == 0) type_error("an array of fixed-size elements");
    return data_;
}

void GGUFValue::require_array(const char* expected) const {
    if (type_ != GGUFType::ARRAY) type_error(expected);
}

std::vector<int32_t> GGUFValue::to_i32_vector() const {
    require_array("an array of integers");
    std::vector<int32_t> out(count_);
    if (elem_type_ == GGUFType::INT32) {
        if (count_) std::memcpy(out.data(), data_, count_ * sizeof(int32_t));
        return out;
    }
    if (!is_integer_type(elem_type_)) type_error("an array of integers");
    for (uint64_t i = 0; i < count_; ++i) out[i] = at(i).as_i32();
    return out;
}

std::vector<float> GGUFValue::to_f32_vector() const {
    require_array("an array of numbers");
    std::vector<float> out(count_);
    if (elem_type_ == GGUFType::FLOAT32) {
        if (count_) std::memcpy(out.data(), data_, count_ * sizeof(float));
        return out;
    }
    if (gguf_type_size(elem_type_) == 0 || elem_type_ == GGUFType::BOOL) type_error("an array of numbers");
    for (uint64_t i = 0; i < count_; ++i) out[i] = at(i).as_f32();
    return out;
}

std::vector<uint8_t> GGUFValue::to_u8_vector() const {
    require_array("an array of u8");
    if (elem_type_ != GGUFType::UINT8 && elem_type_ != GGUFType::INT8 && elem_type_ != GGUFType::BOOL)
        type_error("an array of u8");
    return std::vector<uint8_t>(data_, data_ + count_);
}

std::string GGUFValue::type_str() const {
    if (type_ != GGUFType::ARRAY) return gguf_type_name(type_);
    return strfmt("arr[%s,%llu]", gguf_type_name(elem_type_), static_cast<unsigned long long>(count_));
}

std::string GGUFValue::to_string(size_t max_items, size_t max_str_len) const {
    switch (type_) {
        case GGUFType::FLOAT32: return format_float(load<float>(data_), true);
        case GGUFType::FLOAT64: return format_float(load<double>(data_), false);
        case GGUFType::BOOL: return data_[0] ? "true" : "false";
        case GGUFType::STRING: return "\"" + gguf_escape(as_str(), max_str_len) + "\"";
        case GGUFType::ARRAY: {
            // Arrays inside arrays show one item each, so deep nesting stays one short line.
            const size_t shown = elem_type_ == GGUFType::ARRAY ? std::min<size_t>(max_items, 1) : max_items;
            std::string out = "[";
            for (uint64_t i = 0; i < count_ && i < shown; ++i) {
                if (i) out += ", ";
                out += at(i).to_string(max_items, max_str_len);
            }
            if (count_ > shown) out += shown ? ", ..." : "...";
            return out + "]";
        }
        default: {
            const WideInt w = widen(type_, data_);
            return w.negative ? std::to_string(w.i) : std::to_string(w.u);
        }
    }
}

}  // namespace mf
