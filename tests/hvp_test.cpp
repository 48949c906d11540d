// Hessian-vector products against the truth: central differences of the gradient, the dense
// Hessian built column by column from them, closed forms (linear regression, zero-residual
// Gauss-Newton), and PyTorch's double backward in the reference file.
#include "tdyn/hvp.hpp"
#include "tdyn/h5.hpp"
#include "test_support.hpp"

#include <Eigen/Eigenvalues>
#include <cstdio>
#include <gtest/gtest.h>

namespace tdyn {
namespace {

using test::relative_error;

Vector gradient_at(const test::Problem& p, const Vector& theta) {
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, theta);
    return e.gradient();
}

Vector random_vector(Index n, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> g;
    Vector v(n);
    for (Index i = 0; i < n; ++i) v[i] = g(gen);
    return v;
}

// H v = (g(theta + h v) - g(theta - h v)) / 2h + O(h^2): with h = 1e-5 the difference is
// ~1e-10 relative, so 1e-6 is a safe bound. Every activation/output pair, 1 to 3 hidden layers.
TEST(HessianVector, MatchesCentralDifferencesOfTheGradient) {
    for (const char* a : {"5-4-3", "6-5-4-3", "4-3-3-3-2"})
        for (Activation f : test::all_activations())
            for (Output o : test::all_outputs()) {
                const auto p = test::random_problem(Architecture::parse(a, f, o), 9, 21);
                InputMatrix X(p.X, XPath::Dense);
                Evaluation e(p.arch, X, p.T, p.theta);
                const Vector v = random_vector(p.theta.size(), 4);
                Matrix Hv(v.size(), 1);
                e.hessian_times(v, Hv);
                const double h = 1e-5;
                const Vector fd = (gradient_at(p, p.theta + h * v) - gradient_at(p, p.theta - h * v)) / (2 * h);
                EXPECT_LT(relative_error(Vector(Hv.col(0)), fd), 1e-6) << a << " " << to_string(f) << " " << to_string(o);
            }
}

// The whole Hessian from H I (one block product with the identity) against the Hessian built
// column by column from central differences of the gradient, and its symmetry.
TEST(HessianVector, DenseHessianMatchesColumnByColumnDifferences) {
    for (Activation f : test::all_activations())
        for (Output o : test::all_outputs()) {
            const auto p = test::random_problem(Architecture::parse("6-5-4-3", f, o), 8, 2);
            const Index P = p.theta.size();
            InputMatrix X(p.X, XPath::Dense);
            Evaluation e(p.arch, X, p.T, p.theta);
            const Matrix H = HessianOp(e) * Matrix::Identity(P, P);
            const Matrix fd = test::central_jacobian([&](const Vector& th) { return gradient_at(p, th); }, p.theta);
            EXPECT_LT(relative_error(H, fd), 1e-6) << to_string(f) << " " << to_string(o);
            EXPECT_LT(relative_error(H, Matrix(H.transpose())), 1e-13) << to_string(f) << " " << to_string(o);
        }
}

// v'Hw = w'Hv: exact symmetry of the R-operator up to rounding (1e-12 relative).
TEST(HessianVector, IsSymmetric) {
    for (Activation f : test::all_activations())
        for (Output o : test::all_outputs()) {
            const auto p = test::random_problem(Architecture::parse("7-6-5-3", f, o), 20, 8);
            InputMatrix X(p.X, XPath::Dense);
            Evaluation e(p.arch, X, p.T, p.theta);
            HessianOp H(e);
            const Vector v = random_vector(p.theta.size(), 1), w = random_vector(p.theta.size(), 2);
            const double vHw = v.dot((H * w).col(0)), wHv = w.dot((H * v).col(0));
            EXPECT_LT(relative_error(vHw, wHv), 1e-12) << to_string(f) << " " << to_string(o);
        }
}

// Linear regression: identity output, squared error, no hidden layer, one output. Then
// L = 1/(2k) ||[X 1] theta - t||^2 and H = (1/k) [X 1]^T [X 1] exactly.
TEST(HessianVector, LinearRegressionHessianIsGramMatrix) {
    const auto p = test::random_problem(Architecture::parse("6-1", Activation::Identity, Output::IdentityMSE), 30, 3);
    RowMatrix X1(30, 7);
    X1 << p.X, RowMatrix::Ones(30, 1);
    const Matrix gram = X1.transpose() * X1 / 30.0;
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    const Matrix H = HessianOp(e) * Matrix::Identity(7, 7);
    EXPECT_LT(relative_error(H, gram), 1e-14);
}

// Seed 000 claims dW1(t+1)/dW1(t) = I, i.e. that d2L/dW1dW1 = 0. It is not: for the seed's
// own network (sigmoid hidden, softmax + cross-entropy) the W1-W1 block of H is far from
// zero, so that block of J = I - alpha H is not the identity.
TEST(HessianVector, Seed000W1BlockIsNotZero) {
    const auto p = test::random_problem(Architecture::parse("8-5-4"), 16, 9);
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    const Index P = p.theta.size(), nW1 = 8 * 5;
    const Matrix H = HessianOp(e) * Matrix::Identity(P, P);
    const Matrix HW1 = H.topLeftCorner(nW1, nW1);
    const Matrix fd = test::central_jacobian([&](const Vector& th) { return gradient_at(p, th); }, p.theta);
    EXPECT_LT(relative_error(HW1, Matrix(fd.topLeftCorner(nW1, nW1))), 1e-6);
    EXPECT_GT(HW1.norm(), 1e-2 * H.norm()) << "the W1-W1 block carries a real share of the curvature";
}

// Gauss-Newton: with targets equal to the outputs the residual terms vanish, so G = H exactly
// (closed form); G is positive semi-definite in general.
TEST(GaussNewton, EqualsHessianAtZeroResidualAndIsPositiveSemiDefinite) {
    for (Activation f : test::all_activations())
        for (Output o : test::all_outputs()) {
            auto p = test::random_problem(Architecture::parse("6-5-4-3", f, o), 12, 5);
            {
                InputMatrix X(p.X, XPath::Dense);
                p.T = Evaluation(p.arch, X, p.T, p.theta).output();  // zero residual
            }
            InputMatrix X(p.X, XPath::Dense);
            Evaluation e(p.arch, X, p.T, p.theta);
            const Index P = p.theta.size();
            const Matrix G = GaussNewtonOp(e) * Matrix::Identity(P, P);
            const Matrix H = HessianOp(e) * Matrix::Identity(P, P);
            EXPECT_LT(relative_error(G, H), 1e-12) << to_string(f) << " " << to_string(o);
        }
    const auto p = test::random_problem(Architecture::parse("6-5-4-3", Activation::Tanh, Output::SoftmaxCE), 12, 5);
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    const Index P = p.theta.size();
    const Matrix G = GaussNewtonOp(e) * Matrix::Identity(P, P);
    Eigen::SelfAdjointEigenSolver<Matrix> eig(G);
    EXPECT_GT(eig.eigenvalues().minCoeff(), -1e-12 * eig.eigenvalues().maxCoeff());
}

// One block pass gives the same columns as M single products (to rounding).
TEST(HessianVector, BlockEqualsSingleProducts) {
    const auto p = test::random_problem(Architecture::parse("9-6-5-4", Activation::Softplus, Output::SoftmaxCE), 40, 6);
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    const Index P = p.theta.size(), M = 5;
    Matrix V(P, M);
    for (Index m = 0; m < M; ++m) V.col(m) = random_vector(P, 100 + m);
    HessianOp H(e);
    const Matrix HV = H * V;
    for (Index m = 0; m < M; ++m) {
        Vector y(P);
        H.perform_op(V.col(m).data(), y.data());
        EXPECT_LT(relative_error(Vector(HV.col(m)), y), 1e-14);
    }
    EXPECT_EQ(H.products(), 2 * M);
}

// A block wider than one chunk (at most 16 vectors per chunk, hvp.cpp) is split into equal
// chunks; every path still gives M single products to rounding (1e-14; float32 paths 1e-6,
// since the block and the single product round the float32 sums in different orders).
TEST(HessianVector, BlockOfSeveralChunksEqualsSingleProducts) {
    auto p = test::random_problem(Architecture::parse("12-7-5-3", Activation::Tanh, Output::SoftmaxCE), 50, 4);
    for (Index i = 0; i < p.X.size(); ++i)
        if (i % 4 != 0) p.X.data()[i] = 0.0;
    const Index P = p.theta.size(), M = 20;
    Matrix V(P, M);
    for (Index m = 0; m < M; ++m) V.col(m) = random_vector(P, 300 + m);
    for (XPath path : {XPath::Dense, XPath::Sparse})
        for (Precision prec : {Precision::F64, Precision::F32}) {
            InputMatrix X(p.X, path, prec);
            Evaluation e(p.arch, X, p.T, p.theta);
            Matrix HV(P, M), GV(P, M);
            e.hessian_times(V, HV);
            e.gauss_newton_times(V, GV);
            const double tol = prec == Precision::F32 ? 1e-6 : 1e-14;
            for (Index m = 0; m < M; ++m) {
                Matrix h(P, 1), g(P, 1);
                e.hessian_times(V.col(m), h);
                e.gauss_newton_times(V.col(m), g);
                EXPECT_LT(relative_error(Vector(HV.col(m)), Vector(h.col(0))), tol) << m;
                EXPECT_LT(relative_error(Vector(GV.col(m)), Vector(g.col(0))), tol) << m;
            }
        }
}

// J V = V - alpha H V, checked against the dense I - alpha H.
TEST(JacobianVector, EqualsIdentityMinusAlphaHessian) {
    const auto p = test::random_problem(Architecture::parse("5-4-3"), 10, 2);
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    const Index P = p.theta.size();
    HessianOp H(e);
    const Matrix Hd = H * Matrix::Identity(P, P);
    const JacobianOp J(H, 0.1);
    const Matrix Jd = J * Matrix::Identity(P, P);
    EXPECT_LT(relative_error(Jd, Matrix(Matrix::Identity(P, P) - 0.1 * Hd)), 1e-15);
    Vector y(P);
    const Vector v = random_vector(P, 3);
    J.perform_op(v.data(), y.data());
    EXPECT_LT(relative_error(y, Vector(v - 0.1 * Hd * v)), 1e-14);
}

// The sparse path (CSR products) and the dense path are the same arithmetic in another order.
TEST(InputPaths, SparseAndFloat32AgreeWithDense) {
    auto p = test::random_problem(Architecture::parse("30-8-4", Activation::Sigmoid, Output::SoftmaxCE), 200, 12);
    for (Index i = 0; i < p.X.size(); ++i)
        if (i % 5 != 0) p.X.data()[i] = 0.0;  // 20% dense, like MNIST
    const Index P = p.theta.size();
    Matrix V(P, 3);
    for (Index m = 0; m < 3; ++m) V.col(m) = random_vector(P, 7 + m);
    InputMatrix Xd(p.X, XPath::Dense), Xs(p.X, XPath::Sparse), Xa(p.X, XPath::Auto),
        Xf(p.X, XPath::Dense, Precision::F32), Xsf(p.X, XPath::Sparse, Precision::F32);
    EXPECT_FALSE(Xd.sparse());
    EXPECT_TRUE(Xs.sparse());
    EXPECT_TRUE(Xa.sparse()) << "auto picks sparse at density " << Xa.density();
    EXPECT_NEAR(Xa.density(), 0.2, 1e-12);
    Evaluation ed(p.arch, Xd, p.T, p.theta);
    const Matrix HVd = HessianOp(ed) * V;
    for (const InputMatrix* X : {&Xs, &Xf, &Xsf}) {
        Evaluation e(p.arch, *X, p.T, p.theta);
        // float64 paths: rounding only (1e-13); float32 products with X: ~1e-7 relative.
        const double tol = X->precision() == Precision::F32 ? 1e-5 : 1e-13;
        EXPECT_LT(relative_error(e.loss(), ed.loss()), tol);
        EXPECT_LT(relative_error(e.gradient(), ed.gradient()), tol);
        EXPECT_LT(relative_error(Matrix(HessianOp(e) * V), HVd), tol);
    }
}

// The float32 path on real data: the first 3000 MNIST images, 784-50-10, a block of 4 random
// vectors, dense and sparse. Only the two products
// with X run in float32 (d = 784 terms per sum in X V_W1, k = 3000 in X^T R{delta_1}), so the
// error is that of float32 sums, about sqrt(n) * 6e-8 relative per entry in the worst case
// and far less on average; measured 2026-11-24: H V 7.0e-8 to 8.1e-8 relative (dense: Eigen's
// blocked GEMM sums in short runs), 1.3e-7 to 1.6e-7 (sparse: the scatter sums a whole row
// chunk in one float accumulator; 5e-7 to 6e-7 at k = 60000); docs/MATH.md. The bound 1e-5 is
// the accuracy promise for --precision f32, 16x above the worst error measured at
// k = 60000. k = 3000 (k P > 5e7, k >= 2048) so that, with 2 threads, the multi-threaded
// row-chunked X^T C and its fixed-order reduction are the ones tested; a second identical
// call must then give bit-identical results (resume and replay rely on it).
// Each float64 path must also match the dense float64 path to rounding (1e-13).
TEST(InputPaths, Float32BlockOnMnistWithinPromisedAccuracy) {
    TDYN_REQUIRE_MNIST();
    const Architecture arch = Architecture::parse("784-50-10");
    const Dataset ds = load_dataset("mnist", data_dir(""), 3000);
    const Vector theta = init_params(arch, 1);
    const Index P = theta.size(), M = 4;
    Matrix V(P, M);
    for (Index m = 0; m < M; ++m) V.col(m) = random_vector(P, 40 + m);
    InputMatrix Xd(ds.X, XPath::Dense);
    Evaluation ed(arch, Xd, ds.T, theta);
    Matrix HVd(P, M);
    ed.hessian_times(V, HVd);
    for (XPath path : {XPath::Dense, XPath::Sparse})
        for (Precision prec : {Precision::F64, Precision::F32}) {
            InputMatrix X(ds.X, path, prec);
            Evaluation e(arch, X, ds.T, theta);
            Matrix HV(P, M), again(P, M);
            e.hessian_times(V, HV);
            e.hessian_times(V, again);
            EXPECT_TRUE(HV == again) << "a repeated block product is not bit-identical";
            const double tol = prec == Precision::F32 ? 1e-5 : 1e-13;
            for (Index m = 0; m < M; ++m) {
                const double err = relative_error(Vector(HV.col(m)), Vector(HVd.col(m)));
                EXPECT_LT(err, tol) << (path == XPath::Sparse ? "sparse " : "dense ")
                                    << (prec == Precision::F32 ? "f32" : "f64") << " column " << m;
                char buf[32];
                std::snprintf(buf, sizeof buf, "%.2e", err);
                RecordProperty((std::string(path == XPath::Sparse ? "sparse_" : "dense_") +
                                (prec == Precision::F32 ? "f32" : "f64") + "_col" + std::to_string(m))
                                   .c_str(),
                               buf);
            }
            EXPECT_LT(relative_error(e.gradient(), ed.gradient()), tol);
        }
}

// PyTorch double backward at the reference theta and vector: H v to 1e-10 relative.
TEST(Reference, HessianVectorMatchesPyTorch) {
    TDYN_REQUIRE_REFERENCE();
    TDYN_REQUIRE_MNIST();
    h5::File ref = h5::File::open_read(test::reference_file());
    const Architecture arch = Architecture::parse("784-50-10");
    const Dataset ds = load_dataset("mnist", data_dir(""), 1000);
    for (XPath path : {XPath::Dense, XPath::Sparse}) {
        InputMatrix X(ds.X, path);
        Evaluation e(arch, X, ds.T, ref.read_vector("/params/theta"));
        const Vector v = ref.read_vector("/vector");
        Matrix Hv(v.size(), 1);
        e.hessian_times(v, Hv);
        EXPECT_LT(relative_error(Vector(Hv.col(0)), ref.read_vector("/hvp")), 1e-10);
    }
}

}  // namespace
}  // namespace tdyn

// Block solvers may ask for H times a block of no vectors: an empty product, not a crash
// (the chunked block code divided by M).
TEST(HessianVector, EmptyBlockGivesAnEmptyProduct) {
    const auto p = tdyn::test::random_problem(tdyn::Architecture::parse("5-4-3"), 20, 1);
    const tdyn::InputMatrix X(p.X);
    tdyn::Evaluation e(p.arch, X, p.T, p.theta);
    const tdyn::Matrix V(e.num_params(), 0);
    tdyn::Matrix HV(e.num_params(), 0);
    e.hessian_times(V, HV);
    EXPECT_EQ(tdyn::HessianOp(e) * V, tdyn::Matrix(e.num_params(), 0));
}
