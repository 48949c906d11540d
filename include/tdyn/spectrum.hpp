// Eigenvalues of H and J = I - alpha H at one theta, matrix-free, with Spectra's Lanczos
// solver on the HVP operator; plus the Hutchinson trace of H and its spectral density by
// stochastic Lanczos quadrature. Results carry residuals, HVP counts and convergence.
#pragma once

#include "tdyn/hvp.hpp"

#include <string>

namespace tdyn {

/// Which end of H's spectrum: largest algebraic (top) or smallest algebraic (bottom).
enum class Which { Top, Bottom };

/// The ends an analysis computes (the flag --which, the attribute `which`).
enum class Ends { Top, Bottom, Both };
Ends parse_ends(const std::string& text);  ///< "top" | "bottom" | "both"; throws Error naming `which`
std::string to_string(Ends e);

/// Which Spectra solver: SymEigsSolver (implicitly restarted Lanczos, one HVP at a time) or
/// DavidsonSymEigsSolver (block Davidson with the DPR correction (D - theta I)^{-1} r, one block
/// HVP of K vectors per iteration; D an estimated diagonal of H). Lanczos is the library's default
/// (and the in-line spectrum's, whose warm start is one vector); `tdyn spectrum` uses Davidson for
/// K >= 2, where its block HVPs made it faster: docs/SPECTRUM_BENCH.md has the comparison.
enum class EigenSolver { Lanczos, Davidson };

struct EigenOptions {
    Index eigs = 1;         ///< K
    Index krylov = 0;       ///< Lanczos basis size (Spectra's ncv); 0 = max(2K + 1, 20), or max(2K + 1, 8) warm
                            ///< Davidson: largest search space; 0 = 10 K
    double tol = 1e-6;      ///< relative: |residual estimate| < tol * |lambda| (Spectra's criterion;
                            ///< for Davidson tdyn applies the same test to the Ritz residuals)
    Index max_iter = 1000;  ///< Lanczos restarts / Davidson iterations
    EigenSolver solver = EigenSolver::Lanczos;
    /// Davidson only: Rademacher probes of the Hutchinson diagonal, diag H ~ mean of z .* (H z)
    /// (counted in matvecs); 0 = no diagonal (D = 0: the corrections are the residuals).
    Index diagonal_probes = 0;
};

/// K must be between 1 and P - 1 (Spectra's solvers need K < P). Throws Error naming `eigs`.
void check_eigs(Index K, Index P);

/// How an eigen-solve ended: Spectra's CompInfo, or NotRun for the end of the spectrum that was
/// not asked for.
enum class SolverStatus { NotRun, Successful, NotConverging, NumericalIssue };
/// "Successful", "NotConverging", "NumericalIssue" (Spectra's names); "" for NotRun.
std::string to_string(SolverStatus s);

/// K eigenpairs of H at one end of its spectrum.
struct EigenResult {
    Vector values;           ///< descending for Top, ascending for Bottom (only the converged ones)
    Matrix vectors;          ///< P x (converged), orthonormal
    Vector residuals;        ///< ||H u_i - lambda_i u_i||: Lanczos, by one block HVP after the solve;
                             ///< Davidson, from the search space's own products H V
    Index matvecs = 0;       ///< HVPs used, Lanczos' residual check included
    bool converged = false;  ///< the solver's verdict, and (Lanczos) every true residual within 100x of it
                             ///< or, near lambda = 0, within sqrt(eps) of the scale of H (spectrum.cpp)
    bool restarted = false;  ///< Lanczos: the warm-started solve returned pairs whose true residuals
                             ///< contradict its verdict, and the pairs are those of a random start
    SolverStatus status = SolverStatus::NotRun;
};

/// K eigenpairs of H at the Evaluation's theta. `start` (P x m, e.g. the previous step's
/// eigenvectors) warm-starts Lanczos from the sum of its columns, Davidson from its columns.
EigenResult hessian_eigs(Evaluation& e, Which which, const EigenOptions& options, const Matrix* start = nullptr);

/// Eigenvalues of J = I - alpha H, mu = 1 - alpha lambda, with the largest |mu| among those
/// implied by H's top and bottom eigenvalues (|1 - alpha lambda| is convex in lambda, so its
/// largest values sit at the two ends of H's spectrum). Sorted by |mu| descending.
Vector jacobian_extreme(const Vector& hessian_top, const Vector& hessian_bottom, double alpha, Index K);

/// Is gradient descent stable at this theta? From the eigenvalues found.
struct Stability {
    double lambda_max = 0;      ///< largest eigenvalue of H (sharpness)
    double two_over_alpha = 0;  ///< the stability edge of lambda_max
    Index unstable = 0;         ///< eigenvalues of J found with |mu| > 1 (lambda > 2/alpha or lambda < 0)
    double max_abs_mu = 0;      ///< largest |eigenvalue of J| found
};
Stability stability(const Vector& hessian_top, const Vector& hessian_bottom, double alpha);

/// Hutchinson: tr H ~ mean of z^T H z over Rademacher probes z, with its standard error.
struct TraceEstimate {
    double trace = 0, standard_error = 0;
    Index probes = 0, matvecs = 0;
};
TraceEstimate hutchinson_trace(Evaluation& e, Index probes, std::uint64_t seed, Index block = 8);

/// Spectral density of H by stochastic Lanczos quadrature: for each Rademacher probe z/|z|,
/// m Lanczos steps (full reorthogonalisation) give nodes theta_j and weights tau_j (squared
/// first components of T's eigenvectors); the density is the average over probes of
/// sum_j tau_j N(t; theta_j, sigma^2) on a uniform grid covering all nodes +- 5 sigma.
struct SpectralDensity {
    Vector grid, density;   ///< density integrates to 1 (trapezoid rule on the grid)
    Vector nodes, weights;  ///< all probes' nodes and weights / probes (weights sum to 1)
    double sigma = 0;       ///< Gaussian broadening
    Index probes = 0, steps = 0, matvecs = 0;
};
/// sigma <= 0 picks (largest node - smallest node) / 200.
SpectralDensity lanczos_density(Evaluation& e, Index probes, Index steps, Index grid_points, double sigma,
                                std::uint64_t seed);

/// Hutchinson's diagonal: diag H ~ (1/m) sum_j z_j .* (H z_j) over m Rademacher probes (one
/// block HVP of m). `matvecs` (optional) is increased by m.
Vector hutchinson_diagonal(Evaluation& e, Index probes, std::uint64_t seed, Index* matvecs = nullptr);

/// The Rademacher probes both estimators use: column j of probe block b is the same for a seed.
Matrix rademacher(Index rows, Index cols, std::uint64_t seed);

}  // namespace tdyn

namespace tdyn {

/// One spectral analysis at a theta: what `tdyn spectrum` and `tdyn train --spectrum-every` run.
struct SpectrumOptions {
    EigenOptions eig;
    Ends ends = Ends::Both;  ///< --which top|bottom|both
    bool top() const { return ends != Ends::Bottom; }
    bool bottom() const { return ends != Ends::Top; }
    bool trace = false;    ///< Hutchinson trace
    bool density = false;  ///< SLQ spectral density
    Index probes = 30, lanczos_steps = 80, grid = 400;
    double sigma = 0;
    std::uint64_t seed = 0;
};

/// Every parameter check of a spectrum analysis on P parameters, done before any work so that a
/// bad value never stops a run half-way: eigs (check_eigs), krylov (Lanczos: more than K basis
/// vectors; Davidson: room for the start block and K corrections), probes (>= 2 for the trace,
/// >= 1 for the density) and lanczos_steps (>= 2). Throws Error naming the parameter.
void check_spectrum_options(const SpectrumOptions& o, Index P);

struct SpectrumAnalysis {
    EigenResult top, bottom;  ///< empty when not asked for
    Vector jacobian;          ///< eigenvalues of J with the largest |mu| (K of them)
    Stability stability;
    TraceEstimate trace;      ///< probes == 0 when not asked for
    SpectralDensity density;  ///< probes == 0 when not asked for
    Index matvecs = 0;
    bool converged = true;
};

/// Runs the analysis at the Evaluation's theta; `previous` (same options, an earlier step)
/// warm-starts the eigen-solves from its eigenvectors.
SpectrumAnalysis analyse_spectrum(Evaluation& e, const SpectrumOptions& o, double alpha,
                                  const SpectrumAnalysis* previous = nullptr);

}  // namespace tdyn
