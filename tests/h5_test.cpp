// The HDF5 wrapper: round trips of every write/read pair and attribute kind, growable
// series, SWMR reading while a writer appends, an h5py-written file, and error messages.
#include "tdyn/h5.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <unistd.h>

namespace tdyn {
namespace {

namespace fs = std::filesystem;
using h5::File;
using h5::Handle;

/// A fresh path in the test temp dir, unique per test and process.
std::string temp_h5(const std::string& tag) {
    const auto* info = testing::UnitTest::GetInstance()->current_test_info();
    const std::string path = testing::TempDir() + "tdyn-h5-" + info->test_suite_name() + "-" + info->name() + "-" +
                             tag + "-" + std::to_string(::getpid()) + ".h5";
    fs::remove(path);
    return path;
}

/// For EXPECT_PRED_FORMAT2: does the message contain the text?
testing::AssertionResult contains(const char* message_expr, const char*, const std::string& message,
                                  const std::string& text) {
    if (message.find(text) != std::string::npos) return testing::AssertionSuccess();
    return testing::AssertionFailure() << message_expr << " is \"" << message << "\",\nwhich does not contain \""
                                       << text << "\"";
}

/// The message of the tdyn::Error that f throws (fails the test if it throws nothing).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected tdyn::Error";
    return "";
}

/// Raw C API access for writing what our wrapper never writes (uint8 data, fixed-length
/// strings), the way other tools do. Handles still do all the closing.
Handle raw_open(const std::string& path) {
    Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    EXPECT_TRUE(f);
    return f;
}

void raw_string_attr(hid_t obj, const char* name, const std::string& value, bool variable, H5T_str_t pad) {
    Handle t(H5Tcopy(H5T_C_S1));
    ASSERT_GE(H5Tset_size(t.id(), variable ? H5T_VARIABLE : std::max<std::size_t>(1, value.size())), 0);
    ASSERT_GE(H5Tset_strpad(t.id(), pad), 0);
    Handle space(H5Screate(H5S_SCALAR));
    Handle a(H5Acreate2(obj, name, t.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(a);
    const char* p = value.c_str();
    ASSERT_GE(
        H5Awrite(a.id(), t.id(), variable ? static_cast<const void*>(&p) : static_cast<const void*>(value.data())), 0);
}

TEST(H5Handle, MoveEmptiesTheSourceAndClosesOnce) {
    const hid_t id = H5Pcreate(H5P_FILE_ACCESS);
    ASSERT_GE(id, 0);
    {
        Handle a(id);
        Handle b(std::move(a));
        EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): the point of the test
        EXPECT_EQ(b.id(), id);
        Handle c;
        c = std::move(b);
        EXPECT_FALSE(b);  // NOLINT
        EXPECT_GT(H5Iis_valid(id), 0);
    }
    EXPECT_LE(H5Iis_valid(id), 0);  // closed by c, and only by c
}

TEST(H5File, RoundTripsVectorsMatricesScalars) {
    const std::string path = temp_h5("rt");
    Vector v(5);
    v << 1.5, -2.25, 0.0, 1e-300, 3e300;
    RowMatrix m(3, 4);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = 0.5 * double(i) - 1;
    const std::vector<std::int64_t> ints{-3, 0, 7, std::int64_t(1) << 40};
    {
        File f = File::create(path);
        EXPECT_EQ(f.path(), path);
        f.write("/a/b/v", v);  // creates /a and /a/b
        f.write("/m", m);
        f.write("/ints", ints);
        f.write_scalar("/s", 0.125);
        f.write("/empty", Vector());
        f.write_vector("/v1", Vector::Constant(1, 4.0));
        f.flush();
    }
    File f = File::open_read(path);
    EXPECT_EQ(f.read_vector("/a/b/v"), v);
    EXPECT_EQ(f.read_matrix("/m"), m);
    EXPECT_EQ(f.read_ints("/ints"), ints);
    EXPECT_EQ(f.read_scalar("/s"), 0.125);
    EXPECT_EQ(f.read_scalar("/v1"), 4.0);  // rank 1 of length 1 counts as a scalar
    EXPECT_EQ(f.read_vector("/empty").size(), 0);
    // Integers convert to double on reading.
    const Vector as_double = f.read_vector("/ints");
    for (std::size_t i = 0; i < ints.size(); ++i) EXPECT_EQ(as_double[Index(i)], double(ints[i]));

    EXPECT_EQ(f.shape("/m"), (std::vector<hsize_t>{3, 4}));
    EXPECT_EQ(f.shape("/a/b/v"), (std::vector<hsize_t>{5}));
    EXPECT_TRUE(f.shape("/s").empty());
    EXPECT_EQ(f.type_class("/m"), File::Type::Float);
    EXPECT_EQ(f.type_class("/ints"), File::Type::Integer);
    EXPECT_EQ(f.type_size("/m"), 8u);
    EXPECT_EQ(f.type_size("/ints"), 8u);

    // Partial reads.
    EXPECT_EQ(f.read_row("/m", 1), Vector(m.row(1).transpose()));
    EXPECT_EQ(f.read_rows("/m", 1, 2), RowMatrix(m.bottomRows(2)));
    EXPECT_EQ(f.read_rows("/m", 3, 0).rows(), 0);
    const Vector one = f.read_row("/a/b/v", 3);  // an element of a 1-d dataset
    ASSERT_EQ(one.size(), 1);
    EXPECT_EQ(one[0], v[3]);
    EXPECT_EQ(f.read_rows("/a/b/v", 1, 3), RowMatrix(v.segment(1, 3)));
}

TEST(H5File, ReadsUint8OfAnyRank) {
    const std::string path = temp_h5("u8");
    { File::create(path).write("/T", RowMatrix::Ones(2, 2)); }
    std::vector<std::uint8_t> bytes(2 * 3 * 4);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::uint8_t(i * 11);
    {
        Handle f = raw_open(path);
        const hsize_t dims[3] = {2, 3, 4};
        Handle space(H5Screate_simple(3, dims, nullptr));
        Handle d(H5Dcreate2(f.id(), "/X", H5T_STD_U8LE, space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        ASSERT_TRUE(d);
        ASSERT_GE(H5Dwrite(d.id(), H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes.data()), 0);
    }
    File f = File::open_read(path);
    std::vector<hsize_t> dims;
    EXPECT_EQ(f.read_u8("/X", dims), bytes);
    EXPECT_EQ(dims, (std::vector<hsize_t>{2, 3, 4}));
    EXPECT_EQ(f.type_class("/X"), File::Type::Integer);
    EXPECT_EQ(f.type_size("/X"), 1u);
    const std::string msg = error_of([&] { f.read_u8("/T", dims); });
    EXPECT_PRED_FORMAT2(contains, msg, path + ": /T: expected uint8, found float64");
}

TEST(H5File, GroupsExistRemoveAndList) {
    const std::string path = temp_h5("groups");
    File f = File::create(path);
    EXPECT_TRUE(f.exists("/"));
    EXPECT_FALSE(f.exists("/a"));
    EXPECT_FALSE(f.exists("/a/b/c"));  // missing intermediate groups are not an error
    f.ensure_group("/a/b/c");
    f.ensure_group("/a/b/c");  // idempotent
    EXPECT_TRUE(f.exists("/a/b"));
    EXPECT_TRUE(f.exists("/a/b/c"));
    f.write_scalar("/a/x", 1.0);
    EXPECT_FALSE(f.exists("/a/x/y"));  // a path through a dataset
    EXPECT_EQ(f.children("/a"), (std::vector<std::string>{"b", "x"}));
    EXPECT_TRUE(f.children("/nope").empty());
    f.remove("/a/x");
    EXPECT_FALSE(f.exists("/a/x"));
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.remove("/a/x"); }), path + ": /a/x: no such object");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.write_scalar("/a/b", 2.0); }), path + ": /a/b: dataset exists");
}

TEST(H5File, RoundTripsAttributesOfEveryKind) {
    const std::string path = temp_h5("attrs");
    {
        File f = File::create(path);
        f.write("/d", Vector::Zero(3).eval());
        f.ensure_group("/g");
        f.set_attr("/", "format", std::string("tdyn-run"));
        f.set_attr("/", "utf8", "Lyapunov λ₁ ≥ 0");
        f.set_attr("/", "empty", std::string());
        f.set_attr("/", "alpha", 0.1);
        f.set_attr("/", "steps", std::int64_t(1) << 40);
        f.set_attr("/", "seed", 7);  // plain int: stored as int64
        f.set_attr("/d", "arch", std::vector<std::int64_t>{784, 50, 10});
        f.set_attr("/g", "eigs", std::vector<double>{1.5, -0.5});
        f.set_attr("/g", "none", std::vector<double>{});
        // Replacing changes value and type.
        f.set_attr("/", "status", std::string("running"));
        f.set_attr("/", "status", std::string("finished"));
        f.set_attr("/", "alpha", std::int64_t(3));
        f.set_attr("/", "alpha", 0.25);
    }
    File f = File::open_read(path);
    EXPECT_EQ(f.attr_string("/", "format"), "tdyn-run");
    EXPECT_EQ(f.attr_string("/", "utf8"), "Lyapunov λ₁ ≥ 0");
    EXPECT_EQ(f.attr_string("/", "empty"), "");
    EXPECT_EQ(f.attr_string("/", "status"), "finished");
    EXPECT_EQ(f.attr_double("/", "alpha"), 0.25);
    EXPECT_EQ(f.attr_int("/", "steps"), std::int64_t(1) << 40);
    EXPECT_EQ(f.attr_int("/", "seed"), 7);
    EXPECT_EQ(f.attr_double("/", "seed"), 7.0);  // integers read as doubles
    EXPECT_EQ(f.attr_ints("/d", "arch"), (std::vector<std::int64_t>{784, 50, 10}));
    EXPECT_EQ(f.attr_doubles("/g", "eigs"), (std::vector<double>{1.5, -0.5}));
    EXPECT_TRUE(f.attr_doubles("/g", "none").empty());
    EXPECT_EQ(f.attr_ints("/", "steps"), (std::vector<std::int64_t>{std::int64_t(1) << 40}));
    EXPECT_TRUE(f.has_attr("/", "format"));
    EXPECT_TRUE(f.has_attr("/d", "arch"));
    EXPECT_FALSE(f.has_attr("/", "arch"));
    EXPECT_FALSE(f.has_attr("/missing/group", "arch"));

    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.attr_string("/", "nope"); }), path + ": /: no attribute 'nope'");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.attr_string("/", "alpha"); }),
                        path + ": /: attribute 'alpha': expected a string");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.attr_int("/", "alpha"); }),
                        path + ": /: attribute 'alpha': expected integers, found float64");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.attr_int("/d", "arch"); }),
                        path + ": /d: attribute 'arch': expected one integer, found 3");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.attr_double("/", "format"); }), "expected numbers, found string");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.attr_int("/nope", "x"); }), path + ": /nope: no such object");
}

TEST(H5File, ReadsFixedAndVariableLengthStringAttributes) {
    // h5py writes str as variable-length UTF-8 and numpy bytes as fixed-length null-padded;
    // C programs often write fixed-length null-terminated. All read the same.
    const std::string path = temp_h5("strings");
    { File::create(path).write_scalar("/x", 1.0); }
    {
        Handle f = raw_open(path);
        Handle root(H5Gopen2(f.id(), "/", H5P_DEFAULT));
        raw_string_attr(root.id(), "vlen_ascii", "sigmoid", true, H5T_STR_NULLTERM);
        raw_string_attr(root.id(), "fixed_nullpad", "softmax", false, H5T_STR_NULLPAD);
        raw_string_attr(root.id(), "fixed_nullterm", "mnist", false, H5T_STR_NULLTERM);
        raw_string_attr(root.id(), "fixed_empty", "", false, H5T_STR_NULLPAD);
    }
    File f = File::open_read(path);
    EXPECT_EQ(f.attr_string("/", "vlen_ascii"), "sigmoid");
    EXPECT_EQ(f.attr_string("/", "fixed_nullpad"), "softmax");
    EXPECT_EQ(f.attr_string("/", "fixed_nullterm"), "mnist");  // no room for the null: all 5 kept
    EXPECT_EQ(f.attr_string("/", "fixed_empty"), "");
}

TEST(H5Series, AppendsRowsAndTruncates) {
    const std::string path = temp_h5("series");
    File f = File::create(path);
    f.create_series("/trajectory/loss", 0);
    f.create_series("/trajectory/theta", 3, 2);
    f.create_series_int("/trajectory/step");
    EXPECT_EQ(f.rows("/trajectory/loss"), 0u);
    EXPECT_EQ(f.shape("/trajectory/theta"), (std::vector<hsize_t>{0, 3}));
    EXPECT_EQ(f.read_vector("/trajectory/loss").size(), 0);
    EXPECT_EQ(f.read_matrix("/trajectory/theta").rows(), 0);
    for (int t = 0; t < 5; ++t) {
        f.append_scalar("/trajectory/loss", 1.0 / (t + 1));
        f.append("/trajectory/theta", Vector::Constant(3, t).eval());
        f.append_int("/trajectory/step", 10 * t);
    }
    const double row[3] = {7, 8, 9};
    f.append("/trajectory/theta", row, 3);
    EXPECT_EQ(f.rows("/trajectory/loss"), 5u);
    EXPECT_EQ(f.rows("/trajectory/theta"), 6u);
    EXPECT_EQ(f.read_ints("/trajectory/step"), (std::vector<std::int64_t>{0, 10, 20, 30, 40}));
    EXPECT_EQ(f.read_vector("/trajectory/loss")[4], 0.2);
    EXPECT_EQ(f.read_row("/trajectory/theta", 5), Vector::LinSpaced(3, 7, 9));
    EXPECT_EQ(f.read_matrix("/trajectory/theta")(2, 1), 2.0);

    // Resume drops rows after the checkpoint, then appends again.
    f.truncate_rows("/trajectory/theta", 2);
    f.truncate_rows("/trajectory/loss", 0);
    EXPECT_EQ(f.rows("/trajectory/theta"), 2u);
    EXPECT_EQ(f.rows("/trajectory/loss"), 0u);
    f.append("/trajectory/theta", row, 3);
    f.append_scalar("/trajectory/loss", 42.0);
    EXPECT_EQ(f.read_row("/trajectory/theta", 2), Vector::LinSpaced(3, 7, 9));
    EXPECT_EQ(f.read_row("/trajectory/theta", 1), Vector::Constant(3, 1.0));
    EXPECT_EQ(f.read_vector("/trajectory/loss"), Vector::Constant(1, 42.0));

    // Overwrites of fixed-size data (a checkpoint) keep the shape.
    const double z[3] = {0, 0, -1};
    f.overwrite_row("/trajectory/theta", 0, z, 3);
    EXPECT_EQ(f.read_row("/trajectory/theta", 0)[2], -1.0);
    f.write("/params/theta", Vector::Zero(4).eval());
    f.overwrite("/params/theta", Vector::LinSpaced(4, 1, 4));
    EXPECT_EQ(f.read_vector("/params/theta"), Vector::LinSpaced(4, 1, 4));

    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.append("/trajectory/theta", row, 2); }),
                        path + ": /trajectory/theta: appending a row of 2 to rows of 3");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.truncate_rows("/trajectory/theta", 4); }),
                        path + ": /trajectory/theta: cannot truncate");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.overwrite("/params/theta", Vector::Zero(5).eval()); }),
                        path + ": /params/theta: cannot overwrite 1-d [4] with 5 values");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.overwrite_row("/trajectory/theta", 3, z, 3); }),
                        "cannot overwrite row 3");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.read_rows("/trajectory/theta", 2, 2); }),
                        "rows 2..4 requested, the dataset has 3");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.append_scalar("/params/theta", 1.0); }),
                        path + ": /params/theta: cannot grow");
    EXPECT_PRED_FORMAT2(contains, error_of([&] { f.create_series("/trajectory/loss", 0); }),
                        "/trajectory/loss: dataset exists");
}

TEST(H5Series, ChunksAreCappedNearOneMebibyte) {
    const std::string path = temp_h5("chunks");
    {
        File f = File::create(path);
        f.create_series("/wide", 39760);
        f.create_series("/narrow", 0);
        f.create_series("/huge", 400000);
    }
    Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
    auto chunk = [&](const char* name) {
        Handle d(H5Dopen2(file.id(), name, H5P_DEFAULT));
        Handle dcpl(H5Dget_create_plist(d.id()));
        std::vector<hsize_t> c(2, 0);
        EXPECT_GT(H5Pget_chunk(dcpl.id(), 2, c.data()), 0);
        return c;
    };
    EXPECT_EQ(chunk("/wide"), (std::vector<hsize_t>{3, 39760}));  // 3 rows = 0.95 MB
    EXPECT_EQ(chunk("/narrow")[0], 64u);
    EXPECT_EQ(chunk("/huge")[0], 1u);  // never fewer than one row
}

TEST(H5Series, SwmrReaderSeesRowsAppendedAfterItOpened) {
    const std::string path = temp_h5("swmr");
    File w = File::create(path);
    w.create_series("/trajectory/loss", 0);
    w.create_series("/trajectory/theta", 4, 1);
    w.set_attr("/", "format", "tdyn-run");
    w.flush();
    w.start_swmr();
    w.append_scalar("/trajectory/loss", 1.0);
    w.flush();

    File r = File::open_read(path, true);
    EXPECT_EQ(r.attr_string("/", "format"), "tdyn-run");
    EXPECT_EQ(r.rows("/trajectory/loss"), 1u);
    EXPECT_EQ(r.rows("/trajectory/theta"), 0u);
    for (int t = 1; t <= 20; ++t) {
        w.append_scalar("/trajectory/loss", 1.0 + t);
        w.append("/trajectory/theta", Vector::Constant(4, t).eval());
        w.flush();
        ASSERT_EQ(r.rows("/trajectory/loss"), hsize_t(t + 1));
        ASSERT_EQ(r.rows("/trajectory/theta"), hsize_t(t));
        ASSERT_EQ(r.read_row("/trajectory/loss", hsize_t(t))[0], 1.0 + t);
        ASSERT_EQ(r.read_row("/trajectory/theta", hsize_t(t - 1)), Vector::Constant(4, t));
    }
    EXPECT_EQ(r.read_vector("/trajectory/loss"), Vector::LinSpaced(21, 1, 21));
}

TEST(H5Series, OpenWriteAfterAKilledSwmrWriter) {
    // A writer that dies in SWMR mode leaves the file marked as open for writing;
    // resuming must still be able to open it.
    const std::string path = temp_h5("killed");
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        try {
            File f = File::create(path);
            f.create_series("/trajectory/loss", 0);
            f.flush();
            f.start_swmr();
            f.append_scalar("/trajectory/loss", 0.5);
            f.flush();
            ::_exit(0);  // no close: like SIGKILL
        } catch (...) {
            ::_exit(1);
        }
    }
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    {
        File r = File::open_read(path, true);
        EXPECT_EQ(r.read_vector("/trajectory/loss"), Vector::Constant(1, 0.5));
    }
    File f = File::open_write(path);
    f.append_scalar("/trajectory/loss", 0.25);
    EXPECT_EQ(f.rows("/trajectory/loss"), 2u);
}

TEST(H5Reference, ReadsThetaAndAttributesWrittenByH5py) {
    const std::string path = TDYN_SOURCE_DIR "/tests/reference/mnist_k1000_seed7.h5";  // committed: missing = failure
    ASSERT_TRUE(fs::exists(path)) << "reference file missing: " << path
                                  << " (scripts/make_reference.py regenerates it)";
    File f = File::open_read(path);
    const Vector theta = f.read_vector("/params/theta");
    EXPECT_EQ(theta.size(), 39760);
    EXPECT_TRUE(theta.allFinite());
    EXPECT_GT(theta.norm(), 0.0);
    EXPECT_EQ(f.attr_ints("/", "arch"), (std::vector<std::int64_t>{784, 50, 10}));
    EXPECT_EQ(f.attr_int("/", "samples"), 1000);
    EXPECT_EQ(f.attr_int("/", "seed"), 7);
    EXPECT_EQ(f.read_vector("/hessian_top").size(), 3);
    const double loss = f.read_scalar("/loss");
    EXPECT_GT(loss, 0.0);
    EXPECT_LT(loss, 10.0);
    EXPECT_EQ(f.read_row("/params/theta", 39759)[0], theta[39759]);
    EXPECT_EQ(f.read_rows("/params/theta", 100, 5), RowMatrix(theta.segment(100, 5)));
}

TEST(H5Errors, CreateOnAnExistingFileThrowsAndLeavesItIntact) {
    const std::string path = temp_h5("exists");
    { File::create(path).write("/v", Vector::LinSpaced(3, 1, 3)); }
    const auto size = fs::file_size(path);
    EXPECT_PRED_FORMAT2(contains, error_of([&] { File::create(path); }), path + ": file exists");
    EXPECT_EQ(fs::file_size(path), size);
    EXPECT_EQ(File::open_read(path).read_vector("/v"), Vector::LinSpaced(3, 1, 3));
}

TEST(H5Errors, OpeningATextFileOrAMissingFileSaysSo) {
    const std::string text = temp_h5("text");
    { std::ofstream(text) << "step,loss\n0,2.3\n"; }
    EXPECT_EQ(error_of([&] { File::open_read(text); }), text + ": not an HDF5 file");
    EXPECT_EQ(error_of([&] { File::open_read(text, true); }), text + ": not an HDF5 file");
    EXPECT_EQ(error_of([&] { File::open_write(text); }), text + ": not an HDF5 file");
    const std::string missing = temp_h5("missing");
    EXPECT_EQ(error_of([&] { File::open_read(missing); }), missing + ": no such file");
    EXPECT_EQ(error_of([&] { File::open_write(missing); }), missing + ": no such file");
    const std::string nodir = testing::TempDir() + "tdyn-no-such-dir/x.h5";
    EXPECT_PRED_FORMAT2(contains, error_of([&] { File::create(nodir); }), nodir + ": cannot create the file");
}

TEST(H5Errors, AMissingDatasetNamesTheFileAndTheDataset) {
    const std::string path = temp_h5("missing-ds");
    { File::create(path).write_scalar("/trajectory/step", 1.0); }
    File f = File::open_read(path);
    EXPECT_EQ(error_of([&] { f.read_vector("/trajectory/loss"); }), path + ": /trajectory/loss: no such dataset");
    EXPECT_EQ(error_of([&] { f.rows("/spectrum/step"); }), path + ": /spectrum/step: no such dataset");
    EXPECT_EQ(error_of([&] { f.read_vector("/trajectory"); }),
              path + ": /trajectory: cannot open dataset (is it a group?)");
}

TEST(H5Errors, WrongRankAndTypeAreDescribed) {
    const std::string path = temp_h5("rank");
    {
        File f = File::create(path);
        f.write("/X", Vector::Zero(100).eval());
        f.write("/M", RowMatrix::Zero(2, 3).eval());
        f.write_scalar("/s", 1.0);
        f.set_attr("/", "note", "hello");
    }
    File f = File::open_read(path);
    EXPECT_EQ(error_of([&] { f.read_matrix("/X"); }), path + ": /X: expected a 2-d dataset, found 1-d [100]");
    EXPECT_EQ(error_of([&] { f.read_vector("/M"); }), path + ": /M: expected a 1-d dataset, found 2-d [2 x 3]");
    EXPECT_EQ(error_of([&] { f.read_vector("/s"); }), path + ": /s: expected a 1-d dataset, found a scalar");
    EXPECT_EQ(error_of([&] { f.read_scalar("/X"); }), path + ": /X: expected a scalar, found 1-d [100]");
    EXPECT_EQ(error_of([&] { f.read_ints("/X"); }), path + ": /X: expected integers, found float64");
    EXPECT_EQ(error_of([&] { f.rows("/s"); }), path + ": /s: expected a series, found a scalar");
}

}  // namespace
}  // namespace tdyn
