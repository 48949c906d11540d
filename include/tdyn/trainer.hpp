// Gradient descent as a map: theta_{t+1} = theta_t - alpha grad L_t(theta_t), where L_t is
// the full-batch loss, or for --batch B the loss on the t-th mini-batch of a seeded
// shuffle. The map is a pure function of (config, t, theta_t), which is what makes
// resume and replay bit-identical.
#pragma once

#include "tdyn/config.hpp"
#include "tdyn/data.hpp"
#include "tdyn/evaluation.hpp"
#include "tdyn/network.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace tdyn {

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
    /// theta_t from theta_s (s <= t) by replaying the updates s, ..., t-1; `visit(u, theta_u)`
    /// (optional) sees every theta on the way, u = s, ..., t.
    Vector replay(const Vector& theta_s, Index s, Index t, const std::function<void(Index, const Vector&)>& visit = {});
    /// The step's Evaluation at theta_t after its forward pass alone (no loss, no gradient), for an
    /// analysis that only applies H there (tdyn growth); it becomes evaluation().
    Evaluation& evaluation_at(Index t, const Vector& theta);
    /// The Evaluation of the last step() or evaluate(): analyses at theta_t reuse its forward pass.
    Evaluation& evaluation() { return *m_last; }
    /// The full-batch Evaluation at theta: the last step's own when the run is full batch and
    /// it holds theta, else evaluated here (mini-batch runs: spectra are of the full-batch loss).
    Evaluation& full_batch_evaluation(const Vector& theta);

    /// Rows of the data in mini-batch t: a Fisher-Yates shuffle per epoch seeded by
    /// (seed, epoch), floor(k / B) batches per epoch, the remainder dropped.
    std::vector<Index> batch_rows(Index t) const;

private:
    /// The objective of the map: L + lambda/2 |theta|^2 (config.weight_decay).
    EvaluationOptions options() const { return {m_config.weight_decay, m_data->comm}; }
    Evaluation& evaluation_for(Index t, const Vector& theta);

    TrainConfig m_config;
    Architecture m_arch;
    std::shared_ptr<const Dataset> m_data;
    std::unique_ptr<InputMatrix> m_X;    // full batch, built once (on first use for mini-batch runs)
    std::unique_ptr<Evaluation> m_eval;  // full batch, reused
    RowMatrix m_batch_X, m_batch_T;      // mini-batch copies
    std::unique_ptr<InputMatrix> m_batch_input;
    std::unique_ptr<Evaluation> m_batch_eval;
    Evaluation* m_last = nullptr;
};

/// The initial theta of a run: from the params file config.init if given (checked for length
/// and finiteness), else init_params(arch, seed).
Vector initial_theta(const TrainConfig& config);

/// Loads the data set the config names (dir: --data-dir, see data_dir()); with comm, this
/// rank's block of it (load_dataset).
Dataset load_config_data(const TrainConfig& config, const std::string& dir, const SampleComm& comm = local_comm());

}  // namespace tdyn
