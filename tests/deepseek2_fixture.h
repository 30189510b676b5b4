// The deepseek2 fixtures (tiny DeepseekV2 checkpoints made with transformers, tests/fixtures/hf/) for
// the CPU and CUDA suites: transformers' expected outputs and conversion to GGUF.
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
#include "session_fixture.h"
#include "test_util.h"

namespace mf_test::ds2 {

using namespace mf;
using mf_test::argmax;
using mf_test::decode_each;
using mf_test::greedy_after;
using mf_test::prefill_each;

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

}  // namespace mf_test::ds2
