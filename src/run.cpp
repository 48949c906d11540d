#include "tdyn/run.hpp"

#include <cmath>
#include <filesystem>

namespace tdyn {

namespace fs = std::filesystem;

namespace {
const char* const kSeries[] = {"/trajectory/step", "/trajectory/loss", "/trajectory/accuracy", "/trajectory/grad_norm"};
}  // namespace

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
    i.status = parse_run_status(m_file.attr_string("/", "status"));
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
    const Index ns =
        std::min<Index>(Index(m_file.rows("/trajectory/theta_step")), Index(m_file.rows("/trajectory/theta")));
    if (ns > 0) {
        const Vector steps = m_file.read_vector("/trajectory/theta_step");
        for (Index j = 0; j < ns; ++j) i.theta_steps.push_back(Index(steps[j]));
    }
    i.has_spectrum = m_file.exists("/spectrum/step") && m_file.rows("/spectrum/step") > 0;
    i.has_lyapunov = m_file.exists("/lyapunov/step") && m_file.rows("/lyapunov/step") > 0;
}

Index latest_stored(const std::vector<Index>& stored, Index t) {
    return Index(std::upper_bound(stored.begin(), stored.end(), t) - stored.begin()) - 1;
}

Vector RunReader::stored_theta(Index t) {
    const Index j = latest_stored(m_info.theta_steps, t);
    if (j >= 0 && m_info.theta_steps[j] == t) return m_file.read_row("/trajectory/theta", hsize_t(j));
    throw Error(path() + ": no stored theta at step " + std::to_string(t));
}

Vector RunReader::theta(Index t, Trainer& trainer) {
    const Index j = latest_stored(m_info.theta_steps, t);
    const Index s = j >= 0 ? m_info.theta_steps[j] : -1;
    if (s < 0) throw Error(path() + ": step " + std::to_string(t) + ": no stored theta at or before it");
    if (t > m_info.end_step())
        throw Error("step " + std::to_string(t) + ": " + path() + " ends at step " + std::to_string(m_info.end_step()));
    return s == t ? stored_theta(t) : trainer.replay(stored_theta(s), s, t);
}

// ---------------------------------------------------------------------------------------------

ReverseReader::ReverseReader(RunReader& run, Trainer& trainer, Index from, Index to)
    : m_run(run), m_trainer(trainer), m_from(from), m_next(to) {
    if (from < 0 || from > to)
        throw Error("from " + std::to_string(from) + ", to " + std::to_string(to) + ": need 0 <= from <= to");
    run.theta(from, trainer);  // checks both ends exist before any work is promised
    if (to > run.info().end_step())
        throw Error("to " + std::to_string(to) + ": " + run.path() + " ends at step " +
                    std::to_string(run.info().end_step()));
}

bool ReverseReader::next(Index& t, Vector& theta) {
    if (m_next < m_from) return false;
    if (m_segment.empty() || m_next < m_seg0) {
        // The segment [s, m_next] from the nearest stored theta s <= m_next, replayed once.
        const Index j = latest_stored(m_run.info().theta_steps, m_next);
        const Index s = j >= 0 ? m_run.info().theta_steps[j] : 0;
        m_segment.clear();
        m_seg0 = s;
        m_trainer.replay(m_run.stored_theta(s), s, m_next, [&](Index, const Vector& th) { m_segment.push_back(th); });
        m_replayed += m_next - s;
        m_max_held = std::max<Index>(m_max_held, Index(m_segment.size()));
    }
    t = m_next;
    theta = std::move(m_segment.back());
    m_segment.pop_back();
    --m_next;
    return true;
}

// ---------------------------------------------------------------------------------------------

RunWriter RunWriter::create(const std::string& path, const TrainConfig& config, const std::string& command_line,
                            const std::function<void(h5::File&)>& settings) {
    std::error_code ec;
    if (!h5::memory_only()) fs::remove(path, ec);  // check_output_path has allowed it (--force)
    RunWriter w(h5::File::create(path));
    w.m_config = config;
    h5::File& f = w.m_file;
    f.set_attr("/", "format", std::string(kRunFormat));
    f.set_attr("/", "format_version", kRunFormatVersion);
    f.set_attr("/", "tool_version", std::string(TDYN_VERSION));
    f.set_attr("/", "command_line", command_line);
    f.set_attr("/", "status", to_string(RunStatus::Running));
    write_config(f, config);
    if (settings) settings(f);
    const Index P = config.architecture().num_params();
    f.write_vector("/params/theta", Vector::Zero(P));
    for (const char* s : kSeries) f.create_series(s, 0);
    f.create_series("/trajectory/theta", hsize_t(P), 1);
    f.create_series("/trajectory/theta_step", 0);
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
    w.m_resumed = true;
    return w;
}

void RunWriter::begin(const std::vector<Analysis*>& analyses, const Vector& theta) {
    prepare_analyses(m_file, analyses, m_resume_step, theta, m_resumed);
    if (m_resumed) {
        m_file.set_attr("/", "status", to_string(RunStatus::Running));
        if (m_file.has_attr("/", "diverged_at")) m_file.set_attr("/", "diverged_at", std::int64_t(-1));
    }
    m_file.flush();
    m_file.start_swmr();
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

void RunWriter::set_status(RunStatus status, Index step, Index total_steps) {
    m_file.set_attr("/", "status", to_string(status));
    m_file.set_attr("/", "steps", std::int64_t(total_steps));
    m_file.set_attr("/", "diverged_at", std::int64_t(status == RunStatus::Diverged ? step : -1));
    m_file.flush();
}

}  // namespace tdyn
