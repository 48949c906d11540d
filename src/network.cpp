#include "tdyn/network.hpp"

#include "tdyn/activation.hpp"

#include <cmath>
#include <random>
#include <sstream>

namespace tdyn {

Activation parse_activation(const std::string& name) {
    if (name == "sigmoid") return Activation::Sigmoid;
    if (name == "tanh") return Activation::Tanh;
    if (name == "relu") return Activation::Relu;
    if (name == "softplus") return Activation::Softplus;
    if (name == "identity") return Activation::Identity;
    throw Error("activation: expected sigmoid, tanh, relu, softplus or identity, found '" + name + "'");
}

Output parse_output(const std::string& name) {
    if (name == "softmax-ce") return Output::SoftmaxCE;
    if (name == "sigmoid-mse") return Output::SigmoidMSE;
    if (name == "identity-mse") return Output::IdentityMSE;
    throw Error("output: expected softmax-ce, sigmoid-mse or identity-mse, found '" + name + "'");
}

std::string to_string(Activation a) {
    switch (a) {
        case Activation::Sigmoid: return "sigmoid";
        case Activation::Tanh: return "tanh";
        case Activation::Relu: return "relu";
        case Activation::Softplus: return "softplus";
        case Activation::Identity: return "identity";
    }
    return "?";
}

std::string to_string(Output o) {
    switch (o) {
        case Output::SoftmaxCE: return "softmax-ce";
        case Output::SigmoidMSE: return "sigmoid-mse";
        case Output::IdentityMSE: return "identity-mse";
    }
    return "?";
}

// The formulas live in the policies (activation.hpp); these are their scalar uses.
double activate(Activation f, double a) {
    return with_activation(f, [&](auto policy) -> double { return decltype(policy)::f(a); });
}

double activate_d1(Activation f, double a) {
    return with_activation(f, [&](auto policy) -> double {
        using F = decltype(policy);
        return F::d1(a, double(F::f(a)));
    });
}

double activate_d2(Activation f, double a) {
    return with_activation(f, [&](auto policy) -> double {
        using F = decltype(policy);
        return F::d2(a, double(F::f(a)));
    });
}

Architecture Architecture::parse(const std::string& text, Activation hidden, Output output) {
    Architecture arch;
    arch.hidden = hidden;
    arch.output = output;
    auto bad = [&](const std::string& why) {
        return Error(
            "arch: expected widths like 784-50-10 (at least two positive integers "
            "joined by '-'), found '" +
            text + "': " + why);
    };
    std::size_t pos = 0;
    while (true) {
        std::size_t dash = text.find('-', pos);
        std::string part = text.substr(pos, dash == std::string::npos ? std::string::npos : dash - pos);
        if (part.empty()) throw bad("empty width");
        for (char c : part)
            if (c < '0' || c > '9') throw bad("'" + part + "' is not a positive integer");
        if (part.size() > 7) throw bad("width " + part + " is too large (at most 9999999)");
        Index n = std::stol(part);
        if (n <= 0) throw bad("widths must be positive");
        arch.widths.push_back(n);
        if (dash == std::string::npos) break;
        pos = dash + 1;
    }
    if (arch.widths.size() < 2) throw bad("need an input and an output width");
    // Keep theta addressable and allocatable: more than 2^31 parameters is surely a typo.
    double p = 0;
    for (std::size_t l = 1; l < arch.widths.size(); ++l) p += double(arch.widths[l - 1] + 1) * double(arch.widths[l]);
    if (p > 2147483647.0) throw bad("more than 2^31 parameters");
    return arch;
}

std::string Architecture::to_string() const {
    std::ostringstream s;
    for (std::size_t l = 0; l < widths.size(); ++l) s << (l ? "-" : "") << widths[l];
    return s.str();
}

Index Architecture::num_params() const { return weight_offset(layers() + 1); }

Index Architecture::weight_offset(Index l) const {
    Index off = 0;
    for (Index j = 1; j < l; ++j) off += (widths[j - 1] + 1) * widths[j];
    return off;
}

ConstRowMap weight(const Architecture& arch, const Vector& theta, Index l) {
    return ConstRowMap(theta.data() + arch.weight_offset(l), arch.widths[l - 1], arch.widths[l]);
}

Eigen::Map<const Vector> bias(const Architecture& arch, const Vector& theta, Index l) {
    return Eigen::Map<const Vector>(theta.data() + arch.bias_offset(l), arch.widths[l]);
}

Vector init_params(const Architecture& arch, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    Vector theta(arch.num_params());
    for (Index l = 1; l <= arch.layers(); ++l) {
        const double r = 1.0 / std::sqrt(double(arch.widths[l - 1]));
        const Index begin = arch.weight_offset(l), end = arch.weight_offset(l + 1);
        for (Index i = begin; i < end; ++i) {
            const double u = double(gen() >> 11) * 0x1.0p-53;  // [0, 1)
            theta[i] = (2 * u - 1) * r;
        }
    }
    return theta;
}

}  // namespace tdyn
