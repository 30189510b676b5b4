// Bar and line charts as PNG: an RGB canvas with rectangles, thick lines and text in a 5x7 pixel
// font (printable ASCII, scaled by whole pixels), axes with rounded tick values, and a legend.
#include "tools/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>

#include "core/common.h"

namespace mf {

namespace {

// The 5x7 font, ' ' (32) to '~' (126): five columns per glyph, left to right; bit r of a column is
// pixel row r from the top (row 7 unused).
const uint8_t kFont[95][5] = {
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, {0x00, 0x07, 0x00, 0x07, 0x00},
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},
    {0x36, 0x49, 0x55, 0x22, 0x50}, {0x00, 0x05, 0x03, 0x00, 0x00}, {0x00, 0x1C, 0x22, 0x41, 0x00},
    {0x00, 0x41, 0x22, 0x1C, 0x00}, {0x14, 0x08, 0x3E, 0x08, 0x14}, {0x08, 0x08, 0x3E, 0x08, 0x08},
    {0x00, 0x50, 0x30, 0x00, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, {0x00, 0x60, 0x60, 0x00, 0x00},
    {0x20, 0x10, 0x08, 0x04, 0x02}, {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},
    {0x42, 0x61, 0x51, 0x49, 0x46}, {0x21, 0x41, 0x45, 0x4B, 0x31}, {0x18, 0x14, 0x12, 0x7F, 0x10},
    {0x27, 0x45, 0x45, 0x45, 0x39}, {0x3C, 0x4A, 0x49, 0x49, 0x30}, {0x01, 0x71, 0x09, 0x05, 0x03},
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x06, 0x49, 0x49, 0x29, 0x1E}, {0x00, 0x36, 0x36, 0x00, 0x00},
    {0x00, 0x56, 0x36, 0x00, 0x00}, {0x08, 0x14, 0x22, 0x41, 0x00}, {0x14, 0x14, 0x14, 0x14, 0x14},
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x51, 0x09, 0x06}, {0x32, 0x49, 0x79, 0x41, 0x3E},
    {0x7E, 0x11, 0x11, 0x11, 0x7E}, {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},
    {0x7F, 0x41, 0x41, 0x22, 0x1C}, {0x7F, 0x49, 0x49, 0x49, 0x41}, {0x7F, 0x09, 0x09, 0x09, 0x01},
    {0x3E, 0x41, 0x49, 0x49, 0x7A}, {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, {0x7F, 0x40, 0x40, 0x40, 0x40},
    {0x7F, 0x02, 0x0C, 0x02, 0x7F}, {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, {0x7F, 0x09, 0x19, 0x29, 0x46},
    {0x46, 0x49, 0x49, 0x49, 0x31}, {0x01, 0x01, 0x7F, 0x01, 0x01}, {0x3F, 0x40, 0x40, 0x40, 0x3F},
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F}, {0x63, 0x14, 0x08, 0x14, 0x63},
    {0x07, 0x08, 0x70, 0x08, 0x07}, {0x61, 0x51, 0x49, 0x45, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x00},
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x7F, 0x00}, {0x04, 0x02, 0x01, 0x02, 0x04},
    {0x40, 0x40, 0x40, 0x40, 0x40}, {0x00, 0x01, 0x02, 0x04, 0x00}, {0x20, 0x54, 0x54, 0x54, 0x78},
    {0x7F, 0x48, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x20}, {0x38, 0x44, 0x44, 0x48, 0x7F},
    {0x38, 0x54, 0x54, 0x54, 0x18}, {0x08, 0x7E, 0x09, 0x01, 0x02}, {0x0C, 0x52, 0x52, 0x52, 0x3E},
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, {0x20, 0x40, 0x44, 0x3D, 0x00},
    {0x7F, 0x10, 0x28, 0x44, 0x00}, {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x18, 0x04, 0x78},
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, {0x7C, 0x14, 0x14, 0x14, 0x08},
    {0x08, 0x14, 0x14, 0x18, 0x7C}, {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x20},
    {0x04, 0x3F, 0x44, 0x40, 0x20}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, {0x1C, 0x20, 0x40, 0x20, 0x1C},
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, {0x44, 0x28, 0x10, 0x28, 0x44}, {0x0C, 0x50, 0x50, 0x50, 0x3C},
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, {0x00, 0x00, 0x7F, 0x00, 0x00},
    {0x00, 0x41, 0x36, 0x08, 0x00}, {0x02, 0x01, 0x02, 0x04, 0x02},
};

constexpr int GLYPH_ADVANCE = 6;  // 5 columns and a space, times the scale
constexpr int GLYPH_HEIGHT = 7;

const Rgb kWhite{255, 255, 255};
const Rgb kGrid{225, 225, 225};
const Rgb kText{20, 20, 20};
// Distinct, colour-blind-friendlier hues (Okabe-Ito order, then two greys of blue/red).
const Rgb kPalette[8] = {{0, 114, 178}, {230, 159, 0}, {0, 158, 115}, {204, 121, 167},
                         {213, 94, 0},  {86, 180, 233}, {240, 228, 66}, {120, 120, 120}};

// Margins around the axes: room for the title, tick labels, axis labels, and the legend at right.
constexpr int LEFT = 120, RIGHT = 230, TOP = 80, BOTTOM = 100;

class Canvas {
public:
    Canvas() : px_(size_t(kChartWidth) * kChartHeight * 3, 255) {}

    void set(int x, int y, Rgb c) {
        if (x < 0 || y < 0 || x >= kChartWidth || y >= kChartHeight) return;
        uint8_t* p = &px_[(size_t(y) * kChartWidth + size_t(x)) * 3];
        p[0] = c.r, p[1] = c.g, p[2] = c.b;
    }
    void fill(int x0, int y0, int x1, int y1, Rgb c) {  // [x0, x1) x [y0, y1)
        for (int y = y0; y < y1; ++y)
            for (int x = x0; x < x1; ++x) set(x, y, c);
    }
    // A line of the given thickness (a square pen stamped along Bresenham's path).
    void line(int x0, int y0, int x1, int y1, int thick, Rgb c) {
        const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
        int err = dx + dy;
        for (;;) {
            fill(x0 - thick / 2, y0 - thick / 2, x0 - thick / 2 + thick, y0 - thick / 2 + thick, c);
            if (x0 == x1 && y0 == y1) break;
            const int e2 = 2 * err;
            if (e2 >= dy) err += dy, x0 += sx;
            if (e2 <= dx) err += dx, y0 += sy;
        }
    }
    // Text with its top-left corner at (x, y); vertical text runs bottom to top from (x, y).
    void text(int x, int y, const std::string& s, int scale, Rgb c, bool vertical = false) {
        for (size_t i = 0; i < s.size(); ++i) {
            const unsigned char ch = static_cast<unsigned char>(s[i]);
            const uint8_t* g = kFont[(ch >= 32 && ch <= 126 ? ch : '?') - 32];
            const int off = int(i) * GLYPH_ADVANCE * scale;
            for (int col = 0; col < 5; ++col)
                for (int row = 0; row < GLYPH_HEIGHT; ++row) {
                    if (!((g[col] >> row) & 1)) continue;
                    if (vertical) fill(x + row * scale, y - off - (col + 1) * scale, x + (row + 1) * scale,
                                       y - off - col * scale, c);
                    else fill(x + off + col * scale, y + row * scale, x + off + (col + 1) * scale, y + (row + 1) * scale, c);
                }
        }
    }
    void write(const std::string& path) const {
        if (!stbi_write_png(path.c_str(), kChartWidth, kChartHeight, 3, px_.data(), kChartWidth * 3))
            throw Error(path + ": cannot write the PNG file");
    }

private:
    std::vector<uint8_t> px_;
};

int text_width(const std::string& s, int scale) { return int(s.size()) * GLYPH_ADVANCE * scale - scale; }

// A tick value in few characters: 0.25, 12, 1.5k, 2.4M, 3G.
std::string tick_label(double v) {
    const double a = std::fabs(v);
    const auto trim = [](std::string s) {
        if (s.find('.') != std::string::npos) {
            while (s.back() == '0') s.pop_back();
            if (s.back() == '.') s.pop_back();
        }
        return s;
    };
    if (a >= 1e9) return trim(strfmt("%.2f", v / 1e9)) + "G";
    if (a >= 1e6) return trim(strfmt("%.2f", v / 1e6)) + "M";
    if (a >= 1e4) return trim(strfmt("%.1f", v / 1e3)) + "k";
    if (a >= 10 || a == 0) return trim(strfmt("%.1f", v));
    return trim(strfmt("%.3g", v));
}

// A rounded step (1, 2 or 5 times a power of ten) giving about n ticks over [0, hi].
double nice_step(double hi, int n) {
    const double raw = hi / n, p = std::pow(10.0, std::floor(std::log10(raw))), f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p;
}

// The frame every chart shares: title, the y axis from 0 to a rounded maximum with grid lines and
// tick labels, the axis labels. Returns the y axis' top value.
double draw_frame(Canvas& cv, const PixelRect& plot, const std::string& title, const std::string& x_label,
                  const std::string& y_label, double y_max) {
    cv.text((kChartWidth - text_width(title, 3)) / 2, 24, title, 3, kText);
    const double step = nice_step(y_max > 0 ? y_max : 1.0, 6);
    const double top = step * std::ceil((y_max > 0 ? y_max : 1.0) / step);
    for (double v = 0; v <= top + step / 2; v += step) {
        const int y = plot.y1 - 1 - int(std::lround(v / top * (plot.y1 - plot.y0 - 1)));
        cv.fill(plot.x0, y, plot.x1, y + 1, kGrid);
        cv.fill(plot.x0 - 6, y, plot.x0, y + 1, kText);
        const std::string s = tick_label(v);
        cv.text(plot.x0 - 10 - text_width(s, 2), y - GLYPH_HEIGHT, s, 2, kText);
    }
    cv.fill(plot.x0 - 2, plot.y0, plot.x0, plot.y1, kText);      // y axis
    cv.fill(plot.x0 - 2, plot.y1, plot.x1, plot.y1 + 2, kText);  // x axis
    cv.text((plot.x0 + plot.x1 - text_width(x_label, 2)) / 2, kChartHeight - 36, x_label, 2, kText);
    cv.text(22, (plot.y0 + plot.y1 + text_width(y_label, 2)) / 2, y_label, 2, kText, true);
    return top;
}

// The legend at the right of the plot: a swatch and a name per series, in a framed box.
PixelRect draw_legend(Canvas& cv, const PixelRect& plot, const std::vector<std::string>& names) {
    constexpr int row_h = 28, pad = 10;
    size_t max_chars = 0;
    for (const auto& n : names) max_chars = std::max(max_chars, n.size());
    const int max_w = kChartWidth - plot.x1 - 30 - 3 * pad - 22;
    PixelRect box{plot.x1 + 20, plot.y0, plot.x1 + 20 + 3 * pad + 22 + std::min(max_w, text_width(std::string(max_chars, 'x'), 2)),
                  plot.y0 + 2 * pad + row_h * int(names.size()) - (row_h - 16)};
    cv.fill(box.x0, box.y0, box.x1, box.y0 + 1, kText);
    cv.fill(box.x0, box.y1 - 1, box.x1, box.y1, kText);
    cv.fill(box.x0, box.y0, box.x0 + 1, box.y1, kText);
    cv.fill(box.x1 - 1, box.y0, box.x1, box.y1, kText);
    for (size_t i = 0; i < names.size(); ++i) {
        const int y = box.y0 + pad + row_h * int(i);
        cv.fill(box.x0 + pad, y, box.x0 + pad + 22, y + 16, series_color(i));
        std::string name = names[i];
        const size_t fit = size_t(max_w / (GLYPH_ADVANCE * 2));
        if (name.size() > fit) name = name.substr(0, fit);
        cv.text(box.x0 + 2 * pad + 22, y + 1, name, 2, kText);
    }
    return box;
}

PixelRect plot_rect() { return {LEFT, TOP, kChartWidth - RIGHT, kChartHeight - BOTTOM}; }

}  // namespace

Rgb series_color(size_t i) { return kPalette[i % 8]; }
Rgb text_color() { return kText; }

ChartLayout bar_chart(const std::string& path, const BarChart& c) {
    if (c.series.empty() || c.categories.empty()) throw Error("bar chart '" + c.title + "': no series or no categories");
    if (c.values.size() != c.series.size()) throw Error("bar chart '" + c.title + "': one value row per series expected");
    double y_max = 0;
    for (const auto& row : c.values) {
        if (row.size() != c.categories.size())
            throw Error("bar chart '" + c.title + "': one value per category expected");
        for (double v : row) {
            if (v < 0) throw Error("bar chart '" + c.title + "': negative value");
            if (std::isfinite(v)) y_max = std::max(y_max, v);
        }
    }
    Canvas cv;
    ChartLayout layout;
    layout.plot = plot_rect();
    const PixelRect& p = layout.plot;
    const double top = draw_frame(cv, p, c.title, c.x_label, c.y_label, y_max);
    const int n_cat = int(c.categories.size()), n_ser = int(c.series.size());
    const double group_w = double(p.x1 - p.x0) / n_cat;
    const int bar_w = std::max(1, int(group_w * 0.8 / n_ser));
    for (int ic = 0; ic < n_cat; ++ic) {
        const int gx = p.x0 + int(group_w * ic + group_w * 0.1);
        for (int is = 0; is < n_ser; ++is) {
            const double v = c.values[size_t(is)][size_t(ic)];
            if (!std::isfinite(v)) continue;
            const int x = gx + is * bar_w, h = int(std::lround(v / top * (p.y1 - p.y0 - 1)));
            cv.fill(x + 1, p.y1 - h, x + bar_w - 1, p.y1, series_color(size_t(is)));
            const std::string s = tick_label(v);
            if (text_width(s, 1) <= bar_w) cv.text(x + (bar_w - text_width(s, 1)) / 2, p.y1 - h - 10, s, 1, kText);
        }
        const std::string& name = c.categories[size_t(ic)];
        const int scale = text_width(name, 2) <= int(group_w) ? 2 : 1;
        cv.text(p.x0 + int(group_w * (ic + 0.5)) - text_width(name, scale) / 2, p.y1 + 12, name, scale, kText);
    }
    layout.legend = draw_legend(cv, p, c.series);
    cv.write(path);
    return layout;
}

ChartLayout line_chart(const std::string& path, const LineChart& c) {
    if (c.series.empty()) throw Error("line chart '" + c.title + "': no series");
    double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_max = 0;
    for (const auto& s : c.series) {
        if (s.x.size() != s.y.size() || s.x.empty())
            throw Error("line chart '" + c.title + "': series '" + s.name + "' has no points or unequal x and y");
        for (size_t i = 0; i < s.x.size(); ++i) {
            if (c.log2_x && !(s.x[i] > 0)) throw Error("line chart '" + c.title + "': a log x axis needs x > 0");
            const double x = c.log2_x ? std::log2(s.x[i]) : s.x[i];
            x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
            if (std::isfinite(s.y[i])) {
                if (s.y[i] < 0) throw Error("line chart '" + c.title + "': negative value");
                y_max = std::max(y_max, s.y[i]);
            }
        }
    }
    if (x_hi == x_lo) x_lo -= 1, x_hi += 1;
    Canvas cv;
    ChartLayout layout;
    layout.plot = plot_rect();
    const PixelRect& p = layout.plot;
    const double top = draw_frame(cv, p, c.title, c.x_label, c.y_label, y_max);
    const int inset = 30;  // keeps the end markers off the axes
    const auto px = [&](double x) {
        const double u = ((c.log2_x ? std::log2(x) : x) - x_lo) / (x_hi - x_lo);
        return p.x0 + inset + int(std::lround(u * (p.x1 - p.x0 - 2 * inset)));
    };
    const auto py = [&](double y) { return p.y1 - 1 - int(std::lround(y / top * (p.y1 - p.y0 - 1))); };
    // x ticks: every power of two in range (log axis), else about 8 rounded steps.
    std::vector<double> ticks;
    if (c.log2_x) {
        for (double e = std::ceil(x_lo - 1e-9); e <= x_hi + 1e-9; e += 1) ticks.push_back(std::exp2(e));
    } else {
        const double step = nice_step(x_hi - x_lo, 8);
        for (double v = std::ceil(x_lo / step) * step; v <= x_hi + 1e-9; v += step) ticks.push_back(v);
    }
    for (double t : ticks) {
        const int x = px(t);
        cv.fill(x, p.y0, x + 1, p.y1, kGrid);
        cv.fill(x, p.y1 + 2, x + 1, p.y1 + 8, kText);
        const double a = std::fabs(t);
        const std::string s = c.log2_x && a >= 1024 && std::fmod(a, 1024) == 0 ? strfmt("%.0fk", t / 1024) : tick_label(t);
        cv.text(x - text_width(s, 2) / 2, p.y1 + 14, s, 2, kText);
    }
    std::vector<std::string> names;
    for (size_t is = 0; is < c.series.size(); ++is) {
        const LineSeries& s = c.series[is];
        names.push_back(s.name);
        const Rgb col = series_color(is);
        for (size_t i = 0; i < s.x.size(); ++i) {
            if (!std::isfinite(s.y[i])) continue;
            const int x = px(s.x[i]), y = py(s.y[i]);
            if (i + 1 < s.x.size() && std::isfinite(s.y[i + 1])) cv.line(x, y, px(s.x[i + 1]), py(s.y[i + 1]), 3, col);
            cv.fill(x - 5, y - 5, x + 6, y + 6, col);
        }
    }
    layout.legend = draw_legend(cv, p, names);
    cv.write(path);
    return layout;
}

}  // namespace mf
