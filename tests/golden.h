// The golden greedy-decoding fixtures made with llama-cpp-python (tests/fixtures/golden/make_*.py):
// per case the prompt text, its token ids, llama.cpp's greedy tokens and its top-1/top-2 logits.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "models/model.h"
#include "models/session.h"
#include "models/tokenizer.h"

namespace mf_test {

struct GoldenCase {
    std::string text;
    std::vector<int32_t> prompt, greedy;
    std::vector<float> top1, top2;  // llama.cpp's best and runner-up logits at each step
};

inline std::vector<GoldenCase> read_golden(const std::string& path) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in, "missing fixture ", path);
    std::vector<GoldenCase> cases;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream ss(line);
        std::string tag;
        ss >> tag;
        if (tag == "text_hex") {
            cases.emplace_back();
            std::string hex;
            ss >> hex;
            for (size_t i = 0; i + 1 < hex.size(); i += 2) cases.back().text += char(std::stoi(hex.substr(i, 2), nullptr, 16));
        } else if (tag == "prompt" || tag == "greedy") {
            int32_t id;
            while (ss >> id) (tag == "prompt" ? cases.back().prompt : cases.back().greedy).push_back(id);
        } else if (tag == "top1" || tag == "top2") {
            float v;
            while (ss >> v) (tag == "top1" ? cases.back().top1 : cases.back().top2).push_back(v);
        }
    }
    return cases;
}

// Two engines that both quantize activations to 8 bits (llama.cpp and minfer's CPU backend, or
// minfer's CPU and CUDA backends) differ by rounding order, and on SmolLM2 the difference reaches the
// logits as up to ~0.6 (CPU against llama.cpp: 0.59 over 192 steps; CUDA against llama.cpp: 0.74;
// each sits ~10% rms from a float64 forward pass with the same quantization). So a greedy choice is
// only determined where the reference's top-1 beats its runner-up by more than that noise:
// kSmolLM2ClearMargin. Below it either token is correct. Our logit of the reference's choice stays
// within kSmolLM2LogitTolerance of its own.
constexpr float kSmolLM2ClearMargin = 1.0f;
constexpr float kSmolLM2LogitTolerance = 1.0f;

// What check_golden_case saw, summed over the cases of a suite.
struct GoldenStats {
    size_t steps = 0, same = 0, free_run = 0;  // teacher-forced steps, equal choices, free-running tokens
    float worst_logit = 0;                       // largest |our logit - llama.cpp's top-1| at its choice
    float widest_disagreement = 0;               // llama.cpp's widest top-1 margin where the choices differ
};

// One golden case against the model: the prompt tokenizes to llama.cpp's ids; teacher-forced on
// llama.cpp's tokens, every step's choice equals its own where its top-1 beats the runner-up by
// clear_margin, and our logit of its choice is within logit_tolerance of its top-1; free-running
// greedy decoding gives its tokens up to the first step below clear_margin.
inline void check_golden_case(const mf::Model& model, const GoldenCase& c, const mf::SessionParams& params,
                              float clear_margin, float logit_tolerance, GoldenStats& stats) {
    CAPTURE(c.text.substr(0, 60));
    REQUIRE(c.top1.size() == c.greedy.size());
    REQUIRE(c.top2.size() == c.greedy.size());
    CHECK(mf::tokenize(model.vocab, c.text, true, true) == c.prompt);
    auto argmax = [](const std::vector<float>& v) {
        return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
    };

    mf::Session s(model, params);
    const std::vector<float>* logits = &s.prefill(c.prompt);
    for (size_t i = 0; i < c.greedy.size(); ++i) {
        CAPTURE(i);
        const int32_t ours = argmax(*logits);
        if (c.top1[i] - c.top2[i] >= clear_margin) CHECK(ours == c.greedy[i]);
        const float d = std::fabs((*logits)[size_t(c.greedy[i])] - c.top1[i]);
        stats.worst_logit = std::max(stats.worst_logit, d);
        CHECK(d <= logit_tolerance);
        stats.same += ours == c.greedy[i];
        if (ours != c.greedy[i]) stats.widest_disagreement = std::max(stats.widest_disagreement, c.top1[i] - c.top2[i]);
        ++stats.steps;
        logits = &s.decode(c.greedy[i]);
    }

    s.reset();
    logits = &s.prefill(c.prompt);
    for (size_t i = 0; i < c.greedy.size() && c.top1[i] - c.top2[i] >= clear_margin; ++i) {
        CAPTURE(i);
        const int32_t ours = argmax(*logits);
        REQUIRE(ours == c.greedy[i]);
        ++stats.free_run;
        logits = &s.decode(ours);
    }
}

}  // namespace mf_test
