#include "tdyn/driver.hpp"

#include "tdyn/run.hpp"

#include <algorithm>
#include <stdexcept>

namespace tdyn {

std::string to_string(RunStatus s) {
    switch (s) {
        case RunStatus::Running: return "running";
        case RunStatus::Completed: return "completed";
        case RunStatus::Diverged: return "diverged";
        case RunStatus::Interrupted: return "interrupted";
    }
    return "?";
}

RunStatus parse_run_status(const std::string& text) {
    for (RunStatus s : {RunStatus::Running, RunStatus::Completed, RunStatus::Diverged, RunStatus::Interrupted})
        if (text == to_string(s)) return s;
    throw Error("status: expected running, completed, diverged or interrupted, found '" + text + "'");
}

void prepare_analyses(h5::File& file, const std::vector<Analysis*>& analyses, Index from, const Vector& theta,
                      bool resumed) {
    if (resumed) {
        for (Analysis* a : analyses) a->truncate(file, from);
        for (Analysis* a : analyses) a->restore(file, from);
    } else {
        for (Analysis* a : analyses)
            if (!a->m_started)
                throw std::logic_error(a->name() +
                                       ": a new pass must call start_analyses() before the file is written");
        for (Analysis* a : analyses) a->create(file);
    }
}

void start_analyses(const std::vector<Analysis*>& analyses, Index from, const Vector& theta) {
    for (Analysis* a : analyses) {
        a->start(from, theta);
        a->m_started = true;
    }
}

void begin_analyses(h5::File& file, const std::vector<Analysis*>& analyses, Index from, const Vector& theta,
                    bool resumed) {
    prepare_analyses(file, analyses, from, theta, resumed);
    file.flush();
    file.start_swmr();  // readers (notebooks, tdyn info) can watch the file grow
}

DriveResult drive(Trainer& trainer, h5::File& file, const std::vector<Analysis*>& analyses, Vector theta,
                  const DriveOptions& o, RunWriter* writer) {
    const bool training = writer != nullptr;
    const Index S = std::max<Index>(1, o.save_theta_every);
    Index mismatched = -1;

    auto stored_row = [&](Index t) -> Index {
        const Index j = latest_stored(o.stored, t);
        return j >= 0 && o.stored[j] == t ? j : -1;
    };
    auto needed = [&](Index t) {
        return std::any_of(analyses.begin(), analyses.end(), [&](const Analysis* a) { return a->needs(t); });
    };
    // Every stored theta (training) has the analyses' checkpoints of its step, written first.
    auto checkpoint = [&](Index t) {
        for (Analysis* a : analyses) {
            a->checkpoint(file, t);
            file.flush();
        }
        if (training) writer->store_theta(t, theta);
    };
    auto checkpoint_due = [&](Index t) {
        if (o.resumed && t == o.from) return false;  // already in the file
        if (training) return t % S == 0 || t == o.to;
        return o.checkpoint_every > 0 && (t - o.from) % o.checkpoint_every == 0;
    };
    auto finish = [&](RunStatus status, Index t) {
        // Attributes cannot change during SWMR writing: close, reopen, record the outcome.
        const std::string path = file.path();
        file = h5::File();  // closed: every row is already flushed
        try {
            file = h5::File::open_write(path, 10);
        } catch (const Error& e) {
            throw Error(std::string(e.what()) + "; every step up to " + std::to_string(t) +
                        " is written, but the pass could not be marked " + to_string(status) +
                        " (close the other program, then run the same command with --resume to mark it)");
        }
        for (Analysis* a : analyses) a->finish(file, t);
        if (training) writer->set_status(status, t, status == RunStatus::Completed ? o.to : writer->config().steps);
        file.flush();
        return DriveResult{status, t, theta, mismatched};
    };

    Vector theta_t;
    for (Index t = o.from; t <= o.to; ++t) {
        if (o.stop && o.stop->load() && t > o.from) {
            checkpoint(t);  // so that --resume continues from theta_t
            return finish(RunStatus::Interrupted, t);
        }
        if (!training) {
            // Replay: skip to the latest stored theta at or before the next step an analysis needs.
            Index next = t;
            while (next <= o.to && !needed(next)) ++next;
            if (next > o.to) break;  // nothing left to analyse
            if (next > t) {
                const Index j = latest_stored(o.stored, next);
                const Index s = j >= 0 ? o.stored[j] : -1;
                if (s > t) {
                    theta = file.read_row("/trajectory/theta", hsize_t(j));
                    t = s - 1;
                    continue;
                }
            }
            if (t == o.to && !o.evaluate_last) break;
        }
        if (checkpoint_due(t)) checkpoint(t);
        // Row t is L(theta_t); for t < to the same Evaluation gives the update to theta_{t+1}.
        theta_t = theta;
        const StepStats s = t < o.to ? trainer.step(t, theta) : trainer.evaluate(t, theta);
        if (training) writer->append(t, s);
        else if (!s.finite())
            throw Error(file.path() + ": the loss is not finite at step " + std::to_string(t) +
                        "; the trajectory ends there");
        StepContext c{t, o.to, theta_t, theta, s, trainer, file};
        for (Analysis* a : analyses) {
            a->step(c);
            file.flush();  // each analysis' rows reach readers (and the disk reserve is renewed) as they are written
        }
        // The replay must land on the stored theta bit for bit (same build, same thread chunks).
        if (!training && t < o.to && mismatched < 0) {
            const Index row = stored_row(t + 1);
            if (row >= 0 && file.read_row("/trajectory/theta", hsize_t(row)) != theta) mismatched = t + 1;
        }
        if (o.on_step) o.on_step(t, s);
        if (!s.finite()) return finish(RunStatus::Diverged, t);
    }
    return finish(RunStatus::Completed, o.to);
}

}  // namespace tdyn
