#include "tdyn/lyapunov.hpp"

#include "tdyn/hvp.hpp"
#include "tdyn/trainer.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <Spectra/SymEigsSolver.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>

namespace tdyn {

void check_qr_schedule(Index qr_every, Index warmup) {
    if (qr_every < 1) throw Error("qr_every " + std::to_string(qr_every) + ": must be at least 1");
    if (warmup < 0 || warmup % qr_every != 0)
        throw Error("warmup " + std::to_string(warmup) + ": must be a non-negative multiple of qr_every " +
                    std::to_string(qr_every));
}

namespace {

void check(const TangentOptions& o, Index dim) {
    if (o.vectors < 1 || o.vectors > dim)
        throw Error("vectors " + std::to_string(o.vectors) + ": must be between 1 and the dimension " +
                    std::to_string(dim));
    check_qr_schedule(o.qr_every, o.warmup);
}

}  // namespace

Matrix standard_normal(Index rows, Index cols, std::uint64_t seed) {
    std::mt19937_64 gen(seed ^ 0x5DEECE66DULL);
    auto uniform = [&] { return (double(gen() >> 11) + 0.5) * 0x1.0p-53; };  // in (0, 1)
    Matrix G(rows, cols);
    for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < rows; ++i) G(i, j) = std::sqrt(-2 * std::log(uniform())) * std::cos(2 * M_PI * uniform());
    return G;
}

Matrix initial_basis(Index dim, const TangentOptions& options) {
    check(options, dim);
    const Matrix& S = options.start;
    const Index k = S.cols();
    if (k > 0 && (S.rows() != dim || k > options.vectors))
        throw Error("start vectors: " + std::to_string(S.rows()) + " x " + std::to_string(k) + ", expected " +
                    std::to_string(dim) + " x k with k <= " + std::to_string(options.vectors));
    if (!S.allFinite()) throw Error("start vectors: contain NaN or Inf");
    Matrix V = standard_normal(dim, options.vectors, options.seed);  // k = 0: the random basis as before, bit for bit
    for (Index i = 0; i < k; ++i) {
        const double n = S.col(i).stableNorm();  // only the direction counts; stableNorm: no overflow
        if (!(n > 0)) throw Error("start vectors: vector " + std::to_string(i + 1) + " is zero");
        V.col(i) = S.col(i) / n;
    }
    Matrix Q, R;
    qr_positive(V, Q, R);
    // R_ii of unit vectors = sin of the angle between vector i and the span of the ones before it
    for (Index i = 1; i < k; ++i)
        if (!(R(i, i) > 1e-10))
            throw Error("start vectors: vector " + std::to_string(i + 1) +
                        " lies in the span of the ones before it (to 1e-10)");
    return Q;
}

TangentPropagator::TangentPropagator(Index dim, const TangentOptions& options)
    : m_options(options), m_V(initial_basis(dim, options)), m_log_growth(Vector::Zero(options.vectors)),
      m_log_sum(Vector::Zero(options.vectors)) {}

TangentPropagator::TangentPropagator(const Matrix& basis, const TangentOptions& options, Index steps,
                                     const Vector& log_sum)
    : m_options(options), m_V(basis), m_log_growth(Vector::Zero(basis.cols())), m_log_sum(log_sum), m_steps(steps) {
    check(options, basis.rows());
    if (basis.cols() != options.vectors || log_sum.size() != options.vectors)
        throw Error("resume: the stored tangent basis has " + std::to_string(basis.cols()) + " vectors, expected " +
                    std::to_string(options.vectors));
    m_last_qr = steps - steps % options.qr_every;
}

void qr_positive(const Matrix& V, Matrix& Q, Matrix& R) {
    const Index u = V.cols();
    Eigen::HouseholderQR<Matrix> qr(V);
    Q = qr.householderQ() * Matrix::Identity(V.rows(), u);
    R = qr.matrixQR().topRows(u).triangularView<Eigen::Upper>();
    for (Index i = 0; i < u; ++i)
        if (R(i, i) < 0) {
            Q.col(i) = -Q.col(i);
            R.row(i) = -R.row(i);
        }
}

void TangentPropagator::orthonormalise() {
    Matrix Q, R;
    qr_positive(m_V, Q, R);
    m_log_growth = R.diagonal().array().log().matrix();  // -inf if J annihilated a direction
    m_V = std::move(Q);
}

bool TangentPropagator::step(const ApplyJacobian& apply) {
    m_JV.resize(m_V.rows(), m_V.cols());
    apply(m_V, m_JV);
    m_V.swap(m_JV);
    ++m_steps;
    if (m_steps % m_options.qr_every != 0) return false;
    orthonormalise();
    m_last_qr = m_steps;
    // sum log R_ii, accumulated in order (a resumed run sums the stored rows in the same order)
    if (counted()) m_log_sum += m_log_growth;
    return true;
}

Vector TangentPropagator::exponents() const {
    if (counted_steps() == 0) return Vector::Constant(m_V.cols(), std::numeric_limits<double>::quiet_NaN());
    return m_log_sum / double(counted_steps());
}

void apply_update_jacobian(Evaluation& e, double alpha, const Matrix& V, Matrix& JV) {
    // J(t) V = V - alpha H(theta_t) V
    e.hessian_times(V, JV);
    JV = V - alpha * JV;
}

namespace {

/// e^{-2c} M^T M as Spectra's matrix-free operator: a forward sweep J_0 .. J_{W-1} and a backward
/// sweep J_{W-1}^T .. J_0^T of one column, no QR (c keeps the result near 1).
struct ScaledNormalOp {
    using Scalar = double;
    Index dim, steps;
    double c;
    const ApplyWindowStep& apply;
    Index& sweeps;
    Index max_sweeps;
    Index& products;
    Index rows() const { return dim; }
    Index cols() const { return dim; }
    void times(Matrix V, Matrix& out) const {
        if (sweeps + 2 > max_sweeps) throw ScaledNormalOp::Budget{};
        V *= std::exp(-c);
        Matrix W(V.rows(), V.cols());
        for (Index s = 0; s < steps; ++s) apply(s, false, V, W), V.swap(W);
        for (Index s = steps - 1; s >= 0; --s) apply(s, true, V, W), V.swap(W);
        out = std::exp(-c) * V;
        sweeps += 2;
        products += 2 * steps * V.cols();
    }
    void perform_op(const Scalar* x, Scalar* y) const {
        Matrix out;
        times(Eigen::Map<const Matrix>(x, dim, 1), out);
        Eigen::Map<Matrix>(y, dim, 1) = out;
    }
    struct Budget {};
};

/// P N P for P = I - X X^T (X orthonormal): N with the found directions taken out, whose top
/// eigenvalue is the largest one of N that X does not hold.
struct DeflatedOp {
    using Scalar = double;
    const ScaledNormalOp& op;
    const Matrix& X;
    Index rows() const { return op.dim; }
    Index cols() const { return op.dim; }
    void perform_op(const Scalar* x, Scalar* y) const {
        Matrix v = Eigen::Map<const Matrix>(x, op.dim, 1), out;
        v -= X * (X.transpose() * v);
        op.times(v, out);
        Eigen::Map<Matrix>(y, op.dim, 1) = out - X * (X.transpose() * out);
    }
};

/// window_growth's Lanczos stage: the top k eigenpairs of e^{-2c} M^T M (c = g's ln sigma_1) with the
/// sweeps left, minus two for the residuals. Lanczos from one vector sees one direction of each
/// eigenspace (its Krylov space holds one; rounding adds the others only slowly), so for k >= 2 an
/// exactly repeated value, such as a softmax network's neutral directions (sigma = 1, many times),
/// can be seen once and the next lower value taken for the i-th. So each solve is followed by one
/// of the deflated operator P N P (a fresh seeded start): if its top value exceeds mu_k by more
/// than the tolerance, it was missed, and Rayleigh-Ritz on [X, its vector] takes it in; repeated
/// until none is above (at most k rounds). Converged (Spectra's test each time): g takes the
/// values c + ln(mu_i) / 2, the vectors, and as error the true residual |N x - mu x| / (2 mu), N
/// the operator: an eigenvalue of N lies within |N x - mu x| of mu, so some sigma within that of
/// ln sigma_i to first order; returns true (also when a check ran out of sweeps: then each
/// ln sigma_i for i > 1 has error ln sigma_1 - ln sigma_i + sigma_1's, not converged). Otherwise g
/// keeps the passes' results (its sweeps counted) and the passes go on; returns false.
bool lanczos(Index dim, Index steps, const ApplyWindowStep& apply, const WindowGrowthOptions& o, WindowGrowth& g) {
    const Index k = o.vectors;
    Index sweeps = g.passes;
    ScaledNormalOp op{dim, steps, g.log_sigma[0], apply, sweeps, o.max_passes - 2, g.products};
    const double tol = std::min(1e-2, o.tol * double(steps));
    Matrix X, NX;
    Vector mu;
    try {
        Spectra::SymEigsSolver<ScaledNormalOp> solver(op, k, std::min(dim, std::max<Index>(2 * k + 1, 20)));
        solver.init();
        solver.compute(Spectra::SortRule::LargestAlge, o.max_passes, tol);
        if (solver.info() != Spectra::CompInfo::Successful) throw ScaledNormalOp::Budget{};
        X = solver.eigenvectors();
        mu = solver.eigenvalues();
    } catch (const ScaledNormalOp::Budget&) {
        g.passes = sweeps;
        return false;
    }
    if (X.cols() != k || !X.allFinite() || !(mu.minCoeff() > 0)) {
        g.passes = sweeps;
        return false;
    }
    bool checked = true;
    try {
        for (Index round = 0; k >= 2 && round < k && k < dim - 1; ++round) {
            DeflatedOp deflated{op, X};
            Vector start = standard_normal(dim, 1, o.seed + 1 + std::uint64_t(round));
            start -= X * (X.transpose() * start);
            Spectra::SymEigsSolver<DeflatedOp> check(deflated, 1, std::min(dim - k, Index(20)));
            check.init(start.data());
            check.compute(Spectra::SortRule::LargestAlge, o.max_passes, tol);
            if (check.info() != Spectra::CompInfo::Successful) throw ScaledNormalOp::Budget{};
            // ln sigma of the value missed above sigma_k, if any, is more than the target higher
            if (!(check.eigenvalues()[0] > mu[k - 1] * std::exp(2 * o.tol * double(steps)))) break;
            Matrix Z(dim, k + 1), Q, R, NQ;
            Z << X, check.eigenvectors();
            // re-orthonormalised: X and the new vector are orthonormal only to Lanczos' tolerance
            qr_positive(Z, Q, R);
            op.times(Q, NQ);
            const Eigen::SelfAdjointEigenSolver<Matrix> ritz(Q.transpose() * NQ);  // ascending
            const Matrix C = ritz.eigenvectors().rowwise().reverse().leftCols(k);
            mu = ritz.eigenvalues().reverse().head(k);
            X = Q * C;
            NX = NQ * C;  // N X, for the residuals
        }
    } catch (const ScaledNormalOp::Budget&) {
        checked = false;  // X, mu, NX are of the last completed round
    }
    g.passes = sweeps;
    if (!(mu.minCoeff() > 0)) return false;
    if (NX.cols() != k) {
        op.max_sweeps = sweeps + 2;  // the residuals are measured whatever is left
        op.times(X, NX);
        g.passes = sweeps;
    }
    g.error = (NX - X * mu.asDiagonal()).colwise().norm().transpose().cwiseQuotient(2 * mu);
    g.log_sigma = (op.c + 0.5 * mu.array().log()).matrix();
    g.right = X;
    // Unchecked (the sweeps ran out, or the check did not converge): a missed copy of a value can
    // lie anywhere up to sigma_1, so ln sigma_i may be low by up to ln(sigma_1 / sigma_i) plus
    // sigma_1's own error (Ritz values never exceed the true ones); that is its error, and the
    // window is not converged.
    if (!checked)
        for (Index i = 1; i < k; ++i) g.error[i] = std::max(g.error[i], g.log_sigma[0] + g.error[0] - g.log_sigma[i]);
    g.converged = checked && g.error.allFinite() && g.error.maxCoeff() <= o.tol * double(steps);
    return true;
}

}  // namespace

WindowGrowth window_growth(Index dim, Index steps, const ApplyWindowStep& apply, const WindowGrowthOptions& o) {
    if (steps < 1) throw Error("window: " + std::to_string(steps) + " steps, need at least 1");
    if (o.vectors < 1 || o.vectors > dim)
        throw Error("vectors " + std::to_string(o.vectors) + ": must be between 1 and the dimension " +
                    std::to_string(dim));
    const Index b = std::min(dim, o.block > 0 ? o.block : 2 * o.vectors), k = o.vectors;
    if (b < k) throw Error("block " + std::to_string(o.block) + ": must be at least vectors " + std::to_string(k));
    if (o.max_passes < 2) throw Error("passes " + std::to_string(o.max_passes) + ": need at least 2");
    if (!(o.tol > 0) || !std::isfinite(o.tol))
        throw Error("tolerance " + format_number(o.tol) + ": must be a positive number");
    const double target = o.tol * double(steps);
    WindowGrowth g;
    Matrix V, Q, R, T, out;
    qr_positive(standard_normal(dim, b, o.seed), V, R);

    // One QR pass from the block V: it maps V to Q T (M V = Q T forward, M^T V = Q T backward), T
    // the product of the steps' R, kept as e^scale T with max |T_ij| = 1 so that it never
    // overflows. Rayleigh-Ritz in the block: T = A S B^T gives M (V B) = (Q A) S, the values
    // ln S_1 .. ln S_k (the best the block holds). Where S_k / S_1 < 1e-150 the SVD cannot
    // be trusted (S_k near or below the smallest doubles), and the pass is plain orthogonal
    // iteration: the values are the diagonal of T in the QR's own order, which such a spread of
    // rates sorts within a pass or two. `tail` = ln S_b (or the b-th diagonal): sigma_{b+1} is
    // estimated by it in the convergence rate (S_b / S_i)^2 per pair.
    double tail = 0;
    auto qr_pass = [&](bool backward) {
        const Matrix start = V;
        T = Matrix::Identity(b, b);
        double scale = 0;
        Vector diag = Vector::Zero(b);
        for (Index s = 0; s < steps; ++s) {
            out.resize(dim, b);  // sized, as apply_update_jacobian's output must be
            apply(backward ? steps - 1 - s : s, backward, V, out);
            qr_positive(out, Q, R);
            diag += R.diagonal().array().log().matrix();
            T = R.triangularView<Eigen::Upper>() * T;
            const double m = T.cwiseAbs().maxCoeff();
            if (m > 0 && std::isfinite(m)) T /= m, scale += std::log(m);
            V.swap(Q);
        }
        g.products += steps * b;
        ++g.passes;
        const Eigen::JacobiSVD<Matrix> svd(T, Eigen::ComputeFullU | Eigen::ComputeFullV);
        const Vector S = svd.singularValues();
        if (S[k - 1] > 1e-150 * S[0]) {
            g.log_sigma = (scale + S.head(k).array().log()).matrix();
            tail = scale + std::log(S[b - 1]);
            // right singular vectors of M; the next pass starts from Q in the QR's own order (rotating
            // it by A as well put an SVD's arbitrary order of S_i that had underflowed into it)
            g.right = backward ? Matrix(V * svd.matrixU()) : Matrix(start * svd.matrixV());
        } else {
            g.log_sigma = diag.head(k);
            tail = diag[b - 1];
            g.right = backward ? V : start;
        }
        g.right.conservativeResize(dim, k);
    };
    // After a pass that follows another: an estimate of each value's error. The passes' values rise
    // toward sigma_i geometrically, by a factor r_i per pass, so what is left is about the last
    // change / (1 - r_i). r_i is the larger of two estimates: (sigma_{b+1} / sigma_i) with S_b for
    // sigma_{b+1}, and the ratio of the last two changes (the block's S_b is itself a low estimate
    // early on). r_i near 1 (a cluster) makes the error large rather than hiding it: the change
    // alone shrinks as fast as the error there. With b = dim the block is the whole space: exact.
    Vector change_before;
    auto estimate_error = [&](const Vector& last) {
        const Vector change = (g.log_sigma - last).cwiseAbs();
        g.error.resize(k);
        for (Index i = 0; i < k; ++i) {
            double r = b == dim ? 0.0 : std::exp(std::min(0.0, tail - g.log_sigma[i]));
            if (b < dim && change_before.size() == k && change_before[i] > 0)
                r = std::max(r, std::min(1.0, change[i] / change_before[i]));
            g.error[i] = change[i] / std::max(1 - r, 1e-3);
        }
        change_before = change;
        g.converged = g.error.allFinite() && g.error.maxCoeff() <= target;
    };
    // Lanczos on e^{-2c} M^T M resolves sigma_i only down to ~1e-8 sigma_1 (it sees sigma^2), and
    // e^{2c} must fit a double; Spectra needs ncv > k.
    auto lanczos_fits = [&] {
        const double c = g.log_sigma[0];
        return std::isfinite(c) && std::abs(c) <= 300 && g.log_sigma[k - 1] - c > std::log(1e-4) && k + 1 < dim;
    };

    Vector last;
    bool tried_lanczos = false;
    while (g.passes < o.max_passes) {
        qr_pass(g.passes % 2 == 1);
        if (g.passes >= 2) {
            estimate_error(last);
            if (g.converged) break;
            // Slow: the pairs needed at the worst rate, from the error left. Lanczos takes over
            // where that is more than 10 pairs (a cluster of sigma_i near the top).
            const double r = std::exp(2 * std::min(0.0, tail - g.log_sigma[k - 1]));  // per pair
            const double pairs = r >= 1 ? INFINITY : std::log(target / g.error.maxCoeff()) / std::log(r);
            if (!tried_lanczos && g.passes % 2 == 0 && b < dim && pairs > 10 && lanczos_fits()) {
                tried_lanczos = true;
                if (lanczos(dim, steps, apply, o, g)) return g;
            }
        }
        last = g.log_sigma;
    }
    return g;
}

WindowGrowth trajectory_window_growth(Trainer& trainer, Index a, const std::vector<Vector>& thetas, double alpha,
                                      const WindowGrowthOptions& o, const std::function<void(Index)>& on_product) {
    const auto W = Index(thetas.size());
    if (W < 1) throw Error("window: no thetas");
    Index applied = 0;
    auto apply = [&](Index s, bool, const Matrix& V, Matrix& out) {
        Evaluation& e = trainer.evaluation_at(a + s, thetas[std::size_t(s)]);
        e.set_products_only(true);  // H V needs backprop's deltas, not the gradient's product with X
        struct Reset {
            Evaluation& e;
            ~Reset() { e.set_products_only(false); }  // also when a product throws
        } reset{e};
        apply_update_jacobian(e, alpha, V, out);  // J(t) = J(t)^T
        if (on_product) on_product(++applied);
    };
    return window_growth(thetas.front().size(), W, apply, o);
}

// ---------------------------------------------------------------------------------------------

PerturbedTrajectory::PerturbedTrajectory(const Vector& theta0, const Vector& u, double eps, Index qr_every,
                                         Index warmup)
    : m_eps(eps), m_q(qr_every), m_warmup(warmup) {
    if (!(eps > 0) || !std::isfinite(eps)) throw Error("perturbation " + format_number(eps) + ": must be positive");
    // theta'_0 = theta_0 + eps u / |u|
    m_theta = theta0 + eps * u.normalized();
    m_base = pulled_back_distance(theta0);
}

PerturbedTrajectory::PerturbedTrajectory(const Vector& theta_p, double eps, Index qr_every, Index warmup, Index steps,
                                         double log_sum, double base, bool against_eps)
    : m_theta(theta_p), m_eps(eps), m_q(qr_every), m_warmup(warmup), m_steps(steps), m_log_sum(log_sum), m_base(base),
      m_against_eps(against_eps) {
    if (!(m_base > 0) || !std::isfinite(m_base))
        throw Error("perturbation: the stored distance of the perturbed copy is " + format_number(m_base) +
                    ", not a positive number");
    m_last = steps - steps % qr_every;
}

bool PerturbedTrajectory::step(const std::function<void(Vector&)>& update, const Vector& theta) {
    update(m_theta);
    ++m_steps;
    if (m_steps % m_q != 0) return false;
    // d = theta' - theta; log growth log(|d| / r); theta' <- theta + eps d / |d|; r <- |theta' - theta|
    // as rounded (the pull-back can leave coordinates unmoved: see the class comment)
    const Vector d = m_theta - theta;
    const double norm = d.norm();
    m_log_growth = std::log(norm / m_base);
    m_theta = theta + (m_eps / norm) * d;
    if (!m_against_eps) m_base = pulled_back_distance(theta);
    m_last = m_steps;
    if (counted()) m_log_sum += m_log_growth;
    return true;
}

double PerturbedTrajectory::pulled_back_distance(const Vector& theta) const {
    const double r = (m_theta - theta).norm();
    if (r == 0)
        throw Error("perturbation " + format_number(m_eps) + ": " +
                    (m_steps == 0 ? std::string("at the start,") : "after " + std::to_string(m_steps) + " steps,") +
                    " theta + EPS d / |d| rounds to theta; EPS is too small for theta's rounding unit");
    return r;
}

double PerturbedTrajectory::exponent() const {
    const Index n = std::max<Index>(0, m_last - m_warmup);
    return n == 0 ? std::numeric_limits<double>::quiet_NaN() : m_log_sum / double(n);
}

MissedInstability find_missed_instability(const Vector& spectrum_step, const Vector& lambda_max, double alpha,
                                          const Vector& lyapunov_step, const Vector& log_growth, Index qr_every,
                                          const Vector& overlap_step, const Vector& overlap, const Vector& cos_g_u1) {
    MissedInstability out;
    // a step read from a file: finite and whole-number sized (a damaged file may hold anything)
    auto is_step = [](double t) { return std::isfinite(t) && std::abs(t) < 1e15; };
    if (qr_every < 1) return out;
    // the newest row of each analysed step (tdyn spectrum appends rows after the in-line ones)
    struct Row {
        double lambda_max, cos_g_u1;
    };
    std::map<Index, Row> rows;
    for (Index j = 0; j < std::min(spectrum_step.size(), lambda_max.size()); ++j)
        if (is_step(spectrum_step[j]) && std::isfinite(lambda_max[j]))
            rows[Index(spectrum_step[j])] = {lambda_max[j], j < cos_g_u1.size() ? cos_g_u1[j] : NAN};
    std::map<Index, double> cos1;
    for (Index j = 0; j < std::min(overlap_step.size(), overlap.size()); ++j)
        if (is_step(overlap_step[j])) cos1[Index(overlap_step[j])] = overlap[j];
    // v_1's growth through J(s_k) .. J(s_{k+1} - 1): window k holds the rows whose step lies in
    // [s_k, s_{k+1}) (the last window: every later row). One pass over the rows, each added to its
    // window in row order (the sums of the former window-by-window scan, bit for bit); the window
    // pointer only moves forward while the steps ascend, as they do in a run file.
    std::vector<Index> s;
    for (const auto& r : rows) s.push_back(r.first);
    std::vector<double> growth(s.size(), 0.0);
    std::vector<Index> steps(s.size(), 0);
    Index last_tangent = -1;
    for (Index j = 0; j < lyapunov_step.size(); ++j)
        if (is_step(lyapunov_step[j])) last_tangent = std::max(last_tangent, Index(lyapunov_step[j]));
    std::size_t w = 0;  // the window of the previous row
    for (Index j = 0; j < std::min(lyapunov_step.size(), log_growth.size()); ++j) {
        if (!is_step(lyapunov_step[j]) || s.empty()) continue;
        const double t = lyapunov_step[j];
        if (t < double(s.front())) continue;  // before the first spectrum step: no window
        auto before = [](double a, Index b) { return a < double(b); };
        if (t < double(s[w])) w = std::size_t(std::upper_bound(s.begin(), s.end(), t, before) - s.begin()) - 1;
        while (w + 1 < s.size() && double(s[w + 1]) <= t) ++w;
        growth[w] += log_growth[j];
        steps[w] += qr_every;
    }
    if (last_tangent < 0) return out;
    double sum_log_mu = 0, sum_exponent = 0;
    auto row = rows.begin();
    for (std::size_t k = 0; k < s.size(); ++k, ++row) {
        const double mu = std::abs(1 - alpha * row->second.lambda_max);
        if (!(mu > 1)) continue;
        const double exponent = growth[k] / double(steps[k]);
        if (steps[k] == 0 || !std::isfinite(exponent)) continue;  // the tangent data does not cover this step
        ++out.unstable;
        const auto c = cos1.find(s[k]);
        if (exponent >= MissedInstability::kMissedExponentFraction * std::log(mu)) continue;
        if (c != cos1.end() && !(c->second < MissedInstability::kMissedOverlap)) continue;
        out.steps.push_back(s[k]);
        const double share = std::abs(row->second.cos_g_u1);
        if (share < MissedInstability::kOscillationShare) out.not_oscillating.push_back(s[k]);
        else if (share >= MissedInstability::kOscillationShare) out.oscillating.push_back(s[k]);
        out.until = k + 1 < s.size() ? s[k + 1] : last_tangent + 1;
        sum_log_mu += std::log(mu);
        sum_exponent += exponent;
        if (c != cos1.end())
            out.max_overlap = std::isnan(out.max_overlap) ? c->second : std::max(out.max_overlap, c->second);
    }
    if (!out.steps.empty()) {
        out.mean_log_mu = sum_log_mu / double(out.steps.size());
        out.mean_exponent = sum_exponent / double(out.steps.size());
    }
    return out;
}

Vector overlaps(const Vector& v, const Matrix& U) {
    // |cos angle(v, u_i)| = |u_i^T v| / |v|  (u_i unit vectors)
    return (U.transpose() * v).cwiseAbs() / v.norm();
}

}  // namespace tdyn
