// The CPU backend: host memory, a thread pool, and the reference implementation of every op.
#pragma once

#include <memory>

#include "core/backend.h"

namespace mf {

// n_threads <= 0 uses every hardware thread.
std::unique_ptr<Backend> make_cpu_backend(int n_threads = 0);

}  // namespace mf
