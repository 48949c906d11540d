// tdyn train: gradient descent on a network, stored in a run file as it goes.
#include "commands.hpp"
#include "common.hpp"
#include "values.hpp"

#include "tdyn/analyses.hpp"
#include "tdyn/ranks.hpp"
#include "tdyn/run.hpp"

#include <atomic>
#include <cmath>
#include <csignal>
#include <iostream>
#include <tuple>

namespace tdyn::cli {

namespace {

struct TrainOptions {
    ProblemFlags problem;
    ProblemOptions given;
    double lr = 0.1, weight_decay = 0;
    Index steps = 100, batch = 0, save_theta_every = 10, spectrum_every = 0, eigs = 1;
    Index lyapunov = 0, qr_every = 1, warmup = 0;
    double perturbation = 0;
    std::string which = "both";
    std::uint64_t seed = 0;
    std::string init, init_scheme = "uniform", out = "run.h5";
    double init_scale = 1;
    bool resume = false, force = false, quiet = false;
    CLI::Option *lr_opt, *weight_decay_opt, *steps_opt, *batch_opt, *seed_opt, *init_opt, *init_scheme_opt,
        *init_scale_opt, *save_opt, *spectrum_opt, *eigs_opt, *which_opt, *lyapunov_opt, *qr_opt, *warmup_opt,
        *perturbation_opt;
};

/// The run's configuration and in-line analyses as the flags give them (all flags, defaults
/// included), checked.
std::pair<TrainConfig, InlineAnalyses> from_flags(const TrainOptions& o) {
    TrainConfig config;
    apply_problem_flags(o.problem, o.given, config, false);
    config.lr = o.lr;
    config.weight_decay = o.weight_decay;
    config.steps = o.steps;
    config.batch = o.batch;
    config.seed = o.seed;
    config.init = o.init;
    config.init_scheme = parse_init_scheme(o.init_scheme);
    config.init_scale = o.init_scale;
    config.save_theta_every = o.save_theta_every;
    InlineAnalyses a;
    a.spectrum.every = o.spectrum_every;
    a.spectrum.options.eig.eigs = o.eigs;
    a.spectrum.options.ends = parse_which(o.which);
    a.lyapunov.tangent.vectors = o.lyapunov;
    a.lyapunov.tangent.qr_every = o.qr_every;
    a.lyapunov.tangent.warmup = o.warmup;
    a.perturbation.eps = o.perturbation;
    link_inline_analyses(a, config);
    return {config, a};
}

void check_flags(const TrainConfig& c, const InlineAnalyses& a) {
    if (!(c.lr > 0) || !std::isfinite(c.lr))
        throw Error("--lr: the learning rate must be a positive number, found " + format_number(c.lr));
    if (!(c.weight_decay >= 0) || !std::isfinite(c.weight_decay))
        throw Error("--weight-decay: lambda must be a finite number >= 0, found " + format_number(c.weight_decay));
    const Index P = c.architecture().num_params();
    if (a.spectrum.every > 0 && c.batch > 0)
        throw Error(
            "--spectrum-every: the in-line spectrum is of the full-batch loss; with --batch run tdyn spectrum on the run afterwards");
    check_spectrum_options(a.spectrum.options, P);
    const Index M = a.lyapunov.tangent.vectors;
    if (M < 0 || M > P)
        throw Error("--lyapunov " + std::to_string(M) + ": M must be between 1 and P = " + std::to_string(P));
    check_qr_flags(a.lyapunov.tangent.qr_every, a.lyapunov.tangent.warmup);
    const double eps = a.perturbation.eps;
    if (!(eps >= 0) || !std::isfinite(eps))
        throw Error("--perturbation: EPS must be a positive number, found " + format_number(eps));
    if (eps > 0 && M == 0)
        throw Error("--perturbation: needs --lyapunov M (the perturbation starts along the first tangent vector)");
}

/// --resume with flags: each given flag must equal the stored run's setting; every difference
/// is named ("--lr 0.2 differs from the run's 0.1"). --steps and --data-dir may change.
void check_resume_flags(const TrainOptions& o, const TrainConfig& run, const InlineAnalyses& run_a) {
    const auto [flags, flags_a] = from_flags(o);
    auto num = [](double x) { return format_number(x); };
    auto integer = [](Index x) { return std::to_string(x); };
    const std::vector<FlagCheck> table = {
        {o.given.data, flags.data, run.data},
        {o.given.samples, integer(flags.samples), integer(run.samples)},
        {o.given.arch, flags.architecture().to_string(), run.architecture().to_string()},
        {o.given.activation, to_string(flags.activation), to_string(run.activation)},
        {o.given.output, to_string(flags.output), to_string(run.output)},
        {o.given.precision, o.problem.precision, to_string(run.precision)},
        {o.given.x_path, o.problem.x_path, to_string(run.x_path)},
        {o.lr_opt, num(flags.lr), num(run.lr)},
        {o.weight_decay_opt, num(flags.weight_decay), num(run.weight_decay)},
        {o.batch_opt, integer(flags.batch), integer(run.batch)},
        {o.seed_opt, std::to_string(flags.seed), std::to_string(run.seed)},
        {o.init_opt, flags.init, run.init},
        {o.init_scheme_opt, to_string(flags.init_scheme), to_string(run.init_scheme)},
        {o.init_scale_opt, num(flags.init_scale), num(run.init_scale)},
        {o.save_opt, integer(flags.save_theta_every), integer(run.save_theta_every)},
        {o.spectrum_opt, integer(flags_a.spectrum.every), integer(run_a.spectrum.every)},
        {o.eigs_opt, integer(flags_a.spectrum.options.eig.eigs), integer(run_a.spectrum.options.eig.eigs)},
        {o.which_opt, to_string(flags_a.spectrum.options.ends), to_string(run_a.spectrum.options.ends)},
        {o.lyapunov_opt, integer(flags_a.lyapunov.tangent.vectors), integer(run_a.lyapunov.tangent.vectors)},
        {o.qr_opt, integer(flags_a.lyapunov.tangent.qr_every), integer(run_a.lyapunov.tangent.qr_every)},
        {o.warmup_opt, integer(flags_a.lyapunov.tangent.warmup), integer(run_a.lyapunov.tangent.warmup)},
        {o.perturbation_opt, num(flags_a.perturbation.eps), num(run_a.perturbation.eps)},
    };
    const std::string diff = flag_differences(table, "the run's");
    if (!diff.empty())
        throw Error("--resume: " + o.out + ": " + diff +
                    " (a resumed run keeps its configuration; only --steps may change)");
}

int run_train(TrainOptions& o) {
    TrainConfig config;
    InlineAnalyses inline_a;
    const bool fresh = !o.resume;
    if (o.resume) {
        if (o.force) throw Error("--force: cannot be combined with --resume (it would discard the run)");
    } else {
        std::tie(config, inline_a) = from_flags(o);
        check_flags(config, inline_a);
        if (o.init_opt->count() && (o.init_scheme_opt->count() || o.init_scale_opt->count()))
            throw Error("--init-scheme/--init-scale: theta_0 comes from --init " + o.init + "; give one or the other");
        check_output_path(o.out, o.force);
    }

    std::optional<RunWriter> writer;
    Vector theta;
    Index from = 0;
    if (o.resume) {
        share_file(o.out);  // MPI: the other ranks resume from rank 0's copy, in memory
        {
            // Compare the given flags with the stored run before the file is opened for writing.
            RunReader r(o.out);
            config = r.info().config;
            check_resume_flags(o, config, read_inline_settings(r.file(), config));
        }
        writer.emplace(RunWriter::resume(o.out));
        config = writer->config();
        inline_a = read_inline_settings(writer->file(), config);
        if (o.steps_opt->count() > 0) config.steps = o.steps;
        from = writer->resume_step();
        theta = writer->resume_theta();
        if (config.steps < from)
            throw Error("--steps " + std::to_string(config.steps) + ": " + o.out + " already holds theta at step " +
                        std::to_string(from));
    }
    auto data = std::make_shared<const Dataset>(load_config_data(config, o.problem.data_dir, ranks::comm()));
    if (config.batch > data->global_samples())  // the Trainer checks it too, naming the parameter
        throw Error("--batch " + std::to_string(config.batch) + ": must be between 1 and the number of samples (" +
                    std::to_string(data->global_samples()) + "), or 0 for full batch");
    Trainer trainer(config, data);
    const auto analyses = make_inline_analyses(inline_a);
    RankCheck rank_check;
    const std::vector<Analysis*> passes = rank_check.with(pointers(analyses));
    if (fresh) {
        theta = initial_theta(config);
        start_analyses(passes, 0, theta);  // its refusals (EPS below theta's rounding) before the file exists
        writer.emplace(
            RunWriter::create(o.out, config, command_line(), [&](h5::File& f) { write_inline_settings(f, inline_a); }));
    }
    writer->begin(passes, theta);
    if (!o.quiet)
        std::cerr << (fresh ? "training " : "resuming ") << config.arch << " (" << to_string(config.activation) << ", "
                  << to_string(config.output) << ") on " << data->global_samples() << " samples of " << config.data
                  << ", alpha " << config.lr
                  << (config.batch ? ", batch " + std::to_string(config.batch) : ", full batch") << ", steps " << from
                  << ".." << config.steps << " -> " << o.out << "\n";

    Progress progress(from, config.steps, o.quiet);
    DriveOptions d;
    d.from = from;
    d.to = config.steps;
    d.resumed = !fresh;
    d.save_theta_every = config.save_theta_every;
    d.stop = stop_on_signals();
    d.on_step = [&](Index t, const StepStats& s) { progress.update(t, s.loss, s.accuracy); };
    DriveResult r;
    try {
        r = drive(trainer, writer->file(), passes, theta, d, &*writer);
    } catch (const h5::DiskFull& e) {  // every step before is flushed: the file is as a kill leaves it
        throw Error(std::string(e.what()) + "; make room, then continue with: tdyn train --out " + o.out + " --resume");
    }
    progress.done();
    if (r.status == RunStatus::Diverged) {
        std::cerr << "tdyn: training diverged at step " << r.step << ": the loss or gradient is not finite; " << o.out
                  << " holds the run up to that step (status diverged)\n";
        return kExitDiverged;
    }
    if (r.status == RunStatus::Interrupted) {
        std::cerr << "tdyn: interrupted at step " << r.step << "; " << o.out
                  << " is closed and valid; continue with: tdyn train --out " << o.out << " --resume\n";
        return kExitInterrupted;
    }
    writer.reset();
    RunReader done(o.out);
    std::cout << o.out << ": " << config.steps << " steps, final loss " << done.info().last_loss << ", accuracy "
              << done.info().last_accuracy << "\n";
    return 0;
}

}  // namespace

void setup_train(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<TrainOptions>();
    CLI::App* cmd =
        app.add_subcommand("train", "gradient descent on a network, stored in a run file (HDF5) as it goes");
    o->given = add_problem_flags(cmd, o->problem);
    o->lr_opt = cmd->add_option("--lr", o->lr, "learning rate alpha")->capture_default_str();
    o->weight_decay_opt = cmd->add_option("--weight-decay", o->weight_decay,
                                          "lambda: gradient descent on L + lambda/2 |theta|^2 (also in H and J)")
                              ->capture_default_str();
    o->steps_opt = cmd->add_option("--steps", o->steps, "number of updates; theta_0 .. theta_steps are evaluated")
                       ->check(NonNegative)
                       ->capture_default_str();
    o->batch_opt =
        cmd->add_option("--batch", o->batch, "mini-batch size B for SGD with seeded shuffling (0 = full batch)")
            ->check(NonNegative)
            ->capture_default_str();
    o->seed_opt =
        cmd->add_option("--seed", o->seed, "seed of the initialisation and the shuffling")->capture_default_str();
    o->init_opt = cmd->add_option("--init", o->init, "start from /params/theta of this params or run file")
                      ->check(CLI::ExistingFile);
    o->init_scheme_opt =
        cmd->add_option("--init-scheme", o->init_scheme,
                        "theta_0 without --init: uniform (W, b ~ U(+-s/sqrt(n_in)), PyTorch's default), normal "
                        "(W ~ N(0, s^2)), xavier (W ~ N(0, 2 s^2/(n_in + n_out))), he (W ~ N(0, 2 s^2/n_in)); "
                        "biases 0 but for uniform")
            ->capture_default_str();
    o->init_scale_opt =
        cmd->add_option("--init-scale", o->init_scale, "s of --init-scheme")->check(Positive)->capture_default_str();
    o->save_opt =
        cmd->add_option("--save-theta-every", o->save_theta_every, "store theta every S steps (and at the last)")
            ->check(Positive)
            ->capture_default_str();
    o->spectrum_opt =
        cmd->add_option("--spectrum-every", o->spectrum_every,
                        "eigenvalues of H (and J) every E steps, from the step's own evaluation (0 = never)")
            ->check(NonNegative)
            ->capture_default_str();
    o->eigs_opt = cmd->add_option("--eigs", o->eigs, "K eigenvalues at each end of H's spectrum")
                      ->check(Positive)
                      ->capture_default_str();
    o->which_opt =
        cmd->add_option("--which", o->which, "which end of H's spectrum: top, bottom or both")->capture_default_str();
    o->lyapunov_opt =
        cmd->add_option("--lyapunov", o->lyapunov,
                        "carry M tangent vectors V_{t+1} = J(t) V_t for the top M Lyapunov exponents (0 = none)")
            ->check(NonNegative)
            ->capture_default_str();
    o->qr_opt = cmd->add_option("--qr-every", o->qr_every, "re-orthonormalise the tangent vectors (QR) every q steps")
                    ->check(Positive)
                    ->capture_default_str();
    o->warmup_opt =
        cmd->add_option("--warmup", o->warmup, "W steps that orthonormalise but do not count (multiple of q)")
            ->check(NonNegative)
            ->capture_default_str();
    o->perturbation_opt =
        cmd->add_option("--perturbation", o->perturbation,
                        "also run theta_0 + EPS v_1, renormalised every q steps (two-trajectory check; 0 = none)")
            ->capture_default_str();
    cmd->add_option("--out", o->out, "run file to write")->capture_default_str();
    cmd->add_flag("--resume", o->resume,
                  "continue the run in --out from its last stored theta (flags given with it must equal the run's)");
    cmd->add_flag("--force", o->force, "overwrite --out if it exists");
    cmd->add_flag("--quiet", o->quiet, "no progress output");
    cmd->callback([o, &exit_code] { exit_code = run_train(*o); });
}

}  // namespace tdyn::cli
