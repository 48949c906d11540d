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
#include "tdyn/evaluation.hpp"
#include "tdyn/hvp.hpp"

#include <cassert>

namespace tdyn {

namespace {

/// Runs body(i) for every row i in [0, rows), split over the OpenMP threads.
template <class Body>
void for_rows(Index rows, Body body) {
#pragma omp parallel for schedule(static)
    for (Index i = 0; i < rows; ++i) body(i);
}

}  // namespace

void Evaluation::hessian_times(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> HV) {
    block_product(V, HV, false);
}

void Evaluation::gauss_newton_times(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> GV) {
    block_product(V, GV, true);
}

void Evaluation::block_product(const Eigen::Ref<const Matrix>& V, Eigen::Ref<Matrix> out,
                               bool gauss_newton) {
    const Index L = m_arch.layers(), k = samples(), P = num_params(), M = V.cols();
    const Index d = m_arch.widths[0], n1 = m_arch.widths[1], c = m_arch.outputs();
    assert(V.rows() == P && out.rows() == P && out.cols() == M);
    (void)P;
    gradient();  // delta_l, l = 1..L
    if (!m_have_curvature) {
        // f'(A_l) and (delta_{l+1} W_{l+1}^T) .* f''(A_l) for the hidden layers: the same for every v.
        m_fd1.resize(L - 1);
        m_fd2.resize(L - 1);
        for (Index l = 1; l < L; ++l) {
            const RowMatrix& A = m_A[l - 1];
            RowMatrix& d1 = m_fd1[l - 1];
            RowMatrix& d2 = m_fd2[l - 1];
            d2.noalias() = m_delta[l] * weight(m_arch, m_theta, l + 1).transpose();  // dL/dZ_l
            d1.resize(A.rows(), A.cols());
            const Activation f = m_arch.hidden;
            const Index n = A.size();
#pragma omp parallel for schedule(static)
            for (Index i = 0; i < n; ++i) {
                d1.data()[i] = activate_d1(f, A.data()[i]);
                d2.data()[i] *= activate_d2(f, A.data()[i]);
            }
        }
        m_have_curvature = true;
    }

    // R{A_1} for all vectors: one wide product X [V_W1^(1) ... V_W1^(M)].
    m_wide_in.resize(d, n1 * M);
    for (Index m = 0; m < M; ++m)
        m_wide_in.middleCols(m * n1, n1) = ConstRowMap(V.col(m).data(), d, n1);
    m_X.times(m_wide_in, m_RA1);

    std::vector<RowMatrix> RA(L), RZ(L > 1 ? L - 1 : 0);
    RowMatrix Rdelta, Rprev;
    const double inv_k = 1.0 / double(k);
    for (Index m = 0; m < M; ++m) {
        const double* v = V.col(m).data();
        double* o = out.col(m).data();
        auto VW = [&](Index l) { return ConstRowMap(v + m_arch.weight_offset(l), m_arch.widths[l - 1], m_arch.widths[l]); };
        auto Vb = [&](Index l) { return Eigen::Map<const Vector>(v + m_arch.bias_offset(l), m_arch.widths[l]); };

        // forward R-pass
        RA[0] = m_RA1.middleCols(m * n1, n1);
        RA[0].rowwise() += Vb(1).transpose();
        for (Index l = 2; l <= L; ++l) {
            RowMatrix& rz = RZ[l - 2];
            rz.resize(k, m_arch.widths[l - 1]);
            const RowMatrix& ra = RA[l - 2];
            const RowMatrix& f1 = m_fd1[l - 2];
            for_rows(k, [&](Index i) { rz.row(i) = f1.row(i).cwiseProduct(ra.row(i)); });
            RA[l - 1].noalias() = rz * weight(m_arch, m_theta, l);
            RA[l - 1].noalias() += m_Z[l - 2] * VW(l);
            RA[l - 1].rowwise() += Vb(l).transpose();
        }

        // output: R{delta_L} = (d delta_L / dA_L) R{A_L}
        const RowMatrix& RAL = RA[L - 1];
        Rdelta.resize(k, c);
        const Output outk = m_arch.output;
        for_rows(k, [&](Index i) {
            const double* y = m_Y.data() + i * c;
            const double* t = m_T.data() + i * m_T.outerStride();
            const double* ra = RAL.data() + i * c;
            double* rd = Rdelta.data() + i * c;
            if (outk == Output::SoftmaxCE) {
                // delta = (y sum t - t)/k;  R{y} = y .* (R{a} - y . R{a})
                double st = 0, yra = 0;
                for (Index j = 0; j < c; ++j) { st += t[j]; yra += y[j] * ra[j]; }
                for (Index j = 0; j < c; ++j) rd[j] = st * y[j] * (ra[j] - yra) * inv_k;
            } else if (outk == Output::SigmoidMSE) {
                // delta = (y - t) s'/k with s' = y(1 - y):  d delta/da = s'^2 + (y - t)(1 - 2y) s'
                for (Index j = 0; j < c; ++j) {
                    const double s1 = y[j] * (1 - y[j]);
                    const double h = gauss_newton ? s1 * s1 : s1 * s1 + (y[j] - t[j]) * (1 - 2 * y[j]) * s1;
                    rd[j] = h * ra[j] * inv_k;
                }
            } else {
                for (Index j = 0; j < c; ++j) rd[j] = ra[j] * inv_k;
            }
        });

        // backward R-pass
        for (Index l = L; l >= 2; --l) {
            RowMap RgW(o + m_arch.weight_offset(l), m_arch.widths[l - 1], m_arch.widths[l]);
            Eigen::Map<Vector> Rgb(o + m_arch.bias_offset(l), m_arch.widths[l]);
            const auto W = weight(m_arch, m_theta, l);
            // R{dW_l} = R{Z_{l-1}}^T delta_l + Z_{l-1}^T R{delta_l};  R{db_l} = colsum R{delta_l}
            RgW.noalias() = m_Z[l - 2].transpose() * Rdelta;
            if (!gauss_newton) RgW.noalias() += RZ[l - 2].transpose() * m_delta[l - 1];
            Rgb = Rdelta.colwise().sum().transpose();
            // R{delta_{l-1}} = (R{delta_l} W_l^T + delta_l V_Wl^T) .* f' + (delta_l W_l^T) .* f'' .* R{A_{l-1}}
            Rprev.noalias() = Rdelta * W.transpose();
            if (!gauss_newton) Rprev.noalias() += m_delta[l - 1] * VW(l).transpose();
            const RowMatrix& f1 = m_fd1[l - 2];
            const RowMatrix& f2 = m_fd2[l - 2];
            const RowMatrix& ra = RA[l - 2];
            for_rows(k, [&](Index i) {
                if (gauss_newton) Rprev.row(i) = Rprev.row(i).cwiseProduct(f1.row(i));
                else Rprev.row(i) = Rprev.row(i).cwiseProduct(f1.row(i)) + f2.row(i).cwiseProduct(ra.row(i));
            });
            std::swap(Rdelta, Rprev);
        }
        // layer 1: R{db_1} now; R{dW_1} = X^T R{delta_1} after the loop, for all vectors at once.
        Eigen::Map<Vector>(o + m_arch.bias_offset(1), n1) = Rdelta.colwise().sum().transpose();
        m_RA1.middleCols(m * n1, n1) = Rdelta;
    }
    m_X.transpose_times(m_RA1, m_wide_out);
    for (Index m = 0; m < M; ++m)
        RowMap(out.col(m).data(), d, n1) = m_wide_out.middleCols(m * n1, n1);
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
