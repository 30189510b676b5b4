// Token sampling from logits: greedy, or repetition penalty -> top-k -> top-p -> min-p ->
// temperature -> a draw from a seeded RNG (llama.cpp's default chain order). Same seed, same tokens.
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <vector>

namespace mf {

struct SamplerParams {
    float temp = 0.8f;            // <= 0: greedy (argmax)
    int top_k = 40;               // <= 0: off
    float top_p = 0.95f;          // >= 1: off
    float min_p = 0.05f;          // <= 0: off; keep tokens with p >= min_p * p_max
    float repeat_penalty = 1.0f;  // 1: off; divides positive (multiplies negative) logits of recent tokens
    int repeat_last_n = 64;       // window of recent tokens the penalty looks at
    uint64_t seed = 0;
};

class Sampler {
public:
    explicit Sampler(const SamplerParams& params);
    // Picks the next token from logits [n_vocab]; does not record it (call accept).
    int32_t sample(const float* logits, int32_t n_vocab);
    // Records a token (prompt or generated) in the repetition-penalty window.
    void accept(int32_t token);
    // Forgets history and restarts the RNG from the seed.
    void reset();
    const SamplerParams& params() const { return params_; }

private:
    struct Candidate {
        int32_t id;
        float logit;
        float p;
    };
    double uniform();  // [0, 1), reproducible across platforms

    SamplerParams params_;
    std::mt19937_64 rng_;
    std::deque<int32_t> recent_;
    std::vector<Candidate> cand_;
};

}  // namespace mf
