// The entry point of the test_gpu_* executables: on a machine without a usable GPU they exit with
// CTest's skip code (77, SKIP_RETURN_CODE in tests/CMakeLists.txt) and say why, so `ctest -L gpu`
// reports them as skipped, not as failed or passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <string>

#include "cuda/cuda_backend.h"

int main(int argc, char** argv) {
    std::string why;
    if (!mf::cuda_available(&why)) {
        std::printf("skipped: %s\n", why.c_str());
        return 77;
    }
    return doctest::Context(argc, argv).run();
}
