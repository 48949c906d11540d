// An analysis is a plug-in of the one trajectory loop (driver.hpp): at each step t it sees
// theta_t, the step's own Evaluation (the forward pass of the update, reused) and the run
// file. It owns its settings, its HDF5 group and attributes, its checkpoint (the state a
// resumed pass continues from) and the truncation of its rows on resume. Adding one is a
// header and a source of its own, plus a line where the apps build the analyses they run.
#pragma once

#include "tdyn/h5.hpp"
#include "tdyn/trainer.hpp"

#include <string>
#include <vector>

namespace tdyn {

/// What an analysis sees at step t. The update theta_t -> theta_{t+1} has been made (unless
/// t is the last step of the pass); `trainer.evaluation()` still holds theta_t's forward pass
/// until an analysis evaluates elsewhere, so the driver calls analyses in their given order.
struct StepContext {
    Index t = 0;               ///< the step
    Index to = 0;              ///< last step of the pass: no update follows theta_to
    const Vector& theta;       ///< theta_t
    const Vector& next_theta;  ///< theta_{t+1} (theta_t itself when t == to)
    const StepStats& stats;    ///< L(theta_t), accuracy, |grad L| on the step's batch
    Trainer& trainer;          ///< the map; evaluation() is the step's Evaluation at theta_t
    h5::File& file;            ///< the run file, open for writing (SWMR)
    /// Shared by analyses of the same step: the top eigenvectors of H(theta_t) when a spectrum
    /// analysis computed them at this step (the tangent vectors' overlaps use them).
    const Matrix* top_eigenvectors = nullptr;
};

class Analysis {
public:
    virtual ~Analysis() = default;
    /// Short name for messages: "spectrum", "lyapunov", "perturbation".
    virtual std::string name() const = 0;

    /// Checks, before the file is opened for writing, that the analysis can be added to it
    /// (read-only access): bad input must leave the file as it was. Throws Error.
    virtual void check(h5::File& f) const {}
    /// Creates its groups, series and attributes, after start() (the file is not yet in SWMR mode).
    virtual void create(h5::File& f) = 0;
    /// A fresh start at step `from` with theta_from. Writes nothing (start_analyses() runs it
    /// before the file is opened for writing); bad input throws Error here.
    virtual void start(Index from, const Vector& theta) = 0;
    /// Resume at step s, first step: drops its rows at steps >= s, which the resumed pass
    /// recomputes (the file is not yet in SWMR mode).
    virtual void truncate(h5::File& f, Index s) = 0;
    /// Resume at step s, second step (after every analysis truncated): restores its state from
    /// the checkpoint of step s. Throws Error if there is none.
    virtual void restore(h5::File& f, Index s) = 0;
    /// Its checkpoint rows for step t: the state at theta_t, before step t is analysed.
    virtual void checkpoint(h5::File& f, Index t) = 0;
    /// Does it need step t (all steps by default; a spectrum at listed steps does not)?
    virtual bool needs(Index t) const { return true; }
    /// Step t (see StepContext). Numerical failures it cannot continue from throw Error.
    virtual void step(StepContext& c) = 0;
    /// After the last step, the file open for writing outside SWMR: final attributes.
    virtual void finish(h5::File& f, Index last) {}

private:
    // Set by start_analyses(); a new pass whose analyses were not started is a programming error
    // that prepare_analyses() reports (start() runs before the file is written: driver.hpp).
    friend void start_analyses(const std::vector<Analysis*>& analyses, Index from, const Vector& theta);
    friend void prepare_analyses(h5::File& file, const std::vector<Analysis*>& analyses, Index from,
                                 const Vector& theta, bool resumed);
    bool m_started = false;
};

/// Resume helpers for analyses' series. Drops the rows of `series` (and of `steps` itself) at
/// steps >= s, where `steps` is the series' step index (ascending); `per_step` rows per step
/// (K for stored eigenvectors). Absent series are skipped.
void truncate_from(h5::File& f, const std::string& steps, const std::vector<std::string>& series, Index s,
                   Index per_step = 1);
/// The last row of the step series `steps` that holds step s (its checkpoint), or -1.
Index checkpoint_row(h5::File& f, const std::string& steps, Index s);

}  // namespace tdyn
