// Matrix-free operators on the parameters at one theta, in the shape Spectra asks for
// (Scalar, rows(), cols(), perform_op) plus a block product for block solvers and
// tangent propagation. Each holds a reference to what it multiplies: the Evaluation
// (and the Hessian operator) must outlive it.
#pragma once

#include "tdyn/evaluation.hpp"

namespace tdyn {

/// H = d^2 L / d theta^2 at the Evaluation's theta, applied exactly (R-operator).
class HessianOp {
public:
    using Scalar = double;
    explicit HessianOp(Evaluation& eval) : m_eval(eval) {}
    Index rows() const { return m_eval.num_params(); }
    Index cols() const { return m_eval.num_params(); }
    /// y = H x
    void perform_op(const Scalar* x_in, Scalar* y_out) const;
    /// H V for a block V (P x M), one wide pass.
    Matrix operator*(const Eigen::Ref<const Matrix>& V) const;
    /// Number of Hessian-vector products so far (a block of M counts M).
    Index products() const { return m_products; }

private:
    Evaluation& m_eval;
    mutable Index m_products = 0;
};

/// The Gauss-Newton matrix G = J_A^T (d^2 L / dA_L^2) J_A, positive semi-definite, with
/// J_A = dA_L / d theta: the part of H that ignores the curvature of the hidden layers.
class GaussNewtonOp {
public:
    using Scalar = double;
    explicit GaussNewtonOp(Evaluation& eval) : m_eval(eval) {}
    Index rows() const { return m_eval.num_params(); }
    Index cols() const { return m_eval.num_params(); }
    /// y = G x
    void perform_op(const Scalar* x_in, Scalar* y_out) const;
    Matrix operator*(const Eigen::Ref<const Matrix>& V) const;
    Index products() const { return m_products; }

private:
    Evaluation& m_eval;
    mutable Index m_products = 0;
};

/// The update Jacobian of gradient descent, J = I - alpha H (symmetric).
class JacobianOp {
public:
    using Scalar = double;
    JacobianOp(const HessianOp& H, double alpha) : m_H(H), m_alpha(alpha) {}
    Index rows() const { return m_H.rows(); }
    Index cols() const { return m_H.cols(); }
    double alpha() const { return m_alpha; }
    /// \f$ y = x - \alpha H x \f$
    void perform_op(const Scalar* x_in, Scalar* y_out) const;
    /// J V = V - alpha H V
    Matrix operator*(const Eigen::Ref<const Matrix>& V) const;

private:
    const HessianOp& m_H;
    double m_alpha;
};

}  // namespace tdyn
