#include "tdyn/evaluation.hpp"

#include <cassert>
#include <cmath>

namespace tdyn {

Precision parse_precision(const std::string& name) {
    if (name == "f64") return Precision::F64;
    if (name == "f32") return Precision::F32;
    throw Error("--precision: expected f64 or f32, found '" + name + "'");
}

XPath parse_xpath(const std::string& name) {
    if (name == "auto") return XPath::Auto;
    if (name == "dense") return XPath::Dense;
    if (name == "sparse") return XPath::Sparse;
    throw Error("--x-path: expected auto, dense or sparse, found '" + name + "'");
}

// ---------------------------------------------------------------------------------------------
// InputMatrix

InputMatrix::InputMatrix(const Eigen::Ref<const RowMatrix>& X, XPath path, Precision precision,
                         double sparse_threshold)
    : m_X(X), m_precision(precision) {
    const double n = double(X.rows()) * double(X.cols());
    m_density = n > 0 ? double((X.array() != 0.0).count()) / n : 1.0;
    m_sparse = path == XPath::Sparse || (path == XPath::Auto && m_density < sparse_threshold);
    if (m_sparse) {
        m_Xs = X.sparseView();
        m_XsT = X.transpose().sparseView();
        if (precision == Precision::F32) {
            m_Xs32 = m_Xs.cast<float>();
            m_XsT32 = m_XsT.cast<float>();
            m_Xs.resize(0, 0);
            m_XsT.resize(0, 0);
        }
    } else if (precision == Precision::F32) {
        m_X32 = X.cast<float>();
    }
}

void InputMatrix::times(const Eigen::Ref<const RowMatrix>& B, RowMatrix& out) const {
    out.resize(m_X.rows(), B.cols());
    if (m_precision == Precision::F32) {
        const RowMatrixF B32 = B.cast<float>();
        RowMatrixF out32(m_X.rows(), B.cols());
        if (m_sparse) out32.noalias() = m_Xs32 * B32;
        else out32.noalias() = m_X32 * B32;
        out = out32.cast<double>();
    } else if (m_sparse) {
        out.noalias() = m_Xs * B;
    } else {
        out.noalias() = m_X * B;
    }
}

void InputMatrix::transpose_times(const Eigen::Ref<const RowMatrix>& C, RowMatrix& out) const {
    out.resize(m_X.cols(), C.cols());
    if (m_precision == Precision::F32) {
        const RowMatrixF C32 = C.cast<float>();
        RowMatrixF out32(m_X.cols(), C.cols());
        if (m_sparse) out32.noalias() = m_XsT32 * C32;
        else out32.noalias() = m_X32.transpose() * C32;
        out = out32.cast<double>();
    } else if (m_sparse) {
        out.noalias() = m_XsT * C;
    } else {
        out.noalias() = m_X.transpose() * C;
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

Evaluation::Evaluation(const Architecture& arch, const InputMatrix& X,
                       const Eigen::Ref<const RowMatrix>& T)
    : m_arch(arch), m_X(X), m_T(T) {
    if (X.cols() != arch.inputs())
        throw Error("--arch " + arch.to_string() + ": input width " + std::to_string(arch.inputs()) +
                    " does not match the data, whose samples have " + std::to_string(X.cols()) +
                    " features");
    if (T.cols() != arch.outputs())
        throw Error("--arch " + arch.to_string() + ": output width " + std::to_string(arch.outputs()) +
                    " does not match the data, whose targets have " + std::to_string(T.cols()) +
                    " columns");
    if (T.rows() != X.rows())
        throw Error("data: X has " + std::to_string(X.rows()) + " rows but T has " +
                    std::to_string(T.rows()));
    const Index L = arch.layers();
    m_A.resize(L);
    m_Z.resize(L - 1);
    m_delta.resize(L);
}

Evaluation::Evaluation(const Architecture& arch, const InputMatrix& X,
                       const Eigen::Ref<const RowMatrix>& T, const Vector& theta)
    : Evaluation(arch, X, T) {
    reset(theta);
}

void Evaluation::reset(const Vector& theta) {
    if (theta.size() != m_arch.num_params())
        throw Error("theta: expected " + std::to_string(m_arch.num_params()) + " parameters for arch " +
                    m_arch.to_string() + ", found " + std::to_string(theta.size()));
    m_theta = theta;
    m_have_gradient = false;
    m_have_curvature = false;
    forward();
}

namespace {

/// out = in, element-wise f, in parallel over rows.
template <class F>
void apply_rows(const RowMatrix& in, RowMatrix& out, F f) {
    out.resize(in.rows(), in.cols());
    const Index n = in.size();
    const double* src = in.data();
    double* dst = out.data();
#pragma omp parallel for schedule(static)
    for (Index i = 0; i < n; ++i) dst[i] = f(src[i]);
}

Index argmax(const double* row, Index n) {
    Index best = 0;
    for (Index j = 1; j < n; ++j)
        if (row[j] > row[best]) best = j;
    return best;
}

}  // namespace

void Evaluation::forward() {
    const Index L = m_arch.layers(), k = samples(), c = m_arch.outputs();
    // A_1 = X W_1 + b_1
    m_X.times(weight(m_arch, m_theta, 1), m_A[0]);
    m_A[0].rowwise() += bias(m_arch, m_theta, 1).transpose();
    for (Index l = 2; l <= L; ++l) {
        // Z_{l-1} = f(A_{l-1});  A_l = Z_{l-1} W_l + b_l
        const Activation f = m_arch.hidden;
        apply_rows(m_A[l - 2], m_Z[l - 2], [f](double a) { return activate(f, a); });
        m_A[l - 1].noalias() = m_Z[l - 2] * weight(m_arch, m_theta, l);
        m_A[l - 1].rowwise() += bias(m_arch, m_theta, l).transpose();
    }
    // Y = g(A_L) and the per-sample loss; softmax uses log y = a - logsumexp(a) for stability.
    const RowMatrix& AL = m_A[L - 1];
    m_Y.resize(k, c);
    // Per-sample losses summed serially afterwards: an OpenMP float reduction combines partial
    // sums in thread-arrival order, and resume/replay promise bit-identical series.
    Vector sample_loss(k);
    Index correct = 0;
    const Output out = m_arch.output;
#pragma omp parallel for schedule(static) reduction(+ : correct)
    for (Index i = 0; i < k; ++i) {
        const double* a = AL.data() + i * c;
        const double* t = m_T.data() + i * m_T.outerStride();
        double* y = m_Y.data() + i * c;
        double li = 0;
        if (out == Output::SoftmaxCE) {
            double m = a[0];
            for (Index j = 1; j < c; ++j) m = std::max(m, a[j]);
            double s = 0;
            for (Index j = 0; j < c; ++j) s += std::exp(a[j] - m);
            const double lse = m + std::log(s);
            for (Index j = 0; j < c; ++j) {
                y[j] = std::exp(a[j] - lse);
                if (t[j] != 0) li -= t[j] * (a[j] - lse);
            }
        } else {
            for (Index j = 0; j < c; ++j) {
                y[j] = out == Output::SigmoidMSE ? 1.0 / (1.0 + std::exp(-a[j])) : a[j];
                li += 0.5 * (y[j] - t[j]) * (y[j] - t[j]);
            }
        }
        sample_loss[i] = li;
        // c = 1 (a single output): correct when |y - t| < 0.5, i.e. rounding y gives t.
        const bool ok = c == 1 ? std::abs(y[0] - t[0]) < 0.5 : argmax(y, c) == argmax(t, c);
        correct += ok ? 1 : 0;
    }
    m_loss = sample_loss.sum() / double(k);
    m_accuracy = double(correct) / double(k);
}

void Evaluation::backward() {
    const Index L = m_arch.layers(), k = samples(), c = m_arch.outputs();
    // delta_L = dL/dA_L:
    //   softmax-ce:  (y sum_j t_j - t) / k        (= (Y - T)/k for one-hot targets)
    //   sigmoid-mse: (y - t) y (1 - y) / k
    //   identity-mse: (y - t) / k
    RowMatrix& dL = m_delta[L - 1];
    dL.resize(k, c);
    const double inv_k = 1.0 / double(k);
    const Output out = m_arch.output;
#pragma omp parallel for schedule(static)
    for (Index i = 0; i < k; ++i) {
        const double* y = m_Y.data() + i * c;
        const double* t = m_T.data() + i * m_T.outerStride();
        double* d = dL.data() + i * c;
        if (out == Output::SoftmaxCE) {
            double st = 0;
            for (Index j = 0; j < c; ++j) st += t[j];
            for (Index j = 0; j < c; ++j) d[j] = (y[j] * st - t[j]) * inv_k;
        } else if (out == Output::SigmoidMSE) {
            for (Index j = 0; j < c; ++j) d[j] = (y[j] - t[j]) * y[j] * (1 - y[j]) * inv_k;
        } else {
            for (Index j = 0; j < c; ++j) d[j] = (y[j] - t[j]) * inv_k;
        }
    }
    m_grad.resize(num_params());
    for (Index l = L; l >= 1; --l) {
        const RowMatrix& delta = m_delta[l - 1];
        RowMap gW(m_grad.data() + m_arch.weight_offset(l), m_arch.widths[l - 1], m_arch.widths[l]);
        Eigen::Map<Vector> gb(m_grad.data() + m_arch.bias_offset(l), m_arch.widths[l]);
        // dL/dW_l = Z_{l-1}^T delta_l  (Z_0 = X);  dL/db_l = column sums of delta_l
        if (l == 1) {
            RowMatrix tmp;
            m_X.transpose_times(delta, tmp);
            gW = tmp;
        } else {
            gW.noalias() = m_Z[l - 2].transpose() * delta;
        }
        gb = delta.colwise().sum().transpose();
        if (l > 1) {
            // delta_{l-1} = (delta_l W_l^T) .* f'(A_{l-1})
            RowMatrix& prev = m_delta[l - 2];
            prev.noalias() = delta * weight(m_arch, m_theta, l).transpose();
            const Activation f = m_arch.hidden;
            const RowMatrix& A = m_A[l - 2];
            const Index n = prev.size();
#pragma omp parallel for schedule(static)
            for (Index i = 0; i < n; ++i) prev.data()[i] *= activate_d1(f, A.data()[i]);
        }
    }
    m_have_gradient = true;
}

const Vector& Evaluation::gradient() {
    if (!m_have_gradient) backward();
    return m_grad;
}

RowMatrix Evaluation::input_gradient() {
    gradient();
    // dL/dX = delta_1 W_1^T
    return m_delta[0] * weight(m_arch, m_theta, 1).transpose();
}

RowMatrix Evaluation::output_derivative(Index i) const {
    const Index c = m_arch.outputs();
    const auto y = m_Y.row(i);
    RowMatrix D = RowMatrix::Zero(c, c);
    switch (m_arch.output) {
        case Output::SoftmaxCE:  // dy/da = diag(y) - y y^T
            D = -y.transpose() * y;
            D.diagonal() += y.transpose();
            break;
        case Output::SigmoidMSE:  // dy/da = diag(y (1 - y))
            D.diagonal() = (y.array() * (1 - y.array())).transpose();
            break;
        case Output::IdentityMSE:
            D.setIdentity();
            break;
    }
    return D;
}

RowMatrix Evaluation::output_jacobian_reverse(Index i) const {
    const Index L = m_arch.layers();
    RowMatrix G = output_derivative(i);  // c x n_L
    for (Index l = L; l >= 2; --l) {
        // G_{l-1} = (G_l W_l^T) diag f'(A_{l-1})
        RowMatrix Gp = G * weight(m_arch, m_theta, l).transpose();
        for (Index j = 0; j < Gp.cols(); ++j) Gp.col(j) *= activate_d1(m_arch.hidden, m_A[l - 2](i, j));
        G = std::move(Gp);
    }
    return G * weight(m_arch, m_theta, 1).transpose();
}

RowMatrix Evaluation::output_jacobian_forward(Index i) const {
    const Index L = m_arch.layers();
    RowMatrix Tl = weight(m_arch, m_theta, 1).transpose();  // dA_1/dx, n_1 x d
    for (Index l = 2; l <= L; ++l) {
        // dA_l/dx = W_l^T diag f'(A_{l-1}) dA_{l-1}/dx
        for (Index j = 0; j < Tl.rows(); ++j) Tl.row(j) *= activate_d1(m_arch.hidden, m_A[l - 2](i, j));
        Tl = weight(m_arch, m_theta, l).transpose() * Tl;
    }
    return output_derivative(i) * Tl;
}

}  // namespace tdyn
