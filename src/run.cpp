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
    return c;
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

}  // namespace

Vector read_params(const std::string& path, const Architecture& arch) {
    h5::File f = open_for_reading(path);
    if (!f.exists("/params/theta")) throw Error(path + ": not a params file: no dataset /params/theta");
    if (f.has_attr("/", "arch")) {
        const auto w = f.attr_ints("/", "arch");
        if (w != widths_of(arch))
            throw Error(path + ": params are for arch " + arch_text(w) + ", but the run uses " + arch.to_string());
    }
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

void RunWriter::store_theta(Index t, const Vector& theta) {
    m_file.append("/trajectory/theta", theta);
    m_file.append_scalar("/trajectory/theta_step", double(t));
    m_file.overwrite("/params/theta", theta);
    m_file.flush();
}

void RunWriter::finish(const std::string& status, Index step, Index total_steps) {
    // Attributes cannot change during SWMR writing: close, reopen, record the outcome.
    const std::string path = m_file.path();
    m_file = h5::File::open_write(path);
    m_file.set_attr("/", "status", status);
    m_file.set_attr("/", "steps", std::int64_t(total_steps));
    m_file.set_attr("/", "diverged_at", std::int64_t(status == "diverged" ? step : -1));
    m_file.flush();
}

// ---------------------------------------------------------------------------------------------

TrainResult train(Trainer& trainer, RunWriter& out, Vector theta, Index from, Index to,
                  const std::function<void(Index, const StepStats&)>& on_step, const std::atomic<bool>* stop) {
    const Index S = std::max<Index>(1, trainer.config().save_theta_every);
    const bool resumed_here = from == out.resume_step() && out.resume_theta().size() > 0;
    for (Index t = from; t <= to; ++t) {
        const bool already_stored = resumed_here && t == from;
        if (stop && stop->load() && t > from) {
            if (!already_stored) out.store_theta(t, theta);
            out.finish("interrupted", t, trainer.config().steps);
            return {"interrupted", t, theta};
        }
        if ((t % S == 0 || t == to) && !already_stored) out.store_theta(t, theta);
        // Row t is L(theta_t); for t < to the same Evaluation gives the update to theta_{t+1}.
        const StepStats s = t < to ? trainer.step(t, theta) : trainer.evaluate(t, theta);
        out.append(t, s);
        if (on_step) on_step(t, s);
        if (!s.finite()) {
            out.finish("diverged", t, trainer.config().steps);
            return {"diverged", t, theta};
        }
    }
    out.finish("completed", to, to);
    return {"completed", to, theta};
}

}  // namespace tdyn
