#include "tdyn/spectrum.hpp"

#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Spectra/DavidsonSymEigsSolver.h>
#include <Spectra/SymEigsSolver.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

namespace tdyn {

Ends parse_ends(const std::string& text) {
    for (Ends e : {Ends::Top, Ends::Bottom, Ends::Both})
        if (text == to_string(e)) return e;
    throw Error("which: expected top, bottom or both, found '" + text + "'");
}

std::string to_string(Ends e) {
    switch (e) {
        case Ends::Top: return "top";
        case Ends::Bottom: return "bottom";
        case Ends::Both: return "both";
    }
    return "?";
}

namespace {

/// H with a diagonal D held beside it, the operator Spectra's DavidsonSymEigsSolver asks for:
/// op(i, i) = D_i (read once, for the DPR correction) and the block product H V.
class DiagonalHessianOp {
public:
    using Scalar = double;
    DiagonalHessianOp(const HessianOp& H, const Vector& D) : m_H(H), m_D(D) {}
    Index rows() const { return m_H.rows(); }
    Index cols() const { return m_H.cols(); }
    /// D_i on the diagonal; Davidson reads nothing else.
    Scalar operator()(Index i, Index j) const { return i == j ? m_D[i] : 0.0; }
    /// y = H x
    void perform_op(const Scalar* x_in, Scalar* y_out) const { m_H.perform_op(x_in, y_out); }
    /// H V, one wide pass
    Matrix operator*(const Eigen::Ref<const Matrix>& V) const { return m_H * V; }

private:
    const HessianOp& m_H;
    const Vector& m_D;
};

/// Spectra's Davidson loop (JDSymEigsBase::compute_with_guess) with Lanczos' convergence test
/// on the Ritz residuals, ||H u_i - theta_i u_i|| < tol max(|theta_i|, eps^(2/3)) for the K
/// wanted pairs, instead of Spectra's absolute ||r_i|| < tol: both solvers then stop on the same
/// relative criterion.
class RelativeDavidson : public Spectra::DavidsonSymEigsSolver<DiagonalHessianOp> {
public:
    using Base = Spectra::DavidsonSymEigsSolver<DiagonalHessianOp>;
    using Base::Base;

    Spectra::CompInfo solve(const tdyn::Matrix& V0, Spectra::SortRule rule, tdyn::Index max_iter, double tol) {
        const double floor = std::pow(Eigen::NumTraits<double>::epsilon(), 2.0 / 3.0);
        m_search_space.initialize_search_space(V0);
        for (niter_ = 0; niter_ < max_iter; ++niter_) {
            if (m_search_space.size() > m_max_search_space_size)
                m_search_space.restart(m_ritz_pairs, m_initial_search_space_size);
            m_search_space.update_operator_basis_product(m_matrix_operator);  // H V_new: one block HVP
            if (m_ritz_pairs.compute_eigen_pairs(m_search_space) != Eigen::Success)
                return Spectra::CompInfo::NumericalIssue;
            m_ritz_pairs.sort(rule);
            const tdyn::Vector theta = m_ritz_pairs.ritz_values().head(m_number_eigenvalues);
            const tdyn::Vector r = m_ritz_pairs.residues().leftCols(m_number_eigenvalues).colwise().norm().transpose();
            residual_norms = r;
            const Eigen::Array<bool, Eigen::Dynamic, 1> converged = r.array() < tol * theta.array().abs().max(floor);
            if (converged.all()) return Spectra::CompInfo::Successful;
            // (D - theta I)^{-1} r for the pairs not yet converged only: the correction of a
            // converged pair would cost an HVP and add nothing.
            std::vector<tdyn::Index> open;
            for (tdyn::Index i = 0; i < r.size(); ++i)
                if (!converged[i]) open.push_back(i);
            m_search_space.extend_basis(calculate_correction_vector()(Eigen::all, open));
        }
        return Spectra::CompInfo::NotConverging;
    }

    /// ||H u_i - theta_i u_i|| of the K wanted Ritz pairs at the last iteration: the true
    /// residuals (H u_i is combined from the stored block products H V, so no extra HVP).
    tdyn::Vector residual_norms;
};

SolverStatus solver_status(Spectra::CompInfo i) {
    return i == Spectra::CompInfo::Successful      ? SolverStatus::Successful
           : i == Spectra::CompInfo::NotConverging ? SolverStatus::NotConverging
                                                   : SolverStatus::NumericalIssue;
}

/// Davidson's start block and largest search space; the space must hold the block and K more.
struct DavidsonSizes {
    Index init, max;
};
DavidsonSizes davidson_sizes(const EigenOptions& o, Index P) {
    const Index K = o.eigs;
    const DavidsonSizes s{std::min<Index>(2 * K, P / 3), std::min<Index>(o.krylov > 0 ? o.krylov : 10 * K, P)};
    if (s.max < s.init + K)
        throw Error("krylov " + std::to_string(s.max) + ": Davidson's search space needs at least " +
                    std::to_string(s.init + K) + " vectors for K = " + std::to_string(K) + " (start block " +
                    std::to_string(s.init) + " + K)");
    return s;
}

/// Lanczos's basis size (Spectra's ncv), which must exceed K.
Index lanczos_ncv(const EigenOptions& o, Index P, bool warm) {
    const Index K = o.eigs;
    const Index ncv = std::min(o.krylov > 0 ? o.krylov : std::max<Index>(2 * K + 1, warm ? 8 : 20), P);
    if (ncv <= K)
        throw Error("krylov " + std::to_string(ncv) +
                    ": must exceed the number of eigenvalues K = " + std::to_string(K));
    return ncv;
}

/// Davidson on H: D from Hutchinson (or 0), start block = the warm vectors (or random),
/// orthonormalised and filled with random columns up to 2K.
EigenResult davidson_eigs(Evaluation& e, Which which, const EigenOptions& o, const Matrix* start) {
    HessianOp H(e);
    const Index P = H.rows(), K = o.eigs;
    const auto [nvec_init, nvec_max] = davidson_sizes(o, P);
    Index diag_hvps = 0;
    const Vector D =
        o.diagonal_probes > 0 ? hutchinson_diagonal(e, o.diagonal_probes, 17, &diag_hvps) : Vector(Vector::Zero(P));
    DiagonalHessianOp op(H, D);
    RelativeDavidson solver(op, K, nvec_init, nvec_max);
    Matrix V0 = rademacher(P, nvec_init, 23);
    if (start && start->cols() > 0) {
        const Index m = std::min(start->cols(), nvec_init);
        V0.leftCols(m) = start->leftCols(m);
    }
    V0 = Eigen::HouseholderQR<Matrix>(V0).householderQ() * Matrix::Identity(P, nvec_init);
    const auto rule = which == Which::Top ? Spectra::SortRule::LargestAlge : Spectra::SortRule::SmallestAlge;
    const Spectra::CompInfo info = solver.solve(V0, rule, o.max_iter, o.tol);
    EigenResult r;
    r.status = solver_status(info);
    r.converged = info == Spectra::CompInfo::Successful;
    r.values = solver.eigenvalues();
    r.vectors = solver.eigenvectors();
    // Ritz values come sorted by the rule: descending for Top, ascending for Bottom. Their
    // residuals come from the search space's own H V (tests/spectrum_test.cpp checks them
    // against H u - lambda u computed afresh).
    r.residuals = solver.residual_norms;
    if (info == Spectra::CompInfo::NumericalIssue || r.residuals.size() != r.values.size()) {
        // The last Ritz pairs did not come with residuals of their own: compute them.
        const Matrix HU = H * r.vectors;
        r.residuals = (HU - r.vectors * r.values.asDiagonal()).colwise().norm().transpose();
    }
    r.matvecs = H.products() + diag_hvps;
    return r;
}

}  // namespace

Vector hutchinson_diagonal(Evaluation& e, Index probes, std::uint64_t seed, Index* matvecs) {
    if (probes < 1) throw Error("diagonal_probes " + std::to_string(probes) + ": at least 1 probe");
    HessianOp H(e);
    const Matrix Z = rademacher(H.rows(), probes, seed);
    const Matrix HZ = H * Z;
    if (matvecs) *matvecs += H.products();
    // diag H ~ (1/m) sum_j z_j .* (H z_j)
    return Z.cwiseProduct(HZ).rowwise().mean();
}

std::string to_string(SolverStatus s) {
    switch (s) {
        case SolverStatus::NotRun: return "";
        case SolverStatus::Successful: return "Successful";
        case SolverStatus::NotConverging: return "NotConverging";
        case SolverStatus::NumericalIssue: return "NumericalIssue";
    }
    return "";
}

void check_eigs(Index K, Index P) {
    if (K < 1 || K >= P)
        throw Error("eigs " + std::to_string(K) + ": must be between 1 and P - 1 = " + std::to_string(P - 1));
}

void check_spectrum_options(const SpectrumOptions& o, Index P) {
    check_eigs(o.eig.eigs, P);
    if (o.eig.solver == EigenSolver::Davidson) davidson_sizes(o.eig, P);
    else lanczos_ncv(o.eig, P, false);  // a warm start changes only the default, which always fits
    if (o.trace && o.probes < 2)
        throw Error("probes " + std::to_string(o.probes) + ": the trace needs at least 2 probes");
    if (o.density && o.probes < 1) throw Error("probes " + std::to_string(o.probes) + ": at least 1 probe");
    if (o.density && std::min(o.lanczos_steps, P) < 2)
        throw Error("lanczos_steps " + std::to_string(o.lanczos_steps) + ": at least 2 steps");
}

EigenResult hessian_eigs(Evaluation& e, Which which, const EigenOptions& o, const Matrix* start) {
    check_eigs(o.eigs, e.num_params());
    if (o.solver == EigenSolver::Davidson) return davidson_eigs(e, which, o, start);
    HessianOp H(e);
    const Index P = H.rows(), K = o.eigs;
    const bool warm = start && start->cols() > 0;
    const auto rule = which == Which::Top ? Spectra::SortRule::LargestAlge : Spectra::SortRule::SmallestAlge;
    // Lanczos from v0 (null: Spectra's fixed-seed random start, reproducible)
    auto solve = [&](const Vector* v0) {
        Spectra::SymEigsSolver<HessianOp> solver(H, K, lanczos_ncv(o, P, v0 != nullptr));
        if (v0) solver.init(v0->data());
        else solver.init();
        solver.compute(rule, o.max_iter, o.tol, rule);
        EigenResult r;
        r.status = solver_status(solver.info());
        r.converged = solver.info() == Spectra::CompInfo::Successful;
        r.values = solver.eigenvalues();
        r.vectors = solver.eigenvectors();
        if (r.values.size() > 0) {
            // The residuals themselves, not Spectra's estimate: one block HVP.
            const Matrix HU = H * r.vectors;
            r.residuals = (HU - r.vectors * r.values.asDiagonal()).colwise().norm().transpose();
        }
        return r;
    };
    // A pair Spectra calls converged must have a true residual within 100x of its criterion
    // (|r| < tol max(|lambda|, eps^(2/3)) for its own estimate of |r|). A warm start that spans an
    // exactly invariant subspace (the previous step's u_1 when H is constant: linear regression,
    // a quadratic) breaks the Lanczos recurrence down, and Spectra has then returned wrong pairs
    // flagged converged: at the top lambda_max 73 with |r| = 48, true 1.41; at the bottom
    // 0.2559 with |r| = 0.013, true 0.2580 (tests/spectrum_test.cpp). Such a solve is repeated
    // from the random start; a healthy one is kept as it is. Near lambda = 0 (the exactly neutral
    // directions of softmax networks) rounding alone puts |r| at ~eps |H| sqrt(P), above any bound
    // relative to lambda, so a residual that fails the relative test is measured against the
    // scale of H instead: sqrt(eps) |H z| / |z| for a random z (one HVP, only then), which is at
    // least sqrt(eps) |H|_2 / sqrt(P) on average, 1e7 times the rounding floor for P < 1e13.
    const double eps = std::numeric_limits<double>::epsilon(), floor = std::pow(eps, 2.0 / 3.0);
    double scale = -1;  // |H z| / |z|, measured on first need
    auto honest = [&](const EigenResult& r) {
        for (Index i = 0; i < r.residuals.size(); ++i) {
            if (r.residuals[i] <= 100 * o.tol * std::max(std::abs(r.values[i]), floor)) continue;
            if (scale < 0) {
                const Vector z = rademacher(P, 1, 29).col(0);
                Vector Hz(P);
                H.perform_op(z.data(), Hz.data());
                scale = Hz.norm() / z.norm();
            }
            if (!(r.residuals[i] <= std::sqrt(eps) * scale)) return false;
        }
        return true;
    };
    EigenResult r;
    if (warm) {
        const Vector v0 = start->rowwise().sum();
        r = solve(&v0);
        if (r.converged && !honest(r)) {
            r = solve(nullptr);
            r.restarted = true;
        }
    } else {
        r = solve(nullptr);
    }
    r.converged = r.converged && honest(r);
    r.matvecs = H.products();  // both solves' when repeated
    return r;
}

Vector jacobian_extreme(const Vector& top, const Vector& bottom, double alpha, Index K) {
    std::vector<double> mu;
    for (Index i = 0; i < top.size(); ++i) mu.push_back(1 - alpha * top[i]);
    for (Index i = 0; i < bottom.size(); ++i) mu.push_back(1 - alpha * bottom[i]);
    std::sort(mu.begin(), mu.end(), [](double a, double b) { return std::abs(a) > std::abs(b); });
    // top and bottom overlap when P is small: drop repeated eigenvalues found from both ends
    mu.erase(std::unique(mu.begin(), mu.end(),
                         [](double a, double b) { return std::abs(a - b) <= 1e-12 * std::max(1.0, std::abs(a)); }),
             mu.end());
    mu.resize(std::min<std::size_t>(mu.size(), std::size_t(K)));
    return Eigen::Map<const Vector>(mu.data(), Index(mu.size()));
}

Stability stability(const Vector& top, const Vector& bottom, double alpha) {
    Stability s;
    s.two_over_alpha = 2 / alpha;
    s.lambda_max = top.size() ? top.maxCoeff() : std::nan("");
    const Vector mu = jacobian_extreme(top, bottom, alpha, top.size() + bottom.size());
    for (Index i = 0; i < mu.size(); ++i) {
        s.unstable += std::abs(mu[i]) > 1 ? 1 : 0;
        s.max_abs_mu = std::max(s.max_abs_mu, std::abs(mu[i]));
    }
    return s;
}

Matrix rademacher(Index rows, Index cols, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    Matrix Z(rows, cols);
    for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < rows; ++i) Z(i, j) = (gen() >> 63) ? 1.0 : -1.0;
    return Z;
}

TraceEstimate hutchinson_trace(Evaluation& e, Index probes, std::uint64_t seed, Index block) {
    if (probes < 2) throw Error("probes " + std::to_string(probes) + ": the trace needs at least 2 probes");
    HessianOp H(e);
    const Matrix Z = rademacher(H.rows(), probes, seed);
    Vector q(probes);
    for (Index j = 0; j < probes; j += block) {
        const Index m = std::min(block, probes - j);
        const Matrix HZ = H * Z.middleCols(j, m);
        for (Index c = 0; c < m; ++c) q[j + c] = Z.col(j + c).dot(HZ.col(c));  // z^T H z
    }
    TraceEstimate t;
    t.probes = probes;
    t.trace = q.mean();
    t.standard_error = std::sqrt((q.array() - t.trace).square().sum() / double(probes - 1) / double(probes));
    t.matvecs = H.products();
    return t;
}

SpectralDensity lanczos_density(Evaluation& e, Index probes, Index steps, Index grid_points, double sigma,
                                std::uint64_t seed) {
    HessianOp H(e);
    const Index P = H.rows();
    if (probes < 1) throw Error("probes " + std::to_string(probes) + ": at least 1 probe");
    steps = std::min(steps, P);
    if (steps < 2) throw Error("lanczos_steps " + std::to_string(steps) + ": at least 2 steps");
    const Matrix Z = rademacher(P, probes, seed);
    std::vector<double> nodes, weights;
    Matrix Q(P, steps);
    Vector w(P);
    for (Index p = 0; p < probes; ++p) {
        // m steps of Lanczos from z/|z| with full reorthogonalisation: T = Q^T H Q tridiagonal.
        Vector alpha(steps), beta(steps);
        Q.col(0) = Z.col(p) / Z.col(p).norm();
        Index m = steps;
        for (Index j = 0; j < steps; ++j) {
            H.perform_op(Q.col(j).data(), w.data());
            alpha[j] = Q.col(j).dot(w);
            w -= Q.leftCols(j + 1) * (Q.leftCols(j + 1).transpose() * w);  // full reorthogonalisation
            w -= Q.leftCols(j + 1) * (Q.leftCols(j + 1).transpose() * w);  // twice is enough
            if (j + 1 == steps) break;
            beta[j] = w.norm();
            if (beta[j] <= 1e-12 * std::abs(alpha[j])) {  // invariant subspace: the quadrature is exact
                m = j + 1;
                break;
            }
            Q.col(j + 1) = w / beta[j];
        }
        Eigen::SelfAdjointEigenSolver<Matrix> T;
        T.computeFromTridiagonal(alpha.head(m), beta.head(m - 1), Eigen::ComputeEigenvectors);
        for (Index j = 0; j < m; ++j) {
            nodes.push_back(T.eigenvalues()[j]);
            weights.push_back(T.eigenvectors()(0, j) * T.eigenvectors()(0, j) / double(probes));
        }
    }
    SpectralDensity d;
    d.probes = probes;
    d.steps = steps;
    d.matvecs = H.products();
    d.nodes = Eigen::Map<const Vector>(nodes.data(), Index(nodes.size()));
    d.weights = Eigen::Map<const Vector>(weights.data(), Index(weights.size()));
    const double lo = d.nodes.minCoeff(), hi = d.nodes.maxCoeff();
    d.sigma = sigma > 0 ? sigma : std::max((hi - lo) / 200, 1e-12 * std::max(1.0, std::abs(hi)));
    d.grid = Vector::LinSpaced(grid_points, lo - 5 * d.sigma, hi + 5 * d.sigma);
    d.density = Vector::Zero(grid_points);
    const double c = 1 / (d.sigma * std::sqrt(2 * M_PI));
    for (Index i = 0; i < grid_points; ++i)
        for (Index j = 0; j < d.nodes.size(); ++j) {
            const double u = (d.grid[i] - d.nodes[j]) / d.sigma;
            d.density[i] += d.weights[j] * c * std::exp(-0.5 * u * u);
        }
    return d;
}

}  // namespace tdyn

namespace tdyn {

SpectrumAnalysis analyse_spectrum(Evaluation& e, const SpectrumOptions& o, double alpha,
                                  const SpectrumAnalysis* previous) {
    SpectrumAnalysis a;
    auto warm = [&](const EigenResult& r) { return previous && r.vectors.cols() > 0 ? &r.vectors : nullptr; };
    if (o.top()) a.top = hessian_eigs(e, Which::Top, o.eig, previous ? warm(previous->top) : nullptr);
    if (o.bottom()) a.bottom = hessian_eigs(e, Which::Bottom, o.eig, previous ? warm(previous->bottom) : nullptr);
    a.matvecs = a.top.matvecs + a.bottom.matvecs;
    a.converged = (!o.top() || a.top.converged) && (!o.bottom() || a.bottom.converged);
    a.jacobian = jacobian_extreme(a.top.values, a.bottom.values, alpha, o.eig.eigs);
    a.stability = stability(a.top.values, a.bottom.values, alpha);
    if (o.trace) {
        a.trace = hutchinson_trace(e, o.probes, o.seed);
        a.matvecs += a.trace.matvecs;
    }
    if (o.density) {
        a.density = lanczos_density(e, o.probes, o.lanczos_steps, o.grid, o.sigma, o.seed);
        a.matvecs += a.density.matvecs;
    }
    return a;
}

}  // namespace tdyn
