// `minfer attn-lab`: builds MHA, GQA-k, MQA and MLA-r variants of one shape (models/attn_lab.h),
// counts their parameters and KV bytes, measures decode/prefill speed by context length, and writes
// a markdown table, a JSON file and PNG charts (tools/plot.h). Flags, measuring and printing.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <iterator>
#include <memory>
#include <random>
#include <thread>

#include "core/common.h"
#include "core/gguf.h"
#include "models/attn_lab.h"
#include "models/convert_attn.h"
#include "models/perplexity.h"
#include "models/session.h"
#include "tools/args.h"
#include "tools/plot.h"
#include "tools/tools.h"

namespace mf {

namespace {

const char* kUsage =
    "usage: minfer attn-lab [--shape NAME | -m MODEL.gguf] [--gqa 2,4] [--mla 256,512]\n"
    "                       [--ctx 128,512,2048,8192,32768] [-n 32] [-r 2] [--type q4_0] [options]\n"
    "\n"
    "Compares attention designs on one base shape with equal hidden size, heads and FFN: MHA\n"
    "(n_head_kv = n_head), GQA-k (n_head_kv = n_head / k), MQA (n_head_kv = 1) and MLA-r (DeepSeek-V2's\n"
    "latent attention of rank r, rope dims min(64, head_dim / 2), every layer dense). Each variant is\n"
    "written as a random-weight GGUF (like `minfer synth`) and reports attention and total parameters,\n"
    "KV bytes per token for f16, q8_0 and q4_0 caches, and decode and prefill tokens/s after CTX cached\n"
    "tokens (decode -n tokens; prefill of the last min(CTX, 512) tokens), mean +- sd over -r\n"
    "repetitions after a warm-up, with effective bandwidth. Writes DIR/attn-lab.md, DIR/attn-lab.json\n"
    "and DIR/attn-lab-{params,kv,decode,prefill}.png.\n"
    "\n"
    "options:\n"
    "  --shape NAME        the base shape (default llama-1b; `minfer synth --help` lists them)\n"
    "  -m FILE             take the base shape from a llama/qwen2 GGUF instead (its weights are not used)\n"
    "  --gqa LIST          query heads per KV head for the GQA variants (default 2,4; non-divisors skipped)\n"
    "  --mla LIST          latent ranks of the MLA variants (default 256,512)\n"
    "  --ctx LIST          context lengths (default 128,512,2048,8192,32768)\n"
    "  -n N                decode tokens per measurement (default 32)\n"
    "  -r N                repetitions after the warm-up (default 2)\n"
    "  --type TYPE         the weights' type (default q4_0)\n"
    "  --kv-type TYPE      the cache type of the speed runs: f16, q8_0, q4_0 (default f16)\n"
    "  --layers N          layer count override (quick runs)\n"
    "  --device DEV        auto, cpu or cuda (default auto)\n"
    "  -t N                CPU threads (default: all)\n"
    "  --max-seconds S     time budget of one measurement; longer ones are reported as skipped\n"
    "                      (default 20 on the CPU, none on a GPU; 0: none)\n"
    "  --max-kv-gib G      skip context lengths whose cache exceeds G GiB (default: a quarter of\n"
    "                      RAM on the CPU, 64 on a GPU)\n"
    "  --seed N            seed of the weights (default 1)\n"
    "  --quality-model F   a real llama/qwen2 model converted to each variant (`minfer convert --attn`) for\n"
    "                      perplexity and KL vs the original (default ~/.cache/minfer/SmolLM2-135M-\n"
    "                      Instruct.Q4_1.gguf when present; none: skip)\n"
    "  --quality-text F    its text (default tests/data/botchan.txt); --quality-chunks N chunks of 512\n"
    "                      tokens (default 2)\n"
    "  -o DIR              output folder (default docs/attention)\n"
    "  --work-dir DIR      where the variant files are written (default: a temporary folder)\n"
    "  -h, --help          show this help\n";

struct LabArgs {
    std::string shape, model_path;
    std::vector<uint32_t> gqa = {2, 4}, mla = {256, 512}, ctx = {128, 512, 2048, 8192, 32768};
    int n_gen = 32, reps = 2, n_threads = 0;
    uint32_t n_layer = 0;
    uint64_t seed = 1;
    std::string type = "q4_0", kv_type = "f16", device = "auto", out_dir = "docs/attention", work_dir;
    std::string quality_model = "default", quality_text = "tests/data/botchan.txt";
    uint32_t quality_chunks = 2;
    double max_seconds = -1, max_kv_gib = -1;  // -1: the device's default
    std::string command;                      // as typed, for the report
};

unsigned long long to_uint(const std::string& flag, const std::string& v, unsigned long long lo, unsigned long long hi) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end || errno || x < lo || x > hi)
        throw Error(strfmt("%s expects an integer in %llu..%llu, got '%s'", flag.c_str(), lo, hi, v.c_str()));
    return x;
}

double to_double(const std::string& flag, const std::string& v) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end || !(x >= 0) || !std::isfinite(x))
        throw Error(strfmt("%s expects a number >= 0, got '%s'", flag.c_str(), v.c_str()));
    return x;
}

std::vector<uint32_t> to_list(const std::string& flag, const std::string& v, unsigned long long lo, unsigned long long hi) {
    std::vector<uint32_t> out;
    size_t start = 0;
    while (start <= v.size() && !v.empty()) {
        const size_t comma = v.find(',', start);
        const std::string item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        out.push_back(uint32_t(to_uint(flag, item, lo, hi)));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

LabArgs parse(int argc, char** argv) {
    LabArgs a;
    a.command = "minfer";
    for (int i = 0; i < argc; ++i) a.command += std::string(" ") + argv[i];
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        const auto value = [&]() -> std::string {
            if (i + 1 >= argc) throw Error("option " + arg + " needs a value (see --help)");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") a.shape = "--help";
        else if (arg == "--shape") a.shape = value();
        else if (arg == "-m") a.model_path = value();
        else if (arg == "--gqa") a.gqa = to_list(arg, value(), 1, 1024);
        else if (arg == "--mla") a.mla = to_list(arg, value(), 1, 4096);
        else if (arg == "--ctx") a.ctx = to_list(arg, value(), 1, 1 << 20);
        else if (arg == "-n") a.n_gen = int(to_uint(arg, value(), 1, 1 << 16));
        else if (arg == "-r") a.reps = int(to_uint(arg, value(), 1, 1000));
        else if (arg == "--type") a.type = value();
        else if (arg == "--kv-type") a.kv_type = value();
        else if (arg == "--layers") a.n_layer = uint32_t(to_uint(arg, value(), 1, 4096));
        else if (arg == "--device") a.device = value();
        else if (arg == "-t") a.n_threads = int(to_uint(arg, value(), 1, 1024));
        else if (arg == "--max-seconds") a.max_seconds = to_double(arg, value());
        else if (arg == "--max-kv-gib") a.max_kv_gib = to_double(arg, value());
        else if (arg == "--seed") a.seed = to_uint(arg, value(), 0, UINT64_MAX);
        else if (arg == "-o") a.out_dir = value();
        else if (arg == "--quality-model") a.quality_model = value();
        else if (arg == "--quality-text") a.quality_text = value();
        else if (arg == "--quality-chunks") a.quality_chunks = uint32_t(to_uint(arg, value(), 1, 1000));
        else if (arg == "--work-dir") a.work_dir = value();
        else throw Error("unknown option '" + arg + "' (see --help)");
    }
    if (a.device != "auto" && a.device != "cpu" && a.device != "cuda")
        throw Error("--device expects auto, cpu or cuda, got '" + a.device + "'");
    if (a.kv_type != "f16" && a.kv_type != "q8_0" && a.kv_type != "q4_0")
        throw Error("--kv-type expects f16, q8_0 or q4_0, got '" + a.kv_type + "'");
    if (!a.shape.empty() && a.shape != "--help" && !a.model_path.empty()) throw Error("give --shape or -m, not both");
    if (a.ctx.empty()) throw Error("--ctx needs at least one context length");
    std::sort(a.ctx.begin(), a.ctx.end());
    a.ctx.erase(std::unique(a.ctx.begin(), a.ctx.end()), a.ctx.end());
    return a;
}

double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The first line a command prints, or "" (device names, the commit).
std::string first_line_of(const char* cmd) {
    FILE* p = popen(cmd, "r");
    if (!p) return "";
    char buf[512] = {0};
    const bool got = std::fgets(buf, sizeof buf, p) != nullptr;
    pclose(p);
    std::string s = got ? buf : "";
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string device_description(const std::string& backend, int n_threads) {
    if (backend == "cpu") {
        std::ifstream in("/proc/cpuinfo");
        std::string line, model = "unknown CPU";
        while (std::getline(in, line))
            if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
                model = line.substr(line.find(':') + 2);
                break;
            }
        const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
        return strfmt("CPU: %s, %d threads", model.c_str(), n_threads > 0 ? n_threads : int(hw));
    }
    const std::string gpu = first_line_of("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null");
    return "GPU: " + (gpu.empty() ? backend : gpu);
}

// The base model's dimensions from a llama/qwen2 file: what synth needs to write its variants.
SynthDims dims_from_file(const std::string& path) {
    const GGUFFile f = GGUFFile::open(path);
    const HParams hp = load_hparams(f);
    if (hp.arch != "llama" && hp.arch != "qwen2")
        throw Error(path + ": attn-lab takes llama or qwen2 files as a base (this one is " + hp.arch + ")");
    if (hp.head_dim_k != hp.n_embd / hp.n_head || hp.head_dim_v != hp.head_dim_k)
        throw Error(path + ": heads whose size is not embedding_length / head_count are not supported as a base");
    for (uint32_t kv : hp.n_head_kv)
        if (kv != hp.n_head_kv[0]) throw Error(path + ": a KV head count that varies by layer is not supported as a base");
    SynthDims d;
    d.arch = hp.arch;
    d.n_embd = hp.n_embd, d.n_layer = hp.n_layer, d.n_head = hp.n_head, d.n_head_kv = hp.n_head_kv[0];
    d.n_ff = hp.n_ff, d.n_vocab = hp.n_vocab, d.n_ctx_train = hp.n_ctx_train;
    d.rope_freq_base = hp.rope_freq_base, d.norm_eps = hp.norm_eps;
    d.tied = f.find_tensor("output.weight") == nullptr;
    d.qkv_bias = hp.qkv_bias;
    return d;
}

struct Stat {
    double mean = NAN, sd = NAN;
};

Stat stats(const std::vector<double>& xs) {
    Stat s;
    if (xs.empty()) return s;
    s.mean = 0;
    for (double x : xs) s.mean += x;
    s.mean /= double(xs.size());
    double ss = 0;
    for (double x : xs) ss += (x - s.mean) * (x - s.mean);
    s.sd = xs.size() > 1 ? std::sqrt(ss / double(xs.size() - 1)) : 0.0;
    return s;
}

// One (variant, context length) measurement, or why there is none.
struct SpeedPoint {
    uint32_t ctx = 0;
    std::string skipped;         // "" when measured
    Stat decode, prefill;        // tokens/s
    double decode_gb_s = NAN;    // decode bytes per token * tokens/s
    double prefill_gb_s = NAN;   // bytes a prefill step reads at least once * steps/s
    double seconds = 0;          // wall time of the whole measurement
};

struct VariantResult {
    AttnVariant v;
    ParamCounts params;
    std::map<std::string, KVBytesPerToken> kv;  // by cache type; missing: the type does not fit
    std::map<std::string, std::string> kv_error;
    uint64_t weight_bytes = 0;
    std::vector<SpeedPoint> speed;
    std::string quality = "n/a (no quality model)";
    nlohmann::json quality_json;  // ppl, ppl_err, kl, kl_err, same_top; or the reason there is none
};

// Output agreement: a real model converted to each variant's attention, perplexity over a text and
// KL divergence of its next-token distributions against the original's.
struct QualityRun {
    std::string model_path, text_path, work;
    uint32_t n_chunks = 2, n_ctx = 512;
    int n_threads = 0;
    std::string summary;  // the source and its own perplexity, for the report

    std::string base_kl;  // the original's KL base file
    HParams hp;
    NllStats base_nll;

    static std::string fmt(const PerplexityResult& r, bool base) {
        if (base) return strfmt("PPL %.2f +- %.2f (the source)", r.nll.ppl(), r.nll.ppl_err());
        return strfmt("PPL %.2f +- %.2f, KL %.4f +- %.4f, same top %.1f%%", r.nll.ppl(), r.nll.ppl_err(),
                      r.kl.mean_kl(), r.kl.kl_err(), 100.0 * r.kl.same_top());
    }
    static nlohmann::json to_json(const PerplexityResult& r, bool base) {
        nlohmann::json j = {{"ppl", r.nll.ppl()}, {"ppl_err", r.nll.ppl_err()}};
        if (base) j["kl"] = 0.0, j["same_top"] = 1.0, j["is_source"] = true;
        else j["kl"] = r.kl.mean_kl(), j["kl_err"] = r.kl.kl_err(), j["same_top"] = r.kl.same_top();
        return j;
    }

    // Runs the original once, saving its distributions as the KL base.
    void start(Backend& backend) {
        std::ifstream in(text_path, std::ios::binary);
        if (!in) throw Error("cannot read the quality text '" + text_path + "'");
        const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        auto model = load_model(model_path, backend);
        hp = model->hp;
        const auto chunks = text_chunks(model->vocab, text, n_ctx, n_chunks);
        base_kl = work + "/quality-base.kl";
        KLBaseWriter save(base_kl, hp.n_vocab, chunks);
        SessionParams sp;
        sp.n_ctx = n_ctx;
        sp.n_batch = n_ctx;
        Session session(*model, sp);
        const PerplexityResult r = run_perplexity(session, chunks, &save, nullptr);
        save.finish();
        base_nll = r.nll;
        const std::string name = model_path.substr(model_path.find_last_of('/') + 1);
        const std::string text_name = text_path.substr(text_path.find_last_of('/') + 1);
        summary = strfmt("%s (%s, %u heads, %u KV heads) converted with `minfer convert --attn`, perplexity on %s, "
                         "%zu chunks of %u tokens: the source's PPL %.2f +- %.2f",
                         name.c_str(), hp.arch.c_str(), hp.n_head, hp.n_head_kv[0], text_name.c_str(), chunks.size(),
                         n_ctx, r.nll.ppl(), r.nll.ppl_err());
    }

    // The convert spec of a variant for this source, or "" with *why saying why there is none; "=" when
    // the variant is the source's own attention.
    std::string spec_for(const AttnVariant& v, std::string* why) const {
        const uint32_t n_head = hp.n_head, src_kv = hp.n_head_kv[0], head_dim = hp.head_dim_k;
        if (v.kind == AttnKind::MLA) {
            if (v.kv_lora_rank > hp.n_embd) return *why = strfmt("n/a: rank above n_embd %u", hp.n_embd), "";
            return strfmt("mla:%u:%u", v.kv_lora_rank, synth_mla_rope_dims(head_dim));
        }
        uint32_t target = 0;
        if (v.kind == AttnKind::MHA) target = n_head;
        else if (v.kind == AttnKind::MQA) target = 1;
        else {
            const uint32_t k = uint32_t(std::stoul(v.name.substr(4)));  // "GQA-k"
            if (n_head % k != 0) return *why = strfmt("n/a: the source's %u heads do not split by %u", n_head, k), "";
            target = n_head / k;
        }
        if (target == src_kv) return "=";
        if (target > src_kv) return *why = strfmt("n/a: the source has %u KV heads", src_kv), "";
        return target == 1 ? "mqa" : strfmt("gqa:%u", n_head / target);
    }

    void measure(Backend& backend, VariantResult& r) {
        std::string why;
        const std::string spec = spec_for(r.v, &why);
        if (spec.empty()) {
            r.quality = why;
            r.quality_json = {{"skipped", why}};
            return;
        }
        PerplexityResult res;
        KLBaseReader base(base_kl);
        std::string path = model_path;
        if (spec != "=") {
            AttnConvertOptions o;
            o.in_path = model_path;
            o.out_path = work + "/quality-" + r.v.name + ".gguf";
            o.spec = parse_attn_spec(spec);
            o.n_threads = n_threads;
            convert_attention(o);
            path = o.out_path;
        }
        {
            auto model = load_model(path, backend);
            SessionParams sp;
            sp.n_ctx = n_ctx;
            sp.n_batch = n_ctx;
            Session session(*model, sp);
            res = run_perplexity(session, base.chunks(), nullptr, &base);
        }
        if (spec != "=") std::remove(path.c_str());
        r.quality = fmt(res, spec == "=");
        r.quality_json = to_json(res, spec == "=");
        r.quality_json["convert"] = spec == "=" ? "none (the source)" : "--attn " + spec;
    }
};

class OverBudget {};

struct Measurer {
    const LabArgs& args;
    double max_seconds;  // 0: none
    double max_kv_bytes;
    std::mt19937 rng{42};

    std::vector<int32_t> random_tokens(const Model& m, uint32_t n) {
        std::uniform_int_distribution<int32_t> tok(3, int32_t(m.hp.n_vocab) - 1);
        std::vector<int32_t> v(n);
        for (auto& t : v) t = tok(rng);
        return v;
    }

    // Decode -n tokens after ctx cached, prefill of the last min(ctx, 512) after ctx - that many;
    // a repetition 0 warms up. prev: the last measured point of this variant (for the time estimate).
    SpeedPoint measure(const Model& model, uint32_t ctx, const SpeedPoint* prev) {
        SpeedPoint p;
        p.ctx = ctx;
        const uint32_t m = std::min<uint32_t>(ctx, 512), n = uint32_t(args.n_gen);
        SessionParams sp;
        sp.n_ctx = ctx + n;
        sp.n_batch = 512;
        sp.kv.type_k = sp.kv.type_v = args.kv_type;
        const KVPlan plan = session_kv_plan(model.hp, sp);
        if (double(plan.total_bytes) > max_kv_bytes) {
            p.skipped = strfmt("skipped: cache %.1f GiB > budget %.1f GiB", plan.total_bytes / 1073741824.0,
                               max_kv_bytes / 1073741824.0);
            return p;
        }
        if (max_seconds > 0 && prev && prev->skipped.empty()) {
            // The fill and the repetitions at the shorter context's rates, times 1.5 for the longer
            // attention (a guess; a measurement that overruns is stopped anyway).
            const double reps = double(args.reps + 1);
            const double estimate = 1.5 * ((ctx - m) / prev->prefill.mean + reps * (m / prev->prefill.mean + n / prev->decode.mean));
            if (estimate > max_seconds) {
                p.skipped = strfmt("skipped: about %.0f s > %.0f s budget", estimate, max_seconds);
                return p;
            }
        }
        const double t_start = now_s();
        const auto check_time = [&]() {
            if (max_seconds > 0 && now_s() - t_start > max_seconds) throw OverBudget();
        };
        try {
            Session s(model, sp);
            const std::vector<int32_t> fill = random_tokens(model, ctx - m);
            for (size_t i = 0; i < fill.size(); i += 512) {
                s.prefill(std::vector<int32_t>(fill.begin() + long(i), fill.begin() + long(std::min(fill.size(), i + 512))));
                check_time();
            }
            std::vector<double> pp, tg;
            for (int r = 0; r <= args.reps; ++r) {
                s.truncate(ctx - m);
                const std::vector<int32_t> chunk = random_tokens(model, m);
                double t0 = now_s();
                s.prefill(chunk);
                if (r > 0) pp.push_back(m / (now_s() - t0));
                check_time();
                const std::vector<int32_t> gen = random_tokens(model, n);
                t0 = now_s();
                for (int32_t t : gen) s.decode(t);
                if (r > 0) tg.push_back(n / (now_s() - t0));
                check_time();
            }
            p.prefill = stats(pp);
            p.decode = stats(tg);
            p.decode_gb_s = decode_bytes_per_token(model, s.kv_plan(), ctx + (n + 1) / 2.0) * p.decode.mean / 1e9;
            p.prefill_gb_s = decode_bytes_per_token(model, s.kv_plan(), ctx) * p.prefill.mean / m / 1e9;
        } catch (const OverBudget&) {
            p.skipped = strfmt("skipped: over the %.0f s budget", max_seconds);
        }
        p.seconds = now_s() - t_start;
        return p;
    }
};

std::string pct_change(double x, double base) {
    if (!(base > 0)) return "n/a";
    const double p = 100.0 * (x - base) / base;
    return std::fabs(p) < 0.05 ? "0%" : strfmt("%+.1f%%", p);
}

const std::vector<std::string> kCacheTypes = {"f16", "q8_0", "q4_0"};

std::string variant_shape(const VariantResult& r, uint32_t n_head) {
    if (r.v.kind == AttnKind::MLA) return strfmt("latent rank %u", r.v.kv_lora_rank);
    return strfmt("%u KV heads", r.v.n_head_kv);
}

void write_markdown(const std::string& path, const LabArgs& a, const std::string& base_name, const SynthDims& d,
                    uint32_t n_layer, const std::string& device, const std::string& date, const std::string& commit,
                    const std::vector<VariantResult>& rs, const std::vector<std::string>& skipped,
                    const std::string& quality) {
    std::string md;
    md += "# Attention lab: " + base_name + "\n\n";
    md += "Measured by `" + a.command + "`\n\n";
    md += "- date: " + date + "\n- device: " + device + "\n- commit: " + (commit.empty() ? "unknown" : commit) + "\n";
    md += strfmt("- base: %s, %u layers, n_embd %u, %u heads of %u, n_ff %u, vocab %u; weights %s, random (minfer synth)\n",
                 d.arch.c_str(), n_layer, d.n_embd, d.n_head, d.n_embd / d.n_head, d.n_ff, d.n_vocab, a.type.c_str());
    md += strfmt("- MLA: rope dims %u, q/k head size %u, value head size %u, q_lora none, every layer dense\n",
                 synth_mla_rope_dims(d.n_embd / d.n_head), d.n_embd / d.n_head, d.n_embd / d.n_head);
    for (const auto& s : skipped) md += "- not run: " + s + "\n";
    md += "- quality: " + quality + "\n";
    md += "\n## Parameters and KV cache\n\n";
    md += "Attention parameters: every `blk.N.attn_*` tensor except `attn_norm`. KV bytes per cached token "
          "(K + V, or MLA's one latent row), per layer and over all layers.\n\n";
    md += "| variant | kind | K/V | attn params | vs MHA | total params | vs MHA | KV/token/layer f16 | q8_0 | q4_0 "
          "| KV/token model f16 | q8_0 | q4_0 | quality (PPL, KL) |\n";
    md += "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
    const ParamCounts base = rs.front().params;
    for (const auto& r : rs) {
        md += strfmt("| %s | %s | %s | %.2f M | %s | %.2f M | %s |", r.v.name.c_str(), attn_kind_name(r.v.kind),
                     variant_shape(r, d.n_head).c_str(), r.params.attn / 1e6, pct_change(double(r.params.attn), double(base.attn)).c_str(),
                     r.params.total / 1e6, pct_change(double(r.params.total), double(base.total)).c_str());
        for (int whole = 0; whole < 2; ++whole)
            for (const auto& t : kCacheTypes) {
                const auto it = r.kv.find(t);
                if (it == r.kv.end()) md += " n/a |";
                else if (whole) md += strfmt(" %.1f KiB |", it->second.model / 1024.0);
                else md += strfmt(" %zu B |", it->second.layer);
            }
        md += " " + r.quality + " |\n";
    }
    for (const auto& r : rs)
        for (const auto& [t, why] : r.kv_error) md += "\n" + r.v.name + " " + t + " cache: " + why + "\n";
    md += "\n![parameters](attn-lab-params.png)\n\n![KV bytes per token](attn-lab-kv.png)\n";
    md += strfmt("\n## Speed by context length (%s cache)\n\n", a.kv_type.c_str());
    md += strfmt("Decode: %d tokens after CTX cached. Prefill: the last min(CTX, 512) tokens after the rest are "
                 "cached. tokens/s as mean +- sd over %d repetitions after a warm-up. GB/s: weights + the cached K/V "
                 "rows read per token (decode) or per step (prefill, counted once) x the rate.\n\n",
                 a.n_gen, a.reps);
    md += "| variant | ctx | decode t/s | decode GB/s | prefill t/s | prefill GB/s |\n";
    md += "| --- | ---: | ---: | ---: | ---: | ---: |\n";
    for (const auto& r : rs)
        for (const auto& p : r.speed) {
            if (!p.skipped.empty()) {
                md += strfmt("| %s | %u | %s | | | |\n", r.v.name.c_str(), p.ctx, p.skipped.c_str());
                continue;
            }
            md += strfmt("| %s | %u | %.2f +- %.2f | %.2f | %.1f +- %.1f | %.2f |\n", r.v.name.c_str(), p.ctx,
                         p.decode.mean, p.decode.sd, p.decode_gb_s, p.prefill.mean, p.prefill.sd, p.prefill_gb_s);
        }
    md += "\n![decode](attn-lab-decode.png)\n\n![prefill](attn-lab-prefill.png)\n";
    std::ofstream out(path);
    out << md;
    if (!out) throw Error(path + ": cannot write");
}

nlohmann::json stat_json(const Stat& s) {
    return {{"tok_s", std::isfinite(s.mean) ? nlohmann::json(s.mean) : nlohmann::json(nullptr)},
            {"sd", std::isfinite(s.sd) ? nlohmann::json(s.sd) : nlohmann::json(nullptr)}};
}

void write_json(const std::string& path, const LabArgs& a, const std::string& base_name, const SynthDims& d,
                uint32_t n_layer, const std::string& device, const std::string& date, const std::string& commit,
                const std::vector<VariantResult>& rs, const std::vector<std::string>& skipped,
                const std::string& quality) {
    using nlohmann::json;
    json j;
    j["command"] = a.command;
    j["date"] = date;
    j["device"] = device;
    j["commit"] = commit;
    j["base"] = {{"name", base_name}, {"arch", d.arch}, {"n_layer", n_layer}, {"n_embd", d.n_embd},
                 {"n_head", d.n_head}, {"head_dim", d.n_embd / d.n_head}, {"n_ff", d.n_ff}, {"n_vocab", d.n_vocab},
                 {"weight_type", a.type}, {"mla_rope_dims", synth_mla_rope_dims(d.n_embd / d.n_head)}};
    j["speed_kv_type"] = a.kv_type;
    j["n_gen"] = a.n_gen;
    j["reps"] = a.reps;
    j["not_run"] = skipped;
    j["quality_source"] = quality;
    const ParamCounts base = rs.front().params;
    for (const auto& r : rs) {
        json v;
        v["name"] = r.v.name;
        v["kind"] = attn_kind_name(r.v.kind);
        v["n_head_kv"] = r.v.n_head_kv;
        v["kv_lora_rank"] = r.v.kv_lora_rank;
        v["attn_params"] = r.params.attn;
        v["total_params"] = r.params.total;
        v["attn_params_change"] = base.attn ? double(r.params.attn) / double(base.attn) - 1.0 : 0.0;
        v["total_params_change"] = base.total ? double(r.params.total) / double(base.total) - 1.0 : 0.0;
        v["weight_bytes"] = r.weight_bytes;
        for (const auto& [t, b] : r.kv) v["kv_bytes_per_token"][t] = {{"layer", b.layer}, {"model", b.model}};
        for (const auto& [t, why] : r.kv_error) v["kv_bytes_per_token"][t] = {{"error", why}};
        v["quality"] = r.quality_json.is_null() ? nlohmann::json({{"skipped", r.quality}}) : r.quality_json;
        for (const auto& p : r.speed) {
            json s = {{"ctx", p.ctx}, {"seconds", p.seconds}};
            if (!p.skipped.empty()) {
                s["skipped"] = p.skipped;
            } else {
                s["decode"] = stat_json(p.decode);
                s["decode"]["gb_s"] = p.decode_gb_s;
                s["prefill"] = stat_json(p.prefill);
                s["prefill"]["gb_s"] = p.prefill_gb_s;
            }
            v["speed"].push_back(s);
        }
        j["variants"].push_back(v);
    }
    std::ofstream out(path);
    out << j.dump(1) << "\n";
    if (!out) throw Error(path + ": cannot write");
}

void write_charts(const std::string& dir, const std::string& base_name, const std::string& device,
                  const LabArgs& a, const std::vector<VariantResult>& rs) {
    BarChart params;
    params.title = "Parameters by attention variant (" + base_name + ")";
    params.x_label = "variant";
    params.y_label = "parameters";
    params.series = {"attention", "total"};
    params.values.resize(2);
    BarChart kv;
    kv.title = "KV cache bytes per token, whole model (" + base_name + ")";
    kv.x_label = "variant";
    kv.y_label = "KiB per cached token";
    kv.series = kCacheTypes;
    kv.values.resize(kCacheTypes.size());
    for (const auto& r : rs) {
        params.categories.push_back(r.v.name);
        kv.categories.push_back(r.v.name);
        params.values[0].push_back(double(r.params.attn));
        params.values[1].push_back(double(r.params.total));
        for (size_t i = 0; i < kCacheTypes.size(); ++i) {
            const auto it = r.kv.find(kCacheTypes[i]);
            kv.values[i].push_back(it == r.kv.end() ? NAN : it->second.model / 1024.0);
        }
    }
    bar_chart(dir + "/attn-lab-params.png", params);
    bar_chart(dir + "/attn-lab-kv.png", kv);
    const std::string dev = device.substr(0, device.find(','));
    for (int prefill = 0; prefill < 2; ++prefill) {
        LineChart c;
        c.title = std::string(prefill ? "Prefill" : "Decode") + " speed vs context (" + base_name + ", " + dev + ")";
        c.x_label = "context length (tokens, log2 scale)";
        c.y_label = prefill ? "prefill tokens/s" : "decode tokens/s";
        c.log2_x = true;
        for (const auto& r : rs) {
            LineSeries s;
            s.name = r.v.name;
            for (const auto& p : r.speed) {
                s.x.push_back(p.ctx);
                s.y.push_back(p.skipped.empty() ? (prefill ? p.prefill.mean : p.decode.mean) : NAN);
            }
            c.series.push_back(s);
        }
        line_chart(dir + (prefill ? "/attn-lab-prefill.png" : "/attn-lab-decode.png"), c);
    }
}

void make_dirs(const std::string& dir) {
    std::string cur;
    for (size_t i = 0; i <= dir.size(); ++i) {
        if (i == dir.size() || dir[i] == '/') {
            if (!cur.empty() && mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST)
                throw Error(cur + ": cannot create the folder: " + std::strerror(errno));
        }
        if (i < dir.size()) cur += dir[i];
    }
}

}  // namespace

int tool_attn_lab(int argc, char** argv) {
    LabArgs a = parse(argc, argv);
    if (a.shape == "--help") {
        std::printf("%s", kUsage);
        return 0;
    }
    if (a.shape.empty() && a.model_path.empty()) a.shape = "llama-1b";
    const SynthDims dims = a.model_path.empty() ? synth_shape_dims(a.shape) : dims_from_file(a.model_path);
    if (dims.mla.kv_lora_rank > 0)
        throw Error("attn-lab takes a llama or qwen2 shape as a base ('" + a.shape + "' has MLA attention already)");
    std::string base_name = a.shape;
    if (!a.model_path.empty()) {
        base_name = a.model_path.substr(a.model_path.find_last_of('/') + 1);
        if (base_name.size() > 5 && base_name.compare(base_name.size() - 5, 5, ".gguf") == 0)
            base_name.resize(base_name.size() - 5);
    }
    const uint32_t n_layer = a.n_layer ? a.n_layer : dims.n_layer;
    std::vector<std::string> skipped;
    const std::vector<AttnVariant> variants = attn_variants(dims.n_head, a.gqa, a.mla, &skipped);

    ModelArgs margs;
    margs.device = a.device;
    margs.n_threads = a.n_threads;
    auto backend = make_backend(margs);
    const bool cpu = std::string(backend->name()) == "cpu";
    Measurer meas{a, a.max_seconds >= 0 ? a.max_seconds : (cpu ? 20.0 : 0.0), 0};
    double kv_gib = a.max_kv_gib;
    if (kv_gib < 0) kv_gib = cpu ? double(sysconf(_SC_PHYS_PAGES)) * double(sysconf(_SC_PAGESIZE)) / 4 / 1073741824.0 : 64.0;
    meas.max_kv_bytes = kv_gib * 1073741824.0;
    const std::string device = device_description(backend->name(), a.n_threads);

    make_dirs(a.out_dir);
    std::string work = a.work_dir;
    const bool own_work = work.empty();
    if (own_work) {
        char tmpl[] = "/tmp/minfer-attn-lab-XXXXXX";
        if (!mkdtemp(tmpl)) throw Error(std::string("cannot create a temporary folder: ") + std::strerror(errno));
        work = tmpl;
    } else {
        make_dirs(work);
    }
    std::fprintf(stderr, "minfer attn-lab: %s on %s, %zu variants, files in %s\n", base_name.c_str(), device.c_str(),
                 variants.size(), work.c_str());
    for (const auto& s : skipped) std::fprintf(stderr, "minfer attn-lab: not run: %s\n", s.c_str());

    // Quality first (one real model, converted per variant), so a failure there shows before the long part.
    std::string quality_model = a.quality_model;
    if (quality_model == "default") {
        const char* home = std::getenv("HOME");
        const std::string def = std::string(home ? home : "") + "/.cache/minfer/SmolLM2-135M-Instruct.Q4_1.gguf";
        quality_model = access(def.c_str(), R_OK) == 0 ? def : "none";
    }
    std::string quality_summary = "none (no --quality-model)";
    std::unique_ptr<QualityRun> quality;
    if (quality_model != "none") {
        quality = std::make_unique<QualityRun>();
        quality->model_path = quality_model;
        quality->text_path = a.quality_text;
        quality->work = work;
        quality->n_chunks = a.quality_chunks;
        quality->n_threads = a.n_threads;
        const double t0 = now_s();
        quality->start(*backend);
        quality_summary = quality->summary;
        std::fprintf(stderr, "minfer attn-lab: quality: %s (%.1f s)\n", quality_summary.c_str(), now_s() - t0);
    }

    SynthOptions base;
    base.shape = a.model_path.empty() ? a.shape : base_name;
    if (!a.model_path.empty()) base.dims = dims;
    base.type = a.type;
    base.n_layer = n_layer;
    base.seed = a.seed;
    base.n_threads = a.n_threads;

    std::vector<VariantResult> results;
    for (const AttnVariant& v : variants) {
        VariantResult r;
        r.v = v;
        if (quality) {
            const double tq = now_s();
            try {
                quality->measure(*backend, r);
            } catch (const Error& e) {
                r.quality = std::string("failed: ") + e.what();
                r.quality_json = {{"failed", e.what()}};
            }
            std::fprintf(stderr, "minfer attn-lab: %s quality: %s (%.1f s)\n", v.name.c_str(), r.quality.c_str(),
                         now_s() - tq);
        }
        const std::string path = work + "/" + v.name + ".gguf";
        const double t0 = now_s();
        write_attn_variant(base, v, path);
        {
            const GGUFFile f = GGUFFile::open(path);
            r.params = count_params(f);
            const HParams hp = load_hparams(f);
            for (const auto& t : kCacheTypes) {
                try {
                    r.kv[t] = kv_bytes_per_token(hp, t);
                } catch (const Error& e) {
                    r.kv_error[t] = e.what();
                }
            }
        }
        std::fprintf(stderr, "minfer attn-lab: %s: %.2f M attention / %.2f M parameters, written in %.1f s\n",
                     v.name.c_str(), r.params.attn / 1e6, r.params.total / 1e6, now_s() - t0);
        {
            auto model = load_model(path, *backend);
            r.weight_bytes = model->weight_bytes;
            int prev = -1;  // the last measured point
            bool over_budget = false;  // a context took too long: the longer ones would too
            for (uint32_t ctx : a.ctx) {
                SpeedPoint p;
                p.ctx = ctx;
                if (over_budget) {
                    p.skipped = "skipped: a shorter context was over the time budget";
                } else {
                    try {
                        p = meas.measure(*model, ctx, prev >= 0 ? &r.speed[size_t(prev)] : nullptr);
                    } catch (const Error& e) {  // e.g. an op or head size this backend does not run
                        p.skipped = std::string("failed: ") + e.what();
                    }
                    over_budget = p.skipped.find(" s budget") != std::string::npos;
                }
                r.speed.push_back(p);
                if (p.skipped.empty()) prev = int(r.speed.size()) - 1;
                if (p.skipped.empty())
                    std::fprintf(stderr, "minfer attn-lab: %s ctx %u: decode %.2f t/s, prefill %.1f t/s (%.1f s)\n",
                                 v.name.c_str(), ctx, p.decode.mean, p.prefill.mean, p.seconds);
                else
                    std::fprintf(stderr, "minfer attn-lab: %s ctx %u: %s\n", v.name.c_str(), ctx, p.skipped.c_str());
            }
        }
        if (own_work) std::remove(path.c_str());
        results.push_back(std::move(r));
    }
    if (quality) std::remove(quality->base_kl.c_str());
    if (own_work) rmdir(work.c_str());

    char date[64];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
    const std::string commit = first_line_of("git rev-parse --short HEAD 2>/dev/null");
    write_markdown(a.out_dir + "/attn-lab.md", a, base_name, dims, n_layer, device, date, commit, results, skipped, quality_summary);
    write_json(a.out_dir + "/attn-lab.json", a, base_name, dims, n_layer, device, date, commit, results, skipped, quality_summary);
    write_charts(a.out_dir, base_name, device, a, results);
    std::printf("wrote %s/attn-lab.md, attn-lab.json and 4 charts: %zu variants x %zu context lengths\n",
                a.out_dir.c_str(), results.size(), a.ctx.size());
    return 0;
}

}  // namespace mf
