// Hessian-vector products against the truth: central differences of the gradient, the dense
// Hessian built column by column from them, closed forms (linear regression, zero-residual
// Gauss-Newton), and PyTorch's double backward in the reference file.
#include "tdyn/hvp.hpp"
#include "tdyn/h5.hpp"
#include "test_support.hpp"

#include <Eigen/Eigenvalues>
#include <cstdio>
#include <gtest/gtest.h>
#include <omp.h>

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
// ~1e-10 relative, so callers bound it by 1e-6. The relative error of one product, v seeded.
double central_difference_error(const test::Problem& p, std::uint64_t seed) {
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    const Vector v = random_vector(p.theta.size(), seed);
    Matrix Hv(v.size(), 1);
    e.hessian_times(v, Hv);
    const double h = 1e-5;
    const Vector fd = (gradient_at(p, p.theta + h * v) - gradient_at(p, p.theta - h * v)) / (2 * h);
    return relative_error(Vector(Hv.col(0)), fd);
}

// H v against central differences of the gradient (h = 1e-5, 1e-6 relative: see
// central_difference_error). Every activation/output pair, 1 to 3 hidden layers.
TEST(HessianVector, MatchesCentralDifferencesOfTheGradient) {
    for (const char* a : {"5-4-3", "6-5-4-3", "4-3-3-3-2"})
        for (Activation f : test::all_activations())
            for (Output o : test::all_outputs()) {
                const auto p = test::random_problem(Architecture::parse(a, f, o), 9, 21);
                EXPECT_LT(central_difference_error(p, 4), 1e-6) << a << " " << to_string(f) << " " << to_string(o);
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

// An Evaluation set to products only skips the gradient's product with X but runs the same
// backprop for delta_l: its H V has the bits of the ordinary Evaluation's, sparse and dense,
// with weight decay, every output; asked for the gradient afterwards, it computes it in full.
TEST(HessianVector, ProductsOnlyGivesTheSameBitsWithoutTheGradient) {
    for (Output o : test::all_outputs())
        for (XPath path : {XPath::Dense, XPath::Sparse}) {
            const auto p = test::random_problem(Architecture::parse("9-6-5-4", Activation::Tanh, o), 40, 8);
            InputMatrix X(p.X, path);
            const EvaluationOptions opt{0.01, nullptr};
            Evaluation full(p.arch, X, p.T, p.theta, opt), only(p.arch, X, p.T, opt);
            only.set_products_only(true);
            only.reset(p.theta);
            Matrix V(p.theta.size(), 3), HV1(p.theta.size(), 3), HV2(p.theta.size(), 3);
            for (Index m = 0; m < 3; ++m) V.col(m) = random_vector(p.theta.size(), 200 + m);
            full.hessian_times(V, HV1);
            only.hessian_times(V, HV2);
            EXPECT_EQ(HV1, HV2);
            EXPECT_EQ(only.gradient(), full.gradient());
        }
}

// An Evaluation moved to theta with a gradient already known there (reset(theta, g), as FAR's
// adjoint revisits the states of its forward phase) runs backprop for delta_l without the
// gradient's products: H V, G V, the third-order products and dL/dX have the bits of a fresh
// Evaluation's; gradient() returns g itself; a g of the wrong size is refused.
TEST(HessianVector, ResetWithAKnownGradientGivesTheSameBits) {
    for (Output o : test::all_outputs())
        for (XPath path : {XPath::Dense, XPath::Sparse}) {
            const auto p = test::random_problem(Architecture::parse("9-6-5-4", Activation::Tanh, o), 40, 8);
            InputMatrix X(p.X, path);
            const EvaluationOptions opt{0.01, nullptr};
            Evaluation full(p.arch, X, p.T, p.theta, opt), known(p.arch, X, p.T, opt);
            const Vector g = full.gradient();
            known.reset(p.theta, g);
            const Index P = p.theta.size();
            Matrix V(P, 3), E(P, 3), A(P, 3), B(P, 3);
            for (Index m = 0; m < 3; ++m) V.col(m) = random_vector(P, 200 + m), E.col(m) = random_vector(P, 300 + m);
            full.hessian_times(V, A);
            known.hessian_times(V, B);
            EXPECT_EQ(A, B);
            full.gauss_newton_times(V, A);
            known.gauss_newton_times(V, B);
            EXPECT_EQ(A, B);
            full.third_order_times(E, V, A);
            known.third_order_times(E, V, B);
            EXPECT_EQ(A, B);
            Evaluation known2(p.arch, X, p.T, opt);
            known2.reset(p.theta, g);
            EXPECT_EQ(known2.input_gradient(), full.input_gradient());  // delta_1 computed on demand
            EXPECT_EQ(known.gradient(), g);
            EXPECT_EQ(known.loss(), full.loss());
            EXPECT_THROW(known.reset(p.theta, Vector::Zero(P - 1)), Error);
        }
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

// Gauss-Newton at NON-zero residual against its definition, every factor built without the
// R-operator. G splits the objective where the loss is convex and keeps only that loss's
// curvature: softmax-ce at the logits, G = J_A^T (d2L/dA_L^2) J_A (cross-entropy of softmax has
// no residual term); the squared errors at the output, G = J_Y^T (d2L/dY^2) J_Y, which is
// J_A^T (d2L/dA_L^2 without its (y - t) s'' term) J_A for sigmoid-mse. J = dA_L/dtheta or
// dY/dtheta by central differences of the forward pass (h = 1e-5, ~1e-10 relative error; A_L is
// the output of the same network with an identity output); d2L/dA_L^2 or d2L/dY^2 is
// block-diagonal, (1/k) d2l_i per sample, by second central differences of the per-sample loss
// value (h = 1e-4: O(h^2) ~1e-8 truncation, eps/h^2 ~1e-8 rounding). 1e-6 relative leaves two
// orders of margin. The residual is non-zero here: G differs from H by more than 1e-3.
TEST(GaussNewton, MatchesFiniteDifferenceDefinitionAtNonZeroResidual) {
    for (Output o : test::all_outputs()) {
        const auto p = test::random_problem(Architecture::parse("5-4-3", Activation::Tanh, o), 6, 31);
        const Index k = p.X.rows(), c = p.arch.outputs(), P = p.theta.size();
        const bool at_logits = o == Output::SoftmaxCE;
        Architecture split = p.arch;  // its output is A_L (softmax-ce) or Y (squared errors)
        if (at_logits) split.output = Output::IdentityMSE;
        InputMatrix X(p.X, XPath::Dense);
        const Matrix JA = test::central_jacobian(
            [&](const Vector& th) {
                const RowMatrix AL = Evaluation(split, X, p.T, th).output();
                return Vector(Eigen::Map<const Vector>(AL.data(), AL.size()));  // (i, j) at i c + j
            },
            p.theta);
        const RowMatrix AL = Evaluation(split, X, p.T, p.theta).output();
        // the sample loss as a function of the split point: cross-entropy of softmax(a), or 1/2 |y - t|^2
        const Output tail = at_logits ? Output::SoftmaxCE : Output::IdentityMSE;
        auto sample_loss = [&](const Eigen::RowVectorXd& a, Index i) {
            const RowMatrix ai = a, ti = p.T.row(i);
            // a 1-layer network with W = I, b = 0 maps its input a to itself
            const Architecture out_only =
                Architecture::parse(std::to_string(c) + "-" + std::to_string(c), Activation::Identity, tail);
            Vector th = Vector::Zero(out_only.num_params());
            for (Index j = 0; j < c; ++j) th[j * c + j] = 1.0;
            InputMatrix Xi(ai, XPath::Dense);
            return Evaluation(out_only, Xi, ti, th).loss();
        };
        Matrix Hout = Matrix::Zero(k * c, k * c);
        const double h = 1e-4;
        for (Index i = 0; i < k; ++i)
            for (Index a = 0; a < c; ++a)
                for (Index b = 0; b < c; ++b) {
                    Eigen::RowVectorXd pp = AL.row(i), pm = pp, mp = pp, mm = pp;
                    pp[a] += h;
                    pp[b] += h;
                    pm[a] += h;
                    pm[b] -= h;
                    mp[a] -= h;
                    mp[b] += h;
                    mm[a] -= h;
                    mm[b] -= h;
                    const double d2 =
                        (sample_loss(pp, i) - sample_loss(pm, i) - sample_loss(mp, i) + sample_loss(mm, i)) /
                        (4 * h * h);
                    Hout(i * c + a, i * c + b) = d2 / double(k);
                }
        const Matrix G_fd = JA.transpose() * Hout * JA;
        Evaluation e(p.arch, X, p.T, p.theta);
        const Matrix G = GaussNewtonOp(e) * Matrix::Identity(P, P);
        const Matrix H = HessianOp(e) * Matrix::Identity(P, P);
        EXPECT_LT(relative_error(G, G_fd), 1e-6) << to_string(o);
        EXPECT_GT(relative_error(G, H), 1e-3) << to_string(o) << ": the residual should matter here";
    }
}

// Soft targets for softmax-ce (rows not one-hot, summing to 1 and not): H v against central
// differences of the gradient (h = 1e-5, 1e-6 relative as above).
TEST(HessianVector, SoftTargetsMatchCentralDifferences) {
    for (double spread : {0.0, 1.0}) {
        auto p = test::random_problem(Architecture::parse("6-5-4-3", Activation::Softplus, Output::SoftmaxCE), 9, 8);
        std::mt19937_64 gen(12);
        std::uniform_real_distribution<double> u(0.05, 1.0);
        for (Index i = 0; i < p.T.rows(); ++i) {
            for (Index j = 0; j < p.T.cols(); ++j) p.T(i, j) = u(gen);
            p.T.row(i) /= p.T.row(i).sum();
            p.T.row(i) *= 1.0 + spread * (2.0 * u(gen) - 0.7);  // row sums 0.3 .. 2.3 in the second pass
        }
        EXPECT_LT(central_difference_error(p, 5), 1e-6) << "row sums spread " << spread;
    }
}

// Weight decay: H_E v against central differences of grad E (1e-6, as above); G_E V = G_L V +
// lambda V (the same bits plus lambda V: 1e-15); lambda = 0 gives the old bits exactly.
TEST(WeightDecay, HessianAndGaussNewtonOfTheObjective) {
    const double lambda = 0.05;
    for (Output o : test::all_outputs()) {
        const auto p = test::random_problem(Architecture::parse("6-5-4-3", Activation::Tanh, o), 9, 14);
        const Index P = p.theta.size();
        InputMatrix X(p.X, XPath::Dense);
        Evaluation e(p.arch, X, p.T, p.theta, EvaluationOptions{lambda});
        Evaluation plain(p.arch, X, p.T, p.theta), zero(p.arch, X, p.T, p.theta, EvaluationOptions{0.0});
        Matrix V(P, 2);
        V.col(0) = random_vector(P, 1);
        V.col(1) = random_vector(P, 2);
        Matrix HV(P, 2), GV(P, 2), HV0(P, 2), GV0(P, 2), HVz(P, 2), GVz(P, 2);
        e.hessian_times(V, HV);
        e.gauss_newton_times(V, GV);
        plain.hessian_times(V, HV0);
        plain.gauss_newton_times(V, GV0);
        zero.hessian_times(V, HVz);
        zero.gauss_newton_times(V, GVz);
        const double h = 1e-5;
        auto grad_E = [&](const Vector& th) {
            Evaluation ei(p.arch, X, p.T, th, EvaluationOptions{lambda});
            return Vector(ei.gradient());
        };
        for (Index m = 0; m < 2; ++m) {
            const Vector fd = (grad_E(p.theta + h * V.col(m)) - grad_E(p.theta - h * V.col(m))) / (2 * h);
            EXPECT_LT(relative_error(Vector(HV.col(m)), fd), 1e-6) << to_string(o);
        }
        EXPECT_LT(relative_error(GV, Matrix(GV0 + lambda * V)), 1e-15) << to_string(o);
        EXPECT_TRUE(HVz == HV0 && GVz == GV0) << "lambda = 0 must give the old bits";
    }
}

// The softmax null space: adding s to every entry of row j of W_L (j = 1..h, h = width of the
// last hidden layer) adds s z_j to every logit of a sample, and adding s to every entry of b_L
// adds s: softmax is unchanged, so L is constant along these h+1 directions and H v = 0 exactly
// there (J v = v for J = I - alpha H). Truth: the dense H, built column by column from block
// products and symmetric to 1e-13; H v = 0 to 1e-12 |H| (rounding of sums of ~P terms of size
// |H|); its eigendecomposition has exactly h+1 eigenvalues below 1e-10 max|lambda| for this
// generic network (the next one is far above), and with weight decay lambda they become lambda.
TEST(HessianVector, SoftmaxNullSpaceHasDimensionLastHiddenWidthPlusOne) {
    const auto p = test::random_problem(Architecture::parse("4-6-5-3", Activation::Tanh, Output::SoftmaxCE), 40, 19);
    const Index P = p.theta.size(), L = p.arch.layers(), h = p.arch.widths[L - 1], c = p.arch.outputs();
    Matrix N = Matrix::Zero(P, h + 1);
    for (Index j = 0; j < h; ++j) N.col(j).segment(p.arch.weight_offset(L) + j * c, c).setOnes();
    N.col(h).segment(p.arch.bias_offset(L), c).setOnes();
    InputMatrix X(p.X, XPath::Dense);
    Evaluation e(p.arch, X, p.T, p.theta);
    HessianOp Hop(e);
    const Matrix H = Hop * Matrix::Identity(P, P);
    EXPECT_LT(relative_error(H, Matrix(H.transpose())), 1e-13);
    const Matrix HN = Hop * N;
    EXPECT_LT(HN.norm(), 1e-12 * H.norm());
    const Matrix JN = JacobianOp(Hop, 0.1) * N;
    EXPECT_LT((JN - N).norm(), 1e-12 * N.norm());
    Eigen::SelfAdjointEigenSolver<Matrix> eig(Matrix(0.5 * (H + H.transpose())));
    Vector mag = eig.eigenvalues().cwiseAbs();
    std::sort(mag.data(), mag.data() + P);
    const double top = mag[P - 1];
    EXPECT_LT(mag[h], 1e-10 * top) << "at least h+1 zero eigenvalues";
    EXPECT_GT(mag[h + 1], 1e-6 * top) << "exactly h+1 for a generic network";
    const double lambda = 0.02;
    Evaluation ed(p.arch, X, p.T, p.theta, EvaluationOptions{lambda});
    const Matrix HdN = HessianOp(ed) * N;
    EXPECT_LT((HdN - lambda * N).norm(), 1e-12 * H.norm());
}

// Bits do not depend on the thread count: every sum over samples uses row chunks whose number
// depends on k alone, and every GEMM with k rows runs single-threaded per chunk. k = 12000 and
// k P = 5.3e7 take the multi-chunk, multi-threaded path (k P >= 5e7, evaluation.cpp). Loss,
// gradient, an H V and a G V block, dense and sparse, float64 and float32: identical bits with
// 1 and 2 threads.
TEST(ThreadCounts, OneAndTwoThreadsGiveIdenticalBits) {
    auto p = test::random_problem(Architecture::parse("100-40-10", Activation::Sigmoid, Output::SoftmaxCE), 12000, 23);
    for (Index i = 0; i < p.X.size(); ++i)
        if (i % 5 != 0) p.X.data()[i] = 0.0;  // 20% dense, so the sparse path is a real one
    const Index P = p.theta.size(), M = 4;
    Matrix V(P, M);
    for (Index m = 0; m < M; ++m) V.col(m) = random_vector(P, 60 + m);
    const int saved = omp_get_max_threads();
    for (XPath path : {XPath::Dense, XPath::Sparse})
        for (Precision prec : {Precision::F64, Precision::F32}) {
            InputMatrix X(p.X, path, prec);
            struct Bits {
                double loss;
                Vector grad;
                Matrix HV, GV;
            } b[2];
            for (int threads : {1, 2}) {
                omp_set_num_threads(threads);
                Evaluation e(p.arch, X, p.T, p.theta);
                Bits& r = b[threads - 1];
                r.loss = e.loss();
                r.grad = e.gradient();
                r.HV.resize(P, M);
                r.GV.resize(P, M);
                e.hessian_times(V, r.HV);
                e.gauss_newton_times(V, r.GV);
            }
            omp_set_num_threads(saved);
            const std::string what =
                std::string(path == XPath::Sparse ? "sparse " : "dense ") + (prec == Precision::F32 ? "f32" : "f64");
            EXPECT_EQ(b[0].loss, b[1].loss) << what;
            EXPECT_TRUE(b[0].grad == b[1].grad)
                << what << ": gradient differs by " << relative_error(b[0].grad, b[1].grad);
            EXPECT_TRUE(b[0].HV == b[1].HV) << what << ": H V differs by " << relative_error(b[0].HV, b[1].HV);
            EXPECT_TRUE(b[0].GV == b[1].GV) << what << ": G V differs by " << relative_error(b[0].GV, b[1].GV);
        }
}

// The third-order R-operator, T(e, v) = grad_theta (v^T H e), against its definition
// d/dr [H(theta + r e) v] at r = 0 by central differences of exact HVPs, Richardson-extrapolated
// over h = 1e-3 and 5e-4: truncation O(h^4) ~ 1e-12 and rounding eps |H v| / h ~ 1e-12 relative,
// so 1e-8 leaves room for the largest third derivatives (tanh near saturation) and fails on any
// missing term (each is O(1) of the total). Every activation/output pair, 1 to 3 hidden layers,
// with weight decay (whose third derivative is 0).
TEST(ThirdOrder, MatchesCentralDifferencesOfHessianVectorProducts) {
    double worst = 0;
    for (const char* a : {"5-4-3", "6-5-4-3", "4-3-3-3-2"})
        for (Activation f : test::all_activations())
            for (Output o : test::all_outputs()) {
                const auto p = test::random_problem(Architecture::parse(a, f, o), 9, 21);
                const Index P = p.theta.size();
                InputMatrix X(p.X, XPath::Dense);
                EvaluationOptions opt;
                opt.weight_decay = 0.03;
                const Vector e = random_vector(P, 4), v = random_vector(P, 5);
                Evaluation ev(p.arch, X, p.T, p.theta, opt);
                Matrix T(P, 1);
                ev.third_order_times(e, v, T);
                auto Hv = [&](const Vector& th) {
                    Evaluation s(p.arch, X, p.T, th, opt);
                    Matrix out(P, 1);
                    s.hessian_times(v, out);
                    return Vector(out.col(0));
                };
                auto cd = [&](double h) { return Vector((Hv(p.theta + h * e) - Hv(p.theta - h * e)) / (2 * h)); };
                const Vector truth = (4 * cd(5e-4) - cd(1e-3)) / 3;
                const double err = relative_error(Vector(T.col(0)), truth);
                worst = std::max(worst, err);
                EXPECT_LT(err, 1e-8) << a << " " << to_string(f) << " " << to_string(o);
            }
    std::printf("third-order R-operator against differences of H v: worst relative error %.2e\n", worst);
}

// A third derivative is symmetric in all three arguments: w . T(e, v) = e . T(w, v) = v . T(e, w),
// three different passes (to rounding, 1e-12 relative to the largest). A block of pairs (one wide
// product with X for the chunk) gives the columns of single pairs to rounding (1e-14).
TEST(ThirdOrder, IsSymmetricInItsThreeArgumentsAndBlocksEqualSinglePairs) {
    for (Activation f : test::all_activations())
        for (Output o : test::all_outputs()) {
            const auto p = test::random_problem(Architecture::parse("6-5-4-3", f, o), 11, 3);
            const Index P = p.theta.size();
            InputMatrix X(p.X, XPath::Dense);
            Evaluation ev(p.arch, X, p.T, p.theta);
            Matrix A(P, 3), B(P, 3), T(P, 3);
            const Vector e = random_vector(P, 1), v = random_vector(P, 2), u = random_vector(P, 3);
            A << e, u, e;
            B << v, v, u;
            ev.third_order_times(A, B, T);  // T(e, v), T(u, v), T(e, u)
            const double a = u.dot(T.col(0)), b = e.dot(T.col(1)), c = v.dot(T.col(2));
            const double scale = std::max({std::abs(a), std::abs(b), std::abs(c), 1e-300});
            EXPECT_LT(std::abs(a - b) / scale, 1e-12) << to_string(f) << " " << to_string(o);
            EXPECT_LT(std::abs(a - c) / scale, 1e-12) << to_string(f) << " " << to_string(o);
            for (Index j = 0; j < 3; ++j) {
                Matrix one(P, 1);
                ev.third_order_times(A.col(j), B.col(j), one);
                EXPECT_LT(relative_error(Vector(one.col(0)), Vector(T.col(j))), 1e-14)
                    << to_string(f) << " " << to_string(o) << " pair " << j;
            }
        }
}

// The pass with HV: H V from the R_v lines equals the block HVP (hessian_times, itself checked
// against dense Hessians and differences of gradients above) to rounding, 1e-13 relative (the two
// sum in different orders); the third-order columns keep the bits of the pass without HV on the
// sparse path (X^T products column by column) and agree to 1e-15 on the dense one (the X^T GEMM
// is wider, so it may block differently). Every
// activation/output pair, 1 to 3 hidden layers, weight decay, both X paths, a block of 3 pairs.
TEST(ThirdOrder, HessianProductsFromTheSamePassEqualTheBlockProduct) {
    double worst = 0;
    for (const char* a : {"5-4-3", "6-5-4-3", "4-3-3-3-2"})
        for (Activation f : test::all_activations())
            for (Output o : test::all_outputs())
                for (XPath path : {XPath::Dense, XPath::Sparse}) {
                    const auto p = test::random_problem(Architecture::parse(a, f, o), 13, 31);
                    const Index P = p.theta.size();
                    InputMatrix X(p.X, path);
                    EvaluationOptions opt;
                    opt.weight_decay = 0.03;
                    Matrix E(P, 3), V(P, 3);
                    for (Index m = 0; m < 3; ++m)
                        E.col(m) = random_vector(P, 40 + m), V.col(m) = random_vector(P, 50 + m);
                    Evaluation ev(p.arch, X, p.T, p.theta, opt);
                    Matrix T(P, 3), T2(P, 3), HV(P, 3), truth(P, 3);
                    ev.third_order_times(E, V, T);
                    ev.third_order_times(E, V, T2, HV);
                    ev.hessian_times(V, truth);
                    const std::string what = std::string(a) + " " + to_string(f) + " " + to_string(o) +
                                             (path == XPath::Sparse ? " sparse" : " dense");
                    if (path == XPath::Sparse) EXPECT_TRUE(T == T2) << what << ": differ by " << relative_error(T, T2);
                    else EXPECT_LT(relative_error(T, T2), 1e-15) << what;  // a wider GEMM, other blocking
                    const double err = relative_error(HV, truth);
                    worst = std::max(worst, err);
                    EXPECT_LT(err, 1e-13) << what;
                }
    std::printf("H V from the third-order pass against hessian_times: worst relative error %.2e\n", worst);
}

// Thread counts: 12000 samples (several row chunks), both X paths and precisions, 1 and 2 threads
// give the same bits (the third-order columns and the H V from the same pass).
TEST(ThirdOrder, OneAndTwoThreadsGiveIdenticalBits) {
    auto p = test::random_problem(Architecture::parse("100-40-10", Activation::Sigmoid, Output::SoftmaxCE), 12000, 23);
    for (Index i = 0; i < p.X.size(); ++i)
        if (i % 5 != 0) p.X.data()[i] = 0.0;
    const Index P = p.theta.size();
    Matrix E(P, 2), V(P, 2);
    for (Index m = 0; m < 2; ++m) E.col(m) = random_vector(P, 70 + m), V.col(m) = random_vector(P, 80 + m);
    const int saved = omp_get_max_threads();
    for (XPath path : {XPath::Dense, XPath::Sparse})
        for (Precision prec : {Precision::F64, Precision::F32}) {
            InputMatrix X(p.X, path, prec);
            Matrix T[2], HV[2];
            for (int threads : {1, 2}) {
                omp_set_num_threads(threads);
                Evaluation ev(p.arch, X, p.T, p.theta);
                T[threads - 1].resize(P, 2);
                HV[threads - 1].resize(P, 2);
                ev.third_order_times(E, V, T[threads - 1], HV[threads - 1]);
            }
            omp_set_num_threads(saved);
            const std::string what =
                std::string(path == XPath::Sparse ? "sparse " : "dense ") + (prec == Precision::F32 ? "f32" : "f64");
            EXPECT_TRUE(T[0] == T[1]) << what << ": differs by " << relative_error(T[0], T[1]);
            EXPECT_TRUE(HV[0] == HV[1]) << what << ": H V differs by " << relative_error(HV[0], HV[1]);
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
