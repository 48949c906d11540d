// Linear response of training: the derivative d<Phi>/d gamma of a long-time average
// <Phi> = lim (1/N) sum_n Phi(x_n) along x_{n+1} = f(x_n; gamma), for any map that can apply
// its Jacobian, its transpose, its second derivative and its parameter derivative
// X = df/d gamma (ResponseMap). Three estimates (docs/RESPONSE.md, design note response.md):
//  - unrolled: conventional backpropagation through the T steps, d/d gamma of the finite-T
//    average with x_0 fixed; grows like exp(lambda_1 T) when the map is chaotic;
//  - FAR, Ni's fast adjoint response (arXiv 2111.07692; signs and indices as niangxiu/far
//    far.py): d<Phi>/d gamma = shadowing + unstable, u tangent and u + 2 adjoint vectors;
//  - the shadowing part alone (NILSAS-like: no second derivative, no window);
//  - kernel differentiation of the noisy map (no hyperbolicity assumed; below).
// Memory: the state at each segment start and the tangent basis Q_k (u vectors) per segment
// are held; the forward phase also keeps the states, tangent blocks and memos of each step of its
// last segments (as many as FarOptions::keep_bytes allows), and the adjoint recomputes the
// others one segment (m + 1 states, m + 1 tangent blocks) at a time: the same bits either way.
#pragma once

#include "tdyn/data.hpp"
#include "tdyn/evaluation.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace tdyn {

/// A map x_{n+1} = f_n(x_n; gamma) with an observable Phi, at its current state x_n (at()).
class ResponseMap {
public:
    virtual ~ResponseMap() = default;
    virtual Index dim() const = 0;
    /// Moves the map to state x at step n (maps may depend on n).
    virtual void at(Index n, const Vector& x) = 0;
    /// f(x_n)
    virtual Vector next() = 0;
    /// Phi(x_n) and grad Phi(x_n)
    virtual double phi() = 0;
    virtual Vector grad_phi() = 0;
    /// JV = Df(x_n) V
    virtual void jacobian(const Matrix& V, Matrix& JV) = 0;
    /// JtW = Df(x_n)^T W
    virtual void jacobian_transpose(const Matrix& W, Matrix& JtW) = 0;
    /// X = d f / d gamma at x_n
    virtual Vector param_derivative() = 0;
    /// sum_j eps_j . (d_x X) e_j at x_n; Je = Df(x_n) e is given (gradient descent reads H e from it).
    virtual double param_derivative_trace(const Matrix& e, const Matrix& Je, const Matrix& eps) = 0;
    /// omega = sum_j D^2 f(x_n)[e_j, .]^T eps_j, i.e. omega_k = sum_j sum_il eps_ij d2f_i/dx_l dx_k e_lj.
    virtual Vector second_derivative(const Matrix& e, const Matrix& eps) = 0;
    /// second_derivative(e, eps), and JtEps = Df(x_n)^T eps with it, for maps whose pass for omega
    /// also gives J^T eps (gradient descent: the third-order R-operator's R_eps lines give H eps).
    virtual Vector second_derivative(const Matrix& e, const Matrix& eps, Matrix& JtEps) {
        jacobian_transpose(eps, JtEps);
        return second_derivative(e, eps);
    }
    /// Removes exactly neutral directions (invariant, J v = v) from tangent and adjoint vectors.
    virtual void project(Matrix& V) const {}
    /// What the map would keep of x_n, once next() has run there, for a later revisit of x_n
    /// (gradient descent: the gradient next() computed); empty: nothing (the default).
    virtual Vector memo() { return {}; }
    /// at(n, x) for a state visited before, with the memo() it left: the same results, less work
    /// (gradient descent: no gradient product). The default ignores the memo.
    virtual void revisit(Index n, const Vector& x, const Vector& memo) { at(n, x); }
};

/// Called as work proceeds: phase ("primal", "tangent", "adjoint"), steps done, steps in all.
using ResponseProgress = std::function<void(const std::string& phase, Index done, Index total)>;

struct UnrolledResult {
    Index steps = 0;         ///< T
    double average = 0;      ///< <Phi>_T = (1/T) sum_{n=1}^{T} Phi(x_n)
    double derivative = 0;   ///< d<Phi>_T / d gamma with x_0 fixed
    Vector adjoint_norm;     ///< |lambda_n|, n = 0..T (lambda_T = grad Phi(x_T) / T)
    double growth_rate = 0;  ///< least-squares slope of ln |lambda_n| against T - n (per step)
    /// (ln |lambda_0| - ln |lambda_T|) / T: the mean log growth per step, the adjoint's own
    /// Lyapunov-type rate, to compare with lambda_1. When the growth comes in bursts the
    /// least-squares slope weights them by where they fall and is biased low (docs/RESPONSE.md).
    double mean_log_growth = 0;
};

/// (ln |lambda_0| - ln |lambda_T|) / T of the adjoint norms |lambda_n|, n = 0..T (NaN if either
/// end is 0 or not finite).
double mean_log_growth(const Vector& adjoint_norm);

/// Backpropagation through T steps from x_0 (the map's steps first .. first + T):
/// lambda_T = grad Phi_T / T; for n = T-1..0: g += lambda_{n+1} . X_n,
/// lambda_n = J_n^T lambda_{n+1} + [n >= 1] grad Phi_n / T. States are recomputed from
/// checkpoints every `checkpoint_every` steps (memory: T / C + C states, and C memos: the gradients, for gradient descent).
UnrolledResult unrolled_response(ResponseMap& map, const Vector& x0, Index first, Index T, Index checkpoint_every = 50,
                                 const ResponseProgress& progress = {});

struct FarOptions {
    Index unstable = 1;         ///< u tangent vectors (the unstable dimension; 0: shadowing of a stable map)
    Index segment = 20;         ///< m steps per segment (QR at each segment end)
    Index window = 10;          ///< W: psi_n = sum_{w=-W}^{W} (Phi_{n+w} - Phi_bar)
    Index segments = 100;       ///< K segments: N = K m steps, the primal runs N + 2W steps
    bool unstable_part = true;  ///< false: the shadowing part alone (no nu~, no second derivative)
    std::uint64_t seed = 0;     ///< the random initial tangent basis
    /// The tangent basis at x_0 (dim x u), e.g. aligned beforehand by align_tangent_basis; empty:
    /// the seeded random orthonormal basis, which only the first W steps align.
    Matrix initial_basis;
    /// Bytes for the per-step states, tangent blocks and the map's memos (the gradient, for
    /// gradient descent) the forward phase keeps for the adjoint, 8 (m + 1)(u + 2) dim a segment;
    /// the adjoint recomputes the segments that did not fit (1 state update + u Jacobian products
    /// a step). 0: recompute every segment.
    double keep_bytes = 2e9;
};
/// Checks the options against the map's dimension; throws Error naming the option.
void check_far_options(const FarOptions& o, Index dim);

struct FarResult {
    Index steps = 0;           ///< N = K m
    double average = 0;        ///< Phi_bar over the N + 2W + 1 states
    double shadowing = 0;      ///< sc = (1/N) sum_n nu_{n+1} . X_n
    double unstable = 0;       ///< -uc = -(1/N) sum_n psi_{n+1} [nu~_{n+1} . X_n + sum_j eps_{n+1,j} . (d X_n) e_{n,j}]
    double derivative = 0;     ///< shadowing + unstable
    double stderr_ = 0;        ///< standard error of the derivative by batch means over segments
    Vector exponents;          ///< Lyapunov exponents of the u tangent vectors (per step)
    Vector segment_shadowing;  ///< per segment k: its share of sc (times K: the segment's own estimate)
    Vector segment_unstable;   ///< likewise for the unstable part
    bool finished = true;      ///< false: stopped by the segment callback (the state holds the progress)
    Index recomputed = 0;      ///< segments the adjoint recomputed (not kept by the forward phase)
};

/// Everything FAR needs to continue where it stopped, at a segment boundary (the CLI keeps it in
/// the run file). Forward phase: the segment starts k = 0 .. started - 1 with their state
/// x_{W+km} and e = Q_k R_k there, and Phi_0 .. Phi_{phi_count - 1}. Adjoint phase: segments
/// K - 1 .. K - adjoint_done are done; block = [eps | nu' | nu~'] after the last of them and
/// the per-segment sums b, b~ (u x (K + 1)), g, gpsi (u x K), sp, up (K).
struct FarState {
    Index started = 0, phi_count = 0, adjoint_done = 0;
    bool forward_done = false;
    std::vector<Vector> cp;
    std::vector<Matrix> Q, R;
    Vector Phi;
    Matrix block, b, bt, g, gpsi;
    Vector sp, up;
};
/// Called after each segment start of the forward phase (once its state is in FarState), after the
/// forward phase's last 2W steps, and after each segment of the adjoint; false stops FAR there.
using FarSegmentDone = std::function<bool(const FarState&)>;

/// FAR from x_0 at map step `first`: the primal runs x_0 .. x_{N+2W}; segment k covers
/// x_{W+km} .. x_{W+(k+1)m}; the tangent vectors start at x_0 from options.initial_basis (or a
/// random basis, which only the first W steps align).
/// With `state`, FAR continues from it (empty: from the start) and leaves its progress there;
/// a pass stopped by `on_segment` and continued from its state gives the bits of one pass.
FarResult far_response(ResponseMap& map, const Vector& x0, Index first, const FarOptions& options,
                       const ResponseProgress& progress = {}, FarState* state = nullptr,
                       const FarSegmentDone& on_segment = {});

/// A tangent basis aligned with the leading Lyapunov directions at x_A: the seeded random
/// orthonormal basis of FarOptions::seed (the one FAR would start from) carried A steps from x_0,
/// x_0 .. x_{A-1} at the map's steps first .. first + A - 1 (neutral directions projected out),
/// QR every q steps. A component along vector i + 1 decays relative to vector i like
/// exp(-(lambda_i - lambda_{i+1}) A): alignment takes a few 1/gap steps (design note 1.3).
struct AlignedBasis {
    Matrix basis;      ///< dim x u, orthonormal (QR with R_ii >= 0) at x_A
    Vector exponents;  ///< the u finite-time exponents over the A steps (per step, in QR order)
    Vector end;        ///< x_A as the map computed it
};
/// Cost: A states and A u Jacobian products. A = 0 returns the random basis at x_0.
AlignedBasis align_tangent_basis(ResponseMap& map, const Vector& x0, Index first, Index steps, Index vectors,
                                 Index qr_every, std::uint64_t seed, const ResponseProgress& progress = {});

struct BurnInOptions {
    Index vectors = 8;       ///< M tangent vectors (U is at most M)
    Index steps = 200;       ///< B map steps from x_0
    Index qr_every = 10;     ///< q: QR every q steps
    Index warmup = 50;       ///< the first steps align the basis and do not count (multiple of q)
    double threshold = 0;    ///< U = #{exponents > threshold}
    std::uint64_t seed = 0;  ///< the random initial basis
};
struct UnstableEstimate {
    Index unstable = 0;  ///< U
    Vector exponents;    ///< the M finite-time exponents over steps warmup..B (per step, in QR order)
};
/// The unstable dimension U estimated in a burn-in: M tangent vectors carried B steps from x_0
/// (the map's steps first .. first + B - 1; the map's neutral directions projected out), QR every
/// q steps; U counts the exponents above the threshold. Cost: B M Jacobian products.
UnstableEstimate estimate_unstable_dim(ResponseMap& map, const Vector& x0, Index first, const BurnInOptions& options,
                                       const ResponseProgress& progress = {});

// ------------------------------------------------------------------------------------------
// Kernel differentiation (likelihood ratio) for the noisy map x_{n+1} = f(x_n) + sigma P xi_n,
// xi_n standard normal, fresh each step (design note 1.3; Ni 2023-25). No hyperbolicity needed:
// d/dgamma log p(x_{n+1} | x_n) = xi_n . X_n / sigma, so
//   d<Phi>/dgamma = sum_{w=1}^{W} E[(Phi_{n+w} - Phi_bar) X_n . xi_n / sigma]
// (w = 1: x_{n+1} is the first state xi_n moves). P = the map's project(): noise along exactly
// neutral directions never reaches Phi and would only add variance. Cost: one f and one X a step.

/// xi_n of the noisy map: P-dimensional standard normal from (seed, n), so any step's noise is
/// drawn without the others (a continued chain and the +-H pair of a noisy ensemble share it).
Vector step_noise(Index dim, std::uint64_t seed, Index n);

struct KernelOptions {
    Index steps = 10000;     ///< T: the chain x_0 .. x_T
    Index burn_in = 0;       ///< B: sources xi_n count from n = B, Phi_bar over Phi_{B+1} .. Phi_T
    Index window = 10;       ///< W >= 1 (truncation of the sum over w)
    double sigma = 1e-3;     ///< noise per coordinate, > 0
    std::uint64_t seed = 0;  ///< the noise xi_n = step_noise(dim, seed, n)
    Index batches = 10;      ///< batch means of the sources n (each batch >> W steps long)
};
/// Checks the options; throws Error naming the option.
void check_kernel_options(const KernelOptions& o);

/// The running sums after state x_n: enough to continue the chain (O(W + batches) scalars and x_n).
struct KernelState {
    Index n = 0;         ///< x_n is the next state to evaluate
    Vector x;            ///< x_n (empty: not started)
    Vector s;            ///< ring of s_m = X_m . xi_m / sigma, slot m % W
    Vector A, S;         ///< per w: sum Phi_{m+w} s_m and sum s_m over the counted sources m
    Matrix batch_A;      ///< W x batches: per w and batch, sum Phi_{m+w} s_m
    Vector batch_S;      ///< per batch: sum s_m
    Vector batch_count;  ///< sources per batch
    double phi_sum = 0;  ///< sum of Phi_m, m = B+1 .. n-1
};
/// Called every `every` steps with the state; false stops the chain there (result.finished = false).
using KernelCheckpoint = std::function<bool(const KernelState&)>;

struct KernelResult {
    double derivative = 0;  ///< sum_w contribution[w]
    double stderr_ = 0;     ///< batch means over the sources (batch_stderr of the batch estimates)
    double average = 0;     ///< Phi_bar of the noisy chain
    Vector contribution;    ///< W: E[(Phi_{n+w} - Phi_bar) s_n], w = 1..W (the truncation shows here)
    Vector partial_stderr;  ///< W: the standard error of the partial sum over w' <= w (batch means)
    Vector batch;           ///< the derivative (all W terms) estimated from each batch of sources
    Index sources = 0;      ///< N = T - W - B + 1 sources n = B .. T - W
    bool finished = true;
};

/// The kernel-differentiation estimate on the noisy chain from x_0 at map step `first`. With
/// `state` it continues from (and leaves its progress in) it; stopped and continued gives the
/// bits of one pass.
KernelResult kernel_response(ResponseMap& map, const Vector& x0, Index first, const KernelOptions& options,
                             const ResponseProgress& progress = {}, KernelState* state = nullptr,
                             const KernelCheckpoint& checkpoint = {}, Index every = 100);

/// Phi_bar = mean of Phi_{B+1} .. Phi_T along the noisy chain of `options` (its noise, its
/// sigma): one member of a noisy finite-difference ensemble (+-H share the seed). NaN if the
/// chain leaves the finite numbers.
double noisy_average(ResponseMap& map, const Vector& x0, Index first, const KernelOptions& options);

/// Standard error of the mean of `v` by B consecutive batch means (B = min(size, 10)).
double batch_stderr(const Vector& v);

// ------------------------------------------------------------------------------------------
// Gradient descent on a network: theta_{n+1} = theta_n - alpha (grad L + lambda theta_n).

enum class ResponseParam { LearningRate, WeightDecay };
enum class Observable { Loss, TestLoss };
ResponseParam parse_response_param(const std::string& name);  ///< "lr" | "weight-decay"; throws Error
Observable parse_observable(const std::string& name);         ///< "loss" | "test-loss"; throws Error
std::string to_string(ResponseParam p);
std::string to_string(Observable o);
/// How the GD map computes omega = -alpha sum_j grad(eps_j^T H e_j): exactly by the third-order
/// R-operator (Evaluation::third_order_times), or by central differences of exact HVPs along
/// the unit e^_j (the older passes' method, kept so they continue to their own bits).
enum class SecondDerivative { ROperator, Differences };
SecondDerivative parse_second_derivative(const std::string& name);  ///< "r-operator" | "differences"; throws Error
std::string to_string(SecondDerivative s);

/// The full-batch gradient-descent map as a ResponseMap:
///   J v = v - alpha H v (symmetric, so J^T = J), H the Hessian of L + lambda/2 |theta|^2;
///   X = -(grad L + lambda theta) for alpha, -alpha theta for lambda;
///   sum_j eps_j.(dX) e_j = -sum_j eps_j.H e_j = -sum_j eps_j.(e_j - J e_j)/alpha for alpha,
///   -alpha sum_j eps_j.e_j for lambda;
///   omega = -alpha sum_j grad(eps_j^T H e_j): by default exact, the third-order R-operator
///   (one pass per j); or -alpha sum_j [H(theta + h e^_j) - H(theta - h e^_j)] eps_j |e_j| / (2h),
///   central differences of HVPs along the unit e^_j, step h (tests/response_test.cpp measures both);
///   Phi = L (the data term, as /trajectory/loss) or the test loss.
/// For softmax-CE, the h+1 directions that add one constant to every class weight of a hidden
/// unit (a row of W_L) or to every entry of b_L leave L unchanged: project() removes them.
class GradientDescentMap : public ResponseMap {
public:
    /// `train` and `test` (test: only for Observable::TestLoss) must outlive the map.
    GradientDescentMap(const Architecture& arch, const Dataset& train, double alpha, double lambda, ResponseParam param,
                       Observable observable, const Dataset* test = nullptr, Precision precision = Precision::F64,
                       XPath x_path = XPath::Auto);
    ~GradientDescentMap() override;

    Index dim() const override { return m_arch.num_params(); }
    void at(Index n, const Vector& theta) override;
    Vector next() override;
    double phi() override;
    Vector grad_phi() override;
    void jacobian(const Matrix& V, Matrix& JV) override;
    void jacobian_transpose(const Matrix& W, Matrix& JtW) override { jacobian(W, JtW); }
    Vector param_derivative() override;
    double param_derivative_trace(const Matrix& e, const Matrix& Je, const Matrix& eps) override;
    Vector second_derivative(const Matrix& e, const Matrix& eps) override;
    Vector second_derivative(const Matrix& e, const Matrix& eps, Matrix& JtEps) override;
    void project(Matrix& V) const override;
    Vector memo() override { return m_eval->gradient(); }
    void revisit(Index n, const Vector& theta, const Vector& gradient) override;

    /// How omega is computed (default: the exact third-order R-operator).
    void set_second_derivative(SecondDerivative s) { m_second = s; }
    SecondDerivative second_derivative_method() const { return m_second; }
    /// The step h of the central differences (default 1e-5, in units of theta along a unit vector).
    void set_difference_step(double h) { m_h = h; }
    double alpha() const { return m_alpha; }
    double lambda() const { return m_lambda; }
    Evaluation& evaluation() { return *m_eval; }
    /// HVPs so far (a block of M counts M), the differences' included.
    Index hvps() const { return m_hvps; }
    /// Gradients so far (one per at()).
    Index gradients() const { return m_gradients; }
    /// Revisits so far: evaluations at a state whose gradient was kept (one forward pass each).
    Index revisits() const { return m_revisits; }
    /// Evaluations at theta +- h e^_j so far (the second-derivative differences; forward and backward pass).
    Index shifted_evaluations() const { return m_shifted_evaluations; }
    /// Third-order R-operator passes so far (one per pair e_j, eps_j).
    Index third_order_products() const { return m_third_order; }

private:
    Architecture m_arch;
    double m_alpha, m_lambda;
    ResponseParam m_param;
    Observable m_observable;
    std::unique_ptr<InputMatrix> m_X, m_X_test;
    std::unique_ptr<Evaluation> m_eval, m_shifted, m_test;
    double m_h = 1e-5;
    SecondDerivative m_second = SecondDerivative::ROperator;
    Index m_hvps = 0, m_gradients = 0, m_revisits = 0, m_shifted_evaluations = 0, m_third_order = 0;
};

/// The h+1 exactly neutral directions of a softmax-CE network (h the last hidden width) as an
/// orthonormal basis (P x (h+1)); empty for other outputs.
Matrix neutral_directions(const Architecture& arch);

}  // namespace tdyn
