// The golden greedy-decoding fixtures made with llama-cpp-python (tests/fixtures/golden/make_*.py):
// per case the prompt text, its token ids, llama.cpp's greedy tokens and its top-1/top-2 logits.
#pragma once

#include <doctest/doctest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

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

}  // namespace mf_test
