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

namespace elem::detail {
/// tanh x = sign(x) t(|x|) with, for a = |x|,
///   t(a) = a + a^3 (c_3 + c_5 a^2 + ... + c_39 a^36)   for a < 0.55 (odd Taylor series; term
///          n + 1 over term n is about (2a/pi)^2 < 0.13, so the tail past a^39 is < 2^-60 t(a)),
///   t(a) = 1 - 2 / (e^{2a} + 1)                         for a >= 0.55 (t >= 0.5: no cancellation).
/// Against tanhl on 1M test points (Activation.VectorisedTanhIsWithinTwoUlpOfTanhl prints both):
/// at most 1.63 ulp, glibc's tanh 2.08 ulp. NaN stays NaN, tanh(+-inf) = +-1, tanh(-0) = -0.
struct TanhOp {
    static constexpr double kSeriesBound = 0.55;
    /// c_3, c_5, ..., c_39: 2^2n (2^2n - 1) B_2n / (2n)!, n = 2..20 (B: Bernoulli numbers)
    static constexpr double kC[19] = {
        -0.33333333333333331,    0.13333333333333333,    -0.053968253968253971,   0.021869488536155203,
        -0.0088632355299021973,  0.0035921280365724811,  -0.0014558343870513183,  0.00059002744094558595,
        -0.00023912911424355248, 9.6915379569294509e-05, -3.9278323883316833e-05, 1.5918905069328964e-05,
        -6.4516892156554306e-06, 2.6147711512907546e-06, -1.0597268320104654e-06, 4.2949110782738057e-07,
        -1.7406618963571648e-07, 7.0546369464009681e-08, -2.859136662305254e-08};
    /// Elements Eigen cannot pack (the tails of rows) go through packetOp too, on a broadcast
    /// packet: every element gets the same bits whatever its position (Eigen's packet exp and
    /// std::exp differ in the last bit).
    double operator()(double x) const {
        using P = Eigen::internal::packet_traits<double>::type;
        if constexpr (Eigen::internal::packet_traits<double>::Vectorizable)
            return Eigen::internal::pfirst(packetOp(Eigen::internal::pset1<P>(x)));
        const double a = std::abs(x), z = a * a;
        double p = kC[18];
        for (int i = 17; i >= 0; --i) p = std::fma(p, z, kC[i]);
        const double t = a < kSeriesBound ? a + a * (z * p) : 1.0 - 2.0 / (std::exp(a + a) + 1.0);
        return std::copysign(t, x);
    }
    template <class Packet>
    Packet packetOp(const Packet& x) const {
        using namespace Eigen::internal;
        const Packet a = pabs(x), z = pmul(a, a), one = pset1<Packet>(1.0);
        Packet p = pset1<Packet>(kC[18]);
        for (int i = 17; i >= 0; --i) p = pmadd(p, z, pset1<Packet>(kC[i]));
        const Packet series = padd(a, pmul(a, pmul(z, p)));
        const Packet exterior = psub(one, pdiv(pset1<Packet>(2.0), padd(pexp(padd(a, a)), one)));
        const Packet t = pselect(pcmp_lt(a, pset1<Packet>(kSeriesBound)), series, exterior);
        return por(t, pand(x, pset1<Packet>(-0.0)));  // the sign bit of x (NaN: t is NaN already)
    }
};
}  // namespace elem::detail

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
/// tanh on double arrays, vectorised (TanhOp below): Eigen 3.4 has no packet tanh for double
/// and calls libm once per element, a sixth of a 784-200-200-10 tanh step. Float arrays keep
/// Eigen's own packet tanh.
template <class D>
auto tanh(const Eigen::ArrayBase<D>& x);
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
template <class D>
auto tanh(const Eigen::ArrayBase<D>& x) {
    if constexpr (std::is_same_v<typename D::Scalar, double>) return x.unaryExpr(detail::TanhOp{});
    else return x.tanh();
}
}  // namespace elem

/// Each policy: f(a); d1(a, z) = f'(a), d2(a, z) = f''(a) and d3(a, z) = f'''(a), given z = f(a) (sigmoid and tanh
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
    /// f''' = z (1 - z) (1 - 6z + 6z^2)
    template <class A, class Z>
    static auto d3(const A&, const Z& z) {
        return z * (1.0 - z) * (1.0 - 6.0 * z + 6.0 * z * z);
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
    /// f''' = -2 (1 - z^2) (1 - 3 z^2)
    template <class A, class Z>
    static auto d3(const A&, const Z& z) {
        return -2.0 * (1.0 - elem::square(z)) * (1.0 - 3.0 * elem::square(z));
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
    template <class A, class Z>
    static auto d3(const A& a, const Z&) {
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
    /// f''' = s (1 - s) (1 - 2s)
    template <class A, class Z>
    static auto d3(const A& a, const Z&) {
        const auto s = Sigmoid::f(a);
        return s * (1.0 - s) * (1.0 - 2.0 * s);
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
    template <class A, class Z>
    static auto d3(const A& a, const Z&) {
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

/// TanhOp is packet-vectorisable wherever double has a packet exp.
template <>
struct Eigen::internal::functor_traits<tdyn::elem::detail::TanhOp> {
    enum { Cost = 60, PacketAccess = Eigen::internal::packet_traits<double>::HasExp };
};
