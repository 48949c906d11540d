// Tangent Lyapunov exponents as a plug-in of the trajectory driver: M tangent vectors carried
// by V_{t+1} = J(t) V_t = V_t - alpha H(theta_t) V_t through the step's own Evaluation, with QR
// (lyapunov.hpp's TangentPropagator), written to /lyapunov (docs/FORMAT.md); the basis is
// checkpointed with every stored theta so a resumed pass continues bit for bit.
#pragma once

#include "tdyn/analysis.hpp"
#include "tdyn/lyapunov.hpp"

#include <optional>

namespace tdyn {

/// How a /lyapunov group was made (its attributes, docs/FORMAT.md).
struct LyapunovSettings {
    TangentOptions tangent;
    double alpha = 0.1;        ///< J(t) = I - alpha H(theta_t)
    Index from = 0;            ///< t0: the tangent vectors start at theta_{t0}
    Index overlap_eigs = 0;    ///< K of /lyapunov/overlap (0 = none): needs a spectrum's top end at the same steps
    std::string start_source;  ///< where tangent.start came from (attribute start_file; "" = random start)
    bool enabled() const { return tangent.vectors > 0; }
};
/// The group's attributes (tangent options, alpha, from, overlap_eigs, start_file; not the start vectors).
LyapunovSettings read_lyapunov_settings(h5::File& f);
/// tdyn train's root attributes of the in-line analysis: lyapunov (M, 0 = off), qr_every, warmup.
void write_inline_lyapunov_settings(h5::File& f, const LyapunovSettings& s);
/// Absent attributes (runs older than the in-line analysis) read as off.
LyapunovSettings read_inline_lyapunov_settings(h5::File& f, std::uint64_t seed, double alpha);

class LyapunovPlugin : public Analysis {
public:
    explicit LyapunovPlugin(const LyapunovSettings& s) : m_s(s) {}
    std::string name() const override { return "lyapunov"; }
    const TangentPropagator& tangent() const { return *m_tangent; }

    void check(h5::File& f) const override;
    void create(h5::File& f) override;
    void start(Index from, const Vector& theta) override;
    void truncate(h5::File& f, Index s) override;
    void restore(h5::File& f, Index s) override;
    void checkpoint(h5::File& f, Index t) override;
    bool needs(Index t) const override { return t >= m_s.from; }
    void step(StepContext& c) override;
    /// /lyapunov/basis (the last basis, attribute step) and the attribute `to`.
    void finish(h5::File& f, Index last) override;

private:
    LyapunovSettings m_s;
    std::optional<TangentPropagator> m_tangent;
};

}  // namespace tdyn
