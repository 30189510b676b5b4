// The safetensors reader: values of every float dtype read back exactly, sharded checkpoints through
// the index, and each kind of corrupt file (truncated, offsets past the end, bad header) one clear error.
#include <doctest/doctest.h>

#include <unistd.h>

#include "core/safetensors.h"
#include "safetensors_fixture.h"
#include "test_util.h"

using namespace mf;
using namespace mf_test;

namespace {

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The error opening a file with this header and tensors gives.
std::string open_error(const std::string& header, const std::vector<StTensor>& ts = {}) {
    const std::string dir = temp_dir("bad");
    const std::string path = dir + "/model.safetensors";
    write_safetensors_raw(path, header, ts);
    const std::string e = error_of([&] { SafetensorsFile::open(path); });
    remove_dir(dir);
    return e;
}

}  // namespace

TEST_CASE("F32, F16 and BF16 tensors read back as the values written, in header order") {
    const std::vector<float> a = random_floats(12), b = random_floats(6), c = random_floats(5);
    const std::string dir = temp_dir("rw");
    write_safetensors(dir + "/model.safetensors", {st_tensor("z.weight", {3, 4}, a), st_tensor("a.f16", {2, 3}, b, "F16"),
                                                   st_tensor("m.bf16", {5}, c, "BF16")});
    const SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
    REQUIRE(f.tensors().size() == 3);
    CHECK(f.tensors()[0].name == "z.weight");  // header order, not sorted
    CHECK(f.metadata().at("format") == "pt");
    const SafetensorsTensor* t = f.find("z.weight");
    REQUIRE(t);
    CHECK(t->shape == std::vector<int64_t>{3, 4});
    CHECK(t->shape_str() == "[3, 4]");
    std::vector<float> got(12);
    t->read_f32(0, 12, got.data());
    CHECK(got == a);
    t->read_f32(5, 2, got.data());  // a slice from the middle
    CHECK(got[0] == a[5]);
    CHECK(got[1] == a[6]);
    f.find("a.f16")->read_f32(0, 6, got.data());
    for (int i = 0; i < 6; ++i) CHECK(got[size_t(i)] == fp16_to_fp32(fp32_to_fp16(b[size_t(i)])));
    f.find("m.bf16")->read_f32(0, 5, got.data());
    for (int i = 0; i < 5; ++i) CHECK(got[size_t(i)] == bf16_to_fp32(fp32_to_bf16(c[size_t(i)])));
    CHECK(f.find("absent") == nullptr);
    remove_dir(dir);
}

TEST_CASE("a tensor of another dtype is listed but reading it names the dtype") {
    StTensor ids{"ids", "I64", {2}, std::vector<uint8_t>(16, 0)};
    const std::string dir = temp_dir("i64");
    write_safetensors(dir + "/model.safetensors", {ids});
    const SafetensorsFile f = SafetensorsFile::open(dir + "/model.safetensors");
    DType t;
    CHECK_FALSE(f.find("ids")->float_type(&t));
    float out[2];
    const std::string e = error_of([&] { f.find("ids")->read_f32(0, 2, out); });
    CHECK(contains(e, "tensor 'ids' has dtype I64"));
    CHECK(contains(e, "F32, F16 and BF16"));
    remove_dir(dir);
}

TEST_CASE("corrupt files are one clear error each") {
    const StTensor w = st_tensor("w", {2, 2}, {1, 2, 3, 4});
    const std::string good = st_header({w}).dump();

    CHECK(contains(open_error("", {}), "header is not valid JSON"));
    CHECK(contains(open_error("[1, 2]"), "not a JSON object"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 2]}}", {w}), "'data_offsets' is not a pair"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 16]}}", {w}),
                   "unknown dtype 'Q4'"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, -2], \"data_offsets\": [0, 16]}}", {w}),
                   "not a size"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, 2], \"data_offsets\": [0, 64]}}", {w}),
                   "run past the end of the data (16 bytes): the file is truncated"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [3, 2], \"data_offsets\": [0, 16]}}", {w}),
                   "hold 16 bytes, but F32 [3, 2] needs 24"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 8]}}", {w}), "reversed"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", {w}),
                   "a gap before it"));
    CHECK(contains(open_error("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                              " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
                              {w}),
                   "overlaps another tensor"));
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", {w}),
                   "cover 8 of the 16 data bytes"));
    CHECK(contains(open_error("{\"__metadata__\": 3}", {}), "__metadata__ is not a JSON object"));
    // A shape holding an array is named by its elements' types, not serialized (which recurses).
    CHECK(contains(open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, [[2]]], \"data_offsets\": [0, 16]}}", {w}),
                   "shape [2, array] holds a value that is not a size"));
    // A header nested a million deep (2 MB) is refused before it is parsed: parsing it into the
    // ordered JSON copies nested values recursively, past the stack.
    const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
    const std::string e =
        open_error("{\"w\": {\"dtype\": \"F32\", \"shape\": [2, " + deep + "], \"data_offsets\": [0, 16]}}", {w});
    CHECK(contains(e, "header: JSON nested deeper than 256 levels"));
    CHECK(e.find('\n') == std::string::npos);

    // Truncations: the header length itself, the header, the data.
    const std::string dir = temp_dir("trunc");
    const std::string path = dir + "/model.safetensors";
    const size_t size = write_safetensors_raw(path, good, {w});
    for (size_t keep : {size_t(3), size_t(8 + good.size() / 2), size - 4}) {
        CAPTURE(keep);
        REQUIRE(truncate(path.c_str(), off_t(keep)) == 0);
        const std::string e = error_of([&] { SafetensorsFile::open(path); });
        CHECK(contains(e, path + ": "));
        CHECK((contains(e, "too small") || contains(e, "runs past the end of the file") || contains(e, "truncated")));
        CHECK(e.find('\n') == std::string::npos);
        write_safetensors_raw(path, good, {w});
    }
    CHECK(contains(error_of([&] { SafetensorsFile::open(dir + "/nope.safetensors"); }), "cannot open: No such file"));
    remove_dir(dir);
}

TEST_CASE("a sharded checkpoint is read through its index; a tensor the index names must be in its shard") {
    const std::string dir = temp_dir("shards");
    const std::vector<float> a = random_floats(4), b = random_floats(3);
    write_safetensors(dir + "/model-00001-of-00002.safetensors", {st_tensor("a", {4}, a)});
    write_safetensors(dir + "/model-00002-of-00002.safetensors", {st_tensor("b", {3}, b)});
    write_text(dir + "/model.safetensors.index.json",
               R"({"metadata": {"total_size": 28}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                   "b": "model-00002-of-00002.safetensors"}})");
    {
        const SafetensorsCheckpoint ck = SafetensorsCheckpoint::open(dir);
        CHECK(ck.files().size() == 2);
        REQUIRE(ck.tensors().size() == 2);
        std::vector<float> got(3);
        ck.find("b")->read_f32(0, 3, got.data());
        CHECK(got == b);
    }
    // The index names a tensor its shard lacks.
    write_text(dir + "/model.safetensors.index.json",
               R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors"}})");
    std::string e = error_of([&] { SafetensorsCheckpoint::open(dir); });
    CHECK(contains(e, "tensor 'b' named in the index is absent from"));
    // The index names a shard that is not there.
    write_text(dir + "/model.safetensors.index.json", R"({"weight_map": {"a": "model-00003-of-00003.safetensors"}})");
    e = error_of([&] { SafetensorsCheckpoint::open(dir); });
    CHECK(contains(e, "names shard 'model-00003-of-00003.safetensors', which is missing"));
    write_text(dir + "/model.safetensors.index.json", R"({"weight_map": {"a": "../model.safetensors"}})");
    CHECK(contains(error_of([&] { SafetensorsCheckpoint::open(dir); }), "not a file in the folder"));
    // A shard tensor the index does not list.
    write_text(dir + "/model.safetensors.index.json",
               R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}})");
    CHECK(contains(error_of([&] { SafetensorsCheckpoint::open(dir); }), "absent from"));
    remove_dir(dir);
}

TEST_CASE("without an index: model.safetensors, else every model*.safetensors; none is an error") {
    const std::string dir = temp_dir("noindex");
    CHECK(contains(error_of([&] { SafetensorsCheckpoint::open(dir); }), "no model.safetensors"));
    CHECK(contains(error_of([&] { SafetensorsCheckpoint::open(dir + "/missing"); }), "cannot open"));
    write_safetensors(dir + "/model-00001-of-00002.safetensors", {st_tensor("a", {1}, {1.0f})});
    write_safetensors(dir + "/model-00002-of-00002.safetensors", {st_tensor("a", {1}, {2.0f})});
    CHECK(contains(error_of([&] { SafetensorsCheckpoint::open(dir); }), "tensor 'a' is also in"));
    write_safetensors(dir + "/model-00002-of-00002.safetensors", {st_tensor("b", {1}, {2.0f})});
    CHECK(SafetensorsCheckpoint::open(dir).tensors().size() == 2);
    write_safetensors(dir + "/model.safetensors", {st_tensor("c", {1}, {3.0f})});
    CHECK(SafetensorsCheckpoint::open(dir).tensors().size() == 1);  // the single file wins
    remove_dir(dir);
}
