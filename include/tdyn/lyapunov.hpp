// Lyapunov exponents by tangent propagation with QR (Benettin et al. 1980, Shimada and
// Nagashima 1979), for any map x_{t+1} = f_t(x_t) that can apply its Jacobian to a block of
// vectors; and, for gradient descent, the tangent map J(t) = I - alpha H(theta_t) applied
// through the step's own Evaluation, plus the two-trajectory (finite perturbation) check.
#pragma once

#include "tdyn/evaluation.hpp"

#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

namespace tdyn {

/// The QR schedule: q >= 1 and W a non-negative multiple of q. Throws Error naming the parameter
/// (qr_every, warmup); the apps name their flags (--qr-every, --warmup) instead.
void check_qr_schedule(Index qr_every, Index warmup);

/// rows x cols standard normal numbers from `seed` (Box-Muller on mt19937_64 bits: the same on
/// every platform; std::normal_distribution is not specified bit for bit).
Matrix standard_normal(Index rows, Index cols, std::uint64_t seed);

/// V = Q R (Householder) with the thin Q (rows x cols) and R_ii >= 0: unique and continuous in
/// V, so carried bases do not flip sign from one QR to the next.
void qr_positive(const Matrix& V, Matrix& Q, Matrix& R);

struct TangentOptions {
    Index vectors = 4;       ///< M tangent vectors
    Index qr_every = 1;      ///< q: re-orthonormalise every q map steps
    Index warmup = 0;        ///< W: the first W map steps orthonormalise but do not count (multiple of q)
    std::uint64_t seed = 0;  ///< the random initial basis
    /// Given start vectors (dim x k, k <= M; empty: none): the initial basis is the QR of
    /// [start, the last M - k columns of the random basis], so v_1 .. v_k span what start's first
    /// columns span (v_1 = start_1 / |start_1|), e.g. an eigenvector of H(theta_t0).
    Matrix start;
};

/// The orthonormal starting basis (dim x M) of a TangentPropagator: the Householder QR (R_ii > 0)
/// of [options.start, each column scaled to norm 1, then the last M - k columns of the seeded random
/// basis]. Throws Error when a given vector is not finite, is zero, or lies in the span of the ones
/// before it (sin of the angle <= 1e-10), or the options are out of range.
Matrix initial_basis(Index dim, const TangentOptions& options);

/// Carries M tangent vectors along a trajectory: V <- J_t V every step, and every q steps
/// V = Q R (Householder), V <- Q with R_ii > 0, log R_ii accumulated once past the warm-up.
/// The running exponents are (sum of log R_ii) / (map steps counted): natural log per map step.
class TangentPropagator {
public:
    /// JV = J_t V for the current state of the map (V and JV are dim x M).
    using ApplyJacobian = std::function<void(const Matrix& V, Matrix& JV)>;

    /// Starts from initial_basis(dim, options) (its Errors too).
    TangentPropagator(Index dim, const TangentOptions& options);
    /// Continues from a stored state (resume): the basis after `steps` map steps and the sums
    /// of log R_ii over the counted QR steps. Given the same sums, bit-identical to going on.
    TangentPropagator(const Matrix& basis, const TangentOptions& options, Index steps, const Vector& log_sum);

    /// One map step: V <- J V, and the QR when steps() becomes a multiple of q.
    /// Returns true when a QR happened (then log_growth() and counted() describe it).
    bool step(const ApplyJacobian& apply);

    const Matrix& basis() const { return m_V; }  ///< dim x M; orthonormal right after a QR
    Index steps() const { return m_steps; }      ///< map steps done
    Index counted_steps() const { return std::max<Index>(0, m_last_qr - m_options.warmup); }
    const Vector& log_growth() const { return m_log_growth; }      ///< log R_ii of the last QR (M)
    bool counted() const { return m_last_qr > m_options.warmup; }  ///< the last QR counts
    const Vector& log_sum() const { return m_log_sum; }
    /// Running exponents: log_sum / counted_steps (NaN while nothing is counted).
    Vector exponents() const;
    const TangentOptions& options() const { return m_options; }

private:
    void orthonormalise();

    TangentOptions m_options;
    Matrix m_V, m_JV;
    Vector m_log_growth, m_log_sum;
    Index m_steps = 0, m_last_qr = 0;
};

/// The tangent map of one gradient-descent step at the Evaluation's theta_t:
/// JV = J(t) V = V - alpha H(theta_t) V (one block HVP, the Evaluation's forward pass reused).
void apply_update_jacobian(Evaluation& e, double alpha, const Matrix& V, Matrix& JV);

/// The top k singular values sigma_1 >= .. >= sigma_k of a window's propagator
/// M = J_{W-1} .. J_1 J_0: the most growth any start vector (any k-dimensional set of them) can
/// get over the window, whatever the tangent vectors carried before it lost or kept. ln sigma_1 / W
/// is the window's largest finite-time exponent; a vector carried along the trajectory grows by at
/// most sigma_1 over the window.
///
/// Passes of b >= k vectors with a QR after every map step (nothing overflows, the smaller sigma_i
/// are not lost in rounding), alternating forward, V <- J_t V (t = 0 .. W-1), and backward,
/// U <- J_t^T U (t = W-1 .. 0), each from where the last ended: orthogonal iteration on M^T M. After
/// each pass a Rayleigh-Ritz step (the SVD of the pass's product of R) gives the values, lower bounds
/// on sigma_i (sigma_i(M X) <= sigma_i(M) for orthonormal X); where S_k / S_1 < 1e-150 (beyond the
/// SVD's reach in a double) the values are the diagonal of that product in QR order instead, which
/// such a spread sorts within a pass. The error is estimated from the last change and the rate of
/// convergence (see window_growth). Where the top sigma_i cluster (a stable window: every
/// |1 - alpha lambda| near 1, many sigma_i within a few percent) and more than 10 more pairs would be
/// needed, Lanczos (Spectra) on e^{-2c} M^T M takes over after the first pair (c = ln sigma_1; only
/// where |c| <= 300 and sigma_k >= 1e-4 sigma_1, which it can resolve), its error the true
/// residual; if it does not converge in the sweeps left the passes go on. Lanczos from one vector
/// sees an exactly repeated sigma once (the exactly neutral directions of a softmax network,
/// sigma = 1, when fewer than k directions grow), so for k >= 2 each solve is checked by one of the
/// deflated operator and a missed value taken in (docs/MATH.md).
struct WindowGrowthOptions {
    Index vectors = 1;       ///< k
    Index max_passes = 200;  ///< sweeps of the window (a pass, or half of one Lanczos product), at least 2
    double tol = 1e-6;       ///< converged: every estimated error below tol x W (tol per step)
    std::uint64_t seed = 0;  ///< the random start block (standard_normal)
    Index block = 0;         ///< b >= k vectors in the QR passes (0: 2k, at most dim)
};

struct WindowGrowth {
    Vector log_sigma;  ///< ln sigma_i (k)
    /// Estimated error of ln sigma_i: QR passes, the last change / (1 - r), r the larger of
    /// sigma_{b+1} / sigma_i (S_b for sigma_{b+1}) and the ratio of the last two changes, capped at
    /// 1000 x the change; Lanczos, |N x - mu x| / (2 mu) for N = e^{-2c} M^T M (an eigenvalue of N
    /// lies within |N x - mu x| of mu). An estimate, not a guarantee: a start block with no component
    /// along the top direction would miss it, as any iterative method would.
    Vector error;
    Index passes = 0;    ///< sweeps of the window, either direction
    Index products = 0;  ///< J_t times a vector, counted per column (the cost)
    bool converged = false;
    Matrix right;  ///< dim x k orthonormal at the window's start: v_1 spans the direction of most growth
};

/// J_t V (transpose false) or J_t^T V (true) for map step t of the window, 0 <= t < W.
using ApplyWindowStep = std::function<void(Index t, bool transpose, const Matrix& V, Matrix& out)>;

/// The above over `steps` = W >= 1 map steps of dimension dim (Error: options out of range).
WindowGrowth window_growth(Index dim, Index steps, const ApplyWindowStep& apply, const WindowGrowthOptions& options);

class Trainer;

/// window_growth of gradient descent's M = J(a+W-1) .. J(a), J(t) = I - alpha H(theta_t) (symmetric),
/// over thetas[s] = theta_{a+s}, s < W (replayed by the caller), the Hessians by the trainer's
/// evaluation_at. on_product(applied) follows every J(t) V (a stop can throw from it).
WindowGrowth trajectory_window_growth(Trainer& trainer, Index a, const std::vector<Vector>& thetas, double alpha,
                                      const WindowGrowthOptions& options,
                                      const std::function<void(Index applied)>& on_product = {});

/// Two-trajectory Benettin: theta'_0 = theta_0 + eps u; both trajectories take the same
/// update; every q steps d = theta' - theta gives log(|d| / r), and theta' is pulled back to
/// theta + eps d / |d|. r is the norm theta' - theta actually has after the last pull-back (or
/// the start), not eps: in floating point the pull-back moves a coordinate only where
/// |eps / |d| - 1| |d_i| reaches half a rounding unit of theta_i, so with a small eps and a
/// growth near 1 it leaves most of them as they were, and measuring against eps then added
/// log(r / eps) to every step (-2.9e-7 per step at eps = 1e-8 and alpha = 0.001 on 2000 MNIST
/// images, docs/MATH.md). Its
/// running exponent estimates the top Lyapunov exponent where the map is smooth on the scale eps.
class PerturbedTrajectory {
public:
    PerturbedTrajectory(const Vector& theta0, const Vector& u, double eps, Index qr_every, Index warmup);
    /// Resume: theta' after `steps` steps, the sum of counted log growths, and r (base()).
    /// against_eps: keep r = base (pass eps) throughout, as files written before r was kept measured.
    PerturbedTrajectory(const Vector& theta_p, double eps, Index qr_every, Index warmup, Index steps, double log_sum,
                        double base, bool against_eps = false);

    /// theta' <- update(theta'); then, every q steps, renormalise against the reference theta
    /// (already updated to the same step). Returns true when a renormalisation happened.
    bool step(const std::function<void(Vector&)>& update, const Vector& theta);

    const Vector& theta() const { return m_theta; }
    double eps() const { return m_eps; }
    Index steps() const { return m_steps; }
    double log_growth() const { return m_log_growth; }  ///< log(|d| / r) of the last renormalisation
    double base() const { return m_base; }              ///< r = |theta' - theta| after the last pull-back
    bool counted() const { return m_last > m_warmup; }
    double log_sum() const { return m_log_sum; }
    double exponent() const;  ///< log_sum / counted steps (NaN while nothing is counted)

private:
    /// r = |theta' - theta| as rounded; throws Error when theta' rounded onto theta.
    double pulled_back_distance(const Vector& theta) const;

    Vector m_theta;
    double m_eps;
    Index m_q, m_warmup, m_steps = 0, m_last = 0;
    double m_log_growth = 0, m_log_sum = 0, m_base = 0;
    bool m_against_eps = false;
};

/// What the in-line tangent data says where gradient descent is linearly unstable along the top
/// eigenvector u_1 of H, |mu| = |1 - alpha lambda_max| > 1 at a spectrum step s. A v_1 that started
/// long before the crossing can have lost u_1 to round-off while |mu| < 1 and then miss the
/// instability (docs/FINDINGS.md 2, 2.1.1). Step s is flagged when v_1's finite-time exponent over
/// the steps s .. (next spectrum step - 1) is below kMissedExponentFraction x ln|mu| (a v_1 along
/// u_1 grows at ln|mu|) and, where /lyapunov/overlap holds step s, |cos(v_1, u_1)| < kMissedOverlap.
/// Where /spectrum/cos_g_u1 holds s, a flagged step is also sorted by the gradient's share along
/// u_1: below kOscillationShare GD does not oscillate along u_1 (the first overshoot, where a
/// restarted vector grows at ~ln|mu|); at or above it GD oscillates along u_1 (hovering, where a
/// restarted vector grew at 0.002-0.02 per step or not at all, and the last few steps of an
/// overshoot, where the oscillation has grown past the threshold). docs/FINDINGS.md 2: the numbers.
struct MissedInstability {
    static constexpr double kMissedExponentFraction = 0.25;
    static constexpr double kMissedOverlap = 0.1;
    static constexpr double kOscillationShare = 1e-3;
    Index unstable = 0;                  ///< spectrum steps with |mu| > 1 that the tangent data covers
    std::vector<Index> steps;            ///< the flagged ones, ascending
    Index until = -1;                    ///< where the last flagged step's window ends (the next spectrum step)
    double mean_log_mu = NAN;            ///< mean ln|mu| over the flagged steps
    double mean_exponent = NAN;          ///< mean finite-time exponent of v_1 over their windows (per step)
    double max_overlap = NAN;            ///< largest stored |cos(v_1, u_1)| at flagged steps (NaN: none stored)
    std::vector<Index> not_oscillating;  ///< flagged steps with |cos_g_u1| < kOscillationShare
    std::vector<Index> oscillating;      ///< flagged steps with |cos_g_u1| >= kOscillationShare
};

/// The check above on the series of a run file: /spectrum step and lambda_max (rows in any order,
/// a repeated step counts once with its newest row; NaN lambda_max is skipped), alpha, /lyapunov
/// step and the first column of log_growth with qr_every q (a row at step t is the growth through
/// J(t-q+1) .. J(t)), /lyapunov/overlap_step with the first column of overlap (may be empty), and
/// /spectrum/cos_g_u1 row by row with spectrum_step (may be empty or shorter: NaN, not sorted).
MissedInstability find_missed_instability(const Vector& spectrum_step, const Vector& lambda_max, double alpha,
                                          const Vector& lyapunov_step, const Vector& log_growth, Index qr_every,
                                          const Vector& overlap_step, const Vector& overlap,
                                          const Vector& cos_g_u1 = Vector());

/// |cos| of the angle between v and each column of U (orthonormal columns): |U^T v| / |v|.
Vector overlaps(const Vector& v, const Matrix& U);

}  // namespace tdyn
