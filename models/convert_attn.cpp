// Attention conversion (minfer convert --attn): GQA/MQA by mean-pooling K/V heads, MLA (deepseek2) by a
// truncated SVD of the stacked K/V projections with a RoPE part kept apart; docs/CONVERT.md explains.
#include "models/convert_attn.h"


#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "core/common.h"
#include "core/gguf.h"
#include "models/hparams.h"
#include "models/quantize.h"

namespace mf {

namespace {

[[noreturn]] void bad_spec(const std::string& spec, const char* why) {
    throw Error(strfmt("--attn '%s': %s (expected gqa:K, mqa, mla:R or mla:R:D)", spec.c_str(), why));
}

uint32_t spec_number(const std::string& spec, const std::string& s) {
    char* end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(s.c_str(), &end, 10);
    if (s.empty() || *end || errno || s[0] == '-' || v == 0 || v > 65536) bad_spec(spec, "numbers must be 1..65536");
    return uint32_t(v);
}

// Eigen-decomposition of the symmetric n x n matrix a (row-major, destroyed) by cyclic Jacobi
// rotations: eigenvalues w [n] and eigenvectors as the columns of v [n x n]. O(n^3) per sweep and a
// handful of sweeps (quadratic convergence); n is min(rows, cols) of a K/V stack, at most a few thousand.
void jacobi_eigen(std::vector<double>& a, int64_t n, std::vector<double>& w, std::vector<double>& v) {
    v.assign(size_t(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i) v[size_t(i * n + i)] = 1.0;
    double total = 0.0;
    for (double x : a) total += x * x;
    for (int sweep = 0; sweep < 60; ++sweep) {
        double off = 0.0;
        for (int64_t p = 0; p < n; ++p)
            for (int64_t q = p + 1; q < n; ++q) off += a[size_t(p * n + q)] * a[size_t(p * n + q)];
        if (off <= 1e-30 * total) break;  // the off-diagonal mass is at double rounding
        for (int64_t p = 0; p < n; ++p) {
            for (int64_t q = p + 1; q < n; ++q) {
                const double apq = a[size_t(p * n + q)];
                if (std::fabs(apq) <= 1e-300) continue;
                // The rotation that zeroes a[p][q] (Numerical Recipes' convention: A' = J^T A J).
                const double theta = (a[size_t(q * n + q)] - a[size_t(p * n + p)]) / (2.0 * apq);
                const double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1.0));
                const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
                for (int64_t k = 0; k < n; ++k) {
                    double& akp = a[size_t(k * n + p)];
                    double& akq = a[size_t(k * n + q)];
                    const double x = akp, y = akq;
                    akp = c * x - s * y;
                    akq = s * x + c * y;
                }
                double* rp = &a[size_t(p * n)];
                double* rq = &a[size_t(q * n)];
                for (int64_t k = 0; k < n; ++k) {
                    const double x = rp[k], y = rq[k];
                    rp[k] = c * x - s * y;
                    rq[k] = s * x + c * y;
                }
                for (int64_t k = 0; k < n; ++k) {
                    double& vkp = v[size_t(k * n + p)];
                    double& vkq = v[size_t(k * n + q)];
                    const double x = vkp, y = vkq;
                    vkp = c * x - s * y;
                    vkq = s * x + c * y;
                }
            }
        }
    }
    w.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) w[size_t(i)] = a[size_t(i * n + i)];
}

// Makes row r of vt [.. x n] orthonormal to rows 0..r-1 (Gram-Schmidt, twice for double rounding);
// returns the norm it had after the projections (before normalizing).
double orthonormalize_row(std::vector<double>& vt, int64_t r, int64_t n) {
    double* x = &vt[size_t(r * n)];
    for (int pass = 0; pass < 2; ++pass)
        for (int64_t i = 0; i < r; ++i) {
            const double* y = &vt[size_t(i * n)];
            double d = 0.0;
            for (int64_t j = 0; j < n; ++j) d += x[j] * y[j];
            for (int64_t j = 0; j < n; ++j) x[j] -= d * y[j];
        }
    double nrm = 0.0;
    for (int64_t j = 0; j < n; ++j) nrm += x[j] * x[j];
    nrm = std::sqrt(nrm);
    if (nrm > 0)
        for (int64_t j = 0; j < n; ++j) x[j] /= nrm;
    return nrm;
}

// A 2-D tensor of the input as f32 rows [ne1 x ne0]; throws Error naming it when absent or misshapen.
std::vector<float> read_f32(const GGUFFile& f, const std::string& name, int64_t ne0, int64_t ne1) {
    const GGUFTensorInfo* t = f.find_tensor(name);
    if (!t) throw Error(strfmt("%s: missing tensor '%s'", f.name().c_str(), name.c_str()));
    if (t->ne[0] != ne0 || t->n_elements != ne0 * ne1)
        throw Error(strfmt("%s: tensor '%s' has shape [%lld, %lld], expected [%lld, %lld]", f.name().c_str(),
                           name.c_str(), (long long)t->ne[0], (long long)t->ne[1], (long long)ne0, (long long)ne1));
    const ToFloatFn to_float = dtype_traits(t->type).to_float;
    if (!to_float)
        throw Error(strfmt("%s: tensor '%s' has type %s, which minfer cannot read", f.name().c_str(), name.c_str(),
                           dtype_name(t->type)));
    std::vector<float> out(size_t(ne0 * ne1));
    const size_t row = dtype_row_size(t->type, ne0);
    for (int64_t r = 0; r < ne1; ++r) to_float(static_cast<const uint8_t*>(t->data) + size_t(r) * row, &out[size_t(r * ne0)], ne0);
    return out;
}

// The type a recomputed tensor is written in: want, or f16 when its rows are not whole blocks of want.
DType fitting_type(DType want, int64_t ne0) {
    return ne0 % dtype_traits(want).block_size == 0 ? want : DType::F16;
}

// The tensors of the output, each copied from the input or produced (as f32) when the writer reaches it.
struct Output {
    const GGUFFile& in;
    GGUFWriter& w;
    DType type;
    int n_threads;

    void copy(const GGUFTensorInfo& t) { w.add_tensor(t.name, t.type, std::max(1, t.n_dims), t.ne, t.data); }

    // A tensor of shape ne (ggml order) produced by make(); matrices in the requested type, vectors f32.
    void computed(const std::string& name, std::vector<int64_t> ne, std::function<std::vector<float>()> make) {
        const DType t = ne.size() == 1 ? DType::F32 : fitting_type(type, ne[0]);
        int64_t rows = 1;
        for (size_t d = 1; d < ne.size(); ++d) rows *= ne[d];
        const std::string what = in.name() + ": output tensor '" + name + "'";
        const int64_t ne0 = ne[0];
        const int threads = n_threads;
        w.add_tensor(name, t, int(ne.size()), ne.data(), [=](void* dst, uint64_t) {
            const std::vector<float> v = make();
            MF_ASSERT(int64_t(v.size()) == ne0 * rows);
            convert_rows(what, DType::F32, v.data(), t, dst, rows, ne0, threads);
        });
    }
};

// blk.N.<rest>: N and rest, or false when name is not a block tensor.
bool split_block_name(const std::string& name, uint32_t* il, std::string* rest) {
    if (name.compare(0, 4, "blk.") != 0) return false;
    const size_t dot = name.find('.', 4);
    if (dot == std::string::npos) return false;
    *il = uint32_t(std::strtoul(name.c_str() + 4, nullptr, 10));
    *rest = name.substr(dot + 1);
    return true;
}

// ---- GQA / MQA ----------------------------------------------------------------------------------

// Mean of each group of g consecutive heads of rows [n_kv_old * head_rows x ne0] -> [n_kv_old / g * head_rows x ne0].
// RoPE's row order (llama.cpp's permutation for llama, NeoX halves for qwen2) is the same inside every
// head, so row r of each head in a group is the same rotary coordinate and pooling whole heads is exact
// about position; only the heads' contents are averaged.
std::vector<float> pool_heads(const std::vector<float>& x, int64_t n_kv_old, int64_t g, int64_t head_rows, int64_t ne0) {
    const int64_t n_kv_new = n_kv_old / g;
    std::vector<float> out(size_t(n_kv_new * head_rows * ne0));
    for (int64_t j = 0; j < n_kv_new; ++j)
        for (int64_t r = 0; r < head_rows; ++r)
            for (int64_t c = 0; c < ne0; ++c) {
                double sum = 0.0;
                for (int64_t i = 0; i < g; ++i) sum += x[size_t(((j * g + i) * head_rows + r) * ne0 + c)];
                out[size_t((j * head_rows + r) * ne0 + c)] = float(sum / double(g));
            }
    return out;
}

void convert_gqa(const GGUFFile& in, const HParams& hp, const AttnConvertOptions& opts, GGUFWriter& w,
                 AttnConvertSummary& sum) {
    const std::string a = hp.arch + ".";
    if (opts.spec.group != 0 && hp.n_head % opts.spec.group != 0)
        throw Error(strfmt("%s: --attn gqa:%u: %u must divide attention.head_count (%u)", in.name().c_str(),
                           opts.spec.group, opts.spec.group, hp.n_head));
    const uint32_t n_kv_new = opts.spec.group == 0 ? 1 : hp.n_head / opts.spec.group;
    for (uint32_t il = 0; il < hp.n_layer; ++il)
        if (n_kv_new > hp.n_head_kv[il] || hp.n_head_kv[il] % n_kv_new != 0)
            throw Error(strfmt("%s: --attn gqa:%u asks for %u KV heads, but layer %u has %u (pooling needs a divisor "
                               "of the current count)", in.name().c_str(), hp.n_head / n_kv_new, n_kv_new, il,
                               hp.n_head_kv[il]));
    for (size_t i = 0; i < in.n_kv(); ++i) w.set(std::string(in.kv(i).key()), GGUFMetaValue::copy_of(in.kv(i)));
    w.set_u32(a + "attention.head_count_kv", n_kv_new);

    Output out{in, w, opts.type, opts.n_threads};
    for (size_t i = 0; i < in.n_tensors(); ++i) {
        const GGUFTensorInfo& t = in.tensor(i);
        uint32_t il = 0;
        std::string rest;
        const bool is_k = split_block_name(t.name, &il, &rest) && il < hp.n_layer &&
                          (rest == "attn_k.weight" || rest == "attn_k.bias");
        const bool is_v = !is_k && il < hp.n_layer && (rest == "attn_v.weight" || rest == "attn_v.bias");
        if (!is_k && !is_v) {
            out.copy(t);
            continue;
        }
        const int64_t n_kv = hp.n_head_kv[il], g = n_kv / n_kv_new;
        const int64_t head_rows = is_k ? hp.head_dim_k : hp.head_dim_v;
        const bool bias = rest.find(".bias") != std::string::npos;
        const int64_t ne0 = bias ? 1 : hp.n_embd;  // a bias is one column of n_kv * head_rows rows
        const std::string name = t.name;
        std::vector<int64_t> ne = bias ? std::vector<int64_t>{n_kv_new * head_rows}
                                       : std::vector<int64_t>{ne0, n_kv_new * head_rows};
        out.computed(name, ne, [&in, name, n_kv, g, head_rows, ne0] {
            return pool_heads(read_f32(in, name, ne0 == 1 ? n_kv * head_rows : ne0, ne0 == 1 ? 1 : n_kv * head_rows),
                              n_kv, g, head_rows, ne0);
        });
    }
    sum.n_head_kv_out = n_kv_new;
    sum.kv_values_out = uint64_t(n_kv_new) * (hp.head_dim_k + hp.head_dim_v);
}

// ---- MLA ----------------------------------------------------------------------------------------

// One converted deepseek2 attention block, row-major f32 in ggml's [rows x ne0] order.
struct MlaLayer {
    std::vector<float> attn_norm;   // [n_embd]: beta (the old gain is folded into the matrices)
    std::vector<float> attn_q;      // [n_head * (nope + d_r) x n_embd]: per head q_nope rows, then q_pe rows
    std::vector<float> kv_a_mqa;    // [(R + d_r) x n_embd]: alpha * V_R^T, then the pooled k_pe rows
    std::vector<float> kv_a_norm;   // [R]: the norm gain that undoes the latent's scale
    std::vector<float> k_b;         // [n_head x R x nope]: W_UK^T per head
    std::vector<float> v_b;         // [n_head x hd_v x R]: W_UV per head
    double svd_err = 0.0, k_pe_err = 0.0;
};

struct MlaGeometry {
    int64_t n_embd, n_head, hd, hd_v, d_r, nope, rank;
    std::vector<int64_t> rope_rows;  // [d_r]: source rows (within a head) of the kept pairs, as q_pe/k_pe rows 2i, 2i+1
    std::vector<int64_t> nope_rows;  // [nope]: the other rows of a head, ascending
    float eps;
    MlaNorm norm;
};

MlaLayer convert_mla_layer(const GGUFFile& in, const HParams& hp, const MlaGeometry& geo, uint32_t il) {
    const std::string p = strfmt("blk.%u.", il);
    const int64_t E = geo.n_embd, H = geo.n_head, J = hp.n_head_kv[il], G = H / J, hd = geo.hd, hd_v = geo.hd_v;
    const int64_t d_r = geo.d_r, nope = geo.nope, R = geo.rank;
    const std::vector<float> g = read_f32(in, p + "attn_norm.weight", E, 1);
    const std::vector<float> wq = read_f32(in, p + "attn_q.weight", E, H * hd);
    const std::vector<float> wk = read_f32(in, p + "attn_k.weight", E, J * hd);
    const std::vector<float> wv = read_f32(in, p + "attn_v.weight", E, J * hd_v);

    // The attn_norm gain g is folded into every matrix reading h, so they act on u = x / rms(x).
    std::vector<double> k_pe(size_t(d_r * E), 0.0);
    double k_pe_norm = 0.0, k_pe_dev = 0.0;
    for (int64_t r = 0; r < d_r; ++r)
        for (int64_t c = 0; c < E; ++c) {
            double mean = 0.0;
            for (int64_t j = 0; j < J; ++j) mean += double(wk[size_t((j * hd + geo.rope_rows[size_t(r)]) * E + c)]) * g[size_t(c)];
            mean /= double(J);
            k_pe[size_t(r * E + c)] = mean;
            for (int64_t j = 0; j < J; ++j) {
                const double x = double(wk[size_t((j * hd + geo.rope_rows[size_t(r)]) * E + c)]) * g[size_t(c)];
                k_pe_norm += x * x;
                k_pe_dev += (x - mean) * (x - mean);
            }
        }
    // A = [K_nope of every KV head; V of every KV head] (m x E). Query heads share their KV head's
    // rows as in GQA, so repeating them per query head would scale every singular value alike.
    const int64_t m = J * nope + J * hd_v;
    std::vector<double> A(size_t(m * E));
    for (int64_t j = 0; j < J; ++j)
        for (int64_t n = 0; n < nope; ++n)
            for (int64_t c = 0; c < E; ++c)
                A[size_t((j * nope + n) * E + c)] = double(wk[size_t((j * hd + geo.nope_rows[size_t(n)]) * E + c)]) * g[size_t(c)];
    for (int64_t r = 0; r < J * hd_v; ++r)
        for (int64_t c = 0; c < E; ++c) A[size_t((J * nope + r) * E + c)] = double(wv[size_t(r * E + c)]) * g[size_t(c)];
    const TopSubspace sub = top_right_singular(A, m, E, R);
    // B = A V_R (m x R): A's best rank-R approximation is B V_R^T.
    std::vector<double> B(size_t(m * R), 0.0);
    double a_norm = 0.0, b_norm = 0.0;
    for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < R; ++r) {
            double d = 0.0;
            for (int64_t c = 0; c < E; ++c) d += A[size_t(i * E + c)] * sub.vt[size_t(r * E + c)];
            B[size_t(i * R + r)] = d;
            b_norm += d * d;
        }
    for (double x : A) a_norm += x * x;

    // Scales. h' = beta * u enters both attn_q and attn_kv_a_mqa; the latent is c = gamma * V_R^T u with
    // gamma = alpha * beta, and the norm gives c_hat = c / sqrt(mean(c^2) + eps) * w.
    // LINEAR: gamma^2 = 1e-6 eps, so mean(c^2) (= gamma^2 mean((V_R^T u)^2), of order gamma^2) is a
    //   millionth of eps and the norm is the constant gamma / sqrt(eps) to ~1e-6 relative whatever the
    //   token: w = sqrt(gamma^2 + eps) / gamma makes c_hat = V_R^T u. beta is as small as attn_q's
    //   entries allow (|W_Q g| / beta <= 1e4 keeps f16 far from overflow), alpha takes the rest, so the
    //   latent's weights alpha * V_R^T stay normal f16 numbers.
    // RMS: gamma = 1, w = sqrt(1 + eps): c_hat = V_R^T u * rms(u) / rms(V_R^T u), which is V_R^T u only
    //   when V_R spans all of u's space (R = n_embd, then V_R^T is a rotation and rms is kept).
    double beta = 1.0, alpha = 1.0;
    if (geo.norm == MlaNorm::LINEAR) {
        const double gamma = 1e-3 * std::sqrt(double(geo.eps));
        double max_abs = 0.0;
        for (int64_t r = 0; r < H * hd; ++r)
            for (int64_t c = 0; c < E; ++c) max_abs = std::max(max_abs, std::fabs(double(wq[size_t(r * E + c)]) * g[size_t(c)]));
        for (double x : k_pe) max_abs = std::max(max_abs, std::fabs(x));
        beta = std::min(1.0, std::max(gamma, max_abs / 1e4));
        alpha = gamma / beta;
    }
    const double gamma = alpha * beta;

    MlaLayer L;
    L.attn_norm.assign(size_t(E), float(beta));
    L.attn_q.resize(size_t(H * hd * E));
    for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < hd; ++i) {
            const int64_t src = h * hd + (i < nope ? geo.nope_rows[size_t(i)] : geo.rope_rows[size_t(i - nope)]);
            for (int64_t c = 0; c < E; ++c)
                L.attn_q[size_t((h * hd + i) * E + c)] = float(double(wq[size_t(src * E + c)]) * g[size_t(c)] / beta);
        }
    L.kv_a_mqa.resize(size_t((R + d_r) * E));
    for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < E; ++c) L.kv_a_mqa[size_t(r * E + c)] = float(alpha * sub.vt[size_t(r * E + c)]);
    for (int64_t r = 0; r < d_r; ++r)
        for (int64_t c = 0; c < E; ++c) L.kv_a_mqa[size_t((R + r) * E + c)] = float(k_pe[size_t(r * E + c)] / beta);
    L.kv_a_norm.assign(size_t(R), float(std::sqrt(gamma * gamma + double(geo.eps)) / gamma));
    L.k_b.resize(size_t(H * R * nope));
    L.v_b.resize(size_t(H * hd_v * R));
    for (int64_t h = 0; h < H; ++h) {
        const int64_t j = h / G;  // the KV head query head h reads, as in GQA
        for (int64_t r = 0; r < R; ++r)
            for (int64_t n = 0; n < nope; ++n) L.k_b[size_t((h * R + r) * nope + n)] = float(B[size_t((j * nope + n) * R + r)]);
        for (int64_t v = 0; v < hd_v; ++v)
            for (int64_t r = 0; r < R; ++r)
                L.v_b[size_t((h * hd_v + v) * R + r)] = float(B[size_t((J * nope + j * hd_v + v) * R + r)]);
    }
    L.svd_err = a_norm > 0 ? std::sqrt(std::max(0.0, a_norm - b_norm) / a_norm) : 0.0;
    L.k_pe_err = k_pe_norm > 0 ? std::sqrt(k_pe_dev / k_pe_norm) : 0.0;
    return L;
}

// Converted layers computed a batch at a time on n_threads threads (one layer each), in the order the
// writer asks for them (files list layers in name order: blk.0, blk.1, blk.10, ...), each dropped once
// the writer has moved past it.
class MlaLayers {
public:
    MlaLayers(const GGUFFile& in, const HParams& hp, const MlaGeometry& geo, int n_threads)
        : in_(in), hp_(hp), geo_(geo), n_threads_(std::max(1, n_threads)), svd_err_(hp.n_layer), k_pe_err_(hp.n_layer) {}

    // Records that the writer reaches layer il's tensors next (once per layer).
    void schedule(uint32_t il) {
        if (pos_.count(il)) return;
        pos_[il] = order_.size();
        order_.push_back(il);
    }

    const MlaLayer& get(uint32_t il) {
        auto it = cache_.find(il);
        if (it != cache_.end()) return *it->second;
        MF_ASSERT(pos_.count(il));
        const size_t first = pos_[il], end = std::min(order_.size(), first + size_t(n_threads_));
        for (auto c = cache_.begin(); c != cache_.end();) c = pos_[c->first] < first ? cache_.erase(c) : std::next(c);
        std::vector<std::unique_ptr<MlaLayer>> done(end - first);
        std::vector<std::thread> threads;
        std::exception_ptr error;
        std::mutex mu;
        for (size_t k = first; k < end; ++k)
            threads.emplace_back([&, k] {
                try {
                    done[k - first] = std::make_unique<MlaLayer>(convert_mla_layer(in_, hp_, geo_, order_[k]));
                } catch (...) {
                    std::lock_guard<std::mutex> lock(mu);
                    if (!error) error = std::current_exception();
                }
            });
        for (auto& t : threads) t.join();
        if (error) std::rethrow_exception(error);
        for (size_t k = first; k < end; ++k) {
            svd_err_[order_[k]] = done[k - first]->svd_err;
            k_pe_err_[order_[k]] = done[k - first]->k_pe_err;
            cache_[order_[k]] = std::move(done[k - first]);
        }
        return *cache_[il];
    }
    // Means over the layers of MlaLayer::svd_err and k_pe_err.
    double mean_svd_err() const { return mean(svd_err_); }
    double mean_k_pe_err() const { return mean(k_pe_err_); }

private:
    static double mean(const std::vector<double>& v) {
        double s = 0.0;
        for (double x : v) s += x;
        return v.empty() ? 0.0 : s / double(v.size());
    }
    const GGUFFile& in_;
    const HParams& hp_;
    const MlaGeometry& geo_;
    int n_threads_;
    std::vector<double> svd_err_, k_pe_err_;  // [n_layer]
    std::vector<uint32_t> order_;             // layers in the writer's order
    std::map<uint32_t, size_t> pos_;          // layer -> index in order_
    std::map<uint32_t, std::unique_ptr<MlaLayer>> cache_;
};

void convert_mla(const GGUFFile& in, const HParams& hp, const AttnConvertOptions& opts, GGUFWriter& w,
                 AttnConvertSummary& sum, std::unique_ptr<MlaLayers>& layers, MlaGeometry& geo) {
    const std::string& name = in.name();
    if (hp.qkv_bias)
        throw Error(name + ": --attn mla: " + hp.arch + "'s Q/K/V biases have no place in deepseek2's attention "
                    "(mla converts llama files)");
    const int64_t hd = hp.head_dim_k;
    const uint32_t d_r = opts.spec.rope_dim ? opts.spec.rope_dim : hp.n_rot / 2;
    if (d_r % 2 || d_r == 0 || d_r > hp.n_rot || d_r >= hd)
        throw Error(strfmt("%s: --attn mla: %u rope dims must be even, at most rope.dimension_count (%u) and below "
                           "key_length (%lld)", name.c_str(), d_r, hp.n_rot, (long long)hd));
    if (opts.spec.rank > hp.n_embd)
        throw Error(strfmt("%s: --attn mla:%u: the latent rank must be at most embedding_length (%u)", name.c_str(),
                           opts.spec.rank, hp.n_embd));
    geo = MlaGeometry{int64_t(hp.n_embd), int64_t(hp.n_head), hd, int64_t(hp.head_dim_v), int64_t(d_r),
                      hd - int64_t(d_r), int64_t(opts.spec.rank), {}, {}, hp.norm_eps, opts.mla_norm};
    // Keep the first d_r / 2 rotary pairs (the highest frequencies: the ones whose rotation a context
    // notices most; the dropped low frequencies turn only slowly and are the cheapest to treat as
    // position-free). Source pair i sits in rows (2i, 2i + 1) of a llama head (llama.cpp permuted the
    // HF rows so ggml's ROPE_NORMAL rotates adjacent pairs) or (i, i + n_rot / 2) for NeoX; deepseek2
    // in minfer rotates adjacent pairs too, so pair i becomes q_pe/k_pe rows (2i, 2i + 1). Its angle was
    // pos * base^(-2i / n_rot); with rope.dimension_count = d_r the new base base^(d_r / n_rot) gives
    // the same angle for every kept i.
    std::vector<bool> kept(size_t(hd), false);
    for (uint32_t i = 0; i < d_r / 2; ++i) {
        const int64_t r0 = hp.rope_mode == ROPE_NEOX ? i : 2 * i;
        const int64_t r1 = hp.rope_mode == ROPE_NEOX ? i + hp.n_rot / 2 : 2 * i + 1;
        geo.rope_rows.push_back(r0);
        geo.rope_rows.push_back(r1);
        kept[size_t(r0)] = kept[size_t(r1)] = true;
    }
    for (int64_t r = 0; r < hd; ++r)
        if (!kept[size_t(r)]) geo.nope_rows.push_back(r);

    const std::string a = "deepseek2.";
    for (size_t i = 0; i < in.n_kv(); ++i) {
        const std::string key(in.kv(i).key());
        const std::string src_prefix = hp.arch + ".";
        if (key.compare(0, src_prefix.size(), src_prefix) != 0) {
            w.set(key, GGUFMetaValue::copy_of(in.kv(i)));
            continue;
        }
        const std::string rest = key.substr(src_prefix.size());
        if (rest == "attention.head_count_kv" || rest == "attention.key_length" || rest == "attention.value_length" ||
            rest == "rope.dimension_count")
            continue;
        w.set(a + rest, GGUFMetaValue::copy_of(in.kv(i)));
    }
    w.set_str("general.architecture", "deepseek2");
    w.set_u32(a + "attention.head_count_kv", 1);
    w.set_u32(a + "attention.kv_lora_rank", opts.spec.rank);
    w.set_u32(a + "attention.q_lora_rank", 0);
    w.set_u32(a + "attention.key_length", opts.spec.rank + d_r);
    w.set_u32(a + "attention.value_length", opts.spec.rank);
    w.set_u32(a + "attention.key_length_mla", uint32_t(hd));
    w.set_u32(a + "attention.value_length_mla", hp.head_dim_v);
    w.set_u32(a + "rope.dimension_count", d_r);
    w.set_f32(a + "rope.freq_base", float(std::pow(double(hp.rope_freq_base), double(d_r) / double(hp.n_rot))));
    w.set_u32(a + "leading_dense_block_count", hp.n_layer);
    w.set_u32(a + "expert_count", 0);

    layers = std::make_unique<MlaLayers>(in, hp, geo, opts.n_threads);
    MlaLayers* L = layers.get();
    Output out{in, w, opts.type, opts.n_threads};
    const int64_t E = hp.n_embd, H = hp.n_head, R = opts.spec.rank, nope = geo.nope, hd_v = hp.head_dim_v;
    for (size_t i = 0; i < in.n_tensors(); ++i) {
        const GGUFTensorInfo& t = in.tensor(i);
        uint32_t il = 0;
        std::string rest;
        if (t.name == "rope_freqs.weight") {
            // Llama 3.1 factors per source pair; the kept pairs are the first d_r / 2.
            const std::vector<float> f = read_f32(in, t.name, hp.n_rot / 2, 1);
            out.computed(t.name, {int64_t(d_r / 2)}, [f, d_r] { return std::vector<float>(f.begin(), f.begin() + d_r / 2); });
            continue;
        }
        if (!split_block_name(t.name, &il, &rest) || il >= hp.n_layer) {
            out.copy(t);
            continue;
        }
        const std::string p = strfmt("blk.%u.", il);
        if (rest == "attn_norm.weight" || rest == "attn_q.weight") L->schedule(il);
        if (rest == "attn_norm.weight") {
            out.computed(t.name, {E}, [L, il] { return L->get(il).attn_norm; });
        } else if (rest == "attn_q.weight") {
            out.computed(t.name, {E, H * hd}, [L, il] { return L->get(il).attn_q; });
            out.computed(p + "attn_kv_a_mqa.weight", {E, R + int64_t(d_r)}, [L, il] { return L->get(il).kv_a_mqa; });
            out.computed(p + "attn_kv_a_norm.weight", {R}, [L, il] { return L->get(il).kv_a_norm; });
            out.computed(p + "attn_k_b.weight", {nope, R, H}, [L, il] { return L->get(il).k_b; });
            out.computed(p + "attn_v_b.weight", {R, hd_v, H}, [L, il] { return L->get(il).v_b; });
        } else if (rest == "attn_k.weight" || rest == "attn_v.weight") {
            continue;  // factored into the tensors above
        } else {
            out.copy(t);  // attn_output (heads keep their order and value size), the FFN, norms
        }
    }
    sum.arch_out = "deepseek2";
    sum.n_head_kv_out = 1;
    sum.kv_values_out = uint64_t(R) + d_r;
}

}  // namespace

AttnSpec parse_attn_spec(const std::string& spec) {
    AttnSpec s;
    if (spec == "mqa") return s;
    const size_t colon = spec.find(':');
    const std::string kind = spec.substr(0, colon);
    if (colon == std::string::npos || (kind != "gqa" && kind != "mla")) bad_spec(spec, "unknown form");
    const std::string rest = spec.substr(colon + 1);
    if (kind == "gqa") {
        s.group = spec_number(spec, rest);
        return s;
    }
    s.kind = AttnSpec::Kind::MLA;
    const size_t colon2 = rest.find(':');
    s.rank = spec_number(spec, rest.substr(0, colon2));
    if (colon2 != std::string::npos) {
        s.rope_dim = spec_number(spec, rest.substr(colon2 + 1));
        if (s.rope_dim % 2) bad_spec(spec, "the rope dims D must be even (rotary pairs)");
    }
    return s;
}

TopSubspace top_right_singular(const std::vector<double>& a, int64_t m, int64_t n, int64_t k) {
    MF_ASSERT(int64_t(a.size()) == m * n && k >= 1 && k <= n);
    TopSubspace out;
    out.vt.assign(size_t(k * n), 0.0);
    out.s.assign(size_t(k), 0.0);
    // The Gram matrix of the smaller side: its eigenvectors are a's left (m <= n) or right singular vectors.
    const bool left = m <= n;
    const int64_t g = left ? m : n;
    std::vector<double> gram(size_t(g * g), 0.0);
    for (int64_t i = 0; i < g; ++i)
        for (int64_t j = i; j < g; ++j) {
            double d = 0.0;
            if (left)
                for (int64_t c = 0; c < n; ++c) d += a[size_t(i * n + c)] * a[size_t(j * n + c)];
            else
                for (int64_t r = 0; r < m; ++r) d += a[size_t(r * n + i)] * a[size_t(r * n + j)];
            gram[size_t(i * g + j)] = gram[size_t(j * g + i)] = d;
        }
    std::vector<double> w, v;
    jacobi_eigen(gram, g, w, v);
    std::vector<int64_t> order(static_cast<size_t>(g));
    for (int64_t i = 0; i < g; ++i) order[size_t(i)] = i;
    std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return w[size_t(x)] > w[size_t(y)]; });
    const double w_max = std::max(0.0, w[size_t(order[0])]);
    int64_t found = 0;
    for (int64_t idx = 0; idx < std::min(k, g); ++idx) {
        const int64_t e = order[size_t(idx)];
        const double lambda = w[size_t(e)];
        if (!(lambda > 1e-24 * w_max) || lambda <= 0) break;  // numerically zero: completed below
        double* row = &out.vt[size_t(found * n)];
        if (left) {
            for (int64_t c = 0; c < n; ++c) {  // v = A^T u / s
                double d = 0.0;
                for (int64_t r = 0; r < m; ++r) d += a[size_t(r * n + c)] * v[size_t(r * g + e)];
                row[c] = d;
            }
        } else {
            for (int64_t c = 0; c < n; ++c) row[c] = v[size_t(c * g + e)];
        }
        if (orthonormalize_row(out.vt, found, n) < 1e-6 * (left ? std::sqrt(lambda) : 1.0)) continue;
        out.s[size_t(found)] = std::sqrt(lambda);
        ++found;
    }
    // Past the rank: unit vectors made orthogonal to the rows so far, skipping those already spanned.
    for (int64_t c = 0; found < k && c < n; ++c) {
        double* row = &out.vt[size_t(found * n)];
        std::fill(row, row + n, 0.0);
        row[c] = 1.0;
        if (orthonormalize_row(out.vt, found, n) > 1e-3) ++found;
    }
    MF_ASSERT(found == k);
    return out;
}

AttnConvertSummary convert_attention(const AttnConvertOptions& opts) {
    if (opts.out_path.empty()) throw Error("no output path");
    const GGUFFile in = GGUFFile::open(opts.in_path);
    const std::string arch = in.get_str("general.architecture");
    if (arch != "llama" && arch != "qwen2")
        throw Error(strfmt("%s: --attn converts llama and qwen2 files, not architecture '%s'", in.name().c_str(),
                           gguf_escape(arch, 40).c_str()));
    const HParams hp = load_hparams(in);
    if (opts.spec.kind == AttnSpec::Kind::MLA && opts.spec.rank == 0) throw Error("--attn mla: the rank must be at least 1");
    switch (opts.type) {
        case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0: case DType::Q4_K:
        case DType::Q6_K: break;
        default: throw Error(strfmt("--type %s: recomputed tensors can be f32, f16, bf16, q8_0, q4_0, q4_k or q6_k",
                                    dtype_name(opts.type)));
    }
    AttnConvertOptions o = opts;
    if (o.n_threads <= 0) o.n_threads = int(std::max(1u, std::thread::hardware_concurrency()));

    AttnConvertSummary sum;
    sum.arch_in = sum.arch_out = arch;
    sum.n_head = hp.n_head;
    sum.n_head_kv_in = hp.n_head_kv[0];
    sum.kv_values_in = uint64_t(hp.n_head_kv[0]) * (hp.head_dim_k + hp.head_dim_v);
    GGUFWriter w;
    std::unique_ptr<MlaLayers> layers;
    MlaGeometry geo{};
    if (o.spec.kind == AttnSpec::Kind::GQA)
        convert_gqa(in, hp, o, w, sum);
    else
        convert_mla(in, hp, o, w, sum, layers, geo);
    w.write(o.out_path);  // beside it first, then renamed: no partial file under its name
    if (layers) {
        sum.svd_rel_error = layers->mean_svd_err();
        sum.k_pe_rel_error = layers->mean_k_pe_err();
    }
    return sum;
}

}  // namespace mf
