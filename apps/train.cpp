// tdyn train: gradient descent on a network, stored in a run file as it goes.
#include "commands.hpp"
#include "common.hpp"
#include "values.hpp"

#include "tdyn/run.hpp"

#include <atomic>
#include <cmath>
#include <csignal>
#include <iostream>

namespace tdyn::cli {

namespace {

struct TrainOptions {
    ProblemFlags problem;
    ProblemOptions given;
    double lr = 0.1;
    Index steps = 100, batch = 0, save_theta_every = 10, spectrum_every = 0, eigs = 1;
    Index lyapunov = 0, qr_every = 1, warmup = 0;
    double perturbation = 0;
    std::string which = "both";
    std::uint64_t seed = 0;
    std::string init, out = "run.h5";
    bool resume = false, force = false, quiet = false;
    CLI::Option *lr_opt, *steps_opt, *batch_opt, *seed_opt, *init_opt, *save_opt, *spectrum_opt, *eigs_opt, *which_opt,
        *lyapunov_opt, *qr_opt, *warmup_opt, *perturbation_opt;
};

std::atomic<bool> g_stop{false};

void check_lyapunov_flags(const TrainConfig& c) {
    const Index P = c.architecture().num_params();
    if (c.lyapunov < 0 || c.lyapunov > P)
        throw Error("--lyapunov " + std::to_string(c.lyapunov) + ": M must be between 1 and P = " + std::to_string(P));
    check_qr_schedule(c.qr_every, c.warmup);
    if (!(c.perturbation >= 0) || !std::isfinite(c.perturbation))
        throw Error("--perturbation: EPS must be a positive number, found " + std::to_string(c.perturbation));
    if (c.perturbation > 0 && c.lyapunov == 0)
        throw Error("--perturbation: needs --lyapunov M (the perturbation starts along the first tangent vector)");
}
extern "C" void on_signal(int) {
    g_stop.store(true);
    std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C kills at once
    std::signal(SIGTERM, SIG_DFL);
}

int run_train(TrainOptions& o) {
    TrainConfig config;
    const bool fresh = !o.resume;
    if (o.resume) {
        for (CLI::Option* opt : {o.given.data, o.given.samples, o.given.arch, o.given.activation, o.given.output,
                                 o.given.precision, o.given.x_path, o.lr_opt, o.batch_opt, o.seed_opt, o.init_opt,
                                 o.save_opt, o.spectrum_opt, o.eigs_opt, o.which_opt,
                                 o.lyapunov_opt, o.qr_opt, o.warmup_opt, o.perturbation_opt})
            if (opt->count() > 0)
                throw Error(opt->get_name() + ": --resume continues the run with its stored configuration; only "
                            "--steps (and --data-dir) may be given with it");
        if (o.force) throw Error("--force: cannot be combined with --resume (it would discard the run)");
    } else {
        apply_problem_flags(o.problem, o.given, config, false);
        config.lr = o.lr;
        config.steps = o.steps;
        config.batch = o.batch;
        config.seed = o.seed;
        config.init = o.init;
        config.save_theta_every = o.save_theta_every;
        config.spectrum_every = o.spectrum_every;
        config.eigs = o.eigs;
        config.which = o.which;
        check_which(config.which);
        if (config.spectrum_every > 0 && config.batch > 0)
            throw Error("--spectrum-every: the in-line spectrum is of the full-batch loss; with --batch run tdyn spectrum on the run afterwards");
        check_eigs(config.eigs, config.architecture().num_params());
        config.lyapunov = o.lyapunov;
        config.qr_every = o.qr_every;
        config.warmup = o.warmup;
        config.perturbation = o.perturbation;
        check_lyapunov_flags(config);
        check_output_path(o.out, o.force);
        if (!(config.lr > 0)) throw Error("--lr: the learning rate must be positive, found " + std::to_string(config.lr));
    }

    std::optional<RunWriter> writer;
    Vector theta;
    Index from = 0;
    if (o.resume) {
        writer.emplace(RunWriter::resume(o.out));
        config = writer->config();
        if (o.steps_opt->count() > 0) config.steps = o.steps;
        from = writer->resume_step();
        theta = writer->resume_theta();
        if (config.steps < from)
            throw Error("--steps " + std::to_string(config.steps) + ": " + o.out + " already holds theta at step " +
                        std::to_string(from));
    }
    auto data = std::make_shared<const Dataset>(load_config_data(config, o.problem.data_dir));
    Trainer trainer(config, data);
    if (fresh) {
        theta = initial_theta(config);
        writer.emplace(RunWriter::create(o.out, config, command_line()));
    }
    if (!o.quiet)
        std::cerr << (fresh ? "training " : "resuming ") << config.arch << " (" << to_string(config.activation) << ", "
                  << to_string(config.output) << ") on " << data->samples() << " samples of " << config.data
                  << ", alpha " << config.lr << (config.batch ? ", batch " + std::to_string(config.batch) : ", full batch")
                  << ", steps " << from << ".." << config.steps << " -> " << o.out << "\n";

    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    Progress progress(from, config.steps, o.quiet);
    TrainResult r;
    try {
        r = train(trainer, *writer, theta, from, config.steps,
                  [&](Index t, const StepStats& s) { progress.update(t, s.loss, s.accuracy); }, &g_stop);
    } catch (const h5::DiskFull& e) {  // every step before is flushed: the file is as a kill leaves it
        throw Error(std::string(e.what()) + "; make room, then continue with: tdyn train --out " + o.out + " --resume");
    }
    progress.done();
    if (r.status == "diverged") {
        std::cerr << "tdyn: training diverged at step " << r.step << ": the loss or gradient is not finite; "
                  << o.out << " holds the run up to that step (status diverged)\n";
        return kExitDiverged;
    }
    if (r.status == "interrupted") {
        std::cerr << "tdyn: interrupted at step " << r.step << "; " << o.out
                  << " is closed and valid; continue with: tdyn train --out " << o.out << " --resume\n";
        return kExitInterrupted;
    }
    RunReader done(o.out);
    std::cout << o.out << ": " << config.steps << " steps, final loss " << done.info().last_loss << ", accuracy "
              << done.info().last_accuracy << "\n";
    return 0;
}

}  // namespace

void setup_train(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<TrainOptions>();
    CLI::App* cmd = app.add_subcommand("train", "gradient descent on a network, stored in a run file (HDF5) as it goes");
    o->given = add_problem_flags(cmd, o->problem);
    o->lr_opt = cmd->add_option("--lr", o->lr, "learning rate alpha")->capture_default_str();
    o->steps_opt = cmd->add_option("--steps", o->steps, "number of updates; theta_0 .. theta_steps are evaluated")
                       ->check(CLI::NonNegativeNumber)->capture_default_str();
    o->batch_opt = cmd->add_option("--batch", o->batch, "mini-batch size B for SGD with seeded shuffling (0 = full batch)")
                       ->check(CLI::NonNegativeNumber)->capture_default_str();
    o->seed_opt = cmd->add_option("--seed", o->seed, "seed of the initialisation and the shuffling")->capture_default_str();
    o->init_opt = cmd->add_option("--init", o->init, "start from /params/theta of this params or run file")
                      ->check(CLI::ExistingFile);
    o->save_opt = cmd->add_option("--save-theta-every", o->save_theta_every, "store theta every S steps (and at the last)")
                      ->check(CLI::PositiveNumber)->capture_default_str();
    o->spectrum_opt = cmd->add_option("--spectrum-every", o->spectrum_every,
                                      "eigenvalues of H (and J) every E steps, from the step's own evaluation (0 = never)")
                          ->check(CLI::NonNegativeNumber)->capture_default_str();
    o->eigs_opt = cmd->add_option("--eigs", o->eigs, "K eigenvalues at each end of H's spectrum")
                      ->check(CLI::PositiveNumber)->capture_default_str();
    o->which_opt = cmd->add_option("--which", o->which, "which end of H's spectrum: top, bottom or both")->capture_default_str();
    o->lyapunov_opt = cmd->add_option("--lyapunov", o->lyapunov,
                                      "carry M tangent vectors V_{t+1} = J(t) V_t for the top M Lyapunov exponents (0 = none)")
                          ->check(CLI::NonNegativeNumber)->capture_default_str();
    o->qr_opt = cmd->add_option("--qr-every", o->qr_every, "re-orthonormalise the tangent vectors (QR) every q steps")
                    ->check(CLI::PositiveNumber)->capture_default_str();
    o->warmup_opt = cmd->add_option("--warmup", o->warmup, "W steps that orthonormalise but do not count (multiple of q)")
                        ->check(CLI::NonNegativeNumber)->capture_default_str();
    o->perturbation_opt = cmd->add_option("--perturbation", o->perturbation,
                                          "also run theta_0 + EPS v_1, renormalised every q steps (two-trajectory check; 0 = none)")
                              ->capture_default_str();
    cmd->add_option("--out", o->out, "run file to write")->capture_default_str();
    cmd->add_flag("--resume", o->resume, "continue the run in --out from its last stored theta");
    cmd->add_flag("--force", o->force, "overwrite --out if it exists");
    cmd->add_flag("--quiet", o->quiet, "no progress output");
    cmd->callback([o, &exit_code] { exit_code = run_train(*o); });
}

}  // namespace tdyn::cli
