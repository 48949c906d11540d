// Gradient descent as a map: theta_{t+1} = theta_t - alpha grad L_t(theta_t), where L_t is
// the full-batch loss, or for --batch B the loss on the t-th mini-batch of a seeded
// shuffle. The map is a pure function of (config, t, theta_t), which is what makes
// resume and replay bit-identical.
#pragma once

#include "tdyn/data.hpp"
#include "tdyn/evaluation.hpp"
#include "tdyn/network.hpp"

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace tdyn {

/// What defines a training run; stored as root attributes of the run file.
struct TrainConfig {
    std::string data = "mnist";  ///< mnist | fashion-mnist | path to an HDF5 data file
    Index samples = 0;           ///< the first K samples; 0 = all
    std::string arch = "784-50-10";
    Activation activation = Activation::Sigmoid;
    Output output = Output::SoftmaxCE;
    double lr = 0.1;             ///< alpha
    Index steps = 100;           ///< number of updates
    Index batch = 0;             ///< mini-batch size B; 0 = full batch
    std::uint64_t seed = 0;      ///< initialisation and shuffling
    std::string init;            ///< params file with /params/theta to start from ("" = init_params(seed))
    Index save_theta_every = 10; ///< S
    Precision precision = Precision::F64;
    XPath x_path = XPath::Auto;
    Index spectrum_every = 0;    ///< E: eigenvalues of H every E steps in-line (0 = never)
    Index eigs = 1;              ///< K for the in-line spectrum
    std::string which = "both";  ///< top | bottom | both
    Index lyapunov = 0;          ///< M tangent vectors carried in-line (0 = none)
    Index qr_every = 1;          ///< q: QR every q steps
    Index warmup = 0;            ///< W: steps that orthonormalise but do not count
    double perturbation = 0;     ///< EPS of the two-trajectory cross-check (0 = none)

    Architecture architecture() const { return Architecture::parse(arch, activation, output); }
};

/// Loss, accuracy and gradient norm at theta_t (on the step's batch).
struct StepStats {
    double loss = 0, accuracy = 0, grad_norm = 0;
    bool finite() const;
};

/// The update map of one training configuration, built once per run: holds the data, the
/// InputMatrix, and one Evaluation reused at every step.
class Trainer {
public:
    Trainer(const TrainConfig& config, std::shared_ptr<const Dataset> data);
    const TrainConfig& config() const { return m_config; }
    const Architecture& arch() const { return m_arch; }
    const Dataset& data() const { return *m_data; }

    /// Evaluates at theta_t (the step's batch), then updates theta in place to theta_{t+1}.
    /// When the loss or gradient is not finite, theta is left unchanged.
    StepStats step(Index t, Vector& theta);
    /// Only evaluates at theta_t on the step's batch (used for the last row of a run).
    StepStats evaluate(Index t, const Vector& theta);
    /// theta_t from theta_s (s <= t) by replaying the updates s, ..., t-1.
    Vector replay(const Vector& theta_s, Index s, Index t);
    /// The Evaluation of the last step() or evaluate(): analyses at theta_t reuse its forward pass.
    Evaluation& evaluation() { return *m_last; }

    /// Rows of the data in mini-batch t: a Fisher-Yates shuffle per epoch seeded by
    /// (seed, epoch), floor(k / B) batches per epoch, the remainder dropped.
    std::vector<Index> batch_rows(Index t) const;

private:
    Evaluation& evaluation_for(Index t, const Vector& theta);

    TrainConfig m_config;
    Architecture m_arch;
    std::shared_ptr<const Dataset> m_data;
    std::unique_ptr<InputMatrix> m_X;       // full batch, built once
    std::unique_ptr<Evaluation> m_eval;     // full batch, reused
    RowMatrix m_batch_X, m_batch_T;         // mini-batch copies
    std::unique_ptr<InputMatrix> m_batch_input;
    std::unique_ptr<Evaluation> m_batch_eval;
    Evaluation* m_last = nullptr;
};

/// The initial theta of a run: from the params file config.init if given (checked for length
/// and finiteness), else init_params(arch, seed).
Vector initial_theta(const TrainConfig& config);

/// Loads the data set the config names (dir: --data-dir, see data_dir()).
Dataset load_config_data(const TrainConfig& config, const std::string& dir);

}  // namespace tdyn
