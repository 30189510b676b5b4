// The generation loop the run and chat tools share: prefill a prompt, then sample and decode
// until an end-of-generation token, a token limit, or the caller asks to stop.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "models/sampler.h"
#include "models/session.h"

namespace mf {

struct GenerateStats {
    int n_prompt = 0;       // tokens prefilled
    double prompt_s = 0.0;  // seconds spent prefilling
    int n_gen = 0;          // tokens generated (the end-of-generation token not counted)
    double gen_s = 0.0;     // seconds spent generating
    bool hit_eog = false;   // stopped at an end-of-generation token
};

// Streams the reply's text through on_text as complete UTF-8 pieces; on_text returns false to stop.
// n_predict < 0 generates until end of generation or a full context. Returns the whole reply text.
// Throws Error when the prompt does not fit in the context.
std::string generate(Session& session, Sampler& sampler, const std::vector<int32_t>& prompt, int n_predict,
                     const std::function<bool(const std::string&)>& on_text, GenerateStats* stats);

}  // namespace mf
