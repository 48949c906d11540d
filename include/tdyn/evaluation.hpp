// The Evaluation at one theta: one forward pass, cached, serves the loss, the accuracy,
// the gradient (batched backprop, seeds 003/004), the input derivatives (seed 001 Q2)
// and every Hessian-vector product at that theta (hvp.hpp). Every product with X goes
// through InputMatrix, which is where speed is won without callers changing.
#pragma once

#include "tdyn/comm.hpp"
#include "tdyn/common.hpp"
#include "tdyn/data.hpp"
#include "tdyn/network.hpp"

#include <cstdint>
#include <memory>
#include <vector>

namespace tdyn {

/// How the products with X are computed. All paths give the same result up to rounding
/// (float32: about 1e-7 relative, see docs/MATH.md).
enum class XPath { Auto, Dense, Sparse };
enum class Precision { F64, F32 };
Precision parse_precision(const std::string& name);  ///< "f64" | "f32"; throws Error
XPath parse_xpath(const std::string& name);          ///< "auto" | "dense" | "sparse"; throws Error

/// The k x d input matrix X (samples are rows) with the products tdyn needs:
/// out = X B and out = X^T C. Built once per data set. What it holds depends on the path:
///   sparse: X's non-zeros row by row (for X B), each its column and its value: the pixel byte
///   for pixel data (5 bytes a non-zero: 45 MB for MNIST), else the value in the path's scalar;
///   and the same non-zeros by columns in blocks of 64 rows (for X^T C; pixel data: 2 bytes a
///   non-zero, 18 MB for MNIST, and 8 (d + 1) bytes a block, 6 MB);
///   dense float32: X in float (4 k d bytes);
///   dense float64: a view of float64 X (which must outlive it), or for pixel data (InputData)
///   its own k x d float64 copy, pixel / 255 (8 k d bytes: 376 MB for MNIST).
/// Every path's entries are those of the float64 X (pixel / 255), cast to the path's scalar.
class InputMatrix {
public:
    /// `path` Auto picks the sparse path when the measured density is below
    /// `sparse_threshold` (MNIST: about 0.19). With `comm` (X is one rank's block of rows) the
    /// density is that of all ranks' rows, so every rank takes the same path (collective). X is taken as the row-major float64 matrix itself:
    /// anything else (column-major, float, a temporary) would be converted into a temporary that
    /// dies with the call, so it does not compile (the deleted overload below).
    explicit InputMatrix(const RowMatrix& X, XPath path = XPath::Auto, Precision precision = Precision::F64,
                         double sparse_threshold = 0.3, const SampleComm* comm = nullptr);
    InputMatrix(const RowMatrix&& X, XPath path = XPath::Auto, Precision precision = Precision::F64,
                double sparse_threshold = 0.3, const SampleComm* comm = nullptr) = delete;
    /// From a data set's X: float64 values as above (viewed on the dense float64 path, so they
    /// must outlive it); pixels are read once into what the path holds (no float64 copy unless
    /// the path is dense float64), and the InputData may go away afterwards.
    explicit InputMatrix(const InputData& X, XPath path = XPath::Auto, Precision precision = Precision::F64,
                         double sparse_threshold = 0.3, const SampleComm* comm = nullptr);
    InputMatrix(const InputData&& X, XPath path = XPath::Auto, Precision precision = Precision::F64,
                double sparse_threshold = 0.3, const SampleComm* comm = nullptr) = delete;
    Index rows() const { return m_X.rows(); }
    Index cols() const { return m_X.cols(); }
    double density() const { return m_density; }
    bool sparse() const { return m_sparse; }
    Precision precision() const { return m_precision; }

    /// out = X B  (k x n), B is d x n
    void times(const Eigen::Ref<const RowMatrix>& B, RowMatrix& out) const;
    /// out = X^T C  (d x n), C is k x n
    void transpose_times(const Eigen::Ref<const RowMatrix>& C, RowMatrix& out) const;

private:
    friend class Evaluation;
    template <class S>
    using RowMatrixT = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    /// out = X B and out = X^T C in the path's own scalar S (double for F64, float for F32),
    /// into caller-owned storage of the right size: no casts, no allocation once the
    /// scratch has grown. The Evaluation keeps its wide R-operator blocks in S.
    template <class S>
    void product(const Eigen::Ref<const RowMatrixT<S>>& B, Eigen::Ref<RowMatrixT<S>> out) const;
    template <class S>
    void transpose_product(const Eigen::Ref<const RowMatrixT<S>>& C, Eigen::Ref<RowMatrixT<S>> out) const;
    /// X^T C as sum over fixed row chunks of X_chunk^T C_chunk (their number depends on k alone),
    /// each into its own d x n accumulator, then summed in chunk order: the same bits for any
    /// thread count. Dense chunks use Eigen's GEMM, sparse ones scatter the rows of C through
    /// X's non-zeros.
    template <class S>
    void chunked_transpose_product(const Eigen::Ref<const RowMatrixT<S>>& C, Eigen::Ref<RowMatrixT<S>> out) const;

    /// The path's choice and storage from X's entries x(i, j) (float64 values, or pixel bytes with
    /// x = pixel / 255) and its non-zero count.
    template <class Entry>
    void build(Entry x, Index nonzeros, XPath path, double sparse_threshold, const SampleComm* comm);
    /// The sparse path's storage: X's non-zeros (entries whose value in the path's scalar is not 0).
    template <class Entry>
    void build_nonzeros(Entry x);
    /// The sparse path's tiles (m_split, m_tstart, ...) from its rows.
    void build_tiles();
    /// Calls f(value) with value(p) = non-zero p's x in scalar S (pixel data: a 256-entry table),
    /// p counting the rows' non-zeros (by_columns false) or the column blocks' (true).
    template <class S, class F>
    void with_values(bool by_columns, F&& f) const;

    Eigen::Map<const RowMatrix> m_X;  // X in float64 (dense float64 path; else only its shape)
    RowMatrix m_Xown;                 // X in float64, owned (dense float64 path over pixels)
    double m_density = 1;
    bool m_sparse = false;
    Precision m_precision = Precision::F64;
    // The sparse path: row i's non-zeros are [m_start[i], m_start[i + 1]), in ascending column
    // (m_col), with their values as pixel bytes (m_pixel, x = pixel / 255) or, for float data,
    // in the path's scalar (m_val64 or m_val32).
    bool m_pixels = false;
    std::vector<Index> m_start;
    // (resize leaves them uninitialised: the parallel fill writes every entry, so there is no
    // serial zeroing pass and the first-touch page faults happen in the fill's threads)
    std::vector<std::int32_t, NoInitAllocator<std::int32_t>> m_col;
    std::vector<std::uint8_t, NoInitAllocator<std::uint8_t>> m_pixel;
    std::vector<double> m_val64;
    std::vector<float> m_val32;
    // X B reads row i's non-zeros in blocks of 128 columns: block J's are
    // [m_split[i (J_n + 1) + J], m_split[i (J_n + 1) + J + 1]) (J_n blocks).
    std::vector<Index> m_split;
    // The same non-zeros by columns, for X^T C, in blocks of at most 64 rows, each
    // inside one row chunk: block b starts at row m_block_row0[b]; chunk t's blocks are
    // [m_chunk_block[t], m_chunk_block[t + 1]); block b's column j holds the non-zeros
    // [m_tstart[b (d + 1) + j], m_tstart[b (d + 1) + j + 1]), in ascending row, each its row
    // within the block (m_trow) and its value stored as the rows' are (m_tpixel, m_tval64,
    // m_tval32). Pixel data: 2 bytes a non-zero (18 MB for MNIST).
    std::vector<Index> m_block_row0, m_chunk_block, m_tstart;
    std::vector<std::uint8_t, NoInitAllocator<std::uint8_t>> m_trow, m_tpixel;
    std::vector<double> m_tval64;
    std::vector<float> m_tval32;
    RowMatrixF m_X32;  // X in float (F32 dense path)
    // Scratch, grown on demand and kept: the float casts of the public times/transpose_times
    // on the F32 path, and the d x n accumulators of X^T C (one per thread). Because of it, one
    // InputMatrix must not serve two products at the same time from different threads
    // (tdyn runs one Evaluation at a time; give each concurrent Evaluation its own InputMatrix).
    mutable RowMatrixF m_in32, m_out32;
    mutable std::vector<RowMatrix> m_acc64;
    mutable std::vector<RowMatrixF> m_acc32;
};

/// Settings of an Evaluation beyond the network and the data.
struct EvaluationOptions {
    /// lambda >= 0: the objective is L(theta) + lambda/2 |theta|^2 (0: the data term alone).
    double weight_decay = 0.0;
    /// How the sums over samples are combined across processes; nullptr: this process holds
    /// every sample (local_comm()). Must outlive the Evaluation.
    const SampleComm* comm = nullptr;
};

/// Forward pass, loss and derivatives of the network at theta on the data (X, T).
/// Holds references to X and T (they must outlive it) and copies of arch and theta.
/// The objective is the mean over the GLOBAL samples (all ranks of the comm) plus weight decay:
///     E(theta) = L(theta) + lambda/2 |theta|^2,   L = (1/k) sum_i l(y_i, t_i).
class Evaluation {
public:
    Evaluation(const Architecture& arch, const InputMatrix& X, const RowMatrix& T,
               const EvaluationOptions& options = {});
    Evaluation(const Architecture& arch, const InputMatrix& X, const RowMatrix& T, const Vector& theta,
               const EvaluationOptions& options = {});
    /// T is held by reference: a temporary (or a column-major or float matrix, which would be
    /// converted into one) would dangle, so these do not compile.
    Evaluation(const Architecture&, const InputMatrix&, const RowMatrix&&, const EvaluationOptions& = {}) = delete;
    Evaluation(const Architecture&, const InputMatrix&, const RowMatrix&&, const Vector&,
               const EvaluationOptions& = {}) = delete;

    /// Sets lambda of the objective L + lambda/2 |theta|^2; throws Error naming weight_decay
    /// unless lambda is finite and >= 0. The gradient is recomputed on its next use.
    void set_weight_decay(double lambda);
    double weight_decay() const { return m_lambda; }
    const SampleComm& comm() const { return *m_comm; }

    /// Moves the evaluation to a new theta: one forward pass, buffers reused.
    void reset(const Vector& theta);
    /// Moves to theta whose gradient (of this objective: same network, data and lambda) is already
    /// known, e.g. computed there by an earlier pass: gradient() returns it, and the products
    /// compute backprop's delta_l without the gradient's products with X. The caller vouches for
    /// it; given the bits gradient() computed at theta, everything after is the same bits.
    void reset(const Vector& theta, const Vector& gradient);

    const Architecture& arch() const { return m_arch; }
    const Vector& theta() const { return m_theta; }
    Index samples() const { return m_X.rows(); }         ///< rows held here (local k)
    Index global_samples() const { return m_k_global; }  ///< k of the means: rows of all ranks
    Index num_params() const { return m_theta.size(); }

    double loss() const { return m_loss; }            ///< L(theta) + lambda/2 |theta|^2
    double data_loss() const { return m_data_loss; }  ///< L(theta), mean over samples
    double accuracy() const { return m_accuracy; }    ///< fraction of rows with argmax y = argmax t
    const RowMatrix& output() const { return m_Y; }   ///< Y (local k x c)
    /// grad L(theta) + lambda theta, in theta's layout; computed on first call, then cached.
    const Vector& gradient();

    /// dL/dX (local k x d) = delta_1 W_1^T: the input derivative of the mean loss (the data term;
    /// weight decay does not depend on X).
    RowMatrix input_gradient();
    /// dy/dx (c x d) for sample i, reverse mode: G_L = dy/dA_L, G_{l-1} = (G_l W_l^T) diag f'(A_{l-1}),
    /// dy/dx = G_1 W_1^T.
    RowMatrix output_jacobian_reverse(Index i) const;
    /// dy/dx for sample i, forward mode: T_1 = W_1^T, T_l = W_l^T diag f'(A_{l-1}) T_{l-1},
    /// dy/dx = (dy/dA_L) T_L.
    RowMatrix output_jacobian_forward(Index i) const;

    /// H V for a block V (P x M), written to HV (P x M): exact, by the R-operator (hvp.cpp).
    /// H = d^2 L / dtheta^2 + lambda I, the Hessian of the objective.
    void hessian_times(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> HV);
    /// G V with the Gauss-Newton matrix of the objective, G = J_A^T (d2 L / dA_L^2) J_A + lambda I
    /// with the (y - t) residual term of d2 L / dA_L^2 dropped (sigmoid-mse: J_y^T J_y / k),
    /// J_A = dA_L / dtheta; the weight-decay term is quadratic, so its Hessian lambda I is its own
    /// Gauss-Newton part (hvp.cpp, docs/MATH.md).
    void gauss_newton_times(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> GV);
    /// The third-order R-operator: column j of out = grad_theta (v_j^T H e_j) = D^3 L[e_j, v_j, .],
    /// exact (R along e_j of every line of the H v pass, hvp.cpp); E, V and out are P x M. Weight
    /// decay's third derivative is 0. Costs about two HVPs' forward passes and one backward pass:
    /// two products with X and one with X^T per pair, against 4 + 2 for central differences of
    /// H v (two shifted forward passes and two HVPs).
    void third_order_times(const Eigen::Ref<const Matrix>& E, const Eigen::Ref<const Matrix>& V,
                           Eigen::Ref<Matrix> out);
    /// The same, and HV = H V (as hessian_times) from the pass's R_v lines: V's products with X
    /// are shared, and the X^T product joins the wide one, so H V costs about a third of an HVP.
    /// Bits of HV differ from hessian_times' in the last places (other summation order).
    void third_order_times(const Eigen::Ref<const Matrix>& E, const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out,
                           Eigen::Ref<Matrix> HV);
    /// Products only: the products above need backprop's delta_l but not the gradient, whose
    /// product with X is then skipped (an Evaluation at theta +- h v that only serves differences
    /// of H v). Same bits; gradient() still computes the gradient when asked.
    void set_products_only(bool on) { m_products_only = on; }

private:
    void ensure_deltas();  ///< what the products need first: backprop's delta_l (and the gradient)
    void third_order(const Eigen::Ref<const Matrix>& E, const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out,
                     Eigen::Ref<Matrix>* HV);
    void forward();
    /// delta_l of every layer and, with_gradient, the gradient from them.
    void backward(bool with_gradient = true);
    /// dy/dA_L for sample i (c x c).
    RowMatrix output_derivative(Index i) const;
    void block_product(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out, bool gauss_newton);

    Architecture m_arch;
    const InputMatrix& m_X;
    Eigen::Map<const RowMatrix> m_T;
    const SampleComm* m_comm;
    Index m_k_global = 0;  // sum over ranks of the rows: the k of every mean
    double m_lambda = 0;   // weight decay
    Vector m_theta;
    std::vector<RowMatrix> m_A;      // A_l, l = 1..L (index l-1), k x n_l
    std::vector<RowMatrix> m_Z;      // Z_l = f(A_l), hidden layers only (index l-1)
    RowMatrix m_Y;                   // output y = g(A_L)
    std::vector<RowMatrix> m_delta;  // delta_l = dL/dA_l (index l-1)
    Vector m_grad;
    double m_loss = 0, m_data_loss = 0, m_accuracy = 0;
    bool m_have_gradient = false;
    bool m_have_deltas = false, m_products_only = false;
    // HVP scratch (hvp.cpp): f'(A_l), f''(A_l) of hidden layers, and the wide R-operator blocks.
    std::vector<RowMatrix> m_fd1, m_fd2;
    bool m_have_curvature = false;
    /// The block product in the wide scalar S of the X path (hvp.cpp), on chunks of vectors.
    template <class S>
    void block_chunk(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out, bool gauss_newton);
    /// Element-wise passes over the hidden layers (evaluation.cpp), vectorised and row-parallel:
    /// D1 = f'(A) (from Z = f(A) where f' is a function of f); D2 .*= f''(A).
    void derivative_rows(const RowMatrix& A, const RowMatrix& Z, RowMatrix& D1, RowMatrix* D2) const;
    template <class S>
    using RowMatrixT = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    /// out = A^T B (A k x p, B k x q) as fixed-order sums over row chunks (their number depends
    /// on k alone): the same bits for any thread count.
    void chunked_at_b(const Eigen::Ref<const RowMatrix>& A, const Eigen::Ref<const RowMatrix>& B,
                      Eigen::Ref<RowMatrix> out) const;
    /// out[0:n) = column sums of B (k x n), fixed-order over row chunks, accumulated in double.
    template <class S>
    void chunked_colsum(const Eigen::Ref<const RowMatrixT<S>>& B, double* out) const;
    mutable std::vector<RowMatrix> m_acc;  // per-chunk accumulators of chunked_at_b / chunked_colsum
    /// Runs a pass on the calling thread alone when the problem is small (k P below a fixed
    /// bound): sets the thread's own OpenMP thread count, which Eigen's GEMM also reads, to 1,
    /// and restores it on scope exit (evaluation.cpp).
    class SerialIfSmall {
    public:
        explicit SerialIfSmall(const Evaluation& e);
        ~SerialIfSmall();
        SerialIfSmall(const SerialIfSmall&) = delete;
        SerialIfSmall& operator=(const SerialIfSmall&) = delete;

    private:
        int m_saved = 0;
    };
    // Wide R-operator scratch for a chunk of at most m_chunk vectors, kept between products:
    //   m_RA1_64/32 = X [V_W1^(1) ...] (k x n_1 m), then R{delta_1} in place (the X path's scalar)
    //   m_RA[l]: R{A_l} of layers l >= 2, then R{delta_l} over it
    //   R{Z_l} is never stored whole: m_chunk holds one row chunk of it (then of the product
    //   that becomes R{delta_l}) per thread (hvp.cpp)
    //   m_VW1_64/32 = [V_W1^(1) ...] (d x n_1 m), m_XtR_64/32 = X^T R{delta_1} (d x n_1 m)
    //   m_VWcat[l] = [V_Wl^(1) ...], m_VWTcat[l] = [V_Wl^(1)T ...], m_bcat[l] = [V_bl^(1) ...]
    RowMatrix m_RA1_64, m_VW1_64, m_XtR_64;
    RowMatrixF m_RA1_32, m_VW1_32, m_XtR_32;
    std::vector<RowMatrix> m_RA, m_VWcat, m_VWTcat, m_small, m_chunk;
    // Third-order R-operator scratch (hvp.cpp), kept between calls so that a large k does not
    // page-fault fresh buffers every step.
    std::vector<RowMatrix> m_t3;
    std::vector<Eigen::RowVectorXd> m_bcat;
    Vector m_sample_loss;
};

}  // namespace tdyn
