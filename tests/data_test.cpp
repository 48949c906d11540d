#include "tdyn/data.hpp"
#include "tdyn/h5.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <fstream>

namespace tdyn {
namespace {

std::string temp_path(const std::string& name) {
    const std::string dir = ::testing::TempDir() + "tdyn_data_test";
    std::filesystem::create_directories(dir);
    const std::string p = dir + "/" + name;
    std::filesystem::remove(p);
    return p;
}

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

std::vector<std::uint8_t> idx_header(std::vector<std::uint32_t> dims) {
    std::vector<std::uint8_t> b = {0, 0, 0x08, std::uint8_t(dims.size())};
    for (auto d : dims)
        for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(d >> s));
    return b;
}

/// Expects f to throw Error whose message contains every one of `parts`.
template <class F>
void expect_error(F f, std::initializer_list<std::string> parts) {
    try {
        f();
        ADD_FAILURE() << "no error";
    } catch (const Error& e) {
        for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
}

TEST(Idx, ReadsMnist) {
    TDYN_REQUIRE_MNIST();
    const IdxArray images = read_idx(test::mnist_dir() + "/train-images-idx3-ubyte");
    EXPECT_EQ(images.dims, (std::vector<std::uint32_t>{60000, 28, 28}));
    const Dataset ds = load_dataset("mnist", data_dir(""), 0);
    EXPECT_EQ(ds.X.rows(), 60000);
    EXPECT_EQ(ds.X.cols(), 784);
    EXPECT_EQ(ds.T.cols(), 10);
    ASSERT_TRUE(ds.X.has_pixels());  // held as the bytes, x = pixel / 255
    EXPECT_TRUE(ds.X.pixels() == images.data);
    EXPECT_EQ(ds.X.dense().maxCoeff(), 1.0);
    EXPECT_EQ(ds.X.dense().minCoeff(), 0.0);
    for (int p = 0; p < 256; ++p) EXPECT_EQ(InputData::pixel_value(std::uint8_t(p)), double(p) / 255.0);
    EXPECT_EQ(ds.T.row(0).sum(), 1.0);
    EXPECT_EQ(ds.T(0, 5), 1.0);  // the first training image is a 5
    EXPECT_EQ(ds.T(1, 0), 1.0);  // the second a 0
    // MNIST is about 19% non-zero, which is what the sparse X path counts on.
    EXPECT_NEAR(double(ds.X.nonzeros()) / double(ds.X.size()), 0.19, 0.01);
    EXPECT_EQ(ds.X.nonzeros(), Index((ds.X.dense().array() != 0).count()));
    const Dataset first = load_dataset("mnist", data_dir(""), 100);
    EXPECT_EQ(first.X.dense(), ds.X.dense().topRows(100));
    RowMatrix row(1, 784);
    ds.X.copy_row(59999, row.data());
    EXPECT_EQ(row, ds.X.dense().row(59999));
}

TEST(Idx, RejectsTruncatedFile) {
    const std::string p = temp_path("truncated-idx3");
    auto b = idx_header({10, 28, 28});
    b.resize(b.size() + 1000);
    write_bytes(p, b);
    expect_error([&] { read_idx(p); }, {p, "truncated", "10x28x28", "1000"});
}

TEST(Idx, RejectsWrongMagic) {
    const std::string p = temp_path("wrong-magic");
    write_bytes(p, {0x1f, 0x8b, 0x08, 0x00, 1, 2, 3, 4});  // a gzip file, not unpacked
    expect_error([&] { read_idx(p); }, {p, "not an IDX file"});
    write_bytes(p, {0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0});  // float32 elements
    expect_error([&] { read_idx(p); }, {p, "element type"});
}

TEST(Idx, AbsurdDimensionsDoNotAllocate) {
    const std::string p = temp_path("absurd");
    auto b = idx_header({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF});
    b.resize(b.size() + 64);
    write_bytes(p, b);
    expect_error([&] { read_idx(p); }, {p, "truncated"});
    expect_error([&] { read_idx(temp_path("missing")); }, {"no such file"});
}

TEST(Idx, RejectsMismatchedImageAndLabelCounts) {
    const std::string ip = temp_path("img-idx3"), lp = temp_path("lab-idx1");
    auto imgs = idx_header({3, 2, 2});
    imgs.resize(imgs.size() + 12, 255);
    auto labs = idx_header({2});
    labs.insert(labs.end(), {1, 2});
    write_bytes(ip, imgs);
    write_bytes(lp, labs);
    expect_error([&] { dataset_from_idx(read_idx(ip), read_idx(lp), ip, lp, 0); }, {lp, "2 labels", "3 images"});
    labs = idx_header({3});
    labs.insert(labs.end(), {1, 2, 12});
    write_bytes(lp, labs);
    expect_error([&] { dataset_from_idx(read_idx(ip), read_idx(lp), ip, lp, 0); }, {lp, "label 12", "0..9"});
    expect_error([&] { dataset_from_idx(read_idx(ip), read_idx(ip), ip, ip, 0); }, {"expected an idx1"});
}

/// A rank r of N for the per-rank readers; the sums are not needed here.
struct RankOf final : SampleComm {
    int r, n;
    RankOf(int r_, int n_) : r(r_), n(n_) {}
    void sum(double*, Index) const override {}
    int rank() const override { return r; }
    int size() const override { return n; }
};

// MPI (docs/MPI.md): rank r reads only its block [K r/N, K (r+1)/N) of the first K rows, as pixels
// from the IDX file's offsets; its X equals those rows of the one-process X, bit for bit.
TEST(Idx, EachRankReadsItsBlockOfPixels) {
    TDYN_REQUIRE_MNIST();
    const Index K = 1001;
    const Dataset all = load_dataset("mnist", data_dir(""), K);
    const RowMatrix X = all.X.dense();
    for (int r = 0; r < 3; ++r) {
        const RankOf comm(r, 3);
        const Dataset ds = load_dataset("mnist", data_dir(""), K, 10, false, comm);
        const Index r0 = shard_begin(K, r, 3), n = shard_begin(K, r + 1, 3) - r0;
        ASSERT_TRUE(ds.X.has_pixels());
        EXPECT_EQ(ds.first_row, r0);
        EXPECT_EQ(ds.global_samples(), K);
        EXPECT_EQ(ds.X.dense(), X.middleRows(r0, n));
        EXPECT_EQ(ds.T, all.T.middleRows(r0, n));
    }
}

TEST(DataFile, ReadsUint8PixelsAndLabels) {
    const std::string p = temp_path("small.h5");
    {
        h5::File f = h5::File::create(p);
        RowMatrix X(3, 2);
        X << 0, 255, 51, 102, 1, 2;
        f.write_matrix("/X", X);  // float64 values are taken as they are
        f.write_ints("/labels", std::vector<std::int64_t>{0, 2, 1});
    }
    const Dataset ds = read_data_file(p, 2, 3);
    EXPECT_EQ(ds.X.rows(), 2);
    EXPECT_FALSE(ds.X.has_pixels());
    EXPECT_EQ(ds.X(0, 1), 255.0);
    EXPECT_EQ(ds.T(1, 2), 1.0);
    EXPECT_EQ(ds.T.cols(), 3);
    EXPECT_EQ(read_data_file(p, 0).T.cols(), 3);  // classes from the largest label
    expect_error([&] { read_data_file(p, 5); }, {"samples 5", p, "3 samples"});
}

TEST(DataFile, RejectsWrongShapesAndValues) {
    const std::string p1 = temp_path("one-d.h5");
    {
        h5::File f = h5::File::create(p1);
        f.write_vector("/X", Vector::Ones(4));
        f.write_matrix("/T", RowMatrix::Ones(4, 2));
    }
    expect_error([&] { read_data_file(p1, 0); }, {p1, "/X", "2-d"});
    const std::string p2 = temp_path("rows.h5");
    {
        h5::File f = h5::File::create(p2);
        f.write_matrix("/X", RowMatrix::Ones(4, 3));
        f.write_matrix("/T", RowMatrix::Ones(5, 2));
    }
    expect_error([&] { read_data_file(p2, 0); }, {p2, "/T has 5 rows", "/X has 4"});
    const std::string p3 = temp_path("nan.h5");
    {
        h5::File f = h5::File::create(p3);
        RowMatrix X = RowMatrix::Ones(2, 2);
        X(1, 1) = std::nan("");
        f.write_matrix("/X", X);
        f.write_ints("/labels", std::vector<std::int64_t>{0, 1});
    }
    expect_error([&] { read_data_file(p3, 0); }, {p3, "NaN"});
    const std::string p4 = temp_path("notargets.h5");
    {
        h5::File f = h5::File::create(p4);
        f.write_matrix("/X", RowMatrix::Ones(2, 2));
    }
    expect_error([&] { read_data_file(p4, 0); }, {p4, "/labels"});
    const std::string p5 = temp_path("huge-label.h5");
    {
        h5::File f = h5::File::create(p5);
        f.write_matrix("/X", RowMatrix::Ones(2, 2));
        f.write_ints("/labels", std::vector<std::int64_t>{0, std::int64_t(1) << 40});  // would be 2^40 one-hot columns
    }
    expect_error([&] { read_data_file(p5, 0); }, {p5, "label 1099511627776 of sample 1", "not a class index"});
    expect_error([&] { load_dataset("mnits", "/nonexistent", 0); }, {"data: 'mnits'"});
    expect_error([&] { load_dataset("mnist", "/nonexistent", 0); },
                 {"/nonexistent/mnist/train-images-idx3-ubyte", "setup.sh"});
}

}  // namespace
}  // namespace tdyn

// Found by the fuzzer: a header of 0 images of 134283264 x 134414336 pixels passed the size
// check (0 bytes needed) and made a 0 x 1.8e16 matrix that Eigen then scanned column by column.
TEST(Idx, ZeroImagesOrAbsurdImageSizesAreRejected) {
    tdyn::IdxArray labels;
    labels.dims = {0};
    tdyn::IdxArray images;
    images.dims = {0, 134283264u, 134414336u};
    EXPECT_THROW(tdyn::dataset_from_idx(images, labels, "images", "labels", 0, 10), tdyn::Error);
    images.dims = {1, 65536u, 65536u};
    images.data.assign(1, 0);
    labels.dims = {1};
    labels.data.assign(1, 0);
    EXPECT_THROW(tdyn::dataset_from_idx(images, labels, "images", "labels", 0, 10), tdyn::Error);
}
