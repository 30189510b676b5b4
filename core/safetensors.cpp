// The safetensors reader: an 8-byte header length, a JSON header (nlohmann-json) naming each tensor's
// dtype, shape and byte range, then the data; every range is checked before any byte is read.
#include "core/safetensors.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/common.h"
#include "core/gguf.h"

namespace mf {

namespace {

using Json = nlohmann::ordered_json;

constexpr uint64_t MAX_HEADER_BYTES = 100ull << 20;  // the format's own limit

// Bytes per element of the dtypes the format defines; 0 for an unknown name.
size_t dtype_bytes(const std::string& d) {
    static const std::map<std::string, size_t> sizes = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1}, {"I16", 2},
        {"U16", 2},  {"F16", 2}, {"BF16", 2}, {"I32", 4},    {"U32", 4},     {"F32", 4},     {"F64", 8},
        {"I64", 8},  {"U64", 8},
    };
    const auto it = sizes.find(d);
    return it == sizes.end() ? 0 : it->second;
}

std::string esc(const std::string& s) { return gguf_escape(s, 200); }

// A header's shape array for messages: its first elements, numbers as written and anything else by
// its JSON type. Never a recursive dump: a hostile header may nest arrays a million deep, which
// nlohmann parses without recursion but would serialize with it, past the stack.
std::string shape_text(const Json& sh) {
    std::string s = "[";
    size_t i = 0;
    for (const auto& d : sh) {
        if (i) s += ", ";
        if (i++ == 8) {
            s += "...";
            break;
        }
        s += d.is_number() ? d.dump() : esc(d.type_name());
    }
    return s + "]";
}

// A read-only mapping of a whole regular file.
struct Mapping {
    void* addr = nullptr;
    size_t size = 0;
    Mapping() = default;
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;
    ~Mapping() {
        if (addr) munmap(addr, size);
    }
};

}  // namespace

bool SafetensorsTensor::float_type(DType* out) const {
    if (dtype == "F32") return *out = DType::F32, true;
    if (dtype == "F16") return *out = DType::F16, true;
    if (dtype == "BF16") return *out = DType::BF16, true;
    return false;
}

void SafetensorsTensor::read_f32(uint64_t first, uint64_t n, float* dst) const {
    DType t;
    if (!float_type(&t))
        throw Error(strfmt("%s: tensor '%s' has dtype %s; minfer convert reads F32, F16 and BF16 tensors",
                           file ? file->c_str() : "?", esc(name).c_str(), esc(dtype).c_str()));
    MF_ASSERT(first <= n_elements && n <= n_elements - first);
    if (t == DType::F32) {
        std::memcpy(dst, data + first * 4, size_t(n) * 4);
        return;
    }
    const uint8_t* p = data + first * 2;
    for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = t == DType::F16 ? fp16_to_fp32(h) : bf16_to_fp32(h);
    }
}

std::string SafetensorsTensor::shape_str() const {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

struct SafetensorsFile::Impl {
    std::string path;
    Mapping map;
    std::vector<SafetensorsTensor> tensors;
    std::map<std::string, size_t> index;
    std::map<std::string, std::string> metadata;
};

SafetensorsFile::SafetensorsFile(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

const std::string& SafetensorsFile::path() const { return impl_->path; }
const std::vector<SafetensorsTensor>& SafetensorsFile::tensors() const { return impl_->tensors; }
const std::map<std::string, std::string>& SafetensorsFile::metadata() const { return impl_->metadata; }

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
    const auto it = impl_->index.find(name);
    return it == impl_->index.end() ? nullptr : &impl_->tensors[it->second];
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
    auto impl = std::make_unique<Impl>();
    impl->path = path;
    const auto fail = [&](const std::string& what) { return Error(path + ": " + what); };

    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw fail(strfmt("cannot open: %s", std::strerror(errno)));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw fail("not a regular file");
    }
    const uint64_t size = uint64_t(st.st_size);
    if (size < 8) {
        ::close(fd);
        throw fail(strfmt("%llu bytes is too small for a safetensors file (8-byte header length)",
                          (unsigned long long)size));
    }
    void* addr = mmap(nullptr, size_t(size), PROT_READ, MAP_PRIVATE, fd, 0);
    const int map_err = errno;
    ::close(fd);
    if (addr == MAP_FAILED) throw fail(strfmt("cannot map: %s", std::strerror(map_err)));
    impl->map.addr = addr;
    impl->map.size = size_t(size);
    const uint8_t* bytes = static_cast<const uint8_t*>(addr);

    uint64_t header_len;
    std::memcpy(&header_len, bytes, 8);
    if (header_len > size - 8)
        throw fail(strfmt("header length %llu runs past the end of the file (%llu bytes): truncated or not "
                          "a safetensors file",
                          (unsigned long long)header_len, (unsigned long long)size));
    if (header_len > MAX_HEADER_BYTES)
        throw fail(strfmt("header length %llu exceeds the format's limit of %llu bytes",
                          (unsigned long long)header_len, (unsigned long long)MAX_HEADER_BYTES));
    const uint8_t* data = bytes + 8 + header_len;
    const uint64_t data_size = size - 8 - header_len;

    const char* text = reinterpret_cast<const char*>(bytes + 8);
    check_json_depth(text, text + header_len, path + ": header");
    Json header;
    try {
        header = Json::parse(bytes + 8, bytes + 8 + header_len);
    } catch (const Json::exception& e) {
        throw fail("header is not valid JSON: " + esc(e.what()));
    }
    if (!header.is_object()) throw fail("header is not a JSON object");

    struct Range {
        uint64_t begin, end;
        size_t tensor;
    };
    std::vector<Range> ranges;
    for (const auto& [name, v] : header.items()) {
        if (name == "__metadata__") {
            if (!v.is_object()) throw fail("__metadata__ is not a JSON object");
            for (const auto& [k, mv] : v.items())
                if (mv.is_string()) impl->metadata[k] = mv.get<std::string>();
            continue;
        }
        const std::string& tensor_name = name;  // a lambda may not capture a structured binding (C++17)
        const auto bad = [&](const std::string& what) { return fail("tensor '" + esc(tensor_name) + "': " + what); };
        if (!v.is_object()) throw bad("entry is not a JSON object");
        const auto dt = v.find("dtype");
        const auto sh = v.find("shape");
        const auto off = v.find("data_offsets");
        if (dt == v.end() || !dt->is_string()) throw bad("missing string 'dtype'");
        if (sh == v.end() || !sh->is_array()) throw bad("missing array 'shape'");
        if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
            !(*off)[1].is_number_unsigned())
            throw bad("'data_offsets' is not a pair of unsigned integers");

        SafetensorsTensor t;
        t.name = name;
        t.dtype = dt->get<std::string>();
        const size_t elem = dtype_bytes(t.dtype);
        if (!elem) throw bad("unknown dtype '" + esc(t.dtype) + "'");
        uint64_t n = 1;
        for (const auto& d : *sh) {
            if (!d.is_number_unsigned()) throw bad("shape " + shape_text(*sh) + " holds a value that is not a size");
            const uint64_t x = d.get<uint64_t>();
            if (x > uint64_t(std::numeric_limits<int64_t>::max()) || (x && n > std::numeric_limits<uint64_t>::max() / x))
                throw bad("shape " + shape_text(*sh) + " overflows");
            n *= x;
            t.shape.push_back(int64_t(x));
        }
        if (n > std::numeric_limits<uint64_t>::max() / elem) throw bad("shape " + shape_text(*sh) + " overflows");
        const uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
        if (begin > end) throw bad(strfmt("data_offsets [%llu, %llu] are reversed", (unsigned long long)begin,
                                          (unsigned long long)end));
        if (end > data_size)
            throw bad(strfmt("data_offsets [%llu, %llu] run past the end of the data (%llu bytes): the file is "
                             "truncated",
                             (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_size));
        if (end - begin != n * elem)
            throw bad(strfmt("data_offsets [%llu, %llu] hold %llu bytes, but %s %s needs %llu",
                             (unsigned long long)begin, (unsigned long long)end, (unsigned long long)(end - begin),
                             t.dtype.c_str(), t.shape_str().c_str(), (unsigned long long)(n * elem)));
        t.n_elements = n;
        t.n_bytes = n * elem;
        t.data = data + begin;
        t.file = &impl->path;
        impl->index[name] = impl->tensors.size();
        ranges.push_back({begin, end, impl->tensors.size()});
        impl->tensors.push_back(std::move(t));
    }
    // As the reference implementation requires: the ranges tile the data exactly, no gap, no overlap.
    std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t at = 0;
    for (const Range& r : ranges) {
        if (r.begin != at)
            throw fail(strfmt("tensor '%s': data_offsets start at %llu, expected %llu (%s)",
                              esc(impl->tensors[r.tensor].name).c_str(), (unsigned long long)r.begin,
                              (unsigned long long)at, r.begin < at ? "overlaps another tensor" : "a gap before it"));
        at = r.end;
    }
    if (at != data_size)
        throw fail(strfmt("the tensors cover %llu of the %llu data bytes", (unsigned long long)at,
                          (unsigned long long)data_size));
    madvise(addr, size_t(size), MADV_SEQUENTIAL);
    return SafetensorsFile(std::move(impl));
}

namespace {

bool is_file(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& dir) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) throw Error(strfmt("%s: cannot open: %s", dir.c_str(), std::strerror(errno)));
    if (!S_ISDIR(st.st_mode)) throw Error(dir + ": not a directory (give the checkpoint's folder)");

    SafetensorsCheckpoint ck;
    const std::string index_path = dir + "/model.safetensors.index.json";
    std::vector<std::pair<std::string, std::string>> weight_map;  // tensor -> shard file name
    std::vector<std::string> names;
    if (is_file(index_path)) {
        std::ifstream in(index_path, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        const std::string text = ss.str();
        check_json_depth(text.data(), text.data() + text.size(), index_path);
        Json index;
        try {
            index = Json::parse(text);
        } catch (const Json::exception& e) {
            throw Error(index_path + ": not valid JSON: " + esc(e.what()));
        }
        const auto wm = index.is_object() ? index.find("weight_map") : index.end();
        if (wm == index.end() || !wm->is_object()) throw Error(index_path + ": no 'weight_map' object");
        for (const auto& [tensor, shard] : wm->items()) {
            if (!shard.is_string()) throw Error(index_path + ": weight_map entry '" + esc(tensor) + "' is not a file name");
            const std::string file = shard.get<std::string>();
            if (file.empty() || file == "." || file == ".." || file.find('/') != std::string::npos)
                throw Error(index_path + ": weight_map names '" + esc(file) + "', which is not a file in the folder");
            weight_map.emplace_back(tensor, file);
            if (std::find(names.begin(), names.end(), file) == names.end()) names.push_back(file);
        }
        if (names.empty()) throw Error(index_path + ": weight_map is empty");
        std::sort(names.begin(), names.end());
        for (const auto& n : names)
            if (!is_file(dir + "/" + n))
                throw Error(index_path + ": names shard '" + esc(n) + "', which is missing from " + dir);
    } else if (is_file(dir + "/model.safetensors")) {
        names.push_back("model.safetensors");
    } else {
        DIR* d = opendir(dir.c_str());
        if (!d) throw Error(strfmt("%s: cannot list: %s", dir.c_str(), std::strerror(errno)));
        while (const dirent* e = readdir(d)) {
            const std::string n = e->d_name;
            if (n.size() > 17 && n.compare(0, 5, "model") == 0 && n.compare(n.size() - 12, 12, ".safetensors") == 0 &&
                is_file(dir + "/" + n))
                names.push_back(n);
        }
        closedir(d);
        if (names.empty())
            throw Error(dir + ": no model.safetensors, model.safetensors.index.json or model*.safetensors file");
        std::sort(names.begin(), names.end());
    }

    ck.files_.reserve(names.size());
    std::map<std::string, size_t> file_of;  // shard name -> index in files_
    for (const auto& n : names) {
        file_of[n] = ck.files_.size();
        ck.files_.push_back(SafetensorsFile::open(dir + "/" + n));
    }
    for (const auto& f : ck.files_) {
        for (const auto& t : f.tensors()) {
            const auto [it, fresh] = ck.by_name_.emplace(t.name, &t);
            if (!fresh)
                throw Error(strfmt("%s: tensor '%s' is also in %s", f.path().c_str(), esc(t.name).c_str(),
                                   it->second->file->c_str()));
        }
    }
    if (!weight_map.empty()) {
        for (const auto& [tensor, shard] : weight_map) {
            const SafetensorsFile& f = ck.files_[file_of.at(shard)];
            if (!f.find(tensor))
                throw Error(strfmt("%s: tensor '%s' named in the index is absent from %s", index_path.c_str(),
                                   esc(tensor).c_str(), f.path().c_str()));
        }
        if (ck.by_name_.size() != weight_map.size()) {
            std::map<std::string, bool> listed;
            for (const auto& kv : weight_map) listed[kv.first] = true;
            for (const auto& [name, t] : ck.by_name_)
                if (!listed.count(name))
                    throw Error(strfmt("%s: holds tensor '%s', which %s does not list", t->file->c_str(),
                                       esc(name).c_str(), index_path.c_str()));
        }
    }
    return ck;
}

const SafetensorsTensor* SafetensorsCheckpoint::find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const SafetensorsTensor*> SafetensorsCheckpoint::tensors() const {
    std::vector<const SafetensorsTensor*> out;
    for (const auto& kv : by_name_) out.push_back(kv.second);
    return out;
}

std::vector<std::string> SafetensorsCheckpoint::files() const {
    std::vector<std::string> out;
    for (const auto& f : files_) out.push_back(f.path());
    return out;
}

}  // namespace mf
