// Registers the backends this build contains. It sits above core/ so core never names CUDA.
#include "core/backend.h"
#include "core/cpu/cpu_backend.h"
#ifdef MINFER_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace mf {

void register_builtin_backends() {
    static bool done = false;
    if (done) return;
    done = true;
    register_backend({"cpu", 0, [](std::string*) { return true; }, [] { return make_cpu_backend(); }});
#ifdef MINFER_HAVE_CUDA
    register_backend({"cuda", 10, [](std::string* why) { return cuda_available(why); },
                      [] { return make_cuda_backend(); }});
#endif
}

}  // namespace mf
