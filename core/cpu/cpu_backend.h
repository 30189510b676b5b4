// The CPU backend: host memory, a thread pool, and the reference implementation of every op.
#pragma once

#include <memory>

#include "core/backend.h"

namespace mf {

// n_threads <= 0 uses every hardware thread. map_weights: a model's weights stay where its file is
// mapped (Backend::maps_weights); false copies them into the backend's memory (`--no-mmap`).
std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0, bool map_weights = true);

}  // namespace mf
