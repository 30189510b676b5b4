// Helpers shared by the doctest suites: a seeded RNG whose seed is printed, random inputs, and error
// measures.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace mf_test {

// The suite's seed: MINFER_SEED from the environment, else fresh each run; printed once so a
// failure can be replayed with MINFER_SEED=<seed>.
inline uint64_t seed() {
    static uint64_t s = [] {
        const char* env = std::getenv("MINFER_SEED");
        uint64_t v = env ? std::strtoull(env, nullptr, 10) : std::random_device{}();
        std::printf("MINFER_SEED=%llu\n", (unsigned long long)v);
        return v;
    }();
    return s;
}

inline std::mt19937_64& rng() {
    static std::mt19937_64 g(seed());
    return g;
}

// n values uniform in [lo, hi).
inline std::vector<float> random_floats(size_t n, float lo = -1.0f, float hi = 1.0f) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng());
    return v;
}

// ||a - b|| / ||b||, in double.
inline double rel_error(const float* a, const double* b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; ++i) {
        num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
        den += b[i] * b[i];
    }
    return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// max_i |got_i - want_i| / max_i |want_i|: the worst logit error on the scale of the largest logit.
template <class A, class B>
double max_rel_diff(const std::vector<A>& got, const std::vector<B>& want) {
    double num = 0, den = 0;
    const size_t n = got.size() < want.size() ? got.size() : want.size();
    for (size_t i = 0; i < n; ++i) {
        num = std::fmax(num, std::fabs(double(got[i]) - double(want[i])));
        den = std::fmax(den, std::fabs(double(want[i])));
    }
    if (got.size() != want.size()) return INFINITY;  // a size mismatch is never "close"
    return den > 0 ? num / den : num;
}

// n token ids uniform in [3, n_vocab): above the ids the tiny test vocabularies give special tokens.
inline std::vector<int32_t> random_tokens(size_t n, int32_t n_vocab) {
    std::uniform_int_distribution<int32_t> d(3, n_vocab - 1);
    std::vector<int32_t> t(n);
    for (auto& x : t) x = d(rng());
    return t;
}

inline std::string source_path(const std::string& rel) { return std::string(MINFER_SOURCE_DIR) + "/" + rel; }
inline std::string shared_path(const std::string& rel) { return std::string(MINFER_SHARED_DIR) + "/" + rel; }

}  // namespace mf_test
