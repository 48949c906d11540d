// tdyn info: what a run file is and holds.
#include "commands.hpp"
#include "common.hpp"

#include "tdyn/run.hpp"

#include <iostream>

namespace tdyn::cli {

namespace {

struct InfoOptions {
    std::string file;
    bool json = false;
};

int run_info(const InfoOptions& o) {
    RunReader r(o.file);
    const RunInfo& i = r.info();
    const TrainConfig& c = i.config;
    const Architecture arch = c.architecture();
    const Index first_theta = i.theta_steps.empty() ? -1 : i.theta_steps.front();
    const Index last_theta = i.theta_steps.empty() ? -1 : i.theta_steps.back();
    if (o.json) {
        std::cout << "{\"file\": " << json_string(o.file) << ", \"format_version\": " << i.format_version
                  << ", \"tool_version\": " << json_string(i.tool_version)
                  << ", \"command_line\": " << json_string(i.command_line) << ", \"status\": " << json_string(i.status)
                  << ", \"diverged_at\": " << i.diverged_at << ", \"config\": {\"data\": " << json_string(c.data)
                  << ", \"samples\": " << c.samples << ", \"arch\": " << json_string(c.arch)
                  << ", \"parameters\": " << arch.num_params() << ", \"activation\": " << json_string(to_string(c.activation))
                  << ", \"output\": " << json_string(to_string(c.output)) << ", \"alpha\": " << json_number(c.lr)
                  << ", \"steps\": " << c.steps << ", \"batch\": " << c.batch << ", \"seed\": " << c.seed
                  << ", \"init\": " << json_string(c.init) << ", \"save_theta_every\": " << c.save_theta_every
                  << ", \"precision\": " << json_string(c.precision == Precision::F32 ? "f32" : "f64") << "}"
                  << ", \"rows\": " << i.rows << ", \"last_step\": " << i.last_step
                  << ", \"last_loss\": " << json_number(i.last_loss) << ", \"last_accuracy\": " << json_number(i.last_accuracy)
                  << ", \"theta_stored\": " << i.theta_steps.size() << ", \"theta_first_step\": " << first_theta
                  << ", \"theta_last_step\": " << last_theta << ", \"has_spectrum\": " << (i.has_spectrum ? "true" : "false")
                  << ", \"has_lyapunov\": " << (i.has_lyapunov ? "true" : "false") << "}\n";
        return 0;
    }
    std::cout << o.file << ": tdyn run (format " << i.format_version << ", written by tdyn " << i.tool_version << ")\n"
              << "  command     " << i.command_line << "\n"
              << "  status      " << i.status;
    if (i.status == "diverged") std::cout << " at step " << i.diverged_at;
    if (i.status == "running") std::cout << " (still being written, or killed: resume with tdyn train --out " << o.file << " --resume)";
    std::cout << "\n  network     " << c.arch << " (" << arch.num_params() << " parameters), " << to_string(c.activation)
              << " hidden, " << to_string(c.output) << "\n"
              << "  data        " << c.data << ", " << (c.samples ? std::to_string(c.samples) : std::string("all")) << " samples, "
              << (c.batch ? "mini-batch " + std::to_string(c.batch) : std::string("full batch")) << "\n"
              << "  training    alpha " << c.lr << " (2/alpha = " << 2 / c.lr << "), " << c.steps << " steps, seed " << c.seed
              << (c.init.empty() ? "" : ", init " + c.init) << ", " << (c.precision == Precision::F32 ? "f32" : "f64") << "\n"
              << "  trajectory  " << i.rows << " rows";
    if (i.rows) std::cout << " (steps 0.." << i.last_step << "), last loss " << i.last_loss << ", accuracy " << i.last_accuracy;
    std::cout << "\n  theta       " << i.theta_steps.size() << " stored";
    if (!i.theta_steps.empty()) std::cout << " (steps " << first_theta << ".." << last_theta << ", every " << c.save_theta_every << ")";
    std::cout << "\n  analyses    spectrum: " << (i.has_spectrum ? "yes" : "no") << ", lyapunov: " << (i.has_lyapunov ? "yes" : "no")
              << "\n";
    return 0;
}

}  // namespace

void setup_info(CLI::App& app, int& exit_code) {
    auto o = std::make_shared<InfoOptions>();
    CLI::App* cmd = app.add_subcommand("info", "what a run file is: configuration, progress, analyses, status");
    cmd->add_option("RUN", o->file, "run file")->required()->check(CLI::ExistingFile);
    cmd->add_flag("--json", o->json, "print one JSON object");
    cmd->callback([o, &exit_code] { exit_code = run_info(*o); });
}

}  // namespace tdyn::cli
