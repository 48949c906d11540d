// Output/loss pairs as policies: each states, for one sample (a row a = a_L of A_L, its target
// row t, c outputs), everything the Evaluation needs, once:
//   forward:  y = g(a) and the sample loss l(a, t)
//   delta:    d = (dl/da) / k                                   (a row of delta_L)
//   r_delta:  R{d} = (d^2 l / da^2) R{a} / k, for M vectors     (a row of R{delta_L}, H)
//   r_delta_gauss_newton: the same without the residual (y - t) term (Gauss-Newton)
//     (both may write R{d} over R{a}: each entry is written after every read it needs)
//   rr_delta: R_u R_v{d} = [l'''(a)[R_u{a}, R_v{a}] + l''(a) R_u R_v{a}] / k, one pair of
//     directions (the third-order R-operator, hvp.cpp)
//   output_derivative: dy/da (c x c)
// k is the GLOBAL sample count (the mean is over all samples, evaluation.hpp). The arithmetic
// order of each formula is the one tdyn has always used: results are bit for bit the same.
// Adding a loss = one struct here, one case in with_loss, one name in network.cpp, its tests.
#pragma once

#include "tdyn/activation.hpp"
#include "tdyn/network.hpp"

#include <algorithm>
#include <cmath>

namespace tdyn {

/// Softmax output with cross-entropy: y = softmax(a), l = -sum_j t_j log y_j. Targets need not be
/// one-hot nor sum to 1 (soft targets): dl/da = y sum_j t_j - t.
struct SoftmaxCrossEntropy {
    static double forward(const double* a, const double* t, double* y, Index c) {
        double m = a[0];
        for (Index j = 1; j < c; ++j) m = std::max(m, a[j]);
        // e_j = exp(a_j - max a), s = sum e_j:  y_j = e_j / s,  log y_j = a_j - (max a + log s)
        double s = 0;
        for (Index j = 0; j < c; ++j) s += (y[j] = std::exp(a[j] - m));
        const double lse = m + std::log(s), inv_s = 1.0 / s;
        double l = 0;
        for (Index j = 0; j < c; ++j) {
            y[j] *= inv_s;
            // l = -sum t_j log y_j  (terms with t_j = 0 skipped: 0 log 0 = 0)
            if (t[j] != 0) l -= t[j] * (a[j] - lse);
        }
        return l;
    }
    /// d = (y sum_j t_j - t) / k
    static void delta(const double* y, const double* t, double inv_k, double* d, Index c) {
        double st = 0;
        for (Index j = 0; j < c; ++j) st += t[j];
        for (Index j = 0; j < c; ++j) d[j] = (y[j] * st - t[j]) * inv_k;
    }
    /// R{d} = sum t (diag y - y y^T) R{a} / k = sum t  y .* (R{a} - y . R{a}) / k; RA and Rd hold M
    /// rows of c side by side. The output Hessian has no residual term: H and Gauss-Newton agree.
    static void r_delta(const double* y, const double* t, double inv_k, const double* RA, double* Rd, Index c,
                        Index M) {
        double st = 0;
        for (Index j = 0; j < c; ++j) st += t[j];
        for (Index m = 0; m < M; ++m) {
            const double* ra = RA + m * c;
            double* rd = Rd + m * c;
            double yra = 0;
            for (Index j = 0; j < c; ++j) yra += y[j] * ra[j];
            for (Index j = 0; j < c; ++j) rd[j] = st * y[j] * (ra[j] - yra) * inv_k;
        }
    }
    static void r_delta_gauss_newton(const double* y, const double* t, double inv_k, const double* RA, double* Rd,
                                     Index c, Index M) {
        r_delta(y, t, inv_k, RA, Rd, c, M);
    }
    /// With S = sum t: l'' x = S y .* (x - y.x); its derivative along v (dy = y .* (v - y.v))
    /// gives l'''[u, v] = S [dy .* (u - y.u) - y (dy . u)].
    static void rr_delta(const double* y, const double* t, double inv_k, const double* ru, const double* rv,
                         const double* rr, double* out, Index c) {
        double st = 0, yu = 0, yv = 0, yr = 0;
        for (Index j = 0; j < c; ++j) st += t[j], yu += y[j] * ru[j], yv += y[j] * rv[j], yr += y[j] * rr[j];
        double dyu = 0;  // dy . u
        for (Index j = 0; j < c; ++j) dyu += y[j] * (rv[j] - yv) * ru[j];
        for (Index j = 0; j < c; ++j) {
            const double dy = y[j] * (rv[j] - yv);
            out[j] = st * (dy * (ru[j] - yu) - y[j] * dyu + y[j] * (rr[j] - yr)) * inv_k;
        }
    }
    /// dy/da = diag(y) - y y^T
    static void output_derivative(const Eigen::Ref<const Eigen::RowVectorXd>& y, Eigen::Ref<RowMatrix> D) {
        D = -y.transpose() * y;
        D.diagonal() += y.transpose();
    }
};

/// Sigmoid output with squared error: y = s(a), l = 1/2 ||y - t||^2.
struct SigmoidMeanSquaredError {
    static double forward(const double* a, const double* t, double* y, Index c) {
        double l = 0;
        for (Index j = 0; j < c; ++j) {
            y[j] = Sigmoid::f(a[j]);
            l += 0.5 * (y[j] - t[j]) * (y[j] - t[j]);
        }
        return l;
    }
    /// d = (y - t) s' / k, s' = y (1 - y)
    static void delta(const double* y, const double* t, double inv_k, double* d, Index c) {
        for (Index j = 0; j < c; ++j) d[j] = (y[j] - t[j]) * y[j] * (1 - y[j]) * inv_k;
    }
    /// R{d} = [s'^2 + (y - t)(1 - 2y) s'] .* R{a} / k
    static void r_delta(const double* y, const double* t, double inv_k, const double* RA, double* Rd, Index c,
                        Index M) {
        for (Index m = 0; m < M; ++m)
            for (Index j = 0; j < c; ++j) {
                const double s1 = y[j] * (1 - y[j]);
                const double hj = s1 * s1 + (y[j] - t[j]) * (1 - 2 * y[j]) * s1;
                Rd[m * c + j] = hj * RA[m * c + j] * inv_k;
            }
    }
    /// Gauss-Newton: R{d} = s'^2 .* R{a} / k (the residual term (y - t)(1 - 2y) s' dropped)
    static void r_delta_gauss_newton(const double* y, const double*, double inv_k, const double* RA, double* Rd,
                                     Index c, Index M) {
        for (Index m = 0; m < M; ++m)
            for (Index j = 0; j < c; ++j) {
                const double s1 = y[j] * (1 - y[j]);
                const double hj = s1 * s1;
                Rd[m * c + j] = hj * RA[m * c + j] * inv_k;
            }
    }
    /// Per output, h = l'' = s'^2 + (y - t)(1 - 2y) s' with s'' = s' (1 - 2y), so
    /// h' = 2 s' s'' + s'^2 (1 - 2y) - 2 (y - t) s'^2 + (y - t)(1 - 2y) s''; R_u R_v{d} = (h' u v + h r) / k.
    static void rr_delta(const double* y, const double* t, double inv_k, const double* ru, const double* rv,
                         const double* rr, double* out, Index c) {
        for (Index j = 0; j < c; ++j) {
            const double s1 = y[j] * (1 - y[j]), s2 = s1 * (1 - 2 * y[j]), e = y[j] - t[j];
            const double h = s1 * s1 + e * (1 - 2 * y[j]) * s1;
            const double h1 = 2 * s1 * s2 + s1 * s1 * (1 - 2 * y[j]) - 2 * e * s1 * s1 + e * (1 - 2 * y[j]) * s2;
            out[j] = (h1 * ru[j] * rv[j] + h * rr[j]) * inv_k;
        }
    }
    /// dy/da = diag(y (1 - y))
    static void output_derivative(const Eigen::Ref<const Eigen::RowVectorXd>& y, Eigen::Ref<RowMatrix> D) {
        D.setZero();
        D.diagonal() = (y.array() * (1 - y.array())).transpose();
    }
};

/// Identity output with squared error: y = a, l = 1/2 ||y - t||^2.
struct IdentityMeanSquaredError {
    static double forward(const double* a, const double* t, double* y, Index c) {
        double l = 0;
        for (Index j = 0; j < c; ++j) {
            y[j] = a[j];
            l += 0.5 * (y[j] - t[j]) * (y[j] - t[j]);
        }
        return l;
    }
    /// d = (y - t) / k
    static void delta(const double* y, const double* t, double inv_k, double* d, Index c) {
        for (Index j = 0; j < c; ++j) d[j] = (y[j] - t[j]) * inv_k;
    }
    /// R{d} = R{a} / k (no residual term: H and Gauss-Newton agree)
    static void r_delta(const double*, const double*, double inv_k, const double* RA, double* Rd, Index c, Index M) {
        for (Index i = 0; i < c * M; ++i) Rd[i] = RA[i] * inv_k;
    }
    static void r_delta_gauss_newton(const double* y, const double* t, double inv_k, const double* RA, double* Rd,
                                     Index c, Index M) {
        r_delta(y, t, inv_k, RA, Rd, c, M);
    }
    /// l''' = 0: R_u R_v{d} = R_u R_v{a} / k
    static void rr_delta(const double*, const double*, double inv_k, const double*, const double*, const double* rr,
                         double* out, Index c) {
        for (Index j = 0; j < c; ++j) out[j] = rr[j] * inv_k;
    }
    /// dy/da = I
    static void output_derivative(const Eigen::Ref<const Eigen::RowVectorXd>&, Eigen::Ref<RowMatrix> D) {
        D.setIdentity();
    }
};

/// Calls fn(Policy{}) with the loss policy of o: the one switch over the Output enum.
template <class Fn>
decltype(auto) with_loss(Output o, Fn&& fn) {
    switch (o) {
        case Output::SoftmaxCE: return fn(SoftmaxCrossEntropy{});
        case Output::SigmoidMSE: return fn(SigmoidMeanSquaredError{});
        case Output::IdentityMSE: return fn(IdentityMeanSquaredError{});
    }
    return fn(IdentityMeanSquaredError{});  // unreachable for a valid enum
}

}  // namespace tdyn
