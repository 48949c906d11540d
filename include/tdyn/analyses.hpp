// The analyses `tdyn train` can run in-line, in one place: their settings (flags <-> root
// attributes of the run file) and their plug-ins in the order the driver calls them. A new
// in-line analysis adds its settings here and one line to make_inline_analyses().
#pragma once

#include "tdyn/lyapunov_plugin.hpp"
#include "tdyn/perturbation_plugin.hpp"
#include "tdyn/spectrum_plugin.hpp"

#include <memory>
#include <vector>

namespace tdyn {

struct InlineAnalyses {
    SpectrumSettings spectrum;
    LyapunovSettings lyapunov;
    PerturbationSettings perturbation;
};

/// Derived settings: alpha and the seed from the run, the perturbation's schedule from the
/// tangent analysis, the tangent overlaps from the spectrum's top end.
void link_inline_analyses(InlineAnalyses& a, const TrainConfig& config);
/// Root attributes of every in-line analysis, also those that are off (docs/FORMAT.md).
void write_inline_settings(h5::File& f, const InlineAnalyses& a);
InlineAnalyses read_inline_settings(h5::File& f, const TrainConfig& config);
/// The plug-ins of the analyses that are on: spectrum, lyapunov, perturbation (it moves the
/// trainer to theta', so it goes last).
std::vector<std::unique_ptr<Analysis>> make_inline_analyses(const InlineAnalyses& a);

/// Raw pointers of a plug-in list, for drive() and begin_analyses().
std::vector<Analysis*> pointers(const std::vector<std::unique_ptr<Analysis>>& analyses);

}  // namespace tdyn
