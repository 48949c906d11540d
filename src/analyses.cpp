#include "tdyn/analyses.hpp"

namespace tdyn {

void link_inline_analyses(InlineAnalyses& a, const TrainConfig& config) {
    a.spectrum.alpha = config.lr;
    a.lyapunov.alpha = config.lr;
    a.lyapunov.tangent.seed = config.seed;
    a.lyapunov.overlap_eigs = a.spectrum.every > 0 && a.spectrum.options.top() ? a.spectrum.options.eig.eigs : 0;
    a.perturbation.tangent = a.lyapunov.tangent;
}

void write_inline_settings(h5::File& f, const InlineAnalyses& a) {
    write_inline_spectrum_settings(f, a.spectrum);
    write_inline_lyapunov_settings(f, a.lyapunov);
    write_inline_perturbation_settings(f, a.perturbation);
}

InlineAnalyses read_inline_settings(h5::File& f, const TrainConfig& config) {
    InlineAnalyses a;
    a.spectrum = read_inline_spectrum_settings(f, config.lr);
    a.lyapunov = read_inline_lyapunov_settings(f, config.seed, config.lr);
    a.perturbation.eps = read_inline_perturbation_eps(f);
    link_inline_analyses(a, config);
    return a;
}

std::vector<std::unique_ptr<Analysis>> make_inline_analyses(const InlineAnalyses& a) {
    std::vector<std::unique_ptr<Analysis>> out;
    if (a.spectrum.enabled()) out.push_back(std::make_unique<SpectrumPlugin>(a.spectrum, "/spectrum"));
    if (a.lyapunov.enabled()) out.push_back(std::make_unique<LyapunovPlugin>(a.lyapunov));
    if (a.perturbation.enabled()) out.push_back(std::make_unique<PerturbationPlugin>(a.perturbation));
    return out;
}

std::vector<Analysis*> pointers(const std::vector<std::unique_ptr<Analysis>>& analyses) {
    std::vector<Analysis*> p;
    for (const auto& a : analyses) p.push_back(a.get());
    return p;
}

}  // namespace tdyn
