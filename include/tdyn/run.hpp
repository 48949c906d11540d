// Run files (HDF5, docs/FORMAT.md): the reader every app and test uses, the writer of the
// trajectory (rows, stored thetas, status) and its resume, and reverse access to a saved
// trajectory. The analyses write their own groups (analysis.hpp); the loop is driver.hpp.
#pragma once

#include "tdyn/config.hpp"
#include "tdyn/driver.hpp"
#include "tdyn/h5.hpp"
#include "tdyn/params.hpp"
#include "tdyn/trainer.hpp"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>

namespace tdyn {

inline constexpr const char* kRunFormat = "tdyn-run";
inline constexpr std::int64_t kRunFormatVersion = 1;

/// What a run file says about itself.
struct RunInfo {
    TrainConfig config;
    RunStatus status = RunStatus::Running;
    std::string command_line, tool_version;
    std::int64_t format_version = 0;
    Index rows = 0;        ///< rows of /trajectory (steps evaluated)
    Index last_step = -1;  ///< last /trajectory/step
    Index diverged_at = -1;
    std::vector<Index> theta_steps;  ///< /trajectory/theta_step
    double last_loss = 0, last_accuracy = 0;
    bool has_spectrum = false, has_lyapunov = false;
    /// The last step whose theta the file can give: the last stored theta or the last row.
    Index end_step() const { return std::max(last_step, theta_steps.empty() ? Index(-1) : theta_steps.back()); }
};

/// The position in `stored` (ascending steps, as RunInfo::theta_steps) of the latest step at or
/// before t, or -1 when every stored step is after t. The one search behind RunReader::theta,
/// ReverseReader and the driver's replay jumps.
Index latest_stored(const std::vector<Index>& stored, Index t);

/// Opens a tdyn run file for reading (SWMR, so it works while a run writes it).
class RunReader {
public:
    explicit RunReader(const std::string& path);
    const RunInfo& info() const { return m_info; }
    const std::string& path() const { return m_file.path(); }
    h5::File& file() { return m_file; }
    /// The stored theta at step t (must be in theta_steps).
    Vector stored_theta(Index t);
    /// theta_t, replayed from the nearest stored step s <= t when t is not stored.
    Vector theta(Index t, Trainer& trainer);

private:
    h5::File m_file;
    RunInfo m_info;
};

/// theta_t for t = to, to - 1, ..., from of a saved run (what an adjoint sweep walks): one
/// segment between stored thetas is replayed at a time and held in memory, so memory is
/// O(S) thetas (S the run's save_theta_every) and the replay costs O(to - from) updates in all.
class ReverseReader {
public:
    ReverseReader(RunReader& run, Trainer& trainer, Index from, Index to);
    /// The next step going backward and its theta; false after theta_from has been given.
    bool next(Index& t, Vector& theta);
    /// Thetas held at most (the longest segment).
    Index max_held() const { return m_max_held; }
    /// Updates replayed so far.
    Index replayed() const { return m_replayed; }

private:
    RunReader& m_run;
    Trainer& m_trainer;
    Index m_from, m_next;          ///< the next step to give
    std::deque<Vector> m_segment;  ///< theta_{m_seg0} .. theta_{m_seg0 + size - 1}
    Index m_seg0 = 0, m_max_held = 0, m_replayed = 0;
};

/// Writes a run as it goes: one row per step, theta every S steps, flushed each step.
class RunWriter {
public:
    /// A new run file (after check_output_path): root attributes and empty series; SWMR writing
    /// starts with begin(). `settings` (optional) writes the analyses' root attributes beside the
    /// configuration's.
    static RunWriter create(const std::string& path, const TrainConfig& config, const std::string& command_line,
                            const std::function<void(h5::File&)>& settings = {});
    /// Reopens a run for --resume: drops the rows after the last stored theta, which is where
    /// the run continues (resume_step / resume_theta); the analyses restore in begin().
    static RunWriter resume(const std::string& path);

    Index resume_step() const { return m_resume_step; }
    const Vector& resume_theta() const { return m_resume_theta; }
    const TrainConfig& config() const { return m_config; }
    h5::File& file() { return m_file; }

    /// Creates the analyses' groups (a new run: start_analyses() first, before create()), or restores them at
    /// resume_step() and marks the run running again (resumed); then SWMR writing starts.
    void begin(const std::vector<Analysis*>& analyses, const Vector& theta);

    /// Row t of /trajectory.
    void append(Index t, const StepStats& s);
    /// theta_t into /trajectory/theta and /params/theta.
    void store_theta(Index t, const Vector& theta);
    /// The outcome (the file open outside SWMR): status, the step it refers to, the planned steps.
    void set_status(RunStatus status, Index step, Index total_steps);

private:
    explicit RunWriter(h5::File f) : m_file(std::move(f)) {}
    h5::File m_file;
    TrainConfig m_config;
    Index m_resume_step = 0;
    Vector m_resume_theta;
    bool m_resumed = false;
};

}  // namespace tdyn
