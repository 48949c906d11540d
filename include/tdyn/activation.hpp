// Hidden-layer activations as policies: each states f, f' and f'' once, in a form that works
// on a double and on an Eigen array expression alike (one definition, two uses). The scalar
// functions activate/activate_d1/activate_d2 (network.hpp) and the vectorised passes of the
// Evaluation both call these. Adding an activation = one struct here, one case in
// with_activation, one name in network.cpp's parse/to_string, and its test.
#pragma once

#include "tdyn/network.hpp"

#include <cmath>
#include <type_traits>

namespace tdyn {

/// The element-wise primitives the policies are written in: std:: functions on doubles,
/// Eigen's vectorised functions on array expressions (so the array passes keep Eigen's exp).
namespace elem {
inline double exp(double x) { return std::exp(x); }
inline double tanh(double x) { return std::tanh(x); }
inline double log1p(double x) { return std::log1p(x); }
inline double abs(double x) { return std::abs(x); }
inline double square(double x) { return x * x; }
/// max(x, 0), with NaN and -0 mapped to +0 on doubles
inline double positive_part(double x) { return x > 0 ? x : 0.0; }
/// 1 where x > 0, else 0 (ReLU's f', with f'(0) = 0 as in seed 003)
inline double step(double x) { return x > 0 ? 1.0 : 0.0; }
inline double one_like(double) { return 1.0; }
inline double zero_like(double) { return 0.0; }

template <class D>
auto exp(const Eigen::ArrayBase<D>& x) {
    return x.exp();
}
template <class D>
auto tanh(const Eigen::ArrayBase<D>& x) {
    return x.tanh();
}
template <class D>
auto log1p(const Eigen::ArrayBase<D>& x) {
    return x.log1p();
}
template <class D>
auto abs(const Eigen::ArrayBase<D>& x) {
    return x.abs();
}
template <class D>
auto square(const Eigen::ArrayBase<D>& x) {
    return x.square();
}
template <class D>
auto positive_part(const Eigen::ArrayBase<D>& x) {
    return x.max(typename D::Scalar(0));
}
template <class D>
auto step(const Eigen::ArrayBase<D>& x) {
    return (x > typename D::Scalar(0)).template cast<typename D::Scalar>();
}
template <class D>
auto one_like(const Eigen::ArrayBase<D>& x) {
    return D::PlainObject::Constant(x.rows(), x.cols(), typename D::Scalar(1));
}
template <class D>
auto zero_like(const Eigen::ArrayBase<D>& x) {
    return D::PlainObject::Zero(x.rows(), x.cols());
}
}  // namespace elem

/// Each policy: f(a); d1(a, z) = f'(a) and d2(a, z) = f''(a), given z = f(a) (sigmoid and tanh
/// express their derivatives through z, which the forward pass already holds). `a` and `z` are
/// both doubles or both Eigen arrays; the result is a double or an array expression over them.
/// kStep: f' takes only the values 0 and 1, so o .*= f' is applied as a select (no -0 from o 0).
/// kUnitSlope: f' = 1, so o .*= f' is skipped.
struct Sigmoid {
    static constexpr bool kStep = false, kUnitSlope = false;
    /// f = 1 / (1 + e^-a)
    template <class A>
    static auto f(const A& a) {
        return 1.0 / (1.0 + elem::exp(-a));
    }
    /// f' = z (1 - z)
    template <class A, class Z>
    static auto d1(const A&, const Z& z) {
        return z * (1.0 - z);
    }
    /// f'' = z (1 - z) (1 - 2z)
    template <class A, class Z>
    static auto d2(const A&, const Z& z) {
        return z * (1.0 - z) * (1.0 - 2.0 * z);
    }
};

struct Tanh {
    static constexpr bool kStep = false, kUnitSlope = false;
    template <class A>
    static auto f(const A& a) {
        return elem::tanh(a);
    }
    /// f' = 1 - z^2
    template <class A, class Z>
    static auto d1(const A&, const Z& z) {
        return 1.0 - elem::square(z);
    }
    /// f'' = -2 z (1 - z^2)
    template <class A, class Z>
    static auto d2(const A&, const Z& z) {
        return -2.0 * z * (1.0 - elem::square(z));
    }
};

struct Relu {
    static constexpr bool kStep = true, kUnitSlope = false;
    /// f = max(a, 0)
    template <class A>
    static auto f(const A& a) {
        return elem::positive_part(a);
    }
    /// f' = [a > 0]  (f'(0) = 0, as seed 003)
    template <class A, class Z>
    static auto d1(const A& a, const Z&) {
        return elem::step(a);
    }
    template <class A, class Z>
    static auto d2(const A& a, const Z&) {
        return elem::zero_like(a);
    }
};

struct Softplus {
    static constexpr bool kStep = false, kUnitSlope = false;
    /// f = log(1 + e^a) = max(a, 0) + log(1 + e^-|a|), without overflow for large |a|
    template <class A>
    static auto f(const A& a) {
        return elem::positive_part(a) + elem::log1p(elem::exp(-elem::abs(a)));
    }
    /// f' = sigmoid(a)
    template <class A, class Z>
    static auto d1(const A& a, const Z&) {
        return Sigmoid::f(a);
    }
    /// f'' = s (1 - s), s = sigmoid(a)
    template <class A, class Z>
    static auto d2(const A& a, const Z&) {
        const auto s = Sigmoid::f(a);
        return s * (1.0 - s);
    }
};

struct IdentityActivation {
    static constexpr bool kStep = false, kUnitSlope = true;
    template <class A>
    static auto f(const A& a) {
        return a;
    }
    template <class A, class Z>
    static auto d1(const A& a, const Z&) {
        return elem::one_like(a);
    }
    template <class A, class Z>
    static auto d2(const A& a, const Z&) {
        return elem::zero_like(a);
    }
};

/// Calls fn(Policy{}) with the policy of f: the one switch over the Activation enum.
template <class Fn>
decltype(auto) with_activation(Activation f, Fn&& fn) {
    switch (f) {
        case Activation::Sigmoid: return fn(Sigmoid{});
        case Activation::Tanh: return fn(Tanh{});
        case Activation::Relu: return fn(Relu{});
        case Activation::Softplus: return fn(Softplus{});
        case Activation::Identity: return fn(IdentityActivation{});
    }
    return fn(IdentityActivation{});  // unreachable for a valid enum
}

/// o .*= f'(a) on arrays, given z = f(a).
template <class F, class A, class Z, class O>
void times_d1(const A& a, const Z& z, O&& o) {
    if constexpr (F::kUnitSlope) return;
    else if constexpr (F::kStep) o = (F::d1(a, z) != 0.0).select(o, 0.0);
    else o *= F::d1(a, z);
}

}  // namespace tdyn
