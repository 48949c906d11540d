// Hessian-vector products by the R-operator (Pearlmutter 1994), forward over reverse,
// for a block of M vectors at once. Notation: R{.} is the directional derivative along
// v = (V_W1, V_b1, ..., V_WL, V_bL); Z_0 = X, so R{Z_0} = 0.
//
//   forward:  R{A_1} = X V_W1 + 1 V_b1^T
//             R{Z_l} = f'(A_l) .* R{A_l}
//             R{A_l} = R{Z_{l-1}} W_l + Z_{l-1} V_Wl + 1 V_bl^T
//   output:   R{delta_L} = (d delta_L / d A_L) R{A_L}
//   backward: R{dW_l} = R{Z_{l-1}}^T delta_l + Z_{l-1}^T R{delta_l}     (l = 1: X^T R{delta_1})
//             R{db_l} = column sums of R{delta_l}
//             R{delta_{l-1}} = (R{delta_l} W_l^T + delta_l V_Wl^T) .* f'(A_{l-1})
//                              + (delta_l W_l^T) .* f''(A_{l-1}) .* R{A_{l-1}}
//
// The Gauss-Newton product G v = J^T H_out J v keeps only the output curvature: the same
// forward pass, R{delta_L} without the (y - t) term, and a plain backprop of R{delta_L}.
// The two products with X (first and last lines) are done once for the whole block, as
// one wide product X [V_W1^(1) ... V_W1^(M)] and one X^T [R{delta_1}^(1) ... ].
#include "tdyn/hvp.hpp"
#include "row_chunks.hpp"
#include "tdyn/evaluation.hpp"
#include "tdyn/loss.hpp"

#include <algorithm>
#include <cassert>
#include <type_traits>

namespace tdyn {

namespace {

using detail::kParallelElems;
using detail::max_threads;
using detail::reduce_in_order;
using detail::thread_index;

/// Vectors per chunk of a block: the wide buffers (k x n_1 M, a few of them) stay near
/// 200 MB each, so a block of any size fits in memory and pages stay warm between chunks.
/// Depends on k and the widths only, so results are reproducible.
Index chunk_size(Index k, Index widest, Index M) {
    const double budget = 200e6;                        // bytes per wide float64 buffer
    const double rows = double(std::max<Index>(k, 1));  // a rank may hold no rows
    const Index cap = std::clamp<Index>(Index(std::min(16.0, budget / (8.0 * rows * double(widest)))), 1, 16);
    const Index chunks = (M + cap - 1) / cap;
    return (M + chunks - 1) / chunks;  // even split: 32 -> 8 x 4, not 10 + 10 + 10 + 2
}

Index widest_hidden(const Architecture& arch) { return *std::max_element(arch.widths.begin() + 1, arch.widths.end()); }

}  // namespace

void Evaluation::ensure_deltas() {
    // delta_l, l = 1..L, and the gradient, which callers use next, unless it is not wanted
    // (products only) or already known (reset with a gradient)
    if (!m_products_only && !m_have_gradient) gradient();
    else if (!m_have_deltas) backward(false);
}

void Evaluation::hessian_times(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> HV) {
    // H_E V = H_L V + lambda V
    block_product(V, HV, false);
    if (m_lambda > 0 && V.cols() > 0) HV.noalias() += m_lambda * V;
}

void Evaluation::gauss_newton_times(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> GV) {
    // G_E V = J_A^T (d2L/dA_L^2) J_A V + lambda V
    block_product(V, GV, true);
    if (m_lambda > 0 && V.cols() > 0) GV.noalias() += m_lambda * V;
}

void Evaluation::block_product(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out, bool gauss_newton) {
    const Index L = m_arch.layers(), k = samples(), P = num_params(), M = V.cols();
    assert(V.rows() == P && out.rows() == P && out.cols() == M);
    if (M == 0) return;  // an empty block (block solvers ask for one): nothing to multiply
    ensure_deltas();
    const SerialIfSmall serial(*this);
    if (!m_have_curvature) {
        // f'(A_l) and (delta_{l+1} W_{l+1}^T) .* f''(A_l) for the hidden layers: the same for every v.
        m_fd1.resize(L - 1);
        m_fd2.resize(L - 1);
        for (Index l = 1; l < L; ++l) {
            resize_huge(m_fd2[l - 1], k, m_arch.widths[l]);
            detail::rows_product(m_delta[l], weight(m_arch, m_theta, l + 1).transpose(), m_fd2[l - 1]);  // dL/dZ_l
            derivative_rows(m_A[l - 1], m_Z[l - 1], m_fd1[l - 1], &m_fd2[l - 1]);
        }
        m_have_curvature = true;
    }
    const Index widest = widest_hidden(m_arch);
    const Index mc = chunk_size(k, widest, M);
    for (Index m0 = 0; m0 < M; m0 += mc) {
        const Index n = std::min(mc, M - m0);
        if (m_X.precision() == Precision::F32)
            block_chunk<float>(V.middleCols(m0, n), out.middleCols(m0, n), gauss_newton);
        else block_chunk<double>(V.middleCols(m0, n), out.middleCols(m0, n), gauss_newton);
    }
    // This rank's sums over its samples for the whole block, then the one reduction over ranks.
    if (out.outerStride() == P) m_comm->sum(out.data(), P * M);
    else
        for (Index m = 0; m < M; ++m) m_comm->sum(out.col(m).data(), P);
}

// One chunk of M vectors, every step wide over the chunk. Layout: a wide k x n_l M row-major
// block holds R{A_l}^(1..M) side by side, so row i is [R{a_l}^(1)_i ... R{a_l}^(M)_i]; seen
// as a (k M) x n_l row-major matrix (same memory) its rows are the per-vector rows, and a
// product with W_l acts on every vector at once:  R{Z} W_l  ==  view(R{Z}) * W_l.
template <class S>
void Evaluation::block_chunk(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out, bool gauss_newton) {
    using WideS = RowMatrixT<S>;
    const Index L = m_arch.layers(), k = samples(), M = V.cols();
    const Index d = m_arch.widths[0], n1 = m_arch.widths[1], c = m_arch.outputs();
    const auto& w = m_arch.widths;
    WideS& RA1 = [this]() -> WideS& {
        if constexpr (std::is_same_v<S, float>) return m_RA1_32;
        else return m_RA1_64;
    }();
    WideS& VW1 = [this]() -> WideS& {
        if constexpr (std::is_same_v<S, float>) return m_VW1_32;
        else return m_VW1_64;
    }();
    WideS& XtR = [this]() -> WideS& {
        if constexpr (std::is_same_v<S, float>) return m_XtR_32;
        else return m_XtR_64;
    }();
    m_RA.resize(L + 1);
    m_VWcat.resize(L + 1);
    m_VWTcat.resize(L + 1);
    m_bcat.resize(L + 1);
    auto VW = [&](Index m, Index l) { return ConstRowMap(V.col(m).data() + m_arch.weight_offset(l), w[l - 1], w[l]); };
    auto Vb = [&](Index m, Index l) {
        return Eigen::Map<const Eigen::RowVectorXd>(V.col(m).data() + m_arch.bias_offset(l), w[l]);
    };

    // The small right-hand sides, side by side:
    //   VW1 = [V_W1^(1) ... V_W1^(M)] (d x n_1 M, scalar S);  bcat_l = [V_bl^(1) ... V_bl^(M)]
    //   VWcat_l = [V_Wl^(1) ...] (n_{l-1} x n_l M);  VWTcat_l = [V_Wl^(1)T ...] (n_l x n_{l-1} M)
    VW1.resize(d, n1 * M);
    for (Index m = 0; m < M; ++m) VW1.middleCols(m * n1, n1) = VW(m, 1).template cast<S>();
    for (Index l = 1; l <= L; ++l) {
        m_bcat[l].resize(w[l] * M);
        for (Index m = 0; m < M; ++m) m_bcat[l].segment(m * w[l], w[l]) = Vb(m, l);
        if (l == 1) continue;
        m_VWcat[l].resize(w[l - 1], w[l] * M);
        m_VWTcat[l].resize(w[l], w[l - 1] * M);
        for (Index m = 0; m < M; ++m) {
            m_VWcat[l].middleCols(m * w[l], w[l]) = VW(m, l);
            m_VWTcat[l].middleCols(m * w[l - 1], w[l - 1]) = VW(m, l).transpose();
        }
    }
    const Index wide = k * widest_hidden(m_arch) * M;  // elements of the widest k x n M block

    // ---- forward R-pass
    // R{A_1} = X V_W1 + 1 V_b1^T: one wide product; the bias is added where R{A_1} is read.
    resize_huge(RA1, k, n1 * M);
    m_X.product<S>(VW1, RA1);
    // R{Z_1} = f'(A_1) .* (R{A_1} + 1 V_b1^T) is as wide as R{A_1} but read only twice, by
    // R{A_2} here and by R{dW_2} in the backward pass: it is never stored whole, but built per
    // fixed row chunk of k (row_chunks.hpp) into a per-thread buffer and used at once. Same
    // formulas, same GEMM shapes per row, so the bits are those of whole-matrix passes.
    const Index T = detail::row_chunks(k);
    m_chunk.resize(std::max(1, max_threads()));
    // R{Z_h} = f'(A_h) .* R{A_h} (h = 1: R{A_1} + 1 V_b1^T, the bias not yet added) for rows
    // r0..r0+n-1 of every vector, into a chunk buffer
    auto RZ_rows = [&](Index h, Index r0, Index n, RowMatrix& rz) {
        const Index nh = w[h];
        const RowMatrix& f1 = m_fd1[h - 1];
        resize_huge(rz, n, nh * M);
        if (h == 1) {
            const Eigen::RowVectorXd& b1cat = m_bcat[1];
            for (Index i = 0; i < n; ++i)
                for (Index m = 0; m < M; ++m)
                    rz.row(i).segment(m * nh, nh).array() =
                        f1.row(r0 + i).array() * (RA1.row(r0 + i).segment(m * nh, nh).template cast<double>().array() +
                                                  b1cat.segment(m * nh, nh).array());
            return;
        }
        for (Index i = 0; i < n; ++i)
            for (Index m = 0; m < M; ++m)
                rz.row(i).segment(m * nh, nh).array() =
                    f1.row(r0 + i).array() * m_RA[h].row(r0 + i).segment(m * nh, nh).array();
    };
    for (Index l = 2; l <= L; ++l) {
        const Index h = l - 1, nh = w[h];
        RowMatrix& RA = m_RA[l];
        resize_huge(RA, k, w[l] * M);
        const Eigen::RowVectorXd& blcat = m_bcat[l];
        const auto& Wl = weight(m_arch, m_theta, l);
        // per row chunk: R{A_l} = R{Z_h} W_l + Z_h [V_Wl^(m)] + 1 V_bl^T, with view(R{Z_h}) W_l
        // acting on every vector at once
        detail::for_each_chunk(T, [&](Index t) {
            const Index r0 = detail::chunk_begin(k, t, T), n = detail::chunk_begin(k, t + 1, T) - r0;
            RowMatrix& rz = m_chunk[thread_index()];
            RZ_rows(h, r0, n, rz);
            RowMap(RA.data() + r0 * w[l] * M, n * M, w[l]).noalias() = RowMap(rz.data(), n * M, nh) * Wl;
            RA.middleRows(r0, n).noalias() += m_Z[h - 1].middleRows(r0, n) * m_VWcat[l];
            for (Index i = r0; i < r0 + n; ++i) RA.row(i) += blcat;
        });
    }

    // ---- output: R{delta_L} = (d delta_L / d A_L) R{A_L}, per sample and vector (loss.hpp),
    // over R{A_L} (not read again); Gauss-Newton drops the residual (y - t) term
    if (L == 1) resize_huge(m_RA[1], k, c * M);
    RowMatrix& Rd = m_RA[L];  // R{delta_L}, k x c M, over R{A_L}
    {
        const double inv_k = 1.0 / double(m_k_global);  // the global k of the mean
        if (L == 1) {
            // no hidden layer: R{A_L} = R{A_1} + 1 V_b1^T, in float64
            const Eigen::RowVectorXd& b1cat = m_bcat[1];
#pragma omp parallel for schedule(static) if (wide >= kParallelElems)
            for (Index i = 0; i < k; ++i) m_RA[1].row(i) = RA1.row(i).template cast<double>() + b1cat;
        }
        const double* T = m_T.data();
        const Index t_stride = m_T.outerStride();
        with_loss(m_arch.output, [&](auto policy) {
            using Loss = decltype(policy);
#pragma omp parallel for schedule(static) if (wide >= kParallelElems)
            for (Index i = 0; i < k; ++i) {
                // row i of R{delta_L} for every vector: R{a_L} of sample i is c M wide
                const double* y = m_Y.data() + i * c;
                const double* t = T + i * t_stride;
                const double* ra = m_RA[L].data() + i * c * M;
                double* rd = Rd.data() + i * c * M;
                if (gauss_newton) Loss::r_delta_gauss_newton(y, t, inv_k, ra, rd, c, M);
                else Loss::r_delta(y, t, inv_k, ra, rd, c, M);
            }
        });
    }

    // ---- backward R-pass; R{delta_l} of hidden layers l >= 2 is built over R{A_l} in m_RA[l]
    // (R{A_l} is last read there), and R{delta_1} over R{A_1} in RA1 (scalar S, for X^T).
    m_small.resize(3);
    RowMatrix& G1 = m_small[0];
    RowMatrix& G2 = m_small[1];
    // R{dW_l} = G1 + G2^T and R{db_l} (in m_small[2]) of every vector into out
    auto write_layer = [&](Index l, Index nh, Index nl) {
        for (Index m = 0; m < M; ++m) {
            double* o = out.col(m).data();
            RowMap RgW(o + m_arch.weight_offset(l), nh, nl);
            RgW = G1.middleCols(m * nl, nl);
            if (!gauss_newton) RgW += G2.middleCols(m * nh, nh).transpose();
            Eigen::Map<Eigen::RowVectorXd>(o + m_arch.bias_offset(l), nl) = m_small[2].row(0).segment(m * nl, nl);
        }
    };
    for (Index l = L; l >= 2; --l) {
        const Index h = l - 1, nh = w[h], nl = w[l];
        RowMatrix& Rdl = m_RA[l];  // R{delta_l}, written over R{A_l}
        const auto& Wl = weight(m_arch, m_theta, l);
        const RowMatrix& f1 = m_fd1[h - 1];
        const RowMatrix& f2 = m_fd2[h - 1];
        // R{dW_l} = Z_h^T R{delta_l} + R{Z_h}^T delta_l:  G1 = Z_h^T [R{delta_l}^(m)],
        // G2 = delta_l^T [R{Z_h}^(m)] (each n x n M, fixed-order chunked sums)
        G1.resize(nh, nl * M);
        chunked_at_b(m_Z[h - 1], Rdl, G1);
        // R{db_l} = column sums of R{delta_l}
        m_small[2].resize(1, nl * M);
        chunked_colsum<double>(Rdl, m_small[2].data());
        // Per row chunk, R{Z_h} rebuilt (see the forward pass): its term of G2, the chunk sum of
        // chunked_at_b; then R{delta_h} = P .* f'(A_h) + (delta_l W_l^T) .* f''(A_h) .* R{A_h} with
        // P = R{delta_l} W_l^T + delta_l [V_Wl^(m)T] in the same buffer, written over R{A_h}
        // (h = 1: into RA1, scalar S, for X^T; R{A_1} lacks the bias there).
        G2.resize(nl, nh * M);
        if (Index(m_acc.size()) < T) m_acc.resize(T);
        const Eigen::RowVectorXd& b1cat = m_bcat[1];
        detail::for_each_chunk(T, [&](Index t) {
            const Index r0 = detail::chunk_begin(k, t, T), n = detail::chunk_begin(k, t + 1, T) - r0;
            RowMatrix& p = m_chunk[thread_index()];
            if (!gauss_newton) {
                RZ_rows(h, r0, n, p);
                m_acc[t].noalias() = m_delta[l - 1].middleRows(r0, n).transpose() * p;
            }
            resize_huge(p, n, nh * M);
            RowMap(p.data(), n * M, nh).noalias() = ConstRowMap(Rdl.data() + r0 * nl * M, n * M, nl) * Wl.transpose();
            if (!gauss_newton) p.noalias() += m_delta[l - 1].middleRows(r0, n) * m_VWTcat[l];
            for (Index i = 0; i < n; ++i)
                for (Index m = 0; m < M; ++m) {
                    auto pm = p.row(i).segment(m * nh, nh).array();
                    if (h == 1) {
                        auto ra = RA1.row(r0 + i).segment(m * nh, nh).array();
                        if (gauss_newton) ra = (pm * f1.row(r0 + i).array()).template cast<S>();
                        else
                            ra = (pm * f1.row(r0 + i).array() +
                                  f2.row(r0 + i).array() *
                                      (ra.template cast<double>().array() + b1cat.segment(m * nh, nh).array()))
                                     .template cast<S>();
                    } else {
                        auto ra = m_RA[h].row(r0 + i).segment(m * nh, nh).array();
                        if (gauss_newton) ra = pm * f1.row(r0 + i).array();
                        else ra = pm * f1.row(r0 + i).array() + f2.row(r0 + i).array() * ra;
                    }
                }
        });
        if (!gauss_newton) reduce_in_order(m_acc, T, G2);
        write_layer(l, nh, nl);
    }
    if (L == 1) {
        // no hidden layer: R{delta_1} = R{delta_L}, into the wide S block for X^T
#pragma omp parallel for schedule(static) if (wide >= kParallelElems)
        for (Index i = 0; i < k; ++i) RA1.row(i) = Rd.row(i).template cast<S>();
    }
    // layer 1: R{db_1} = column sums of R{delta_1};  R{dW_1} = X^T R{delta_1}, one wide product
    m_small[2].resize(1, n1 * M);
    chunked_colsum<S>(RA1, m_small[2].data());
    XtR.resize(d, n1 * M);
    m_X.transpose_product<S>(RA1, XtR);
    for (Index m = 0; m < M; ++m) {
        double* o = out.col(m).data();
        RowMap(o + m_arch.weight_offset(1), d, n1) = XtR.middleCols(m * n1, n1).template cast<double>();
        Eigen::Map<Eigen::RowVectorXd>(o + m_arch.bias_offset(1), n1) = m_small[2].row(0).segment(m * n1, n1);
    }
}

}  // namespace tdyn

namespace tdyn {

void HessianOp::perform_op(const Scalar* x_in, Scalar* y_out) const {
    const Index P = rows();
    m_eval.hessian_times(Eigen::Map<const Matrix>(x_in, P, 1), Eigen::Map<Matrix>(y_out, P, 1));
    ++m_products;
}

Matrix HessianOp::operator*(const Eigen::Ref<const Matrix>& V) const {
    Matrix HV(V.rows(), V.cols());
    m_eval.hessian_times(V, HV);
    m_products += V.cols();
    return HV;
}

void GaussNewtonOp::perform_op(const Scalar* x_in, Scalar* y_out) const {
    const Index P = rows();
    m_eval.gauss_newton_times(Eigen::Map<const Matrix>(x_in, P, 1), Eigen::Map<Matrix>(y_out, P, 1));
    ++m_products;
}

Matrix GaussNewtonOp::operator*(const Eigen::Ref<const Matrix>& V) const {
    Matrix GV(V.rows(), V.cols());
    m_eval.gauss_newton_times(V, GV);
    m_products += V.cols();
    return GV;
}

void JacobianOp::perform_op(const Scalar* x_in, Scalar* y_out) const {
    const Index P = rows();
    m_H.perform_op(x_in, y_out);
    Eigen::Map<Vector> y(y_out, P);
    y = Eigen::Map<const Vector>(x_in, P) - m_alpha * y;
}

Matrix JacobianOp::operator*(const Eigen::Ref<const Matrix>& V) const {
    Matrix JV = m_H * V;
    JV = V - m_alpha * JV;
    return JV;
}

}  // namespace tdyn

// The third-order R-operator (forward over forward over reverse). With R_e, R_v the directional
// derivatives along e and v, and RR = R_e R_v, applying R_e to every line of the H v pass:
//   forward:  RR{A_1} = 0 (X V_W1 is linear in theta)
//             RR{Z_h} = f''(A_h) .* R_e{A_h} .* R_v{A_h} + f'(A_h) .* RR{A_h}
//             RR{A_l} = RR{Z_h} W_l + R_e{Z_h} V_Wl + R_v{Z_h} E_Wl                  (h = l - 1)
//   output:   RR{delta_L} = [l'''[R_e{a}, R_v{a}] + l'' RR{a}] / k per sample (loss.hpp)
//   backward: RR{dW_l} = Z_h^T RR{delta_l} + R_e{Z_h}^T R_v{delta_l} + R_v{Z_h}^T R_e{delta_l}
//                        + RR{Z_h}^T delta_l                       (l = 1: X^T RR{delta_1})
//             RR{db_l} = column sums of RR{delta_l}
//             with g = delta_l W_l^T and P_x = R_x{delta_l} W_l^T + delta_l X_Wl^T (x = e, v):
//             R_x{delta_h} = P_x .* f' + g .* f'' .* R_x{A_h}
//             RR{delta_h} = (RR{delta_l} W_l^T + R_v{delta_l} E_Wl^T + R_e{delta_l} V_Wl^T) .* f'
//                           + P_v .* f'' .* R_e{A_h} + P_e .* f'' .* R_v{A_h}
//                           + g .* (f''' .* R_e{A_h} .* R_v{A_h} + f'' .* RR{A_h})
// Every product goes through the fixed row chunks (rows_product, chunked_at_b, chunked_colsum,
// InputMatrix), so the bits do not depend on the thread count.
namespace tdyn {

void Evaluation::third_order_times(const Eigen::Ref<const Matrix>& E, const Eigen::Ref<const Matrix>& V,
                                   Eigen::Ref<Matrix> out) {
    third_order(E, V, out, nullptr);
}

void Evaluation::third_order_times(const Eigen::Ref<const Matrix>& E, const Eigen::Ref<const Matrix>& V,
                                   Eigen::Ref<Matrix> out, Eigen::Ref<Matrix> HV) {
    if (HV.rows() != V.rows() || HV.cols() != V.cols())
        throw Error("third_order_times: HV must be " + std::to_string(V.rows()) + " x " + std::to_string(V.cols()));
    third_order(E, V, out, &HV);
}

void Evaluation::third_order(const Eigen::Ref<const Matrix>& E, const Eigen::Ref<const Matrix>& V,
                             Eigen::Ref<Matrix> out, Eigen::Ref<Matrix>* HV) {
    const Index L = m_arch.layers(), k = samples(), P = num_params(), M = V.cols(), c = m_arch.outputs();
    if (E.rows() != P || V.rows() != P || E.cols() != M || out.rows() != P || out.cols() != M)
        throw Error("third_order_times: E, V and out must all be " + std::to_string(P) + " x " + std::to_string(M));
    if (M == 0) return;
    ensure_deltas();
    const SerialIfSmall serial(*this);
    const auto& w = m_arch.widths;
    const Index d = w[0], n1 = w[1];
    constexpr Index kRows = 64;  // rows per task of the element-wise passes (bits do not depend on it)
    auto each_rows = [&](Index n_cols, auto&& body) {
#pragma omp parallel for schedule(static) if (k * n_cols >= kParallelElems)
        for (Index r0 = 0; r0 < k; r0 += kRows) body(r0, std::min(kRows, k - r0));
    };
    // Scratch kept between calls (m_t3): per hidden layer h (index h - 1) f', f'', f''' and g_h;
    // per layer l (index l - 1) R_e{A}, R_v{A}, RR{A} and, of hidden layers, R_e{Z}, R_v{Z}, RR{Z};
    // the backward rows; the wide blocks of the products with X.
    const Index H = L - 1;
    m_t3.resize(4 * H + 6 * L + 10);
    RowMatrix* f1 = m_t3.data();
    RowMatrix* f2 = f1 + H;
    RowMatrix* f3 = f2 + H;
    RowMatrix* g = f3 + H;
    RowMatrix* Ae = g + H;
    RowMatrix* Av = Ae + L;
    RowMatrix* Ar = Av + L;
    RowMatrix* Ze = Ar + L;
    RowMatrix* Zv = Ze + L;
    RowMatrix* Zr = Zv + L;
    RowMatrix* rest = Zr + L;
    RowMatrix &de = rest[0], &dv = rest[1], &dr = rest[2], &pe = rest[3], &pv = rest[4], &pr = rest[5];
    RowMatrix &G = rest[6], &B1 = rest[7], &wideA = rest[8], &wideD = rest[9];

    // f', f'', f''' of the hidden layers and g_h = delta_{h+1} W_{h+1}^T: the same for every pair
    for (Index h = 1; h < L; ++h) {
        const RowMatrix &A = m_A[h - 1], &Z = m_Z[h - 1];
        resize_huge(f1[h - 1], k, w[h]);
        resize_huge(f2[h - 1], k, w[h]);
        resize_huge(f3[h - 1], k, w[h]);
        resize_huge(g[h - 1], k, w[h]);
        detail::rows_product(m_delta[h], weight(m_arch, m_theta, h + 1).transpose(), g[h - 1]);
        with_activation(m_arch.hidden, [&](auto policy) {
            using F = decltype(policy);
            each_rows(w[h], [&](Index r0, Index n) {
                const auto a = A.middleRows(r0, n).array();
                const auto z = Z.middleRows(r0, n).array();
                f1[h - 1].middleRows(r0, n).array() = F::d1(a, z);
                f2[h - 1].middleRows(r0, n).array() = F::d2(a, z);
                f3[h - 1].middleRows(r0, n).array() = F::d3(a, z);
            });
        });
    }

    const double inv_k = 1.0 / double(m_k_global);  // the global k of the mean
    // Pairs in chunks: X [E_W1^(m) V_W1^(m) ...] and X^T [RR{delta_1}^(m) ...] are one wide product
    // per chunk (as in the block HVP), the rest is per pair.
    const Index pc = chunk_size(k, 2 * n1, M);
    for (Index m0 = 0; m0 < M; m0 += pc) {
        const Index np = std::min(pc, M - m0);
        B1.resize(d, 2 * np * n1);
        for (Index j = 0; j < np; ++j) {
            B1.middleCols(2 * j * n1, n1) = ConstRowMap(E.col(m0 + j).data() + m_arch.weight_offset(1), d, n1);
            B1.middleCols((2 * j + 1) * n1, n1) = ConstRowMap(V.col(m0 + j).data() + m_arch.weight_offset(1), d, n1);
        }
        m_X.times(B1, wideA);  // k x 2 np n1: R_e{A_1}, R_v{A_1} of each pair, without the bias
        // RR{delta_1} of each pair, then (with HV) R_v{delta_1} of each pair
        resize_huge(wideD, k, (HV ? 2 : 1) * np * n1);
        for (Index j = 0; j < np; ++j) {
            const Index m = m0 + j;
            auto Wof = [&](const Eigen::Ref<const Matrix>& D, Index l) {
                return ConstRowMap(D.col(m).data() + m_arch.weight_offset(l), w[l - 1], w[l]);
            };
            auto bof = [&](const Eigen::Ref<const Matrix>& D, Index l) {
                return Eigen::Map<const Eigen::RowVectorXd>(D.col(m).data() + m_arch.bias_offset(l), w[l]);
            };
            // ---- forward
            resize_huge(Ae[0], k, n1);
            resize_huge(Av[0], k, n1);
            const auto be = bof(E, 1), bv = bof(V, 1);
            each_rows(n1, [&](Index r0, Index n) {
                Ae[0].middleRows(r0, n) = wideA.block(r0, 2 * j * n1, n, n1).rowwise() + be;
                Av[0].middleRows(r0, n) = wideA.block(r0, (2 * j + 1) * n1, n, n1).rowwise() + bv;
            });
            Ar[0].setZero(k, n1);
            for (Index l = 2; l <= L; ++l) {
                const Index h = l - 1;
                const RowMatrix &F1 = f1[h - 1], &F2 = f2[h - 1];
                resize_huge(Ze[h - 1], k, w[h]);
                resize_huge(Zv[h - 1], k, w[h]);
                resize_huge(Zr[h - 1], k, w[h]);
                each_rows(w[h], [&](Index r0, Index n) {
                    const auto f1r = F1.middleRows(r0, n).array(), f2r = F2.middleRows(r0, n).array();
                    const auto ae = Ae[h - 1].middleRows(r0, n).array(), av = Av[h - 1].middleRows(r0, n).array();
                    Ze[h - 1].middleRows(r0, n).array() = f1r * ae;
                    Zv[h - 1].middleRows(r0, n).array() = f1r * av;
                    Zr[h - 1].middleRows(r0, n).array() = f2r * ae * av + f1r * Ar[h - 1].middleRows(r0, n).array();
                });
                const auto Wl = weight(m_arch, m_theta, l);
                for (auto [D, Z, A] : {std::tuple{&E, Ze, Ae}, std::tuple{&V, Zv, Av}}) {
                    resize_huge(A[l - 1], k, w[l]);
                    detail::rows_product(Z[h - 1], Wl, A[l - 1]);
                    detail::rows_product(m_Z[h - 1], Wof(*D, l), A[l - 1], true);
                    const auto b = bof(*D, l);
                    each_rows(w[l], [&](Index r0, Index n) { A[l - 1].middleRows(r0, n).rowwise() += b; });
                }
                resize_huge(Ar[l - 1], k, w[l]);
                detail::rows_product(Zr[h - 1], Wl, Ar[l - 1]);
                detail::rows_product(Ze[h - 1], Wof(V, l), Ar[l - 1], true);
                detail::rows_product(Zv[h - 1], Wof(E, l), Ar[l - 1], true);
            }
            // ---- output, per sample (loss.hpp)
            resize_huge(de, k, c);
            resize_huge(dv, k, c);
            resize_huge(dr, k, c);
            {
                const double* T = m_T.data();
                const Index t_stride = m_T.outerStride();
                const RowMatrix &ae = Ae[L - 1], &av = Av[L - 1], &ar = Ar[L - 1];
                with_loss(m_arch.output, [&](auto policy) {
                    using Loss = decltype(policy);
#pragma omp parallel for schedule(static) if (k * c >= kParallelElems)
                    for (Index i = 0; i < k; ++i) {
                        const double* y = m_Y.data() + i * c;
                        const double* t = T + i * t_stride;
                        Loss::r_delta(y, t, inv_k, ae.data() + i * c, de.data() + i * c, c, 1);
                        Loss::r_delta(y, t, inv_k, av.data() + i * c, dv.data() + i * c, c, 1);
                        Loss::rr_delta(y, t, inv_k, ae.data() + i * c, av.data() + i * c, ar.data() + i * c,
                                       dr.data() + i * c, c);
                    }
                });
            }
            // ---- backward
            double* o = out.col(m).data();
            double* hv = HV ? HV->col(m).data() : nullptr;
            for (Index l = L; l >= 2; --l) {
                const Index h = l - 1, nh = w[h], nl = w[l];
                // RR{dW_l}, four fixed-order chunked sums added in a fixed order
                RowMap gW(o + m_arch.weight_offset(l), nh, nl);
                G.resize(nh, nl);
                chunked_at_b(m_Z[h - 1], dr, gW);
                chunked_at_b(Ze[h - 1], dv, G);
                gW += G;
                chunked_at_b(Zv[h - 1], de, G);
                gW += G;
                chunked_at_b(Zr[h - 1], m_delta[l - 1], G);
                gW += G;
                chunked_colsum<double>(dr, o + m_arch.bias_offset(l));
                if (hv) {  // H v for W_l, b_l: Z_h^T R_v{delta_l} + R_v{Z_h}^T delta_l, colsum R_v{delta_l}
                    RowMap hW(hv + m_arch.weight_offset(l), nh, nl);
                    chunked_at_b(m_Z[h - 1], dv, hW);
                    chunked_at_b(Zv[h - 1], m_delta[l - 1], G);
                    hW += G;
                    chunked_colsum<double>(dv, hv + m_arch.bias_offset(l));
                }
                const auto Wt = weight(m_arch, m_theta, l).transpose();
                resize_huge(pe, k, nh);
                resize_huge(pv, k, nh);
                resize_huge(pr, k, nh);
                detail::rows_product(de, Wt, pe);
                detail::rows_product(m_delta[l - 1], Wof(E, l).transpose(), pe, true);
                detail::rows_product(dv, Wt, pv);
                detail::rows_product(m_delta[l - 1], Wof(V, l).transpose(), pv, true);
                detail::rows_product(dr, Wt, pr);
                detail::rows_product(dv, Wof(E, l).transpose(), pr, true);
                detail::rows_product(de, Wof(V, l).transpose(), pr, true);
                const RowMatrix &F1 = f1[h - 1], &F2 = f2[h - 1], &F3 = f3[h - 1], &gh = g[h - 1];
                // R_e{delta_h}, R_v{delta_h}, RR{delta_h}, written into pe, pv, pr row by row
                each_rows(nh, [&](Index r0, Index n) {
                    const auto f1r = F1.middleRows(r0, n).array(), f2r = F2.middleRows(r0, n).array(),
                               f3r = F3.middleRows(r0, n).array(), gr = gh.middleRows(r0, n).array();
                    const auto ae = Ae[h - 1].middleRows(r0, n).array(), av = Av[h - 1].middleRows(r0, n).array(),
                               ar = Ar[h - 1].middleRows(r0, n).array();
                    auto Pe = pe.middleRows(r0, n).array();
                    auto Pv = pv.middleRows(r0, n).array();
                    auto Pr = pr.middleRows(r0, n).array();
                    Pr = Pr * f1r + Pv * f2r * ae + Pe * f2r * av + gr * (f3r * ae * av + f2r * ar);
                    Pe = Pe * f1r + gr * f2r * ae;
                    Pv = Pv * f1r + gr * f2r * av;
                });
                std::swap(de, pe);
                std::swap(dv, pv);
                std::swap(dr, pr);
            }
            // RR{db_1} = column sums of RR{delta_1}; RR{delta_1} into the wide block for X^T
            chunked_colsum<double>(dr, o + m_arch.bias_offset(1));
            each_rows(n1, [&](Index r0, Index n) { wideD.block(r0, j * n1, n, n1) = dr.middleRows(r0, n); });
            if (hv) {
                chunked_colsum<double>(dv, hv + m_arch.bias_offset(1));
                each_rows(n1, [&](Index r0, Index n) { wideD.block(r0, (np + j) * n1, n, n1) = dv.middleRows(r0, n); });
            }
        }
        // layer 1: RR{dW_1} = X^T RR{delta_1} (and H v's X^T R_v{delta_1}), one wide product
        m_X.transpose_times(wideD, G);
        for (Index j = 0; j < np; ++j) {
            double* o = out.col(m0 + j).data();
            RowMap(o + m_arch.weight_offset(1), d, n1) = G.middleCols(j * n1, n1);
            m_comm->sum(o, P);
            if (!HV) continue;
            double* hv = HV->col(m0 + j).data();
            RowMap(hv + m_arch.weight_offset(1), d, n1) = G.middleCols((np + j) * n1, n1);
            m_comm->sum(hv, P);
            if (m_lambda > 0) HV->col(m0 + j) += m_lambda * V.col(m0 + j);  // H_E = H_L + lambda I
        }
    }
}

}  // namespace tdyn
