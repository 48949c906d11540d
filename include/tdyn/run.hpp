// Run files and params files (HDF5), the contract notebooks and other tools read
// (docs/FORMAT.md), and the training loop that writes them.
#pragma once

#include "tdyn/h5.hpp"
#include "tdyn/lyapunov.hpp"
#include "tdyn/spectrum.hpp"
#include "tdyn/trainer.hpp"

#include <atomic>
#include <functional>
#include <optional>

namespace tdyn {

inline constexpr const char* kRunFormat = "tdyn-run";
inline constexpr std::int64_t kRunFormatVersion = 1;

/// /params/theta of a params file (or a run file: its latest theta), checked against arch:
/// length, finiteness, and the file's "arch" attribute when it has one.
Vector read_params(const std::string& path, const Architecture& arch);
/// Writes a new params file: /params/theta and the arch attribute (fails if path exists).
void write_params(const std::string& path, const Vector& theta, const Architecture& arch);

/// Checks an output path before anything is computed: its directory exists, and the file
/// does not unless `force`. Throws Error naming `flag`.
void check_output_path(const std::string& path, bool force, const std::string& flag = "--out");

/// What a run file says about itself.
struct RunInfo {
    TrainConfig config;
    std::string status;          ///< running | completed | diverged | interrupted
    std::string command_line, tool_version;
    std::int64_t format_version = 0;
    Index rows = 0;              ///< rows of /trajectory (steps evaluated)
    Index last_step = -1;        ///< last /trajectory/step
    Index diverged_at = -1;
    std::vector<Index> theta_steps;  ///< /trajectory/theta_step
    double last_loss = 0, last_accuracy = 0;
    bool has_spectrum = false, has_lyapunov = false;
};

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

/// Writes a run as it goes: one row per step, theta every S steps, flushed each step.
class RunWriter {
public:
    /// A new run file (after check_output_path): root attributes, empty series, SWMR on.
    static RunWriter create(const std::string& path, const TrainConfig& config, const std::string& command_line);
    /// Reopens a run for --resume: drops the rows after the last stored theta, which is
    /// where the run continues (returned as resume_step / resume_theta).
    static RunWriter resume(const std::string& path);

    Index resume_step() const { return m_resume_step; }
    const Vector& resume_theta() const { return m_resume_theta; }
    const TrainConfig& config() const { return m_config; }

    void append(Index t, const StepStats& s);
    /// Appends the spectrum analysis of step t (the /spectrum series exist when config.spectrum_every > 0).
    void append_spectrum(Index t, const SpectrumAnalysis& a);
    void store_theta(Index t, const Vector& theta);
    /// Lyapunov state at a step where theta is stored: appended just before theta's row, so
    /// every stored theta has its basis (see read_lyapunov_state).
    void store_lyapunov_checkpoint(Index t, const TangentPropagator& tangent, const PerturbedTrajectory* perturbed);
    /// The tangent (and perturbed) state at resume_step(), when the run carries Lyapunov vectors.
    std::optional<TangentPropagator>& resume_tangent() { return m_resume_tangent; }
    std::optional<PerturbedTrajectory>& resume_perturbed() { return m_resume_perturbed; }
    /// The warm start of the in-line spectrum: the start vector of each end (the sum of the
    /// previous analysis's eigenvectors), appended before theta's row like the Lyapunov state.
    void store_spectrum_checkpoint(Index t, const SpectrumAnalysis* previous);
    /// The warm start at resume_step() (vectors only), when the run had one.
    std::optional<SpectrumAnalysis>& resume_spectrum() { return m_resume_spectrum; }
    h5::File& file() { return m_file; }
    /// Ends the run: closes the SWMR session and records status (and the step it refers to).
    /// With `tangent`, also writes its basis to /lyapunov/basis.
    void finish(const std::string& status, Index step, Index total_steps, const TangentPropagator* tangent = nullptr);

private:
    explicit RunWriter(h5::File f) : m_file(std::move(f)) {}
    h5::File m_file;
    TrainConfig m_config;
    Index m_resume_step = 0;
    Vector m_resume_theta;
    std::optional<TangentPropagator> m_resume_tangent;
    std::optional<PerturbedTrajectory> m_resume_perturbed;
    std::optional<SpectrumAnalysis> m_resume_spectrum;
};

/// The /spectrum group (docs/FORMAT.md): eigenvalue series [n_e x K], created when absent;
/// an existing group must have the same K. Not during SWMR writing.
void create_spectrum_group(h5::File& f, Index K, double alpha);
/// Appends one analysis; trace and density go to /spectrum/trace and /spectrum/density
/// (created on first use), the eigenvectors to /spectrum/vectors_top|bottom when `vectors`.
void append_spectrum(h5::File& f, Index step, const SpectrumAnalysis& a, bool vectors = false);
/// SpectrumOptions from a config's in-line settings (--eigs, --which).
SpectrumOptions inline_spectrum_options(const TrainConfig& c);

/// How a /lyapunov group was made (its attributes, docs/FORMAT.md).
struct LyapunovSettings {
    TangentOptions tangent;
    double alpha = 0.1;      ///< J(t) = I - alpha H(theta_t)
    Index from = 0;          ///< t0: the tangent vectors start at theta_{t0}
    double eps = 0;          ///< perturbation size of the two-trajectory check (0 = none)
    Index overlap_eigs = 0;  ///< K of /lyapunov/overlap (0 = none)
};
/// The /lyapunov group and its /checkpoint series (not during SWMR writing). Fails if it exists.
void create_lyapunov_group(h5::File& f, const LyapunovSettings& s, Index P);
LyapunovSettings read_lyapunov_settings(h5::File& f);
/// One QR row: step t (J(t) was the last map applied), log R_ii, running exponents.
void append_lyapunov(h5::File& f, Index t, const TangentPropagator& tangent);
void append_perturbation(h5::File& f, Index t, const PerturbedTrajectory& p);
/// |cos| between the tangent vector v_1 at step t and the top eigenvectors of H(theta_t).
void append_overlap(h5::File& f, Index t, const Vector& overlap);
void append_lyapunov_checkpoint(h5::File& f, Index t, const TangentPropagator& tangent, const PerturbedTrajectory* p);
/// The state at step s from the checkpoint row of step s, the log sums re-added from the
/// stored /lyapunov rows in their order (so a resumed run is bit-identical). Drops the
/// /lyapunov and /checkpoint rows at steps >= s, which the resumed run recomputes.
std::pair<TangentPropagator, std::optional<PerturbedTrajectory>> read_lyapunov_state(h5::File& f, Index s);
/// /lyapunov/basis [P x M] (replaced if present) and its step: the last basis, for users.
void write_final_basis(h5::File& f, Index t, const Matrix& V);

struct TrainResult {
    std::string status;  ///< completed | diverged | interrupted
    Index step = 0;      ///< last step evaluated (the diverging step when diverged)
    Vector theta;        ///< last theta
};

/// Runs steps t = from .. to-1 and evaluates theta_to, writing each row to `out` and theta
/// at multiples of S and at `to`. Stops early when the loss or gradient is not finite, or
/// when *stop becomes true (then theta_t is stored so --resume continues from it).
/// `on_step(t, stats)` is called after each row (progress).
/// With config.spectrum_every = E > 0, the eigenvalues of H at every multiple of E are
/// computed from the step's own Evaluation, warm-started from the previous analysis.
TrainResult train(Trainer& trainer, RunWriter& out, Vector theta, Index from, Index to,
                  const std::function<void(Index, const StepStats&)>& on_step = {},
                  const std::atomic<bool>* stop = nullptr);

}  // namespace tdyn
