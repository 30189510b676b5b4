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

}  // namespace mf

#define MF_ASSERT(cond)                                                        \
    do {                                                                       \
        if (!(cond)) ::mf::assert_fail(__FILE__, __LINE__, #cond, nullptr);    \
    } while (0)

#define MF_ASSERT_MSG(cond, msg)                                               \
    do {                                                                       \
        if (!(cond)) ::mf::assert_fail(__FILE__, __LINE__, #cond, (msg));      \
    } while (0)
