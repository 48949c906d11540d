// What defines a training run (the problem and the map theta_t -> theta_{t+1}), and its
// round trip through the run file's root attributes. The settings of each analysis live
// with the analysis (analysis.hpp and its plug-ins), not here.
#pragma once

#include "tdyn/evaluation.hpp"
#include "tdyn/h5.hpp"
#include "tdyn/network.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace tdyn {

/// What defines a training run; stored as root attributes of the run file.
struct TrainConfig {
    std::string data = "mnist";  ///< mnist | fashion-mnist | path to an HDF5 data file
    Index samples = 0;           ///< the first K samples; 0 = all
    std::string arch = "784-50-10";
    Activation activation = Activation::Sigmoid;
    Output output = Output::SoftmaxCE;
    double lr = 0.1;          ///< alpha
    double weight_decay = 0;  ///< lambda: the map minimises L + lambda/2 |theta|^2
    Index steps = 100;        ///< number of updates
    Index batch = 0;          ///< mini-batch size B; 0 = full batch
    std::uint64_t seed = 0;   ///< initialisation and shuffling
    std::string init;         ///< params file with /params/theta to start from ("" = init_params(seed))
    InitScheme init_scheme = InitScheme::Uniform;  ///< without init: how theta_0 is drawn
    double init_scale = 1;                         ///< s of the scheme
    Index save_theta_every = 10;                   ///< S
    Precision precision = Precision::F64;
    XPath x_path = XPath::Auto;

    Architecture architecture() const { return Architecture::parse(arch, activation, output); }
};

/// The names parse_precision and parse_xpath read: "f64" | "f32"; "auto" | "dense" | "sparse".
std::string to_string(Precision p);
std::string to_string(XPath x);

/// Writes the configuration as root attributes (docs/FORMAT.md).
void write_config(h5::File& f, const TrainConfig& c);
/// Reads it back; attributes added after format 1 (weight_decay, init_scheme, init_scale)
/// default when absent.
TrainConfig read_config(h5::File& f);

}  // namespace tdyn
