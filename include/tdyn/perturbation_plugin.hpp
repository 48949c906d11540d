// The two-trajectory (finite perturbation) estimate of the top Lyapunov exponent as a plug-in
// of the trajectory driver: theta'_{t0} = theta_{t0} + eps v_1 (v_1 the first vector of the
// tangent analysis' seeded initial basis), the same update as the run, renormalised against
// theta every q steps (lyapunov.hpp's PerturbedTrajectory); written to /lyapunov/perturbation.
// It steps the trainer at theta', so the driver must call it after every analysis that uses
// the step's Evaluation.
#pragma once

#include "tdyn/analysis.hpp"
#include "tdyn/lyapunov.hpp"

#include <optional>

namespace tdyn {

struct PerturbationSettings {
    double eps = 0;          ///< |theta' - theta| the renormalisation aims at (0 = off; rounding: lyapunov.hpp)
    TangentOptions tangent;  ///< the schedule (q, W) and the initial direction (seed, M) it shares with /lyapunov
    Index from = 0;          ///< t0
    bool enabled() const { return eps > 0; }
};
/// tdyn train's root attribute `perturbation` (EPS; absent reads as 0).
void write_inline_perturbation_settings(h5::File& f, const PerturbationSettings& s);
double read_inline_perturbation_eps(h5::File& f);
/// EPS must be finite and >= 0. Throws Error naming `perturbation`.
void check_perturbation_eps(double eps);
/// How many rows of /checkpoint/lyapunov_step also hold the perturbed copy's state. The tangent
/// analysis' checkpoint is flushed first, so a kill between the two flushes leaves its newest
/// row without the copy's: a resume starts from the newest row both hold.
Index perturbation_checkpoints(h5::File& f);

class PerturbationPlugin : public Analysis {
public:
    explicit PerturbationPlugin(const PerturbationSettings& s);
    std::string name() const override { return "perturbation"; }
    const PerturbedTrajectory& perturbed() const { return *m_perturbed; }

    void create(h5::File& f) override;
    void start(Index from, const Vector& theta) override;
    void truncate(h5::File& f, Index s) override;
    void restore(h5::File& f, Index s) override;
    void checkpoint(h5::File& f, Index t) override;
    bool needs(Index t) const override { return t >= m_s.from; }
    void step(StepContext& c) override;

private:
    PerturbationSettings m_s;
    std::optional<PerturbedTrajectory> m_perturbed;
};

}  // namespace tdyn
