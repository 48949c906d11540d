// The multilayer perceptron: architecture, activations, output/loss pairs, the flat
// parameter layout theta = (W1 row-major [n0 x n1], b1, W2 row-major [n1 x n2], b2, ...)
// and the seeded initialisation.
#pragma once

#include "tdyn/common.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace tdyn {

/// Hidden-layer activation f, applied element-wise: Z_l = f(A_l).
enum class Activation { Sigmoid, Tanh, Relu, Softplus, Identity };

/// Output nonlinearity and loss, always paired so that the loss is a mean over samples:
/// softmax-ce: L = -(1/k) sum t log y;  sigmoid-mse / identity-mse: L = (1/(2k)) sum ||y - t||^2.
enum class Output { SoftmaxCE, SigmoidMSE, IdentityMSE };

Activation parse_activation(const std::string& name);  ///< "sigmoid", ... ; throws Error
Output parse_output(const std::string& name);          ///< "softmax-ce", ... ; throws Error
std::string to_string(Activation a);
std::string to_string(Output o);

/// f(a), f'(a), f''(a) for one activation. ReLU uses f'(0) = 0, as seed 003 does.
double activate(Activation f, double a);
double activate_d1(Activation f, double a);
double activate_d2(Activation f, double a);

/// Layer widths n0-n1-...-nL (n0 inputs, nL outputs) with the hidden activation and output.
struct Architecture {
    std::vector<Index> widths;
    Activation hidden = Activation::Sigmoid;
    Output output = Output::SoftmaxCE;

    /// "784-50-10": at least two positive widths; throws Error naming the text otherwise.
    static Architecture parse(const std::string& text, Activation hidden = Activation::Sigmoid,
                              Output output = Output::SoftmaxCE);
    std::string to_string() const;  ///< "784-50-10"

    Index layers() const { return static_cast<Index>(widths.size()) - 1; }  ///< L
    Index inputs() const { return widths.front(); }
    Index outputs() const { return widths.back(); }
    Index num_params() const;  ///< sum over l of (n_{l-1} + 1) n_l; 39760 for 784-50-10
    /// Offsets into theta of W_l and b_l, l = 1..L (index l-1).
    Index weight_offset(Index l) const;
    Index bias_offset(Index l) const { return weight_offset(l) + widths[l - 1] * widths[l]; }
};

/// Views of W_l (row-major n_{l-1} x n_l) and b_l (n_l) inside a flat theta, no copies.
using ConstRowMap = Eigen::Map<const RowMatrix>;
using RowMap = Eigen::Map<RowMatrix>;
ConstRowMap weight(const Architecture& arch, const Vector& theta, Index l);
Eigen::Map<const Vector> bias(const Architecture& arch, const Vector& theta, Index l);

/// How theta_0 is drawn (docs/MATH.md "Initialisation"); s = the scale, n_{l-1} -> n_l a layer.
enum class InitScheme {
    Uniform,  ///< W_l, b_l ~ U(-s r, s r), r = 1/sqrt(n_{l-1}): PyTorch's Linear default at s = 1
    Normal,   ///< W_l ~ N(0, s^2), b_l = 0 (arXiv 2506.08523 uses s = 1)
    Xavier,   ///< W_l ~ N(0, s^2 2/(n_{l-1} + n_l)), b_l = 0 (Glorot and Bengio 2010, normal form)
    He,       ///< W_l ~ N(0, s^2 2/n_{l-1}), b_l = 0 (He et al. 2015, fan-in)
};
InitScheme parse_init_scheme(const std::string& name);  ///< uniform | normal | xavier | he
std::string to_string(InitScheme s);

/// theta_0 for `scheme` at scale s > 0, drawn in theta order from std::mt19937_64(seed), each
/// uniform as (bits >> 11) * 2^-53; normals by Box-Muller from pairs of them. The uniform scheme
/// at s = 1 is PyTorch's default and gives the same bits on every platform (and the same bits as
/// before the schemes existed); the normal ones use std::log, std::sqrt, std::cos and std::sin.
Vector init_params(const Architecture& arch, std::uint64_t seed, InitScheme scheme = InitScheme::Uniform,
                   double scale = 1);

}  // namespace tdyn
