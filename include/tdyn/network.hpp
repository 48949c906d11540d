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

/// PyTorch's default for Linear layers: W_l and b_l ~ U(-1/sqrt(n_{l-1}), 1/sqrt(n_{l-1})),
/// drawn in theta order from std::mt19937_64(seed) as (bits >> 11) * 2^-53, so the same seed
/// gives the same theta on every platform.
Vector init_params(const Architecture& arch, std::uint64_t seed);

}  // namespace tdyn
