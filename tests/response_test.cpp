// Linear response against exact answers (design note response.md, section 2): the 3x map, the
// perturbed cat map and its gradient-descent form, the skew product (which exercises the second
// derivative term), gradient descent on a quadratic (closed form of the unrolled derivative);
// and the gradient-descent map's pieces against finite differences on a small network.
#include "tdyn/response.hpp"

#include "test_support.hpp"

#include <Eigen/Eigenvalues>
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <hdf5.h>
#include <nlohmann/json.hpp>

using namespace tdyn;
using namespace tdyn::test;

namespace {

constexpr double kPi = M_PI;
double wrap(double x) { return x - std::floor(x); }

/// x' = 3x + gamma sin 6 pi x mod 1 at gamma = 0, Phi = cos 2 pi x: d<Phi>/d gamma = -pi, shadowing 0.
class ThreeXMap : public ResponseMap {
public:
    Index dim() const override { return 1; }
    void at(Index, const Vector& x) override { m_x = x[0]; }
    Vector next() override { return Vector::Constant(1, wrap(3 * m_x)); }
    double phi() override { return std::cos(2 * kPi * m_x); }
    Vector grad_phi() override { return Vector::Constant(1, -2 * kPi * std::sin(2 * kPi * m_x)); }
    void jacobian(const Matrix& V, Matrix& JV) override { JV = 3 * V; }
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { JtW = 3 * W; }
    Vector param_derivative() override { return Vector::Constant(1, std::sin(6 * kPi * m_x)); }
    double param_derivative_trace(const Matrix& e, const Matrix&, const Matrix& eps) override {
        return 6 * kPi * std::cos(6 * kPi * m_x) * eps.cwiseProduct(e).sum();
    }
    Vector second_derivative(const Matrix&, const Matrix&) override { return Vector::Zero(1); }

private:
    double m_x = 0;
};

/// The cat map A = [[2,1],[1,1]] on the torus, Phi = cos 2 pi z_1.
///  oracle: f = Az + gamma X(Az), X(w) = (s1 + s3, s2 + s3): d<Phi>/d gamma = -10 pi
///          (shadowing -0.253371, unstable -31.162556);
///  gd:     f = Az - gamma (2,1) sin 2 pi (2 z1 + z2): d<Phi>/d gamma = 2 pi.
class CatMap : public ResponseMap {
public:
    explicit CatMap(bool gd) : m_gd(gd) { m_A << 2, 1, 1, 1; }
    Index dim() const override { return 2; }
    void at(Index, const Vector& z) override { m_z = z; }
    Vector next() override {
        Vector w = m_A * m_z;
        return Vector{{wrap(w[0]), wrap(w[1])}};
    }
    double phi() override { return std::cos(2 * kPi * m_z[0]); }
    Vector grad_phi() override { return Vector{{-2 * kPi * std::sin(2 * kPi * m_z[0]), 0.0}}; }
    void jacobian(const Matrix& V, Matrix& JV) override { JV = m_A * V; }
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { JtW = m_A.transpose() * W; }
    Vector param_derivative() override {
        if (m_gd) return -Vector{{2.0, 1.0}} * std::sin(2 * kPi * (2 * m_z[0] + m_z[1]));
        const Vector w = m_A * m_z;
        const double s1 = std::sin(2 * kPi * w[0]), s2 = std::sin(2 * kPi * (2 * w[0] + w[1])),
                     s3 = std::sin(2 * kPi * (5 * w[0] + 3 * w[1]));
        return Vector{{s1 + s3, s2 + s3}};
    }
    /// d_z X: the oracle's DX(Az) A; the gd form's -(2,1) 2 pi cos(2 pi (2 z1 + z2)) (2,1)^T.
    Eigen::Matrix2d dX() const {
        Eigen::Matrix2d D;
        if (m_gd) {
            const Eigen::Vector2d v(2, 1);
            return -2 * kPi * std::cos(2 * kPi * v.dot(m_z)) * v * v.transpose();
        }
        const Vector w = m_A * m_z;
        const double c1 = std::cos(2 * kPi * w[0]), c2 = std::cos(2 * kPi * (2 * w[0] + w[1])),
                     c3 = std::cos(2 * kPi * (5 * w[0] + 3 * w[1]));
        D << 2 * kPi * (c1 + 5 * c3), 2 * kPi * 3 * c3, 2 * kPi * (2 * c2 + 5 * c3), 2 * kPi * (c2 + 3 * c3);
        return D * m_A;
    }
    double param_derivative_trace(const Matrix& e, const Matrix&, const Matrix& eps) override {
        return eps.cwiseProduct(dX() * e).sum();
    }
    Vector second_derivative(const Matrix&, const Matrix&) override { return Vector::Zero(2); }

private:
    bool m_gd;
    Eigen::Matrix2d m_A;
    Vector m_z;
};

/// x' = 3x + gamma_1 sin 6 pi x mod 1, y' = y/2 + cos 2 pi x + gamma_2, Phi = y:
/// d<Phi>/d(gamma_1, gamma_2) = (-2 pi, 2). D^2 f != 0 (the y row), so nu~ and omega count.
class SkewProduct : public ResponseMap {
public:
    explicit SkewProduct(int param) : m_param(param) {}
    Index dim() const override { return 2; }
    void at(Index, const Vector& z) override { m_z = z; }
    Vector next() override { return Vector{{wrap(3 * m_z[0]), 0.5 * m_z[1] + std::cos(2 * kPi * m_z[0])}}; }
    double phi() override { return m_z[1]; }
    Vector grad_phi() override { return Vector{{0.0, 1.0}}; }
    Eigen::Matrix2d J() const {
        Eigen::Matrix2d D;
        D << 3, 0, -2 * kPi * std::sin(2 * kPi * m_z[0]), 0.5;
        return D;
    }
    void jacobian(const Matrix& V, Matrix& JV) override { JV = J() * V; }
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { JtW = J().transpose() * W; }
    Vector param_derivative() override {
        return m_param == 1 ? Vector{{std::sin(6 * kPi * m_z[0]), 0.0}} : Vector{{0.0, 1.0}};
    }
    double param_derivative_trace(const Matrix& e, const Matrix&, const Matrix& eps) override {
        if (m_param == 2) return 0;
        return 6 * kPi * std::cos(6 * kPi * m_z[0]) * eps.row(0).dot(e.row(0));
    }
    Vector second_derivative(const Matrix& e, const Matrix& eps) override {
        // only d2 y' / dx2 = -4 pi^2 cos 2 pi x: omega_x = sum_j eps_yj (-4 pi^2 cos 2 pi x) e_xj
        return Vector{{-4 * kPi * kPi * std::cos(2 * kPi * m_z[0]) * eps.row(1).dot(e.row(0)), 0.0}};
    }

private:
    int m_param;
    Vector m_z;
};

/// Gradient descent on L = theta^T A theta / 2, gamma = alpha: f = theta - alpha A theta,
/// X = -A theta, dX = -A, D^2 f = 0; Phi = |theta|^2 / 2.
class QuadraticGd : public ResponseMap {
public:
    QuadraticGd(const Matrix& A, double alpha) : m_A(A), m_alpha(alpha) {}
    Index dim() const override { return m_A.rows(); }
    void at(Index, const Vector& x) override { m_x = x; }
    Vector next() override { return m_x - m_alpha * (m_A * m_x); }
    double phi() override { return 0.5 * m_x.squaredNorm(); }
    Vector grad_phi() override { return m_x; }
    void jacobian(const Matrix& V, Matrix& JV) override { JV = V - m_alpha * (m_A * V); }
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { jacobian(W, JtW); }
    Vector param_derivative() override { return -(m_A * m_x); }
    double param_derivative_trace(const Matrix& e, const Matrix&, const Matrix& eps) override {
        return -eps.cwiseProduct(m_A * e).sum();
    }
    Vector second_derivative(const Matrix&, const Matrix&) override { return Vector::Zero(dim()); }

private:
    Matrix m_A;
    double m_alpha;
    Vector m_x;
};

struct Stats {
    double mean = 0, stderr_ = 0, shadowing = 0, shadowing_stderr = 0, unstable = 0;
};

/// FAR over `runs` independent orbits (random starts after a 100-step burn-in); the mean of the
/// runs' derivatives and its standard error from their spread.
template <class MakeMap>
Stats far_runs(MakeMap make, Index dim, const FarOptions& base, int runs) {
    Stats s;
    Vector d(runs), sc(runs);
    std::mt19937_64 gen(11);
    std::uniform_real_distribution<double> U(0, 1);
    for (int r = 0; r < runs; ++r) {
        auto map = make();
        Vector x(dim);
        for (Index i = 0; i < dim; ++i) x[i] = U(gen);
        for (int n = 0; n < 100; ++n) {
            map.at(n, x);
            x = map.next();
        }
        FarOptions o = base;
        o.seed = 100 + r;
        const FarResult f = far_response(map, x, 0, o);
        d[r] = f.derivative;
        sc[r] = f.shadowing;
        s.unstable += f.unstable / runs;
    }
    s.mean = d.mean();
    s.stderr_ = std::sqrt((d.array() - s.mean).square().sum() / (runs - 1) / runs);
    s.shadowing = sc.mean();
    s.shadowing_stderr = std::sqrt((sc.array() - s.shadowing).square().sum() / (runs - 1) / runs);
    return s;
}

}  // namespace

// Tolerances of the chaotic maps: FAR's estimate over N steps fluctuates like 1/sqrt(N); with
// 4 runs of N = 40000 the standard error of the mean (measured from the runs' spread, printed)
// is about 1-2 % of the answer, and the window W = 10 truncates correlations that decay like
// 3^-W or phi^-2W (< 1e-4). Each bound is about 4 measured standard errors, so it fails when
// the algorithm is wrong (a sign or an index off changes the answer by O(1)), not by chance.

TEST(Response, ThreeXMapIsMinusPiWithZeroShadowing) {
    FarOptions o;
    o.unstable = 1, o.segment = 10, o.window = 10, o.segments = 4000;
    const Stats s = far_runs([] { return ThreeXMap(); }, 1, o, 4);
    std::printf("3x map: %.4f +- %.4f (exact -pi), shadowing %.2e +- %.1e (exact 0)\n", s.mean, s.stderr_, s.shadowing,
                s.shadowing_stderr);
    EXPECT_NEAR(s.mean, -kPi, 0.15);
    // u = M: nu_0 is projected out, so nu is the past-driven adjoint, uncorrelated with X in the
    // mean: the shadowing part is 0 up to its own 1/sqrt(N) fluctuation (measured ~0.005).
    EXPECT_NEAR(s.shadowing, 0, 0.03);
}

TEST(Response, CatOracleSplitsIntoExactShadowingAndUnstableParts) {
    FarOptions o;
    o.unstable = 1, o.segment = 10, o.window = 10, o.segments = 4000;
    const Stats s = far_runs([] { return CatMap(false); }, 2, o, 4);
    std::printf(
        "cat oracle: %.4f +- %.4f (exact -10 pi = %.4f), shadowing %.5f (exact -0.253371), unstable %.4f "
        "(exact -31.162556)\n",
        s.mean, s.stderr_, -10 * kPi, s.shadowing, s.unstable);
    std::printf("cat oracle shadowing part: standard error %.4f over the runs\n", s.shadowing_stderr);
    EXPECT_NEAR(s.mean, -10 * kPi, 1.5);
    EXPECT_NEAR(s.unstable, -31.162556, 1.5);
    // The shadowing part has a much smaller variance (no psi window): standard error 0.0076 over
    // 4 runs (16 runs: -0.2581 +- 0.0040), so 0.03 is about 4 standard errors.
    EXPECT_NEAR(s.shadowing, -0.253371, 0.03);
}

TEST(Response, GradientDescentCatMapIsTwoPi) {
    FarOptions o;
    o.unstable = 1, o.segment = 10, o.window = 10, o.segments = 4000;
    const Stats s = far_runs([] { return CatMap(true); }, 2, o, 4);
    std::printf("gd cat map: %.4f +- %.4f (exact 2 pi), shadowing %.4f\n", s.mean, s.stderr_, s.shadowing);
    EXPECT_NEAR(s.mean, 2 * kPi, 0.3);
}

TEST(Response, SkewProductExercisesTheSecondDerivativeTerm) {
    FarOptions o;
    o.unstable = 1, o.segment = 10, o.window = 10, o.segments = 4000;
    const Stats s1 = far_runs([] { return SkewProduct(1); }, 2, o, 4);
    const Stats s2 = far_runs([] { return SkewProduct(2); }, 2, o, 4);
    std::printf("skew product: %.4f +- %.4f (exact -2 pi), %.4f +- %.4f (exact 2)\n", s1.mean, s1.stderr_, s2.mean,
                s2.stderr_);
    EXPECT_NEAR(s1.mean, -2 * kPi, 0.3);
    // gamma_2 shifts y along the stable direction only: shadowing alone is exact, the unstable part 0 in mean.
    EXPECT_NEAR(s2.mean, 2, 0.1);
}

// Unrolled derivative of <Phi>_T = (1/T) sum_{n=1}^{T} Phi(theta_n) against its closed form:
// theta_n = V diag(1 - alpha a)^n V^T theta_0, so
// d<Phi>_T/d alpha = (1/T) sum_n sum_i -n a_i (1 - alpha a_i)^{2n-1} c_i^2, c = V^T theta_0.
// Both are sums of the same O(T) terms: 1e-10 relative is rounding.
TEST(Response, UnrolledMatchesClosedFormOnQuadratic) {
    std::mt19937_64 gen(5);
    std::normal_distribution<double> N01;
    Matrix B(4, 4);
    for (Index i = 0; i < B.size(); ++i) B.data()[i] = N01(gen);
    const Matrix A = B * B.transpose() + 0.5 * Matrix::Identity(4, 4);
    Eigen::SelfAdjointEigenSolver<Matrix> es(A);
    const double alpha = 1.0 / es.eigenvalues().maxCoeff();  // stable: |1 - alpha a| < 1
    Vector theta0(4);
    for (Index i = 0; i < 4; ++i) theta0[i] = N01(gen);
    const Vector c = es.eigenvectors().transpose() * theta0;
    const Index T = 57;
    double exact = 0;
    for (Index n = 1; n <= T; ++n)
        for (Index i = 0; i < 4; ++i) {
            const double a = es.eigenvalues()[i];
            exact += -double(n) * a * std::pow(1 - alpha * a, 2 * n - 1) * c[i] * c[i] / double(T);
        }
    QuadraticGd map(A, alpha);
    for (Index C : {1, 10, 100}) {  // checkpoint spacing must not matter
        const UnrolledResult r = unrolled_response(map, theta0, 0, T, C);
        EXPECT_LT(relative_error(r.derivative, exact), 1e-10) << "C = " << C;
    }
    // FAR with u = 0 and W = 0 over the same steps is the same derivative: its shadowing part
    // is the unrolled one (no unstable directions to remove).
    FarOptions o;
    o.unstable = 0, o.window = 0, o.segment = 19, o.segments = 3;
    const FarResult f = far_response(map, theta0, 0, o);
    EXPECT_LT(relative_error(f.shadowing, exact), 1e-10);
    EXPECT_EQ(f.unstable, 0.0);
}

// The unrolled adjoint of a chaotic map grows like exp(lambda_1 (T - n)): on the cat map
// lambda_1 = ln phi^2 = 0.9624 exactly; the least-squares slope over 40 steps is within 2 %
// (the added grad Phi terms bend the first few steps only).
TEST(Response, UnrolledAdjointGrowsAtTheTopExponentOnCatMap) {
    CatMap map(false);
    const UnrolledResult r = unrolled_response(map, Vector{{0.1234, 0.5678}}, 0, 40, 7);
    const double lambda1 = std::log((3 + std::sqrt(5.0)) / 2);
    EXPECT_NEAR(r.growth_rate, lambda1, 0.02 * lambda1);
    EXPECT_NEAR(r.mean_log_growth, lambda1, 0.02 * lambda1);
    EXPECT_EQ(r.mean_log_growth, mean_log_growth(r.adjoint_norm));
    EXPECT_GT(std::abs(r.derivative), 1e10);  // it says nothing about -10 pi
}

// The burn-in estimate of U against exact exponents. GD on a quadratic A = V diag(a) V^T with
// alpha = 1: J = I - A is constant, exponents ln|1 - a_i| = ln 1.5, ln 1.2, ln 0.8, ln 0.6 (then
// ln 0.1, ln 0.05); after the 50 warm-up steps the nested subspaces are aligned to
// (0.6/0.8)^50 ~ 6e-7 or better, and that error decays further over the 150 counted steps, so
// the counted exponents are exact to about 1e-8 (tolerance 1e-6). U = 2. The cat map: ln phi^2 and
// -ln phi^2 (its 2 vectors span the plane: the sum of the exponents is ln det A = 0), U = 1.
TEST(Response, BurnInCountsTheUnstableDimension) {
    std::mt19937_64 gen(11);
    std::normal_distribution<double> N01;
    Matrix B(6, 6);
    for (Index i = 0; i < B.size(); ++i) B.data()[i] = N01(gen);
    const Matrix V = Eigen::HouseholderQR<Matrix>(B).householderQ();
    const Vector a{{2.5, 2.2, 1.05, 1.8, 1.6, 0.9}};  // 1 - a: -1.5, -1.2, -0.05, -0.8, -0.6, 0.1
    const Matrix A = V * a.asDiagonal() * V.transpose();
    QuadraticGd quad(A, 1.0);
    BurnInOptions o;
    o.vectors = 4, o.steps = 200, o.warmup = 50, o.qr_every = 10;
    const UnstableEstimate q = estimate_unstable_dim(quad, Vector::Constant(6, 1e-3), 0, o);
    EXPECT_EQ(q.unstable, 2);
    const Vector exact{{std::log(1.5), std::log(1.2), std::log(0.8), std::log(0.6)}};
    for (Index i = 0; i < 4; ++i) EXPECT_NEAR(q.exponents[i], exact[i], 1e-6) << i;

    CatMap cat(false);
    o.vectors = 2, o.steps = 100, o.warmup = 20, o.qr_every = 5;
    const UnstableEstimate c = estimate_unstable_dim(cat, Vector{{0.1234, 0.5678}}, 0, o);
    const double l1 = std::log((3 + std::sqrt(5.0)) / 2);
    EXPECT_EQ(c.unstable, 1);
    EXPECT_NEAR(c.exponents[0], l1, 1e-9);
    EXPECT_NEAR(c.exponents[1], -l1, 1e-9);
    o.warmup = 7;  // not a multiple of q
    EXPECT_THROW(estimate_unstable_dim(cat, Vector{{0.1, 0.2}}, 0, o), Error);
}

// An aligned start gives FAR's vectors the exact exponents of close directions (--align, issue 16).
// GD on a quadratic with J = I - A constant, 1 - a = 0.99, 0.98, 0.97, 0.5, 0.3, 0.1: exponents
// ln 0.99, ln 0.98, ... with gaps of 0.010 between the first three, so a random basis aligns like
// exp(-0.01 n). FAR with u = 2, W = 2 over N = 200 steps: from the random start its exponents are
// biased (the vectors still mix in the slower directions: off by 1.3e-3, measured), from a basis
// aligned over A = 3000 steps the residual mixing is exp(-0.010 * 3000) ~ 1e-13 and the exponents
// are exact up to rounding (sums of 20 logs: 1e-12; tolerance 1e-10; measured 2e-17). The
// unaligned error must stay above 1e-4 or the check would not show what the alignment does.
TEST(Response, AlignedBasisGivesFarTheExactExponentsOfCloseDirections) {
    std::mt19937_64 gen(7);
    std::normal_distribution<double> N01;
    Matrix B(6, 6);
    for (Index i = 0; i < B.size(); ++i) B.data()[i] = N01(gen);
    const Matrix V = Eigen::HouseholderQR<Matrix>(B).householderQ();
    const Vector j{{0.99, 0.98, 0.97, 0.5, 0.3, 0.1}};
    const Matrix A = V * (Vector::Ones(6) - j).asDiagonal() * V.transpose();
    QuadraticGd map(A, 1.0);
    const Vector x{{0.3, -0.2, 0.5, 0.1, -0.4, 0.25}};
    const Vector exact{{std::log(0.99), std::log(0.98)}};
    FarOptions o;
    o.unstable = 2, o.segment = 10, o.window = 2, o.segments = 20, o.seed = 5;
    const FarResult random = far_response(map, x, 0, o);
    const Index Aa = 3000;
    const AlignedBasis al = align_tangent_basis(map, x, 0, Aa, 2, 10, o.seed);
    o.initial_basis = al.basis;
    const FarResult aligned = far_response(map, al.end, Aa, o);
    const double err_random = (random.exponents - exact).cwiseAbs().maxCoeff();
    const double err_aligned = (aligned.exponents - exact).cwiseAbs().maxCoeff();
    std::printf(
        "quadratic, exponents %.8f %.8f: random start %.8f %.8f (error %.2e), aligned over %lld steps "
        "%.12f %.12f (error %.2e); over the alignment itself %.6f %.6f\n",
        exact[0], exact[1], random.exponents[0], random.exponents[1], err_random, (long long)Aa, aligned.exponents[0],
        aligned.exponents[1], err_aligned, al.exponents[0], al.exponents[1]);
    EXPECT_LT(err_aligned, 1e-10);
    EXPECT_GT(err_random, 1e-4);
    // The alignment's own exponents count its transient (about ln(component) / A ~ 1e-3 / 3).
    EXPECT_NEAR(al.exponents[0], exact[0], 1e-3);
    EXPECT_NEAR(al.exponents[1], exact[1], 1e-3);
    // The basis is orthonormal and the wrong shape is refused.
    EXPECT_LT((al.basis.transpose() * al.basis - Matrix::Identity(2, 2)).norm(), 1e-14);
    o.initial_basis = Matrix::Identity(6, 3);
    EXPECT_THROW(far_response(map, x, 0, o), Error);
}

// ------------------------------------------------------------------------------------------
// Kernel differentiation of the noisy map x' = f(x) + sigma xi against exact answers.

namespace {

/// x' = A x + gamma b (+ sigma xi), Phi = c . x: d<Phi>/d gamma = c^T (I - A)^{-1} b, and the
/// w-th term of the kernel sum is c^T A^{w-1} b (x_{n+w} holds A^{w-1} sigma xi_n).
class LinearMap : public ResponseMap {
public:
    LinearMap(const Matrix& A, const Vector& b, const Vector& c, double gamma) : m_A(A), m_b(b), m_c(c), m_g(gamma) {}
    Index dim() const override { return m_A.rows(); }
    void at(Index, const Vector& x) override { m_x = x; }
    Vector next() override { return m_A * m_x + m_g * m_b; }
    double phi() override { return m_c.dot(m_x); }
    Vector grad_phi() override { return m_c; }
    void jacobian(const Matrix& V, Matrix& JV) override { JV = m_A * V; }
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { JtW = m_A.transpose() * W; }
    Vector param_derivative() override { return m_b; }
    double param_derivative_trace(const Matrix&, const Matrix&, const Matrix&) override { return 0; }
    Vector second_derivative(const Matrix&, const Matrix&) override { return Vector::Zero(dim()); }

private:
    Matrix m_A;
    Vector m_b, m_c, m_x;
    double m_g;
};

struct LinearCase {
    Matrix A{{0.5, 0.2, 0.0}, {-0.1, 0.3, 0.2}, {0.1, 0.0, -0.4}};  // spectral radius < 0.6
    Vector b{{1.0, -0.5, 0.3}}, c{{0.7, 1.0, -0.2}};
    double exact() const { return c.dot((Matrix::Identity(3, 3) - A).lu().solve(b)); }
};

}  // namespace

// W = 30: the truncated tail c^T A^30 (I - A)^{-1} b is below 0.6^30 |c||b| / (1 - 0.6) ~ 1e-6.
// The estimator's variance does not depend on sigma here (Var(c.x) ~ sigma^2 cancels 1/sigma^2).
TEST(Response, KernelMatchesTheLinearGaussianSystemWithHonestErrors) {
    const LinearCase L;
    const double rho = L.A.eigenvalues().cwiseAbs().maxCoeff();
    ASSERT_LT(rho, 0.6);
    KernelOptions o;
    o.steps = 20000, o.burn_in = 50, o.window = 30, o.sigma = 0.1;
    const int seeds = 16;
    Vector d(seeds), se(seeds);
    Vector per_w = Vector::Zero(o.window), per_w_sq = Vector::Zero(o.window);
    for (int k = 0; k < seeds; ++k) {
        LinearMap map(L.A, L.b, L.c, 0.0);
        o.seed = 1000 + k;
        const KernelResult r = kernel_response(map, Vector::Zero(3), 0, o);
        d[k] = r.derivative, se[k] = r.stderr_;
        per_w += r.contribution / seeds;
        per_w_sq += r.contribution.cwiseAbs2() / seeds;
    }
    const double mean = d.mean(), sd = std::sqrt((d.array() - mean).square().sum() / (seeds - 1));
    std::printf("linear: kernel %.4f (16 seeds, sd %.4f, mean stated stderr %.4f), exact %.4f\n", mean, sd, se.mean(),
                L.exact());
    // The mean of 16 within 4 of its standard errors (a sign error gives -exact, 2 * 1.6 away).
    EXPECT_NEAR(mean, L.exact(), 4 * sd / std::sqrt(double(seeds)));
    // Each run within 5 of its own stated error (t with 9 degrees of freedom: P(|t| > 5) ~ 7e-4), and the stated error honest: the spread over
    // seeds over the mean stated error is 1 +- ~0.25 (10 batch means, 16 seeds); [0.6, 1.6].
    for (int k = 0; k < seeds; ++k) EXPECT_NEAR(d[k], L.exact(), 5 * se[k]) << "seed " << 1000 + k;
    EXPECT_GT(sd / se.mean(), 0.6);
    EXPECT_LT(sd / se.mean(), 1.6);
    // The terms: w = 1 is c^T b (an index off by one would give c^T A b).
    Matrix Aw = Matrix::Identity(3, 3);
    for (Index w = 1; w <= 5; ++w) {
        const double exact_w = L.c.dot(Aw * L.b), sd_w = std::sqrt(per_w_sq[w - 1] - per_w[w - 1] * per_w[w - 1]);
        EXPECT_NEAR(per_w[w - 1], exact_w, 4 * sd_w / std::sqrt(double(seeds - 1)) + 1e-12) << "w = " << w;
        Aw = L.A * Aw;
    }
}

// The noisy finite differences with common noise: for a linear map the noise cancels in the
// quotient, which is then the exact derivative of the T-step average from x_0 = 0,
// c^T mean_{n=B+1..T} (I - A^n)(I - A)^{-1} b: within 1e-12 of that, and within 1 / (T (1 - rho)) of exact.
TEST(Response, NoisyFiniteDifferencesShareTheNoise) {
    const LinearCase L;
    KernelOptions o;
    o.steps = 2000, o.burn_in = 0, o.window = 1, o.sigma = 0.3, o.seed = 5;
    const double H = 1e-3;
    LinearMap plus(L.A, L.b, L.c, H), minus(L.A, L.b, L.c, -H);
    const double q =
        (noisy_average(plus, Vector::Zero(3), 0, o) - noisy_average(minus, Vector::Zero(3), 0, o)) / (2 * H);
    const Matrix IA = Matrix::Identity(3, 3) - L.A;
    Matrix An = Matrix::Identity(3, 3);
    double finite_T = 0;
    for (Index n = 1; n <= o.steps; ++n) {
        An = L.A * An;
        finite_T += L.c.dot((Matrix::Identity(3, 3) - An) * IA.lu().solve(L.b)) / double(o.steps);
    }
    EXPECT_NEAR(q, finite_T, 1e-9);
    EXPECT_NEAR(q, L.exact(), 1.0 / (o.steps * 0.4));
}

// x' = 3x + gamma sin 6 pi x + sigma xi mod 1, Phi = cos 2 pi x at gamma = 0. The noise multiplies
// Fourier mode k by g_k = exp(-2 pi^2 k^2 sigma^2) each step; the transfer operator of 3x sends
// mode 3j to mode j and kills the others. The perturbation -d/dx L(X) = -2 pi cos 2 pi x, then the
// noise: d<Phi>/d gamma = -pi g_1 exactly, all of it at w = 1 (mode 1 dies in the next step).
// sigma = 0.1: -pi e^{-0.197} = -2.580 against the noiseless -pi (bias pi (1 - g_1) <= 2 pi^3 sigma^2 = 0.62).
TEST(Response, KernelMatchesTheNoisyThreeXMap) {
    KernelOptions o;
    o.steps = 100000, o.burn_in = 10, o.window = 3, o.sigma = 0.1, o.seed = 3;
    ThreeXMap map;
    const KernelResult r = kernel_response(map, Vector::Constant(1, 0.1234), 0, o);
    const double noisy = -kPi * std::exp(-2 * kPi * kPi * o.sigma * o.sigma);
    std::printf(
        "3x map, sigma %.2f: kernel %.4f +- %.4f, exact (noisy) %.4f, noiseless %.4f; w = 1..3: %.4f %.4f %.4f\n",
        o.sigma, r.derivative, r.stderr_, noisy, -kPi, r.contribution[0], r.contribution[1], r.contribution[2]);
    // Tolerance 4 stated errors (measured 0.03: a sign error is 170 of them away).
    EXPECT_NEAR(r.derivative, noisy, 4 * r.stderr_);
    EXPECT_LT(r.stderr_, 0.06);
    // Against the noiseless truth: the exact bias bound plus the statistics.
    EXPECT_NEAR(r.derivative, -kPi, 2 * std::pow(kPi, 3) * o.sigma * o.sigma + 4 * r.stderr_);
    // w = 2, 3 are zero in expectation (sd per term ~ 0.5 / sigma / sqrt(T) = 0.016).
    EXPECT_NEAR(r.contribution[1], 0, 0.07);
    EXPECT_NEAR(r.contribution[2], 0, 0.07);
}

TEST(Response, KernelStoppedAndContinuedGivesTheBitsOfOnePass) {
    const LinearCase L;
    KernelOptions o;
    o.steps = 1000, o.window = 7, o.sigma = 0.2, o.seed = 9, o.burn_in = 3;
    LinearMap map(L.A, L.b, L.c, 0.0);
    const KernelResult one = kernel_response(map, Vector::Ones(3), 0, o);
    KernelState st;
    int stops = 0;
    KernelResult r;
    do {
        int calls = 0;  // stop at the 3rd checkpoint of each piece (every 50 steps)
        r = kernel_response(
            map, Vector::Ones(3), 0, o, {}, &st, [&](const KernelState&) { return ++calls < 3; }, 50);
        stops += !r.finished;
    } while (!r.finished);
    EXPECT_GT(stops, 3);
    EXPECT_EQ(r.derivative, one.derivative);
    EXPECT_EQ(r.stderr_, one.stderr_);
    EXPECT_EQ(r.contribution, one.contribution);
    for (double bad : {0.0, -1.0, std::nan(""), double(INFINITY)}) {
        KernelOptions b = o;
        b.sigma = bad;
        EXPECT_THROW(kernel_response(map, Vector::Ones(3), 0, b), Error);
    }
    KernelOptions b = o;
    b.window = 0;
    EXPECT_THROW(kernel_response(map, Vector::Ones(3), 0, b), Error);
}

// ------------------------------------------------------------------------------------------
// The gradient-descent map of a small tanh softmax-CE network with weight decay, each piece
// against central differences (h = 1e-5 on smooth functions of O(1): truncation ~1e-10,
// rounding ~1e-11, so 1e-7 relative leaves two orders of margin).

namespace {

struct NetCase {
    Problem p;
    Dataset train, test;
    double alpha = 0.7, lambda = 0.01;
};

NetCase net_case() {
    const Architecture arch = Architecture::parse("5-4-3", Activation::Tanh, Output::SoftmaxCE);
    NetCase c{random_problem(arch, 20, 3), {}, {}};
    c.train = Dataset{"train", c.p.X, c.p.T};
    const Problem q = random_problem(arch, 15, 4);
    c.test = Dataset{"test", q.X, q.T};
    return c;
}

Vector step_of(const NetCase& c, double alpha, double lambda, const Vector& theta) {
    GradientDescentMap m(c.p.arch, c.train, alpha, lambda, ResponseParam::LearningRate, Observable::Loss);
    m.at(0, theta);
    return m.next();
}

}  // namespace

TEST(ResponseNetwork, PiecesMatchFiniteDifferences) {
    const NetCase c = net_case();
    const Vector& theta = c.p.theta;
    const Index P = theta.size();
    for (ResponseParam param : {ResponseParam::LearningRate, ResponseParam::WeightDecay})
        for (Observable obs : {Observable::Loss, Observable::TestLoss}) {
            GradientDescentMap m(c.p.arch, c.train, c.alpha, c.lambda, param, obs, &c.test);
            auto f = [&](const Vector& th) { return step_of(c, c.alpha, c.lambda, th); };
            const Matrix Jfd = central_jacobian(f, theta);
            m.at(0, theta);
            Matrix J;
            m.jacobian(Matrix::Identity(P, P), J);
            EXPECT_LT(relative_error(J, Jfd), 1e-7);
            // X = d f / d gamma
            const double h = 1e-5;
            const Vector Xfd =
                param == ResponseParam::LearningRate
                    ? Vector((step_of(c, c.alpha + h, c.lambda, theta) - step_of(c, c.alpha - h, c.lambda, theta)) /
                             (2 * h))
                    : Vector((step_of(c, c.alpha, c.lambda + h, theta) - step_of(c, c.alpha, c.lambda - h, theta)) /
                             (2 * h));
            m.at(0, theta);
            EXPECT_LT(relative_error(m.param_derivative(), Xfd), 1e-7);
            // grad Phi
            auto phi = [&](const Vector& th) {
                GradientDescentMap q(c.p.arch, c.train, c.alpha, c.lambda, param, obs, &c.test);
                q.at(0, th);
                return q.phi();
            };
            m.at(0, theta);
            EXPECT_LT(relative_error(m.grad_phi(), central_gradient(phi, theta)), 1e-7);
            // sum_j eps_j . (dX) e_j against central differences of X(theta)
            std::mt19937_64 gen(8);
            std::normal_distribution<double> N01;
            Matrix e(P, 2), eps(P, 2);
            for (Index i = 0; i < e.size(); ++i) e.data()[i] = N01(gen), eps.data()[i] = N01(gen);
            auto X = [&](const Vector& th) {
                GradientDescentMap q(c.p.arch, c.train, c.alpha, c.lambda, param, obs, &c.test);
                q.at(0, th);
                return q.param_derivative();
            };
            const Matrix dX = central_jacobian(X, theta);
            m.at(0, theta);
            Matrix Je;
            m.jacobian(e, Je);
            const double trace = m.param_derivative_trace(e, Je, eps);
            EXPECT_LT(relative_error(trace, eps.cwiseProduct(dX * e).sum()), 1e-7);
        }
}

// omega = sum_j D^2 f[e_j, .]^T eps_j, by central differences of HVPs along e_j with step h.
// Truth: the gradient of s(theta) = sum_j eps_j^T J(theta) e_j (exact HVPs), by coordinate-wise
// central differences with Richardson extrapolation (steps 1e-3, 5e-4: error O(h^4) ~ 1e-12).
// The error of omega against h is printed; h = 1e-5 is the step the map uses (truncation
// h^2 |D^5| against rounding eps_mach |H eps| / h: the optimum is near eps_mach^(1/3) ~ 5e-6
// times the scale on which H varies, which is O(1) in theta for these networks).
TEST(ResponseNetwork, SecondDerivativeTermMatchesFiniteDifferences) {
    const NetCase c = net_case();
    const Vector& theta = c.p.theta;
    const Index P = theta.size();
    std::mt19937_64 gen(9);
    std::normal_distribution<double> N01;
    Matrix e(P, 3), eps(P, 3);
    for (Index i = 0; i < e.size(); ++i) e.data()[i] = N01(gen), eps.data()[i] = N01(gen);
    e.col(1) *= 30;  // tangent vectors grow within a segment: the step is along the unit vector
    GradientDescentMap m(c.p.arch, c.train, c.alpha, c.lambda, ResponseParam::LearningRate, Observable::Loss);
    auto s = [&](const Vector& th) {
        m.at(0, th);
        Matrix Je;
        m.jacobian(e, Je);
        return eps.cwiseProduct(Je).sum();
    };
    const Vector g1 = central_gradient(s, theta, 1e-3), g2 = central_gradient(s, theta, 5e-4);
    const Vector truth = (4 * g2 - g1) / 3;
    // the default: exact, the third-order R-operator (its error is the truth's own, O(h^4) + rounding)
    m.at(0, theta);
    const double err_exact = relative_error(m.second_derivative(e, eps), truth);
    std::printf("second-derivative term, third-order R-operator: relative error %.2e\n", err_exact);
    EXPECT_LT(err_exact, 1e-9);
    EXPECT_EQ(m.third_order_products(), 3);
    // central differences of HVPs (older passes)
    m.set_second_derivative(SecondDerivative::Differences);
    double err_at_default = 0;
    for (double h : {1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7}) {
        m.set_difference_step(h);
        m.at(0, theta);
        const double err = relative_error(m.second_derivative(e, eps), truth);
        std::printf("second-derivative term, step %g: relative error %.2e\n", h, err);
        if (h == 1e-5) err_at_default = err;
    }
    // measured: 3e-5, 3e-7, 3e-9, 4e-11, 2e-10, 2e-9 for h = 1e-2 .. 1e-7 (h^2 until rounding takes over)
    EXPECT_LT(err_at_default, 1e-9);
}

// The forward phase keeps the states and tangent blocks of its last segments so that the adjoint
// need not recompute them. Truth: the recomputing pass (keep_bytes 0), whose states and tangents
// are the same operations on the same inputs, so every number must agree to the bit; and the
// counts: keeping a segment saves exactly its m state updates and m u Jacobian products.
TEST(ResponseNetwork, KeptSegmentsGiveTheBitsOfRecomputedOnes) {
    const NetCase c = net_case();
    FarOptions o;
    o.unstable = 2, o.segment = 5, o.window = 3, o.segments = 6;
    const double segment_bytes = 8.0 * (o.segment + 1) * (o.unstable + 2) * double(c.p.theta.size());
    struct Pass {
        FarResult r;
        Index hvps, gradients, revisits, third;
    };
    auto pass = [&](double keep_bytes) {
        GradientDescentMap m(c.p.arch, c.train, c.alpha, c.lambda, ResponseParam::LearningRate, Observable::Loss);
        FarOptions k = o;
        k.keep_bytes = keep_bytes;
        const FarResult r = far_response(m, c.p.theta, 0, k);
        return Pass{r, m.hvps(), m.gradients(), m.revisits(), m.third_order_products()};
    };
    const Pass none = pass(0), some = pass(2.5 * segment_bytes), all = pass(1e12);
    EXPECT_EQ(none.r.recomputed, 6);
    EXPECT_EQ(some.r.recomputed, 4);
    EXPECT_EQ(all.r.recomputed, 0);
    for (const Pass* q : {&some, &all}) {
        EXPECT_EQ(q->r.derivative, none.r.derivative);
        EXPECT_EQ(q->r.shadowing, none.r.shadowing);
        EXPECT_EQ(q->r.unstable, none.r.unstable);
        EXPECT_EQ(q->r.segment_shadowing, none.r.segment_shadowing);
        EXPECT_EQ(q->r.segment_unstable, none.r.segment_unstable);
        EXPECT_EQ(q->r.exponents, none.r.exponents);
        const Index saved = none.r.recomputed - q->r.recomputed;
        EXPECT_EQ(none.hvps - q->hvps, saved * o.segment * o.unstable);
        EXPECT_EQ(none.gradients - q->gradients, saved * o.segment);
        EXPECT_EQ(q->revisits, none.revisits);
    }
    // All kept: per step one evaluation with its gradient (forward) and one revisit with the kept
    // gradient (adjoint: the forward pass alone), u + 2 HVPs (J e forward, J^T nu', J^T nu~') and
    // u third-order passes (omega, and J^T eps from the same pass), plus the u HVPs of the first W
    // steps and one evaluation at each of the 2W + 2 extra states.
    const Index N = o.segment * o.segments, u = o.unstable, W = o.window;
    EXPECT_EQ(all.hvps, N * (u + 2) + W * u);
    EXPECT_EQ(all.third, N * u);
    EXPECT_EQ(all.gradients, N + 2 * W + 2);
    EXPECT_EQ(all.revisits, N);
    std::printf("FAR on 5-4-3, u = 2: %.4f (kept or recomputed: the same bits)\n", all.r.derivative);
}

// The adjoint revisits each state with the gradient the forward phase computed there (memo,
// revisit): the forward pass alone, no gradient product. Truth: the same map with the memo
// hidden, which evaluates every state afresh (at), so every number must agree to the bit, for
// FAR (kept and recomputed segments, omega by the R-operator and by differences, test loss)
// and for the unrolled adjoint.
namespace {
class NoMemo : public ResponseMap {
public:
    /// joint = false: J^T eps by its own product, not from the map's pass for omega
    explicit NoMemo(ResponseMap& m, bool joint = true) : m_(m), joint_(joint) {}
    Index dim() const override { return m_.dim(); }
    void at(Index n, const Vector& x) override { m_.at(n, x); }
    Vector next() override { return m_.next(); }
    double phi() override { return m_.phi(); }
    Vector grad_phi() override { return m_.grad_phi(); }
    void jacobian(const Matrix& V, Matrix& JV) override { m_.jacobian(V, JV); }
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { m_.jacobian_transpose(W, JtW); }
    Vector param_derivative() override { return m_.param_derivative(); }
    double param_derivative_trace(const Matrix& e, const Matrix& Je, const Matrix& eps) override {
        return m_.param_derivative_trace(e, Je, eps);
    }
    Vector second_derivative(const Matrix& e, const Matrix& eps) override { return m_.second_derivative(e, eps); }
    Vector second_derivative(const Matrix& e, const Matrix& eps, Matrix& JtEps) override {
        return joint_ ? m_.second_derivative(e, eps, JtEps) : ResponseMap::second_derivative(e, eps, JtEps);
    }
    void project(Matrix& V) const override { m_.project(V); }

private:
    ResponseMap& m_;
    bool joint_;
};
}  // namespace

TEST(ResponseNetwork, RevisitWithTheKeptGradientGivesTheBitsOfAFreshEvaluation) {
    const NetCase c = net_case();
    FarOptions o;
    o.unstable = 2, o.segment = 4, o.window = 2, o.segments = 5;
    const double segment_bytes = 8.0 * (o.segment + 1) * (o.unstable + 2) * double(c.p.theta.size());
    for (ResponseParam param : {ResponseParam::LearningRate, ResponseParam::WeightDecay})
        for (Observable obs : {Observable::Loss, Observable::TestLoss})
            for (SecondDerivative sd : {SecondDerivative::ROperator, SecondDerivative::Differences}) {
                auto gd = [&] {
                    auto m =
                        std::make_unique<GradientDescentMap>(c.p.arch, c.train, c.alpha, c.lambda, param, obs, &c.test);
                    m->set_second_derivative(sd);
                    return m;
                };
                FarOptions k = o;
                k.keep_bytes = 2.5 * segment_bytes;  // 2 segments kept, 3 recomputed
                auto memo = gd(), fresh = gd();
                NoMemo plain(*fresh);
                const FarResult a = far_response(*memo, c.p.theta, 0, k);
                const FarResult b = far_response(plain, c.p.theta, 0, k);
                ASSERT_EQ(a.recomputed, 3);
                EXPECT_EQ(a.derivative, b.derivative);
                EXPECT_EQ(a.shadowing, b.shadowing);
                EXPECT_EQ(a.unstable, b.unstable);
                EXPECT_EQ(a.segment_shadowing, b.segment_shadowing);
                EXPECT_EQ(a.segment_unstable, b.segment_unstable);
                EXPECT_EQ(memo->revisits(), o.segment * o.segments);
                EXPECT_EQ(fresh->revisits(), 0);
                EXPECT_EQ(fresh->gradients() - memo->gradients(), o.segment * o.segments);
                // Unrolled, 23 steps in checkpoints of 5: all but the last state of each revisited.
                auto um = gd(), uf = gd();
                NoMemo uplain(*uf);
                const UnrolledResult ua = unrolled_response(*um, c.p.theta, 0, 23, 5);
                const UnrolledResult ub = unrolled_response(uplain, c.p.theta, 0, 23, 5);
                EXPECT_EQ(ua.derivative, ub.derivative);
                EXPECT_EQ(ua.adjoint_norm, ub.adjoint_norm);
                EXPECT_EQ(um->revisits(), 23 - 5);
            }
}

// FAR's adjoint takes J^T eps from the third-order pass that gives omega. Truth: the same pass
// with J^T eps by its own block HVP, the path the exact test problems check. The two H eps agree
// to rounding (ThirdOrder.HessianProductsFromTheSamePassEqualTheBlockProduct, 1e-13), so the
// results must agree to rounding carried through 30 steps of QR and solves: 1e-10 relative.
TEST(ResponseNetwork, JacobianTransposeFromTheThirdOrderPassGivesTheSeparateProductsResult) {
    const NetCase c = net_case();
    FarOptions o;
    o.unstable = 2, o.segment = 5, o.window = 3, o.segments = 6;
    for (ResponseParam param : {ResponseParam::LearningRate, ResponseParam::WeightDecay}) {
        GradientDescentMap joint(c.p.arch, c.train, c.alpha, c.lambda, param, Observable::Loss);
        GradientDescentMap m(c.p.arch, c.train, c.alpha, c.lambda, param, Observable::Loss);
        NoMemo separate(m, false);
        const FarResult a = far_response(joint, c.p.theta, 0, o);
        const FarResult b = far_response(separate, c.p.theta, 0, o);
        EXPECT_EQ(joint.hvps() + o.segment * o.segments * o.unstable, m.hvps());
        EXPECT_NE(a.unstable, 0.0);
        EXPECT_LT(std::abs(a.derivative - b.derivative), 1e-10 * std::abs(b.derivative)) << to_string(param);
        EXPECT_LT(std::abs(a.shadowing - b.shadowing), 1e-10 * std::abs(b.shadowing)) << to_string(param);
        EXPECT_LT(std::abs(a.unstable - b.unstable), 1e-10 * std::abs(b.unstable)) << to_string(param);
        std::printf("%s: joint %.17g, separate %.17g\n", to_string(param).c_str(), a.derivative, b.derivative);
    }
}

// A FAR pass stopped after every few segments and continued from its state, each part with a new
// map (as a new process would), gives the bits of one uninterrupted pass.
TEST(ResponseNetwork, StoppedAndContinuedFarGivesTheBitsOfOnePass) {
    const NetCase c = net_case();
    FarOptions o;
    o.unstable = 2, o.segment = 5, o.window = 3, o.segments = 6;
    auto map = [&] {
        return GradientDescentMap(c.p.arch, c.train, c.alpha, c.lambda, ResponseParam::LearningRate, Observable::Loss);
    };
    for (bool unstable_part : {true, false}) {
        o.unstable_part = unstable_part;
        auto whole_map = map();
        const FarResult whole = far_response(whole_map, c.p.theta, 0, o);
        FarState state;
        FarResult r;
        int parts = 0;
        do {
            auto m = map();
            Index calls = 0;
            r = far_response(m, c.p.theta, 0, o, {}, &state, [&](const FarState&) { return ++calls < 3; });
            ++parts;
        } while (!r.finished && parts < 100);
        EXPECT_EQ(parts, 5);  // 2K + 2 = 14 segment calls, 3 per part (the third stops)
        EXPECT_EQ(r.derivative, whole.derivative);
        EXPECT_EQ(r.shadowing, whole.shadowing);
        EXPECT_EQ(r.segment_shadowing, whole.segment_shadowing);
        EXPECT_EQ(r.segment_unstable, whole.segment_unstable);
        EXPECT_EQ(r.exponents, whole.exponents);
    }
}

// The aligned basis is the random basis carried to FAR's x_0: aligning over A = 30 steps and
// then running FAR from there (W = 0, QR every 5 steps on the same schedule) gives the vectors'
// log growth of one alignment over A + N = 60 steps. The product of the R factors does not depend
// on where it is cut, so the sums agree to rounding (1e-12); a basis taken at another state, not
// carried, or left unused would change them at O(1e-2) on this map.
TEST(ResponseNetwork, AlignedBasisIsTheRandomBasisCarriedToTheWindow) {
    const NetCase c = net_case();
    auto map = [&] {
        return GradientDescentMap(c.p.arch, c.train, c.alpha, c.lambda, ResponseParam::LearningRate, Observable::Loss);
    };
    auto m1 = map(), m2 = map(), m3 = map();
    const AlignedBasis a = align_tangent_basis(m1, c.p.theta, 0, 30, 2, 5, 3);
    const AlignedBasis whole = align_tangent_basis(m2, c.p.theta, 0, 60, 2, 5, 3);
    FarOptions o;
    o.unstable = 2, o.segment = 5, o.window = 0, o.segments = 6, o.seed = 3;
    o.initial_basis = a.basis;
    const FarResult f = far_response(m3, a.end, 30, o);
    const Vector joined = (30 * a.exponents + 30 * f.exponents) / 60;
    std::printf("5-4-3: exponents over 60 steps %.10f %.10f, joined %.10f %.10f; FAR window alone %.6f %.6f\n",
                whole.exponents[0], whole.exponents[1], joined[0], joined[1], f.exponents[0], f.exponents[1]);
    EXPECT_LT((joined - whole.exponents).cwiseAbs().maxCoeff(), 1e-12);
    o.initial_basis = Matrix();  // the random start at x_0 instead: other exponents
    auto m4 = map();
    const FarResult r = far_response(m4, a.end, 30, o);
    EXPECT_GT((r.exponents - f.exponents).cwiseAbs().maxCoeff(), 1e-6);
}

// Softmax-CE is invariant under adding one constant to the class weights of a hidden unit or to
// b_L: h + 1 = 5 directions with grad L . v = 0 and H v = lambda v (weight decay only), so
// J v = (1 - alpha lambda) v to rounding (1e-12); project() removes exactly them.
TEST(ResponseNetwork, NeutralDirectionsAreInvariantAndProjectedOut) {
    const NetCase c = net_case();
    const Matrix Nd = neutral_directions(c.p.arch);
    ASSERT_EQ(Nd.cols(), 5);
    EXPECT_LT((Nd.transpose() * Nd - Matrix::Identity(5, 5)).norm(), 1e-14);
    GradientDescentMap m(c.p.arch, c.train, c.alpha, c.lambda, ResponseParam::LearningRate, Observable::Loss);
    m.at(0, c.p.theta);
    Matrix JN;
    m.jacobian(Nd, JN);
    EXPECT_LT((JN - (1 - c.alpha * c.lambda) * Nd).norm(), 1e-12);
    EXPECT_LT((Nd.transpose() * m.grad_phi()).norm(), 1e-12);
    Matrix V = Matrix::Random(c.p.theta.size(), 3);
    m.project(V);
    EXPECT_LT((Nd.transpose() * V).norm(), 1e-13);
    Matrix V2 = V;
    m.project(V2);
    EXPECT_LT((V2 - V).norm(), 1e-15 * V.norm());  // a projection (to rounding)
}

// ------------------------------------------------------------------------------------------
// tdyn response on a small chaotic network: 10-8-3 tanh softmax-CE on 200 samples, alpha 1.5,
// weight decay 0.01 (loss ~0.6 and stationary, top exponent 0.051 +- 0.008 over 20000 steps, a second
// ~0.004, the rest near 0), steps 200..1000.

namespace {

std::string chaotic_run(int steps = 1000) {
    const std::string data = temp_path("resp-data.h5"), run = temp_path("resp-run.h5");
    write_data_file(data, 200, 10, 3, 4);
    const auto r =
        run_tdyn("train --data " + data + " --arch 10-8-3 --activation tanh --lr 1.5 --weight-decay 0.01 --steps " +
                 std::to_string(steps) + " --quiet --out " + run);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return run;
}

/// `tdyn response RUN ARGS --stop-after UNITS` run again and again while it stops (exit 130), at
/// most max_parts times; after part p (1-based) calls between(p) if given. Returns the last run
/// and how many ran.
std::pair<Command, int> respond_in_parts(const std::string& run, const std::string& args, int units, int max_parts,
                                         const std::function<void(int)>& between = {}) {
    Command r;
    int parts = 0;
    do {
        r = run_tdyn("response " + run + args + " --stop-after " + std::to_string(units));
        ++parts;
        if (between) between(parts);
    } while (r.exit_code == 130 && parts < max_parts);
    return {r, parts};
}

/// `tdyn response RUN OTHER --quiet` on an unfinished pass: exit 1, one line holding `message`,
/// the file byte for byte as it was.
void expect_refused(const std::string& run, const std::string& other, const std::string& message) {
    const std::string before = slurp(run);
    const auto r = run_tdyn("response " + run + " " + other + " --quiet");
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(slurp(run), before);
}

}  // namespace

// The unrolled adjoint grows like exp(lambda_1 (T - n)): over steps 200..4200 its mean log growth
// per step, (ln |lambda_0| - ln |lambda_T|) / T, is within 10 % of the top exponent that tdyn
// lyapunov measures over the same steps. Both are the growth of the same product of Jacobians
// (J is symmetric); they differ by what happens at the window's ends, where the adjoint and the
// tangent vector align: a fixed offset of a few nats, so the relative difference falls like
// 1 / (lambda_1 T). On 6 trajectories of this map (seeds 0-5, 2026-11-29) it was +0.9 % to +4.7 %
// over 2000 steps, +0.8 % to +2.3 % over 4000, and -2 % to +12 % over 800. On the trajectory of
// another machine's rounding (AMD EPYC, -march=native, 2026-11-30) the window 200..2200 was a
// quiet stretch (lambda_1 0.0203 against 0.048 over the next 6000 steps) and the difference was
// +10.5 % (4.3 nats); over 200..4200 +2.8 %, over the 2000-step windows after it +1.7 % to +3.4 %
// (1.6-3.4 nats). Hence the 4000-step window: one 2000-step window is not long enough to hold
// 10 % on every trajectory. The least-squares slope (growth_rate) is not the estimate to compare:
// the growth comes in bursts, which the fit weights by where they fall; it was 8-17 % below
// lambda_1 on the same windows, and within 10 % on only 12 of 26 trajectories over 800 steps
// (docs/RESPONSE.md, "The small chaotic case").
// FAR against the finite-difference ensemble (16 pairs, H = 1e-3) over steps 200..1000: within
// 3 combined standard errors. The map is not uniformly hyperbolic (exponents near 0), so FAR's
// unstable part has a large variance (docs/RESPONSE.md); the check is what the issue asks, not
// tuned to pass; it held on 25 of 26 trajectories.
//
// The FAR numbers are of one chaotic trajectory, and chaos makes the trajectory depend on the
// rounding of the build. The sanitizer build (scripts/sanitize.sh: -O1, no -march=native, so no
// FMA) follows another trajectory of the same map, on which FAR gave -6.3 +- 7.9 against finite
// differences 0.23 +- 0.22 (measured 2026-11-29). There the commands run, so memory errors are
// still caught, but the FAR check is left to the Release build.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kOtherRounding = true;
#else
constexpr bool kOtherRounding = false;
#endif
TEST(ResponseCli, UnrolledExplodesAndFarAgreesWithFiniteDifferences) {
    const std::string run = chaotic_run(4200), copy = temp_path("resp-run-unrolled.h5");
    std::filesystem::copy_file(run, copy, std::filesystem::copy_options::overwrite_existing);
    // the unrolled adjoint over steps 200..4200 against lambda_1 of the same steps
    const auto ly = run_tdyn("lyapunov " + copy + " --vectors 1 --from 200 --json --quiet");
    ASSERT_EQ(ly.exit_code, 0) << ly.err;
    const double lambda1 = nlohmann::json::parse(ly.out)["exponents"][0].get<double>();
    const auto u = run_tdyn("response " + copy + " --param lr --from 200 --to 4200 --method unrolled --json --quiet");
    ASSERT_EQ(u.exit_code, 0) << u.err;
    const auto ju = nlohmann::json::parse(u.out)["unrolled"];
    const double growth = ju["mean_log_growth"];
    std::printf("steps 200..4200: lambda_1 %.4f, unrolled mean log growth %.4f (%+.1f %%), least-squares %.4f\n",
                lambda1, growth, 100 * (growth / lambda1 - 1), ju["growth_rate"].get<double>());
    ASSERT_GT(lambda1, 0);
    EXPECT_NEAR(growth, lambda1, 0.1 * lambda1);
    EXPECT_GT(ju["adjoint_norm_first"].get<double>(), 1e10);  // about exp(lambda_1 4000) / T: it says nothing

    // FAR and the finite-difference ensemble over steps 200..1000
    const auto r = run_tdyn("response " + run +
                            " --param lr --from 200 --to 1000 --unstable 2 --check-fd 1e-3 --ensemble 16 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    std::printf(
        "steps 200..1000: unrolled %.4g; FAR %.4f +- %.4f (shadowing %.4f, unstable %.4f); "
        "shadowing alone %.4f; finite differences %.4f +- %.4f\n",
        j["unrolled"]["derivative"].get<double>(), j["far"]["derivative"].get<double>(),
        j["far"]["stderr"].get<double>(), j["far"]["shadowing"].get<double>(), j["far"]["unstable"].get<double>(),
        j["shadowing"]["derivative"].get<double>(), j["fd_derivative"].get<double>(), j["fd_stderr"].get<double>());
    const double far = j["far"]["derivative"], se = j["far"]["stderr"], fd = j["fd_derivative"], fd_se = j["fd_stderr"];
    if (!kOtherRounding) {
        EXPECT_LT(std::abs(far - fd), 3 * std::hypot(se, fd_se));
    }
    // The results are in the run file.
    h5::File f = h5::File::open_read(run);
    EXPECT_EQ(f.attr_double("/response/lr/loss/far", "derivative"), far);
    EXPECT_EQ(f.attr_double("/response/lr/loss/fd", "fd_derivative"), fd);
    EXPECT_EQ(Index(f.read_vector("/response/lr/loss/unrolled/adjoint_norm").size()), 801);
}

// Without --unstable and without a /lyapunov group, U comes from a burn-in over the window's first
// B steps: the JSON and the run file say so, U is the number of positive burn-in exponents, and
// the top one agrees in sign with tdyn lyapunov over the same steps (0.04-0.1 on this run).
TEST(ResponseCli, UnstableDimensionFromABurnIn) {
    const std::string run = chaotic_run();
    const auto r =
        run_tdyn("response " + run + " --param lr --method shadowing --from 200 --to 400 --burn-in 100 --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["unstable_source"], "burn-in");
    const auto ex = j["burn_in_exponents"].get<std::vector<double>>();
    ASSERT_EQ(ex.size(), 8u);
    EXPECT_EQ(j["unstable_dim"].get<Index>(), std::count_if(ex.begin(), ex.end(), [](double x) { return x > 0; }));
    const auto ly = run_tdyn("lyapunov " + run + " --vectors 1 --from 200 --to 300 --json --quiet");
    ASSERT_EQ(ly.exit_code, 0) << ly.err;
    const double lambda1 = nlohmann::json::parse(ly.out)["exponents"][0].get<double>();
    EXPECT_GT(lambda1, 0);
    EXPECT_GT(*std::max_element(ex.begin(), ex.end()), 0);
    h5::File f = h5::File::open_read(run);
    EXPECT_EQ(f.attr_string("/response/lr/loss", "unstable_source"), "burn-in");
    EXPECT_EQ(Index(f.read_vector("/response/lr/loss/burn_in_exponents").size()), 8);
}

// Bad input: one line naming the flag, a non-zero exit, the run file untouched.
TEST(ResponseCli, BadInputNamesTheFlagAndLeavesTheFileAlone) {
    const std::string run = chaotic_run();
    const std::string before = slurp(run);
    for (const auto& [args, flag] : std::vector<std::pair<std::string, std::string>>{
             {"--param momentum", "--param"},
             {"--param lr --observable accuracy", "--observable"},
             {"--param lr --method magic", "--method"},
             {"--param lr --unstable 2 --window 300 --from 200 --to 600", "--window"},
             {"--param lr --from 900 --to 800", "--from"},
             {"--param lr --to 5000", "--to"},
             {"--param weight-decay --unstable 1 --check-fd 0.5", "--check-fd"},
             {"--param lr --unstable 1000", "--unstable"},
             {"--param lr --burn-in 5", "--burn-in"},  // no /lyapunov group: U from a burn-in
             {"--param lr --unstable 1 --tangent-memory -1", "--tangent-memory"},
             {"--param lr --unstable 1 --stop-after -2", "--stop-after"},
             {"--param lr --unstable 1 --from 200 --align 300", "--align"},  // before step 0
             {"--param lr --unstable 1 --align -1", "--align"},
             {"--param lr --method kernel", "--noise"},  // the kernel needs sigma > 0
             {"--param lr --method kernel --noise -1e-3", "--noise"},
             {"--param lr --method kernel --noise nan", "--noise"},
             {"--param lr --method kernel --noise inf", "--noise"},
             {"--param lr --method kernel --noise 1e-3 --window 0", "--window"},
             {"--param lr --method kernel --noise 1e-3 --noise-steps 12", "--noise-steps"},
             {"--param lr --method kernel --noise 1e-3 --noise-burn-in -1", "--noise-burn-in"},
         }) {
        const auto r = run_tdyn("response " + run + " " + args + " --quiet");
        EXPECT_EQ(r.exit_code, 1) << args;
        EXPECT_NE(r.err.find(flag), std::string::npos) << args << ": " << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    EXPECT_EQ(slurp(run), before);
}

// An interrupted pass continues where it stopped. `--stop-after 7` stops after 7 units of saved
// progress (FAR segments of either phase, finite-difference pairs); the same command run again
// continues, until it completes. Truth: the same command run once on a copy of the file; every
// number (JSON and run file) must agree to the bit, the run's own groups must be untouched. A
// different command on the unfinished pass fails with one line naming the flag; --force starts over.
TEST(ResponseCli, AnInterruptedPassContinuesToTheBitsOfOnePass) {
    const std::string run = chaotic_run(), whole = temp_path("resp-whole.h5");
    std::filesystem::copy_file(run, whole);
    const Vector loss_before = h5::File::open_read(run).read_vector("/trajectory/loss");
    const std::string args =
        " --param lr --method all --unstable 2 --from 200 --to 500 --check-fd 1e-3 --ensemble 4 --json";
    const auto one = run_tdyn("response " + whole + args);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const auto [r, parts] = respond_in_parts(run, args, 7, 20, [&](int part) {
        // The unfinished pass refuses another command, naming the flag, and is left as it was.
        if (part == 2)
            expect_refused(run,
                           "--param lr --method all --unstable 2 --from 200 --to 500 --check-fd 1e-3 --ensemble 4 "
                           "--window 5",
                           "--window 5 differs from its 10");
    });
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GE(parts, 4);  // K = 14: 30 FAR units, the unrolled adjoint, 3 pairs
    const auto a = nlohmann::json::parse(one.out), b = nlohmann::json::parse(r.out);
    std::printf("one pass: FAR %.6f, shadowing %.6f, fd %.6f; %d parts: FAR %.6f\n",
                a["far"]["derivative"].get<double>(), a["shadowing"]["derivative"].get<double>(),
                a["fd_derivative"].get<double>(), parts, b["far"]["derivative"].get<double>());
    for (const char* key : {"derivative", "shadowing", "unstable", "stderr", "average"})
        EXPECT_EQ(a["far"][key].get<double>(), b["far"][key].get<double>()) << key;
    EXPECT_EQ(a["far"]["exponents"], b["far"]["exponents"]);
    EXPECT_EQ(a["unrolled"]["derivative"].get<double>(), b["unrolled"]["derivative"].get<double>());
    EXPECT_EQ(a["shadowing"]["derivative"].get<double>(), b["shadowing"]["derivative"].get<double>());
    EXPECT_EQ(a["fd_derivative"].get<double>(), b["fd_derivative"].get<double>());
    {
        h5::File fa = h5::File::open_read(whole), fb = h5::File::open_read(run);
        for (const char* d : {"/response/lr/loss/far/segment_shadowing", "/response/lr/loss/far/segment_unstable",
                              "/response/lr/loss/fd/quotients", "/response/lr/loss/unrolled/adjoint_norm"})
            EXPECT_EQ(fa.read_vector(d), fb.read_vector(d)) << d;
        EXPECT_EQ(fb.attr_string("/response/lr/loss", "status"), "completed");
        EXPECT_EQ(fb.read_vector("/trajectory/loss"), loss_before);
        EXPECT_EQ(fb.children("/"), fa.children("/"));
    }
    // Finished: the same command refuses to overwrite; --force computes it again from the start.
    const auto again = run_tdyn("response " + run + args);
    EXPECT_EQ(again.exit_code, 1);
    EXPECT_NE(again.err.find("--force"), std::string::npos) << again.err;
    const auto forced = run_tdyn("response " + run + args + " --force");
    ASSERT_EQ(forced.exit_code, 0) << forced.err;
    const auto c = nlohmann::json::parse(forced.out);
    EXPECT_FALSE(c.contains("resumed"));
    EXPECT_EQ(a["far"]["derivative"].get<double>(), c["far"]["derivative"].get<double>());
    EXPECT_EQ(a["fd_derivative"].get<double>(), c["fd_derivative"].get<double>());
}

// --method kernel through the CLI: stored under GROUP/kernel with its per-w contributions; stopped
// every 3 units (100 steps each) and continued it gives the bits of one pass; the noisy finite
// differences (--noise with --check-fd) are the same in both. And the estimate is the one the
// library gives on the same map (the CLI adds only storage).
TEST(ResponseCli, KernelPassIsStoredAndContinuesToTheBitsOfOnePass) {
    const std::string run = chaotic_run(), whole = temp_path("resp-kernel-whole.h5");
    std::filesystem::copy_file(run, whole, std::filesystem::copy_options::overwrite_existing);
    const std::string args =
        " --param weight-decay --method kernel --noise 1e-3 --window 5 --from 200 --to 400 "
        "--noise-steps 1000 --check-fd 1e-3 --ensemble 2 --json";
    const auto one = run_tdyn("response " + whole + args);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const auto [r, parts] = respond_in_parts(run, args, 3, 20);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GE(parts, 4);  // 10 kernel units, 1 pair
    const auto a = nlohmann::json::parse(one.out), b = nlohmann::json::parse(r.out);
    std::printf("kernel %.6f +- %.6f (sigma sqrt(P) / step %.3g), noisy fd %.6f +- %.6f\n",
                a["kernel"]["derivative"].get<double>(), a["kernel"]["stderr"].get<double>(),
                a["kernel"]["noise_relative"].get<double>(), a["fd_derivative"].get<double>(),
                a["fd_stderr"].get<double>());
    for (const char* key : {"derivative", "stderr", "average", "noise"})
        EXPECT_EQ(a["kernel"][key].get<double>(), b["kernel"][key].get<double>()) << key;
    EXPECT_EQ(a["kernel"]["contribution"], b["kernel"]["contribution"]);
    EXPECT_EQ(a["fd_derivative"].get<double>(), b["fd_derivative"].get<double>());
    EXPECT_EQ(a["fd_noise"].get<double>(), 1e-3);
    h5::File f = h5::File::open_read(run);
    EXPECT_EQ(f.read_vector("/response/weight-decay/loss/kernel/contribution").size(), 5);
    EXPECT_EQ(f.attr_double("/response/weight-decay/loss/kernel", "noise"), 1e-3);
    EXPECT_EQ(f.attr_string("/response/weight-decay/loss", "status"), "completed");
}

// --second-derivative: the method of omega is stored with the pass (group and FAR result). The
// default, the exact R-operator, does u third-order passes a step and no shifted evaluations; the
// differences 2u shifted evaluations; both give FAR to 1e-8 relative (their difference is the
// differences' error, ~1e-10 here, amplified by nothing: the adjoint is linear). A pass made
// before the R-operator existed has no such attribute and counts as differences: the default
// refuses to continue it in one line naming the flag, and --second-derivative differences
// continues it to the bits of one differences pass. A bad value is refused in one line.
TEST(ResponseCli, SecondDerivativeMethodIsStoredAndAnOlderPassContinuesWithDifferences) {
    const std::string run = chaotic_run(600), whole = temp_path("resp-d3-whole.h5"),
                      exact = temp_path("resp-d3-exact.h5");
    std::filesystem::copy_file(run, whole, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(run, exact, std::filesystem::copy_options::overwrite_existing);
    const std::string args = " --param lr --method far --unstable 2 --from 200 --to 500 --json";
    const auto a = run_tdyn("response " + exact + args);
    const auto b = run_tdyn("response " + whole + args + " --second-derivative differences");
    ASSERT_EQ(a.exit_code, 0) << a.err;
    ASSERT_EQ(b.exit_code, 0) << b.err;
    const auto ja = nlohmann::json::parse(a.out)["far"], jb = nlohmann::json::parse(b.out)["far"];
    EXPECT_EQ(ja["third_order_per_step"].get<double>(), 2.0);
    EXPECT_EQ(ja["shifted_evaluations_per_step"].get<double>(), 0.0);
    EXPECT_EQ(jb["third_order_per_step"].get<double>(), 0.0);
    EXPECT_EQ(jb["shifted_evaluations_per_step"].get<double>(), 4.0);
    for (const auto* j : {&ja, &jb}) EXPECT_EQ((*j)["revisits_per_step"].get<double>(), 1.0);  // the adjoint's
    const double fa = ja["derivative"].get<double>(), fb = jb["derivative"].get<double>();
    std::printf("FAR with omega exact %.17g, by differences %.17g (relative %.2e)\n", fa, fb,
                std::abs(fa - fb) / std::abs(fb));
    EXPECT_LT(std::abs(fa - fb), 1e-8 * std::abs(fb));
    {
        h5::File f = h5::File::open_read(exact);
        EXPECT_EQ(f.attr_string("/response/lr/loss", "second_derivative"), "r-operator");
        EXPECT_EQ(f.attr_string("/response/lr/loss/far", "second_derivative"), "r-operator");
        h5::File g = h5::File::open_read(whole);
        EXPECT_EQ(g.attr_string("/response/lr/loss/far", "second_derivative"), "differences");
    }
    // an older pass: started with differences, stopped, its attribute removed
    const auto first = run_tdyn("response " + run + args + " --second-derivative differences --stop-after 2");
    ASSERT_EQ(first.exit_code, 130) << first.err;
    {
        const hid_t fid = H5Fopen(run.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
        ASSERT_GE(fid, 0);
        EXPECT_GE(H5Adelete_by_name(fid, "/response/lr/loss", "second_derivative", H5P_DEFAULT), 0);
        H5Fclose(fid);
    }
    expect_refused(run, "--param lr --method far --unstable 2 --from 200 --to 500",
                   "--second-derivative r-operator differs from its differences");
    expect_refused(run, "--param lr --method far --unstable 2 --from 200 --to 500 --second-derivative exact",
                   "--second-derivative: expected r-operator or differences, found 'exact'");
    const auto [r, parts] = respond_in_parts(run, args + " --second-derivative differences", 3, 40);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["far"]["derivative"].get<double>(), fb);
}

// --align A: the value is stored with the pass (group and result), the JSON reports the exponents
// of the alignment, an unfinished aligned pass refuses another A in one line naming --align, and
// a pass stopped every 3 units and continued gives the bits of one pass (the alignment is
// recomputed only while no segment is saved, to the same bits). And the alignment matters: the
// same pass without it gives another FAR.
TEST(ResponseCli, AlignedPassIsStoredAndContinuesToTheBitsOfOnePass) {
    const std::string run = chaotic_run(600), whole = temp_path("resp-align-whole.h5");
    std::filesystem::copy_file(run, whole, std::filesystem::copy_options::overwrite_existing);
    const std::string args = " --param lr --method far --unstable 2 --from 200 --to 500 --align 100 --json";
    const auto one = run_tdyn("response " + whole + args);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const auto [r, parts] = respond_in_parts(run, args, 3, 40, [&](int part) {
        if (part == 1)
            expect_refused(run, "--param lr --method far --unstable 2 --from 200 --to 500 --align 50",
                           "--align 50 differs from its 100");
    });
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_GE(parts, 4);
    const auto a = nlohmann::json::parse(one.out), b = nlohmann::json::parse(r.out);
    for (const char* key : {"derivative", "shadowing", "unstable", "stderr"})
        EXPECT_EQ(a["far"][key].get<double>(), b["far"][key].get<double>()) << key;
    EXPECT_EQ(a["far"]["exponents"], b["far"]["exponents"]);
    EXPECT_EQ(a["align"].get<Index>(), 100);
    ASSERT_EQ(a["align_exponents"].size(), 2u);
    EXPECT_EQ(a["align_exponents"], b["align_exponents"]);
    EXPECT_LT(a["align_mismatch"].get<double>(), 1e-12);  // the map replays the run's own steps
    h5::File f = h5::File::open_read(run);
    EXPECT_EQ(f.attr_int("/response/lr/loss", "align"), 100);
    EXPECT_EQ(f.attr_int("/response/lr/loss/far", "align"), 100);
    EXPECT_EQ(Index(f.read_vector("/response/lr/loss/align_exponents").size()), 2);
    const auto plain = run_tdyn("response " + whole +
                                " --param lr --method far --unstable 2 --from 200 --to 500 "
                                "--json --force");
    ASSERT_EQ(plain.exit_code, 0) << plain.err;
    const auto p = nlohmann::json::parse(plain.out);
    std::printf("aligned over 100 steps: FAR %.5f, exponents %.5f %.5f; random start: FAR %.5f, exponents %.5f %.5f\n",
                a["far"]["derivative"].get<double>(), a["far"]["exponents"][0].get<double>(),
                a["far"]["exponents"][1].get<double>(), p["far"]["derivative"].get<double>(),
                p["far"]["exponents"][0].get<double>(), p["far"]["exponents"][1].get<double>());
    EXPECT_NE(a["far"]["derivative"].get<double>(), p["far"]["derivative"].get<double>());
    EXPECT_FALSE(p.contains("align"));
}
