// Shared basics for every layer: the bug-abort macro and the bad-input error type.
// Bugs abort with file:line; bad input throws mf::Error, which a tool turns into one line and exit code 1.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace mf {

// Bad input (a file, a flag, a prompt): caught once at the tool boundary.
struct Error : std::runtime_error {
    explicit Error(const std::string& what) : std::runtime_error(what) {}
};

[[noreturn]] void assert_fail(const char* file, int line, const char* expr, const char* msg);

// printf-style formatting into a std::string.
std::string strfmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// JSON text (a config, a tokenizer, a safetensors header) nested deeper than this, in arrays and
// objects, is refused before it is parsed: nlohmann's ordered parser copies nested values as it
// builds, and readers walk them recursively, so a hostile file a million levels deep would overflow
// the stack. Real files nest fewer than 10 levels.
constexpr int kMaxJsonDepth = 256;
// Throws Error("<what>: JSON nested deeper than 256 levels") when the text [begin, end) is.
void check_json_depth(const char* begin, const char* end, const std::string& what);

}  // namespace mf

#define MF_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) ::mf::assert_fail(__FILE__, __LINE__, #cond, nullptr);    \
    } while (0)

#define MF_ASSERT_MSG(cond, msg)                                               \
    do {                                                                       \
        if (!(cond)) ::mf::assert_fail(__FILE__, __LINE__, #cond, (msg));      \
    } while (0)
