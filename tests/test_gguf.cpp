// The GGUF reader and writer: round trips of every value type and of tensor data, the shared vocab
// files, a file written by the Python gguf package, and every malformed fixture rejected with its message.
#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "core/common.h"
#include "core/gguf.h"
#include "test_util.h"

using namespace mf;

namespace {

// A file path under /tmp, removed when the test ends.
struct TempPath {
    std::string path;
    explicit TempPath(const char* tag)
        : path(strfmt("/tmp/minfer_test_gguf_%d_%s.gguf", int(getpid()), tag)) {}
    ~TempPath() { std::remove(path.c_str()); }
};

std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<uint8_t> random_bytes(size_t n) {
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = uint8_t(mf_test::rng()());
    return v;
}

// The message of the mf::Error that f throws ("" when it throws nothing).
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

// An array nested depth levels deep whose innermost array holds one u8.
GGUFMetaValue nested_array(int depth) {
    if (depth == 1) {
        const uint8_t one = 1;
        return GGUFMetaValue::array(GGUFType::UINT8, &one, 1);
    }
    return GGUFMetaValue::array_of(GGUFType::ARRAY, {nested_array(depth - 1)});
}

}  // namespace

TEST_CASE("every metadata value type round trips through the writer and the reader") {
    TempPath tmp("values");
    const std::string unicode = "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80";
    const std::string with_nul("a\0b", 3);
    const uint16_t u16s[] = {0, 1, 65535};
    const int64_t i64s[] = {std::numeric_limits<int64_t>::min(), -1, std::numeric_limits<int64_t>::max()};
    const double f64s[] = {0.1, -1e300};
    const uint8_t bools[] = {1, 0, 1};

    GGUFWriter w;
    w.set("t.u8", GGUFMetaValue::u8(255));
    w.set("t.i8", GGUFMetaValue::i8(-128));
    w.set("t.u16", GGUFMetaValue::u16(65535));
    w.set("t.i16", GGUFMetaValue::i16(-32768));
    w.set_u32("t.u32", 4294967295u);
    w.set_i32("t.i32", std::numeric_limits<int32_t>::min());
    w.set_u64("t.u64", std::numeric_limits<uint64_t>::max());
    w.set("t.i64", GGUFMetaValue::i64(std::numeric_limits<int64_t>::min()));
    w.set_f32("t.f32", 1e-5f);
    w.set("t.f64", GGUFMetaValue::f64(3.141592653589793));
    w.set_bool("t.bool", true);
    w.set_bool("t.bool_false", false);
    w.set_str("t.str", "hello");
    w.set_str("t.empty_str", "");
    w.set_str("t.unicode", unicode);
    w.set_str("t.nul", with_nul);
    w.set("t.arr_u16", GGUFMetaValue::array(GGUFType::UINT16, u16s, 3));
    w.set("t.arr_i64", GGUFMetaValue::array(GGUFType::INT64, i64s, 3));
    w.set("t.arr_f64", GGUFMetaValue::array(GGUFType::FLOAT64, f64s, 2));
    w.set("t.arr_bool", GGUFMetaValue::array(GGUFType::BOOL, bools, 3));
    w.set("t.arr_i32", GGUFMetaValue::array_i32({-7, 0, 7}));
    w.set("t.arr_f32", GGUFMetaValue::array_f32({0.5f, -2.0f}));
    w.set_array_str("t.arr_str", {"a", "", unicode, "d"});
    w.set("t.arr_empty", GGUFMetaValue::array(GGUFType::UINT8, nullptr, 0));
    w.set_array_str("t.arr_str_empty", {});
    w.set("t.arr_nested", GGUFMetaValue::array_of(GGUFType::ARRAY, {GGUFMetaValue::array_i32({1, 2}),
                                                                    GGUFMetaValue::array_i32({}),
                                                                    GGUFMetaValue::array_str({"x", "yz"})}));
    w.set("t.arr_of_strs", GGUFMetaValue::array_of(GGUFType::STRING, {GGUFMetaValue::str("p"),
                                                                     GGUFMetaValue::str("")}));
    w.set("t.arr_deep", nested_array(3));
    w.set("t.arr_nested_empty", GGUFMetaValue::array_of(GGUFType::ARRAY, {}));
    w.set_u32("t.replaced", 1);
    w.set_u32("t.replaced", 2);
    CHECK(w.n_kv() == 30);
    w.write(tmp.path);

    const GGUFFile f = GGUFFile::open(tmp.path);
    CHECK(f.version() == 3);
    CHECK(f.n_kv() == 30);
    CHECK(f.n_tensors() == 0);
    CHECK(f.kv(0).key() == "t.u8");
    CHECK(f.kv(29).key() == "t.replaced");
    CHECK(f.get_u32("t.u8") == 255);
    CHECK(f.find("t.u8")->type() == GGUFType::UINT8);
    CHECK(f.find("t.i8")->as_i32() == -128);
    CHECK(f.find("t.i8")->type() == GGUFType::INT8);
    CHECK(f.find("t.u16")->as_u32() == 65535);
    CHECK(f.find("t.i16")->as_i64() == -32768);
    CHECK(f.get_u32("t.u32") == 4294967295u);
    CHECK(f.get_i32("t.i32") == std::numeric_limits<int32_t>::min());
    CHECK(f.get_u64("t.u64") == std::numeric_limits<uint64_t>::max());
    CHECK(f.find("t.i64")->as_i64() == std::numeric_limits<int64_t>::min());
    CHECK(f.get_f32("t.f32") == 1e-5f);
    CHECK(f.find("t.f64")->as_f64() == 3.141592653589793);
    CHECK(f.find("t.f64")->type() == GGUFType::FLOAT64);
    CHECK(f.get_bool("t.bool") == true);
    CHECK(f.get_bool("t.bool_false") == false);
    CHECK(f.get_str("t.str") == "hello");
    CHECK(f.get_str("t.empty_str") == "");
    CHECK(f.get_str("t.unicode") == unicode);
    CHECK(f.find("t.nul")->as_str() == with_nul);
    CHECK(f.get_u32("t.replaced") == 2);

    const GGUFValue& a16 = f.get_array("t.arr_u16", GGUFType::UINT16);
    REQUIRE(a16.size() == 3);
    CHECK(a16.at(2).as_u32() == 65535);
    CHECK(std::memcmp(a16.raw_data(), u16s, sizeof(u16s)) == 0);
    const GGUFValue& a64 = f.get_array("t.arr_i64");
    CHECK(a64.at(0).as_i64() == i64s[0]);
    CHECK(a64.at(2).as_i64() == i64s[2]);
    CHECK(f.get_array("t.arr_f64").at(1).as_f64() == -1e300);
    CHECK(f.get_array("t.arr_bool").at(1).as_bool() == false);
    CHECK(f.get_array("t.arr_i32").to_i32_vector() == std::vector<int32_t>{-7, 0, 7});
    CHECK(f.get_array("t.arr_f32").to_f32_vector() == std::vector<float>{0.5f, -2.0f});
    CHECK(f.get_array("t.arr_u16").to_i32_vector() == std::vector<int32_t>{0, 1, 65535});
    CHECK(f.get_array("t.arr_i32").to_f32_vector() == std::vector<float>{-7.0f, 0.0f, 7.0f});

    const GGUFValue& strs = f.get_array("t.arr_str", GGUFType::STRING);
    REQUIRE(strs.size() == 4);
    CHECK(strs.str(0) == "a");
    CHECK(strs.str(1) == "");
    CHECK(strs.str(2) == unicode);
    CHECK(strs.at(3).as_str() == "d");
    CHECK(f.get_array("t.arr_empty").size() == 0);
    CHECK(f.get_array("t.arr_empty").to_u8_vector().empty());
    CHECK(f.get_array("t.arr_str_empty", GGUFType::STRING).size() == 0);

    const GGUFValue& nested = f.get_array("t.arr_nested", GGUFType::ARRAY);
    REQUIRE(nested.size() == 3);
    CHECK(nested.at(0).to_i32_vector() == std::vector<int32_t>{1, 2});
    CHECK(nested.at(1).elem_type() == GGUFType::INT32);
    CHECK(nested.at(1).size() == 0);
    CHECK(nested.at(2).str(1) == "yz");
    CHECK(nested.at(2).key() == "t.arr_nested");
    CHECK(f.get_array("t.arr_of_strs", GGUFType::STRING).str(0) == "p");
    const GGUFValue& deep = f.get_array("t.arr_deep");
    CHECK(deep.at(0).at(0).to_u8_vector() == std::vector<uint8_t>{1});
    CHECK(f.get_array("t.arr_nested_empty", GGUFType::ARRAY).size() == 0);
}

TEST_CASE("typed getters convert integers that fit and name the key otherwise") {
    TempPath tmp("getters");
    GGUFWriter w;
    w.set("k.u8", GGUFMetaValue::u8(7));
    w.set_i32("k.neg", -1);
    w.set_u64("k.big", uint64_t(1) << 40);
    w.set_str("k.str", "x");
    w.set_f32("k.f32", 2.5f);
    w.set("k.f64", GGUFMetaValue::f64(0.25));
    w.set_array_str("k.strs", {"a"});
    w.write(tmp.path);
    const GGUFFile f = GGUFFile::open(tmp.path);

    CHECK(f.get_u32("k.u8") == 7);
    CHECK(f.get_i32("k.u8") == 7);
    CHECK(f.get_u64("k.u8") == 7);
    CHECK(f.get_f32("k.u8") == 7.0f);
    CHECK(f.get_i32("k.neg") == -1);
    CHECK(f.find("k.neg")->as_i64() == -1);
    CHECK(f.get_u64("k.big") == uint64_t(1) << 40);
    CHECK(f.get_f32("k.f64") == 0.25f);
    CHECK(f.get_f32("k.f32") == 2.5f);

    CHECK(error_of([&] { f.get_u32("k.neg"); }).find("key 'k.neg' has type i32") != std::string::npos);
    CHECK(error_of([&] { f.get_u64("k.neg"); }).find("key 'k.neg'") != std::string::npos);
    CHECK(error_of([&] { f.get_i32("k.big"); }).find("a value that fits i32") != std::string::npos);
    CHECK(error_of([&] { f.get_u32("k.str"); }).find("key 'k.str' has type str, expected an integer") !=
          std::string::npos);
    CHECK(error_of([&] { f.get_f32("k.str"); }).find("key 'k.str'") != std::string::npos);
    CHECK(error_of([&] { f.get_bool("k.u8"); }).find("expected bool") != std::string::npos);
    CHECK(error_of([&] { f.get_str("k.u8"); }).find("key 'k.u8' has type u8, expected str") != std::string::npos);
    CHECK(error_of([&] { f.get_u32("k.u32.missing"); }) ==
          tmp.path + ": missing metadata key 'k.u32.missing'");
    CHECK(error_of([&] { f.get_array("k.str"); }).find("expected an array") != std::string::npos);
    CHECK(error_of([&] { f.get_array("k.strs", GGUFType::INT32); }).find("has type arr[str,1], expected arr[i32]") !=
          std::string::npos);
    CHECK(error_of([&] { f.get_array("k.strs").to_i32_vector(); }).find("an array of integers") !=
          std::string::npos);
    CHECK(error_of([&] { f.find("k.u8")->size(); }).find("expected an array") != std::string::npos);

    CHECK(f.get_u32("k.absent", 42) == 42);
    CHECK(f.get_i32("k.absent", -3) == -3);
    CHECK(f.get_u64("k.absent", 9) == 9);
    CHECK(f.get_f32("k.absent", 1.5f) == 1.5f);
    CHECK(f.get_bool("k.absent", true) == true);
    CHECK(f.get_str("k.absent", "dflt") == "dflt");
    CHECK(f.get_u32("k.u8", 42) == 7);
    CHECK(!error_of([&] { f.get_u32("k.str", 1); }).empty());  // present with the wrong type still throws
    CHECK(f.has("k.u8"));
    CHECK(!f.has("k.absent"));
    CHECK(f.find("k.absent") == nullptr);
}

TEST_CASE("value printing summarizes arrays and escapes strings") {
    TempPath tmp("print");
    GGUFWriter w;
    w.set_array_str("p.tokens", {"<unk>", "<s>", "</s>", "a", "b"});
    w.set_str("p.newline", "a\nb\"c\\");
    w.set_f32("p.eps", 1e-5f);
    w.set("p.nested", GGUFMetaValue::array_of(GGUFType::ARRAY, {GGUFMetaValue::array_i32({1, 2}),
                                                                GGUFMetaValue::array_i32({3})}));
    w.set("p.deep", nested_array(GGUF_MAX_ARRAY_DEPTH));
    w.write(tmp.path);
    const GGUFFile f = GGUFFile::open(tmp.path);
    CHECK(f.find("p.tokens")->type_str() == "arr[str,5]");
    CHECK(f.find("p.tokens")->to_string() == "[\"<unk>\", \"<s>\", \"</s>\", ...]");
    CHECK(f.find("p.tokens")->to_string(10) == "[\"<unk>\", \"<s>\", \"</s>\", \"a\", \"b\"]");
    CHECK(f.find("p.newline")->to_string() == "\"a\\nb\\\"c\\\\\"");
    CHECK(f.find("p.newline")->to_string(3, 2) == "\"a\\n...\"");
    CHECK(f.find("p.eps")->to_string() == "1e-05");
    CHECK(f.find("p.nested")->type_str() == "arr[arr,2]");
    CHECK(f.find("p.nested")->to_string() == "[[1, 2], ...]");
    CHECK(f.find("p.deep")->to_string().size() < 100);
    CHECK(gguf_escape(std::string("\x01z", 2), 10) == "\\x01z");
}

TEST_CASE("arrays nest up to the depth limit and no further") {
    TempPath ok_path("depth_ok");
    GGUFWriter ok;
    ok.set("d", nested_array(GGUF_MAX_ARRAY_DEPTH));
    ok.write(ok_path.path);
    const GGUFFile f = GGUFFile::open(ok_path.path);
    GGUFValue v = *f.find("d");
    for (int i = 1; i < GGUF_MAX_ARRAY_DEPTH; ++i) v = v.at(0);
    CHECK(v.elem_type() == GGUFType::UINT8);

    TempPath bad_path("depth_bad");
    GGUFWriter bad;
    bad.set("d", nested_array(GGUF_MAX_ARRAY_DEPTH + 1));
    bad.write(bad_path.path);
    CHECK(error_of([&] { GGUFFile::open(bad_path.path); }).find("arrays nested deeper than 16 levels") !=
          std::string::npos);
}

TEST_CASE("tensors of several dtypes round trip byte-exact at the file's alignment") {
    struct Spec {
        const char* name;
        DType type;
        int n_dims;
        int64_t ne[4];
    };
    const Spec specs[] = {
        {"f32.vec", DType::F32, 1, {7, 1, 1, 1}},
        {"f16.mat", DType::F16, 2, {5, 3, 1, 1}},
        {"bf16.4d", DType::BF16, 4, {3, 2, 2, 2}},
        {"q4_0.mat", DType::Q4_0, 2, {64, 3, 1, 1}},
        {"q8_0.mat", DType::Q8_0, 2, {32, 5, 1, 1}},
        {"q4_k.mat", DType::Q4_K, 2, {256, 2, 1, 1}},
        {"q6_k.3d", DType::Q6_K, 3, {256, 1, 2, 1}},
        {"i32.vec", DType::I32, 1, {9, 1, 1, 1}},
    };
    for (const uint32_t alignment : {0u, 1u, 64u, 4096u}) {  // 0: general.alignment left unset
        CAPTURE(alignment);
        TempPath tmp("tensors");
        GGUFWriter w;
        if (alignment) w.set_u32("general.alignment", alignment);
        w.set_str("general.name", "tensors");
        std::vector<std::vector<uint8_t>> data;
        for (const Spec& s : specs) {
            const int64_t rows = s.ne[1] * s.ne[2] * s.ne[3];
            data.push_back(random_bytes(dtype_row_size(s.type, s.ne[0]) * size_t(rows)));
            w.add_tensor(s.name, s.type, s.n_dims, s.ne, data.back().data());
        }
        w.write(tmp.path);

        const uint64_t expect_alignment = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
        const std::vector<uint8_t> bytes = read_bytes(tmp.path);
        const GGUFFile opened = GGUFFile::open(tmp.path);
        const GGUFFile parsed = GGUFFile::parse(bytes.data(), bytes.size(), "memory");
        for (const GGUFFile* f : {&opened, &parsed}) {
            CHECK(f->alignment() == expect_alignment);
            CHECK(f->data_offset() % expect_alignment == 0);
            CHECK(f->file_size() == bytes.size());
            REQUIRE(f->n_tensors() == std::size(specs));
            for (size_t i = 0; i < std::size(specs); ++i) {
                const Spec& s = specs[i];
                const GGUFTensorInfo& t = f->tensor(i);
                CAPTURE(s.name);
                CHECK(t.name == s.name);
                CHECK(t.type == s.type);
                CHECK(t.n_dims == s.n_dims);
                for (int d = 0; d < GGUF_MAX_DIMS; ++d) CHECK(t.ne[d] == s.ne[d]);
                CHECK(t.n_elements == s.ne[0] * s.ne[1] * s.ne[2] * s.ne[3]);
                CHECK(t.n_bytes == data[i].size());
                CHECK(t.offset % expect_alignment == 0);
                CHECK(std::memcmp(t.data, data[i].data(), data[i].size()) == 0);
                CHECK(f->find_tensor(s.name) == &t);
            }
            CHECK(f->find_tensor("absent") == nullptr);
        }
        // mmapped data starts page-aligned, so tensor pointers honour the alignment in memory too
        for (size_t i = 0; i < opened.n_tensors(); ++i) {
            CHECK(reinterpret_cast<uintptr_t>(opened.tensor(i).data) % expect_alignment == 0);
        }
    }
}

TEST_CASE("the writer rejects bad tensors and a bad alignment") {
    const float x[64] = {};
    const int64_t ne_ok[2] = {32, 2};
    const int64_t ne_33[1] = {33};
    const int64_t ne_zero[2] = {4, 0};
    GGUFWriter w;
    w.add_tensor("a", DType::F32, 2, ne_ok, x);
    CHECK(error_of([&] { w.add_tensor("a", DType::F32, 2, ne_ok, x); }).find("duplicate tensor name 'a'") !=
          std::string::npos);
    CHECK(error_of([&] { w.add_tensor("b", DType::Q4_0, 1, ne_33, x); }).find("not a multiple of the q4_0 block size") !=
          std::string::npos);
    CHECK(error_of([&] { w.add_tensor("c", DType::F32, 2, ne_zero, x); }).find("dimension 1 is 0") !=
          std::string::npos);
    CHECK(error_of([&] { w.add_tensor("d", DType::F32, 5, ne_ok, x); }).find("5 dimensions") != std::string::npos);
    CHECK(w.n_tensors() == 1);

    TempPath tmp("bad_alignment");
    w.set_u32("general.alignment", 24);
    CHECK(error_of([&] { w.write(tmp.path); }).find("general.alignment 24 is not a nonzero power of two") !=
          std::string::npos);
    w.set_str("general.alignment", "32");
    CHECK(error_of([&] { w.write(tmp.path); }).find("general.alignment has type str, expected u32") !=
          std::string::npos);
}

TEST_CASE("tensors produced at write time land byte-exact; a failing producer leaves no file") {
    const std::vector<uint8_t> a = random_bytes(dtype_row_size(DType::Q8_0, 64) * 3);
    const int64_t ne_a[2] = {64, 3};
    const int64_t ne_b[1] = {5};
    CHECK(GGUFWriter::tensor_bytes("a", DType::Q8_0, 2, ne_a) == a.size());
    TempPath tmp("fill");
    GGUFWriter w;
    w.add_tensor("a", DType::Q8_0, 2, ne_a, [&](void* dst, uint64_t n) {
        REQUIRE(n == a.size());
        std::memcpy(dst, a.data(), n);
    });
    w.add_tensor("b", DType::F32, 1, ne_b, [](void* dst, uint64_t n) {
        for (int i = 0; i < 5; ++i) static_cast<float*>(dst)[i] = float(i) * 0.5f;
    });
    w.write(tmp.path);
    const GGUFFile f = GGUFFile::open(tmp.path);
    REQUIRE(f.n_tensors() == 2);
    CHECK(std::memcmp(f.tensor(0).data, a.data(), a.size()) == 0);
    CHECK(static_cast<const float*>(f.tensor(1).data)[3] == 1.5f);

    GGUFWriter bad;
    bad.add_tensor("b", DType::F32, 1, ne_b, [](void*, uint64_t) { throw Error("source tensor is corrupt"); });
    TempPath out("fill_fails");
    CHECK(error_of([&] { bad.write(out.path); }) == "source tensor is corrupt");
    CHECK(access(out.path.c_str(), F_OK) != 0);
}

// A model being run reads its file through a mapping; rewriting that file must not change or cut
// the bytes under it. The writer writes beside the target and renames: the old mapping keeps the old
// inode. (Truncating in place, as it did, moved the tensor under the old mapping or raised SIGBUS.)
TEST_CASE("the writer replaces a file whole: a mapping of the old one keeps reading the old bytes") {
    TempPath out("replace");
    const int64_t ne[1] = {4096};
    const std::vector<float> ones(4096, 1.0f), twos(4096, 2.0f);
    GGUFWriter first;
    first.add_tensor("t", DType::F32, 1, ne, ones.data());
    first.write(out.path);
    const GGUFFile old = GGUFFile::open(out.path);
    GGUFWriter second;
    second.set_u32("shifts.the.data", 7);
    second.add_tensor("t", DType::F32, 1, ne, twos.data());
    second.write(out.path);
    const float* was = static_cast<const float*>(old.find_tensor("t")->data);
    CHECK(was[0] == 1.0f);
    CHECK(was[4095] == 1.0f);
    const GGUFFile now = GGUFFile::open(out.path);
    CHECK(static_cast<const float*>(now.find_tensor("t")->data)[4095] == 2.0f);
    // Nothing staged is left beside it.
    const std::string dir = out.path.substr(0, out.path.rfind('/')), base = out.path.substr(out.path.rfind('/') + 1);
    for (const auto& e : std::filesystem::directory_iterator(dir))
        CHECK(e.path().filename().string().rfind(base + ".partial-", 0) != 0);
}

// A symbolic link to a model keeps pointing at it: the file it names is the one replaced, with its
// permissions.
TEST_CASE("the writer replaces the file a symbolic link names, and keeps its permissions") {
    TempPath real("link_target"), link("link");
    const int64_t ne[1] = {64};
    const std::vector<float> ones(64, 1.0f), twos(64, 2.0f);
    GGUFWriter first;
    first.add_tensor("t", DType::F32, 1, ne, ones.data());
    first.write(real.path);
    REQUIRE(chmod(real.path.c_str(), 0640) == 0);
    REQUIRE(symlink(real.path.c_str(), link.path.c_str()) == 0);
    GGUFWriter second;
    second.add_tensor("t", DType::F32, 1, ne, twos.data());
    second.write(link.path);
    struct stat st;
    REQUIRE(lstat(link.path.c_str(), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    REQUIRE(stat(real.path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);
    const GGUFFile now = GGUFFile::open(real.path);
    CHECK(static_cast<const float*>(now.find_tensor("t")->data)[63] == 2.0f);
}

TEST_CASE("the writer names the path when it cannot write") {
    GGUFWriter w;
    w.set_u32("a", 1);
    const std::string missing_dir = "/nonexistent-minfer-dir/out.gguf";
    const std::string e = error_of([&] { w.write(missing_dir); });
    CHECK(e.find(missing_dir + ": cannot create") == 0);
    if (access("/dev/full", W_OK) == 0) {
        std::vector<float> big(1 << 20);
        const int64_t ne[1] = {int64_t(big.size())};
        w.add_tensor("big", DType::F32, 1, ne, big.data());
        const std::string full = error_of([&] { w.write("/dev/full"); });
        CHECK(full.find("/dev/full: write failed") == 0);
        CHECK(access("/dev/full", F_OK) == 0);  // a device is never removed as a partial file
    }
}

TEST_CASE("the shared vocab files parse and hold their known values") {
    struct Known {
        const char* file;
        const char* model;
        uint64_t n_tokens;
        const char* token1;
    };
    const Known known[] = {
        {"ggml-vocab-llama-spm.gguf", "llama", 32000, "<s>"},
        {"ggml-vocab-phi-3.gguf", "llama", 32064, "<s>"},
        {"ggml-vocab-gpt-2.gguf", "gpt2", 50257, "\""},
        {"ggml-vocab-starcoder.gguf", "gpt2", 49152, "<fim_prefix>"},
        {"ggml-vocab-deepseek-coder.gguf", "gpt2", 32256, "\""},
        {"ggml-vocab-bert-bge.gguf", "bert", 30522, "[unused0]"},
    };
    for (const Known& k : known) {
        CAPTURE(k.file);
        const GGUFFile f = GGUFFile::open(mf_test::shared_path(std::string("vocab/") + k.file));
        CHECK(f.version() == 3);
        CHECK(f.n_tensors() == 0);
        CHECK(f.alignment() == 32);
        CHECK(f.get_str("tokenizer.ggml.model") == k.model);
        const GGUFValue& tokens = f.get_array("tokenizer.ggml.tokens", GGUFType::STRING);
        CHECK(tokens.size() == k.n_tokens);
        CHECK(tokens.str(1) == k.token1);
        CHECK(f.get_array("tokenizer.ggml.token_type", GGUFType::INT32).to_i32_vector().size() == k.n_tokens);
        for (size_t i = 0; i < f.n_kv(); ++i) CHECK(!f.kv(i).to_string().empty());
    }
    const GGUFFile spm = GGUFFile::open(mf_test::shared_path("vocab/ggml-vocab-llama-spm.gguf"));
    CHECK(spm.get_u32("tokenizer.ggml.bos_token_id") == 1);
    CHECK(spm.get_u32("llama.context_length") == 4096);
    CHECK(spm.get_f32("llama.attention.layer_norm_rms_epsilon") == 1e-5f);
    CHECK(spm.get_array("tokenizer.ggml.scores", GGUFType::FLOAT32).size() == 32000);
    const GGUFFile gpt2 = GGUFFile::open(mf_test::shared_path("vocab/ggml-vocab-gpt-2.gguf"));
    CHECK(gpt2.get_array("tokenizer.ggml.merges", GGUFType::STRING).size() == 50000);
}

TEST_CASE("metadata copied from a file with copy_of writes back identically") {
    const std::string src = mf_test::shared_path("vocab/ggml-vocab-deepseek-coder.gguf");
    const GGUFFile in = GGUFFile::open(src);
    GGUFWriter w;
    for (size_t i = 0; i < in.n_kv(); ++i) w.set(std::string(in.kv(i).key()), GGUFMetaValue::copy_of(in.kv(i)));
    TempPath tmp("copy");
    w.write(tmp.path);
    // Same metadata and no tensors: the source's bytes exactly, then zero padding to the alignment.
    const std::vector<uint8_t> a = read_bytes(src), b = read_bytes(tmp.path);
    REQUIRE(b.size() == a.size() + (32 - a.size() % 32) % 32);
    CHECK(std::memcmp(a.data(), b.data(), a.size()) == 0);
    for (size_t i = a.size(); i < b.size(); ++i) CHECK(b[i] == 0);
    const GGUFFile out = GGUFFile::open(tmp.path);
    REQUIRE(out.n_kv() == in.n_kv());
    const GGUFValue& merges = out.get_array("tokenizer.ggml.merges", GGUFType::STRING);
    const GGUFValue& merges_in = in.get_array("tokenizer.ggml.merges", GGUFType::STRING);
    for (uint64_t i = 0; i < merges.size(); i += 997) CHECK(merges.str(i) == merges_in.str(i));
}

TEST_CASE("every malformed fixture is rejected with its expected message") {
    std::ifstream expected(mf_test::source_path("tests/fixtures/malformed/EXPECTED.txt"));
    REQUIRE(expected.good());
    std::string line;
    int n = 0;
    while (std::getline(expected, line)) {
        const size_t tab = line.find('\t');
        REQUIRE(tab != std::string::npos);
        const std::string name = line.substr(0, tab), fragment = line.substr(tab + 1);
        const std::string path = mf_test::source_path("tests/fixtures/malformed/" + name);
        CAPTURE(name);
        const std::string from_file = error_of([&] { GGUFFile::open(path); });
        CHECK(from_file.find(fragment) != std::string::npos);
        CHECK(from_file.find(path + ": offset ") == 0);
        CHECK(from_file.find('\n') == std::string::npos);
        const std::vector<uint8_t> bytes = read_bytes(path);
        CHECK(bytes.size() <= 512);
        const std::string from_memory = error_of([&] { GGUFFile::parse(bytes.data(), bytes.size(), name); });
        CHECK(from_memory.find(name + ": offset ") == 0);
        CHECK(from_memory.find(fragment) != std::string::npos);
        ++n;
    }
    CHECK(n >= 14);
}

TEST_CASE("opening a missing file, a directory or a non-GGUF file fails with one line") {
    CHECK(error_of([] { GGUFFile::open("/nonexistent-minfer/x.gguf"); }) ==
          "/nonexistent-minfer/x.gguf: cannot open: No such file or directory");
    CHECK(error_of([] { GGUFFile::open("/tmp"); }) == "/tmp: not a regular file");
    CHECK(error_of([] { GGUFFile::open(mf_test::source_path("CMakeLists.txt")); }).find("not a GGUF file") !=
          std::string::npos);
}

TEST_CASE("every truncation and random corruption of a valid file is an error, never a crash") {
    TempPath tmp("corrupt");
    GGUFWriter w;
    w.set_str("general.architecture", "llama");
    w.set_array_str("s", {"a", "bc", ""});
    w.set("n", GGUFMetaValue::array_of(GGUFType::ARRAY, {GGUFMetaValue::array_f32({1.0f})}));
    const std::vector<uint8_t> q = random_bytes(dtype_row_size(DType::Q4_0, 64) * 2);
    const int64_t ne[2] = {64, 2};
    w.add_tensor("w", DType::Q4_0, 2, ne, q.data());
    w.write(tmp.path);
    const std::vector<uint8_t> good = read_bytes(tmp.path);
    const GGUFFile full = GGUFFile::parse(good.data(), good.size(), "good");
    const uint64_t data_end = full.data_offset() + full.tensor(0).n_bytes;

    for (size_t n = 0; n < good.size(); ++n) {
        CAPTURE(n);
        const std::string e = error_of([&] { GGUFFile::parse(good.data(), n, "cut"); });
        if (n < data_end) CHECK(e.find("cut: offset ") == 0);
    }
    std::vector<uint8_t> bad = good;
    int rejected = 0;
    for (int trial = 0; trial < 2000; ++trial) {
        bad = good;
        const int flips = 1 + int(mf_test::rng()() % 4);
        for (int i = 0; i < flips; ++i) bad[mf_test::rng()() % bad.size()] = uint8_t(mf_test::rng()());
        try {
            const GGUFFile f = GGUFFile::parse(bad.data(), bad.size(), "bad");
            for (size_t k = 0; k < f.n_kv(); ++k) f.kv(k).to_string();
        } catch (const Error& e) {
            ++rejected;
            CHECK(std::string(e.what()).find("bad: ") == 0);
        }
    }
    CHECK(rejected > 0);
}

TEST_CASE("a file written by the Python gguf package reads correctly") {
    const GGUFFile f = GGUFFile::open(mf_test::source_path("tests/fixtures/gguf_py_fixture.gguf"));
    CHECK(f.version() == 3);
    CHECK(f.alignment() == 64);
    CHECK(f.data_offset() % 64 == 0);
    CHECK(f.get_str("general.architecture") == "testarch");
    CHECK(f.find("test.u8")->type() == GGUFType::UINT8);
    CHECK(f.get_u32("test.u8") == 200);
    CHECK(f.get_i32("test.i8") == -100);
    CHECK(f.get_u32("test.u16") == 60000);
    CHECK(f.get_i32("test.i16") == -30000);
    CHECK(f.get_u32("test.u32") == 4000000000u);
    CHECK(f.get_i32("test.i32") == -2000000000);
    CHECK(f.get_u64("test.u64") == (uint64_t(1) << 63) + 5);
    CHECK(f.find("test.i64")->as_i64() == -(int64_t(1) << 62));
    CHECK(f.get_f32("test.f32") == 0.15625f);
    CHECK(f.find("test.f64")->as_f64() == -2.5e-300);
    CHECK(f.get_bool("test.bool") == true);
    CHECK(f.get_str("test.str") == "h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xf0\x9f\x98\x80");
    CHECK(f.get_array("test.arr_i32", GGUFType::INT32).to_i32_vector() == std::vector<int32_t>{1, -2, 3});
    CHECK(f.get_array("test.arr_f32", GGUFType::FLOAT32).to_f32_vector() == std::vector<float>{0.5f, -1.25f});
    const GGUFValue& strs = f.get_array("test.arr_str", GGUFType::STRING);
    REQUIRE(strs.size() == 3);
    CHECK(strs.str(0) == "a");
    CHECK(strs.str(1) == "");
    CHECK(strs.str(2) == "\xc3\xbc");
    const GGUFValue& nested = f.get_array("test.arr_nested", GGUFType::ARRAY);
    REQUIRE(nested.size() == 2);
    CHECK(nested.at(0).to_i32_vector() == std::vector<int32_t>{1, 2});
    CHECK(nested.at(1).to_i32_vector() == std::vector<int32_t>{3});

    REQUIRE(f.n_tensors() == 3);
    const GGUFTensorInfo* t32 = f.find_tensor("t.f32");
    REQUIRE(t32);
    CHECK(t32->type == DType::F32);
    CHECK(t32->n_dims == 2);
    CHECK(t32->ne[0] == 4);
    CHECK(t32->ne[1] == 3);
    for (int i = 0; i < 12; ++i) {
        float v;
        std::memcpy(&v, static_cast<const uint8_t*>(t32->data) + 4 * i, 4);
        CHECK(v == i * 0.5f - 1.0f);
    }
    const GGUFTensorInfo* t16 = f.find_tensor("t.f16");
    REQUIRE(t16);
    CHECK(t16->type == DType::F16);
    CHECK(t16->ne[0] == 8);
    for (int i = 0; i < 8; ++i) {
        uint16_t h;
        std::memcpy(&h, static_cast<const uint8_t*>(t16->data) + 2 * i, 2);
        CHECK(fp16_to_fp32(h) == float(i - 3));
    }
    const GGUFTensorInfo* tq = f.find_tensor("t.q8_0");
    REQUIRE(tq);
    CHECK(tq->type == DType::Q8_0);
    CHECK(tq->ne[0] == 32);
    CHECK(tq->ne[1] == 2);
    CHECK(tq->n_bytes == 68);
    for (int i = 0; i < 68; ++i) CHECK(static_cast<const uint8_t*>(tq->data)[i] == i % 251);
    for (size_t i = 0; i < f.n_tensors(); ++i) CHECK(f.tensor(i).offset % 64 == 0);
}
