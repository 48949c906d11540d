// Backprop against the truth: central differences, seed 003's worked examples, and the
// PyTorch reference file.
#include "tdyn/evaluation.hpp"

#include "tdyn/h5.hpp"
#include "test_support.hpp"
#include <Eigen/SparseCore>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <gtest/gtest.h>
#include <limits>
#include <numeric>
#include <omp.h>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>

namespace tdyn {
namespace {

/// The VmFlags line of the mapping of /proc/self/smaps that holds address a ("" if none).
std::string vm_flags_at(const void* a) {
    std::ifstream smaps("/proc/self/smaps");
    const auto x = reinterpret_cast<std::uintptr_t>(a);
    bool inside = false;
    for (std::string line; std::getline(smaps, line);) {
        std::uintptr_t lo = 0, hi = 0;
        char dash = 0;
        std::istringstream head(line);
        if (head >> std::hex >> lo >> dash >> hi && dash == '-') inside = lo <= x && x < hi;
        else if (inside && line.rfind("VmFlags:", 0) == 0) return line;
    }
    return "";
}

// resize_huge advises huge pages (madvise MADV_HUGEPAGE) for a new large buffer: the kernel marks
// its mapping "hg" in /proc/self/smaps whether or not huge pages are free at the moment, so this
// does not depend on the machine's memory. A 32 MB matrix: its middle must lie in an "hg" mapping.
// Skipped where the kernel has no transparent huge pages.
TEST(HugePages, LargeBuffersAreAdvised) {
    if (!std::ifstream("/sys/kernel/mm/transparent_hugepage/enabled") || !std::ifstream("/proc/self/smaps"))
        GTEST_SKIP() << "no transparent huge pages here";
    RowMatrix big;
    resize_huge(big, 4096, 1024);
    const std::string flags = vm_flags_at(big.data() + big.size() / 2);
    ASSERT_FALSE(flags.empty()) << "no mapping found for the buffer";
    EXPECT_NE((flags + " ").find(" hg "), std::string::npos) << flags;
    big.setOnes();  // advised memory is ordinary memory
    EXPECT_EQ(big.sum(), double(big.size()));
}

using test::relative_error;

double loss_at(const test::Problem& p, const Vector& theta) {
    InputMatrix X(p.X, XPath::Dense);
    return Evaluation(p.arch, X, p.T, theta).loss();
}

// Every activation/output pair on three architectures (no hidden layer, one, two).
// Central differences with h = 1e-5 carry O(h^2) ~ 1e-10 truncation and ~1e-11 rounding
// error relative to the gradient, so 1e-6 leaves four orders of margin.
TEST(Gradient, MatchesCentralDifferences) {
    for (const char* a : {"4-3", "5-4-3", "6-5-4-3"})
        for (Activation f : test::all_activations())
            for (Output o : test::all_outputs()) {
                const auto p = test::random_problem(Architecture::parse(a, f, o), 7, 11);
                InputMatrix X(p.X, XPath::Dense);
                Evaluation e(p.arch, X, p.T, p.theta);
                const Vector fd = test::central_gradient([&](const Vector& th) { return loss_at(p, th); }, p.theta);
                EXPECT_LT(relative_error(e.gradient(), fd), 1e-6) << a << " " << to_string(f) << " " << to_string(o);
            }
}

TEST(InputDerivatives, LossGradientMatchesCentralDifferences) {
    for (Activation f : test::all_activations())
        for (Output o : test::all_outputs()) {
            const auto p = test::random_problem(Architecture::parse("5-4-3-3", f, o), 4, 3);
            InputMatrix X(p.X, XPath::Dense);
            Evaluation e(p.arch, X, p.T, p.theta);
            const RowMatrix dLdX = e.input_gradient();
            // dL/dX flattened row-major against central differences in every pixel.
            const Eigen::Map<const Vector> flat(p.X.data(), p.X.size());
            const Vector fd = test::central_gradient(
                [&](const Vector& x) {
                    const RowMatrix Xp = Eigen::Map<const RowMatrix>(x.data(), p.X.rows(), p.X.cols());
                    InputMatrix Xi(Xp, XPath::Dense);
                    return Evaluation(p.arch, Xi, p.T, p.theta).loss();
                },
                flat);
            EXPECT_LT(relative_error(Eigen::Map<const Vector>(dLdX.data(), dLdX.size()), fd), 1e-6)
                << to_string(f) << " " << to_string(o);
        }
}

// Seed 001, question 2: dy/dx by reverse mode and by forward mode agree with each other
// (to rounding, 1e-12) and with central differences of the output (1e-6).
TEST(InputDerivatives, OutputJacobianReverseEqualsForwardAndCentralDifferences) {
    for (Activation f : test::all_activations())
        for (Output o : test::all_outputs()) {
            const auto p = test::random_problem(Architecture::parse("6-5-4-3", f, o), 3, 5);
            InputMatrix X(p.X, XPath::Dense);
            Evaluation e(p.arch, X, p.T, p.theta);
            const Index i = 1;
            const RowMatrix rev = e.output_jacobian_reverse(i), fwd = e.output_jacobian_forward(i);
            EXPECT_LT(relative_error(rev, fwd), 1e-12) << to_string(f) << " " << to_string(o);
            const Matrix fd = test::central_jacobian(
                [&](const Vector& x) {
                    const RowMatrix xi = x.transpose();
                    const RowMatrix ti = p.T.row(i);
                    InputMatrix Xi(xi, XPath::Dense);
                    return Vector(Evaluation(p.arch, Xi, ti, p.theta).output().row(0).transpose());
                },
                p.X.row(i).transpose());
            EXPECT_LT(relative_error(Matrix(rev), fd), 1e-6) << to_string(f) << " " << to_string(o);
        }
}

// Seed 003, case 1: x = (1, 4, 5), t = (0.1, 0.05), sigmoid hidden and output layers, squared
// error E = 1/2 ||o - t||^2 (our sigmoid-mse with k = 1). The seed uses ONE bias b1 shared by
// both hidden units and one b2 shared by both outputs; with per-unit biases the shared-bias
// derivative is the sum over units. The seed prints 4 decimals computed from rounded
// intermediates, so we compare to 1e-4.
TEST(Seed003, Case1SigmoidNetworkWorkedExample) {
    const Architecture arch = Architecture::parse("3-2-2", Activation::Sigmoid, Output::SigmoidMSE);
    Vector theta(arch.num_params());
    // W1 = [w1 w2; w3 w4; w5 w6] row-major, b1 = (0.5, 0.5), W2 = [w7 w8; w9 w10], b2 = (0.5, 0.5)
    theta << 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.5, 0.5, 0.7, 0.8, 0.9, 0.1, 0.5, 0.5;
    RowMatrix X(1, 3), T(1, 2);
    X << 1, 4, 5;
    T << 0.1, 0.05;
    InputMatrix Xm(X, XPath::Dense);
    Evaluation e(arch, Xm, T, theta);
    EXPECT_NEAR(e.output()(0, 0), 0.8896, 1e-4);
    EXPECT_NEAR(e.output()(0, 1), 0.8004, 1e-4);
    const Vector& g = e.gradient();
    // dE/dW1 = [0.0020 0.0004; 0.0079 0.0016; 0.0099 0.0020]
    const double dW1[] = {0.0020, 0.0004, 0.0079, 0.0016, 0.0099, 0.0020};
    for (int i = 0; i < 6; ++i) EXPECT_NEAR(g[i], dW1[i], 1e-4) << "dE/dw" << i + 1;
    // dE/dW2 = [0.0765 0.1183; 0.0772 0.1193]
    const double dW2[] = {0.0765, 0.1183, 0.0772, 0.1193};
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(g[8 + i], dW2[i], 1e-4) << "dE/dw" << i + 7;
    // dE/db2 (shared) = 0.1975
    EXPECT_NEAR(g[12] + g[13], 0.1975, 1e-4);
    // dE/db1 (shared): the seed says 0.0008, but it keeps only the paths o1 -> h1 and o2 -> h2.
    // b1 reaches both hidden units and each reaches both outputs, so
    //   dE/db1 = dE/dh1 h1' + dE/dh2 h2' = 0.1502 * 0.0132 + 0.0818 * 0.0049 = 0.0024,
    // with dE/dh1, dE/dh2 as the seed itself computes them.
    const double db1 = g[6] + g[7];
    EXPECT_NEAR(db1, 0.0024, 1e-4);
    EXPECT_GT(std::abs(db1 - 0.0008), 1e-3) << "the seed's wrong value";
}

// Seed 003, case 2: z1 = W x + b with W = [1 -2; 0 2], b = (0, -1), ReLU, y = (1 -1) z2, loss
// 1/2 (y - t)^2. Our layout is A1 = x W1 + b1, so W1 = W^T.
TEST(Seed003, Case2ReluInputDerivatives) {
    const Architecture arch = Architecture::parse("2-2-1", Activation::Relu, Output::IdentityMSE);
    Vector theta(arch.num_params());
    theta << 1, 0, -2, 2, 0, -1, 1, -1, 0;
    struct Case {
        double x0, x1, t, loss, g0, g1;
    };
    // (a) and (b) as in the seed. (c): x = (1, 1), t = -2: y = -1, dl/dy = y - t = +1, the ReLU
    // passes only unit 2, so dl/dx = 1 * (1 -1) diag(0, 1) W = (0 -1) W = (0, -2). The seed
    // writes the right product but the result (0, 2); the sign of the second entry is wrong.
    const Case cases[] = {{1, 0, 2, 0.5, -1, 2}, {0, 1, 0, 0.5, 0, 2}, {1, 1, -2, 0.5, 0, -2}};
    for (const Case& c : cases) {
        RowMatrix X(1, 2), T(1, 1);
        X << c.x0, c.x1;
        T << c.t;
        InputMatrix Xm(X, XPath::Dense);
        Evaluation e(arch, Xm, T, theta);
        EXPECT_DOUBLE_EQ(e.loss(), c.loss);
        const RowMatrix g = e.input_gradient();
        EXPECT_DOUBLE_EQ(g(0, 0), c.g0) << "x = (" << c.x0 << ", " << c.x1 << ")";
        EXPECT_DOUBLE_EQ(g(0, 1), c.g1) << "x = (" << c.x0 << ", " << c.x1 << ")";
    }
}

// PyTorch (float64) on the first 1000 MNIST images: loss, accuracy and gradient. Two float64
// implementations summing in different orders agree to ~1e-13; 1e-10 is the file's stated bound.
TEST(Reference, LossAccuracyGradientMatchPyTorch) {
    TDYN_REQUIRE_REFERENCE();
    TDYN_REQUIRE_MNIST();
    h5::File ref = h5::File::open_read(test::reference_file());
    const Architecture arch = Architecture::parse("784-50-10");
    const Dataset ds = load_dataset("mnist", data_dir(""), 1000);
    InputMatrix X(ds.X, XPath::Dense);
    Evaluation e(arch, X, ds.T, ref.read_vector("/params/theta"));
    EXPECT_LT(relative_error(e.loss(), ref.read_scalar("/loss")), 1e-10);
    EXPECT_DOUBLE_EQ(e.accuracy(), ref.read_scalar("/accuracy"));
    EXPECT_LT(relative_error(e.gradient(), ref.read_vector("/gradient")), 1e-10);
}

// X read from pixels (the data set holds the bytes) against X as the float64 matrix pixel / 255
// that the loaders built before (issue 19): the same entries on every path, so the same bits.
// Truth for the sparse paths: Eigen's own sparseView of that matrix (the CSR the old code built)
// times B; for the dense paths the InputMatrix of the float64 matrix; then a whole Evaluation
// (loss, gradient, H V) from both, bit for bit.
/// The checks both pixel tests make: X from the bytes `data` against Xd = pixel / 255 built
/// independently. Sparse float64 and float32 products against Eigen's sparseView of Xd (the CSR
/// the old loaders built); then on every path and precision the products and a whole Evaluation
/// (loss, gradient, H V of `vectors` random vectors) from both, bit for bit.
void expect_pixels_give_the_bits_of(const InputData& data, const RowMatrix& Xd, const RowMatrix& T,
                                    const Architecture& arch, Index vectors) {
    const Index k = Xd.rows(), d = Xd.cols();
    const RowMatrix B = RowMatrix::Random(d, vectors), C = RowMatrix::Random(k, vectors);
    {  // sparse float64: X B as the old CSR (sparseView) gives it
        const Eigen::SparseMatrix<double, Eigen::RowMajor> S = Xd.sparseView();
        const InputMatrix X(data, XPath::Sparse);
        RowMatrix out;
        X.times(B, out);
        const RowMatrix ref = S * B;
        EXPECT_TRUE(out == ref);
    }
    {  // sparse float32: the CSR of X.cast<float>()
        const Eigen::SparseMatrix<float, Eigen::RowMajor> S = Xd.cast<float>().sparseView();
        const InputMatrix X(data, XPath::Sparse, Precision::F32);
        RowMatrix out;
        X.times(B, out);
        const RowMatrixF ref = S * RowMatrixF(B.cast<float>());
        EXPECT_TRUE(out == ref.cast<double>());
    }
    const Vector theta = init_params(arch, 3);
    const Matrix V = Matrix::Random(theta.size(), vectors);
    for (XPath path : {XPath::Auto, XPath::Dense, XPath::Sparse})
        for (Precision prec : {Precision::F64, Precision::F32}) {
            const InputMatrix Xp(data, path, prec), Xm(Xd, path, prec);
            EXPECT_EQ(Xp.sparse(), Xm.sparse());
            EXPECT_EQ(Xp.density(), Xm.density());
            RowMatrix a, b;
            Xp.times(B, a);
            Xm.times(B, b);
            EXPECT_TRUE(a == b);
            Xp.transpose_times(C, a);
            Xm.transpose_times(C, b);
            EXPECT_TRUE(a == b);
            Evaluation ep(arch, Xp, T, theta), em(arch, Xm, T, theta);
            EXPECT_EQ(ep.loss(), em.loss());
            EXPECT_TRUE(ep.gradient() == em.gradient());
            Matrix hp(theta.size(), vectors), hm(theta.size(), vectors);
            ep.hessian_times(V, hp);
            em.hessian_times(V, hm);
            EXPECT_TRUE(hp == hm);
        }
}

TEST(InputPaths, PixelsGiveTheBitsOfTheFloat64Matrix) {
    TDYN_REQUIRE_MNIST();
    const Dataset ds = load_dataset("mnist", data_dir(""), 2000);
    ASSERT_TRUE(ds.X.has_pixels());
    const RowMatrix Xd = ds.X.dense();  // the old loader's X
    const IdxArray images = read_idx(test::mnist_dir() + "/train-images-idx3-ubyte");
    for (Index i = 0; i < Xd.size(); ++i) ASSERT_EQ(Xd.data()[i], double(images.data[std::size_t(i)]) / 255.0) << i;
    expect_pixels_give_the_bits_of(ds.X, Xd, ds.T, Architecture::parse("784-50-10"), 7);
}

// The same without MNIST, so that the sanitizer stage (which runs without it) also covers the
// pixel path: InputData built from bytes (about 20 % non-zero, a zero row, the extreme values 1
// and 255), against the float64 matrix pixel / 255.
TEST(InputPaths, PixelsOfASmallImageSetGiveTheBitsOfTheFloat64Matrix) {
    const Index k = 300, d = 20;
    std::mt19937_64 g(11);
    std::vector<std::uint8_t> pixels(std::size_t(k * d), 0);
    for (std::size_t i = 0; i < pixels.size(); ++i)
        if (g() % 5 == 0) pixels[i] = std::uint8_t(1 + g() % 255);
    for (Index j = 0; j < d; ++j) pixels[std::size_t(7 * d + j)] = 0;  // a zero row
    // the edges of the word-at-a-time non-zero test (evaluation.cpp, nonzero_bytes): 1, 127, 128, 255
    pixels[0] = 1, pixels[1] = 255, pixels[2] = 128, pixels[3] = 127, pixels[5] = 0;
    RowMatrix Xd(k, d);
    for (Index i = 0; i < k * d; ++i) Xd.data()[i] = double(pixels[std::size_t(i)]) / 255.0;
    const InputData data(pixels, k, d);
    ASSERT_TRUE(data.has_pixels());
    EXPECT_TRUE(data.dense() == Xd);
    EXPECT_EQ(data.nonzeros(), Index((Xd.array() != 0.0).count()));
    RowMatrix T = RowMatrix::Zero(k, 3);
    for (Index i = 0; i < k; ++i) T(i, Index(g() % 3)) = 1;
    expect_pixels_give_the_bits_of(data, Xd, T, Architecture::parse("20-6-3"), 5);
}

// The sparse path's tiles (evaluation.cpp: float64 panels of 64 columns of B or C, then the rest
// in one panel of its width 1-63; float32 panels of 128, then 64, 32, ..., 1; X B over blocks of
// 64 rows and 128 of X's columns; X^T C over blocks of 64 rows inside each row chunk) against the dense product of the same float64 X, at every panel width and tile
// edge: k = 2100 (two row chunks of 1050 = 16 blocks of 64 and one of 26), d = 300 (column
// blocks 128, 128, 44), an empty row, empty columns, pixel bytes and float values. Truth bound
// per entry: two sums of m terms (m = d for X B, k for X^T C) in different orders differ by at
// most 2 gamma_m (|X| |B|)_ij, gamma_m = m u / (1 - m u) (Higham, 3.1); float32 adds the casts of
// X and B (2 u_f each) to 2 gamma_m in u_f = 2^-24. A wrong or missing term is O(1) of an entry.
// The bits must not depend on the thread count (1 against 2 threads), nor, in float64, on the
// panel a column falls in: columns 0, n/2 and n-1 equal the product of that column alone.
TEST(InputPaths, SparseTilesMatchTheDenseProductAtEveryWidth) {
    const Index k = 2100, d = 300;
    std::mt19937_64 g(5);
    std::vector<std::uint8_t> pixels(std::size_t(k * d), 0);
    for (Index i = 0; i < k; ++i)
        for (Index j = 0; j < d; ++j)
            if (i != 77 && j % 97 != 3 && g() % 5 == 0) pixels[std::size_t(i * d + j)] = std::uint8_t(1 + g() % 255);
    RowMatrix Xd(k, d);
    for (Index i = 0; i < k * d; ++i) Xd.data()[i] = InputData::pixel_value(pixels[std::size_t(i)]);
    const InputData data(pixels, k, d);
    const RowMatrix Xabs = Xd.cwiseAbs();
    auto gamma = [](Index m, double u) { return double(m) * u / (1 - double(m) * u); };
    const int saved = omp_get_max_threads();
    std::vector<Index> widths(66);
    std::iota(widths.begin(), widths.end(), Index(1));  // every float64 rest panel, 64 + 1, 64 + 2
    widths.insert(widths.end(), {100, 129, 200});
    for (const Index n : widths) {
        const RowMatrix B = RowMatrix::Random(d, n), C = RowMatrix::Random(k, n);
        const RowMatrix XB = Xd * B, XtC = Xd.transpose() * C;
        const RowMatrix boundXB = Xabs * B.cwiseAbs(), boundXtC = Xabs.transpose() * C.cwiseAbs();
        for (Precision prec : {Precision::F64, Precision::F32}) {
            const bool f32 = prec == Precision::F32;
            const double u = f32 ? 0x1p-24 : 0x1p-53, casts = f32 ? 4 * u : 0;
            const InputMatrix from_pixels(data, XPath::Sparse, prec), from_values(Xd, XPath::Sparse, prec);
            for (const InputMatrix* X : {&from_pixels, &from_values}) {
                RowMatrix out[2], tout[2];
                for (int threads : {1, 2}) {
                    omp_set_num_threads(threads);
                    X->times(B, out[threads - 1]);
                    X->transpose_times(C, tout[threads - 1]);
                }
                omp_set_num_threads(saved);
                const std::string what =
                    "n = " + std::to_string(n) + (f32 ? " f32 " : " f64 ") + (X == &from_pixels ? "pixels" : "values");
                EXPECT_TRUE(out[0] == out[1] && tout[0] == tout[1]) << what << ": bits depend on the thread count";
                const double aXB = 2 * gamma(d, u) + casts, aXtC = 2 * gamma(k, u) + casts;
                EXPECT_TRUE(((out[1] - XB).cwiseAbs().array() <= aXB * boundXB.array()).all())
                    << what << ": X B off by "
                    << ((out[1] - XB).cwiseAbs().array() / boundXB.array().max(1e-300)).maxCoeff() << " of |X||B|";
                EXPECT_TRUE(((tout[1] - XtC).cwiseAbs().array() <= aXtC * boundXtC.array()).all())
                    << what << ": X^T C off by "
                    << ((tout[1] - XtC).cwiseAbs().array() / boundXtC.array().max(1e-300)).maxCoeff() << " of |X|^T|C|";
                if (f32) continue;
                for (const Index j : {Index(0), n / 2, n - 1}) {
                    RowMatrix one, tone;
                    X->times(B.col(j), one);
                    X->transpose_times(C.col(j), tone);
                    EXPECT_TRUE(one.col(0) == out[1].col(j) && tone.col(0) == tout[1].col(j))
                        << what << ": column " << j << " alone gives other bits";
                }
            }
        }
    }
}

TEST(Evaluation, RejectsArchitectureThatDoesNotFitTheData) {
    const auto p = test::random_problem(Architecture::parse("5-4-3"), 4, 1);
    InputMatrix X(p.X);
    try {
        Evaluation e(Architecture::parse("6-4-3"), X, p.T);
        FAIL() << "no error";
    } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("input width 6 does not match the data"), std::string::npos)
            << err.what();
    }
    EXPECT_THROW(Evaluation(Architecture::parse("5-4-2"), X, p.T), Error);
}

// Soft targets: rows of T that are not one-hot, summing to 1 and (scaled rows) not summing to 1;
// delta_L = (y sum t - t)/k covers both. Truth: central differences of the loss, h = 1e-5
// (1e-6 relative: O(h^2) truncation ~1e-10 plus ~1e-11 rounding, as above).
TEST(SoftmaxCrossEntropy, SoftTargetsGradientMatchesCentralDifferences) {
    for (double scale_spread : {0.0, 1.0}) {
        auto p = test::random_problem(Architecture::parse("5-4-3", Activation::Tanh, Output::SoftmaxCE), 7, 13);
        std::mt19937_64 gen(3);
        std::uniform_real_distribution<double> u(0.05, 1.0);
        for (Index i = 0; i < p.T.rows(); ++i) {
            for (Index j = 0; j < p.T.cols(); ++j) p.T(i, j) = u(gen);
            // positive rows summing to 1, then (second pass) rescaled to sums between 0.3 and 2.3
            p.T.row(i) /= p.T.row(i).sum();
            p.T.row(i) *= 1.0 + scale_spread * (2.0 * u(gen) - 0.7);
        }
        InputMatrix X(p.X, XPath::Dense);
        Evaluation e(p.arch, X, p.T, p.theta);
        const Vector fd = test::central_gradient([&](const Vector& th) { return loss_at(p, th); }, p.theta);
        EXPECT_LT(relative_error(e.gradient(), fd), 1e-6) << "row sums spread " << scale_spread;
    }
}

// Weight decay: E = L + lambda/2 |theta|^2. The loss is the closed form (same arithmetic, 1e-15),
// the gradient matches central differences of E (1e-6, as above), and lambda = 0 gives exactly
// the bits of an Evaluation without options.
TEST(WeightDecay, LossAndGradientMatchCentralDifferences) {
    for (Output o : test::all_outputs()) {
        const auto p = test::random_problem(Architecture::parse("5-4-3", Activation::Sigmoid, o), 9, 17);
        InputMatrix X(p.X, XPath::Dense);
        const double lambda = 0.3;
        Evaluation e(p.arch, X, p.T, p.theta, EvaluationOptions{lambda});
        Evaluation plain(p.arch, X, p.T, p.theta);
        EXPECT_EQ(e.data_loss(), plain.loss());
        EXPECT_LT(relative_error(e.loss(), plain.loss() + 0.5 * lambda * p.theta.squaredNorm()), 1e-15);
        const Vector fd = test::central_gradient(
            [&](const Vector& th) { return Evaluation(p.arch, X, p.T, th, EvaluationOptions{lambda}).loss(); },
            p.theta);
        EXPECT_LT(relative_error(e.gradient(), fd), 1e-6) << to_string(o);
        EXPECT_EQ(e.accuracy(), plain.accuracy());
        // lambda = 0: the old bits exactly
        Evaluation zero(p.arch, X, p.T, p.theta, EvaluationOptions{0.0});
        EXPECT_TRUE(zero.loss() == plain.loss() && zero.gradient() == plain.gradient());
        // set_weight_decay after the fact recomputes the gradient
        plain.gradient();
        plain.set_weight_decay(lambda);
        EXPECT_EQ(plain.loss(), e.loss());
        EXPECT_TRUE(plain.gradient() == e.gradient());
    }
}

TEST(WeightDecay, RejectsNegativeOrNonFiniteLambdaNamingIt) {
    const auto p = test::random_problem(Architecture::parse("5-4-3"), 4, 1);
    InputMatrix X(p.X);
    Evaluation e(p.arch, X, p.T, p.theta);
    for (double bad : {-1e-3, std::nan(""), std::numeric_limits<double>::infinity()}) {
        try {
            e.set_weight_decay(bad);
            FAIL() << "accepted " << bad;
        } catch (const Error& err) {
            EXPECT_NE(std::string(err.what()).find("weight_decay"), std::string::npos) << err.what();
        }
        EXPECT_THROW(Evaluation(p.arch, X, p.T, p.theta, EvaluationOptions{bad}), Error);
    }
}

// X and T are held by reference. A column-major or float matrix, or a temporary, would be
// converted into a temporary that dies with the constructor call, so such calls do not compile
// (deleted overloads); the checks are at compile time, the run-time part shows the supported way.
TEST(Evaluation, ColumnMajorOrTemporaryInputsDoNotCompile) {
    static_assert(std::is_constructible_v<InputMatrix, const RowMatrix&>);
    static_assert(!std::is_constructible_v<InputMatrix, const Matrix&>, "column-major X must not bind");
    static_assert(!std::is_constructible_v<InputMatrix, const RowMatrixF&>, "float X must not bind");
    static_assert(!std::is_constructible_v<InputMatrix, RowMatrix&&>, "a temporary X must not bind");
    static_assert(std::is_constructible_v<Evaluation, const Architecture&, const InputMatrix&, const RowMatrix&>);
    static_assert(!std::is_constructible_v<Evaluation, const Architecture&, const InputMatrix&, const Matrix&>);
    static_assert(
        !std::is_constructible_v<Evaluation, const Architecture&, const InputMatrix&, const Matrix&, const Vector&>);
    static_assert(
        !std::is_constructible_v<Evaluation, const Architecture&, const InputMatrix&, RowMatrix&&, const Vector&>);
    // A column-major matrix is converted by the caller into a row-major one that it keeps.
    const auto p = test::random_problem(Architecture::parse("5-4-3"), 6, 2);
    const Matrix Xc = p.X, Tc = p.T;
    const RowMatrix Xr = Xc, Tr = Tc;
    InputMatrix X(Xr), X0(p.X);
    EXPECT_EQ(Evaluation(p.arch, X, Tr, p.theta).loss(), Evaluation(p.arch, X0, p.T, p.theta).loss());
}

// A communicator of R "ranks" that are threads of this process: sum() is an ordered reduction
// (rank 0 + rank 1 + ..., the shape an MPI implementation must have) and hands every rank the
// same bits. It exercises the sample-sum seam for real: global k, one sum per product.
class ThreadComm final : public SampleComm {
public:
    struct Shared {
        explicit Shared(int ranks) : bar(ranks), ptr(ranks) {}
        std::barrier<> bar;
        std::vector<double*> ptr;
        std::vector<double> result;
    };
    ThreadComm(Shared& s, int rank) : m_s(s), m_rank(rank) {}
    void sum(double* data, Index n) const override {
        m_s.ptr[m_rank] = data;
        m_s.bar.arrive_and_wait();
        if (m_rank == 0) {
            m_s.result.assign(m_s.ptr[0], m_s.ptr[0] + n);
            for (std::size_t r = 1; r < m_s.ptr.size(); ++r)
                for (Index i = 0; i < n; ++i) m_s.result[i] += m_s.ptr[r][i];
        }
        m_s.bar.arrive_and_wait();
        std::copy(m_s.result.begin(), m_s.result.begin() + n, data);
        m_s.bar.arrive_and_wait();  // nobody reuses ptr/result before every rank has copied
    }

private:
    Shared& m_s;
    int m_rank;
};

// Rows split over 2 ranks (uneven, and one rank empty) against one process holding them all:
// loss, accuracy, gradient, H V and G V agree to 1e-14 relative (the same terms summed in
// another grouping) and every rank holds identical bits. Weight decay is added once, not per rank.
TEST(SampleComm, TwoRanksAgreeWithOneProcess) {
    const auto p = test::random_problem(Architecture::parse("6-5-4-3", Activation::Tanh, Output::SoftmaxCE), 11, 4);
    const Index P = p.theta.size(), M = 3;
    std::mt19937_64 gen(9);
    std::normal_distribution<double> g;
    Matrix V(P, M);
    for (Index i = 0; i < V.size(); ++i) V.data()[i] = g(gen);
    const EvaluationOptions local{0.1};
    InputMatrix Xall(p.X, XPath::Dense);
    Evaluation one(p.arch, Xall, p.T, p.theta, local);
    Matrix HV1(P, M), GV1(P, M);
    one.hessian_times(V, HV1);
    one.gauss_newton_times(V, GV1);
    for (Index split : {Index(4), Index(0)}) {
        struct Result {
            double loss = 0, accuracy = 0;
            Index k = 0;
            Vector grad;
            Matrix HV, GV;
        };
        Result r[2];
        ThreadComm::Shared shared(2);
        auto rank = [&](int id) {
            const Index r0 = id == 0 ? 0 : split, r1 = id == 0 ? split : p.X.rows();
            const RowMatrix X = p.X.middleRows(r0, r1 - r0), T = p.T.middleRows(r0, r1 - r0);
            const ThreadComm comm(shared, id);
            InputMatrix Xm(X, XPath::Dense);
            Evaluation e(p.arch, Xm, T, p.theta, EvaluationOptions{0.1, &comm});
            r[id].k = e.global_samples();
            r[id].loss = e.loss();
            r[id].accuracy = e.accuracy();
            r[id].grad = e.gradient();
            r[id].HV.resize(P, M);
            r[id].GV.resize(P, M);
            e.hessian_times(V, r[id].HV);
            e.gauss_newton_times(V, r[id].GV);
        };
        std::thread t1(rank, 1);
        rank(0);
        t1.join();
        EXPECT_EQ(r[0].k, p.X.rows());
        EXPECT_LT(relative_error(r[0].loss, one.loss()), 1e-14) << split;
        EXPECT_EQ(r[0].accuracy, one.accuracy());
        EXPECT_LT(relative_error(r[0].grad, one.gradient()), 1e-14) << split;
        EXPECT_LT(relative_error(r[0].HV, HV1), 1e-14) << split;
        EXPECT_LT(relative_error(r[0].GV, GV1), 1e-14) << split;
        EXPECT_TRUE(r[0].loss == r[1].loss && r[0].grad == r[1].grad && r[0].HV == r[1].HV && r[0].GV == r[1].GV)
            << "ranks disagree";
    }
}

}  // namespace
}  // namespace tdyn
