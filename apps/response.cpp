// tdyn response: d<Phi>/d gamma, the derivative of the long-time average of the training loss
// (or the test loss) with respect to the learning rate or the weight decay, along a stored
// full-batch run: the unrolled adjoint, FAR (shadowing + unstable parts), the shadowing part
// alone, and the brute check by an ensemble of finite differences. Results go to
// /response/PARAM/OBSERVABLE in the run file (docs/FORMAT.md, docs/RESPONSE.md), and so does the
// progress, per segment: an interrupted pass continues when the same command runs again.
#include "commands.hpp"
#include "common.hpp"

#include "tdyn/response.hpp"
#include "tdyn/run.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <optional>
#include <random>
#include <tuple>
#include <unistd.h>

namespace tdyn::cli {

namespace {

struct ResponseCliOptions {
    ProblemFlags problem;
    ProblemOptions given;
    std::string file, param, observable = "loss", method = "all", test_data, second_derivative = "r-operator";
    Index from = 0, to = -1, unstable = -1, window = 10, segment = 20, ensemble = 8, test_samples = 1000;
    Index burn_in = 200, burn_in_vectors = 8, stop_after = 0, align = 0, noise_steps = -1, noise_burn_in = 0;
    double check_fd = 0, kick = 1e-8, tangent_memory = 2000, noise = 0;
    std::uint64_t seed = 0;
    bool force = false, quiet = false, json = false;
};

/// Progress of each phase with its ETA, on stderr: rewritten in place on a terminal, a line
/// every ~10 s otherwise (as Progress does for training steps).
ResponseProgress phase_progress(bool quiet) {
    if (quiet) return {};
    using Clock = std::chrono::steady_clock;
    struct State {
        std::string phase;
        Clock::time_point start, last;
        bool tty = isatty(fileno(stderr));
    };
    auto st = std::make_shared<State>();
    return [st](const std::string& phase, Index done, Index total) {
        const auto now = Clock::now();
        if (phase != st->phase) st->phase = phase, st->start = now, st->last = now - std::chrono::hours(1);
        const double since = std::chrono::duration<double>(now - st->last).count();
        if (!(done == total || (st->tty ? since > 0.1 : since > 10.0))) return;
        st->last = now;
        const double elapsed = std::chrono::duration<double>(now - st->start).count();
        const double eta = done > 0 ? elapsed * double(total - done) / double(done) : 0;
        std::fprintf(stderr, "%sresponse: %s %lld/%lld  ETA %d:%02d%s", st->tty ? "\r" : "", phase.c_str(),
                     (long long)done, (long long)total, int(eta) / 60, int(eta) % 60,
                     st->tty ? (done == total ? "\033[K\n" : "\033[K") : "\n");
        std::fflush(stderr);
    };
}

/// <Phi> over steps 1..T of the map from theta (the FAR/unrolled convention).
double trajectory_average(ResponseMap& map, Vector theta, Index first, Index T) {
    double sum = 0;
    for (Index n = 0; n < T; ++n) {
        map.at(first + n, theta);
        if (n >= 1) sum += map.phi();
        theta = map.next();
        if (!theta.allFinite()) return std::nan("");
    }
    map.at(first + T, theta);
    return (sum + map.phi()) / double(T);
}

/// FAR's progress in the run file, under GROUP/state: the segment starts (state, Q_k, R_k) and
/// Phi_n of the forward phase, then one row of sums per adjoint segment and the adjoint vectors
/// [eps | nu' | nu~'] after the last one (two slots, so a kill while one is written leaves the
/// other). The counters are attributes written last: rows beyond them are from an interrupted write.
class FarStore {
public:
    FarStore(std::string file, const std::string& group, Index dim, Index u)
        : m_file(std::move(file)), m_g(group + "/state"), m_dim(dim), m_u(u) {}

    /// The stored progress into `s` (left empty when there is none).
    void load(FarState& s, const FarOptions& o) {
        const Index K = o.segments, u = m_u, total = K * o.segment + 2 * o.window;
        h5::File f = h5::File::open_read(m_file);
        if (!f.exists(m_g)) return;
        m_started = f.attr_int(m_g, "started");
        m_phi = f.attr_int(m_g, "phi_count");
        m_adjoint = f.attr_int(m_g, "adjoint_done");
        if (m_started == 0) return;
        s = FarState();
        s.started = m_started, s.phi_count = m_phi, s.adjoint_done = m_adjoint;
        s.forward_done = f.attr_int(m_g, "forward_done") != 0;
        s.cp.resize(K + 1);
        s.Q.assign(K + 1, Matrix(m_dim, 0));
        s.R.assign(K + 1, Matrix(0, 0));
        for (Index k = 0; k < m_started; ++k) {
            s.cp[k] = f.read_row(m_g + "/segment_start", k);
            if (u > 0) {
                s.Q[k] = Eigen::Map<const Matrix>(f.read_row(m_g + "/Q", k).data(), m_dim, u);
                s.R[k] = Eigen::Map<const Matrix>(f.read_row(m_g + "/R", k).data(), u, u);
            }
        }
        s.Phi = Vector::Zero(total + 1);
        s.Phi.head(m_phi) = f.read_vector(m_g + "/phi").head(m_phi);
        if (m_adjoint == 0) return;
        s.b = Matrix::Zero(u, K + 1), s.bt = Matrix::Zero(u, K + 1);
        s.sp = Vector::Zero(K), s.up = Vector::Zero(K);
        s.g = Matrix::Zero(u, K), s.gpsi = Matrix::Zero(u, K);
        for (Index j = 0; j < m_adjoint; ++j) {
            const Vector row = f.read_row(m_g + "/adjoint", j);  // k, sp, up, b, b~, g, gpsi
            const Index k = Index(row[0]);
            s.sp[k] = row[1], s.up[k] = row[2];
            s.b.col(k) = row.segment(3, u), s.bt.col(k) = row.segment(3 + u, u);
            s.g.col(k) = row.segment(3 + 2 * u, u), s.gpsi.col(k) = row.segment(3 + 3 * u, u);
        }
        s.block.resize(m_dim, u + 2);
        const Index slot = m_adjoint % 2;
        for (Index c = 0; c < u + 2; ++c) s.block.col(c) = f.read_row(m_g + "/carry", slot * (u + 2) + c);
    }

    /// Appends what `s` holds beyond the file, then the counters.
    void save(const FarState& s) {
        const Index u = m_u;
        h5::File f = h5::File::open_write(m_file);
        if (!f.exists(m_g)) {
            f.create_series(m_g + "/segment_start", m_dim, 1);
            if (u > 0) {
                f.create_series(m_g + "/Q", m_dim * u, 1);
                f.create_series(m_g + "/R", u * u, 64);
            }
            f.create_series(m_g + "/phi", 0, 1024);
            f.create_series(m_g + "/adjoint", 3 + 4 * u, 64);
            f.create_series(m_g + "/carry", m_dim, 1);
        } else {
            // Rows written after the counters were (an interrupted write) are dropped.
            auto cut = [&](const std::string& name, Index n) {
                if (f.exists(name) && Index(f.rows(name)) > n) f.truncate_rows(name, hsize_t(n));
            };
            cut(m_g + "/segment_start", m_started);
            cut(m_g + "/Q", m_started);
            cut(m_g + "/R", m_started);
            cut(m_g + "/phi", m_phi);
            cut(m_g + "/adjoint", m_adjoint);
        }
        for (Index k = m_started; k < s.started; ++k) {
            f.append(m_g + "/segment_start", s.cp[k]);
            if (u > 0) {
                f.append(m_g + "/Q", s.Q[k].data(), hsize_t(m_dim * u));
                f.append(m_g + "/R", s.R[k].data(), hsize_t(u * u));
            }
        }
        for (Index n = m_phi; n < s.phi_count; ++n) f.append_scalar(m_g + "/phi", s.Phi[n]);
        if (s.adjoint_done > m_adjoint) {
            const Index K = Index(s.cp.size()) - 1;
            for (Index j = m_adjoint; j < s.adjoint_done; ++j) {
                const Index k = K - 1 - j;
                Vector row(3 + 4 * u);  // k, sp, up, b, b~, g, gpsi
                row[0] = double(k), row[1] = s.sp[k], row[2] = s.up[k];
                row.segment(3, u) = s.b.col(k), row.segment(3 + u, u) = s.bt.col(k);
                row.segment(3 + 2 * u, u) = s.g.col(k), row.segment(3 + 3 * u, u) = s.gpsi.col(k);
                f.append(m_g + "/adjoint", row);
            }
            const Index slot = s.adjoint_done % 2;
            while (Index(f.rows(m_g + "/carry")) < 2 * (u + 2)) f.append(m_g + "/carry", Vector::Zero(m_dim));
            for (Index c = 0; c < u + 2; ++c)
                f.overwrite_row(m_g + "/carry", hsize_t(slot * (u + 2) + c), s.block.col(c).data(), hsize_t(m_dim));
        }
        f.set_attr(m_g, "started", std::int64_t(s.started));
        f.set_attr(m_g, "phi_count", std::int64_t(s.phi_count));
        f.set_attr(m_g, "forward_done", std::int64_t(s.forward_done));
        f.set_attr(m_g, "adjoint_done", std::int64_t(s.adjoint_done));
        f.flush();
        m_started = s.started, m_phi = s.phi_count, m_adjoint = s.adjoint_done;
    }

private:
    std::string m_file, m_g;
    Index m_dim, m_u;
    Index m_started = 0, m_phi = 0, m_adjoint = 0;  // what the file holds
};

/// The kernel chain's progress under GROUP/state: the packed KernelState [n, phi_sum, s, A, S,
/// batch_A, batch_S, batch_count, x] in two slots (a kill while one is written leaves the other);
/// the attribute `slot`, written last, names the good one.
class KernelStore {
public:
    KernelStore(std::string file, const std::string& group) : m_file(std::move(file)), m_g(group + "/state") {}

    void load(KernelState& s, Index W, Index batches, Index dim) {
        h5::File f = h5::File::open_read(m_file);
        if (!f.exists(m_g) || !f.has_attr(m_g, "slot")) return;
        const Vector v = f.read_row(m_g + "/packed", hsize_t(f.attr_int(m_g, "slot")));
        Index i = 0;
        auto take = [&](Index n) {
            const Vector part = v.segment(i, n);
            i += n;
            return part;
        };
        s.n = Index(v[i++]);
        s.phi_sum = v[i++];
        s.s = take(W), s.A = take(W), s.S = take(W);
        s.batch_A = Eigen::Map<const Matrix>(take(W * batches).data(), W, batches);
        s.batch_S = take(batches), s.batch_count = take(batches);
        s.x = take(dim);
    }

    void save(const KernelState& s) {
        Vector v(2 + 3 * s.s.size() + s.batch_A.size() + 2 * s.batch_S.size() + s.x.size());
        v << double(s.n), s.phi_sum, s.s, s.A, s.S, s.batch_A.reshaped(), s.batch_S, s.batch_count, s.x;
        h5::File f = h5::File::open_write(m_file);
        if (!f.exists(m_g + "/packed")) f.create_series(m_g + "/packed", hsize_t(v.size()), 1);
        const Index slot = f.has_attr(m_g, "slot") ? 1 - f.attr_int(m_g, "slot") : 0;
        while (Index(f.rows(m_g + "/packed")) <= slot) f.append(m_g + "/packed", Vector::Zero(v.size()));
        f.overwrite_row(m_g + "/packed", hsize_t(slot), v.data(), hsize_t(v.size()));
        f.set_attr(m_g, "slot", std::int64_t(slot));
        f.flush();
    }

private:
    std::string m_file, m_g;
};

/// A finished FAR (or shadowing) result as written below.
FarResult read_far(const h5::File& f, const std::string& g, bool full) {
    FarResult r;
    r.segment_shadowing = f.read_vector(g + "/segment_shadowing");
    r.segment_unstable = full ? f.read_vector(g + "/segment_unstable") : Vector::Zero(r.segment_shadowing.size());
    r.exponents = f.read_vector(g + "/exponents");
    r.shadowing = f.attr_double(g, "shadowing");
    r.unstable = full ? f.attr_double(g, "unstable") : 0;
    r.derivative = f.attr_double(g, "derivative");
    r.stderr_ = f.attr_double(g, "stderr");
    r.average = f.attr_double(g, "average");
    r.steps = f.attr_int(g, "segments") * f.attr_int(g, "segment");
    return r;
}

int run_response(ResponseCliOptions& o) {
    refuse_problem_flags(o.given);
    const ResponseParam param = [&] {
        try {
            return parse_response_param(o.param);
        } catch (const Error&) {
            throw Error("--param: expected lr or weight-decay, found '" + o.param + "'");
        }
    }();
    const Observable observable = [&] {
        try {
            return parse_observable(o.observable);
        } catch (const Error&) {
            throw Error("--observable: expected loss or test-loss, found '" + o.observable + "'");
        }
    }();
    const bool do_unrolled = o.method == "unrolled" || o.method == "all";
    const bool do_far = o.method == "far" || o.method == "all";
    const bool do_shadowing = o.method == "shadowing" || o.method == "all";
    const bool do_kernel = o.method == "kernel";  // not part of all: it estimates the noisy map
    if (!do_unrolled && !do_far && !do_shadowing && !do_kernel && o.method != "none")
        throw Error("--method: expected unrolled, far, shadowing, kernel, all or none, found '" + o.method + "'");
    const SecondDerivative second = [&] {
        try {
            return parse_second_derivative(o.second_derivative);
        } catch (const Error&) {
            throw Error("--second-derivative: expected r-operator or differences, found '" + o.second_derivative + "'");
        }
    }();
    if (!(o.noise >= 0) || !std::isfinite(o.noise))
        throw Error("--noise: sigma must be a positive number, found " + format_number(o.noise));
    if (do_kernel && !(o.noise > 0)) throw Error("--noise: --method kernel needs sigma > 0");

    const RunInfo info = RunReader(o.file).info();
    const TrainConfig& config = info.config;
    if (info.theta_steps.empty()) throw Error(o.file + ": the run stored no theta yet");
    if (info.status == RunStatus::Running)
        throw Error(o.file + ": status running (being written, or killed: finish it with tdyn train --resume first)");
    if (config.batch != 0)
        throw Error(o.file + ": mini-batch runs (batch " + std::to_string(config.batch) +
                    ") are not supported: tdyn response differentiates the full-batch map");
    const Index P = config.architecture().num_params();
    const Index to = o.to < 0 ? info.last_step : o.to;
    if (o.from < 0 || o.from >= to)
        throw Error("--from " + std::to_string(o.from) + " --to " + std::to_string(to) + ": need 0 <= from < to");
    if (to > info.last_step)
        throw Error("--to " + std::to_string(to) + ": " + o.file + " ends at step " + std::to_string(info.last_step));
    const Index T = to - o.from;
    if (o.window < 0) throw Error("--window " + std::to_string(o.window) + ": must be >= 0");
    if (do_kernel && o.window < 1)
        throw Error("--window " + std::to_string(o.window) + ": the kernel sum needs W >= 1");
    // The noisy chain (kernel, and the noisy finite differences): N steps from theta_T0; it needs no
    // stored trajectory beyond T0, so N may exceed the run.
    const Index noise_steps = o.noise_steps < 0 ? T : o.noise_steps;
    KernelOptions ko;
    ko.steps = noise_steps, ko.burn_in = o.noise_burn_in, ko.window = std::max<Index>(1, o.window);
    ko.sigma = o.noise, ko.seed = o.seed;
    if (o.noise > 0) {
        if (o.noise_burn_in < 0) throw Error("--noise-burn-in " + std::to_string(o.noise_burn_in) + ": must be >= 0");
        if (ko.steps - ko.window - ko.burn_in + 1 < ko.batches)
            throw Error("--noise-steps " + std::to_string(ko.steps) +
                        ": must be at least --noise-burn-in + --window + " + std::to_string(ko.batches - 1) + " = " +
                        std::to_string(ko.burn_in + ko.window + ko.batches - 1));
    }
    if (o.segment < 1) throw Error("--segment " + std::to_string(o.segment) + ": must be at least 1");
    const Index K = (T - 2 * o.window) / o.segment;
    if ((do_far || do_shadowing) && K < 2)
        throw Error("--window " + std::to_string(o.window) + " --segment " + std::to_string(o.segment) +
                    ": FAR needs --to - --from >= 2 W + 2 S (" + std::to_string(T) + " steps given)");
    if (o.check_fd < 0 || !std::isfinite(o.check_fd))
        throw Error("--check-fd: H must be a positive number, found " + format_number(o.check_fd));
    const double gamma = param == ResponseParam::LearningRate ? config.lr : config.weight_decay;
    if (o.check_fd > 0 && !(gamma - o.check_fd >= 0))
        throw Error("--check-fd " + format_number(o.check_fd) + ": gamma - H must be >= 0 (the run's " + o.param +
                    " is " + format_number(gamma) + ")");
    if (o.ensemble < 2) throw Error("--ensemble " + std::to_string(o.ensemble) + ": must be at least 2");
    if (!(o.tangent_memory >= 0))
        throw Error("--tangent-memory " + format_number(o.tangent_memory) + ": must be >= 0 (MB)");
    if (o.stop_after < 0) throw Error("--stop-after " + std::to_string(o.stop_after) + ": must be >= 0");
    if (o.align < 0 || o.align > o.from)
        throw Error("--align " + std::to_string(o.align) + ": must be between 0 and --from " + std::to_string(o.from) +
                    " (the basis is aligned over the steps from - A .. from before the window)");
    const std::string group = "/response/" + to_string(param) + "/" + to_string(observable);

    // The settings that decide the numbers, as the group stores them: an unfinished pass
    // continues only under the same ones.
    const bool test_loss = observable == Observable::TestLoss;
    // the settings stored as strings (the others as numbers)
    auto string_attr = [](const std::string& attr) {
        return attr == "method" || attr == "test_data" || attr == "second_derivative";
    };
    auto settings = [&](Index U, const std::string& source) {
        std::vector<std::tuple<std::string, std::string, std::string>> v = {
            // flag, attribute, value
            {"--from", "from", std::to_string(o.from)},
            {"--to", "to", std::to_string(to)},
            {"--method", "method", o.method},
            {"--window", "window", std::to_string(o.window)},
            {"--segment", "segment", std::to_string(o.segment)},
            {"--seed", "seed", std::to_string(std::int64_t(o.seed))},
            {"--check-fd", "check_fd", format_number(o.check_fd)},
            {"--noise", "noise", format_number(o.noise)}};
        if (o.noise > 0) {
            v.emplace_back("--noise-steps", "noise_steps", std::to_string(noise_steps));
            v.emplace_back("--noise-burn-in", "noise_burn_in", std::to_string(o.noise_burn_in));
        }
        if (o.check_fd > 0) {
            v.emplace_back("--ensemble", "ensemble", std::to_string(o.ensemble));
            v.emplace_back("--kick", "kick", format_number(o.kick));
        }
        if (test_loss) {
            v.emplace_back("--test-data", "test_data", o.test_data);
            v.emplace_back("--test-samples", "test_samples", std::to_string(o.test_samples));
        }
        if (do_far || do_shadowing) {
            if (source == "burn-in") {
                v.emplace_back("--burn-in", "burn_in", std::to_string(o.burn_in));
                v.emplace_back("--burn-in-vectors", "burn_in_vectors", std::to_string(o.burn_in_vectors));
            }
            v.emplace_back("--unstable", "unstable_dim", std::to_string(U));
            v.emplace_back("--align", "align", std::to_string(o.align));
        }
        if (do_far) v.emplace_back("--second-derivative", "second_derivative", to_string(second));
        return v;
    };

    // U: the flag, else the number of positive exponents the run's /lyapunov group measured, else
    // estimated in a burn-in from theta_T0 (below, once the map exists). A pass left unfinished
    // in the file keeps its own.
    Index U = o.unstable;
    std::string unstable_source = U >= 0 ? "flag" : "";
    bool need_burn_in = false, resume = false;
    std::optional<Vector> burn_exponents;
    {
        h5::File f = h5::File::open_read(o.file);
        if (f.exists(group) && !o.force) {
            const bool unfinished = f.has_attr(group, "status") && f.attr_string(group, "status") == "running";
            if (!unfinished) throw Error(o.file + ": already holds " + group + "; --force replaces it");
            resume = true;
            if ((do_far || do_shadowing) && f.has_attr(group, "unstable_dim")) {
                if (U < 0) U = f.attr_int(group, "unstable_dim");
                unstable_source = f.attr_string(group, "unstable_source");
                if (f.exists(group + "/burn_in_exponents"))
                    burn_exponents = f.read_vector(group + "/burn_in_exponents");
            }
            std::string diff;
            for (const auto& [flag, attr, value] : settings(U, unstable_source)) {
                const std::string stored = !f.has_attr(group, attr)
                                               ? (attr == "align" || attr == "noise" ? "0"  // older passes
                                                  : attr == "second_derivative"      ? "differences"
                                                                                     : "(none)")
                                           : string_attr(attr) ? f.attr_string(group, attr)
                                           : attr == "check_fd" || attr == "kick" || attr == "noise"
                                               ? format_number(f.attr_double(group, attr))
                                               : std::to_string(f.attr_int(group, attr));
                if (stored != value)
                    diff += (diff.empty() ? "" : "; ") + flag + " " + value + " differs from its " + stored;
            }
            if (!diff.empty())
                throw Error(o.file + ": " + group + " holds an unfinished pass: " + diff +
                            " (run its own command to continue it, or --force to start over)");
        }
        if (!resume && U < 0 && (do_far || do_shadowing)) {
            if (f.exists("/lyapunov/exponents") && f.rows("/lyapunov/exponents") > 0) {
                if (f.has_attr("/lyapunov", "start_vectors"))
                    throw Error(
                        o.file +
                        ":/lyapunov started along given vectors (tdyn lyapunov --start-vectors or --start-along): "
                        "its exponents need not count the unstable directions; give --unstable U");
                const Vector ex = f.read_row("/lyapunov/exponents", f.rows("/lyapunov/exponents") - 1);
                U = 0;
                for (Index i = 0; i < ex.size(); ++i) U += std::isfinite(ex[i]) && ex[i] > 0;
                unstable_source = "lyapunov";
                if (U == ex.size())
                    std::cerr << "tdyn: warning: all " << U << " stored exponents are positive; U may be larger\n";
            } else {
                need_burn_in = true;
                unstable_source = "burn-in";
            }
        }
    }
    if (need_burn_in) {
        if (o.burn_in_vectors < 1 || o.burn_in_vectors > P)
            throw Error("--burn-in-vectors " + std::to_string(o.burn_in_vectors) +
                        ": must be between 1 and P = " + std::to_string(P));
        if (o.burn_in < 20 || o.burn_in > T)
            throw Error("--burn-in " + std::to_string(o.burn_in) +
                        ": must be between 20 and --to - --from = " + std::to_string(T) + " (or give --unstable U)");
    }
    if (U > P) throw Error("--unstable " + std::to_string(U) + ": must be at most P = " + std::to_string(P));

    auto data = std::make_shared<const Dataset>(load_config_data(config, o.problem.data_dir));
    std::optional<Dataset> test;
    if (test_loss) {
        const Index classes = config.architecture().outputs();
        if (!o.test_data.empty()) test = read_data_file(o.test_data, o.test_samples, classes);
        else if (config.data == "mnist" || config.data == "fashion-mnist")
            test = load_dataset(config.data, data_dir(o.problem.data_dir), o.test_samples, classes, true);
        else
            throw Error("--observable test-loss: the run's data is a file (" + config.data +
                        "); give --test-data FILE");
    }
    Trainer trainer(config, data);
    Vector theta0;
    {
        RunReader reader(o.file);
        theta0 = reader.theta(o.from, trainer);
    }
    auto make_map = [&](double alpha, double lambda) {
        return std::make_unique<GradientDescentMap>(config.architecture(), *data, alpha, lambda, param, observable,
                                                    test ? &*test : nullptr, config.precision, config.x_path);
    };
    auto map = make_map(config.lr, config.weight_decay);
    map->set_second_derivative(second);
    const ResponseProgress progress = phase_progress(o.quiet || o.json);
    if (need_burn_in) {
        // M tangent vectors over the first B steps of the window, QR every 10 steps, the first
        // quarter (rounded to a multiple of 10) not counted: U = #{exponents > 0}.
        BurnInOptions bo;
        bo.vectors = o.burn_in_vectors;
        bo.steps = o.burn_in;
        bo.qr_every = 10;
        bo.warmup = o.burn_in / 40 * 10;  // B >= 20, so B - warmup >= q
        bo.seed = o.seed;
        const UnstableEstimate burn = estimate_unstable_dim(*map, theta0, o.from, bo, progress);
        U = burn.unstable;
        burn_exponents = burn.exponents;
        if (U == bo.vectors)
            std::cerr << "tdyn: warning: all " << U
                      << " burn-in exponents are positive; U may be larger (raise --burn-in-vectors)\n";
    }

    // A new pass: the group with its settings, status running (the run's other groups are not touched).
    if (!resume) {
        h5::File f = h5::File::open_write(o.file);
        if (f.exists(group)) f.remove(group);  // --force
        f.ensure_group(group);
        for (const auto& [flag, attr, value] : settings(U, unstable_source)) {
            if (string_attr(attr)) f.set_attr(group, attr, value);
            else if (attr == "check_fd" || attr == "kick" || attr == "noise")
                f.set_attr(group, attr, attr == "kick" ? o.kick : attr == "noise" ? o.noise : o.check_fd);
            else f.set_attr(group, attr, std::int64_t(std::stoll(value)));
        }
        f.set_attr(group, "status", "running");
        f.set_attr(group, "command_line", command_line());
        if (do_far || do_shadowing) f.set_attr(group, "unstable_source", unstable_source);
        if (burn_exponents) f.write_vector(group + "/burn_in_exponents", *burn_exponents);
        f.flush();
    }

    // Progress is saved per unit (a FAR segment of either phase, a finite-difference pair); the
    // pass stops after --stop-after units or on SIGINT/SIGTERM, resumable.
    const std::atomic<bool>* stop = stop_on_signals();
    Index units = 0;
    auto go_on = [&] {
        ++units;
        return !(stop->load() || (o.stop_after > 0 && units >= o.stop_after));
    };
    auto interrupted = [&](const std::string& where) {
        if (!o.quiet)
            std::cerr << "tdyn: stopped in " << where << "; " << o.file << ":" << group
                      << " holds the progress; run the same command again to continue\n";
        return kExitInterrupted;
    };

    Json j = {{"file", o.file},
              {"param", to_string(param)},
              {"observable", to_string(observable)},
              {"from", o.from},
              {"to", to}};
    if (do_far || do_shadowing) {
        j["unstable_dim"] = U;
        j["unstable_source"] = unstable_source;
    }
    if (burn_exponents) j["burn_in_exponents"] = std::vector<double>(burn_exponents->begin(), burn_exponents->end());
    if (resume) j["resumed"] = true;

    auto write_far = [&](h5::File& f, const std::string& g, const FarResult& r, bool full) {
        f.write_vector(g + "/segment_shadowing", r.segment_shadowing);
        if (full) f.write_vector(g + "/segment_unstable", r.segment_unstable);
        f.write_vector(g + "/exponents", r.exponents);
        f.set_attr(g, "derivative", full ? r.derivative : r.shadowing);
        f.set_attr(g, "shadowing", r.shadowing);
        if (full) f.set_attr(g, "unstable", r.unstable);
        f.set_attr(g, "stderr", full ? r.stderr_ : batch_stderr(r.segment_shadowing));
        f.set_attr(g, "average", r.average);
        f.set_attr(g, "unstable_dim", std::int64_t(U));
        f.set_attr(g, "window", std::int64_t(o.window));
        f.set_attr(g, "segment", std::int64_t(o.segment));
        f.set_attr(g, "segments", std::int64_t(K));
        f.set_attr(g, "seed", std::int64_t(o.seed));
        f.set_attr(g, "align", std::int64_t(o.align));
        if (full) f.set_attr(g, "second_derivative", to_string(second));
    };

    // The unrolled adjoint: saved once done (a stopped pass recomputes it: 2 evaluations + 1 HVP a step).
    if (do_unrolled) {
        const std::string g = group + "/unrolled";
        UnrolledResult unrolled;
        bool saved = false;
        if (h5::File f = h5::File::open_read(o.file); f.exists(g)) {
            saved = true;
            unrolled.adjoint_norm = f.read_vector(g + "/adjoint_norm");
            unrolled.derivative = f.attr_double(g, "derivative");
            unrolled.average = f.attr_double(g, "average");
            unrolled.growth_rate = f.attr_double(g, "growth_rate");
            unrolled.mean_log_growth = mean_log_growth(unrolled.adjoint_norm);
        }  // closed before the file is opened for writing
        if (!saved) {
            unrolled = unrolled_response(*map, theta0, o.from, T, std::max<Index>(1, o.segment), progress);
            h5::File w = h5::File::open_write(o.file);
            w.write_vector(g + "/adjoint_norm", unrolled.adjoint_norm);
            w.set_attr(g, "derivative", unrolled.derivative);
            w.set_attr(g, "average", unrolled.average);
            w.set_attr(g, "growth_rate", unrolled.growth_rate);
            w.set_attr(g, "mean_log_growth", unrolled.mean_log_growth);
            w.flush();
            if (!go_on()) return interrupted("the unrolled adjoint (done)");
        }
        j["unrolled"] = {{"derivative", unrolled.derivative},
                         {"average", unrolled.average},
                         {"growth_rate", unrolled.growth_rate},
                         {"mean_log_growth", unrolled.mean_log_growth},
                         {"adjoint_norm_first", unrolled.adjoint_norm[0]}};
    }
    FarOptions fo;
    fo.unstable = U;
    fo.segment = o.segment;
    fo.window = o.window;
    fo.segments = K;
    fo.seed = o.seed;
    fo.keep_bytes = o.tangent_memory * 1e6;
    // --align A: the random basis is first carried over steps from - A .. from of the run (replayed
    // from theta_{from-A}), QR every S steps, so FAR's vectors start aligned (docs/RESPONSE.md).
    // Recomputed (same bits) whenever a pass starts afresh; its exponents go to GROUP/align_exponents.
    std::optional<Vector> align_exponents;
    if (h5::File f = h5::File::open_read(o.file); f.exists(group + "/align_exponents"))
        align_exponents = f.read_vector(group + "/align_exponents");
    double align_mismatch = std::nan("");
    auto align_basis = [&] {
        if (o.align == 0 || U == 0 || fo.initial_basis.size()) return;
        Vector start;
        {
            RunReader reader(o.file);
            start = reader.theta(o.from - o.align, trainer);
        }
        const AlignedBasis a =
            align_tangent_basis(*map, start, o.from - o.align, o.align, U, o.segment, o.seed, progress);
        fo.initial_basis = a.basis;
        // The map's replay against the run's theta_from (relative): the basis is taken at the former.
        align_mismatch = (a.end - theta0).norm() / theta0.norm();
        if (!align_exponents) {
            h5::File w = h5::File::open_write(o.file);
            w.write_vector(group + "/align_exponents", a.exponents);
            w.set_attr(group, "align_mismatch", align_mismatch);
            w.flush();
        }
        align_exponents = a.exponents;
    };
    // FAR (or the shadowing part alone) from its stored progress; nullopt when stopped.
    auto far_pass = [&](const std::string& g, bool full, Json& out) -> std::optional<FarResult> {
        if (h5::File f = h5::File::open_read(o.file); f.exists(g) && f.has_attr(g, "derivative"))
            return read_far(f, g, full);
        fo.unstable_part = full;
        FarStore store(o.file, g, P, U);
        FarState state;
        store.load(state, fo);
        const bool fresh = state.started == 0;
        if (fresh) align_basis();
        const Index g0 = map->gradients(), h0 = map->hvps(), s0 = map->shifted_evaluations(),
                    t0 = map->third_order_products(), r0 = map->revisits();
        const FarResult r = far_response(*map, theta0, o.from, fo, progress, &state, [&](const FarState& s) {
            store.save(s);
            return go_on();
        });
        if (!r.finished) return std::nullopt;
        if (fresh) {  // the counts of one whole pass
            const double N = double(r.steps);
            out["hvps_per_step"] = double(map->hvps() - h0) / N;
            out["evaluations_per_step"] = double(map->gradients() - g0) / N;  // with the gradient
            out["revisits_per_step"] = double(map->revisits() - r0) / N;      // the forward pass alone
            out["shifted_evaluations_per_step"] = double(map->shifted_evaluations() - s0) / N;
            out["third_order_per_step"] = double(map->third_order_products() - t0) / N;
            out["recomputed_segments"] = r.recomputed;
        }
        h5::File w = h5::File::open_write(o.file);
        write_far(w, g, r, full);
        w.flush();
        return r;
    };
    if (do_far) {
        Json counts = Json::object();
        const auto far = far_pass(group + "/far", true, counts);
        if (!far) return interrupted("FAR");
        j["far"] = {{"derivative", far->derivative},
                    {"shadowing", far->shadowing},
                    {"unstable", far->unstable},
                    {"stderr", far->stderr_},
                    {"average", far->average},
                    {"unstable_dim", U},
                    {"steps", far->steps},
                    {"exponents", std::vector<double>(far->exponents.begin(), far->exponents.end())}};
        for (auto it = counts.begin(); it != counts.end(); ++it) j["far"][it.key()] = it.value();
        if (do_shadowing) {
            // FAR's shadowing part is the shadowing estimate (nu' does not see nu~' or omega): no second pass.
            if (!h5::File::open_read(o.file).exists(group + "/shadowing")) {
                h5::File w = h5::File::open_write(o.file);
                write_far(w, group + "/shadowing", *far, false);
                w.flush();
            }
            j["shadowing"] = {{"derivative", far->shadowing}, {"stderr", batch_stderr(far->segment_shadowing)}};
        }
    } else if (do_shadowing) {
        Json counts = Json::object();
        const auto sh = far_pass(group + "/shadowing", false, counts);
        if (!sh) return interrupted("the shadowing pass");
        j["shadowing"] = {{"derivative", sh->shadowing}, {"stderr", batch_stderr(sh->segment_shadowing)}};
    }
    if ((do_far || do_shadowing) && o.align > 0) {
        j["align"] = o.align;
        if (align_exponents)
            j["align_exponents"] = std::vector<double>(align_exponents->begin(), align_exponents->end());
        if (std::isfinite(align_mismatch)) j["align_mismatch"] = align_mismatch;
    }
    if (do_kernel) {
        // The kernel chain, saved every 100 steps (one unit of --stop-after each).
        const std::string g = group + "/kernel";
        KernelResult r;
        double seconds_per_step = std::nan("");
        bool saved = false;
        if (h5::File f = h5::File::open_read(o.file); f.exists(g) && f.has_attr(g, "derivative")) {
            saved = true;
            r.derivative = f.attr_double(g, "derivative");
            r.stderr_ = f.attr_double(g, "stderr");
            r.average = f.attr_double(g, "average");
            r.sources = f.attr_int(g, "sources");
            r.contribution = f.read_vector(g + "/contribution");
            r.partial_stderr = f.read_vector(g + "/partial_stderr");
        }  // closed before the file is opened for writing
        if (!saved) {
            KernelStore store(o.file, g);
            KernelState state;
            store.load(state, ko.window, ko.batches, P);
            const auto t0 = std::chrono::steady_clock::now();
            const Index n0 = state.n;
            r = kernel_response(*map, theta0, o.from, ko, progress, &state, [&](const KernelState& s) {
                store.save(s);
                return go_on();
            });
            if (!r.finished) return interrupted("the kernel chain");
            const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            h5::File w = h5::File::open_write(o.file);
            w.write_vector(g + "/contribution", r.contribution);
            w.write_vector(g + "/partial_stderr", r.partial_stderr);
            w.write_vector(g + "/batch", r.batch);
            w.set_attr(g, "derivative", r.derivative);
            w.set_attr(g, "stderr", r.stderr_);
            w.set_attr(g, "average", r.average);
            w.set_attr(g, "sources", std::int64_t(r.sources));
            w.set_attr(g, "noise", o.noise);
            w.set_attr(g, "window", std::int64_t(ko.window));
            w.set_attr(g, "steps", std::int64_t(ko.steps));
            w.set_attr(g, "burn_in", std::int64_t(ko.burn_in));
            w.set_attr(g, "seed", std::int64_t(o.seed));
            w.flush();
            seconds_per_step = seconds / double(ko.steps + 1 - n0);  // this invocation's steps
        }
        // sigma sqrt(P) (the size of sigma xi) against the run's step |theta_{T0+1} - theta_T0|.
        map->at(o.from, theta0);
        const double move = (map->next() - theta0).norm();
        j["kernel"] = {{"derivative", r.derivative},
                       {"stderr", r.stderr_},
                       {"noise", o.noise},
                       {"noise_relative", o.noise * std::sqrt(double(P)) / move},
                       {"average", r.average},
                       {"window", ko.window},
                       {"steps", ko.steps},
                       {"sources", r.sources},
                       {"contribution", std::vector<double>(r.contribution.begin(), r.contribution.end())},
                       {"partial_stderr", std::vector<double>(r.partial_stderr.begin(), r.partial_stderr.end())}};
        if (std::isfinite(seconds_per_step)) j["kernel"]["seconds_per_step"] = seconds_per_step;
    }
    if (o.check_fd > 0) {
        // N pairs at gamma +- H from theta_T0 plus one tiny random kick per pair (common to the
        // pair); each quotient is saved as it comes, and the kicks of saved pairs are drawn again
        // and skipped, so a continued pass draws the same kicks.
        const std::string g = group + "/fd";
        Vector quotients(o.ensemble);
        Index done = 0;
        if (h5::File f = h5::File::open_read(o.file); f.exists(g + "/quotients")) {
            const Vector q = f.read_vector(g + "/quotients");
            done = std::min<Index>(q.size(), o.ensemble);
            quotients.head(done) = q.head(done);
        }
        auto plus = param == ResponseParam::LearningRate ? make_map(config.lr + o.check_fd, config.weight_decay)
                                                         : make_map(config.lr, config.weight_decay + o.check_fd);
        auto minus = param == ResponseParam::LearningRate ? make_map(config.lr - o.check_fd, config.weight_decay)
                                                          : make_map(config.lr, config.weight_decay - o.check_fd);
        std::mt19937_64 gen(o.seed + 77);
        std::normal_distribution<double> N01;
        for (Index r = 0; r < o.ensemble; ++r) {
            Vector kick(P);
            for (Index i = 0; i < P; ++i) kick[i] = N01(gen);
            if (r < done) continue;
            double ap, am;
            if (o.noise > 0) {
                // The noisy map: pair r shares its noise (seed + 1 + r), no kick: the noise separates the pairs.
                KernelOptions pair = ko;
                pair.seed = o.seed + 1 + std::uint64_t(r);
                ap = noisy_average(*plus, theta0, o.from, pair);
                am = noisy_average(*minus, theta0, o.from, pair);
            } else {
                const Vector start = theta0 + o.kick * kick;
                ap = trajectory_average(*plus, start, o.from, T);
                am = trajectory_average(*minus, start, o.from, T);
            }
            quotients[r] = (ap - am) / (2 * o.check_fd);
            {
                h5::File w = h5::File::open_write(o.file);
                if (!w.exists(g + "/quotients")) w.create_series(g + "/quotients", 0, 64);
                w.append_scalar(g + "/quotients", quotients[r]);
                w.flush();
            }
            if (progress) progress("finite differences", r + 1, o.ensemble);
            if (r + 1 < o.ensemble && !go_on()) return interrupted("the finite differences");
        }
        const double fd = quotients.mean();
        const double fd_stderr =
            std::sqrt((quotients.array() - fd).square().sum() / double(o.ensemble - 1) / double(o.ensemble));
        h5::File w = h5::File::open_write(o.file);
        w.set_attr(g, "fd_derivative", fd);
        w.set_attr(g, "fd_stderr", fd_stderr);
        w.set_attr(g, "h", o.check_fd);
        w.set_attr(g, "kick", o.kick);
        w.flush();
        j["fd_derivative"] = fd;
        j["fd_stderr"] = fd_stderr;
        j["fd_h"] = o.check_fd;
        j["ensemble"] = o.ensemble;
        if (o.noise > 0) j["fd_noise"] = o.noise;  // the noisy map's finite differences
    }
    {
        h5::File w = h5::File::open_write(o.file);
        w.set_attr(group, "status", "completed");
        w.set_attr(group, "command_line", command_line());
        w.flush();
    }

    if (o.json) {
        std::cout << json_line(j) << "\n";
        return 0;
    }
    std::cout.precision(6);
    std::cout << o.file << ": d<" << to_string(observable) << ">/d " << to_string(param) << " over steps " << o.from
              << ".." << to << (resume ? " (continued)" : "") << "\n";
    if (burn_exponents) {
        std::cout << "  U = " << U << " from a " << o.burn_in << "-step burn-in, exponents";
        for (Index i = 0; i < burn_exponents->size(); ++i) std::cout << " " << (*burn_exponents)[i];
        std::cout << "\n";
    }
    if (j.contains("unrolled"))
        std::cout << "  unrolled   " << j["unrolled"]["derivative"].get<double>() << "  (|adjoint| grows "
                  << j["unrolled"]["mean_log_growth"].get<double>() << " per step on average, fit "
                  << j["unrolled"]["growth_rate"].get<double>() << ")\n";
    if (j.contains("far"))
        std::cout << "  FAR        " << j["far"]["derivative"].get<double>() << " +- "
                  << j["far"]["stderr"].get<double>() << "  = shadowing " << j["far"]["shadowing"].get<double>()
                  << " + unstable " << j["far"]["unstable"].get<double>() << "  (U = " << U << ", W = " << o.window
                  << ", S = " << o.segment
                  << (o.align > 0 ? ", aligned over " + std::to_string(o.align) + " steps" : "") << ", "
                  << j["far"]["steps"].get<Index>() << " steps)\n";
    if (align_exponents && o.align > 0) {
        std::cout << "  aligned basis: exponents over steps " << o.from - o.align << ".." << o.from;
        for (Index i = 0; i < align_exponents->size(); ++i) std::cout << " " << (*align_exponents)[i];
        std::cout << "\n";
    }
    if (j.contains("kernel"))
        std::cout << "  kernel     " << j["kernel"]["derivative"].get<double>() << " +- "
                  << j["kernel"]["stderr"].get<double>() << "  (noise sigma = " << o.noise
                  << ", sigma sqrt(P) = " << j["kernel"]["noise_relative"].get<double>()
                  << " of the run's step, W = " << ko.window << ", " << ko.steps << " noisy steps)\n";
    if (j.contains("shadowing")) std::cout << "  shadowing  " << j["shadowing"]["derivative"].get<double>() << "\n";
    if (o.check_fd > 0)
        std::cout << "  finite differences " << j["fd_derivative"].get<double>() << " +- "
                  << j["fd_stderr"].get<double>() << "  (H = " << o.check_fd << ", " << o.ensemble << " pairs"
                  << (o.noise > 0 ? ", the noisy map, common noise per pair" : "") << ")\n";
    return 0;
}

}  // namespace

void setup_response(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<ResponseCliOptions>();
    CLI::App* cmd = app.add_subcommand(
        "response",
        "d<Phi>/d gamma of a stored full-batch run: unrolled adjoint, FAR (shadowing + unstable), finite differences");
    cmd->add_option("RUN", o->file, "run file; results and progress go to its /response group")
        ->required()
        ->check(CLI::ExistingFile);
    o->given = add_problem_flags(cmd, o->problem);
    cmd->add_option("--param", o->param, "gamma: lr (alpha) or weight-decay (lambda)")->required();
    cmd->add_option("--observable", o->observable, "Phi: loss (training, the data term) or test-loss")
        ->capture_default_str();
    cmd->add_option("--test-data", o->test_data,
                    "HDF5 data file of the test loss (default: the data set's test split)");
    cmd->add_option("--test-samples", o->test_samples, "the first N test samples (0 = all)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    cmd->add_option("--from", o->from, "T0: start at theta_T0 (held fixed)")->capture_default_str();
    cmd->add_option("--to", o->to, "T1: last step (default: the run's last step)");
    cmd->add_option("--method", o->method, "unrolled, far, shadowing, kernel, all (= unrolled, far, shadowing) or none")
        ->capture_default_str();
    cmd->add_option("--noise", o->noise,
                    "sigma: the noisy map theta' = f(theta) + sigma xi; --method kernel estimates it, and --check-fd "
                    "then differences it (common noise per pair; 0 = the deterministic map)")
        ->capture_default_str();
    cmd->add_option("--noise-steps", o->noise_steps,
                    "N steps of the noisy chain from theta_T0 (default --to - --from; may exceed the run)");
    cmd->add_option("--noise-burn-in", o->noise_burn_in,
                    "the noisy chain's first steps not counted (kernel sources, averages)")
        ->capture_default_str();
    cmd->add_option("--unstable", o->unstable,
                    "U tangent vectors (default: the positive exponents of the run's /lyapunov group, else "
                    "of a burn-in)");
    cmd->add_option("--burn-in", o->burn_in,
                    "B: without --unstable and /lyapunov, U counts the positive exponents over steps T0..T0+B")
        ->capture_default_str();
    cmd->add_option("--burn-in-vectors", o->burn_in_vectors, "M tangent vectors of the burn-in (U <= M)")
        ->capture_default_str();
    cmd->add_option("--align", o->align,
                    "A: carry the random tangent basis over steps T0 - A .. T0 (QR every S) so FAR starts aligned "
                    "(0 = start random at T0; A <= T0)")
        ->capture_default_str();
    cmd->add_option("--window", o->window, "W: FAR's psi_n sums Phi_{n-W} .. Phi_{n+W}; the kernel sums w = 1..W")
        ->capture_default_str();
    cmd->add_option("--segment", o->segment, "S steps per segment (QR at each end)")->capture_default_str();
    cmd->add_option("--second-derivative", o->second_derivative,
                    "FAR's omega = -alpha sum_j grad(eps_j^T H e_j): r-operator (exact, third-order R-operator) or "
                    "differences (central differences of HVPs, h = 1e-5; passes made before r-operator existed)")
        ->capture_default_str();
    cmd->add_option("--seed", o->seed, "seed of the tangent basis, the finite-difference kicks and the noise")
        ->capture_default_str();
    cmd->add_option("--check-fd", o->check_fd, "also finite differences at gamma +- H (0 = none)")
        ->capture_default_str();
    cmd->add_option("--ensemble", o->ensemble, "N trajectory pairs of the finite differences")->capture_default_str();
    cmd->add_option("--kick", o->kick, "size of the random kick of theta_T0 per pair")->capture_default_str();
    cmd->add_option("--tangent-memory", o->tangent_memory,
                    "MB for the states, tangent vectors and gradients of the last FAR segments (the adjoint "
                    "recomputes the others; same numbers)")
        ->capture_default_str();
    cmd->add_option("--stop-after", o->stop_after,
                    "stop after N units of saved progress (the unrolled adjoint, FAR segments of either phase, 100 "
                    "steps of the kernel chain, finite-difference pairs; 0 = none); the same command continues")
        ->capture_default_str();
    cmd->add_flag("--force", o->force,
                  "replace an existing /response/PARAM/OBSERVABLE group, finished or not (without it an unfinished "
                  "pass continues)");
    cmd->add_flag("--json", o->json, "print the result as one JSON object");
    cmd->add_flag("--quiet", o->quiet, "no progress output");
    cmd->callback([o, &exit_code] { exit_code = run_response(*o); });
}

}  // namespace tdyn::cli
