#include "tdyn/lyapunov_plugin.hpp"

#include <cmath>

namespace tdyn {

namespace {

const char* const kStep = "/checkpoint/lyapunov_step";
const char* const kBasis = "/checkpoint/lyapunov_basis";

}  // namespace

LyapunovSettings read_lyapunov_settings(h5::File& f) {
    if (!f.exists("/lyapunov/step")) throw Error(f.path() + ": holds no /lyapunov group");
    LyapunovSettings s;
    s.tangent.vectors = f.attr_int("/lyapunov", "vectors");
    s.tangent.qr_every = f.attr_int("/lyapunov", "qr_every");
    s.tangent.warmup = f.attr_int("/lyapunov", "warmup");
    s.tangent.seed = std::uint64_t(f.attr_int("/lyapunov", "seed"));
    s.alpha = f.attr_double("/lyapunov", "alpha");
    s.from = f.attr_int("/lyapunov", "from");
    s.overlap_eigs = f.attr_int("/lyapunov", "overlap_eigs");
    if (f.has_attr("/lyapunov", "start_file")) s.start_source = f.attr_string("/lyapunov", "start_file");
    return s;
}

void write_inline_lyapunov_settings(h5::File& f, const LyapunovSettings& s) {
    f.set_attr("/", "lyapunov", std::int64_t(s.tangent.vectors));
    f.set_attr("/", "qr_every", std::int64_t(s.tangent.qr_every));
    f.set_attr("/", "warmup", std::int64_t(s.tangent.warmup));
}

LyapunovSettings read_inline_lyapunov_settings(h5::File& f, std::uint64_t seed, double alpha) {
    LyapunovSettings s;
    s.tangent.vectors = 0;
    s.tangent.seed = seed;
    s.alpha = alpha;
    if (f.has_attr("/", "lyapunov")) {
        s.tangent.vectors = f.attr_int("/", "lyapunov");
        s.tangent.qr_every = f.attr_int("/", "qr_every");
        s.tangent.warmup = f.attr_int("/", "warmup");
    }
    if (s.enabled() && f.exists("/lyapunov")) s.overlap_eigs = f.attr_int("/lyapunov", "overlap_eigs");
    return s;
}

void LyapunovPlugin::check(h5::File& f) const {
    if (f.exists("/lyapunov")) throw Error(f.path() + ": already holds a /lyapunov group");
}

void LyapunovPlugin::create(h5::File& f) {
    check(f);
    const hsize_t M = hsize_t(m_s.tangent.vectors), P = hsize_t(f.shape("/params/theta")[0]);
    f.create_series("/lyapunov/step", 0);
    f.create_series("/lyapunov/log_growth", M);
    f.create_series("/lyapunov/exponents", M);
    f.set_attr("/lyapunov", "vectors", std::int64_t(M));
    f.set_attr("/lyapunov", "qr_every", std::int64_t(m_s.tangent.qr_every));
    f.set_attr("/lyapunov", "warmup", std::int64_t(m_s.tangent.warmup));
    f.set_attr("/lyapunov", "seed", std::int64_t(m_s.tangent.seed));
    f.set_attr("/lyapunov", "alpha", m_s.alpha);
    f.set_attr("/lyapunov", "from", std::int64_t(m_s.from));
    f.set_attr("/lyapunov", "eps", 0.0);  // the perturbation analysis, when present, sets its EPS
    f.set_attr("/lyapunov", "overlap_eigs", std::int64_t(m_s.overlap_eigs));
    // Given start vectors: how many, the file they came from, and the vectors themselves, so the
    // analysis can be audited and repeated without that file (absent: the random start)
    if (m_s.tangent.start.cols() > 0) {
        f.set_attr("/lyapunov", "start_vectors", std::int64_t(m_s.tangent.start.cols()));
        f.set_attr("/lyapunov", "start_file", m_s.start_source);
        f.write("/lyapunov/start", RowMatrix(m_s.tangent.start.transpose()));
    }
    // How far the analysis went: rewritten at the end of each pass (set now so that the group's
    // header does not grow then: a resumed file keeps the size of an uninterrupted one).
    f.set_attr("/lyapunov", "to", std::int64_t(m_s.from));
    if (m_s.overlap_eigs > 0) {
        f.create_series("/lyapunov/overlap_step", 0);
        f.create_series("/lyapunov/overlap", hsize_t(m_s.overlap_eigs));
    }
    // A row per checkpoint: the basis V, column after column.
    f.create_series(kStep, 0);
    f.create_series(kBasis, P * M, 1);
}

void LyapunovPlugin::start(Index from, const Vector& theta) {
    m_s.from = from;
    m_tangent.emplace(theta.size(), m_s.tangent);
}

void LyapunovPlugin::truncate(h5::File& f, Index s) {
    truncate_from(f, "/lyapunov/step", {"/lyapunov/log_growth", "/lyapunov/exponents"}, s);
    truncate_from(f, "/lyapunov/overlap_step", {"/lyapunov/overlap"}, s);
}

void LyapunovPlugin::restore(h5::File& f, Index s) {
    m_s = read_lyapunov_settings(f);
    const Index M = m_s.tangent.vectors;
    const Index row = checkpoint_row(f, kStep, s);
    if (row < 0)
        throw Error(f.path() + ": resume: no Lyapunov checkpoint at step " + std::to_string(s) +
                    " (the last stored theta); the tangent vectors cannot be continued");
    const Vector flat = f.read_row(kBasis, hsize_t(row));
    const Index P = flat.size() / M;
    const Matrix V = Eigen::Map<const Matrix>(flat.data(), P, M);
    for (const char* n : {kStep, kBasis}) f.truncate_rows(n, std::min<hsize_t>(f.rows(n), hsize_t(row + 1)));

    // Re-add the counted log growths in the order the run added them: bit-identical sums.
    const Index t0 = m_s.from, W = m_s.tangent.warmup;
    const Index n = Index(f.rows("/lyapunov/step"));
    const Vector steps = n ? f.read_vector("/lyapunov/step") : Vector();
    const RowMatrix growth = n ? f.read_rows("/lyapunov/log_growth", 0, hsize_t(n)) : RowMatrix(0, M);
    Vector log_sum = Vector::Zero(M);
    for (Index j = 0; j < n; ++j)
        if (Index(steps[j]) - t0 + 1 > W) log_sum += growth.row(j).transpose();
    m_tangent.emplace(V, m_s.tangent, s - t0, log_sum);
}

void LyapunovPlugin::checkpoint(h5::File& f, Index t) {
    const Matrix& V = m_tangent->basis();
    f.append(kBasis, V.data(), hsize_t(V.size()));
    f.append_scalar(kStep, double(t));
}

void LyapunovPlugin::step(StepContext& c) {
    if (c.t >= c.to || c.t < m_s.from || !c.stats.finite()) return;
    if (m_s.overlap_eigs > 0 && c.top_eigenvectors) {
        // |cos| between v_1 and the top eigenvectors of H(theta_t), computed at this step
        const Vector o = overlaps(m_tangent->basis().col(0), *c.top_eigenvectors);
        Vector row = Vector::Constant(m_s.overlap_eigs, std::nan(""));
        row.head(std::min(o.size(), m_s.overlap_eigs)) = o.head(std::min(o.size(), m_s.overlap_eigs));
        c.file.append("/lyapunov/overlap", row);
        c.file.append_scalar("/lyapunov/overlap_step", double(c.t));
    }
    // V_{t+1} = J(t) V_t = V_t - alpha H(theta_t) V_t, with the Evaluation of the update
    Evaluation& e = c.trainer.evaluation();
    if (m_tangent->step([&](const Matrix& V, Matrix& JV) { apply_update_jacobian(e, m_s.alpha, V, JV); })) {
        c.file.append("/lyapunov/log_growth", m_tangent->log_growth());
        c.file.append("/lyapunov/exponents", m_tangent->exponents());
        c.file.append_scalar("/lyapunov/step", double(c.t));  // last: a reader that sees it sees the row
    }
}

void LyapunovPlugin::finish(h5::File& f, Index) {
    const Index at = m_s.from + m_tangent->steps();
    if (f.exists("/lyapunov/basis")) f.remove("/lyapunov/basis");
    f.write("/lyapunov/basis", RowMatrix(m_tangent->basis()));
    f.set_attr("/lyapunov/basis", "step", std::int64_t(at));
    f.set_attr("/lyapunov", "to", std::int64_t(at));
}

}  // namespace tdyn
