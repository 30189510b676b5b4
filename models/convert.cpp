// The `minfer convert` pipeline: plan the checkpoint (convert_arch.cpp), add general.* and minfer.kv.*
// keys and the tokenizer, then stream each tensor, converted on a few threads, into OUT (GGUFWriter writes it
// beside OUT and renames it when complete).
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <thread>

#include "core/common.h"
#include "core/quants.h"
#include "models/convert_arch.h"
#include "models/kv_plan.h"

namespace mf {

namespace {

// The --type choices and the llama_ftype each records as general.file_type (the K-quants as their
// _S variants, the all-one-type ones).
struct OutType {
    DType dtype;
    uint32_t file_type;
};

const OutType kOutTypes[] = {
    {DType::F32, 0},  {DType::F16, 1},  {DType::BF16, 32}, {DType::Q8_0, 7},
    {DType::Q4_0, 2}, {DType::Q4_K, 14}, {DType::Q6_K, 18},
};

constexpr uint32_t GGML_QUANTIZATION_VERSION = 2;

std::string out_type_names() {
    std::string s;
    for (const auto& t : kOutTypes) s += (s.empty() ? "" : ", ") + std::string(dtype_name(t.dtype));
    return s;
}

const OutType& find_out_type(DType t) {
    for (const auto& o : kOutTypes)
        if (o.dtype == t) return o;
    throw Error(strfmt("output type %s is not supported (types: %s)", dtype_name(t), out_type_names().c_str()));
}

// gguf-py's size label: "135M", "1.2B"; "64x1.6B" for mixtures of experts.
std::string rounded_count(double n) {
    double scaled = n * 1e-3;
    const char* suffix = "K";
    if (n > 1e12) scaled = n * 1e-12, suffix = "T";
    else if (n > 1e9) scaled = n * 1e-9, suffix = "B";
    else if (n > 1e6) scaled = n * 1e-6, suffix = "M";
    const long long r = std::llround(scaled);
    const int digits = r == 0 ? 0 : int(std::to_string(r).size());
    return strfmt("%.*f%s", std::max(2 - digits, 0), scaled, suffix);
}

std::string size_label(const std::vector<ConvertTensor>& ts) {
    double shared = 0, expert = 0;
    int64_t n_expert = 0;
    for (const auto& t : ts) {
        const double n = double(t.ne[0]) * double(t.n_rows());
        if (t.is_expert) {
            expert += n / double(t.ne[2]);
            n_expert = t.ne[2];
        } else {
            shared += n;
        }
    }
    return n_expert ? strfmt("%lldx%s", (long long)n_expert, rounded_count(shared + expert).c_str())
                    : rounded_count(shared);
}

std::string base_name(const std::string& dir) {
    std::string d = dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    const size_t slash = d.find_last_of('/');
    return slash == std::string::npos ? d : d.substr(slash + 1);
}

// Converts rows [0, n_rows) of t to type into dst on n_threads threads.
void produce(const ConvertTensor& t, DType type, uint8_t* dst, int n_threads) {
    const int64_t n_rows = t.n_rows();
    const size_t row_bytes = dtype_row_size(type, t.ne[0]);
    const FromFloatFn from_float = dtype_traits(type).from_float;
    const int n = int(std::max<int64_t>(1, std::min<int64_t>(n_threads, n_rows)));
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
    const auto work = [&](int ith) {
        try {
            std::vector<float> row(size_t(t.ne[0]));
            for (int64_t r = n_rows * ith / n; r < n_rows * (ith + 1) / n; ++r) {
                t.row(r, row.data());
                from_float(row.data(), dst + size_t(r) * row_bytes, t.ne[0]);
            }
        } catch (...) {
            errors[size_t(ith)] = std::current_exception();
        }
    };
    std::vector<std::thread> threads;
    for (int ith = 1; ith < n; ++ith) threads.emplace_back(work, ith);
    work(0);
    for (auto& th : threads) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

}  // namespace

void convert_hf_checkpoint_with(const ConvertOptions& opts, const TokenizerFn& tokenizer) {
    if (opts.hf_dir.empty()) throw Error("no checkpoint folder given");
    if (opts.out_path.empty()) throw Error("no output file given");
    const OutType& out_type = find_out_type(opts.type);
    DType kv_dtype = DType::F16;
    if (!opts.kv_type.empty()) {
        // only the cache types minfer runs on every backend (a file must not ask for one it refuses)
        static const DType kv_types[] = {DType::F16, DType::Q8_0, DType::Q4_0};
        if (!dtype_from_name(opts.kv_type.c_str(), &kv_dtype) ||
            std::find(std::begin(kv_types), std::end(kv_types), kv_dtype) == std::end(kv_types))
            throw Error("unknown KV cache type '" + opts.kv_type + "' (supported: " + supported_kv_types() + ")");
    }
    struct stat st;
    if (stat(opts.out_path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        throw Error(opts.out_path + ": not a regular file");

    ConvertPlan plan = plan_hf_conversion(opts.hf_dir);

    GGUFWriter w;
    w.set_str("general.architecture", plan.arch);
    w.set_str("general.type", "model");
    w.set_str("general.name", base_name(opts.hf_dir));
    w.set_str("general.size_label", size_label(plan.tensors));
    for (const auto& [key, value] : plan.kv) w.set(key, value);
    w.set_u32("general.file_type", out_type.file_type);
    w.set_u32("general.quantization_version", GGML_QUANTIZATION_VERSION);
    if (!opts.kv_type.empty()) {
        w.set_str("minfer.kv.type_k", dtype_name(kv_dtype));
        w.set_str("minfer.kv.type_v", dtype_name(kv_dtype));
    }
    if (opts.kv_window >= 0) w.set_u32("minfer.kv.window", uint32_t(std::min<int64_t>(opts.kv_window, UINT32_MAX)));
    if (opts.kv_sinks >= 0) w.set_u32("minfer.kv.sinks", uint32_t(std::min<int64_t>(opts.kv_sinks, UINT32_MAX)));
    tokenizer(w);

    // Weight matrices take the requested type; a row its blocks cannot hold falls back to f16, as
    // llama.cpp's converter does.
    const int64_t block = dtype_traits(opts.type).block_size;
    std::map<int64_t, size_t> fallen;  // row length -> tensors written as f16
    const int n_threads = int(std::max(1u, std::thread::hardware_concurrency()));
    const size_t n_tensors = plan.tensors.size();
    auto done = std::make_shared<std::pair<size_t, uint64_t>>(0, 0);  // tensors, bytes written
    for (const ConvertTensor& t : plan.tensors) {
        DType type = t.keep_f32 ? DType::F32 : opts.type;
        if (type == opts.type && t.ne[0] % block != 0) {
            type = DType::F16;
            ++fallen[t.ne[0]];
        }
        const ConvertTensor* tp = &t;
        w.add_tensor(t.name, type, t.n_dims, t.ne, [tp, type, n_threads, n_tensors, done, &opts](void* dst, uint64_t n_bytes) {
            produce(*tp, type, static_cast<uint8_t*>(dst), n_threads);
            done->first += 1;
            done->second += n_bytes;
            if (opts.progress) opts.progress(done->first, n_tensors, done->second);
        });
    }
    for (const auto& [row, n] : fallen)
        std::fprintf(stderr, "minfer convert: %s needs rows that are a multiple of %lld elements: %zu tensor%s with rows of %lld written as f16\n",
                     dtype_name(opts.type), (long long)block, n, n == 1 ? "" : "s", (long long)row);

    w.write(opts.out_path);  // beside it first, then renamed: no partial file under its name
}

}  // namespace mf
