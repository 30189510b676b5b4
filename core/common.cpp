// Implementation of the shared basics in common.h.
#include "core/common.h"

#include <cstdarg>
#include <vector>

namespace mf {

void assert_fail(const char* file, int line, const char* expr, const char* msg) {
    std::fprintf(stderr, "%s:%d: assertion failed: %s%s%s\n", file, line, expr,
                 msg ? ": " : "", msg ? msg : "");
    std::fflush(stderr);
    std::abort();
}

std::string strfmt(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string out;
    if (n > 0) {
        std::vector<char> buf(size_t(n) + 1);
        std::vsnprintf(buf.data(), buf.size(), fmt, ap2);
        out.assign(buf.data(), size_t(n));
    }
    va_end(ap2);
    return out;
}

void check_json_depth(const char* begin, const char* end, const std::string& what) {
    int depth = 0;
    bool in_string = false;
    for (const char* p = begin; p < end; ++p) {
        const char c = *p;
        if (in_string) {
            if (c == '\\') ++p;  // the escaped character, a quote included
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxJsonDepth) throw Error(strfmt("%s: JSON nested deeper than %d levels", what.c_str(), kMaxJsonDepth));
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
}

}  // namespace mf
