// PNG charts for the lab tools: grouped bar charts and line charts drawn into an RGB image with a
// built-in 5x7 bitmap font and written with stb_image_write. Presentation only; no model code.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mf {

constexpr int kChartWidth = 1200, kChartHeight = 800;

struct Rgb {
    uint8_t r = 0, g = 0, b = 0;
    bool operator==(const Rgb& o) const { return r == o.r && g == o.g && b == o.b; }
};

struct PixelRect {
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;  // [x0, x1) x [y0, y1), y down
    bool contains(int x, int y) const { return x >= x0 && x < x1 && y >= y0 && y < y1; }
};

// Where a chart put its parts, for tests and callers that annotate.
struct ChartLayout {
    int width = kChartWidth, height = kChartHeight;
    PixelRect plot;    // the axes' inside: bars, lines and markers
    PixelRect legend;  // the legend box: a swatch of each series' colour and its name
};

struct BarChart {
    std::string title, x_label, y_label;
    std::vector<std::string> categories;      // the groups along x
    std::vector<std::string> series;          // the bars of each group, one legend entry each
    std::vector<std::vector<double>> values;  // [series][category], >= 0; NaN: no bar
};

struct LineSeries {
    std::string name;
    std::vector<double> x, y;  // equal lengths; a NaN y is a gap in the line
};

struct LineChart {
    std::string title, x_label, y_label;
    bool log2_x = false;  // x positions by log2 (x > 0), ticks at the powers of two
    std::vector<LineSeries> series;
};

// The colour of series i (a fixed palette, repeating after 8), and of all text and axes.
Rgb series_color(size_t i);
Rgb text_color();

// Draws the chart (kChartWidth x kChartHeight, y from 0 to a rounded maximum) and writes it to path
// as PNG. Throws Error on no series, mismatched lengths, negative or non-positive-log values, or
// a file that cannot be written.
ChartLayout bar_chart(const std::string& path, const BarChart& chart);
ChartLayout line_chart(const std::string& path, const LineChart& chart);

}  // namespace mf
