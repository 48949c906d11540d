// Lyapunov exponents against known answers: linear maps (log |eigenvalue|), the Henon and
// logistic maps (published values and the exact sum ln b), gradient descent on linear
// regression (log |1 - alpha mu_i| with mu_i the eigenvalues of the Gram matrix), the
// two-trajectory estimate on a small network, and bit-identical resume.
#include "tdyn/lyapunov.hpp"
#include "tdyn/run.hpp"

#include "test_support.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/SVD>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <map>
#include <random>
#include <thread>

using namespace tdyn;

namespace {

/// Runs `steps` steps of a fixed linear map A and returns the running exponents.
Vector linear_map_exponents(const Matrix& A, const TangentOptions& o, Index steps) {
    TangentPropagator p(A.rows(), o);
    for (Index t = 0; t < steps; ++t) p.step([&](const Matrix& V, Matrix& JV) { JV.noalias() = A * V; });
    return p.exponents();
}

/// Bit-for-bit equality where NaN (warm-up rows) equals NaN.
testing::AssertionResult same(const RowMatrix& a, const RowMatrix& b) {
    if (a.rows() != b.rows() || a.cols() != b.cols()) return testing::AssertionFailure() << "shapes differ";
    for (Index i = 0; i < a.size(); ++i)
        if (!(a.data()[i] == b.data()[i] || (std::isnan(a.data()[i]) && std::isnan(b.data()[i]))))
            return testing::AssertionFailure() << "element " << i << ": " << a.data()[i] << " vs " << b.data()[i];
    return testing::AssertionSuccess();
}

}  // namespace

// A = S D S^{-1}, non-normal, eigenvalues 3, -2, 1.1, 0.5, -0.25. QR iteration drives the
// diagonal of R to the eigenvalues' moduli at the geometric rate |lambda_{i+1} / lambda_i|
// (2/3 at worst here), so after 300 warm-up steps every log R_ii is log |lambda_i| to
// rounding; 1e-10 leaves room for the 100 rounded terms of the mean.
TEST(Lyapunov, LinearMapExponentsAreLogAbsEigenvalues) {
    std::mt19937_64 gen(3);
    std::uniform_real_distribution<double> u(-1, 1);
    Matrix S(5, 5);
    for (Index i = 0; i < S.size(); ++i) S.data()[i] = u(gen);
    S += 3 * Matrix::Identity(5, 5);  // well conditioned
    Vector d(5);
    d << 3, -2, 1.1, 0.5, -0.25;
    const Matrix A = S * d.asDiagonal() * S.inverse();
    for (Index q : {1, 5}) {
        TangentOptions o;
        o.vectors = 3;
        o.qr_every = q;
        o.warmup = 300;
        const Vector ex = linear_map_exponents(A, o, 400);
        EXPECT_NEAR(ex[0], std::log(3.0), 1e-10) << "q = " << q;
        EXPECT_NEAR(ex[1], std::log(2.0), 1e-10) << "q = " << q;
        EXPECT_NEAR(ex[2], std::log(1.1), 1e-10) << "q = " << q;
    }
    // The full set: sum of exponents = log |det A| (exactly, at every QR step).
    TangentOptions all;
    all.vectors = 5;
    const Vector ex = linear_map_exponents(A, all, 50);
    EXPECT_NEAR(ex.sum(), std::log(std::abs(A.determinant())), 1e-12);
}

// Tangent vectors that grow by g per step overflow double after a few steps; the QR every q
// steps keeps them orthonormal and the exponents finite and exact: log g, log 2, -log g
// (1e-12 relative: rounding of the sums). Householder QR squares the columns' norms, so the
// growth between two QRs must stay below ~1e154: g = 1e100 with q = 1, g = 1e50 with q = 3.
TEST(Lyapunov, QrPreventsTangentOverflow) {
    for (auto [q, g] : {std::pair<Index, double>{1, 1e100}, {3, 1e50}}) {
        Matrix A = Matrix::Zero(3, 3);
        A.diagonal() << g, 2, 1 / g;
        A(0, 1) = std::sqrt(g);  // not normal, so V really mixes
        TangentOptions o;
        o.vectors = 3;
        o.qr_every = q;
        o.warmup = 30;  // the random start's transient is not counted
        TangentPropagator p(3, o);
        for (Index t = 0; t < 300; ++t) p.step([&](const Matrix& V, Matrix& JV) { JV.noalias() = A * V; });
        const Vector ex = p.exponents();
        ASSERT_TRUE(ex.allFinite()) << "q = " << q;
        EXPECT_TRUE(p.basis().allFinite()) << "q = " << q;
        EXPECT_NEAR(ex[0], std::log(g), 1e-12 * std::log(g)) << "q = " << q;
        EXPECT_NEAR(ex[1], std::log(2.0), 1e-9) << "q = " << q;
        EXPECT_NEAR(ex[2], -std::log(g), 1e-12 * std::log(g)) << "q = " << q;
    }
}

// Henon map x' = 1 - a x^2 + y, y' = b x with a = 1.4, b = 0.3. Published exponents
// 0.41922 and -1.62319 (Sprott, Chaos and Time-Series Analysis, 2003); the finite-time
// estimate over 2e5 steps fluctuates by ~1e-3, so 3e-3. Their sum is ln b exactly
// (|det J| = b at every step), which holds to rounding: 1e-12.
TEST(Lyapunov, HenonMapExponents) {
    const double a = 1.4, b = 0.3;
    double x = 0.1, y = 0.1;
    for (int i = 0; i < 1000; ++i) std::tie(x, y) = std::pair{1 - a * x * x + y, b * x};  // onto the attractor
    TangentOptions o;
    o.vectors = 2;
    o.warmup = 100;
    TangentPropagator p(2, o);
    Matrix J(2, 2);
    for (int t = 0; t < 200000; ++t) {
        J << -2 * a * x, 1, b, 0;  // Jacobian at (x_t, y_t)
        p.step([&](const Matrix& V, Matrix& JV) { JV.noalias() = J * V; });
        std::tie(x, y) = std::pair{1 - a * x * x + y, b * x};
    }
    const Vector ex = p.exponents();
    EXPECT_NEAR(ex[0], 0.41922, 3e-3);
    EXPECT_NEAR(ex[1], -1.62319, 3e-3);
    EXPECT_NEAR(ex.sum(), std::log(b), 1e-12);
}

// Logistic map x' = 4 x (1 - x): exponent ln 2 (its invariant density is known in closed
// form). Finite-time fluctuation over 1e6 steps ~1e-3.
TEST(Lyapunov, LogisticMapExponentIsLn2) {
    double x = 0.3;
    TangentOptions o;
    o.vectors = 1;
    o.warmup = 100;
    TangentPropagator p(1, o);
    for (int t = 0; t < 1000000; ++t) {
        const double slope = 4 - 8 * x;
        p.step([&](const Matrix& V, Matrix& JV) { JV = slope * V; });
        x = 4 * x * (1 - x);
    }
    EXPECT_NEAR(p.exponents()[0], std::log(2.0), 3e-3);
}

// Gradient descent on linear regression (identity output, squared error, no hidden layer):
// H = (1/k) [X 1]^T [X 1] is constant, so J = I - alpha H and the M exponents are the M
// largest log |1 - alpha mu_i|. Checked with alpha below and above 2 / mu_max, through the
// real Evaluation (J V = V - alpha H V by the R-operator) along the real GD trajectory.
TEST(Lyapunov, GradientDescentOnLinearRegressionMatchesGramEigenvalues) {
    const Architecture arch = Architecture::parse("4-1", Activation::Identity, Output::IdentityMSE);
    const Index k = 60;
    std::mt19937_64 gen(11);
    std::uniform_real_distribution<double> u(0, 1);
    RowMatrix X(k, 4), T(k, 1);
    const double scale[4] = {3, 1.6, 0.8, 0.3};  // spreads the spectrum of the Gram matrix
    for (Index i = 0; i < k; ++i) {
        for (Index j = 0; j < 4; ++j) X(i, j) = scale[j] * u(gen);
        T(i, 0) = u(gen);
    }
    RowMatrix A1(k, 5);
    A1 << X, RowMatrix::Ones(k, 1);
    const Eigen::SelfAdjointEigenSolver<Matrix> eig(Matrix(A1.transpose() * A1) / double(k));
    const Vector mu = eig.eigenvalues();
    const InputMatrix input(X, XPath::Dense);
    for (double c : {1.0, 2.3}) {  // alpha = c / mu_max: stable, then unstable
        const double alpha = c / mu.maxCoeff();
        std::vector<double> expected;
        for (Index i = 0; i < mu.size(); ++i) expected.push_back(std::log(std::abs(1 - alpha * mu[i])));
        std::sort(expected.rbegin(), expected.rend());
        TangentOptions o;
        o.vectors = 3;
        o.warmup = 1500;  // the slowest ratio of consecutive |1 - alpha mu| here is ~0.96
        TangentPropagator p(5, o);
        Vector theta = init_params(arch, 5);
        Evaluation e(arch, input, T, theta);
        for (Index t = 0; t < 1600; ++t) {
            p.step([&](const Matrix& V, Matrix& JV) { apply_update_jacobian(e, alpha, V, JV); });
            theta -= alpha * e.gradient();
            e.reset(theta);
        }
        const Vector ex = p.exponents();
        for (Index i = 0; i < 3; ++i) EXPECT_NEAR(ex[i], expected[i], 1e-9) << "alpha = " << alpha << ", i = " << i;
        if (c > 2) EXPECT_GT(ex[0], 0) << "above 2/mu_max the top exponent is positive";
        else EXPECT_LT(ex[0], 0);
    }
}

namespace {

std::string small_run_args(const std::string& data) {
    return " --data " + data + " --arch 10-8-3 --activation tanh --lr 0.2 --save-theta-every 10 --quiet";
}

/// A 40-step run of small_run_args on 200 samples of 10 features written to `data` (seed 11), and
/// H(theta_20) of that run by central differences of the gradient, symmetrised: the dense truth of
/// the tests that start tangent vectors along eigenvectors of H.
Matrix small_run_hessian_at_20(const std::string& data, const std::string& run) {
    test::write_data_file(data, 200, 10, 3, 11);
    EXPECT_EQ(test::run_tdyn("train" + small_run_args(data) + " --steps 40 --out " + run).exit_code, 0);
    const Dataset ds = read_data_file(data, 0);
    const Architecture arch = Architecture::parse("10-8-3", Activation::Tanh, Output::SoftmaxCE);
    const InputMatrix X(ds.X, XPath::Dense);
    const Vector theta = RunReader(run).stored_theta(20);
    auto gradient_at = [&](const Vector& th) {
        Evaluation e(arch, X, ds.T, th);
        return Vector(e.gradient());
    };
    Matrix H = test::central_jacobian(gradient_at, theta);
    return 0.5 * (H + H.transpose());
}

}  // namespace

// The two-trajectory estimate on F(theta) = theta* + a R (theta - theta*), R rotating coordinate
// pairs by 0.3-0.8 rad: theta* is a fixed point, every perturbation shrinks by exactly a per step,
// so the exponent is log a = -1e-7. theta* lies in [1, 2) (rounding unit u = 2.2e-16) and
// EPS = 1e-9, so |d_i| ~ 1e-10 and the pull-back's change |1/a - 1| |d_i| ~ 1e-17 is below u / 2:
// rounding leaves theta' where it was. Measured against EPS (the estimator before it kept the
// norm it really left) the estimate is -5.5e-7, 5.5 times the exponent, with the norm carried
// 5e-7 below EPS at the end. Against that norm the only error is F's rounding, relative
// u / (sqrt(12) EPS) = 6e-8 per step and independent between steps, so the mean over 2000 steps
// is off by ~1.4e-9 (measured: 1.3e-10); 1e-8 is 7 of those.
TEST(Lyapunov, PerturbationExponentSurvivesAPullBackLostToRounding) {
    const Index P = 100, steps = 2000;
    const double a = 1 - 1e-7, eps = 1e-9;
    Vector star(P), u(P);
    std::mt19937_64 gen(7);
    std::uniform_real_distribution<double> unit(0, 1);
    for (Index i = 0; i < P; ++i) star[i] = 1 + unit(gen), u[i] = unit(gen) - 0.5;
    const auto F = [&](Vector& theta) {
        const Vector d = theta - star;
        for (Index i = 0; i < P; i += 2) {
            const double phi = 0.3 + 0.01 * double(i), c = std::cos(phi), s = std::sin(phi);
            theta[i] = star[i] + a * (c * d[i] - s * d[i + 1]);
            theta[i + 1] = star[i + 1] + a * (s * d[i] + c * d[i + 1]);
        }
    };
    Vector theta = star;
    PerturbedTrajectory p(theta, u, eps, 1, 0);
    for (Index t = 0; t < steps; ++t) {
        F(theta);  // stays theta* exactly: d = 0
        ASSERT_TRUE(p.step(F, theta));
    }
    ASSERT_EQ(theta, star);
    EXPECT_NEAR(p.exponent(), std::log(a), 1e-8);
    // The pull-back was lost: the norm carried is not eps (else this test would not test the fix).
    EXPECT_GT(std::abs(p.base() / eps - 1), 1e-7);
}

// A perturbation so small that theta + EPS u rounds to theta is refused, not divided by zero.
TEST(Lyapunov, PerturbationBelowTheRoundingUnitIsRefused) {
    const Vector theta = Vector::Constant(4, 1.0), u = Vector::Ones(4);
    EXPECT_THROW(PerturbedTrajectory(theta, u, 1e-30, 1, 0), Error);
}

// Where the map is smooth on the scale eps, the two-trajectory growth log(|d| / r) equals the
// tangent growth log |J v_1| up to O(eps) (second-order terms) and rounding O(1e-16 / eps):
// with eps = 1e-7 both are ~1e-8, so every step agrees to 1e-6 and the exponents to 1e-6.
TEST(Lyapunov, TangentAndPerturbationAgreeOnSmallNetwork) {
    const std::string data = test::temp_path("lyap-data.h5"), run = test::temp_path("lyap-run.h5");
    test::write_data_file(data, 200, 10, 3, 4);
    const auto r =
        test::run_tdyn("train" + small_run_args(data) + " --steps 150 --lyapunov 2 --perturbation 1e-7 --out " + run);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    h5::File f = h5::File::open_read(run);
    const RowMatrix growth = f.read_matrix("/lyapunov/log_growth");
    const Vector pgrowth = f.read_vector("/lyapunov/perturbation/log_growth");
    ASSERT_EQ(growth.rows(), 150);
    ASSERT_EQ(pgrowth.size(), 150);
    EXPECT_LT((growth.col(0) - pgrowth).cwiseAbs().maxCoeff(), 1e-6);
    const double tangent = f.read_row("/lyapunov/exponents", 149)[0];
    const double two = f.read_vector("/lyapunov/perturbation/exponent")[149];
    EXPECT_NEAR(tangent, two, 1e-6);
    EXPECT_NE(tangent, 0);
    // The stored final basis is orthonormal.
    const RowMatrix B = f.read_matrix("/lyapunov/basis");
    EXPECT_LT((Matrix(B.transpose() * B) - Matrix::Identity(2, 2)).norm(), 1e-12);
}

// Given start vectors on A = diag(2, 1, 1/2, 1/4, 1/8), whose coordinate axes are invariant and
// whose products by a power of two are exact: a v_1 started along e_4 stays e_4 and grows by
// exactly 1/4 per step (a random start finds log 2 instead); [e_4, e_4 + e_5] gives v_2 = e_5
// (QR keeps the given order), growth 1/8; with one given vector and M = 2, the random v_2
// (orthogonal to e_4) finds the top of the rest, log 2. 1e-13: n = 50-300 rounded additions of
// a log R_ii each exactly log(1/4) or log(1/8) up to one rounding (n u |log| < 7e-14).
TEST(Lyapunov, GivenStartVectorsAreFollowedInTheirOrder) {
    const Vector d = (Vector(5) << 2, 1, 0.5, 0.25, 0.125).finished();
    const Matrix A = d.asDiagonal();
    auto e = [](Index i) { return Matrix(Vector::Unit(5, i - 1)); };  // e_i as a 5 x 1 matrix
    TangentOptions o;
    o.vectors = 1;
    o.start = 3.0 * e(4);  // e_4, scaled: only the direction counts
    EXPECT_NEAR(linear_map_exponents(A, o, 50)[0], std::log(0.25), 1e-13);
    o.start = Matrix();  // the random start, counted after a 100-step warm-up (2^-100 of e_2 left)
    o.warmup = 100;
    EXPECT_NEAR(linear_map_exponents(A, o, 300)[0], std::log(2.0), 1e-12);
    o.warmup = 0;

    o.vectors = 2;
    o.start = Matrix::Zero(5, 2);
    o.start(3, 0) = o.start(3, 1) = o.start(4, 1) = 1;
    const Vector two = linear_map_exponents(A, o, 50);
    EXPECT_NEAR(two[0], std::log(0.25), 1e-13);
    EXPECT_NEAR(two[1], std::log(0.125), 1e-13);

    o.start = e(4);
    o.warmup = 100;
    const Vector filled = linear_map_exponents(A, o, 300);
    EXPECT_NEAR(filled[0], std::log(0.25), 1e-13);
    EXPECT_NEAR(filled[1], std::log(2.0), 1e-12);  // after the warm-up, 2^-100 of another direction is left

    // Bad start vectors: a zero vector, a dependent pair, more than M, the wrong length, NaN.
    o.warmup = 0;
    const std::vector<Matrix> bads = {Matrix::Zero(5, 1),
                                      (Matrix(5, 2) << e(1), 2.0 * e(1)).finished(),
                                      Matrix::Identity(5, 3),
                                      Matrix::Identity(4, 1),
                                      Matrix::Constant(5, 1, std::nan("")),
                                      (Matrix(5, 2) << e(1), e(1) + 1e-12 * e(2)).finished()};
    for (const Matrix& bad : bads) {
        o.start = bad;
        EXPECT_THROW(TangentPropagator(5, o), Error) << bad;
    }
}

// tdyn lyapunov --start-vectors on a stored run of a small network: started along the bottom and
// top eigenvectors u of H(theta_20), the first QR gives log|1 - alpha lambda| for each, since
// J(20) u = (1 - alpha lambda) u. The truth is a dense eigensolver on H by central differences of
// the gradient (no HVP): its error (~1e-10) moves log|1 - alpha lambda| by far less than 1e-7.
// The perturbed copy starts along v_1 too: its first growth agrees to 1e-5 (EPS 1e-7: the
// second-order term of the map is O(EPS) relative).
TEST(Lyapunov, StartVectorsFromAFileGiveTheirEigenvaluesGrowth) {
    const std::string data = test::temp_path("lyap-start-data.h5"), run = test::temp_path("lyap-start.h5"),
                      start = test::temp_path("lyap-start-vectors.h5");
    const Matrix H = small_run_hessian_at_20(data, run);
    ASSERT_FALSE(testing::Test::HasFailure());
    const Eigen::SelfAdjointEigenSolver<Matrix> eig(H);
    const Index P = H.rows();
    const double alpha = 0.2, lo = eig.eigenvalues()[0], hi = eig.eigenvalues()[P - 1];
    RowMatrix U(2, P);
    U.row(0) = eig.eigenvectors().col(0).transpose();
    U.row(1) = eig.eigenvectors().col(P - 1).transpose();
    h5::File::create(start).write_matrix("/vectors", U);
    const auto r = test::run_tdyn("lyapunov " + run + " --vectors 3 --from 20 --start-vectors " + start +
                                  " --perturbation 1e-7 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // tdyn response does not take U (unstable directions) from the exponents of chosen directions
    const std::string before = test::slurp(run);
    const auto resp = test::run_tdyn("response " + run + " --param lr --method far --window 5 --segment 10");
    EXPECT_NE(resp.exit_code, 0);
    EXPECT_NE(resp.err.find("give --unstable U"), std::string::npos) << resp.err;
    EXPECT_EQ(test::slurp(run), before);
    h5::File f = h5::File::open_read(run);
    const Vector g = f.read_row("/lyapunov/log_growth", 0);
    EXPECT_NEAR(g[0], std::log(std::abs(1 - alpha * lo)), 1e-7) << "lambda_min " << lo;
    EXPECT_NEAR(g[1], std::log(std::abs(1 - alpha * hi)), 1e-7) << "lambda_max " << hi;
    EXPECT_NEAR(f.read_vector("/lyapunov/perturbation/log_growth")[0], g[0], 1e-5);
    EXPECT_EQ(f.attr_int("/lyapunov", "start_vectors"), 2);
    EXPECT_EQ(f.attr_string("/lyapunov", "start_file"), start);
    EXPECT_EQ(f.read_matrix("/lyapunov/start"), U);  // kept in the run, bit for bit
    EXPECT_EQ(f.read_vector("/lyapunov/step").size(), 20);
    const auto info = test::run_tdyn("info " + run + " --json");
    EXPECT_NE(info.out.find("\"start_vectors\": 2, \"start_file\": \"" + start + "\""), std::string::npos) << info.out;
}

// --start-along: the eigenvectors of H(theta_T0) computed by tdyn lyapunov itself (Lanczos). Truth:
// the dense eigen-decomposition of the finite-difference Hessian. A v_k along an eigenvector u_k
// grows in its first step by |1 - alpha lambda_k| exactly, and orthogonal eigenvectors stay
// orthogonal through J, so QR's k-th growth is log|1 - alpha lambda_k|. Tolerance 1e-7: the
// central-difference H is good to ~1e-9 here, and a Lanczos vector off by d changes |J v| by O(d^2).
// Bad values get one line, a non-zero exit, and leave the run file as it was.
TEST(Lyapunov, StartAlongEigenvectorsOfHGivesTheirGrowth) {
    const std::string data = test::temp_path("lyap-along-data.h5"), run = test::temp_path("lyap-along.h5");
    const Matrix H = small_run_hessian_at_20(data, run);
    ASSERT_FALSE(testing::Test::HasFailure());
    const Vector lambda = Eigen::SelfAdjointEigenSolver<Matrix>(H).eigenvalues();  // ascending
    const Index P = H.rows();
    const double alpha = 0.2;
    const std::string before = test::slurp(run);
    for (const std::string bad : {"both", "top:0", "top:x", "middle", "bottom:4", "top:"}) {
        const auto r = test::run_tdyn("lyapunov " + run + " --vectors 3 --from 20 --start-along " + bad);
        EXPECT_NE(r.exit_code, 0) << bad;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << ": " << r.err;
        EXPECT_NE(r.err.find("--start-along"), std::string::npos) << bad << ": " << r.err;
        EXPECT_EQ(test::slurp(run), before) << bad;
    }
    const std::string file = test::temp_path("lyap-along-vectors.h5");
    h5::File::create(file).write_vector("/vector", Vector::Ones(P));
    const auto both = test::run_tdyn("lyapunov " + run + " --start-along top --start-vectors " + file);
    EXPECT_NE(both.exit_code, 0) << "--start-along and --start-vectors together";
    EXPECT_EQ(test::slurp(run), before);

    auto run_along = [&](const std::string& along) {
        const auto r =
            test::run_tdyn("lyapunov " + run + " --force --vectors 3 --from 20 --quiet --start-along " + along);
        EXPECT_EQ(r.exit_code, 0) << r.err;
        h5::File f = h5::File::open_read(run);
        EXPECT_EQ(f.attr_string("/lyapunov", "start_file"),
                  "--start-along " + (along.find(':') == std::string::npos ? along + ":1" : along));
        return f.read_row("/lyapunov/log_growth", 0);
    };
    const Vector bottom = run_along("bottom");
    EXPECT_NEAR(bottom[0], std::log(std::abs(1 - alpha * lambda[0])), 1e-7) << "lambda_min " << lambda[0];
    const Vector top = run_along("top:2");
    EXPECT_NEAR(top[0], std::log(std::abs(1 - alpha * lambda[P - 1])), 1e-7) << "lambda_max " << lambda[P - 1];
    EXPECT_NEAR(top[1], std::log(std::abs(1 - alpha * lambda[P - 2])), 1e-7) << "lambda_2 " << lambda[P - 2];
    // --resume takes the same flag, and refuses another
    const auto same = test::run_tdyn("lyapunov " + run + " --resume --quiet --start-along top:2");
    EXPECT_EQ(same.exit_code, 0) << same.err;
    const auto other = test::run_tdyn("lyapunov " + run + " --resume --quiet --start-along top");
    EXPECT_NE(other.exit_code, 0);
    EXPECT_NE(other.err.find("--start-along top:1 differs from the stored analysis' top:2"), std::string::npos)
        << other.err;
    const auto empty = test::run_tdyn("lyapunov " + run + " --force --vectors 3 --start-along ''");
    EXPECT_NE(empty.exit_code, 0) << "an empty --start-along";
    const auto one = test::run_tdyn("lyapunov " + run + " --force --vectors 3 --from 20 --quiet --start-along bottom");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const auto same_one = test::run_tdyn("lyapunov " + run + " --resume --quiet --start-along bottom:1");
    EXPECT_EQ(same_one.exit_code, 0) << "bottom and bottom:1 are the same: " << same_one.err;
}

// Bad start vectors get one line, a non-zero exit, and leave the run file as it was.
TEST(Lyapunov, BadStartVectorsGiveOneLineAndTouchNothing) {
    const std::string data = test::temp_path("lyap-start-data2.h5"), run = test::temp_path("lyap-start-bad.h5");
    test::write_data_file(data, 100, 10, 3, 12);
    ASSERT_EQ(test::run_tdyn("train" + small_run_args(data) + " --steps 20 --lyapunov 2 --out " + run).exit_code, 0);
    const Index P = 115;
    auto vectors_file = [&](const std::string& name, const RowMatrix& U) {
        const std::string path = test::temp_path(name);
        h5::File f = h5::File::create(path);
        f.write_matrix("/vectors", U);
        return path;
    };
    RowMatrix dependent = RowMatrix::Zero(2, P), nan = RowMatrix::Ones(1, P), close = RowMatrix::Zero(2, P);
    dependent(0, 0) = 1;
    dependent(1, 0) = -2;
    nan(0, 7) = std::nan("");
    close(0, 0) = close(1, 0) = 1;
    close(1, 1) = 1e-8;  // 1e-8 away from the first: accepted (the limit is 1e-10)
    const std::string wrong_length = vectors_file("lyap-sv-len.h5", RowMatrix::Ones(1, P + 1)),
                      too_many = vectors_file("lyap-sv-many.h5", RowMatrix::Identity(3, P)),
                      dep = vectors_file("lyap-sv-dep.h5", dependent),
                      zero = vectors_file("lyap-sv-zero.h5", RowMatrix::Zero(1, P)),
                      with_nan = vectors_file("lyap-sv-nan.h5", nan),
                      none = vectors_file("lyap-sv-empty.h5", RowMatrix(0, P)),
                      no_dataset = test::temp_path("lyap-sv-nodata.h5");
    { h5::File::create(no_dataset); }
    const std::string before = test::slurp(run);
    for (const std::string& file : {wrong_length, too_many, dep, zero, with_nan, none, no_dataset}) {
        const std::string args = "lyapunov " + run + " --force --vectors 2 --start-vectors " + file;
        const auto r = test::run_tdyn(args);
        EXPECT_NE(r.exit_code, 0) << args;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
        EXPECT_NE(r.err.find(file), std::string::npos) << args << ": names the file: " << r.err;
        EXPECT_EQ(test::slurp(run), before) << args;
    }
    const auto resumed = test::run_tdyn("lyapunov " + run + " --resume --start-vectors " + dep);
    EXPECT_NE(resumed.exit_code, 0);
    EXPECT_NE(resumed.err.find("--start-vectors"), std::string::npos) << resumed.err;
    EXPECT_EQ(test::slurp(run), before);
    // Nearly but not quite dependent vectors are taken.
    const auto ok = test::run_tdyn("lyapunov " + run + " --force --vectors 2 --quiet --start-vectors " +
                                   vectors_file("lyap-sv-close.h5", close));
    EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// tdyn lyapunov on a stored run regenerates theta by replay and applies the same J(t) to the
// same initial basis (seeded by the run's seed), so it equals the in-line analysis bit for bit.
TEST(Lyapunov, AnalysisOfASavedRunEqualsInlineTraining) {
    const std::string data = test::temp_path("lyap-data2.h5");
    const std::string inline_run = test::temp_path("lyap-inline.h5"), plain = test::temp_path("lyap-plain.h5");
    test::write_data_file(data, 200, 10, 3, 5);
    ASSERT_EQ(test::run_tdyn("train" + small_run_args(data) + " --steps 40 --lyapunov 3 --perturbation 1e-6 --out " +
                             inline_run)
                  .exit_code,
              0);
    ASSERT_EQ(test::run_tdyn("train" + small_run_args(data) + " --steps 40 --out " + plain).exit_code, 0);
    const auto r = test::run_tdyn("lyapunov " + plain + " --vectors 3 --perturbation 1e-6 --quiet --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("\"exponents\": ["), std::string::npos) << r.out;
    {
        h5::File a = h5::File::open_read(inline_run), b = h5::File::open_read(plain);  // closed before the writes below
        for (const char* s : {"/lyapunov/step", "/lyapunov/perturbation/log_growth", "/lyapunov/perturbation/exponent"})
            EXPECT_EQ(a.read_vector(s), b.read_vector(s)) << s;
        EXPECT_EQ(a.read_matrix("/lyapunov/log_growth"), b.read_matrix("/lyapunov/log_growth"));
        EXPECT_EQ(a.read_matrix("/lyapunov/basis"), b.read_matrix("/lyapunov/basis"));
    }

    // A part of the run, --from 10 --to 30 with a warm-up, then resumed further: the same as
    // one uninterrupted analysis over 10..40.
    const std::string part = test::temp_path("lyap-part.h5");
    std::filesystem::copy_file(plain, part);
    ASSERT_EQ(test::run_tdyn("lyapunov " + part +
                             " --force --vectors 2 --from 10 --to 30 --warmup 4 --checkpoint-every 5 --quiet")
                  .exit_code,
              0);
    const auto resumed = test::run_tdyn("lyapunov " + part + " --resume --to 40 --quiet");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    ASSERT_EQ(test::run_tdyn("lyapunov " + plain +
                             " --force --vectors 2 --from 10 --to 40 --warmup 4 --checkpoint-every 5 --quiet")
                  .exit_code,
              0);
    h5::File c = h5::File::open_read(part), d = h5::File::open_read(plain);
    EXPECT_TRUE(same(c.read_matrix("/lyapunov/exponents"), d.read_matrix("/lyapunov/exponents")));
    EXPECT_EQ(c.read_matrix("/lyapunov/basis"), d.read_matrix("/lyapunov/basis"));
    EXPECT_EQ(c.read_vector("/lyapunov/step").size(), 30);
}

// tdyn lyapunov flushes the tangent analysis' checkpoint before the perturbed copy's, so a kill
// between the two leaves a newest checkpoint row without the copy's state (made here by dropping
// that row, which is what the file holds after such a kill). --resume starts from the newest
// checkpoint both hold and ends bit-identical to an uninterrupted analysis.
TEST(Lyapunov, ResumeAfterAKillBetweenTheTwoCheckpointFlushesIsBitIdentical) {
    const std::string data = test::temp_path("lyap-flush-data.h5"), plain = test::temp_path("lyap-flush-plain.h5");
    test::write_data_file(data, 200, 10, 3, 5);
    ASSERT_EQ(test::run_tdyn("train" + small_run_args(data) + " --steps 40 --out " + plain).exit_code, 0);
    const std::string cut = test::temp_path("lyap-flush-cut.h5");
    std::filesystem::copy_file(plain, cut);
    const std::string flags = " --vectors 2 --perturbation 1e-6 --checkpoint-every 5 --quiet";
    ASSERT_EQ(test::run_tdyn("lyapunov " + cut + flags + " --to 30").exit_code, 0);
    {
        h5::File f = h5::File::open_write(cut);
        ASSERT_EQ(f.rows("/checkpoint/lyapunov_step"), f.rows("/checkpoint/perturbation_theta"));
        for (const char* n : {"/checkpoint/perturbation_theta", "/checkpoint/perturbation_base"})
            f.truncate_rows(n, f.rows(n) - 1);
    }
    const auto resumed = test::run_tdyn("lyapunov " + cut + " --resume --to 40 --checkpoint-every 5 --quiet");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    ASSERT_EQ(test::run_tdyn("lyapunov " + plain + flags + " --to 40").exit_code, 0);
    h5::File c = h5::File::open_read(cut), d = h5::File::open_read(plain);
    for (const char* s :
         {"/lyapunov/step", "/lyapunov/perturbation/step", "/lyapunov/perturbation/log_growth",
          "/lyapunov/perturbation/exponent", "/checkpoint/lyapunov_step", "/checkpoint/perturbation_base"})
        EXPECT_EQ(c.read_vector(s), d.read_vector(s)) << s;
    for (const char* s : {"/lyapunov/log_growth", "/lyapunov/exponents", "/checkpoint/lyapunov_basis",
                          "/checkpoint/perturbation_theta"})
        EXPECT_EQ(c.read_matrix(s), d.read_matrix(s)) << s;
    EXPECT_EQ(c.read_vector("/lyapunov/step").size(), 40);
}

// Every bad request gets one line, a non-zero exit, and leaves the run file as it was.
TEST(Lyapunov, BadInputGivesOneLineAndTouchesNothing) {
    const std::string data = test::temp_path("lyap-data3.h5"), run = test::temp_path("lyap-bad.h5");
    test::write_data_file(data, 100, 10, 3, 6);
    ASSERT_EQ(test::run_tdyn("train" + small_run_args(data) + " --steps 20 --lyapunov 2 --out " + run).exit_code, 0);
    const std::string before = test::slurp(run);
    for (const std::string& args :
         {"lyapunov " + run + " --vectors 2",            // exists, no --force
          "lyapunov " + run + " --force --vectors 500",  // M > P = 115
          "lyapunov " + run + " --force --warmup 3 --qr-every 2", "lyapunov " + run + " --force --to 21",
          "lyapunov " + run + " --force --from 20 --to 20", "lyapunov " + run + " --force --perturbation -1",
          // refused when the perturbed copy starts: the --force'd /lyapunov group must survive it
          "lyapunov " + run + " --force --vectors 1 --perturbation 1e-300",
          "lyapunov " + run + " --resume --vectors 3"}) {
        const auto r = test::run_tdyn(args);
        EXPECT_NE(r.exit_code, 0) << args;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << ": " << r.err;
        EXPECT_EQ(test::slurp(run), before) << args;
    }
    for (const std::string flags :
         {" --lyapunov 200", " --lyapunov 2 --warmup 3 --qr-every 2", " --perturbation 1e-6"}) {
        const auto r = test::run_tdyn("train" + small_run_args(data) + " --steps 5 --out " + run + " --force" + flags);
        EXPECT_NE(r.exit_code, 0) << flags;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << flags << ": " << r.err;
        EXPECT_EQ(test::slurp(run), before) << flags;
    }
}

// kill -9 at random steps (three times) of a run that carries tangent vectors, a perturbed
// trajectory and in-line spectra; each time --resume continues from the last checkpoint, and
// in the end every series, the final theta and the final basis equal an uninterrupted run's
// bit for bit, with every step present once.
TEST(Lyapunov, ResumeAfterSigkillIsBitIdentical) {
    const std::string data = test::temp_path("lyap-kill-data.h5");
    test::write_data_file(data, 1000, 40, 5, 9);
    const std::vector<std::string> argv = {"train",   "--data",
                                           data,      "--arch",
                                           "40-30-5", "--lr",
                                           "0.3",     "--steps",
                                           "400",     "--save-theta-every",
                                           "7",       "--lyapunov",
                                           "4",       "--perturbation",
                                           "1e-6",    "--spectrum-every",
                                           "5",       "--eigs",
                                           "2",       "--which",
                                           "top",     "--quiet"};
    std::string args;
    for (std::size_t i = 1; i < argv.size(); ++i) args += " " + argv[i];
    const std::string full = test::temp_path("lyap-kill-full.h5"), killed = test::temp_path("lyap-kill-resumed.h5");
    ASSERT_EQ(test::run_tdyn("train" + args + " --out " + full).exit_code, 0);

    // Three kill points (rows of /trajectory), random but printed so a failure can be replayed; the
    // last at row 179 or earlier of 401, so that a fast machine cannot finish the run before the kill.
    const unsigned seed = std::random_device{}();
    SCOPED_TRACE("kill points from seed " + std::to_string(seed));
    std::mt19937 gen(seed);
    std::vector<Index> kill_at = {Index(10 + gen() % 50), Index(70 + gen() % 50), Index(130 + gen() % 50)};
    for (std::size_t k = 0; k < kill_at.size(); ++k) {
        std::vector<std::string> a = k == 0 ? argv : std::vector<std::string>{"train", "--resume", "--quiet"};
        for (const std::string s : {"--out", killed.c_str()}) a.push_back(s);
        const pid_t pid = test::spawn_tdyn(a);
        ASSERT_GE(pid, 0);
        test::wait_for_rows(killed, kill_at[k]);
        const int status = test::signal_and_wait(pid, SIGKILL);
        ASSERT_TRUE(WIFSIGNALED(status)) << "run " << k << " finished before it could be killed at row " << kill_at[k];
    }
    const auto resumed = test::run_tdyn("train --out " + killed + " --resume --quiet");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    test::expect_same_run(full, killed, 400,
                          {"/trajectory/step", "/trajectory/loss", "/trajectory/accuracy", "/trajectory/grad_norm",
                           "/lyapunov/step", "/lyapunov/perturbation/step", "/lyapunov/perturbation/log_growth",
                           "/lyapunov/perturbation/exponent", "/lyapunov/overlap_step", "/spectrum/step",
                           "/spectrum/lambda_max", "/spectrum/converged", "/spectrum/cos_g_u1"},
                          {"/trajectory/theta", "/lyapunov/log_growth", "/lyapunov/exponents", "/lyapunov/overlap",
                           "/lyapunov/basis", "/spectrum/hessian_top", "/spectrum/residual_top"});
    RunReader b(killed);
    // No gaps, no duplicates: steps 0..400 once each, analyses every 1 and 5 steps.
    const Vector steps = b.file().read_vector("/trajectory/step"), lyap = b.file().read_vector("/lyapunov/step"),
                 spec = b.file().read_vector("/spectrum/step");
    ASSERT_EQ(steps.size(), 401);
    for (Index t = 0; t <= 400; ++t) EXPECT_EQ(steps[t], double(t));
    for (Index j = 1; j < lyap.size(); ++j) EXPECT_EQ(lyap[j], lyap[j - 1] + 1) << j;
    for (Index j = 1; j < spec.size(); ++j) EXPECT_EQ(spec[j], spec[j - 1] + 5) << j;
    EXPECT_EQ(b.file().read_matrix("/lyapunov/basis").cols(), 4);
}

// The check behind tdyn info's warning (docs/FINDINGS.md 2): spectrum steps with |1 - alpha lambda_max| > 1
// where v_1 grows much slower than ln|mu| and (when stored) points away from the top eigenvector.
TEST(Lyapunov, MissedInstabilityFlagsOnlyUnstableStepsTheTangentVectorDoesNotShow) {
    const double alpha = 0.1;  // 2/alpha = 20
    // spectrum every 10 steps 0..50, newest row of step 20 appended last (as tdyn spectrum does)
    Vector sstep(7), lmax(7);
    sstep << 0, 10, 20, 30, 40, 50, 20;
    lmax << 15, 21, 99, 22, 22, 21, 23;  // |mu| = 0.5, 1.1, (1.3), 1.2, 1.2, 1.1; 20's stored row is superseded
    // v_1 flat (log growth 1e-4 per step) except over steps 30..39, where it grows at ln 1.2
    Vector lstep(50), growth(50);
    for (Index t = 0; t < 50; ++t) {
        lstep[t] = double(t);
        growth[t] = t >= 30 && t < 40 ? std::log(1.2) : 1e-4;
    }
    Vector ostep(5), cos1(5);
    ostep << 0, 10, 20, 30, 40;
    cos1 << 0.01, 1e-5, 2e-5, 0.5, 0.2;  // caught at 30 (and grows), at 40 aligned but not growing
    const MissedInstability m = find_missed_instability(sstep, lmax, alpha, lstep, growth, 1, ostep, cos1);
    // unstable and covered: 10, 20, 30, 40 (50 has no tangent row at or after it)
    EXPECT_EQ(m.unstable, 4);
    EXPECT_EQ(m.steps, (std::vector<Index>{10, 20}));
    EXPECT_EQ(m.until, 30);
    EXPECT_NEAR(m.mean_log_mu, 0.5 * (std::log(1.1) + std::log(1.3)), 1e-12);
    EXPECT_NEAR(m.mean_exponent, 1e-4, 1e-12);
    EXPECT_EQ(m.max_overlap, 2e-5);

    // without overlap data the exponent alone decides (40 is then flagged too)
    const MissedInstability e = find_missed_instability(sstep, lmax, alpha, lstep, growth, 1, Vector(), Vector());
    EXPECT_EQ(e.steps, (std::vector<Index>{10, 20, 40}));
    EXPECT_TRUE(std::isnan(e.max_overlap));
    // QR every 5 steps: log_growth rows at 4, 9, ... hold 5 steps each, the same exponents
    Vector qstep(10), qgrowth(10);
    for (Index j = 0; j < 10; ++j) {
        qstep[j] = double(5 * j + 4);
        qgrowth[j] = growth.segment(5 * j, 5).sum();
    }
    EXPECT_EQ(find_missed_instability(sstep, lmax, alpha, qstep, qgrowth, 5, Vector(), Vector()).steps,
              (std::vector<Index>{10, 20, 40}));
    // stable everywhere, or no tangent data: nothing
    const Vector stable = Vector::Constant(7, 15.0);
    const MissedInstability s = find_missed_instability(sstep, stable, alpha, lstep, growth, 1, ostep, cos1);
    EXPECT_EQ(s.unstable, 0);
    EXPECT_TRUE(s.steps.empty());
    EXPECT_TRUE(find_missed_instability(sstep, lmax, alpha, Vector(), Vector(), 1, ostep, cos1).steps.empty());
    // lambda_max < 0 with |1 - alpha lambda| > 1 counts as well (the formula, not the sign)
    Vector neg = Vector::Constant(7, -5.0);  // mu = 1.5
    EXPECT_EQ(find_missed_instability(sstep, neg, alpha, lstep, growth, 1, Vector(), Vector()).steps.size(),
              4u);  // 0, 10, 20, 40
    // what a damaged file may hold: non-finite steps and growths are skipped, not cast or counted
    Vector bad_sstep = sstep, bad_growth = growth, bad_lstep = lstep;
    bad_sstep[1] = std::nan("");
    bad_growth.segment(20, 10).setConstant(std::nan(""));  // step 20's window
    bad_lstep[49] = 1e300;
    const MissedInstability b = find_missed_instability(bad_sstep, lmax, alpha, bad_lstep, bad_growth, 1, ostep, cos1);
    EXPECT_TRUE(b.steps.empty());  // 10 gone with its step, 20 with its growth
    EXPECT_EQ(b.unstable, 2);      // 30 and 40
}

// The flagged steps sorted by the gradient's share along u_1 (/spectrum/cos_g_u1, row by row with
// the spectrum steps): |share| < 1e-3, GD not oscillating along u_1 (first overshoot); >= 1e-3,
// oscillating (hovering); NaN or no row (files written before cos_g_u1), neither.
TEST(Lyapunov, MissedInstabilitySortsFlaggedStepsByTheGradientShareAlongU1) {
    Vector sstep(6), lmax = Vector::Constant(6, 25.0), share(5);  // |mu| = 1.5 at alpha 0.1
    sstep << 0, 10, 20, 30, 40, 50;
    share << 2e-6, -9e-4, -0.3, std::nan(""), 1e-3;  // no row for 50
    Vector lstep(60), growth = Vector::Constant(60, 1e-4);
    for (Index t = 0; t < 60; ++t) lstep[t] = double(t);
    const MissedInstability m = find_missed_instability(sstep, lmax, 0.1, lstep, growth, 1, Vector(), Vector(), share);
    EXPECT_EQ(m.steps, (std::vector<Index>{0, 10, 20, 30, 40, 50}));
    EXPECT_EQ(m.not_oscillating, (std::vector<Index>{0, 10}));
    EXPECT_EQ(m.oscillating, (std::vector<Index>{20, 40}));
    const MissedInstability old = find_missed_instability(sstep, lmax, 0.1, lstep, growth, 1, Vector(), Vector());
    EXPECT_EQ(old.steps, m.steps);
    EXPECT_TRUE(old.not_oscillating.empty() && old.oscillating.empty());
}

// The former window-by-window scan (O(spectrum steps x tangent rows)), kept as the oracle of the
// one-pass merge: the same flagged steps and the same sums, bit for bit.
MissedInstability missed_by_scan(const Vector& sstep, const Vector& lmax, double alpha, const Vector& lstep,
                                 const Vector& growth, Index q, const Vector& ostep, const Vector& cos1) {
    MissedInstability out;
    auto is_step = [](double t) { return std::isfinite(t) && std::abs(t) < 1e15; };
    std::map<Index, double> lm;
    for (Index j = 0; j < std::min(sstep.size(), lmax.size()); ++j)
        if (is_step(sstep[j]) && std::isfinite(lmax[j])) lm[Index(sstep[j])] = lmax[j];
    std::map<Index, double> c1;
    for (Index j = 0; j < std::min(ostep.size(), cos1.size()); ++j)
        if (is_step(ostep[j])) c1[Index(ostep[j])] = cos1[j];
    Index last = -1;
    for (Index j = 0; j < lstep.size(); ++j)
        if (is_step(lstep[j])) last = std::max(last, Index(lstep[j]));
    if (last < 0) return out;
    double sum_log_mu = 0, sum_exponent = 0;
    for (auto it = lm.begin(); it != lm.end(); ++it) {
        const double mu = std::abs(1 - alpha * it->second);
        if (!(mu > 1)) continue;
        const Index s = it->first, end = std::next(it) == lm.end() ? last + 1 : std::next(it)->first;
        double g = 0;
        Index n = 0;
        for (Index j = 0; j < std::min(lstep.size(), growth.size()); ++j)
            if (lstep[j] >= s && lstep[j] < end) {
                g += growth[j];
                n += q;
            }
        const double exponent = g / double(n);
        if (n == 0 || !std::isfinite(exponent)) continue;
        ++out.unstable;
        const auto c = c1.find(s);
        if (exponent >= MissedInstability::kMissedExponentFraction * std::log(mu)) continue;
        if (c != c1.end() && !(c->second < MissedInstability::kMissedOverlap)) continue;
        out.steps.push_back(s);
        out.until = end;
        sum_log_mu += std::log(mu);
        sum_exponent += exponent;
        if (c != c1.end())
            out.max_overlap = std::isnan(out.max_overlap) ? c->second : std::max(out.max_overlap, c->second);
    }
    if (!out.steps.empty()) {
        out.mean_log_mu = sum_log_mu / double(out.steps.size());
        out.mean_exponent = sum_exponent / double(out.steps.size());
    }
    return out;
}

void expect_same(const MissedInstability& a, const MissedInstability& b) {
    EXPECT_EQ(a.unstable, b.unstable);
    EXPECT_EQ(a.steps, b.steps);
    EXPECT_EQ(a.until, b.until);
    for (const auto& [x, y] :
         {std::pair{a.mean_log_mu, b.mean_log_mu}, {a.mean_exponent, b.mean_exponent}, {a.max_overlap, b.max_overlap}})
        EXPECT_TRUE(x == y || (std::isnan(x) && std::isnan(y))) << x << " " << y;
}

// find_missed_instability adds each tangent row to its spectrum window in one pass: the scan's
// results on random series (repeated, unordered, fractional, NaN and huge steps; rows before the
// first spectrum step; QR every 1 or 3 steps), and a 10^6-step series, where the scan would make
// 10^12 comparisons, flagged in full.
TEST(Lyapunov, MissedInstabilityIsOnePassAndGivesTheScansResults) {
    std::mt19937_64 gen(11);
    std::uniform_real_distribution<double> u(0, 1);
    for (int trial = 0; trial < 200; ++trial) {
        const Index ns = 1 + Index(gen() % 30), nl = Index(gen() % 200), no = Index(gen() % 20),
                    q = 1 + 2 * (trial % 2);
        Vector sstep(ns), lmax(ns), lstep(nl), growth(nl), ostep(no), cos1(no);
        for (Index j = 0; j < ns; ++j) {
            sstep[j] = double(Index(gen() % 20) * 10 - 20);
            lmax[j] = 30 * u(gen);  // alpha 0.1: |mu| > 1 above 20
        }
        for (Index j = 0; j < nl; ++j) {
            lstep[j] = trial % 3 == 0 ? double(Index(gen() % 220) - 30) : double(j) - 5;  // unordered or ascending
            growth[j] = 0.3 * u(gen) - 0.05;
        }
        for (Index j = 0; j < no; ++j) {
            ostep[j] = double(Index(gen() % 20) * 10);
            cos1[j] = 0.2 * u(gen);
        }
        if (trial % 5 == 1 && nl > 3) {
            lstep[1] = std::nan("");
            lstep[2] = 1e300;
            lstep[3] += 0.5;
            growth[0] = std::nan("");
        }
        if (trial % 7 == 2) sstep[0] = std::nan("");
        SCOPED_TRACE("trial " + std::to_string(trial));
        expect_same(find_missed_instability(sstep, lmax, 0.1, lstep, growth, q, ostep, cos1),
                    missed_by_scan(sstep, lmax, 0.1, lstep, growth, q, ostep, cos1));
    }
    const Index n = 1000000;
    Vector step(n), lmax = Vector::Constant(n, 25.0), growth = Vector::Constant(n, 1e-4);  // |mu| = 1.5
    for (Index t = 0; t < n; ++t) step[t] = double(t);
    const MissedInstability m = find_missed_instability(step, lmax, 0.1, step, growth, 1, Vector(), Vector());
    EXPECT_EQ(m.unstable, n);
    EXPECT_EQ(Index(m.steps.size()), n);
    EXPECT_EQ(m.until, n);
    EXPECT_NEAR(m.mean_exponent, 1e-4, 1e-12);
}

/// A = Q diag(lambda) Q^T, Q a seeded random orthonormal basis: the constant map of the tests below,
/// whose window product A^W has sigma_i = |lambda_i|^W exactly.
Matrix symmetric_with_eigenvalues(const Vector& lambda, Matrix& Q) {
    Matrix R;
    qr_positive(standard_normal(lambda.size(), lambda.size(), 3), Q, R);
    return Q * lambda.asDiagonal() * Q.transpose();
}

WindowGrowth constant_map_growth(const Matrix& A, Index W, Index k, double tol, Index passes) {
    WindowGrowthOptions o;
    o.vectors = k;
    o.tol = tol;
    o.max_passes = passes;
    return window_growth(
        A.rows(), W, [&](Index, bool, const Matrix& V, Matrix& out) { out.noalias() = A * V; }, o);
}

// window_growth on a constant symmetric map J_t = A: M = A^W, so ln sigma_i = W ln|lambda_i| (sorted
// by modulus), whatever the start basis. |lambda| = 1.5, 1.3, 1.1, 0.9, ... with mixed signs. The QR
// after each step rounds at ~1e-16 relative, so ln sigma is off by ~W 1e-16; 1e-10 W, and tol 1e-12
// per step (1e-14 sat at the rounding floor: an -O2 build missed it). The top right singular vector
// is the eigenvector of 1.5 (|cos| to 1e-10). W = 2000 gives sigma_1 = e^811, beyond a double: the
// QR passes still give it; with k = 6 sigma_6 / sigma_1 = e^-2197 is below the smallest double, where
// the passes take the diagonal of T instead of its SVD (before, the SVD's zero singular values gave
// ln sigma_4,5 hundreds too high, flagged converged). Rates 1, e^-0.5, e^-1 over W = 1600:
// sigma_2 / sigma_1 = e^-800, in the subnormal range, which the SVD left stuck at e^-744.
TEST(WindowGrowth, ConstantSymmetricMapGivesPowersOfItsEigenvalues) {
    Vector lambda(8);
    lambda << 1.5, -1.3, 1.1, -0.9, 0.7, 0.5, -0.3, 0.1;
    Matrix Q;
    const Matrix A = symmetric_with_eigenvalues(lambda, Q);
    for (const auto& [W, k] : {std::pair<Index, Index>{40, 3}, {2000, 3}, {2000, 6}}) {
        const WindowGrowth g = constant_map_growth(A, W, k, 1e-12, 60);
        EXPECT_TRUE(g.converged) << "W " << W << ", " << g.passes << " passes, error " << g.error.transpose();
        for (Index i = 0; i < k; ++i)
            EXPECT_NEAR(g.log_sigma[i], double(W) * std::log(std::abs(lambda[i])), 1e-10 * double(W)) << W << " " << i;
        EXPECT_NEAR(std::abs(g.right.col(0).dot(Q.col(0))), 1, 1e-10);
    }
    Vector graded(3);
    graded << 1, std::exp(-0.5), std::exp(-1.0);
    const WindowGrowth g = constant_map_growth(symmetric_with_eigenvalues(graded, Q), 1600, 2, 1e-12, 60);
    EXPECT_TRUE(g.converged);
    EXPECT_NEAR(g.log_sigma[0], 0, 1e-10 * 1600);
    EXPECT_NEAR(g.log_sigma[1], -800, 1e-10 * 1600);
}

// Well separated values (40 dimensions, ln|lambda_j| = 0.1 - 0.05 j) converge in the QR passes within
// a few pairs, without Lanczos (which would see sigma_2^2 / sigma_1^2 = e^-100 over W = 1000 and
// not resolve it). A cluster near the top (|lambda| = 1.01, 1.0095, 1.009, ... 0.9 beyond the 12th)
// over W = 20: the QR passes would need hundreds of pairs (rate (1.0085 / 1.009)^40 per pair for
// k = 2, b = 4), so Lanczos takes over; truth W ln|lambda_i|, met to within the reported error (a
// residual bound) and 1e-8 per step. With too few sweeps the cluster is reported not converged
// with an error at least as large as the true one.
TEST(WindowGrowth, SeparatedValuesByQRPassesAndAClusterByLanczos) {
    Vector sep(40);
    for (Index j = 0; j < 40; ++j) sep[j] = (j % 2 ? -1 : 1) * std::exp(0.1 - 0.05 * double(j));
    Matrix Q;
    const WindowGrowth g = constant_map_growth(symmetric_with_eigenvalues(sep, Q), 1000, 2, 1e-10, 200);
    EXPECT_TRUE(g.converged);
    EXPECT_LE(g.passes, 6);
    EXPECT_NEAR(g.log_sigma[0], 1000 * 0.1, 1e-9 * 1000);
    EXPECT_NEAR(g.log_sigma[1], 1000 * 0.05, 1e-9 * 1000);

    Vector cl(60);
    for (Index j = 0; j < 60; ++j)
        cl[j] = (j % 3 ? 1 : -1) * (j < 12 ? 1.01 - 0.0005 * double(j) : 0.9 - 0.01 * double(j - 12));
    const Matrix A = symmetric_with_eigenvalues(cl, Q);
    const Index W = 20;
    const WindowGrowth c = constant_map_growth(A, W, 2, 1e-10, 400);
    EXPECT_TRUE(c.converged) << c.passes << " sweeps, error " << c.error.transpose();
    EXPECT_GT(c.passes, 4);  // Lanczos ran
    for (Index i = 0; i < 2; ++i) {
        const double truth = double(W) * std::log(std::abs(cl[i]));
        EXPECT_NEAR(c.log_sigma[i], truth, std::max(c.error[i], 1e-8 * double(W))) << i;
    }
    const WindowGrowth few = constant_map_growth(A, W, 2, 1e-10, 12);
    EXPECT_FALSE(few.converged);
    EXPECT_GE(few.error[0], std::abs(few.log_sigma[0] - double(W) * std::log(1.01)));
}

// A repeated top value: |lambda| = 1 `copies` times (signs alternating), then 1 - step once, then
// a bulk 0.99 - 0.003 j; k = copies, W = 20, so ln sigma_1..k = 0 exactly. The bulk makes the QR
// passes slow (rate 0.99^40 per pair), so Lanczos runs; it converges on the value 1 - step fast,
// before rounding has grown the other copies of 1 in its Krylov space (one vector's Krylov space
// holds one direction of each eigenspace). Without the deflated check it reported ln sigma_2 =
// 20 ln(1 - step), "converged" with error 6e-14 (copies 2), and with copies 3 and step 1e-4 two
// values off: the softmax network's case, whose neutral directions are sigma = 1 many times.
// Truth within the reported error and 1e-8 per step.
TEST(WindowGrowth, LanczosDoesNotHideARepeatedValue) {
    Matrix Q;
    const Index W = 20, n = 300;
    for (const Index copies : {Index(2), Index(3)})
        for (const double step : {1e-4, 1e-3}) {
            Vector lambda(n);
            for (Index j = 0; j < n; ++j)
                lambda[j] = (j % 2 ? -1 : 1) * (j < copies    ? 1.0
                                                : j == copies ? 1 - step
                                                              : 0.99 - 0.003 * double(j - copies));
            const WindowGrowth g = constant_map_growth(symmetric_with_eigenvalues(lambda, Q), W, copies, 1e-10, 400);
            SCOPED_TRACE(std::to_string(copies) + " copies of 1, then 1 - " + std::to_string(step));
            EXPECT_TRUE(g.converged) << g.passes << " sweeps, error " << g.error.transpose();
            EXPECT_GT(g.passes, 4);  // Lanczos ran
            for (Index i = 0; i < copies; ++i)
                EXPECT_NEAR(g.log_sigma[i], 0, std::max(g.error[i], 1e-8 * double(W))) << i;
            // Sweeps for the first solve (46) but not for its check: not converged, and the error
            // of each value below the first covers the gap to sigma_1, where a missed copy could be.
            const WindowGrowth cut = constant_map_growth(symmetric_with_eigenvalues(lambda, Q), W, copies, 1e-10, 60);
            EXPECT_FALSE(cut.converged);
            EXPECT_LE(cut.passes, 60);
            for (Index i = 0; i < copies; ++i)
                EXPECT_GE(cut.error[i] + 1e-8 * double(W), std::abs(cut.log_sigma[i])) << i;
        }
}

// The Henon map's Jacobians along an orbit are not symmetric and change every step: the truth is
// the dense product M = J_11 .. J_0, sigma_1 from its SVD (Eigen's JacobiSVD, accurate to ~1e-16
// sigma_1) and sigma_2 from |det M| = b^W: ln sigma_2 = W ln b - ln sigma_1. (The SVD's own sigma_2
// = e^-26 sigma_1 is good only to ~1e-16 sigma_1, a relative 4e-5: 2.2e-6 off in ln under ASan.)
// Over 300 steps the product overflows nothing in the passes, and ln sigma_1 + ln sigma_2 = W ln b
// again to rounding.
// A tangent vector carried from any start grows by at most sigma_1 over the window.
TEST(WindowGrowth, HenonWindowMatchesTheDenseProduct) {
    const double a = 1.4, b = 0.3;
    double x = 0.1, y = 0.1;
    for (int i = 0; i < 1000; ++i) std::tie(x, y) = std::pair{1 - a * x * x + y, b * x};
    std::vector<Matrix> J;
    for (int t = 0; t < 300; ++t) {
        Matrix Jt(2, 2);
        Jt << -2 * a * x, 1, b, 0;
        J.push_back(Jt);
        std::tie(x, y) = std::pair{1 - a * x * x + y, b * x};
    }
    auto apply = [&](Index t, bool transpose, const Matrix& V, Matrix& out) {
        out.noalias() = transpose ? Matrix(J[std::size_t(t)].transpose() * V) : Matrix(J[std::size_t(t)] * V);
    };
    WindowGrowthOptions o;
    o.vectors = 2;
    o.tol = 1e-13;
    o.max_passes = 40;
    const Index W = 12;
    const WindowGrowth g = window_growth(2, W, apply, o);
    Matrix M = Matrix::Identity(2, 2);
    for (Index t = 0; t < W; ++t) M = J[std::size_t(t)] * M;
    const Eigen::JacobiSVD<Matrix> svd(M, Eigen::ComputeFullV);
    EXPECT_TRUE(g.converged);
    EXPECT_NEAR(g.log_sigma[0], std::log(svd.singularValues()[0]), 1e-12);
    EXPECT_NEAR(g.log_sigma[1], double(W) * std::log(b) - std::log(svd.singularValues()[0]), 1e-10);
    EXPECT_NEAR(std::abs(g.right.col(0).dot(svd.matrixV().col(0))), 1, 1e-12);
    // one vector and no block around it: plain power iteration on M^T M, the same sigma_1; a vector
    // carried from a random start grows by less
    o.vectors = 1;
    o.block = 1;
    const WindowGrowth one = window_growth(2, W, apply, o);
    EXPECT_NEAR(one.log_sigma[0], g.log_sigma[0], 1e-12);
    TangentOptions to;
    to.vectors = 1;
    TangentPropagator carried(2, to);
    for (Index t = 0; t < W; ++t)
        carried.step([&](const Matrix& V, Matrix& JV) { JV.noalias() = J[std::size_t(t)] * V; });
    EXPECT_LT(carried.log_sum()[0], g.log_sigma[0]);

    const WindowGrowth longer = window_growth(2, 300, apply, WindowGrowthOptions{2, 40, 1e-13, 0});
    EXPECT_TRUE(longer.converged);
    EXPECT_NEAR(longer.log_sigma.sum(), 300 * std::log(b), 1e-10);
    EXPECT_GT(longer.log_sigma[0] / 300, 0.3);  // the attractor's 0.419, to finite-time spread
}

// Bad options: one line naming the parameter.
TEST(WindowGrowth, RefusesBadOptions) {
    auto id = [](Index, bool, const Matrix& V, Matrix& out) { out = V; };
    EXPECT_THROW(window_growth(3, 0, id, WindowGrowthOptions{}), Error);
    EXPECT_THROW(window_growth(3, 2, id, WindowGrowthOptions{4, 30, 1e-6, 0}), Error);
    EXPECT_THROW(window_growth(3, 2, id, WindowGrowthOptions{1, 1, 1e-6, 0}), Error);
    EXPECT_THROW(window_growth(3, 2, id, WindowGrowthOptions{1, 30, 0, 0}), Error);
    EXPECT_THROW(window_growth(3, 2, id, WindowGrowthOptions{2, 30, 1e-6, 0, 1}), Error);
    const WindowGrowth g = window_growth(3, 2, id, WindowGrowthOptions{2, 30, 1e-6, 0});
    EXPECT_TRUE(g.converged);  // the identity: sigma = 1, converged after the first pair
    EXPECT_EQ(g.passes, 2);
    EXPECT_NEAR(g.log_sigma.cwiseAbs().maxCoeff(), 0, 1e-15);
}

// tdyn growth on a stored run: the truth is the dense product M = J(23) J(22) J(21) J(20) with
// J(t) = I - alpha H(theta_t), each H by central differences of the gradient (good to ~1e-9, so
// ln sigma to ~1e-8: 1e-7), theta_21..23 by the update theta - alpha grad from the stored theta_20.
// A second window (24..28) by --resume gives the same rows as one pass over 20..28, bit for bit
// (the windows replay the same thetas from the same seeded start). The run's own tangent vector
// (tdyn lyapunov from step 20) grows by at most sigma_1 over the window. Bad flags: one line, a
// non-zero exit, the file as it was.
TEST(WindowGrowth, GrowthCommandMatchesTheDenseProductOfJ) {
    const std::string data = test::temp_path("growth-data.h5"), run = test::temp_path("growth.h5");
    small_run_hessian_at_20(data, run);
    ASSERT_FALSE(testing::Test::HasFailure());
    const Dataset ds = read_data_file(data, 0);
    const Architecture arch = Architecture::parse("10-8-3", Activation::Tanh, Output::SoftmaxCE);
    const InputMatrix X(ds.X, XPath::Dense);
    const double alpha = 0.2;
    auto gradient_at = [&](const Vector& th) {
        Evaluation e(arch, X, ds.T, th);
        return Vector(e.gradient());
    };
    Vector theta = RunReader(run).stored_theta(20);
    const Index P = theta.size();
    Matrix M = Matrix::Identity(P, P);
    for (int t = 20; t < 24; ++t) {
        Matrix H = test::central_jacobian(gradient_at, theta);
        H = 0.5 * (H + H.transpose());
        M = (Matrix::Identity(P, P) - alpha * H) * M;
        theta -= alpha * gradient_at(theta);
    }
    const Vector sigma = Eigen::JacobiSVD<Matrix>(M).singularValues();

    const std::string before = test::slurp(run);
    for (const std::string bad :
         {"--from 20 --to 28 --window 3", "--from 20 --to 41", "--from 30 --to 20", "--passes 1", "--tol 0",
          "--vectors 116", "--resume", "--arch 10-4-3", "--to -5", "--window 0"}) {
        const auto r = test::run_tdyn("growth " + run + " " + bad);
        EXPECT_NE(r.exit_code, 0) << bad;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << bad << ": " << r.err;
        EXPECT_EQ(test::slurp(run), before) << bad;
    }
    const auto r = test::run_tdyn("growth " + run + " --from 20 --to 24 --vectors 2 --tol 1e-12 --passes 3000");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    {
        h5::File f = h5::File::open_read(run);
        const Vector ls = f.read_row("/growth/log_sigma", 0);
        EXPECT_NEAR(ls[0], std::log(sigma[0]), 1e-7);
        EXPECT_NEAR(ls[1], std::log(sigma[1]), 1e-7);
        EXPECT_EQ(f.read_vector("/growth/converged")[0], 1);
        EXPECT_NEAR(f.read_row("/growth/exponents", 0)[0], ls[0] / 4, 1e-15);
    }
    const auto again = test::run_tdyn("growth " + run + " --from 20 --to 24");
    EXPECT_NE(again.exit_code, 0);
    EXPECT_NE(again.err.find("--force"), std::string::npos) << again.err;
    const std::string one = test::slurp(run);
    const auto covered = test::run_tdyn("growth " + run + " --resume --to 22");
    EXPECT_EQ(covered.exit_code, 0) << covered.err;
    EXPECT_NE(covered.err.find("already covers"), std::string::npos) << covered.err;
    EXPECT_EQ(test::slurp(run), one);
    const auto cont = test::run_tdyn("growth " + run + " --resume --to 28 --quiet");
    ASSERT_EQ(cont.exit_code, 0) << cont.err;
    const std::string whole = test::temp_path("growth-whole.h5");
    std::filesystem::copy_file(run, whole, std::filesystem::copy_options::overwrite_existing);
    ASSERT_EQ(test::run_tdyn("growth " + whole +
                             " --force --from 20 --to 28 --window 4 --vectors 2 --tol 1e-12 "
                             "--passes 3000 --quiet")
                  .exit_code,
              0);
    {
        h5::File f = h5::File::open_read(run), g = h5::File::open_read(whole);
        EXPECT_EQ(f.read_vector("/growth/to"), g.read_vector("/growth/to"));
        EXPECT_EQ(f.read_matrix("/growth/log_sigma"), g.read_matrix("/growth/log_sigma"));
        EXPECT_EQ(f.read_vector("/growth/from").size(), 2);
    }

    const auto ly = test::run_tdyn("lyapunov " + run + " --from 20 --to 24 --vectors 1 --quiet");
    ASSERT_EQ(ly.exit_code, 0) << ly.err;
    const auto lg = h5::File::open_read(run).read_matrix("/lyapunov/log_growth");
    const Vector stored = h5::File::open_read(run).read_row("/growth/log_sigma", 0);
    EXPECT_LT(lg.sum(), stored[0]);  // the run's v_1 over 20..24, a random start there
    EXPECT_EQ(ly.err.find("differs from the stored"), std::string::npos) << ly.err;
    EXPECT_EQ(cont.err.find("differs from the stored"), std::string::npos) << cont.err;

    // A stored theta the replay does not land on (theta_30 changed by 1e-12 in one weight): both
    // commands that replay past it say so, naming the step, and still finish.
    const std::string bent = test::temp_path("growth-bent.h5");
    std::filesystem::copy_file(run, bent, std::filesystem::copy_options::overwrite_existing);
    {
        h5::File f = h5::File::open_write(bent);
        const std::vector<Index> steps = RunReader(bent).info().theta_steps;
        const auto row = hsize_t(std::find(steps.begin(), steps.end(), Index(30)) - steps.begin());
        ASSERT_LT(row, steps.size());
        Vector th = f.read_row("/trajectory/theta", row);
        th[5] += 1e-12;
        f.overwrite_row("/trajectory/theta", row, th.data(), hsize_t(th.size()));
    }
    for (const std::string& cmd : {"growth " + bent + " --force --from 20 --to 32 --window 4 --quiet",
                                   "lyapunov " + bent + " --force --from 20 --to 32 --vectors 1 --quiet"}) {
        const auto b = test::run_tdyn(cmd);
        EXPECT_EQ(b.exit_code, 0) << cmd << ": " << b.err;
        EXPECT_NE(b.err.find("warning: the replayed theta at step 30 differs from the stored one"), std::string::npos)
            << cmd << ": " << b.err;
    }
}
