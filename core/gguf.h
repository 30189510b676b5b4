// GGUF v2/v3 files: a validating reader over an mmapped file (or a caller's memory), typed metadata
// access for model loaders, and a streaming writer. Every malformed input becomes one mf::Error line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace mf {

constexpr int GGUF_MAX_DIMS = 4;
constexpr uint32_t GGUF_DEFAULT_ALIGNMENT = 32;
constexpr int GGUF_MAX_ARRAY_DEPTH = 16;  // arrays of arrays nest at most this deep

// Metadata value type ids as stored in the file; never renumber.
enum class GGUFType : uint32_t {
    UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// Short name of a value type: "u8", "i32", "f32", "bool", "str", "arr", ...
const char* gguf_type_name(GGUFType t);
// Bytes of one value of a fixed-size type; 0 for STRING and ARRAY.
size_t gguf_type_size(GGUFType t);
// True when id names a value type (used to validate untrusted ids).
bool gguf_type_is_known(uint32_t id);
// Untrusted bytes made safe for one line of output: control bytes, quotes and backslashes escaped
// (\n, \", \x01), bytes >= 0x80 kept (UTF-8); cut after max_len input bytes, marked by "...".
std::string gguf_escape(std::string_view s, size_t max_len);

// A read-only view of one metadata value (or array element) inside a GGUFFile; valid while the
// file lives. Accessors of the wrong type throw mf::Error naming the file and the key.
class GGUFValue {
public:
    GGUFType type() const { return type_; }
    // The metadata key this value belongs to (array elements report their array's key).
    std::string_view key() const { return key_; }
    bool is_integer() const;  // u8..i64 (not bool)
    bool is_float() const;    // f32 or f64
    bool is_array() const { return type_ == GGUFType::ARRAY; }

    // Scalars. Integer accessors take any integer type whose value fits the result.
    uint32_t as_u32() const;
    int32_t as_i32() const;
    uint64_t as_u64() const;
    int64_t as_i64() const;
    float as_f32() const;   // f32, f64 (rounded) or any integer
    double as_f64() const;  // f32, f64 or any integer
    bool as_bool() const;   // bool only
    std::string_view as_str() const;  // string only; the bytes in the file (not NUL-terminated)

    // Arrays. size() is the element count; elements are checked against elem_type.
    GGUFType elem_type() const;
    uint64_t size() const;
    // Element i (i < size()) as a value of elem_type(); nested arrays come back as arrays.
    GGUFValue at(uint64_t i) const;
    // Element i of an array of strings, without copying.
    std::string_view str(uint64_t i) const;
    // Fixed-size elements as stored (little-endian, unaligned); size() * gguf_type_size(elem_type()) bytes.
    const void* raw_data() const;
    // Copies of a whole array, converting each element as the scalar accessors do.
    std::vector<int32_t> to_i32_vector() const;
    std::vector<float> to_f32_vector() const;
    std::vector<uint8_t> to_u8_vector() const;  // u8, i8 or bool elements, as bytes

    // "u32", "str", "arr[str,32000]", "arr[arr,2]": the type column of `minfer info`.
    std::string type_str() const;
    // The value for humans: strings quoted and escaped (cut after max_str_len bytes), arrays as
    // their first max_items elements (one for arrays of arrays) followed by ", ..." when longer.
    std::string to_string(size_t max_items = 3, size_t max_str_len = 120) const;

private:
    friend class GGUFParser;
    [[noreturn]] void type_error(const char* expected) const;
    void require_array(const char* expected_elems) const;

    GGUFType type_ = GGUFType::UINT8;
    GGUFType elem_type_ = GGUFType::UINT8;    // arrays only
    uint64_t count_ = 0;                      // arrays: elements; strings: bytes
    const uint8_t* data_ = nullptr;           // scalar bytes | string bytes | fixed-size array elements
    const std::string_view* strs_ = nullptr;  // arrays of strings: one view per element
    const GGUFValue* items_ = nullptr;        // arrays of arrays: one value per element
    std::string_view key_;
    const std::string* source_ = nullptr;     // the file's name, for messages
};

// One tensor of a GGUF file. Shapes use ggml order: ne[0] is the fastest-varying (row) dimension.
struct GGUFTensorInfo {
    std::string name;
    DType type = DType::F32;
    int n_dims = 0;                        // as stored, 0..GGUF_MAX_DIMS
    int64_t ne[GGUF_MAX_DIMS] = {1, 1, 1, 1};  // elements per dimension; dims past n_dims are 1
    int64_t n_elements = 0;                // product of ne
    uint64_t n_bytes = 0;                  // bytes of the data: rows of dtype_row_size(type, ne[0])
    uint64_t offset = 0;                   // from the start of the data section; a multiple of the alignment
    const void* data = nullptr;            // the bytes inside the mapped file (or the parsed memory)
};

// A parsed GGUF file. Everything is validated when it is opened; afterwards every accessor is
// bounds-safe. Move-only; values, tensor infos and data pointers live as long as the object.
class GGUFFile {
public:
    // Maps path read-only and parses it. Throws mf::Error ("path: offset N: what is wrong").
    static GGUFFile open(const std::string& path);
    // Parses size bytes at data, which the caller keeps alive and unchanged while the result lives;
    // name stands for the file in error messages.
    static GGUFFile parse(const void* data, size_t size, const std::string& name);

    GGUFFile(GGUFFile&&) noexcept;
    GGUFFile& operator=(GGUFFile&&) noexcept;
    ~GGUFFile();

    // Maps every page of an opened file now (MADV_POPULATE_READ), reading it from disk where the page
    // cache does not hold it: for a model whose weights stay in the mapping, so that its first steps
    // do not stop on page faults. Best effort; nothing for parsed memory.
    void prefetch() const;

    const std::string& name() const;  // the path, or the name given to parse
    uint32_t version() const;         // 2 or 3
    uint64_t file_size() const;
    uint64_t alignment() const;       // general.alignment, or GGUF_DEFAULT_ALIGNMENT
    uint64_t data_offset() const;     // file offset of the data section (a multiple of alignment())

    // Metadata, in file order.
    size_t n_kv() const;
    const GGUFValue& kv(size_t i) const;  // i < n_kv(); its key() names it
    // The value under key, or null when absent.
    const GGUFValue* find(std::string_view key) const;
    bool has(std::string_view key) const { return find(key) != nullptr; }

    // Typed getters: throw mf::Error naming the key when it is missing or of the wrong type (or
    // out of range). The variants with a fallback return it when the key is absent, but still
    // throw when the key is present with the wrong type.
    uint32_t get_u32(std::string_view key) const;
    uint32_t get_u32(std::string_view key, uint32_t fallback) const;
    int32_t get_i32(std::string_view key) const;
    int32_t get_i32(std::string_view key, int32_t fallback) const;
    uint64_t get_u64(std::string_view key) const;
    uint64_t get_u64(std::string_view key, uint64_t fallback) const;
    float get_f32(std::string_view key) const;
    float get_f32(std::string_view key, float fallback) const;
    bool get_bool(std::string_view key) const;
    bool get_bool(std::string_view key, bool fallback) const;
    std::string get_str(std::string_view key) const;
    std::string get_str(std::string_view key, const std::string& fallback) const;
    // The array under key; throws when missing or not an array.
    const GGUFValue& get_array(std::string_view key) const;
    // As above, and throws unless its elements are of elem_type.
    const GGUFValue& get_array(std::string_view key, GGUFType elem_type) const;

    // Tensors, in file order.
    size_t n_tensors() const;
    const GGUFTensorInfo& tensor(size_t i) const;  // i < n_tensors()
    // The tensor called name, or null when absent.
    const GGUFTensorInfo* find_tensor(std::string_view name) const;

private:
    friend class GGUFParser;
    struct Impl;
    explicit GGUFFile(std::unique_ptr<Impl> impl);
    const GGUFValue& require(std::string_view key) const;
    std::unique_ptr<Impl> impl_;
};

// An owned metadata value for GGUFWriter, serialized when it is made: scalars, strings, and arrays
// of any element type, arrays of arrays included.
class GGUFMetaValue {
public:
    static GGUFMetaValue u8(uint8_t v);
    static GGUFMetaValue i8(int8_t v);
    static GGUFMetaValue u16(uint16_t v);
    static GGUFMetaValue i16(int16_t v);
    static GGUFMetaValue u32(uint32_t v);
    static GGUFMetaValue i32(int32_t v);
    static GGUFMetaValue u64(uint64_t v);
    static GGUFMetaValue i64(int64_t v);
    static GGUFMetaValue f32(float v);
    static GGUFMetaValue f64(double v);
    static GGUFMetaValue boolean(bool v);
    static GGUFMetaValue str(std::string_view v);
    // An array of n fixed-size elements of elem_type, packed little-endian at elems.
    static GGUFMetaValue array(GGUFType elem_type, const void* elems, uint64_t n);
    static GGUFMetaValue array_i32(const std::vector<int32_t>& v);
    static GGUFMetaValue array_f32(const std::vector<float>& v);
    static GGUFMetaValue array_str(const std::vector<std::string>& v);
    // An array whose elements are the given values (strings or arrays), all of elem_type.
    static GGUFMetaValue array_of(GGUFType elem_type, const std::vector<GGUFMetaValue>& items);
    // A copy of a value read from another file (e.g. metadata a converter keeps).
    static GGUFMetaValue copy_of(const GGUFValue& v);

    GGUFType type() const { return type_; }
    // The bytes that follow the type id in the file.
    const std::string& payload() const { return payload_; }

private:
    GGUFMetaValue(GGUFType type, std::string payload) : type_(type), payload_(std::move(payload)) {}
    GGUFType type_;
    std::string payload_;
};

// Builds a GGUF v3 file: metadata pairs and tensors, written in the order they were added. Tensor
// data is not copied: it is read from the caller's pointers during write(), which streams.
class GGUFWriter {
public:
    // Sets key (replacing an earlier value in place). A general.alignment set here must be a u32
    // power of two and decides the data alignment.
    void set(const std::string& key, GGUFMetaValue v);
    void set_u32(const std::string& key, uint32_t v) { set(key, GGUFMetaValue::u32(v)); }
    void set_i32(const std::string& key, int32_t v) { set(key, GGUFMetaValue::i32(v)); }
    void set_u64(const std::string& key, uint64_t v) { set(key, GGUFMetaValue::u64(v)); }
    void set_f32(const std::string& key, float v) { set(key, GGUFMetaValue::f32(v)); }
    void set_bool(const std::string& key, bool v) { set(key, GGUFMetaValue::boolean(v)); }
    void set_str(const std::string& key, std::string_view v) { set(key, GGUFMetaValue::str(v)); }
    void set_array_str(const std::string& key, const std::vector<std::string>& v) {
        set(key, GGUFMetaValue::array_str(v));
    }
    // Adds a tensor of shape ne[0..n_dims) (ggml order). data holds its rows contiguously
    // (dtype_row_size(type, ne[0]) bytes each) and must stay valid until write() returns. Throws
    // mf::Error on a duplicate name, a bad shape, or ne[0] not a multiple of the block size.
    void add_tensor(const std::string& name, DType type, int n_dims, const int64_t* ne, const void* data);
    // The same, with the data produced during write(): fill(dst) writes the tensor's bytes into dst
    // (n_bytes of them, see tensor_bytes) when the writer reaches it, so a converter holds one
    // converted tensor at a time, never the whole output. fill may throw Error (the file is removed).
    using FillFn = std::function<void(void* dst, uint64_t n_bytes)>;
    void add_tensor(const std::string& name, DType type, int n_dims, const int64_t* ne, FillFn fill);
    // The byte size of a tensor of this type and shape as the writer lays it out (throws like add_tensor).
    static uint64_t tensor_bytes(const std::string& name, DType type, int n_dims, const int64_t* ne);
    // Writes the file; throws mf::Error naming path on any I/O failure (a partial file is removed).
    void write(const std::string& path) const;

    size_t n_kv() const { return kvs_.size(); }
    size_t n_tensors() const { return tensors_.size(); }

private:
    struct KV {
        std::string key;
        GGUFMetaValue value;
    };
    struct Tensor {
        std::string name;
        DType type;
        int n_dims;
        int64_t ne[GGUF_MAX_DIMS];
        uint64_t n_bytes;
        const void* data;  // or, when null, fill produces the bytes
        FillFn fill;
    };
    Tensor make_tensor(const std::string& name, DType type, int n_dims, const int64_t* ne) const;
    uint64_t alignment() const;
    std::vector<KV> kvs_;
    std::vector<Tensor> tensors_;
};

}  // namespace mf
