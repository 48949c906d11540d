// The spectrum analysis as a plug-in of the trajectory driver: eigenvalues of H and of
// J = I - alpha H (spectrum.hpp's analyse_spectrum) every E steps of training, or at listed
// steps of a saved run, warm-started from the previous analysis, written to a spectrum group
// of the run file (docs/FORMAT.md: /spectrum, or /spectrum_k{K}_{which} for a further
// configuration).
#pragma once

#include "tdyn/analysis.hpp"
#include "tdyn/spectrum.hpp"

#include <functional>
#include <optional>
#include <vector>

namespace tdyn {

struct SpectrumSettings {
    Index every = 0;           ///< E: at every multiple of E (in-line); 0 = only at `steps`
    std::vector<Index> steps;  ///< listed steps (tdyn spectrum on a saved run), ascending
    SpectrumOptions options;   ///< K, which ends, solver, trace, density
    double alpha = 0.1;        ///< of J = I - alpha H
    bool vectors = false;      ///< also store the eigenvectors
    bool enabled() const { return every > 0 || !steps.empty(); }
};

/// The in-line spectrum's root attributes spectrum_every, eigs, which (written also when it is
/// off, so that every run file has them), and back.
void write_inline_spectrum_settings(h5::File& f, const SpectrumSettings& s);
SpectrumSettings read_inline_spectrum_settings(h5::File& f, double alpha);

/// The spectrum group of a configuration (K, which) in a file: /spectrum when absent or
/// holding the same configuration (a group without a `which` attribute holds "both"), else
/// /spectrum_k{K}_{which}.
std::string spectrum_group(h5::File& f, Index K, Ends ends);

/// cos(g, u_1) = g . u_1 / |g|: the signed share of the gradient g = grad L(theta_t) along the top
/// eigenvector u_1 of H(theta_t), u_1 turned to a positive dot product with the warm start (the
/// previous analysis's top vectors summed) when there is one. NaN when the top end was not asked.
/// Its sign alternates from step to step while GD oscillates with period 2 along u_1.
double gradient_cosine(Evaluation& e, const SpectrumAnalysis& a, const SpectrumAnalysis* previous);

class SpectrumPlugin : public Analysis {
public:
    /// `group` empty: chosen by spectrum_group() when the file is known. `on_result` (optional)
    /// sees every analysis (tdyn spectrum prints them).
    explicit SpectrumPlugin(SpectrumSettings s, std::string group = "",
                            std::function<void(Index, const SpectrumAnalysis&)> on_result = {});
    std::string name() const override { return "spectrum"; }
    const std::string& group() const { return m_group; }

    void check(h5::File& f) const override;
    void create(h5::File& f) override;
    void start(Index from, const Vector& theta) override;
    void truncate(h5::File& f, Index s) override;
    void restore(h5::File& f, Index s) override;
    void checkpoint(h5::File& f, Index t) override;
    bool needs(Index t) const override;
    void step(StepContext& c) override;

private:
    std::string series(const char* name) const { return m_group + "/" + name; }
    void append(h5::File& f, Index t, const SpectrumAnalysis& a, double cos_g_u1);

    SpectrumSettings m_s;
    std::string m_group;
    std::function<void(Index, const SpectrumAnalysis&)> m_on_result;
    std::optional<SpectrumAnalysis> m_previous;  ///< the warm start: the last analysis
};

}  // namespace tdyn
