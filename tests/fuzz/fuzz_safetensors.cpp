// libFuzzer target for the safetensors reader: opens arbitrary bytes as a file (a memfd, through its
// /proc path, as SafetensorsFile maps files), then reads every float tensor's first and last elements
// and checks every tensor's extent against the file. Built and run by tests/fuzz/run.sh, not by CMake.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/common.h"
#include "core/dtype.h"
#include "core/safetensors.h"

namespace {

int memfd() {
    static const int fd = memfd_create("fuzz_safetensors", 0);
    return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const int fd = memfd();
    if (fd < 0 || ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != ssize_t(size))) __builtin_trap();
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    try {
        const mf::SafetensorsFile f = mf::SafetensorsFile::open(path);
        uint64_t covered = 0;
        for (const mf::SafetensorsTensor& t : f.tensors()) {
            if (f.find(t.name) != &t) __builtin_trap();
            if (t.n_bytes > size) __builtin_trap();
            covered += t.n_bytes;
            t.shape_str();
            mf::DType type;
            if (!t.float_type(&type) || t.n_elements == 0) continue;
            float v[2];
            t.read_f32(0, 1, v);
            t.read_f32(t.n_elements - 1, 1, v + 1);
        }
        if (covered > size) __builtin_trap();  // the tensors tile the data: no overlap
    } catch (const mf::Error&) {
    }
    return 0;
}
