// Run files: contents against an in-memory run, deterministic replay, resume after SIGKILL,
// params files from h5py, and bad input through the tdyn program.
#include "tdyn/run.hpp"
#include "tdyn/analyses.hpp"
#include "test_support.hpp"

#include <cstring>
#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <thread>
#include <unistd.h>

namespace tdyn {
namespace {

struct SmallRun {
    std::string data_file;
    TrainConfig config;
    std::shared_ptr<const Dataset> data;
};

SmallRun small_run(const std::string& name, Index steps, Index batch = 0) {
    SmallRun r;
    r.data_file = test::temp_path(name + "-data.h5");
    test::write_data_file(r.data_file, 300, 12, 4, 5);
    r.config.data = r.data_file;
    r.config.arch = "12-8-4";
    r.config.activation = Activation::Tanh;
    r.config.lr = 0.5;
    r.config.steps = steps;
    r.config.batch = batch;
    r.config.seed = 3;
    r.config.save_theta_every = 5;
    r.data = std::make_shared<const Dataset>(load_config_data(r.config, ""));
    return r;
}

/// A run with no analyses: the driver's training pass over steps from .. to.
DriveResult train(Trainer& tr, RunWriter& w, const Vector& theta, Index from, Index to) {
    w.begin({}, theta);
    DriveOptions d;
    d.from = from;
    d.to = to;
    d.save_theta_every = tr.config().save_theta_every;
    return drive(tr, w.file(), {}, theta, d, &w);
}

/// The same trajectory computed in memory, without any file: theta_0..theta_steps and rows.
struct Memory {
    std::vector<Vector> theta;
    std::vector<StepStats> rows;
};
Memory in_memory(const SmallRun& r) {
    Trainer tr(r.config, r.data);
    Memory m;
    Vector theta = initial_theta(r.config);
    for (Index t = 0; t <= r.config.steps; ++t) {
        m.theta.push_back(theta);
        m.rows.push_back(t < r.config.steps ? tr.step(t, theta) : tr.evaluate(t, theta));
    }
    return m;
}

TEST(RunFile, TwentyStepRunMatchesInMemoryRunBitForBit) {
    for (Index batch : {0, 64}) {
        const SmallRun r = small_run("twenty", 20, batch);
        const std::string path = test::temp_path("twenty.h5");
        check_output_path(path, false);
        {
            Trainer tr(r.config, r.data);
            RunWriter w = RunWriter::create(path, r.config, "test");
            EXPECT_EQ(to_string(train(tr, w, initial_theta(r.config), 0, 20).status), "completed");
        }
        const Memory m = in_memory(r);
        RunReader rd(path);
        const RunInfo& i = rd.info();
        EXPECT_EQ(to_string(i.status), "completed");
        EXPECT_EQ(i.rows, 21);
        EXPECT_EQ(i.theta_steps, (std::vector<Index>{0, 5, 10, 15, 20}));
        const Vector loss = rd.file().read_vector("/trajectory/loss"),
                     acc = rd.file().read_vector("/trajectory/accuracy"),
                     gn = rd.file().read_vector("/trajectory/grad_norm"),
                     step = rd.file().read_vector("/trajectory/step");
        for (Index t = 0; t <= 20; ++t) {
            EXPECT_EQ(step[t], double(t));
            EXPECT_EQ(loss[t], m.rows[t].loss) << "batch " << batch << " step " << t;
            EXPECT_EQ(acc[t], m.rows[t].accuracy);
            EXPECT_EQ(gn[t], m.rows[t].grad_norm);
        }
        for (Index t : i.theta_steps) EXPECT_EQ(rd.stored_theta(t), m.theta[t]) << "theta at step " << t;
        EXPECT_EQ(rd.file().read_vector("/params/theta"), m.theta[20]);
        EXPECT_LT(m.rows[20].loss, m.rows[0].loss) << "training makes progress";
        EXPECT_EQ(i.config.lr, 0.5);
        EXPECT_EQ(i.config.batch, batch);
        EXPECT_EQ(i.config.activation, Activation::Tanh);
    }
}

TEST(RunFile, ReplayReproducesStoredThetaBitForBit) {
    for (Index batch : {0, 50}) {
        const SmallRun r = small_run("replay", 20, batch);
        const std::string path = test::temp_path("replay.h5");
        {
            Trainer tr(r.config, r.data);
            RunWriter w = RunWriter::create(path, r.config, "test");
            train(tr, w, initial_theta(r.config), 0, 20);
        }
        const Memory m = in_memory(r);
        RunReader rd(path);
        Trainer tr(r.config, r.data);
        EXPECT_EQ(tr.replay(rd.stored_theta(0), 0, 20), rd.stored_theta(20));  // 20 updates replayed
        for (Index t : {3, 7, 13, 19}) EXPECT_EQ(rd.theta(t, tr), m.theta[t]) << "replayed step " << t;
        EXPECT_THROW(rd.theta(25, tr), Error);
    }
}

TEST(Trainer, MiniBatchesPartitionEachEpoch) {
    const SmallRun r = small_run("batches", 1, 70);
    Trainer tr(r.config, r.data);
    std::vector<int> seen(300, 0);
    for (Index t = 0; t < 4; ++t)  // floor(300 / 70) = 4 batches per epoch
        for (Index i : tr.batch_rows(t)) ++seen[i];
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), 280);
    EXPECT_NE(tr.batch_rows(0), tr.batch_rows(4)) << "a new shuffle each epoch";
    EXPECT_EQ(tr.batch_rows(5), Trainer(r.config, r.data).batch_rows(5)) << "seeded";
}

TEST(RunFile, DivergedRunKeepsEverythingUpToTheStep) {
    SmallRun r = small_run("diverge", 50);
    r.config.lr = 1e6;
    r.config.activation = Activation::Identity;
    r.config.output = Output::IdentityMSE;
    const std::string path = test::temp_path("diverge.h5");
    DriveResult res;
    {
        Trainer tr(r.config, r.data);
        RunWriter w = RunWriter::create(path, r.config, "test");
        res = train(tr, w, initial_theta(r.config), 0, 50);
    }
    EXPECT_EQ(to_string(res.status), "diverged");
    RunReader rd(path);
    EXPECT_EQ(to_string(rd.info().status), "diverged");
    EXPECT_EQ(rd.info().diverged_at, res.step);
    EXPECT_EQ(rd.info().rows, res.step + 1);
    const Vector loss = rd.file().read_vector("/trajectory/loss"), gn = rd.file().read_vector("/trajectory/grad_norm");
    EXPECT_FALSE(std::isfinite(loss[res.step]) && std::isfinite(gn[res.step]));  // the gradient overflows first
    EXPECT_TRUE(loss.head(res.step).allFinite());
    EXPECT_TRUE(gn.head(res.step).allFinite());
}

// ReverseReader gives theta_t for t = to, ..., from equal bit for bit to the trajectory run in
// memory, for full batch and mini-batches, from unaligned ends; it holds at most S thetas (one
// segment between stored thetas) and replays each update at most once.
TEST(ReverseReader, WalksTheTrajectoryBackwardSegmentBySegment) {
    for (Index batch : {0, 50}) {
        SCOPED_TRACE("batch " + std::to_string(batch));
        const SmallRun r = small_run("reverse", 20, batch);
        const std::string path = test::temp_path("reverse.h5");
        {
            Trainer tr(r.config, r.data);
            RunWriter w = RunWriter::create(path, r.config, "test");
            train(tr, w, initial_theta(r.config), 0, 20);
        }
        const Memory m = in_memory(r);
        RunReader rd(path);
        Trainer tr(r.config, r.data);
        ReverseReader rev(rd, tr, 3, 18);
        Index t = -1, expect = 18;
        Vector theta;
        while (rev.next(t, theta)) {
            EXPECT_EQ(t, expect);
            EXPECT_EQ(theta, m.theta[t]) << "step " << t;
            --expect;
        }
        EXPECT_EQ(expect, 2) << "every step from 18 down to 3";
        EXPECT_LE(rev.max_held(), r.config.save_theta_every);
        EXPECT_LE(rev.replayed(), 18) << "each update replayed at most once";
        EXPECT_THROW(ReverseReader(rd, tr, 0, 21), Error);
    }
}

// A plug-in written outside the library: at each step it checks the softmax neutral directions
// (adding one constant to every output weight of a hidden unit, or to every output bias, leaves
// the softmax unchanged, so H v = 0 for these h + 1 vectors) with the step's own Evaluation and
// records max |H v| / |v|, with its own group, checkpoint, truncation and restore. Adding it
// touches no other analysis. Run beside the spectrum and tangent analyses, stopped at step 9
// and resumed, every series equals the uninterrupted run's bit for bit.
class NeutralCheck : public Analysis {
public:
    std::string name() const override { return "neutral"; }
    void create(h5::File& f) override {
        f.create_series("/neutral/step", 0);
        f.create_series("/neutral/residual", 0);
        f.create_series("/checkpoint/neutral_count", 0);
    }
    void start(Index, const Vector&) override { m_count = 0; }
    void truncate(h5::File& f, Index s) override {
        const Vector steps = f.read_vector("/neutral/step");
        Index keep = 0;
        while (keep < steps.size() && steps[keep] < double(s)) ++keep;
        f.truncate_rows("/neutral/residual", hsize_t(keep));
        f.truncate_rows("/neutral/step", hsize_t(keep));
    }
    void restore(h5::File& f, Index s) override { m_count = Index(f.read_vector("/checkpoint/neutral_count")[s / 5]); }
    void checkpoint(h5::File& f, Index t) override { f.append_scalar("/checkpoint/neutral_count", double(m_count)); }
    void step(StepContext& c) override {
        Evaluation& e = c.trainer.evaluation();
        EXPECT_EQ(e.theta(), c.theta) << "the step's own Evaluation holds theta_t";
        const Architecture& a = e.arch();
        const Index L = a.layers(), h = a.widths[L - 1], k = a.outputs();
        Matrix V = Matrix::Zero(a.num_params(), h + 1);
        for (Index j = 0; j < h; ++j) V.col(j).segment(a.weight_offset(L) + j * k, k).setOnes();
        V.col(h).segment(a.bias_offset(L), k).setOnes();
        Matrix HV(V.rows(), V.cols());
        e.hessian_times(V, HV);
        c.file.append_scalar("/neutral/residual",
                             (HV.colwise().norm().array() / V.colwise().norm().array()).maxCoeff());
        c.file.append_scalar("/neutral/step", double(c.t));
        ++m_count;
    }

private:
    Index m_count = 0;
};

TEST(Driver, APluginWrittenOutsideTheLibraryRunsBesideTheOthersAndResumes) {
    SmallRun r = small_run("plugin", 15);
    r.config.output = Output::SoftmaxCE;
    InlineAnalyses inl;
    inl.spectrum.every = 5;
    inl.spectrum.options.eig.eigs = 2;
    inl.lyapunov.tangent.vectors = 2;
    inl.perturbation.eps = 1e-7;
    link_inline_analyses(inl, r.config);
    auto run = [&](const std::string& path, Index stop_at) {
        auto analyses = make_inline_analyses(inl);
        analyses.insert(analyses.begin(),
                        std::make_unique<NeutralCheck>());  // before the perturbation, which moves the trainer
        Trainer tr(r.config, r.data);
        const Vector theta0 = initial_theta(r.config);
        start_analyses(pointers(analyses), 0, theta0);
        RunWriter w = RunWriter::create(path, r.config, "test", [&](h5::File& f) { write_inline_settings(f, inl); });
        w.begin(pointers(analyses), theta0);
        std::atomic<bool> stop{false};
        DriveOptions d;
        d.to = 15;
        d.save_theta_every = 5;
        d.stop = &stop;
        d.on_step = [&](Index t, const StepStats&) { stop = t == stop_at; };
        return drive(tr, w.file(), pointers(analyses), theta0, d, &w).status;
    };
    const std::string full = test::temp_path("plugin-full.h5"), cut = test::temp_path("plugin-cut.h5");
    EXPECT_EQ(run(full, -1), RunStatus::Completed);
    EXPECT_EQ(run(cut, 9), RunStatus::Interrupted);
    {
        RunWriter w = RunWriter::resume(cut);
        const TrainConfig config = w.config();
        EXPECT_EQ(w.resume_step(), 10);
        InlineAnalyses stored = read_inline_settings(w.file(), config);
        auto analyses = make_inline_analyses(stored);
        analyses.insert(analyses.begin(), std::make_unique<NeutralCheck>());
        w.begin(pointers(analyses), w.resume_theta());
        Trainer tr(config, r.data);
        DriveOptions d;
        d.from = 10;
        d.to = 15;
        d.resumed = true;
        d.save_theta_every = 5;
        EXPECT_EQ(drive(tr, w.file(), pointers(analyses), w.resume_theta(), d, &w).status, RunStatus::Completed);
    }
    test::expect_same_run(full, cut, 15,
                          {"/neutral/step", "/neutral/residual", "/trajectory/loss", "/spectrum/step", "/lyapunov/step",
                           "/lyapunov/perturbation/exponent"},
                          {"/spectrum/hessian_top", "/lyapunov/exponents", "/lyapunov/basis"});
    RunReader rd(full);
    const Vector residual = rd.file().read_vector("/neutral/residual");
    EXPECT_EQ(residual.size(), 16);
    // |H v| / |v| is rounding only: 1e-12 against |H| of order 1 (its top eigenvalue, stored beside it).
    const double lambda_max = rd.file().read_matrix("/spectrum/hessian_top")(0, 0);
    EXPECT_GT(lambda_max, 0.01);
    EXPECT_LT(residual.maxCoeff(), 1e-12 * lambda_max);

    // A new pass must start its analyses (start_analyses) before the file is written; one that
    // forgets is stopped before any analysis creates its group.
    NeutralCheck unstarted;
    const std::string p = test::temp_path("plugin-unstarted.h5");
    RunWriter w = RunWriter::create(p, r.config, "test");
    EXPECT_THROW(w.begin({&unstarted}, initial_theta(r.config)), std::logic_error);
    EXPECT_FALSE(w.file().exists("/neutral"));
}

// Kill a real `tdyn train` with SIGKILL mid-run, resume it, and compare with an uninterrupted run.
TEST(RunFile, ResumeAfterSigkillIsBitIdentical) {
    const std::string data = test::temp_path("kill-data.h5");
    test::write_data_file(data, 2000, 40, 5, 9);
    const std::string args = " --data " + data + " --arch 40-30-5 --lr 0.3 --steps 600 --save-theta-every 7 --quiet";
    const std::string full = test::temp_path("kill-full.h5"), killed = test::temp_path("kill-resumed.h5");
    ASSERT_EQ(test::run_tdyn("train" + args + " --out " + full).exit_code, 0);

    const pid_t pid = test::spawn_tdyn({"train", "--data", data, "--arch", "40-30-5", "--lr", "0.3", "--steps", "600",
                                        "--save-theta-every", "7", "--quiet", "--out", killed});
    ASSERT_GE(pid, 0);
    // Wait until the run is well under way, then kill it without warning.
    const Index rows = test::wait_for_rows(killed, 100);
    const int status = test::signal_and_wait(pid, SIGKILL);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the run finished before it could be killed";
    EXPECT_GT(rows, 0);
    EXPECT_EQ(to_string(RunReader(killed).info().status), "running");

    const auto resumed = test::run_tdyn("train --out " + killed + " --resume --quiet");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    test::expect_same_run(full, killed, 600,
                          {"/trajectory/step", "/trajectory/loss", "/trajectory/accuracy", "/trajectory/grad_norm",
                           "/trajectory/theta_step"},
                          {"/trajectory/theta"});
}

// SIGTERM and SIGINT stop a run at the end of the current step: exit 130, one line saying how
// to continue, status interrupted, every series of equal length, and --resume completes it
// bit-identically to an uninterrupted run.
TEST(RunFile, SigtermAndSigintStopCleanlyAndResume) {
    const std::string data = test::temp_path("term-data.h5");
    test::write_data_file(data, 500, 40, 5, 9);
    const std::vector<std::string> args = {"train", "--data",     data,      "--arch",  "40-30-5",
                                           "--lr",  "0.3",        "--steps", "300",     "--save-theta-every",
                                           "7",     "--lyapunov", "2",       "--quiet", "--out"};
    const std::string full = test::temp_path("term-full.h5");
    std::string line;
    for (std::size_t i = 1; i < args.size(); ++i) line += " " + args[i];
    ASSERT_EQ(test::run_tdyn("train" + line + " " + full).exit_code, 0);
    for (int sig : {SIGTERM, SIGINT}) {
        SCOPED_TRACE(sig == SIGTERM ? "SIGTERM" : "SIGINT");
        const std::string run = test::temp_path(std::string("term-") + std::to_string(sig) + ".h5");
        std::vector<std::string> a = args;
        a.push_back(run);
        const pid_t pid = test::spawn_tdyn(a);
        ASSERT_GE(pid, 0);
        test::wait_for_rows(run, 50);
        const int status = test::signal_and_wait(pid, sig);
        ASSERT_TRUE(WIFEXITED(status)) << "killed by the signal instead of stopping at a step";
        EXPECT_EQ(WEXITSTATUS(status), 130);
        {
            RunReader r(run);
            EXPECT_EQ(to_string(r.info().status), "interrupted");
            const Index rows = r.info().rows;
            for (const char* s :
                 {"/trajectory/step", "/trajectory/loss", "/trajectory/accuracy", "/trajectory/grad_norm"})
                EXPECT_EQ(Index(r.file().rows(s)), rows) << s;
            EXPECT_GE(rows, 50);
        }
        const auto resumed = test::run_tdyn("train --out " + run + " --resume --quiet");
        ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
        test::expect_same_run(full, run, 300, {"/trajectory/step", "/trajectory/loss", "/lyapunov/step"},
                              {"/lyapunov/log_growth", "/lyapunov/exponents"});
    }
}

// The reference file was written by h5py: /params/theta with an integer arch attribute.
TEST(ParamsFile, H5pyReferenceIsAcceptedByInitAndEval) {
    TDYN_REQUIRE_REFERENCE();
    TDYN_REQUIRE_MNIST();
    const Vector theta = read_params(test::reference_file(), Architecture::parse("784-50-10"));
    EXPECT_EQ(theta.size(), 39760);
    const auto ev = test::run_tdyn("eval " + test::reference_file() + " --samples 1000 --json");
    ASSERT_EQ(ev.exit_code, 0) << ev.err;
    h5::File ref = h5::File::open_read(test::reference_file());
    const double loss = ref.read_scalar("/loss");
    const auto at = ev.out.find("\"loss\": ");
    ASSERT_NE(at, std::string::npos) << ev.out;
    EXPECT_LT(test::relative_error(std::stod(ev.out.substr(at + 8)), loss), 1e-10);
    // --write: the whole gradient, to compare with the reference.
    const std::string out = test::temp_path("eval-ref.h5");
    ASSERT_EQ(test::run_tdyn("eval " + test::reference_file() + " --samples 1000 --write " + out).exit_code, 0);
    h5::File w = h5::File::open_read(out);
    EXPECT_LT(test::relative_error(w.read_vector("/gradient"), ref.read_vector("/gradient")), 1e-10);
    // --init starts training from it: the first row is the reference loss.
    const std::string run = test::temp_path("init-ref.h5");
    const auto tr =
        test::run_tdyn("train --init " + test::reference_file() + " --samples 1000 --steps 1 --quiet --out " + run);
    ASSERT_EQ(tr.exit_code, 0) << tr.err;
    EXPECT_LT(test::relative_error(RunReader(run).file().read_vector("/trajectory/loss")[0], loss), 1e-10);
}

// tdyn eval --vector writes H v (and J v with --lr): compared with PyTorch's H v.
TEST(Cli, EvalVectorWritesHessianAndJacobianProducts) {
    TDYN_REQUIRE_REFERENCE();
    TDYN_REQUIRE_MNIST();
    h5::File ref = h5::File::open_read(test::reference_file());
    const Vector v = ref.read_vector("/vector"), hv = ref.read_vector("/hvp");
    const std::string vf = test::temp_path("v.h5"), out = test::temp_path("hv.h5"), out2 = test::temp_path("hv2.h5");
    {
        h5::File f = h5::File::create(vf);
        f.write_vector("/vector", v);
    }
    const auto r = test::run_tdyn("eval " + test::reference_file() + " --samples 1000 --vector " + vf +
                                  " --lr 0.1 --write " + out);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    h5::File w = h5::File::open_read(out);
    EXPECT_LT(test::relative_error(w.read_vector("/hvp"), hv), 1e-10);
    EXPECT_LT(test::relative_error(w.read_vector("/jvp"), Vector(v - 0.1 * hv)), 1e-10);
    // Several vectors as /vectors [M x P]: one row each.
    const std::string vf2 = test::temp_path("vs.h5");
    {
        h5::File f = h5::File::create(vf2);
        RowMatrix V(2, v.size());
        V.row(0) = v.transpose();
        V.row(1) = 2 * v.transpose();
        f.write_matrix("/vectors", V);
    }
    ASSERT_EQ(test::run_tdyn("eval " + test::reference_file() + " --samples 1000 --vector " + vf2 + " --write " + out2)
                  .exit_code,
              0);
    const RowMatrix HV = h5::File::open_read(out2).read_matrix("/hvp");
    EXPECT_LT(test::relative_error(Vector(HV.row(1).transpose()), Vector(2 * hv)), 1e-10);
}

/// Every bad input: non-zero exit, one line on stderr naming the problem, no file touched.
TEST(Cli, BadInputGivesOneLineAndTouchesNothing) {
    const std::string data = test::temp_path("bad-data.h5");
    test::write_data_file(data, 50, 6, 3, 1);
    const std::string base = "train --data " + data + " --arch 6-4-3 --steps 2 --quiet";
    const std::string existing = test::temp_path("existing.h5");
    ASSERT_EQ(test::run_tdyn(base + " --out " + existing).exit_code, 0);
    const std::string before = test::slurp(existing);

    const std::string wrong_len = test::temp_path("wrong-len.h5"), nan_params = test::temp_path("nan.h5"),
                      wrong_arch = test::temp_path("wrong-arch.h5");
    write_params(wrong_arch, Vector::Zero(Architecture::parse("6-5-3").num_params()), Architecture::parse("6-5-3"));
    {
        h5::File f = h5::File::create(wrong_len);
        f.write_vector("/params/theta", Vector::Zero(7));
        h5::File g = h5::File::create(nan_params);
        Vector t = Vector::Zero(Architecture::parse("6-4-3").num_params());
        t[3] = std::nan("");
        g.write_vector("/params/theta", t);
    }
    struct Case {
        std::string args, expect;
    };
    const Case cases[] = {
        {base + " --out " + existing, "file exists"},
        {base + " --out " + test::temp_path("x.h5") + " --lr 0", "--lr"},
        {base + " --out " + test::temp_path("x.h5") + " --lr -0.1", "--lr"},
        {base + " --out " + test::temp_path("x.h5") + " --steps abc", "--steps"},
        {base + " --out /nonexistent-dir/run.h5", "does not exist"},
        {base + " --out " + test::temp_path("x.h5") + " --init " + wrong_len, "has 7 entries"},
        {base + " --out " + test::temp_path("x.h5") + " --init " + nan_params, "NaN"},
        {base + " --out " + test::temp_path("x.h5") + " --init " + wrong_arch, "6-5-3"},
        {base + " --out " + test::temp_path("x.h5") + " --init " + test::temp_path("missing.h5"), "missing.h5"},
        {base + " --out " + test::temp_path("x.h5") + " --arch 784--10", "--arch"},
        {"train --data " + data + " --arch 7-4-3 --out " + test::temp_path("x.h5"), "input width 7"},
        {"eval " + existing + " --write " + existing, "file exists"},
        {"eval " + data, "not a params file"},
        {"info " + data, "not a tdyn run file"},
        {"info " + test::temp_path("nothing.h5"), "nothing.h5"},
    };
    for (const Case& c : cases) {
        const auto r = test::run_tdyn(c.args);
        EXPECT_NE(r.exit_code, 0) << c.args;
        EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.args << "\n" << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.args << "\n" << r.err;
        EXPECT_FALSE(std::filesystem::exists(test::temp_path("x.h5"))) << c.args;
    }
    EXPECT_EQ(test::slurp(existing), before) << "the existing run file was touched";
}

TEST(Cli, InfoAndEvalDescribeARun) {
    const std::string data = test::temp_path("info-data.h5");
    test::write_data_file(data, 80, 6, 3, 2);
    const std::string run = test::temp_path("info-run.h5");
    ASSERT_EQ(
        test::run_tdyn("train --data " + data + " --arch 6-4-3 --steps 12 --save-theta-every 5 --quiet --out " + run)
            .exit_code,
        0);
    const auto info = test::run_tdyn("info " + run + " --json");
    ASSERT_EQ(info.exit_code, 0) << info.err;
    for (const char* s : {"\"status\": \"completed\"", "\"rows\": 13", "\"theta_stored\": 4", "\"arch\": \"6-4-3\""})
        EXPECT_NE(info.out.find(s), std::string::npos) << s << "\n" << info.out;
    // eval at a step that is not stored replays it, and agrees with the row in the file.
    const auto ev = test::run_tdyn("eval " + run + " --step 7 --json");
    ASSERT_EQ(ev.exit_code, 0) << ev.err;
    const double loss7 = RunReader(run).file().read_vector("/trajectory/loss")[7];
    EXPECT_EQ(std::stod(ev.out.substr(ev.out.find("\"loss\": ") + 8)), loss7) << ev.out;
    const auto help = test::run_tdyn("train --help");
    EXPECT_EQ(help.exit_code, 0);
    EXPECT_NE(help.out.find("--save-theta-every"), std::string::npos);
}

}  // namespace
}  // namespace tdyn

// docs/CLI.md shows every subcommand's --help verbatim: a flag added without updating the
// docs fails here.
TEST(Cli, DocsShowTheSameHelpAsTheProgram) {
    const std::string doc = tdyn::test::slurp(std::string(TDYN_SOURCE_DIR) + "/docs/CLI.md");
    for (const std::string cmd : {"", "train", "eval", "info", "spectrum", "lyapunov"}) {
        auto r = tdyn::test::run_tdyn(cmd + " --help");
        EXPECT_EQ(r.exit_code, 0) << cmd;
        for (std::size_t at; (at = r.out.find(TDYN_BINARY)) != std::string::npos;)
            r.out.replace(at, std::strlen(TDYN_BINARY), "tdyn");
        EXPECT_NE(doc.find(r.out), std::string::npos) << "docs/CLI.md is out of date for 'tdyn " << cmd << " --help':\n"
                                                      << r.out;
    }
}

// A job script re-runs its own command line with --resume after a crash: flags equal to the
// run's are accepted and the run completes bit-identically to an uninterrupted one; flags that
// differ are refused in one line naming each difference ("--lr 0.2 differs from the run's
// 0.5"), and the file is left as it was. Likewise tdyn lyapunov --resume.
// --init-scheme/--init-scale: theta_0 of the run is init_params with that scheme (the library's
// law is tested in network_test.cpp), the run file records both, and --resume names a difference.
TEST(Cli, InitSchemeIsTheRunsThetaZeroAndItsOwnSetting) {
    const std::string data = tdyn::test::temp_path("scheme-data.h5");
    tdyn::test::write_data_file(data, 50, 12, 4, 3);
    const std::string flags = " --data " + data + " --arch 12-8-4 --seed 5 --init-scheme he --init-scale 2 --quiet";
    const std::string run = tdyn::test::temp_path("scheme.h5");
    ASSERT_EQ(tdyn::test::run_tdyn("train" + flags + " --steps 4 --force --out " + run).exit_code, 0);
    {
        tdyn::h5::File f = tdyn::h5::File::open_read(run);
        EXPECT_EQ(f.attr_string("/", "init_scheme"), "he");
        EXPECT_EQ(f.attr_double("/", "init_scale"), 2.0);
        const tdyn::Architecture arch = tdyn::Architecture::parse("12-8-4");
        EXPECT_EQ(tdyn::Vector(f.read_row("/trajectory/theta", 0)),
                  tdyn::init_params(arch, 5, tdyn::InitScheme::He, 2.0));
    }
    const auto bad = tdyn::test::run_tdyn("train" + flags + " --init-scheme xavier --steps 8 --resume --out " + run);
    EXPECT_EQ(bad.exit_code, 1);
    EXPECT_NE(bad.err.find("--init-scheme xavier differs from the run's he"), std::string::npos) << bad.err;
    EXPECT_EQ(tdyn::test::run_tdyn("train" + flags + " --steps 8 --resume --out " + run).exit_code, 0);
}

TEST(Cli, ResumeAcceptsTheRunsOwnFlagsAndNamesEveryDifference) {
    const std::string data = tdyn::test::temp_path("same-data.h5");
    tdyn::test::write_data_file(data, 200, 12, 4, 3);
    const std::string flags = " --data " + data +
                              " --arch 12-8-4 --activation tanh --lr 0.5 --seed 3 --save-theta-every 5 --lyapunov 2"
                              " --perturbation 1e-7 --spectrum-every 5 --eigs 2 --quiet";
    const std::string full = tdyn::test::temp_path("same-full.h5"), part = tdyn::test::temp_path("same-part.h5");
    ASSERT_EQ(tdyn::test::run_tdyn("train" + flags + " --steps 20 --out " + full).exit_code, 0);
    ASSERT_EQ(tdyn::test::run_tdyn("train" + flags + " --steps 10 --out " + part).exit_code, 0);
    const std::string before = tdyn::test::slurp(part);
    const auto bad =
        tdyn::test::run_tdyn("train" + flags + " --lr 0.2 --eigs 3 --steps 20 --out " + part + " --resume");
    EXPECT_EQ(bad.exit_code, 1);
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
    EXPECT_NE(bad.err.find("--lr 0.2 differs from the run's 0.5"), std::string::npos) << bad.err;
    EXPECT_NE(bad.err.find("--eigs 3 differs from the run's 2"), std::string::npos) << bad.err;
    EXPECT_EQ(tdyn::test::slurp(part), before) << "a refused resume writes nothing";
    const auto ok = tdyn::test::run_tdyn("train" + flags + " --steps 20 --out " + part + " --resume");
    ASSERT_EQ(ok.exit_code, 0) << ok.err;
    tdyn::test::expect_same_run(full, part, 20,
                                {"/trajectory/loss", "/trajectory/grad_norm", "/spectrum/lambda_max", "/lyapunov/step",
                                 "/lyapunov/perturbation/exponent"},
                                {"/trajectory/theta", "/lyapunov/exponents", "/spectrum/hessian_top"});

    // tdyn lyapunov --resume: its own flags may be repeated, a different one is named.
    const std::string run = tdyn::test::temp_path("same-lyap.h5");
    ASSERT_EQ(tdyn::test::run_tdyn("train --data " + data + " --arch 12-8-4 --steps 20 --quiet --out " + run).exit_code,
              0);
    ASSERT_EQ(tdyn::test::run_tdyn("lyapunov " + run + " --vectors 2 --to 10 --quiet").exit_code, 0);
    const auto lbad = tdyn::test::run_tdyn("lyapunov " + run + " --vectors 3 --resume --quiet");
    EXPECT_EQ(lbad.exit_code, 1);
    EXPECT_NE(lbad.err.find("--vectors 3 differs from the stored analysis' 2"), std::string::npos) << lbad.err;
    const auto lok = tdyn::test::run_tdyn("lyapunov " + run + " --vectors 2 --resume --quiet");
    EXPECT_EQ(lok.exit_code, 0) << lok.err;
}
