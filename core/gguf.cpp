// The GGUF reader: maps a file, validates every count, length, offset and shape against the bytes
// that are really there, and indexes metadata and tensors for the typed getters in gguf.h.
#include "core/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "core/common.h"

namespace mf {

namespace {

constexpr uint32_t GGUF_MAGIC = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr size_t MIN_KV_BYTES = 8 + 4 + 1;   // empty key, type id, one-byte value
constexpr size_t MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8;  // empty name, n_dims 0, type, offset
constexpr size_t MIN_STRING_BYTES = 8;
constexpr size_t MIN_ARRAY_BYTES = 4 + 8;    // element type, count

struct MappedFile {
    void* addr = nullptr;
    size_t size = 0;
    MappedFile() = default;
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;
    ~MappedFile() {
        if (addr) munmap(addr, size);
    }
};

// Untrusted bytes (a key, a tensor name, a magic) made safe for a one-line message.
std::string printable(std::string_view s) { return gguf_escape(s, 64); }

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// a * b when it fits in limit; false on overflow.
bool mul_within(uint64_t a, uint64_t b, uint64_t limit, uint64_t* out) {
    if (a != 0 && b > limit / a) return false;
    *out = a * b;
    return true;
}

}  // namespace

struct GGUFFile::Impl {
    std::string name;
    std::unique_ptr<MappedFile> mapping;  // null when parsing the caller's memory
    const uint8_t* base = nullptr;
    uint64_t size = 0;
    uint32_t version = 0;
    uint64_t alignment = GGUF_DEFAULT_ALIGNMENT;
    uint64_t data_offset = 0;
    std::vector<GGUFValue> kvs;
    std::unordered_map<std::string_view, size_t> kv_index;
    std::vector<GGUFTensorInfo> tensors;
    std::unordered_map<std::string_view, size_t> tensor_index;
    // Backing storage for the views inside values; inner buffers never move once filled.
    std::vector<std::vector<std::string_view>> string_pool;
    std::vector<std::vector<GGUFValue>> item_pool;
};

// Walks the file once, front to back; every read is checked against the bytes left.
class GGUFParser {
public:
    explicit GGUFParser(GGUFFile::Impl& f) : f_(f) {}

    void run() {
        if (f_.size == 0) fail(0, "file is empty (expected a GGUF header)");
        const uint32_t magic = read_u32("magic");
        if (magic != GGUF_MAGIC) {
            const std::string_view bytes(reinterpret_cast<const char*>(f_.base), 4);
            fail(0, strfmt("not a GGUF file (magic '%s')", printable(bytes).c_str()));
        }
        f_.version = read_u32("version");
        if (f_.version != 2 && f_.version != 3) {
            const bool big_endian = (f_.version & 0xffff) == 0 && f_.version != 0;
            fail(4, strfmt("unsupported GGUF version %u (minfer reads little-endian versions 2 and 3%s)",
                           f_.version, big_endian ? "; this looks like a big-endian file" : ""));
        }
        const uint64_t n_tensors = read_u64("tensor count");
        const uint64_t n_kv = read_u64("metadata key count");
        if (n_tensors > left() / MIN_TENSOR_INFO_BYTES) {
            fail(8, strfmt("tensor count %llu exceeds what the file can hold", ull(n_tensors)));
        }
        if (n_kv > left() / MIN_KV_BYTES) {
            fail(16, strfmt("metadata key count %llu exceeds what the file can hold", ull(n_kv)));
        }
        read_metadata(n_kv);
        read_alignment();
        read_tensor_infos(n_tensors);
        const uint64_t info_end = pos_;
        f_.data_offset = info_end + (f_.alignment - info_end % f_.alignment) % f_.alignment;
        check_tensor_data();
    }

private:
    static unsigned long long ull(uint64_t v) { return static_cast<unsigned long long>(v); }

    [[noreturn]] void fail(uint64_t at, const std::string& what) const {
        throw Error(strfmt("%s: offset %llu: %s", f_.name.c_str(), ull(at), what.c_str()));
    }

    uint64_t left() const { return f_.size - pos_; }

    void need(uint64_t n, const char* what) const {
        if (n > left()) {
            fail(pos_, strfmt("unexpected end of file reading %s (need %llu bytes, %llu left)", what,
                              ull(n), ull(left())));
        }
    }

    const uint8_t* take(uint64_t n, const char* what) {
        need(n, what);
        const uint8_t* p = f_.base + pos_;
        pos_ += n;
        return p;
    }

    uint32_t read_u32(const char* what) {
        uint32_t v;
        std::memcpy(&v, take(4, what), 4);
        return v;
    }

    uint64_t read_u64(const char* what) {
        uint64_t v;
        std::memcpy(&v, take(8, what), 8);
        return v;
    }

    std::string_view read_string(const char* what) {
        const uint64_t at = pos_;
        const uint64_t len = read_u64(what);
        if (len > left()) {
            fail(at, strfmt("%s length %llu exceeds the %llu bytes left in the file", what, ull(len),
                            ull(left())));
        }
        return std::string_view(reinterpret_cast<const char*>(take(len, what)), len);
    }

    GGUFType read_type(std::string_view key, const char* what) {
        const uint64_t at = pos_;
        const uint32_t id = read_u32(what);
        if (!gguf_type_is_known(id)) {
            fail(at, strfmt("key '%s' has unknown %s %u", printable(key).c_str(), what, id));
        }
        return static_cast<GGUFType>(id);
    }

    void read_metadata(uint64_t n_kv) {
        f_.kvs.reserve(n_kv);
        kv_offsets_.reserve(n_kv);
        for (uint64_t i = 0; i < n_kv; ++i) {
            const uint64_t key_at = pos_;
            const std::string_view key = read_string("key");
            const GGUFType type = read_type(key, "value type");
            kv_offsets_.push_back(pos_);
            f_.kvs.push_back(read_value(type, key, 0));
            if (!f_.kv_index.emplace(key, f_.kvs.size() - 1).second) {
                fail(key_at, strfmt("duplicate key '%s'", printable(key).c_str()));
            }
        }
    }

    GGUFValue read_value(GGUFType type, std::string_view key, int depth) {
        GGUFValue v;
        v.type_ = type;
        v.key_ = key;
        v.source_ = &f_.name;
        if (type == GGUFType::STRING) {
            const std::string_view s = read_string("string value");
            v.data_ = reinterpret_cast<const uint8_t*>(s.data());
            v.count_ = s.size();
        } else if (type == GGUFType::ARRAY) {
            read_array(v, key, depth);
        } else {
            v.data_ = take(gguf_type_size(type), gguf_type_name(type));
        }
        return v;
    }

    void read_array(GGUFValue& v, std::string_view key, int depth) {
        const uint64_t at = pos_;
        if (depth >= GGUF_MAX_ARRAY_DEPTH) {
            fail(at, strfmt("key '%s': arrays nested deeper than %d levels", printable(key).c_str(),
                            GGUF_MAX_ARRAY_DEPTH));
        }
        v.elem_type_ = read_type(key, "array element type");
        const uint64_t count_at = pos_;
        v.count_ = read_u64("array count");
        const size_t elem_size = gguf_type_size(v.elem_type_);
        const size_t min_size = elem_size ? elem_size
                              : v.elem_type_ == GGUFType::STRING ? MIN_STRING_BYTES : MIN_ARRAY_BYTES;
        if (v.count_ > left() / min_size) {
            fail(count_at, strfmt("key '%s': array count %llu of %s elements exceeds the %llu bytes left "
                                  "in the file",
                                  printable(key).c_str(), ull(v.count_), gguf_type_name(v.elem_type_),
                                  ull(left())));
        }
        if (elem_size) {
            v.data_ = take(v.count_ * elem_size, "array elements");
        } else if (v.elem_type_ == GGUFType::STRING) {
            std::vector<std::string_view> strs(v.count_);
            for (auto& s : strs) s = read_string("string element");
            v.strs_ = strs.data();
            f_.string_pool.push_back(std::move(strs));
        } else {
            std::vector<GGUFValue> items(v.count_);
            for (auto& item : items) item = read_value(GGUFType::ARRAY, key, depth + 1);
            v.items_ = items.data();
            f_.item_pool.push_back(std::move(items));
        }
    }

    void read_alignment() {
        const auto it = f_.kv_index.find("general.alignment");
        if (it == f_.kv_index.end()) return;
        const GGUFValue& v = f_.kvs[it->second];
        const uint64_t at = kv_offsets_[it->second];
        if (v.type() != GGUFType::UINT32) {
            fail(at, strfmt("general.alignment has type %s, expected u32", v.type_str().c_str()));
        }
        const uint32_t alignment = v.as_u32();
        if (!is_pow2(alignment)) {
            fail(at, strfmt("general.alignment %u is not a nonzero power of two", alignment));
        }
        f_.alignment = alignment;
    }

    void read_tensor_infos(uint64_t n_tensors) {
        f_.tensors.reserve(n_tensors);
        for (uint64_t i = 0; i < n_tensors; ++i) {
            const uint64_t name_at = pos_;
            const std::string_view name = read_string("tensor name");
            const std::string shown = printable(name);
            GGUFTensorInfo t;
            t.name = std::string(name);
            const uint64_t dims_at = pos_;
            const uint32_t n_dims = read_u32("tensor dimension count");
            if (n_dims > GGUF_MAX_DIMS) {
                fail(dims_at, strfmt("tensor '%s' has %u dimensions (at most %d are supported)",
                                     shown.c_str(), n_dims, GGUF_MAX_DIMS));
            }
            t.n_dims = int(n_dims);
            uint64_t n_elements = 1;
            for (uint32_t d = 0; d < n_dims; ++d) {
                const uint64_t dim_at = pos_;
                const uint64_t ne = read_u64("tensor dimension");
                if (ne == 0) fail(dim_at, strfmt("tensor '%s' dimension %u is 0", shown.c_str(), d));
                if (!mul_within(n_elements, ne, uint64_t(std::numeric_limits<int64_t>::max()), &n_elements)) {
                    fail(dim_at, strfmt("tensor '%s' element count overflows at dimension %u (%llu)",
                                        shown.c_str(), d, ull(ne)));
                }
                t.ne[d] = int64_t(ne);
            }
            t.n_elements = int64_t(n_elements);
            const uint64_t type_at = pos_;
            const uint32_t type_id = read_u32("tensor type");
            if (!dtype_is_known(type_id)) {
                fail(type_at, strfmt("tensor '%s' has unknown type id %u", shown.c_str(), type_id));
            }
            t.type = static_cast<DType>(type_id);
            const DTypeTraits& traits = dtype_traits(t.type);
            if (t.ne[0] % traits.block_size != 0) {
                fail(dims_at, strfmt("tensor '%s' row of %lld elements is not a multiple of the %s block size %lld",
                                     shown.c_str(), static_cast<long long>(t.ne[0]), traits.name,
                                     static_cast<long long>(traits.block_size)));
            }
            const uint64_t n_blocks = n_elements / uint64_t(traits.block_size);
            if (!mul_within(n_blocks, traits.type_size, std::numeric_limits<uint64_t>::max(), &t.n_bytes)) {
                fail(dims_at, strfmt("tensor '%s' byte size overflows", shown.c_str()));
            }
            const uint64_t offset_at = pos_;
            t.offset = read_u64("tensor data offset");
            if (t.offset % f_.alignment != 0) {
                fail(offset_at, strfmt("tensor '%s' data offset %llu is not a multiple of the alignment %llu",
                                       shown.c_str(), ull(t.offset), ull(f_.alignment)));
            }
            f_.tensors.push_back(std::move(t));
            offset_offsets_.push_back(offset_at);
            if (!f_.tensor_index.emplace(name, f_.tensors.size() - 1).second) {
                fail(name_at, strfmt("duplicate tensor name '%s'", shown.c_str()));
            }
        }
    }

    // Runs after the data section start is known: every tensor must lie inside the file.
    void check_tensor_data() {
        for (size_t i = 0; i < f_.tensors.size(); ++i) {
            GGUFTensorInfo& t = f_.tensors[i];
            const uint64_t data_size = f_.data_offset <= f_.size ? f_.size - f_.data_offset : 0;
            if (f_.data_offset > f_.size || t.offset > data_size || t.n_bytes > data_size - t.offset) {
                fail(offset_offsets_[i],
                     strfmt("tensor '%s' data (offset %llu, %llu bytes) runs past the end of the file "
                            "(the data section at %llu holds %llu bytes)",
                            printable(t.name).c_str(), ull(t.offset), ull(t.n_bytes), ull(f_.data_offset),
                            ull(data_size)));
            }
            t.data = f_.base + f_.data_offset + t.offset;
        }
    }

    GGUFFile::Impl& f_;
    uint64_t pos_ = 0;
    std::vector<uint64_t> kv_offsets_;      // file offset of each value, for later messages
    std::vector<uint64_t> offset_offsets_;  // file offset of each tensor's data offset field
};

GGUFFile::GGUFFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GGUFFile::GGUFFile(GGUFFile&&) noexcept = default;
GGUFFile& GGUFFile::operator=(GGUFFile&&) noexcept = default;
GGUFFile::~GGUFFile() = default;

GGUFFile GGUFFile::parse(const void* data, size_t size, const std::string& name) {
    auto impl = std::make_unique<Impl>();
    impl->name = name;
    impl->base = static_cast<const uint8_t*>(data);
    impl->size = size;
    GGUFParser(*impl).run();
    return GGUFFile(std::move(impl));
}

GGUFFile GGUFFile::open(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error(strfmt("%s: cannot open: %s", path.c_str(), std::strerror(errno)));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        throw Error(strfmt("%s: cannot stat: %s", path.c_str(), std::strerror(err)));
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error(strfmt("%s: not a regular file", path.c_str()));
    }
    auto mapping = std::make_unique<MappedFile>();
    if (st.st_size > 0) {
        void* addr = mmap(nullptr, size_t(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            throw Error(strfmt("%s: cannot map: %s", path.c_str(), std::strerror(err)));
        }
        mapping->addr = addr;
        mapping->size = size_t(st.st_size);
    }
    ::close(fd);
    auto impl = std::make_unique<Impl>();
    impl->name = path;
    impl->base = static_cast<const uint8_t*>(mapping->addr);
    impl->size = mapping->size;
    impl->mapping = std::move(mapping);
    GGUFParser(*impl).run();
    return GGUFFile(std::move(impl));
}

void GGUFFile::prefetch() const {
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif
    if (!impl_->mapping || !impl_->mapping->addr) return;  // parsed memory, or an empty file
    // Best effort: an older kernel refuses the advice, and the pages then fault in as they are read.
    (void)madvise(impl_->mapping->addr, impl_->mapping->size, MADV_POPULATE_READ);
}

const std::string& GGUFFile::name() const { return impl_->name; }
uint32_t GGUFFile::version() const { return impl_->version; }
uint64_t GGUFFile::file_size() const { return impl_->size; }
uint64_t GGUFFile::alignment() const { return impl_->alignment; }
uint64_t GGUFFile::data_offset() const { return impl_->data_offset; }
size_t GGUFFile::n_kv() const { return impl_->kvs.size(); }
size_t GGUFFile::n_tensors() const { return impl_->tensors.size(); }

const GGUFValue& GGUFFile::kv(size_t i) const {
    MF_ASSERT(i < impl_->kvs.size());
    return impl_->kvs[i];
}

const GGUFValue* GGUFFile::find(std::string_view key) const {
    const auto it = impl_->kv_index.find(key);
    return it == impl_->kv_index.end() ? nullptr : &impl_->kvs[it->second];
}

const GGUFTensorInfo& GGUFFile::tensor(size_t i) const {
    MF_ASSERT(i < impl_->tensors.size());
    return impl_->tensors[i];
}

const GGUFTensorInfo* GGUFFile::find_tensor(std::string_view name) const {
    const auto it = impl_->tensor_index.find(name);
    return it == impl_->tensor_index.end() ? nullptr : &impl_->tensors[it->second];
}

const GGUFValue& GGUFFile::require(std::string_view key) const {
    const GGUFValue* v = find(key);
    if (!v) throw Error(strfmt("%s: missing metadata key '%s'", impl_->name.c_str(), printable(key).c_str()));
    return *v;
}

uint32_t GGUFFile::get_u32(std::string_view key) const { return require(key).as_u32(); }
int32_t GGUFFile::get_i32(std::string_view key) const { return require(key).as_i32(); }
uint64_t GGUFFile::get_u64(std::string_view key) const { return require(key).as_u64(); }
float GGUFFile::get_f32(std::string_view key) const { return require(key).as_f32(); }
bool GGUFFile::get_bool(std::string_view key) const { return require(key).as_bool(); }
std::string GGUFFile::get_str(std::string_view key) const { return std::string(require(key).as_str()); }

uint32_t GGUFFile::get_u32(std::string_view key, uint32_t fallback) const {
    const GGUFValue* v = find(key);
    return v ? v->as_u32() : fallback;
}

int32_t GGUFFile::get_i32(std::string_view key, int32_t fallback) const {
    const GGUFValue* v = find(key);
    return v ? v->as_i32() : fallback;
}

uint64_t GGUFFile::get_u64(std::string_view key, uint64_t fallback) const {
    const GGUFValue* v = find(key);
    return v ? v->as_u64() : fallback;
}

float GGUFFile::get_f32(std::string_view key, float fallback) const {
    const GGUFValue* v = find(key);
    return v ? v->as_f32() : fallback;
}

bool GGUFFile::get_bool(std::string_view key, bool fallback) const {
    const GGUFValue* v = find(key);
    return v ? v->as_bool() : fallback;
}

std::string GGUFFile::get_str(std::string_view key, const std::string& fallback) const {
    const GGUFValue* v = find(key);
    return v ? std::string(v->as_str()) : fallback;
}

const GGUFValue& GGUFFile::get_array(std::string_view key) const {
    const GGUFValue& v = require(key);
    if (!v.is_array()) {
        throw Error(strfmt("%s: key '%s' has type %s, expected an array", impl_->name.c_str(),
                           printable(key).c_str(), v.type_str().c_str()));
    }
    return v;
}

const GGUFValue& GGUFFile::get_array(std::string_view key, GGUFType elem_type) const {
    const GGUFValue& v = require(key);
    if (!v.is_array() || v.elem_type() != elem_type) {
        throw Error(strfmt("%s: key '%s' has type %s, expected arr[%s]", impl_->name.c_str(),
                           printable(key).c_str(), v.type_str().c_str(), gguf_type_name(elem_type)));
    }
    return v;
}

}  // namespace mf
