// UTF-8 helpers for the tokenizers and the GPT-2 byte <-> character map (see utf8.h).
// The byte map is the one from GPT-2's encoder.py: printable Latin-1 bytes map to themselves.
#include "models/utf8.h"

#include <array>

namespace mf {

size_t utf8_seq_len(char c) {
    static const size_t lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[static_cast<uint8_t>(c) >> 4];
}

void utf8_append(std::string& out, uint32_t cp) {
    if (cp <= 0x7F) {
        out.push_back(char(cp));
    } else if (cp <= 0x7FF) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp <= 0xFFFF) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    }
}

namespace {

// Length of the well-formed sequence at text[pos], or 0 when it is malformed (overlong forms,
// surrogates and code points past U+10FFFF included).
size_t valid_seq_at(const std::string& text, size_t pos) {
    const auto b = [&](size_t i) { return static_cast<uint8_t>(text[pos + i]); };
    const uint8_t c = b(0);
    if (c < 0x80) return 1;
    size_t n;
    uint32_t cp;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; }
    else return 0;
    if (pos + n > text.size()) return 0;
    for (size_t i = 1; i < n; ++i) {
        if ((b(i) & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (b(i) & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

}  // namespace

std::string utf8_sanitize(const std::string& text) {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
        const size_t n = valid_seq_at(text, pos);
        if (n == 0) {
            out += "\xEF\xBF\xBD";
            ++pos;
        } else {
            out.append(text, pos, n);
            pos += n;
        }
    }
    return out;
}

bool utf8_is_valid(const std::string& text) {
    for (size_t pos = 0; pos < text.size();) {
        const size_t n = valid_seq_at(text, pos);
        if (n == 0) return false;
        pos += n;
    }
    return true;
}

size_t utf8_complete_prefix(const std::string& text) {
    // Only the last 3 bytes can belong to an unfinished sequence.
    const size_t n = text.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const uint8_t c = static_cast<uint8_t>(text[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for its lead
        size_t need = 0;
        if ((c & 0xE0) == 0xC0) need = 2;
        else if ((c & 0xF0) == 0xE0) need = 3;
        else if ((c & 0xF8) == 0xF0) need = 4;
        return (need > back) ? n - back : n;
    }
    return n;
}

namespace {

struct ByteMap {
    std::array<std::string, 256> to_char;
    std::array<int, 512> from_cp;  // code points 0..511 cover all 256 byte characters
};

const ByteMap& byte_map() {
    static const ByteMap map = [] {
        ByteMap m;
        m.from_cp.fill(-1);
        std::array<uint32_t, 256> cp{};
        std::array<bool, 256> direct{};
        for (int b = 0x21; b <= 0x7E; ++b) direct[b] = true;
        for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
        for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
        uint32_t next = 256;
        for (int b = 0; b < 256; ++b) cp[b] = direct[b] ? uint32_t(b) : next++;
        for (int b = 0; b < 256; ++b) {
            utf8_append(m.to_char[b], cp[b]);
            m.from_cp[cp[b]] = b;
        }
        return m;
    }();
    return map;
}

}  // namespace

const std::string& bpe_byte_to_char(uint8_t b) { return byte_map().to_char[b]; }

int bpe_char_to_byte(const std::string& text, size_t pos, size_t* len) {
    const size_t n = valid_seq_at(text, pos);
    if (n == 0) {
        *len = 1;
        return -1;
    }
    *len = n;
    uint32_t cp;
    const auto b = [&](size_t i) { return uint32_t(static_cast<uint8_t>(text[pos + i])); };
    if (n == 1) cp = b(0);
    else if (n == 2) cp = ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    else return -1;  // every byte character is below U+0800
    return cp < 512 ? byte_map().from_cp[cp] : -1;
}

}  // namespace mf
