// tdyn eval: loss, accuracy and gradient (and H v, J v) at a params file's theta or a run's
// stored (or replayed) theta: how other tools cross-check tdyn.
#include "commands.hpp"
#include "common.hpp"
#include "tdyn/ranks.hpp"

#include "tdyn/hvp.hpp"
#include "tdyn/run.hpp"

#include <iostream>

namespace tdyn::cli {

namespace {

struct EvalOptions {
    ProblemFlags problem;
    ProblemOptions given;
    std::string file, write, vector_file, split = "train";
    Index step = -1;
    double lr = 0;
    bool json = false, force = false;
    CLI::Option *step_opt, *lr_opt;
};

int run_eval(EvalOptions& o) {
    const bool is_run = [&] {
        h5::File f = h5::File::open_read(o.file, true);
        return f.has_attr("/", "format") && f.attr_string("/", "format") == kRunFormat;
    }();
    if (!o.write.empty()) check_output_path(o.write, o.force, "--write");
    if (o.vector_file.size() && o.write.empty()) throw Error("--vector: needs --write FILE.h5 to store /hvp");
    if (o.lr_opt->count() && !(o.lr > 0)) throw Error("--lr: must be positive, found " + format_number(o.lr));
    if (o.split != "train" && o.split != "test")
        throw Error("--split: expected train or test, found '" + o.split + "'");

    TrainConfig config;
    std::optional<RunReader> run;
    if (is_run) {
        run.emplace(o.file);
        config = run->info().config;
        apply_problem_flags(o.problem, o.given, config, true);
    } else {
        if (o.step_opt->count()) throw Error("--step: " + o.file + " is a params file, not a run file");
        apply_problem_flags(o.problem, o.given, config, false);
    }
    const Architecture arch = config.architecture();
    Vector theta;
    if (!is_run) theta = read_params(o.file, arch);  // before the data: a bad file fails fast
    auto data = std::make_shared<const Dataset>(load_dataset(config.data, data_dir(o.problem.data_dir), config.samples,
                                                             arch.outputs(), o.split == "test", ranks::comm()));

    Index step = -1;
    if (is_run) {
        const auto& steps = run->info().theta_steps;
        if (steps.empty()) throw Error(o.file + ": the run stored no theta yet");
        step = o.step >= 0 ? o.step : steps.back();
        const Index last = std::max(run->info().last_step, steps.back());
        if (step > last)
            throw Error("--step " + std::to_string(step) + ": " + o.file + " ends at step " + std::to_string(last));
        if (std::find(steps.begin(), steps.end(), step) != steps.end()) {
            theta = run->stored_theta(step);
        } else {
            // Replay the run's own updates (its data and batches), from the nearest stored theta.
            TrainConfig replay_config = run->info().config;
            auto replay_data =
                std::make_shared<const Dataset>(load_config_data(replay_config, o.problem.data_dir, ranks::comm()));
            Trainer replayer(replay_config, replay_data);
            theta = run->theta(step, replayer);
        }
    }

    InputMatrix X(data->X, config.x_path, config.precision, 0.3, data->comm);
    Evaluation e(arch, X, data->T, theta, EvaluationOptions{config.weight_decay, data->comm});
    const Vector& g = e.gradient();

    Matrix V, HV;
    bool single = false;
    if (!o.vector_file.empty()) {
        V = read_vectors_file(o.vector_file, arch.num_params(), "arch " + arch.to_string(), &single);
        HV = HessianOp(e) * V;
    }

    if (!o.write.empty()) {
        std::error_code ec;
        if (ranks::root()) std::filesystem::remove(o.write, ec);  // allowed by check_output_path (--force)
        h5::File out = h5::File::create(o.write);
        out.write_scalar("/loss", e.data_loss());
        out.write_scalar("/accuracy", e.accuracy());
        out.write_vector("/gradient", g);
        if (V.size()) {
            auto put = [&](const std::string& name, const Matrix& M) {
                if (single) out.write_vector(name, M.col(0));
                else out.write_matrix(name, M.transpose());
            };
            put("/hvp", HV);
            if (o.lr_opt->count()) put("/jvp", V - o.lr * HV);  // J v = v - alpha H v
        }
        out.set_attr("/", "source", o.file);
        out.set_attr("/", "step", std::int64_t(step));
        out.set_attr("/", "samples", std::int64_t(data->global_samples()));
    }
    if (o.json) {
        const Json j = {{"file", o.file},
                        {"step", step},
                        {"data", config.data},
                        {"split", o.split},
                        {"samples", data->global_samples()},
                        {"arch", arch.to_string()},
                        {"loss", e.data_loss()},
                        {"accuracy", e.accuracy()},
                        {"grad_norm", g.norm()}};
        std::cout << json_line(j) << "\n";
    } else {
        std::cout.precision(17);
        std::cout << o.file << (step >= 0 ? " step " + std::to_string(step) : std::string()) << " on "
                  << data->global_samples() << " " << o.split << " samples of " << config.data << "\n"
                  << "loss      " << e.data_loss() << "\naccuracy  " << e.accuracy() << "\ngrad_norm " << g.norm()
                  << "\n";
    }
    return 0;
}

}  // namespace

void setup_eval(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<EvalOptions>();
    CLI::App* cmd = app.add_subcommand("eval", "loss, accuracy and gradient at a params file's or a run's theta");
    cmd->add_option("FILE", o->file, "params file (/params/theta) or run file")->required()->check(CLI::ExistingFile);
    o->given = add_problem_flags(cmd, o->problem);
    o->step_opt =
        cmd->add_option("--step", o->step, "run files: the step T (replayed when not stored; default: the last stored)")
            ->check(NonNegative);
    cmd->add_option("--split", o->split, "train or test split of mnist / fashion-mnist")->capture_default_str();
    cmd->add_flag("--json", o->json, "print one JSON object");
    cmd->add_option("--write", o->write, "write /loss, /accuracy, /gradient (and /hvp, /jvp) to this HDF5 file");
    cmd->add_option("--vector", o->vector_file,
                    "HDF5 file with /vector [P] or /vectors [M x P]: also write H v as /hvp")
        ->check(CLI::ExistingFile);
    o->lr_opt = cmd->add_option("--lr", o->lr, "with --vector: also write J v = v - alpha H v as /jvp");
    cmd->add_flag("--force", o->force, "overwrite the --write file if it exists");
    cmd->callback([o, &exit_code] { exit_code = run_eval(*o); });
}

}  // namespace tdyn::cli
