#include "tdyn/run.hpp"

#include <cmath>
#include <filesystem>

namespace tdyn {

namespace fs = std::filesystem;

namespace {

std::vector<std::int64_t> widths_of(const Architecture& arch) {
    return {arch.widths.begin(), arch.widths.end()};
}

std::string arch_text(const std::vector<std::int64_t>& w) {
    std::string s;
    for (std::size_t i = 0; i < w.size(); ++i) s += (i ? "-" : "") + std::to_string(w[i]);
    return s;
}

void write_config(h5::File& f, const TrainConfig& c) {
    const Architecture arch = c.architecture();
    f.set_attr("/", "arch", widths_of(arch));
    f.set_attr("/", "activation", to_string(c.activation));
    f.set_attr("/", "output", to_string(c.output));
    f.set_attr("/", "alpha", c.lr);
    f.set_attr("/", "steps", std::int64_t(c.steps));
    f.set_attr("/", "batch", std::int64_t(c.batch));
    f.set_attr("/", "seed", std::int64_t(c.seed));
    f.set_attr("/", "data", c.data);
    f.set_attr("/", "samples", std::int64_t(c.samples));
    f.set_attr("/", "init", c.init);
    f.set_attr("/", "save_theta_every", std::int64_t(c.save_theta_every));
    f.set_attr("/", "precision", std::string(c.precision == Precision::F32 ? "f32" : "f64"));
    f.set_attr("/", "x_path", std::string(c.x_path == XPath::Auto ? "auto" : c.x_path == XPath::Dense ? "dense" : "sparse"));
    f.set_attr("/", "spectrum_every", std::int64_t(c.spectrum_every));
    f.set_attr("/", "eigs", std::int64_t(c.eigs));
    f.set_attr("/", "which", c.which);
    f.set_attr("/", "lyapunov", std::int64_t(c.lyapunov));
    f.set_attr("/", "qr_every", std::int64_t(c.qr_every));
    f.set_attr("/", "warmup", std::int64_t(c.warmup));
    f.set_attr("/", "perturbation", c.perturbation);
}

TrainConfig read_config(h5::File& f) {
    TrainConfig c;
    c.arch = arch_text(f.attr_ints("/", "arch"));
    c.activation = parse_activation(f.attr_string("/", "activation"));
    c.output = parse_output(f.attr_string("/", "output"));
    c.lr = f.attr_double("/", "alpha");
    c.steps = f.attr_int("/", "steps");
    c.batch = f.attr_int("/", "batch");
    c.seed = std::uint64_t(f.attr_int("/", "seed"));
    c.data = f.attr_string("/", "data");
    c.samples = f.attr_int("/", "samples");
    c.init = f.attr_string("/", "init");
    c.save_theta_every = f.attr_int("/", "save_theta_every");
    c.precision = parse_precision(f.attr_string("/", "precision"));
    c.x_path = parse_xpath(f.attr_string("/", "x_path"));
    c.spectrum_every = f.attr_int("/", "spectrum_every");
    c.eigs = f.attr_int("/", "eigs");
    c.which = f.attr_string("/", "which");
    if (f.has_attr("/", "lyapunov")) {
        c.lyapunov = f.attr_int("/", "lyapunov");
        c.qr_every = f.attr_int("/", "qr_every");
        c.warmup = f.attr_int("/", "warmup");
        c.perturbation = f.attr_double("/", "perturbation");
    }
    return c;
}

/// The /lyapunov settings of in-line training (tdyn train --lyapunov M): vectors from step 0,
/// overlaps with the top eigenvectors when the spectrum's top end is computed.
LyapunovSettings lyapunov_settings(const TrainConfig& c) {
    LyapunovSettings s;
    s.tangent.vectors = c.lyapunov;
    s.tangent.qr_every = c.qr_every;
    s.tangent.warmup = c.warmup;
    s.tangent.seed = c.seed;
    s.alpha = c.lr;
    s.eps = c.perturbation;
    s.overlap_eigs = c.spectrum_every > 0 && c.which != "bottom" ? c.eigs : 0;
    return s;
}

/// Opens read-only, with SWMR when the file allows it (a run being written, or killed).
h5::File open_for_reading(const std::string& path) {
    try {
        return h5::File::open_read(path, true);
    } catch (const Error&) {
        return h5::File::open_read(path, false);
    }
}

const char* kSeries[] = {"/trajectory/step", "/trajectory/loss", "/trajectory/accuracy", "/trajectory/grad_norm"};

/// The last row of a /checkpoint step series holding step s (rows are complete once their step
/// is written, which is last), or -1.
Index checkpoint_row(h5::File& f, const std::string& steps_name, Index s) {
    const Vector steps = f.read_vector(steps_name);
    Index row = -1;
    for (Index j = 0; j < steps.size(); ++j)
        if (steps[j] == double(s)) row = j;
    return row;
}

/// Rows of the series `names` whose index series `step` holds steps < from (the rest a
/// resumed run recomputes); `per_step` rows per step (K for the stored eigenvectors).
void truncate_indexed(h5::File& f, const std::string& step, const std::vector<std::string>& names, Index from) {
    if (!f.exists(step)) return;
    const Vector steps = f.read_vector(step);
    Index keep = 0;
    while (keep < steps.size() && steps[keep] < double(from)) ++keep;
    for (const std::string& name : names) {
        if (!f.exists(name)) continue;
        // Eigenvectors are stored K rows per step; a killed writer may have left extra rows.
        const bool vectors = name.find("/vectors_") != std::string::npos;
        const hsize_t rows = f.rows(name), per_step = vectors ? hsize_t(f.attr_int("/spectrum", "eigs")) : 1;
        f.truncate_rows(name, std::min<hsize_t>(rows, hsize_t(keep) * per_step));
    }
    f.truncate_rows(step, hsize_t(keep));
}

void truncate_lyapunov(h5::File& f, Index from) {
    truncate_indexed(f, "/lyapunov/step", {"/lyapunov/log_growth", "/lyapunov/exponents"}, from);
    truncate_indexed(f, "/lyapunov/perturbation/step",
                     {"/lyapunov/perturbation/log_growth", "/lyapunov/perturbation/exponent"}, from);
    truncate_indexed(f, "/lyapunov/overlap_step", {"/lyapunov/overlap"}, from);
}

/// Drops every analysis row at steps >= from: a resumed run recomputes them.
void truncate_analyses(h5::File& f, Index from) {
    // /spectrum: every series beside step is one row per step, vectors_* K rows per step.
    for (const std::string group : {"/spectrum", "/spectrum/trace", "/spectrum/density"}) {
        if (!f.exists(group + "/step")) continue;
        std::vector<std::string> names;
        for (const std::string& child : f.children(group))
            if (child != "step" && !f.exists(group + "/" + child + "/step")) names.push_back(group + "/" + child);
        truncate_indexed(f, group + "/step", names, from);
    }
    truncate_lyapunov(f, from);
}

}  // namespace

Vector read_params(const std::string& path, const Architecture& arch) {
    h5::File f = open_for_reading(path);
    if (!f.exists("/params/theta")) throw Error(path + ": not a params file: no dataset /params/theta");
    if (f.has_attr("/", "arch")) {
        const auto w = f.attr_ints("/", "arch");
        if (w != widths_of(arch))
            throw Error(path + ": params are for arch " + arch_text(w) + ", but the run uses " + arch.to_string());
    }
    const auto dims = f.shape("/params/theta");  // checked before reading: a huge dataset is not read
    if (dims.size() == 1 && Index(dims[0]) != arch.num_params())
        throw Error(path + ": /params/theta has " + std::to_string(dims[0]) + " entries; arch " +
                    arch.to_string() + " needs " + std::to_string(arch.num_params()));
    const Vector theta = f.read_vector("/params/theta");
    if (theta.size() != arch.num_params())
        throw Error(path + ": /params/theta has " + std::to_string(theta.size()) + " entries; arch " +
                    arch.to_string() + " needs " + std::to_string(arch.num_params()));
    if (!theta.allFinite()) throw Error(path + ": /params/theta contains NaN or Inf");
    return theta;
}

void write_params(const std::string& path, const Vector& theta, const Architecture& arch) {
    h5::File f = h5::File::create(path);
    f.write_vector("/params/theta", theta);
    f.set_attr("/", "arch", widths_of(arch));
    f.set_attr("/", "format", std::string("tdyn-params"));
}

void check_output_path(const std::string& path, bool force, const std::string& flag) {
    if (path.empty()) throw Error(flag + ": no output path given");
    const fs::path p(path);
    const fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error(flag + " " + path + ": directory '" + dir.string() + "' does not exist");
    if (fs::exists(p, ec) && !force)
        throw Error(flag + " " + path + ": file exists (use --force to overwrite it, or --resume to continue it)");
    if (fs::is_directory(p, ec)) throw Error(flag + " " + path + ": is a directory");
}

// ---------------------------------------------------------------------------------------------

RunReader::RunReader(const std::string& path) : m_file(open_for_reading(path)) {
    if (!m_file.has_attr("/", "format") || m_file.attr_string("/", "format") != kRunFormat)
        throw Error(path + ": not a tdyn run file (no root attribute format = \"tdyn-run\")");
    RunInfo& i = m_info;
    i.format_version = m_file.attr_int("/", "format_version");
    if (i.format_version > kRunFormatVersion)
        throw Error(path + ": run file format_version " + std::to_string(i.format_version) +
                    " is newer than this tdyn understands (" + std::to_string(kRunFormatVersion) + ")");
    i.config = read_config(m_file);
    i.status = m_file.attr_string("/", "status");
    i.command_line = m_file.attr_string("/", "command_line");
    i.tool_version = m_file.attr_string("/", "tool_version");
    if (m_file.has_attr("/", "diverged_at")) i.diverged_at = m_file.attr_int("/", "diverged_at");
    // Series may differ by one row if a writer was killed mid-step: the shortest is complete.
    i.rows = Index(m_file.rows("/trajectory/step"));
    for (const char* s : kSeries) i.rows = std::min<Index>(i.rows, Index(m_file.rows(s)));
    if (i.rows > 0) {
        i.last_step = Index(m_file.read_row("/trajectory/step", i.rows - 1)[0]);
        i.last_loss = m_file.read_row("/trajectory/loss", i.rows - 1)[0];
        i.last_accuracy = m_file.read_row("/trajectory/accuracy", i.rows - 1)[0];
    }
    const Index ns = std::min<Index>(Index(m_file.rows("/trajectory/theta_step")), Index(m_file.rows("/trajectory/theta")));
    if (ns > 0) {
        const Vector steps = m_file.read_vector("/trajectory/theta_step");
        for (Index j = 0; j < ns; ++j) i.theta_steps.push_back(Index(steps[j]));
    }
    i.has_spectrum = m_file.exists("/spectrum/step") && m_file.rows("/spectrum/step") > 0;
    i.has_lyapunov = m_file.exists("/lyapunov/step") && m_file.rows("/lyapunov/step") > 0;
}

Vector RunReader::stored_theta(Index t) {
    for (std::size_t j = 0; j < m_info.theta_steps.size(); ++j)
        if (m_info.theta_steps[j] == t) return m_file.read_row("/trajectory/theta", j);
    throw Error(path() + ": no stored theta at step " + std::to_string(t));
}

Vector RunReader::theta(Index t, Trainer& trainer) {
    Index s = -1;
    for (Index u : m_info.theta_steps)
        if (u <= t) s = std::max(s, u);
    if (s < 0) throw Error(path() + ": step " + std::to_string(t) + ": no stored theta at or before it");
    const Index last = m_info.theta_steps.empty() ? -1 : m_info.theta_steps.back();
    if (t > std::max(last, m_info.last_step))
        throw Error("--step " + std::to_string(t) + ": " + path() + " ends at step " + std::to_string(m_info.last_step));
    return s == t ? stored_theta(t) : trainer.replay(stored_theta(s), s, t);
}

// ---------------------------------------------------------------------------------------------

RunWriter RunWriter::create(const std::string& path, const TrainConfig& config, const std::string& command_line) {
    std::error_code ec;
    fs::remove(path, ec);  // check_output_path has allowed it (--force)
    RunWriter w(h5::File::create(path));
    w.m_config = config;
    h5::File& f = w.m_file;
    f.set_attr("/", "format", std::string(kRunFormat));
    f.set_attr("/", "format_version", kRunFormatVersion);
    f.set_attr("/", "tool_version", std::string(TDYN_VERSION));
    f.set_attr("/", "command_line", command_line);
    f.set_attr("/", "status", std::string("running"));
    write_config(f, config);
    const Index P = config.architecture().num_params();
    f.write_vector("/params/theta", Vector::Zero(P));
    for (const char* s : kSeries) f.create_series(s, 0);
    f.create_series("/trajectory/theta", hsize_t(P), 1);
    f.create_series("/trajectory/theta_step", 0);
    if (config.spectrum_every > 0) {
        create_spectrum_group(f, config.eigs, config.lr);
        f.create_series("/checkpoint/spectrum_step", 0);
        f.create_series("/checkpoint/spectrum_start_top", hsize_t(P), 1);
        f.create_series("/checkpoint/spectrum_start_bottom", hsize_t(P), 1);
    }
    if (config.lyapunov > 0) create_lyapunov_group(f, lyapunov_settings(config), P);
    f.flush();
    f.start_swmr();
    return w;
}

RunWriter RunWriter::resume(const std::string& path) {
    {
        RunReader r(path);  // checks it is a run file
        if (r.info().theta_steps.empty())
            throw Error(path + ": --resume: the run stored no theta yet; start it again with --force");
    }
    RunWriter w(h5::File::open_write(path));
    h5::File& f = w.m_file;
    w.m_config = read_config(f);
    // The resume point is the last stored theta; rows after it are recomputed.
    const Index ns = std::min<Index>(Index(f.rows("/trajectory/theta_step")), Index(f.rows("/trajectory/theta")));
    f.truncate_rows("/trajectory/theta_step", hsize_t(ns));
    f.truncate_rows("/trajectory/theta", hsize_t(ns));
    w.m_resume_step = Index(f.read_row("/trajectory/theta_step", hsize_t(ns - 1))[0]);
    w.m_resume_theta = f.read_row("/trajectory/theta", hsize_t(ns - 1));
    const Vector steps = f.read_vector("/trajectory/step");
    Index keep = 0;
    while (keep < steps.size() && steps[keep] < double(w.m_resume_step)) ++keep;
    for (const char* s : kSeries) f.truncate_rows(s, hsize_t(std::min<Index>(keep, Index(f.rows(s)))));
    truncate_analyses(f, w.m_resume_step);
    if (f.exists("/checkpoint/spectrum_step")) {
        // The warm start stored with theta_s (NaN rows: there was no earlier analysis).
        const Index row = checkpoint_row(f, "/checkpoint/spectrum_step", w.m_resume_step);
        for (const char* n : {"/checkpoint/spectrum_step", "/checkpoint/spectrum_start_top", "/checkpoint/spectrum_start_bottom"})
            f.truncate_rows(n, std::min<hsize_t>(f.rows(n), hsize_t(row + 1)));
        if (row >= 0) {
            SpectrumAnalysis warm;
            const Vector top = f.read_row("/checkpoint/spectrum_start_top", hsize_t(row));
            const Vector bottom = f.read_row("/checkpoint/spectrum_start_bottom", hsize_t(row));
            if (top.allFinite()) warm.top.vectors = top;
            if (bottom.allFinite()) warm.bottom.vectors = bottom;
            if (top.allFinite() || bottom.allFinite()) w.m_resume_spectrum = std::move(warm);
        }
    }
    if (w.m_config.lyapunov > 0) {
        auto [tangent, perturbed] = read_lyapunov_state(f, w.m_resume_step);
        w.m_resume_tangent.emplace(std::move(tangent));
        w.m_resume_perturbed = std::move(perturbed);
    }
    f.set_attr("/", "status", std::string("running"));
    if (f.has_attr("/", "diverged_at")) f.set_attr("/", "diverged_at", std::int64_t(-1));
    f.flush();
    f.start_swmr();
    return w;
}

void RunWriter::append(Index t, const StepStats& s) {
    m_file.append_scalar("/trajectory/step", double(t));
    m_file.append_scalar("/trajectory/loss", s.loss);
    m_file.append_scalar("/trajectory/accuracy", s.accuracy);
    m_file.append_scalar("/trajectory/grad_norm", s.grad_norm);
    m_file.flush();
}

void RunWriter::append_spectrum(Index t, const SpectrumAnalysis& a) {
    tdyn::append_spectrum(m_file, t, a);
    m_file.flush();
}

void RunWriter::store_theta(Index t, const Vector& theta) {
    m_file.append("/trajectory/theta", theta);
    m_file.append_scalar("/trajectory/theta_step", double(t));
    m_file.overwrite("/params/theta", theta);
    m_file.flush();
}

void RunWriter::store_spectrum_checkpoint(Index t, const SpectrumAnalysis* previous) {
    const Index P = m_file.shape("/checkpoint/spectrum_start_top")[1];
    const Vector none = Vector::Constant(P, std::nan(""));
    auto start = [&](const EigenResult& r) { return r.vectors.cols() > 0 ? Vector(r.vectors.rowwise().sum()) : none; };
    m_file.append("/checkpoint/spectrum_start_top", previous ? start(previous->top) : none);
    m_file.append("/checkpoint/spectrum_start_bottom", previous ? start(previous->bottom) : none);
    m_file.append_scalar("/checkpoint/spectrum_step", double(t));
    m_file.flush();
}

void RunWriter::store_lyapunov_checkpoint(Index t, const TangentPropagator& tangent, const PerturbedTrajectory* perturbed) {
    append_lyapunov_checkpoint(m_file, t, tangent, perturbed);
    m_file.flush();
}

void RunWriter::finish(const std::string& status, Index step, Index total_steps, const TangentPropagator* tangent) {
    // Attributes cannot change during SWMR writing: close, reopen, record the outcome.
    const std::string path = m_file.path();
    m_file = h5::File();  // closed: every row is already flushed
    try {
        m_file = h5::File::open_write(path, 10);
    } catch (const Error& e) {
        throw Error(std::string(e.what()) + "; every step up to " + std::to_string(step) +
                    " is written, but the run could not be marked " + status +
                    " (close the other program, then tdyn train --out " + path + " --resume marks it)");
    }
    if (tangent) write_final_basis(m_file, tangent->steps()  /* training starts its vectors at step 0 */, tangent->basis());
    m_file.set_attr("/", "status", status);
    m_file.set_attr("/", "steps", std::int64_t(total_steps));
    m_file.set_attr("/", "diverged_at", std::int64_t(status == "diverged" ? step : -1));
    m_file.flush();
}

// ---------------------------------------------------------------------------------------------

namespace {
/// Rows of a K-wide series: the values, NaN where fewer than K were found.
Vector padded(const Vector& v, Index K) {
    Vector r = Vector::Constant(K, std::nan(""));
    r.head(std::min(K, v.size())) = v.head(std::min(K, v.size()));
    return r;
}
}  // namespace

void create_spectrum_group(h5::File& f, Index K, double alpha) {
    if (f.exists("/spectrum/step")) {
        const Index have = f.attr_int("/spectrum", "eigs");
        if (have != K)
            throw Error(f.path() + ": /spectrum holds K = " + std::to_string(have) + " eigenvalues per step; use --eigs " +
                        std::to_string(have) + " to add to it");
        return;
    }
    f.create_series("/spectrum/step", 0);
    for (const char* s : {"/spectrum/hessian_top", "/spectrum/hessian_bottom", "/spectrum/residual_top",
                          "/spectrum/residual_bottom", "/spectrum/jacobian"})
        f.create_series(s, hsize_t(K));
    for (const char* s : {"/spectrum/matvecs", "/spectrum/converged", "/spectrum/lambda_max", "/spectrum/two_over_alpha",
                          "/spectrum/unstable", "/spectrum/max_abs_mu"})
        f.create_series(s, 0);
    f.set_attr("/spectrum", "eigs", std::int64_t(K));
    f.set_attr("/spectrum", "alpha", alpha);
}

void append_spectrum(h5::File& f, Index step, const SpectrumAnalysis& a, bool vectors) {
    const Index K = f.attr_int("/spectrum", "eigs");
    f.append("/spectrum/hessian_top", padded(a.top.values, K));
    f.append("/spectrum/hessian_bottom", padded(a.bottom.values, K));
    f.append("/spectrum/residual_top", padded(a.top.residuals, K));
    f.append("/spectrum/residual_bottom", padded(a.bottom.residuals, K));
    f.append("/spectrum/jacobian", padded(a.jacobian, K));
    f.append_scalar("/spectrum/matvecs", double(a.matvecs));
    f.append_scalar("/spectrum/converged", a.converged ? 1.0 : 0.0);
    f.append_scalar("/spectrum/lambda_max", a.stability.lambda_max);
    f.append_scalar("/spectrum/two_over_alpha", a.stability.two_over_alpha);
    f.append_scalar("/spectrum/unstable", double(a.stability.unstable));
    f.append_scalar("/spectrum/max_abs_mu", a.stability.max_abs_mu);
    if (vectors) {
        for (const auto& [name, r] : {std::pair<const char*, const EigenResult*>{"/spectrum/vectors_top", &a.top},
                                      {"/spectrum/vectors_bottom", &a.bottom}}) {
            if (!f.exists(name)) {
                if (f.rows("/spectrum/step") > 0)
                    throw Error(f.path() + ": " + name + ": earlier steps stored no eigenvectors; cannot add them now");
                f.create_series(name, hsize_t(f.read_vector("/params/theta").size()), 1);
            }
            for (Index i = 0; i < K; ++i)
                f.append(name, i < r->vectors.cols() ? Vector(r->vectors.col(i))
                                                     : Vector::Constant(f.shape(name)[1], std::nan("")));
        }
    }
    if (a.trace.probes > 0) {
        if (!f.exists("/spectrum/trace/step"))
            for (const char* s : {"/spectrum/trace/step", "/spectrum/trace/trace", "/spectrum/trace/standard_error", "/spectrum/trace/probes"})
                f.create_series(s, 0);
        f.append_scalar("/spectrum/trace/step", double(step));
        f.append_scalar("/spectrum/trace/trace", a.trace.trace);
        f.append_scalar("/spectrum/trace/standard_error", a.trace.standard_error);
        f.append_scalar("/spectrum/trace/probes", double(a.trace.probes));
    }
    if (a.density.probes > 0) {
        const hsize_t G = hsize_t(a.density.grid.size());
        if (!f.exists("/spectrum/density/step")) {
            f.create_series("/spectrum/density/step", 0);
            f.create_series("/spectrum/density/sigma", 0);
            f.create_series("/spectrum/density/grid", G);
            f.create_series("/spectrum/density/density", G);
        } else if (f.shape("/spectrum/density/grid")[1] != G) {
            throw Error(f.path() + ": /spectrum/density has " + std::to_string(f.shape("/spectrum/density/grid")[1]) +
                        " grid points; use --grid with that number");
        }
        f.append_scalar("/spectrum/density/step", double(step));
        f.append_scalar("/spectrum/density/sigma", a.density.sigma);
        f.append("/spectrum/density/grid", a.density.grid);
        f.append("/spectrum/density/density", a.density.density);
    }
    // The step goes last: a reader that sees it sees the whole row.
    f.append_scalar("/spectrum/step", double(step));
}

SpectrumOptions inline_spectrum_options(const TrainConfig& c) {
    SpectrumOptions o;
    o.eig.eigs = c.eigs;
    o.top = c.which != "bottom";
    o.bottom = c.which != "top";
    return o;
}

// ---------------------------------------------------------------------------------------------
// /lyapunov (docs/FORMAT.md)

void create_lyapunov_group(h5::File& f, const LyapunovSettings& s, Index P) {
    if (f.exists("/lyapunov")) throw Error(f.path() + ": already holds a /lyapunov group");
    const hsize_t M = hsize_t(s.tangent.vectors);
    f.create_series("/lyapunov/step", 0);
    f.create_series("/lyapunov/log_growth", M);
    f.create_series("/lyapunov/exponents", M);
    f.set_attr("/lyapunov", "vectors", std::int64_t(M));
    f.set_attr("/lyapunov", "qr_every", std::int64_t(s.tangent.qr_every));
    f.set_attr("/lyapunov", "warmup", std::int64_t(s.tangent.warmup));
    f.set_attr("/lyapunov", "seed", std::int64_t(s.tangent.seed));
    f.set_attr("/lyapunov", "alpha", s.alpha);
    f.set_attr("/lyapunov", "from", std::int64_t(s.from));
    f.set_attr("/lyapunov", "eps", s.eps);
    f.set_attr("/lyapunov", "overlap_eigs", std::int64_t(s.overlap_eigs));
    if (s.eps > 0) {
        for (const char* n : {"/lyapunov/perturbation/step", "/lyapunov/perturbation/log_growth", "/lyapunov/perturbation/exponent"})
            f.create_series(n, 0);
        f.set_attr("/lyapunov/perturbation", "eps", s.eps);
    }
    if (s.overlap_eigs > 0) {
        f.create_series("/lyapunov/overlap_step", 0);
        f.create_series("/lyapunov/overlap", hsize_t(s.overlap_eigs));
    }
    // A row per checkpoint: the basis V (column after column) and the perturbed theta'.
    f.create_series("/checkpoint/lyapunov_step", 0);
    f.create_series("/checkpoint/lyapunov_basis", hsize_t(P) * M, 1);
    if (s.eps > 0) f.create_series("/checkpoint/perturbation_theta", hsize_t(P), 1);
}

LyapunovSettings read_lyapunov_settings(h5::File& f) {
    if (!f.exists("/lyapunov/step")) throw Error(f.path() + ": holds no /lyapunov group");
    LyapunovSettings s;
    s.tangent.vectors = f.attr_int("/lyapunov", "vectors");
    s.tangent.qr_every = f.attr_int("/lyapunov", "qr_every");
    s.tangent.warmup = f.attr_int("/lyapunov", "warmup");
    s.tangent.seed = std::uint64_t(f.attr_int("/lyapunov", "seed"));
    s.alpha = f.attr_double("/lyapunov", "alpha");
    s.from = f.attr_int("/lyapunov", "from");
    s.eps = f.attr_double("/lyapunov", "eps");
    s.overlap_eigs = f.attr_int("/lyapunov", "overlap_eigs");
    return s;
}

void append_lyapunov(h5::File& f, Index t, const TangentPropagator& tangent) {
    f.append("/lyapunov/log_growth", tangent.log_growth());
    f.append("/lyapunov/exponents", tangent.exponents());
    f.append_scalar("/lyapunov/step", double(t));  // last: a reader that sees it sees the row
}

void append_perturbation(h5::File& f, Index t, const PerturbedTrajectory& p) {
    f.append_scalar("/lyapunov/perturbation/log_growth", p.log_growth());
    f.append_scalar("/lyapunov/perturbation/exponent", p.exponent());
    f.append_scalar("/lyapunov/perturbation/step", double(t));
}

void append_overlap(h5::File& f, Index t, const Vector& overlap) {
    f.append("/lyapunov/overlap", padded(overlap, f.attr_int("/lyapunov", "overlap_eigs")));
    f.append_scalar("/lyapunov/overlap_step", double(t));
}

void append_lyapunov_checkpoint(h5::File& f, Index t, const TangentPropagator& tangent, const PerturbedTrajectory* p) {
    const Matrix& V = tangent.basis();
    f.append("/checkpoint/lyapunov_basis", V.data(), hsize_t(V.size()));
    if (p) f.append("/checkpoint/perturbation_theta", p->theta());
    f.append_scalar("/checkpoint/lyapunov_step", double(t));
}

std::pair<TangentPropagator, std::optional<PerturbedTrajectory>> read_lyapunov_state(h5::File& f, Index s) {
    const LyapunovSettings set = read_lyapunov_settings(f);
    const Index M = set.tangent.vectors;
    const Index row = checkpoint_row(f, "/checkpoint/lyapunov_step", s);
    if (row < 0)
        throw Error(f.path() + ": --resume: no Lyapunov checkpoint at step " + std::to_string(s) +
                    " (the last stored theta); the tangent vectors cannot be continued");
    const Vector flat = f.read_row("/checkpoint/lyapunov_basis", hsize_t(row));
    const Index P = flat.size() / M;
    const Matrix V = Eigen::Map<const Matrix>(flat.data(), P, M);
    std::optional<Vector> theta_p;
    if (set.eps > 0) theta_p = f.read_row("/checkpoint/perturbation_theta", hsize_t(row));
    for (const char* n : {"/checkpoint/lyapunov_step", "/checkpoint/lyapunov_basis", "/checkpoint/perturbation_theta"})
        if (f.exists(n)) f.truncate_rows(n, std::min<hsize_t>(f.rows(n), hsize_t(row + 1)));
    truncate_lyapunov(f, s);

    // Re-add the counted log growths in the order the run added them.
    const Index t0 = set.from, W = set.tangent.warmup;
    const Index n = Index(f.rows("/lyapunov/step"));
    const Vector steps = n ? f.read_vector("/lyapunov/step") : Vector();
    const RowMatrix growth = n ? f.read_rows("/lyapunov/log_growth", 0, hsize_t(n)) : RowMatrix(0, M);
    Vector log_sum = Vector::Zero(M);
    for (Index j = 0; j < n; ++j)
        if (Index(steps[j]) - t0 + 1 > W) log_sum += growth.row(j).transpose();
    TangentPropagator tangent(V, set.tangent, s - t0, log_sum);
    std::optional<PerturbedTrajectory> perturbed;
    if (theta_p) {
        const Index np = Index(f.rows("/lyapunov/perturbation/step"));
        const Vector psteps = np ? f.read_vector("/lyapunov/perturbation/step") : Vector();
        const Vector pgrowth = np ? f.read_vector("/lyapunov/perturbation/log_growth") : Vector();
        double psum = 0;
        for (Index j = 0; j < np; ++j)
            if (Index(psteps[j]) - t0 + 1 > W) psum += pgrowth[j];
        perturbed.emplace(*theta_p, set.eps, set.tangent.qr_every, W, s - t0, psum);
    }
    return {std::move(tangent), std::move(perturbed)};
}

void write_final_basis(h5::File& f, Index t, const Matrix& V) {
    if (f.exists("/lyapunov/basis")) f.remove("/lyapunov/basis");
    f.write("/lyapunov/basis", RowMatrix(V));
    f.set_attr("/lyapunov/basis", "step", std::int64_t(t));
}

TrainResult train(Trainer& trainer, RunWriter& out, Vector theta, Index from, Index to,
                  const std::function<void(Index, const StepStats&)>& on_step, const std::atomic<bool>* stop) {
    const TrainConfig& config = trainer.config();
    const Index S = std::max<Index>(1, config.save_theta_every);
    const Index E = config.spectrum_every;
    const SpectrumOptions spectrum_options = inline_spectrum_options(config);
    std::optional<SpectrumAnalysis> previous;
    const bool resumed_here = from == out.resume_step() && out.resume_theta().size() > 0;
    if (resumed_here) previous = std::move(out.resume_spectrum());

    // Tangent vectors V_t and the perturbed trajectory theta'_t, started at step 0 or resumed.
    std::optional<TangentPropagator> tangent;
    std::optional<PerturbedTrajectory> perturbed;
    if (config.lyapunov > 0) {
        if (resumed_here) {
            tangent = std::move(out.resume_tangent());
            perturbed = std::move(out.resume_perturbed());
        } else {
            const LyapunovSettings ls = lyapunov_settings(config);
            tangent.emplace(theta.size(), ls.tangent);
            // theta'_0 = theta_0 + eps v_1: the perturbation starts along the first tangent vector.
            if (ls.eps > 0) perturbed.emplace(theta, Vector(tangent->basis().col(0)), ls.eps, ls.tangent.qr_every, ls.tangent.warmup);
        }
    }
    auto finish = [&](const std::string& status, Index t) {
        out.finish(status, t, status == "completed" ? to : config.steps, tangent ? &*tangent : nullptr);
        return TrainResult{status, t, theta};
    };

    for (Index t = from; t <= to; ++t) {
        const bool already_stored = resumed_here && t == from;
        const bool store = (t % S == 0 || t == to) && !already_stored;
        if (stop && stop->load() && t > from) {
            if (!already_stored) {
                if (E > 0) out.store_spectrum_checkpoint(t, previous ? &*previous : nullptr);
                if (tangent) out.store_lyapunov_checkpoint(t, *tangent, perturbed ? &*perturbed : nullptr);
                out.store_theta(t, theta);
            }
            return finish("interrupted", t);
        }
        if (store) {
            // The checkpoint rows go first: every stored theta then has its tangent state.
            if (E > 0) out.store_spectrum_checkpoint(t, previous ? &*previous : nullptr);
            if (tangent) out.store_lyapunov_checkpoint(t, *tangent, perturbed ? &*perturbed : nullptr);
            out.store_theta(t, theta);
        }
        // Row t is L(theta_t); for t < to the same Evaluation gives the update to theta_{t+1}.
        const StepStats s = t < to ? trainer.step(t, theta) : trainer.evaluate(t, theta);
        out.append(t, s);
        bool analysed = false;
        if (E > 0 && t % E == 0 && s.finite()) {
            // The step's Evaluation still holds theta_t and its forward pass.
            previous = analyse_spectrum(trainer.evaluation(), spectrum_options, config.lr, previous ? &*previous : nullptr);
            out.append_spectrum(t, *previous);
            analysed = true;
        }
        if (tangent && t < to && s.finite()) {
            if (analysed && previous->top.vectors.cols() > 0) {
                append_overlap(out.file(), t, overlaps(tangent->basis().col(0), previous->top.vectors));
            }
            // V_{t+1} = J(t) V_t = V_t - alpha H(theta_t) V_t, same Evaluation as the update.
            Evaluation& e = trainer.evaluation();
            if (tangent->step([&](const Matrix& V, Matrix& JV) { apply_update_jacobian(e, config.lr, V, JV); }))
                append_lyapunov(out.file(), t, *tangent);
            if (perturbed) {
                // theta'_{t+1} = theta'_t - alpha grad L_t(theta'_t), renormalised against theta_{t+1}.
                bool finite = true;
                const bool renormalised = perturbed->step(
                    [&](Vector& tp) { finite = trainer.step(t, tp).finite(); }, theta);
                if (!finite)
                    throw Error("--perturbation: the perturbed trajectory's loss is not finite at step " +
                                std::to_string(t) + "; use a smaller EPS");
                if (renormalised) append_perturbation(out.file(), t, *perturbed);
            }
            out.file().flush();
        }
        if (on_step) on_step(t, s);
        if (!s.finite()) return finish("diverged", t);
    }
    return finish("completed", to);
}

}  // namespace tdyn
