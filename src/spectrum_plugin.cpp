#include "tdyn/spectrum_plugin.hpp"

#include <algorithm>
#include <cmath>

namespace tdyn {

namespace {

/// Rows of a K-wide series: the values, NaN where fewer than K were found.
Vector padded(const Vector& v, Index K) {
    Vector r = Vector::Constant(K, std::nan(""));
    r.head(std::min(K, v.size())) = v.head(std::min(K, v.size()));
    return r;
}

const char* const kEigenSeries[] = {"hessian_top", "hessian_bottom", "residual_top", "residual_bottom", "jacobian"};
const char* const kScalarSeries[] = {"matvecs", "converged", "lambda_max", "two_over_alpha", "unstable", "max_abs_mu"};
/// Added after the others (files written before it lack it; see create()).
const char* const kCosGU1 = "cos_g_u1";
const char* const kCheckpoint[] = {"/checkpoint/spectrum_step", "/checkpoint/spectrum_start_top",
                                   "/checkpoint/spectrum_start_bottom"};

/// Drops the rows of `group`'s series (and of its trace/ and density/ subgroups) at steps >= from.
void truncate_group(h5::File& f, const std::string& group, Index from) {
    const Index K = f.attr_int(group, "eigs");
    for (const std::string& g : {group, group + "/trace", group + "/density"}) {
        if (!f.exists(g + "/step")) continue;
        std::vector<std::string> series, vectors;
        for (const std::string& child : f.children(g)) {
            if (child == "step" || f.exists(g + "/" + child + "/step")) continue;
            (child.rfind("vectors_", 0) == 0 ? vectors : series).push_back(g + "/" + child);
        }
        truncate_from(f, g + "/step", vectors, from, K);  // eigenvectors: K rows per step
        truncate_from(f, g + "/step", series, from);
    }
}

}  // namespace

void write_inline_spectrum_settings(h5::File& f, const SpectrumSettings& s) {
    f.set_attr("/", "spectrum_every", std::int64_t(s.every));
    f.set_attr("/", "eigs", std::int64_t(s.options.eig.eigs));
    f.set_attr("/", "which", to_string(s.options.ends));
}

SpectrumSettings read_inline_spectrum_settings(h5::File& f, double alpha) {
    SpectrumSettings s;
    s.every = f.attr_int("/", "spectrum_every");
    s.options.eig.eigs = f.attr_int("/", "eigs");
    const std::string which = f.attr_string("/", "which");
    s.options.ends = parse_ends(which);
    s.alpha = alpha;
    return s;
}

std::string spectrum_group(h5::File& f, Index K, Ends ends) {
    const std::string which = to_string(ends);
    if (!f.exists("/spectrum")) return "/spectrum";
    const std::string have = f.has_attr("/spectrum", "which") ? f.attr_string("/spectrum", "which") : "both";
    if (f.attr_int("/spectrum", "eigs") == K && have == which) return "/spectrum";
    return "/spectrum_k" + std::to_string(K) + "_" + which;
}

SpectrumPlugin::SpectrumPlugin(SpectrumSettings s, std::string group,
                               std::function<void(Index, const SpectrumAnalysis&)> on_result)
    : m_s(std::move(s)), m_group(std::move(group)), m_on_result(std::move(on_result)) {
    std::sort(m_s.steps.begin(), m_s.steps.end());
}

void SpectrumPlugin::check(h5::File& f) const {
    const std::string g = m_group.empty() ? spectrum_group(f, m_s.options.eig.eigs, m_s.options.ends) : m_group;
    if (!f.exists(g + "/step")) return;
    if (m_s.vectors && !f.exists(g + "/vectors_top") && f.rows(g + "/step") > 0)
        throw Error(f.path() + ":" + g + " has earlier rows without eigenvectors; cannot add them now (vectors)");
    if (m_s.options.density && f.exists(g + "/density/grid") &&
        Index(f.shape(g + "/density/grid")[1]) != m_s.options.grid)
        throw Error(f.path() + ":" + g + "/density has " + std::to_string(f.shape(g + "/density/grid")[1]) +
                    " grid points; use that number of grid points to add to it");
}

void SpectrumPlugin::create(h5::File& f) {
    check(f);
    const Index K = m_s.options.eig.eigs;
    if (m_group.empty()) m_group = spectrum_group(f, K, m_s.options.ends);
    const hsize_t P = hsize_t(f.shape("/params/theta")[0]);
    if (!f.exists(series("step"))) {
        f.create_series(series("step"), 0);
        for (const char* s : kEigenSeries) f.create_series(series(s), hsize_t(K));
        for (const char* s : kScalarSeries) f.create_series(series(s), 0);
        f.set_attr(m_group, "eigs", std::int64_t(K));
        f.set_attr(m_group, "alpha", m_s.alpha);
        f.set_attr(m_group, "which", to_string(m_s.options.ends));
    }
    // A group written before cos_g_u1 existed: NaN for its earlier rows, so that rows stay aligned.
    if (!f.exists(series(kCosGU1))) {
        f.create_series(series(kCosGU1), 0);
        for (hsize_t j = 0; j < f.rows(series("step")); ++j) f.append_scalar(series(kCosGU1), std::nan(""));
    }
    // Everything it will append is created now: no dataset can be created while SWMR writes.
    if (m_s.vectors)
        for (const char* s : {"vectors_top", "vectors_bottom"})
            if (!f.exists(series(s))) f.create_series(series(s), P, 1);
    if (m_s.options.trace && !f.exists(series("trace/step")))
        for (const char* s : {"trace/step", "trace/trace", "trace/standard_error", "trace/probes"})
            f.create_series(series(s), 0);
    if (m_s.options.density && !f.exists(series("density/step"))) {
        f.create_series(series("density/step"), 0);
        f.create_series(series("density/sigma"), 0);
        f.create_series(series("density/grid"), hsize_t(m_s.options.grid));
        f.create_series(series("density/density"), hsize_t(m_s.options.grid));
    }
    // The warm start of the in-line analysis goes with every stored theta.
    if (m_s.every > 0 && !f.exists(kCheckpoint[0])) {
        f.create_series(kCheckpoint[0], 0);
        f.create_series(kCheckpoint[1], P, 1);
        f.create_series(kCheckpoint[2], P, 1);
    }
}

void SpectrumPlugin::start(Index, const Vector&) { m_previous.reset(); }

void SpectrumPlugin::truncate(h5::File& f, Index s) {
    if (m_group.empty()) m_group = "/spectrum";
    truncate_group(f, m_group, s);
}

void SpectrumPlugin::restore(h5::File& f, Index s) {
    m_previous.reset();
    if (!f.exists(kCheckpoint[0])) return;
    // The warm start stored with theta_s (NaN rows: there was no earlier analysis).
    const Index row = checkpoint_row(f, kCheckpoint[0], s);
    for (const char* n : kCheckpoint) f.truncate_rows(n, std::min<hsize_t>(f.rows(n), hsize_t(row + 1)));
    if (row < 0) return;
    SpectrumAnalysis warm;
    const Vector top = f.read_row(kCheckpoint[1], hsize_t(row));
    const Vector bottom = f.read_row(kCheckpoint[2], hsize_t(row));
    if (top.allFinite()) warm.top.vectors = top;
    if (bottom.allFinite()) warm.bottom.vectors = bottom;
    if (top.allFinite() || bottom.allFinite()) m_previous = std::move(warm);
}

void SpectrumPlugin::checkpoint(h5::File& f, Index t) {
    if (m_s.every <= 0) return;  // only the in-line analysis resumes
    const Index P = f.shape(kCheckpoint[1])[1];
    const Vector none = Vector::Constant(P, std::nan(""));
    auto start = [&](const EigenResult& r) { return r.vectors.cols() > 0 ? Vector(r.vectors.rowwise().sum()) : none; };
    f.append(kCheckpoint[1], m_previous ? start(m_previous->top) : none);
    f.append(kCheckpoint[2], m_previous ? start(m_previous->bottom) : none);
    f.append_scalar(kCheckpoint[0], double(t));
}

bool SpectrumPlugin::needs(Index t) const {
    if (m_s.every > 0) return t % m_s.every == 0;
    return std::binary_search(m_s.steps.begin(), m_s.steps.end(), t);
}

void SpectrumPlugin::step(StepContext& c) {
    if (!needs(c.t) || !c.stats.finite()) return;
    // The spectrum is of the full-batch loss: the step's own Evaluation when the run is full batch.
    Evaluation& e = c.trainer.full_batch_evaluation(c.theta);
    SpectrumAnalysis a = analyse_spectrum(e, m_s.options, m_s.alpha, m_previous ? &*m_previous : nullptr);
    const double cos_g_u1 = gradient_cosine(e, a, m_previous ? &*m_previous : nullptr);
    m_previous = std::move(a);
    append(c.file, c.t, *m_previous, cos_g_u1);
    if (m_previous->top.vectors.cols() > 0) c.top_eigenvectors = &m_previous->top.vectors;
    if (m_on_result) m_on_result(c.t, *m_previous);
}

double gradient_cosine(Evaluation& e, const SpectrumAnalysis& a, const SpectrumAnalysis* previous) {
    if (a.top.vectors.cols() == 0) return std::nan("");
    const Vector& g = e.gradient();
    const double c = g.dot(a.top.vectors.col(0)) / g.norm();
    // u_1's sign is the solver's; turned towards the warm start (which a resume restores), so
    // that a sign change of cos_g_u1 between analyses is one of g, not of u_1
    if (!previous || previous->top.vectors.cols() == 0) return c;
    return previous->top.vectors.rowwise().sum().dot(a.top.vectors.col(0)) < 0 ? -c : c;
}

void SpectrumPlugin::append(h5::File& f, Index step, const SpectrumAnalysis& a, double cos_g_u1) {
    const Index K = m_s.options.eig.eigs;
    f.append(series("hessian_top"), padded(a.top.values, K));
    f.append(series("hessian_bottom"), padded(a.bottom.values, K));
    f.append(series("residual_top"), padded(a.top.residuals, K));
    f.append(series("residual_bottom"), padded(a.bottom.residuals, K));
    f.append(series("jacobian"), padded(a.jacobian, K));
    f.append_scalar(series("matvecs"), double(a.matvecs));
    f.append_scalar(series("converged"), a.converged ? 1.0 : 0.0);
    f.append_scalar(series("lambda_max"), a.stability.lambda_max);
    f.append_scalar(series("two_over_alpha"), a.stability.two_over_alpha);
    f.append_scalar(series("unstable"), double(a.stability.unstable));
    f.append_scalar(series("max_abs_mu"), a.stability.max_abs_mu);
    f.append_scalar(series(kCosGU1), cos_g_u1);
    if (m_s.vectors) {
        for (const auto& [name, r] :
             {std::pair<const char*, const EigenResult*>{"vectors_top", &a.top}, {"vectors_bottom", &a.bottom}}) {
            const std::string n = series(name);
            for (Index i = 0; i < K; ++i)
                f.append(n, i < r->vectors.cols() ? Vector(r->vectors.col(i))
                                                  : Vector::Constant(f.shape(n)[1], std::nan("")));
        }
    }
    if (a.trace.probes > 0) {
        f.append_scalar(series("trace/step"), double(step));
        f.append_scalar(series("trace/trace"), a.trace.trace);
        f.append_scalar(series("trace/standard_error"), a.trace.standard_error);
        f.append_scalar(series("trace/probes"), double(a.trace.probes));
    }
    if (a.density.probes > 0) {
        f.append_scalar(series("density/step"), double(step));
        f.append_scalar(series("density/sigma"), a.density.sigma);
        f.append(series("density/grid"), a.density.grid);
        f.append(series("density/density"), a.density.density);
    }
    // The step goes last: a reader that sees it sees the whole row.
    f.append_scalar(series("step"), double(step));
}

}  // namespace tdyn
