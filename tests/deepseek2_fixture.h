// The deepseek2 fixtures (tiny DeepseekV2 checkpoints made with transformers, tests/fixtures/hf/) for
// the CPU and CUDA suites: transformers' expected outputs, conversion to GGUF, and the decode loop.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/common.h"
#include "models/convert.h"
#include "models/model.h"
#include "model_fixture.h"
#include "models/session.h"
#include "test_util.h"

namespace mf_test::ds2 {

using namespace mf;

inline std::string fixture_dir(const std::string& name) { return mf_test::source_path("tests/fixtures/hf/" + name); }

// transformers' float32 outputs for one fixture (expected.json; MLA fixtures have no f16-KV variant).
struct Expected {
    std::vector<int32_t> ids;                 // the sequence fed
    std::vector<std::vector<double>> logits;  // [position][n_vocab], 6 significant digits
    std::vector<int32_t> greedy;              // 16 tokens after ids, argmax each step
    std::vector<double> margins;              // transformers' top-1 minus top-2 at each greedy step
};

inline Expected read_expected(const std::string& name) {
    std::ifstream in(fixture_dir(name) + "/expected.json");
    REQUIRE_MESSAGE(in.good(), "missing fixture ", name);
    const nlohmann::json j = nlohmann::json::parse(in);
    Expected e;
    e.ids = j.at("ids").get<std::vector<int32_t>>();
    e.logits = j.at("logits").get<std::vector<std::vector<double>>>();
    e.greedy = j.at("greedy").get<std::vector<int32_t>>();
    e.margins = j.at("greedy_margins").get<std::vector<double>>();
    REQUIRE(e.logits.size() == e.ids.size());
    return e;
}

inline std::string convert(const std::string& name, DType type) {
    ConvertOptions opts;
    opts.hf_dir = fixture_dir(name);
    opts.out_path = mf_test::temp_path(name + "_ds2_" + dtype_name(type) + ".gguf");
    opts.type = type;
    convert_hf_checkpoint(opts);
    return opts.out_path;
}


inline SessionParams session_params() {
    SessionParams p;
    p.n_ctx = 64;
    return p;
}

inline int32_t argmax(const std::vector<float>& v) { return int32_t(std::max_element(v.begin(), v.end()) - v.begin()); }

// The logits after each of ids, fed one by one (the decode path).
inline std::vector<std::vector<float>> decode_each(const Model& model, const std::vector<int32_t>& ids) {
    Session s(model, session_params());
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < ids.size(); ++i) out.push_back(i == 0 ? s.prefill({ids[0]}) : s.decode(ids[i]));
    return out;
}

}  // namespace mf_test::ds2
