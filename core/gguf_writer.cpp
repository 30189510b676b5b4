// The GGUF writer: metadata values serialized when they are made, tensors kept as pointers, and a
// write() that streams header, infos and aligned tensor data to disk without building the file.
#include "core/gguf.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>

#include "core/common.h"

namespace mf {

namespace {

constexpr uint32_t GGUF_MAGIC = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t GGUF_VERSION = 3;

template <typename T>
void append(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

void append_string(std::string& out, std::string_view s) {
    append<uint64_t>(out, s.size());
    out.append(s.data(), s.size());
}

template <typename T>
std::string scalar_payload(T v) {
    std::string out;
    append(out, v);
    return out;
}

// Payload of a value read from a file: what follows its type id there.
void append_copy(std::string& out, const GGUFValue& v) {
    if (v.type() == GGUFType::STRING) {
        append_string(out, v.as_str());
        return;
    }
    if (v.type() != GGUFType::ARRAY) {
        const size_t n = gguf_type_size(v.type());
        char buf[8];
        switch (v.type()) {
            case GGUFType::FLOAT32: { const float f = v.as_f32(); std::memcpy(buf, &f, 4); break; }
            case GGUFType::FLOAT64: { const double d = v.as_f64(); std::memcpy(buf, &d, 8); break; }
            case GGUFType::BOOL: buf[0] = char(v.as_bool()); break;
            default: {
                const bool is_signed = v.type() == GGUFType::INT8 || v.type() == GGUFType::INT16 ||
                                       v.type() == GGUFType::INT32 || v.type() == GGUFType::INT64;
                const uint64_t bits = is_signed ? uint64_t(v.as_i64()) : v.as_u64();
                std::memcpy(buf, &bits, n);  // little-endian: the low n bytes
            }
        }
        out.append(buf, n);
        return;
    }
    const GGUFType elem = v.elem_type();
    append<uint32_t>(out, uint32_t(elem));
    append<uint64_t>(out, v.size());
    const size_t elem_size = gguf_type_size(elem);
    if (elem_size) {
        out.append(static_cast<const char*>(v.raw_data()), v.size() * elem_size);
    } else {
        for (uint64_t i = 0; i < v.size(); ++i) append_copy(out, v.at(i));
    }
}

// A FILE that tracks its position and turns every failure into an mf::Error naming the path. A
// regular file (or a new one) is written beside the target, under a fresh name, and renamed over it
// when complete, with the old file's permissions: a process that has the old file mapped (a model
// being run) keeps reading the old bytes instead of faulting on a truncated file, and no half-written
// model ever carries the target's name. A symbolic link keeps pointing where it did: the file it
// names is the one replaced. Anything else (a device such as /dev/full) is written in place.
class OutFile {
public:
    explicit OutFile(const std::string& path) : path_(path), target_(path) {
        struct stat st;
        const bool exists = stat(path.c_str(), &st) == 0;  // (through a link)
        if (exists && !S_ISREG(st.st_mode)) {
            f_ = std::fopen(path.c_str(), "wb");
        } else {
            if (exists) {
                if (char* real = realpath(path.c_str(), nullptr)) {
                    target_ = real;
                    std::free(real);
                }
            }
            std::string name = target_ + ".partial-XXXXXX";
            const int fd = mkstemp(name.data());
            if (fd >= 0) {
                staging_ = name;
                (void)fchmod(fd, exists ? (st.st_mode & 07777) : (0666 & ~current_umask()));
                f_ = fdopen(fd, "wb");
                if (!f_) {
                    const int err = errno;
                    ::close(fd);
                    remove_partial();
                    errno = err;
                }
            }
        }
        if (!f_) throw Error(strfmt("%s: cannot create: %s", path_.c_str(), std::strerror(errno)));
        std::setvbuf(f_, nullptr, _IOFBF, 1 << 20);
    }
    OutFile(const OutFile&) = delete;
    OutFile& operator=(const OutFile&) = delete;
    ~OutFile() {
        if (!f_) return;  // closed, or a failed write already removed the file
        std::fclose(f_);  // an exception from elsewhere (a tensor's fill) left the file half-written
        remove_partial();
    }

    void write(const void* p, size_t n) {
        if (n && std::fwrite(p, 1, n, f_) != n) fail("write failed");
        pos_ += n;
    }
    template <typename T>
    void put(T v) { write(&v, sizeof(T)); }
    void put_string(std::string_view s) {
        put<uint64_t>(s.size());
        write(s.data(), s.size());
    }
    void pad_to(uint64_t alignment) {
        static const char zeros[256] = {};
        uint64_t n = (alignment - pos_ % alignment) % alignment;
        while (n) {
            const size_t k = size_t(std::min<uint64_t>(n, sizeof(zeros)));
            write(zeros, k);
            n -= k;
        }
    }
    void close() {
        // A staged file reaches the disk before it takes the target's name, so that after a crash the
        // name holds the old file or the whole new one, never a renamed file whose blocks were lost.
        const bool flushed = std::fflush(f_) == 0 && (staging_.empty() || fsync(fileno(f_)) == 0);
        const int flush_err = errno;
        const bool closed = std::fclose(f_) == 0;
        const int err = flushed ? errno : flush_err;
        f_ = nullptr;
        if (!flushed || !closed) {
            remove_partial();
            throw Error(strfmt("%s: write failed: %s", path_.c_str(), std::strerror(err)));
        }
        if (!staging_.empty() && std::rename(staging_.c_str(), target_.c_str()) != 0) {
            const int rename_err = errno;
            remove_partial();
            throw Error(strfmt("%s: cannot replace it with %s: %s", path_.c_str(), staging_.c_str(),
                               std::strerror(rename_err)));
        }
    }

private:
    [[noreturn]] void fail(const char* what) {
        const int err = errno;
        std::fclose(f_);
        f_ = nullptr;
        remove_partial();
        throw Error(strfmt("%s: %s: %s", path_.c_str(), what, std::strerror(err)));
    }
    // The process's file-creation mask (read by setting it and putting it back).
    static mode_t current_umask() {
        const mode_t mask = umask(022);
        umask(mask);
        return mask;
    }
    // A half-written model must not look like a good one; devices (e.g. /dev/full) are left alone.
    void remove_partial() {
        const int err = errno;
        if (!staging_.empty()) std::remove(staging_.c_str());
        errno = err;
    }

    std::string path_;
    std::string target_;   // the file replaced: path, or the file a link at path names
    std::string staging_;  // written there first; empty when writing path in place
    FILE* f_ = nullptr;
    uint64_t pos_ = 0;
};

}  // namespace

GGUFMetaValue GGUFMetaValue::u8(uint8_t v) { return {GGUFType::UINT8, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::i8(int8_t v) { return {GGUFType::INT8, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::u16(uint16_t v) { return {GGUFType::UINT16, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::i16(int16_t v) { return {GGUFType::INT16, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::u32(uint32_t v) { return {GGUFType::UINT32, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::i32(int32_t v) { return {GGUFType::INT32, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::u64(uint64_t v) { return {GGUFType::UINT64, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::i64(int64_t v) { return {GGUFType::INT64, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::f32(float v) { return {GGUFType::FLOAT32, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::f64(double v) { return {GGUFType::FLOAT64, scalar_payload(v)}; }
GGUFMetaValue GGUFMetaValue::boolean(bool v) { return {GGUFType::BOOL, scalar_payload<uint8_t>(v ? 1 : 0)}; }

GGUFMetaValue GGUFMetaValue::str(std::string_view v) {
    std::string out;
    append_string(out, v);
    return {GGUFType::STRING, std::move(out)};
}

GGUFMetaValue GGUFMetaValue::array(GGUFType elem_type, const void* elems, uint64_t n) {
    const size_t elem_size = gguf_type_size(elem_type);
    MF_ASSERT_MSG(elem_size > 0, "array() takes fixed-size elements; use array_str or array_of");
    std::string out;
    append<uint32_t>(out, uint32_t(elem_type));
    append<uint64_t>(out, n);
    if (n) out.append(static_cast<const char*>(elems), n * elem_size);
    return {GGUFType::ARRAY, std::move(out)};
}

GGUFMetaValue GGUFMetaValue::array_i32(const std::vector<int32_t>& v) {
    return array(GGUFType::INT32, v.data(), v.size());
}

GGUFMetaValue GGUFMetaValue::array_f32(const std::vector<float>& v) {
    return array(GGUFType::FLOAT32, v.data(), v.size());
}

GGUFMetaValue GGUFMetaValue::array_str(const std::vector<std::string>& v) {
    std::string out;
    append<uint32_t>(out, uint32_t(GGUFType::STRING));
    append<uint64_t>(out, v.size());
    for (const auto& s : v) append_string(out, s);
    return {GGUFType::ARRAY, std::move(out)};
}

GGUFMetaValue GGUFMetaValue::array_of(GGUFType elem_type, const std::vector<GGUFMetaValue>& items) {
    std::string out;
    append<uint32_t>(out, uint32_t(elem_type));
    append<uint64_t>(out, items.size());
    for (const auto& item : items) {
        MF_ASSERT_MSG(item.type() == elem_type, "array_of: every item must be of elem_type");
        out += item.payload();
    }
    return {GGUFType::ARRAY, std::move(out)};
}

GGUFMetaValue GGUFMetaValue::copy_of(const GGUFValue& v) {
    std::string out;
    append_copy(out, v);
    return {v.type(), std::move(out)};
}

void GGUFWriter::set(const std::string& key, GGUFMetaValue v) {
    for (auto& kv : kvs_) {
        if (kv.key == key) {
            kv.value = std::move(v);
            return;
        }
    }
    kvs_.push_back({key, std::move(v)});
}

GGUFWriter::Tensor GGUFWriter::make_tensor(const std::string& name, DType type, int n_dims,
                                           const int64_t* ne) const {
    for (const auto& t : tensors_) {
        if (t.name == name) throw Error(strfmt("gguf writer: duplicate tensor name '%s'", name.c_str()));
    }
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS) {
        throw Error(strfmt("gguf writer: tensor '%s' has %d dimensions (1 to %d are supported)", name.c_str(),
                           n_dims, GGUF_MAX_DIMS));
    }
    Tensor t{name, type, n_dims, {1, 1, 1, 1}, 0, nullptr, nullptr};
    uint64_t n_rows = 1;
    for (int d = 0; d < n_dims; ++d) {
        if (ne[d] < 1) {
            throw Error(strfmt("gguf writer: tensor '%s' dimension %d is %lld", name.c_str(), d,
                               static_cast<long long>(ne[d])));
        }
        t.ne[d] = ne[d];
        if (d > 0) {
            if (uint64_t(ne[d]) > uint64_t(std::numeric_limits<int64_t>::max()) / n_rows) {
                throw Error(strfmt("gguf writer: tensor '%s' element count overflows", name.c_str()));
            }
            n_rows *= uint64_t(ne[d]);
        }
    }
    const DTypeTraits& traits = dtype_traits(type);
    if (t.ne[0] % traits.block_size != 0) {
        throw Error(strfmt("gguf writer: tensor '%s' row of %lld elements is not a multiple of the %s block size %lld",
                           name.c_str(), static_cast<long long>(t.ne[0]), traits.name,
                           static_cast<long long>(traits.block_size)));
    }
    const uint64_t row_bytes = uint64_t(t.ne[0] / traits.block_size) * traits.type_size;
    if (n_rows > std::numeric_limits<uint64_t>::max() / row_bytes) {
        throw Error(strfmt("gguf writer: tensor '%s' byte size overflows", name.c_str()));
    }
    t.n_bytes = row_bytes * n_rows;
    return t;
}

uint64_t GGUFWriter::tensor_bytes(const std::string& name, DType type, int n_dims, const int64_t* ne) {
    return GGUFWriter().make_tensor(name, type, n_dims, ne).n_bytes;
}

void GGUFWriter::add_tensor(const std::string& name, DType type, int n_dims, const int64_t* ne,
                            const void* data) {
    Tensor t = make_tensor(name, type, n_dims, ne);
    MF_ASSERT_MSG(data != nullptr, "add_tensor: data is null");
    t.data = data;
    tensors_.push_back(std::move(t));
}

void GGUFWriter::add_tensor(const std::string& name, DType type, int n_dims, const int64_t* ne, FillFn fill) {
    Tensor t = make_tensor(name, type, n_dims, ne);
    MF_ASSERT_MSG(fill != nullptr, "add_tensor: fill is null");
    t.fill = std::move(fill);
    tensors_.push_back(std::move(t));
}

uint64_t GGUFWriter::alignment() const {
    for (const auto& kv : kvs_) {
        if (kv.key != "general.alignment") continue;
        if (kv.value.type() != GGUFType::UINT32) {
            throw Error(strfmt("gguf writer: general.alignment has type %s, expected u32",
                               gguf_type_name(kv.value.type())));
        }
        uint32_t a;
        std::memcpy(&a, kv.value.payload().data(), 4);
        if (a == 0 || (a & (a - 1)) != 0) {
            throw Error(strfmt("gguf writer: general.alignment %u is not a nonzero power of two", a));
        }
        return a;
    }
    return GGUF_DEFAULT_ALIGNMENT;
}

void GGUFWriter::write(const std::string& path) const {
    const uint64_t align = alignment();
    OutFile out(path);
    out.put<uint32_t>(GGUF_MAGIC);
    out.put<uint32_t>(GGUF_VERSION);
    out.put<uint64_t>(tensors_.size());
    out.put<uint64_t>(kvs_.size());
    for (const auto& kv : kvs_) {
        out.put_string(kv.key);
        out.put<uint32_t>(uint32_t(kv.value.type()));
        out.write(kv.value.payload().data(), kv.value.payload().size());
    }
    uint64_t offset = 0;
    for (const auto& t : tensors_) {
        out.put_string(t.name);
        out.put<uint32_t>(uint32_t(t.n_dims));
        for (int d = 0; d < t.n_dims; ++d) out.put<uint64_t>(uint64_t(t.ne[d]));
        out.put<uint32_t>(uint32_t(t.type));
        out.put<uint64_t>(offset);
        offset += t.n_bytes + (align - t.n_bytes % align) % align;
    }
    out.pad_to(align);
    std::vector<uint8_t> scratch;  // one produced tensor at a time
    for (const auto& t : tensors_) {
        if (t.data) {
            out.write(t.data, t.n_bytes);
        } else {
            scratch.resize(t.n_bytes);
            t.fill(scratch.data(), t.n_bytes);
            out.write(scratch.data(), t.n_bytes);
        }
        out.pad_to(align);
    }
    out.close();
}

}  // namespace mf
