// The one trajectory loop of tdyn. It moves theta_t to theta_{t+1} with the Trainer's map
// (training a new run, or replaying a saved one) and calls each analysis plug-in at each
// step with the step's own Evaluation; it decides when analyses checkpoint, stores theta and
// the trajectory rows when it trains, stops cleanly on request, and ends the pass with a
// status. `tdyn train`, `tdyn lyapunov` and `tdyn spectrum` are this loop with different
// plug-ins (docs/ARCHITECTURE.md).
#pragma once

#include "tdyn/analysis.hpp"

#include <atomic>
#include <functional>
#include <vector>

namespace tdyn {

class RunWriter;

/// How a run or an analysis pass ended; the run file's `status` attribute spells it.
enum class RunStatus { Running, Completed, Diverged, Interrupted };
std::string to_string(RunStatus s);                   ///< running | completed | diverged | interrupted
RunStatus parse_run_status(const std::string& text);  ///< throws Error naming `status`

struct DriveOptions {
    Index from = 0, to = 0;  ///< steps from .. to; theta_to is evaluated, not updated
    /// theta_from and the analyses' checkpoints of step `from` are already in the file (resume).
    bool resumed = false;
    /// Training (a RunWriter given): theta, and the analyses' checkpoints, every S steps and at `to`.
    Index save_theta_every = 1;
    /// Replay (no RunWriter): the analyses checkpoint every C steps from `from` (0: never).
    Index checkpoint_every = 0;
    /// Replay: the steps whose theta the run file stores (/trajectory/theta). The loop jumps to a
    /// stored theta when no analysis needs the steps before it, and reports replayed thetas that
    /// differ from the stored ones.
    std::vector<Index> stored;
    /// Replay: evaluate theta_to and give it to the analyses (a spectrum at `to`); a tangent pass does not need it.
    bool evaluate_last = true;
    const std::atomic<bool>* stop = nullptr;               ///< checked before each step after the first
    std::function<void(Index, const StepStats&)> on_step;  ///< after each step (progress)
};

struct DriveResult {
    RunStatus status = RunStatus::Completed;
    Index step = 0;         ///< last step evaluated (the diverging one when diverged)
    Vector theta;           ///< theta at `step`
    Index mismatched = -1;  ///< replay: the first step whose replayed theta differed from the stored one
};

/// A new pass: starts the analyses at step `from` with theta. It writes nothing, so callers run
/// it before the file is opened for writing: an analysis that refuses its start (an EPS below
/// theta's rounding unit, dependent start vectors) leaves the file as it was.
void start_analyses(const std::vector<Analysis*>& analyses, Index from, const Vector& theta);
/// Creates the analyses' groups (a new pass, after start_analyses()), or truncates their rows
/// at steps >= from and restores their state at `from` (resumed).
void prepare_analyses(h5::File& file, const std::vector<Analysis*>& analyses, Index from, const Vector& theta,
                      bool resumed);
/// prepare_analyses(), then SWMR writing starts.
void begin_analyses(h5::File& file, const std::vector<Analysis*>& analyses, Index from, const Vector& theta,
                    bool resumed);

/// Runs steps from .. to on `file` (SWMR) with the analyses, in their order (an analysis that
/// moves the trainer elsewhere, the perturbed trajectory, goes last). With `writer`, this is
/// training: each step's row goes to /trajectory and theta is stored. At the end the file is
/// reopened outside SWMR for the analyses' final attributes and (training) the run's status.
/// Training stops with status diverged when the loss or gradient is not finite; replay throws.
DriveResult drive(Trainer& trainer, h5::File& file, const std::vector<Analysis*>& analyses, Vector theta,
                  const DriveOptions& options, RunWriter* writer = nullptr);

}  // namespace tdyn
