#include "tdyn/trainer.hpp"

#include "tdyn/params.hpp"

#include <cmath>
#include <random>

namespace tdyn {

bool StepStats::finite() const { return std::isfinite(loss) && std::isfinite(grad_norm); }

Trainer::Trainer(const TrainConfig& config, std::shared_ptr<const Dataset> data)
    : m_config(config), m_arch(config.architecture()), m_data(std::move(data)) {
    if (!(config.lr > 0) || !std::isfinite(config.lr))
        throw Error("lr: the learning rate must be a positive number, found " + format_number(config.lr));
    if (!(config.weight_decay >= 0) || !std::isfinite(config.weight_decay))
        throw Error("weight_decay: lambda must be a finite number >= 0, found " + format_number(config.weight_decay));
    if (config.batch < 0 || config.batch > m_data->global_samples())
        throw Error("batch " + std::to_string(config.batch) + ": must be between 1 and the number of samples (" +
                    std::to_string(m_data->global_samples()) + "), or 0 for full batch");
    if (config.batch == 0) {
        m_X = std::make_unique<InputMatrix>(m_data->X, config.x_path, config.precision, 0.3, m_data->comm);
        m_eval = std::make_unique<Evaluation>(m_arch, *m_X, m_data->T, options());
    }
}

std::vector<Index> Trainer::batch_rows(Index t) const {
    const Index k = m_data->global_samples(), B = m_config.batch;
    const Index per_epoch = k / B, epoch = t / per_epoch, pos = t % per_epoch;
    std::vector<Index> perm(k);
    for (Index i = 0; i < k; ++i) perm[i] = i;
    std::mt19937_64 gen(m_config.seed * 0x9E3779B97F4A7C15ULL + std::uint64_t(epoch) + 1);
    for (Index i = k - 1; i > 0; --i) {
        // j uniform in [0, i] by 128-bit multiply-shift: the same on every platform.
        const Index j = Index((static_cast<unsigned __int128>(gen()) * std::uint64_t(i + 1)) >> 64);
        std::swap(perm[i], perm[j]);
    }
    return {perm.begin() + pos * B, perm.begin() + (pos + 1) * B};
}

Evaluation& Trainer::evaluation_for(Index t, const Vector& theta) {
    if (m_config.batch == 0) {
        m_eval->reset(theta);
        return *m_eval;
    }
    // The batch's rows (global indices) that this rank holds, in batch order; the Evaluation's
    // means divide by the batch size B, the sum of the ranks' counts.
    std::vector<Index> rows;
    const Index r0 = m_data->first_row, r1 = r0 + m_data->samples();
    for (Index r : batch_rows(t))
        if (r >= r0 && r < r1) rows.push_back(r - r0);
    const Index B = Index(rows.size());
    m_batch_X.resize(B, m_data->X.cols());
    m_batch_T.resize(B, m_data->T.cols());
    for (Index i = 0; i < B; ++i) {
        m_data->X.copy_row(rows[i], m_batch_X.row(i).data());
        m_batch_T.row(i) = m_data->T.row(rows[i]);
    }
    // Mini-batches are small: the dense path, in the precision asked for.
    m_batch_eval.reset();
    m_batch_input = std::make_unique<InputMatrix>(m_batch_X, XPath::Dense, m_config.precision);
    m_batch_eval = std::make_unique<Evaluation>(m_arch, *m_batch_input, m_batch_T, theta, options());
    return *m_batch_eval;
}

Evaluation& Trainer::full_batch_evaluation(const Vector& theta) {
    if (!m_eval) {
        m_X = std::make_unique<InputMatrix>(m_data->X, m_config.x_path, m_config.precision, 0.3, m_data->comm);
        m_eval = std::make_unique<Evaluation>(m_arch, *m_X, m_data->T, options());
    }
    if (m_last == m_eval.get() && m_eval->theta() == theta) return *m_eval;
    if (m_last == m_eval.get()) m_last = nullptr;  // the step's Evaluation no longer holds its theta
    m_eval->reset(theta);
    return *m_eval;
}

Evaluation& Trainer::evaluation_at(Index t, const Vector& theta) {
    m_last = &evaluation_for(t, theta);
    return *m_last;
}

StepStats Trainer::evaluate(Index t, const Vector& theta) {
    Evaluation& e = evaluation_for(t, theta);
    m_last = &e;
    // /trajectory/loss is the data term L; the gradient (and H, J) are of L + lambda/2 |theta|^2
    return {e.data_loss(), e.accuracy(), e.gradient().norm()};
}

StepStats Trainer::step(Index t, Vector& theta) {
    const StepStats s = evaluate(t, theta);
    if (!s.finite()) return s;
    // theta_{t+1} = theta_t - alpha grad E(theta_t),  E = L + lambda/2 |theta|^2
    theta.noalias() -= m_config.lr * m_last->gradient();
    return s;
}

Vector Trainer::replay(const Vector& theta_s, Index s, Index t,
                       const std::function<void(Index, const Vector&)>& visit) {
    Vector theta = theta_s;
    for (Index u = s; u < t; ++u) {
        if (visit) visit(u, theta);
        const StepStats st = step(u, theta);
        if (!st.finite())
            throw Error("replay: the loss is not finite at step " + std::to_string(u) + "; cannot regenerate step " +
                        std::to_string(t));
    }
    if (visit) visit(t, theta);
    return theta;
}

Vector initial_theta(const TrainConfig& config) {
    const Architecture arch = config.architecture();
    if (config.init.empty()) return init_params(arch, config.seed, config.init_scheme, config.init_scale);
    return read_params(config.init, arch);
}

Dataset load_config_data(const TrainConfig& config, const std::string& dir, const SampleComm& comm) {
    return load_dataset(config.data, data_dir(dir), config.samples, config.architecture().outputs(), false, comm);
}

}  // namespace tdyn
