#include "tdyn/perturbation_plugin.hpp"

#include <cmath>

namespace tdyn {

namespace {
const char* const kStep = "/checkpoint/lyapunov_step";  // shared with the tangent analysis: one row per checkpoint
const char* const kTheta = "/checkpoint/perturbation_theta";
// |theta' - theta| after the last pull-back (PerturbedTrajectory::base); absent in files written
// before it was kept, whose whole series is measured against eps and so goes on after a resume
const char* const kBase = "/checkpoint/perturbation_base";
const char* const kSeries[] = {"/lyapunov/perturbation/log_growth", "/lyapunov/perturbation/exponent"};
}  // namespace

void check_perturbation_eps(double eps) {
    if (!(eps >= 0) || !std::isfinite(eps))
        throw Error("perturbation: EPS must be a finite number >= 0, found " + format_number(eps));
}

void write_inline_perturbation_settings(h5::File& f, const PerturbationSettings& s) {
    f.set_attr("/", "perturbation", s.eps);
}

double read_inline_perturbation_eps(h5::File& f) {
    return f.has_attr("/", "lyapunov") && f.has_attr("/", "perturbation") ? f.attr_double("/", "perturbation") : 0.0;
}

Index perturbation_checkpoints(h5::File& f) {
    if (!f.exists(kStep) || !f.exists(kTheta)) return 0;
    hsize_t n = std::min(f.rows(kStep), f.rows(kTheta));
    if (f.exists(kBase)) n = std::min(n, f.rows(kBase));
    return Index(n);
}

PerturbationPlugin::PerturbationPlugin(const PerturbationSettings& s) : m_s(s) { check_perturbation_eps(s.eps); }

void PerturbationPlugin::create(h5::File& f) {
    for (const char* n : {"/lyapunov/perturbation/step", kSeries[0], kSeries[1]}) f.create_series(n, 0);
    f.set_attr("/lyapunov/perturbation", "eps", m_s.eps);
    f.set_attr("/lyapunov", "eps", m_s.eps);
    if (!f.exists(kStep)) f.create_series(kStep, 0);
    f.create_series(kTheta, hsize_t(f.shape("/params/theta")[0]), 1);
    f.create_series(kBase, 0);
}

void PerturbationPlugin::start(Index from, const Vector& theta) {
    m_s.from = from;
    // theta'_0 = theta_0 + eps v_1: along the first vector of the tangent analysis' initial basis
    const Vector u = initial_basis(theta.size(), m_s.tangent).col(0);
    m_perturbed.emplace(theta, u, m_s.eps, m_s.tangent.qr_every, m_s.tangent.warmup);
}

void PerturbationPlugin::truncate(h5::File& f, Index s) {
    truncate_from(f, "/lyapunov/perturbation/step", {kSeries[0], kSeries[1]}, s);
}

void PerturbationPlugin::restore(h5::File& f, Index s) {
    m_s.eps = f.attr_double("/lyapunov", "eps");
    m_s.tangent.qr_every = f.attr_int("/lyapunov", "qr_every");
    m_s.tangent.warmup = f.attr_int("/lyapunov", "warmup");
    m_s.from = f.attr_int("/lyapunov", "from");
    const Index row = checkpoint_row(f, kStep, s);
    const bool against_eps = !f.exists(kBase);
    if (row < 0 || hsize_t(row) >= f.rows(kTheta) || (!against_eps && hsize_t(row) >= f.rows(kBase)))
        throw Error(f.path() + ": resume: no perturbed-trajectory checkpoint at step " + std::to_string(s));
    const Vector theta_p = f.read_row(kTheta, hsize_t(row));
    f.truncate_rows(kTheta, hsize_t(row + 1));
    double base = m_s.eps;
    if (!against_eps) {
        base = f.read_vector(kBase)[row];
        f.truncate_rows(kBase, hsize_t(row + 1));
    }
    // The counted log growths of the rows kept, re-added in their order: bit-identical sums.
    const Vector steps = f.read_vector("/lyapunov/perturbation/step");
    const Index keep = steps.size();
    const Vector growth = keep ? f.read_vector(kSeries[0]) : Vector();
    double sum = 0;
    for (Index j = 0; j < keep; ++j)
        if (Index(steps[j]) - m_s.from + 1 > m_s.tangent.warmup) sum += growth[j];
    m_perturbed.emplace(theta_p, m_s.eps, m_s.tangent.qr_every, m_s.tangent.warmup, s - m_s.from, sum, base,
                        against_eps);
}

void PerturbationPlugin::checkpoint(h5::File& f, Index) {
    f.append(kTheta, m_perturbed->theta());
    if (f.exists(kBase)) f.append_scalar(kBase, m_perturbed->base());
}

void PerturbationPlugin::step(StepContext& c) {
    if (c.t >= c.to || c.t < m_s.from || !c.stats.finite()) return;
    // theta'_{t+1} = theta'_t - alpha grad L_t(theta'_t), renormalised against theta_{t+1}
    bool finite = true;
    const bool renormalised =
        m_perturbed->step([&](Vector& tp) { finite = c.trainer.step(c.t, tp).finite(); }, c.next_theta);
    if (!finite)
        throw Error("perturbation: the perturbed trajectory's loss is not finite at step " + std::to_string(c.t) +
                    "; use a smaller EPS");
    if (renormalised) {
        c.file.append_scalar(kSeries[0], m_perturbed->log_growth());
        c.file.append_scalar(kSeries[1], m_perturbed->exponent());
        c.file.append_scalar("/lyapunov/perturbation/step", double(c.t));
    }
}

}  // namespace tdyn
