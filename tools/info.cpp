// `minfer info FILE.gguf`: the file's header, every metadata key with its type and value (arrays
// summarized), a table of tensors and the totals. A bad file or bad usage is one error line.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/common.h"
#include "core/gguf.h"
#include "tools/args.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer info FILE.gguf [-c N] [-b N] [-ctk TYPE] [-ctv TYPE] [--kv-window N] [--kv-sinks N]\n"
    "                             [--mla-expanded]\n"
    "\n"
    "Prints a GGUF file's version, metadata (arrays shown as type, length and first items) and\n"
    "tensor table (name, dtype, shape, bytes), then the totals: tensor count, bytes, bits per weight.\n"
    "For a model minfer runs, also the KV-cache plan those flags give: per layer the attention kind,\n"
    "window, K/V types and bytes, and the total.\n"
    "\n"
    "options:\n"
    "  -h, --help   show this help\n";

const std::vector<std::string> kPlanFlags = {"-c", "-b", "-ctk", "-ctv", "--kv-window", "--kv-sinks", "--mla-expanded"};

std::string shape_str(const GGUFTensorInfo& t) {
    std::string out = "[";
    for (int d = 0; d < t.n_dims; ++d) {
        if (d) out += ", ";
        out += std::to_string(t.ne[d]);
    }
    return out + "]";
}

std::string human_bytes(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        ++u;
    }
    return u == 0 ? strfmt("%.0f B", bytes) : strfmt("%.2f %s", bytes, units[u]);
}

void print_metadata(const GGUFFile& f) {
    size_t key_width = 0, type_width = 0;
    for (size_t i = 0; i < f.n_kv(); ++i) {
        key_width = std::max(key_width, gguf_escape(f.kv(i).key(), 200).size());
        type_width = std::max(type_width, f.kv(i).type_str().size());
    }
    key_width = std::min<size_t>(key_width, 48);
    std::printf("\nmetadata (%zu keys):\n", f.n_kv());
    for (size_t i = 0; i < f.n_kv(); ++i) {
        const GGUFValue& v = f.kv(i);
        std::printf("  %-*s  %-*s  %s\n", int(key_width), gguf_escape(v.key(), 200).c_str(), int(type_width),
                    v.type_str().c_str(), v.to_string(3, 120).c_str());
    }
}

void print_tensors(const GGUFFile& f) {
    size_t name_width = 4, shape_width = 5;
    for (size_t i = 0; i < f.n_tensors(); ++i) {
        name_width = std::max(name_width, gguf_escape(f.tensor(i).name, 200).size());
        shape_width = std::max(shape_width, shape_str(f.tensor(i)).size());
    }
    name_width = std::min<size_t>(name_width, 64);
    std::printf("\ntensors (%zu):\n", f.n_tensors());
    if (f.n_tensors() == 0) return;
    std::printf("  %-*s  %-8s  %-*s  %14s\n", int(name_width), "name", "dtype", int(shape_width), "shape", "bytes");
    for (size_t i = 0; i < f.n_tensors(); ++i) {
        const GGUFTensorInfo& t = f.tensor(i);
        std::printf("  %-*s  %-8s  %-*s  %14llu\n", int(name_width), gguf_escape(t.name, 200).c_str(),
                    dtype_name(t.type), int(shape_width), shape_str(t).c_str(),
                    static_cast<unsigned long long>(t.n_bytes));
    }
}

void print_totals(const GGUFFile& f) {
    double total_bytes = 0, total_elements = 0;
    for (size_t i = 0; i < f.n_tensors(); ++i) {
        total_bytes += double(f.tensor(i).n_bytes);
        total_elements += double(f.tensor(i).n_elements);
    }
    std::printf("\ntotal: %zu tensors, %.0f elements, %s (%.0f bytes)", f.n_tensors(), total_elements,
                human_bytes(total_bytes).c_str(), total_bytes);
    if (total_elements > 0) std::printf(", %.2f bits per weight", total_bytes * 8 / total_elements);
    std::printf("\n");
}

}  // namespace

int tool_info(int argc, char** argv) {
    const char* path = nullptr;
    std::vector<char*> flags = {argv[0]};  // the cache flags, for parse_model_args
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            if (std::find(kPlanFlags.begin(), kPlanFlags.end(), argv[i]) == kPlanFlags.end())
                throw Error(strfmt("unknown option '%s' (usage: minfer info FILE.gguf)", argv[i]));
            flags.push_back(argv[i]);
            if (std::strcmp(argv[i], "--mla-expanded") != 0 && i + 1 < argc) flags.push_back(argv[++i]);  // a value
            continue;
        }
        if (path) throw Error("expected one file (usage: minfer info FILE.gguf)");
        path = argv[i];
    }
    if (!path) throw Error("missing FILE.gguf (usage: minfer info FILE.gguf)");
    ModelArgs args = parse_model_args(int(flags.size()), flags.data(), kPlanFlags);
    args.model = path;

    const GGUFFile f = GGUFFile::open(path);
    std::printf("file:        %s\n", f.name().c_str());
    std::printf("version:     %u\n", f.version());
    std::printf("size:        %s (%llu bytes)\n", human_bytes(double(f.file_size())).c_str(),
                static_cast<unsigned long long>(f.file_size()));
    std::printf("alignment:   %llu (data section at offset %llu)\n",
                static_cast<unsigned long long>(f.alignment()), static_cast<unsigned long long>(f.data_offset()));
    std::printf("metadata:    %zu keys\n", f.n_kv());
    std::printf("tensors:     %zu\n", f.n_tensors());
    print_metadata(f);
    print_tensors(f);
    print_totals(f);
    // The KV plan, for files minfer can run (others: the reason, on one line).
    std::string plan;
    try {
        plan = describe_kv_plan(kv_plan_for(args));
    } catch (const Error& e) {
        plan = strfmt("KV cache: no plan (%s)\n", e.what());
    }
    std::printf("\n%s", plan.c_str());
    return 0;
}

}  // namespace mf
