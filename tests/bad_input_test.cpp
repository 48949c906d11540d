// Tests that try to break tdyn from the outside (docs/RELIABILITY.md): damaged or foreign run
// files, data files with the wrong contents, flag values out of range, a write error in the
// middle of a run. Every refusal must be one line on stderr that names the file or flag, a
// non-zero exit, and no change to any existing file (compared byte for byte).
// Cli.BadInputGivesOneLineAndTouchesNothing (run_test.cpp) and
// Lyapunov.BadInputGivesOneLineAndTouchesNothing hold the first cases; these are the rest.
#include "tdyn/run.hpp"
#include "test_support.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

namespace tdyn {
namespace {

namespace fs = std::filesystem;

/// Snapshots the bytes of some files; unchanged() says whether any of them changed since.
class Snapshot {
public:
    explicit Snapshot(std::vector<std::string> paths) {
        for (auto& p : paths) m_bytes[p] = test::slurp(p);
    }
    testing::AssertionResult unchanged() const {
        for (const auto& [p, b] : m_bytes)
            if (!fs::exists(p) || test::slurp(p) != b) return testing::AssertionFailure() << p << " was changed";
        return testing::AssertionSuccess();
    }

private:
    std::map<std::string, std::string> m_bytes;
};

/// Runs `tdyn ARGS` and expects a refusal: exit code `code` (1: bad input), exactly one line on
/// stderr, containing every one of `parts` (the file or flag, and what was wrong).
void expect_refused(const std::string& args, std::initializer_list<std::string> parts, int code = 1) {
    const auto r = test::run_tdyn(args);
    EXPECT_EQ(r.exit_code, code) << args << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("tdyn: ", 0), 0u) << args << "\n" << r.err;
    for (const auto& p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << args << "\n" << r.err << "lacks: " << p;
}

/// Writes a dataset of any type and rank with the C API (what the wrapper never writes: int32,
/// rank 3, ...), creating the file if needed. Handles do the closing.
void raw_dataset(const std::string& path, const char* name, hid_t type, std::vector<hsize_t> dims, const void* buf) {
    h5::Handle f(fs::exists(path) ? H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)
                                  : H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(f);
    h5::Handle space(H5Screate_simple(int(dims.size()), dims.data(), nullptr));
    h5::Handle d(H5Dcreate2(f.id(), name, type, space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    ASSERT_TRUE(d);
    ASSERT_GE(H5Dwrite(d.id(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf), 0);
}

const std::string kSmall = " --arch 6-4-3 --activation tanh --lr 0.3 --save-theta-every 4 --quiet";  // P = 43

/// A completed 20-step run on a small data file, made once per test.
struct Fixture {
    std::string data, run;
};
Fixture small_run(const std::string& tag) {
    Fixture f{test::temp_path(tag + "-data.h5"), test::temp_path(tag + "-run.h5")};
    test::write_data_file(f.data, 60, 6, 3, 4);
    const auto r = test::run_tdyn("train --data " + f.data + kSmall + " --steps 20 --out " + f.run);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return f;
}

/// Every command that reads a run file, pointed at `file`.
std::vector<std::string> readers_of(const std::string& file) {
    return {"info " + file,
            "info " + file + " --json",
            "eval " + file,
            "spectrum " + file + " --quiet",
            "lyapunov " + file + " --vectors 2 --quiet",
            "train --out " + file + " --resume --quiet"};
}

TEST(BadInput, RunFilesThatAreNotRunsOrAreDamagedAreRefused) {
    const Fixture fx = small_run("damaged");
    const std::string good = test::slurp(fx.run);
    auto copy_with = [&](const std::string& name, const std::string& bytes) {
        const std::string p = test::temp_path(name);
        std::ofstream(p, std::ios::binary) << bytes;
        return p;
    };
    struct Case {
        std::string file, expect;
    };
    std::vector<Case> cases = {
        {copy_with("text.h5", "step,loss\n0,2.3\n"), "not an HDF5 file"},  // not HDF5 at all
        {copy_with("empty.h5", ""), "not an HDF5 file"},
        {fx.data, "not a tdyn run file"},  // HDF5, but a data file
    };
    {  // a run file from a newer tdyn
        const std::string newer = copy_with("newer.h5", good);
        h5::File::open_write(newer).set_attr("/", "format_version", std::int64_t(99));
        cases.push_back({newer, "format_version 99"});
    }
    // Cut in the middle of a write: the first fraction of the bytes.
    for (double frac : {0.03, 0.25, 0.5, 0.9, 0.999}) {
        const std::string name = "cut" + std::to_string(int(frac * 1000)) + ".h5";
        cases.push_back({copy_with(name, good.substr(0, std::size_t(double(good.size()) * frac))), name});
    }
    for (const Case& c : cases) {
        Snapshot s({c.file, fx.data});
        // Every reader names the file; info says what is wrong with it.
        for (const std::string& args : readers_of(c.file)) expect_refused(args, {c.file});
        expect_refused("info " + c.file, {c.file, c.expect});
        // As the starting point of a new run (--init reads /params/theta; a newer run's is fine).
        if (c.expect != "format_version 99")
            expect_refused(
                "train --data " + fx.data + kSmall + " --init " + c.file + " --out " + test::temp_path("x.h5"),
                {c.file});
        EXPECT_TRUE(s.unchanged()) << c.file;
        EXPECT_FALSE(fs::exists(test::temp_path("x.h5")));
    }
}

TEST(BadInput, DataFilesWithWrongContentsAreRefused) {
    const Fixture fx = small_run("data");
    Snapshot s({fx.run});
    auto data_file = [](const std::string& name) { return test::temp_path(name); };
    struct Case {
        std::string file, expect;
        bool names_file = true;
    };
    std::vector<Case> cases;
    {
        const std::string p = data_file("no-x.h5");
        h5::File::create(p).write_ints("/labels", {0, 1});
        cases.push_back({p, "no dataset /X"});
    }
    {
        const std::string p = data_file("no-targets.h5");
        h5::File::create(p).write_matrix("/X", RowMatrix::Ones(4, 6));
        cases.push_back({p, "/labels"});
    }
    {
        const std::string p = data_file("rank3.h5");
        const std::vector<double> x(4 * 2 * 3, 0.5);
        raw_dataset(p, "/X", H5T_NATIVE_DOUBLE, {4, 2, 3}, x.data());
        h5::File::open_write(p).write_ints("/labels", {0, 1, 2, 0});
        cases.push_back({p, "/X: expected a 2-d dataset"});
    }
    {
        const std::string p = data_file("int32.h5");
        const std::vector<std::int32_t> x(4 * 6, 7);
        raw_dataset(p, "/X", H5T_NATIVE_INT32, {4, 6}, x.data());
        h5::File::open_write(p).write_ints("/labels", {0, 1, 2, 0});
        cases.push_back({p, "/X: integer data must be uint8"});
    }
    {
        const std::string p = data_file("inf-x.h5");
        RowMatrix X = RowMatrix::Ones(4, 6);
        X(2, 3) = INFINITY;
        h5::File f = h5::File::create(p);
        f.write_matrix("/X", X);
        f.write_ints("/labels", {0, 1, 2, 0});
        cases.push_back({p, "/X: contains NaN or Inf"});
    }
    {
        const std::string p = data_file("nan-t.h5");
        RowMatrix T = RowMatrix::Zero(4, 3);
        T(1, 1) = NAN;
        h5::File f = h5::File::create(p);
        f.write_matrix("/X", RowMatrix::Ones(4, 6));
        f.write_matrix("/T", T);
        cases.push_back({p, "/T: contains NaN or Inf"});
    }
    for (std::int64_t label : {std::int64_t(3), std::int64_t(-1), std::int64_t(1) << 40}) {
        const std::string p = data_file("label" + std::to_string(label) + ".h5");
        h5::File f = h5::File::create(p);
        f.write_matrix("/X", RowMatrix::Ones(4, 6));
        f.write_ints("/labels", {0, label, 1, 2});
        cases.push_back({p, "label " + std::to_string(label) + " of sample 1 is outside 0..2"});
    }
    {
        const std::string p = data_file("float-labels.h5");
        h5::File f = h5::File::create(p);
        f.write_matrix("/X", RowMatrix::Ones(4, 6));
        f.write_vector("/labels", Vector::Constant(4, 0.5));
        cases.push_back({p, "/labels: expected integers"});
    }
    {
        const std::string p = data_file("t-width.h5");
        h5::File f = h5::File::create(p);
        f.write_matrix("/X", RowMatrix::Ones(4, 6));
        f.write_matrix("/T", RowMatrix::Zero(4, 5));
        cases.push_back(
            {p, "--arch 6-4-3: output width 3 does not match the data, whose targets have 5 columns", false});
    }
    for (const Case& c : cases) {
        Snapshot d({c.file});
        // --force on an existing run: the run must survive bad data untouched.
        const std::string named = c.names_file ? c.file : c.expect;
        expect_refused("train --data " + c.file + kSmall + " --steps 2 --force --out " + fx.run, {named, c.expect});
        expect_refused("eval " + fx.run + " --data " + c.file, {named, c.expect});
        EXPECT_TRUE(d.unchanged());
    }
    EXPECT_TRUE(s.unchanged());
}

TEST(BadInput, FlagValuesOutOfRangeAreRefused) {
    const Fixture fx = small_run("flags");
    Snapshot s({fx.run, fx.data});
    // kSmall's flags, except those a case gives itself (CLI11 refuses a flag given twice).
    const std::string rest =
        " --data " + fx.data + " --activation tanh --save-theta-every 4 --quiet --steps 2 --force --out " + fx.run;
    const std::string train = "train" + rest + " --arch 6-4-3 --lr 0.3", train_lr = "train" + rest + " --arch 6-4-3",
                      train_arch = "train" + rest + " --lr 0.3";
    struct Case {
        std::string args, expect;
        int code = 1;
    };
    const Case cases[] = {
        {train_lr + " --lr nan", "--lr"},
        {train_lr + " --lr inf", "--lr"},
        {train_lr + " --lr -inf", "--lr"},
        {train_arch + " --arch 0-10", "--arch"},
        {train_arch + " --arch 784--10", "--arch"},
        {train_arch + " --arch abc", "--arch"},
        {train_arch + " --arch=-5", "--arch"},
        {train_arch + " --arch 6-4-3-", "--arch"},
        {train_arch + " --arch 6-99999999-3", "--arch"},
        {train + " --spectrum-every 1 --eigs 43", "--eigs 43"},  // K >= P
        {train + " --spectrum-every 1 --eigs 0", "--eigs", 2},
        {train + " --lyapunov 44", "--lyapunov 44"},  // M > P
        {train + " --lyapunov -1", "--lyapunov", 2},
        {train + " --samples 61", "--samples 61"},
        {train + " --batch 61", "--batch"},
        {train + " --steps -3", "--steps", 2},
        {train_lr + " --lr 0.1x", "--lr", 2},
        {train + " --perturbation nan --lyapunov 1", "--perturbation"},
        // EPS below theta's rounding unit is found when the perturbed copy starts: before the
        // file is touched (here an existing run given with --force; a new path below)
        {train + " --perturbation 1e-300 --lyapunov 1",
         "--perturbation 1e-300: at the start, theta + EPS d / |d| rounds"},
        {train + " --init-scheme gauss", "--init-scheme: expected uniform, normal, xavier or he, found 'gauss'"},
        {train + " --init-scale 0", "--init-scale", 2},
        {train + " --init " + fx.run + " --init-scheme normal",
         "--init-scheme/--init-scale: theta_0 comes from --init"},
        {"spectrum " + fx.run + " --eigs 43", "--eigs"},
        {"spectrum " + fx.run + " --lr 0", "--lr"},
        {"spectrum " + fx.run + " --lr nan", "--lr"},
        {"spectrum " + fx.run + " --tol -1", "--tol"},
        // Checked before the run file is opened for writing (check_spectrum_options): the
        // library names the parameter, tdyn the flag.
        {"spectrum " + fx.run + " --eigs 3 --krylov 3", "--krylov 3: Davidson's search space needs at least 9"},
        {"spectrum " + fx.run + " --eigs 3 --krylov 3 --solver lanczos", "--krylov 3: must exceed"},
        {"spectrum " + fx.run + " --trace --probes 1", "--probes 1: the trace needs at least 2 probes"},
        {"spectrum " + fx.run + " --density --lanczos-steps 1", "--lanczos-steps 1: at least 2 steps"},
        {"spectrum " + fx.run + " --steps 0:999999999999:1", "--steps: step 999999999999 is past the end"},
        {"spectrum " + fx.run + " --steps 1,,2", "--steps"},
        {"spectrum " + fx.run + " --steps 5:1:1", "--steps"},
        {"lyapunov " + fx.run + " --vectors 44", "44"},
        {"lyapunov " + fx.run + " --vectors 0", "--vectors", 2},
        {"lyapunov " + fx.run + " --perturbation inf", "--perturbation"},
        {"lyapunov " + fx.run + " --vectors 1 --perturbation 1e-300 --force", "--perturbation 1e-300: at the start"},
        {"eval " + fx.run + " --step 21", "--step 21"},
        {"eval " + fx.run + " --step 999999999999", "--step"},
        {"eval " + fx.run + " --vector " + fx.data + " --write " + test::temp_path("x.h5"), "/vector"},
    };
    for (const Case& c : cases) expect_refused(c.args, {c.expect}, c.code);
    const std::string fresh = test::temp_path("eps-new.h5");
    expect_refused("train --data " + fx.data + kSmall + " --steps 2 --lyapunov 1 --perturbation 1e-300 --out " + fresh,
                   {"--perturbation 1e-300: at the start"});
    EXPECT_TRUE(s.unchanged());
    EXPECT_FALSE(fs::exists(test::temp_path("x.h5")));
    EXPECT_FALSE(fs::exists(fresh));
}

// A number in a message is the value given: --lr -1e-9 is "-1e-09", not std::to_string's
// "-0.000000" (which would read as if the learning rate were zero).
TEST(BadInput, SmallNumbersInMessagesKeepTheirValue) {
    const Fixture fx = small_run("numbers");
    Snapshot s({fx.run, fx.data});
    const std::string out = test::temp_path("numbers-x.h5");
    for (const std::string& args :
         {"train --data " + fx.data + " --arch 6-4-3 --steps 2 --quiet --lr -1e-9 --out " + out,
          "spectrum " + fx.run + " --quiet --lr -1e-9", "eval " + fx.run + " --lr -1e-9"}) {
        const auto r = test::run_tdyn(args);
        EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << args << "\n" << r.err;
        EXPECT_NE(r.err.find("--lr"), std::string::npos) << args << "\n" << r.err;
        EXPECT_NE(r.err.find("found -1e-09\n"), std::string::npos) << args << "\n" << r.err;
        EXPECT_EQ(r.err.find("0.000000"), std::string::npos) << args << "\n" << r.err;
    }
    EXPECT_TRUE(s.unchanged());
    EXPECT_FALSE(fs::exists(out));
}

// A write error must not cost the run. HDF5 records a new end of file before it writes the data
// there, so a write that fails leaves a file it refuses as truncated; tdyn therefore keeps disk
// blocks reserved ahead of HDF5 (h5::File::reserve_space) and stops, one line and exit 1, when it
// cannot reserve more. The file is then as a kill after the last flushed step leaves it: it opens,
// and --resume (once there is room) ends bit-identical to an uninterrupted run.
// `wrap(out)` runs tdyn train (args after "train") under a constraint that makes its writes fail,
// writing the run to `out`; it returns the wait status and stderr.
struct Wrapped {
    int status;
    std::string err;
};
void expect_write_failure_then_resume(const std::string& name,
                                      const std::function<Wrapped(const std::string&, const std::string&)>& wrap,
                                      const std::string& system_reason) {
    const std::string data = test::temp_path(name + "-data.h5");
    test::write_data_file(data, 200, 40, 5, 8);
    const std::string args = " --data " + data +
                             " --arch 40-100-5 --lr 0.3 --steps 120 --save-theta-every 1 --quiet --lyapunov 2"
                             " --perturbation 1e-6 --spectrum-every 10 --which top";  // the bottom end is slow here
    const std::string full = test::temp_path(name + "-full.h5"), cut = test::temp_path(name + "-cut.h5");
    ASSERT_EQ(test::run_tdyn("train" + args + " --out " + full).exit_code, 0);
    const Wrapped w = wrap(args, cut);
    if (w.status == -77) GTEST_SKIP() << w.err;
    ASSERT_TRUE(WIFEXITED(w.status)) << w.err;
    EXPECT_EQ(WEXITSTATUS(w.status), 1) << w.err;
    EXPECT_EQ(std::count(w.err.begin(), w.err.end(), '\n'), 1) << w.err;
    EXPECT_NE(w.err.find(cut + ": no room for the next writes (" + system_reason), std::string::npos) << w.err;
    EXPECT_NE(w.err.find("tdyn train --out " + cut + " --resume"), std::string::npos) << w.err;

    // It opens, says it was cut short, and stopped well into the run (not at its start).
    {
        RunReader before(cut);  // closed before the resume opens the file for writing
        EXPECT_EQ(to_string(before.info().status), "running");
        EXPECT_GT(before.info().rows, 20);
        EXPECT_LT(before.info().rows, 121);
    }
    const auto resumed = test::run_tdyn("train --out " + cut + " --resume --quiet");
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    test::expect_same_run(full, cut, 120,
                          {"/trajectory/step", "/trajectory/loss", "/trajectory/accuracy", "/trajectory/grad_norm",
                           "/trajectory/theta_step", "/lyapunov/step", "/lyapunov/perturbation/exponent",
                           "/spectrum/step", "/spectrum/lambda_max"},
                          {"/trajectory/theta", "/lyapunov/log_growth", "/lyapunov/exponents", "/lyapunov/basis",
                           "/spectrum/hessian_top"});
    EXPECT_EQ(fs::file_size(cut), fs::file_size(full));  // the reserve was given back at the end
}

// A file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored): writes past it fail with EFBIG, as they
// fail with ENOSPC on a full disk. Runs everywhere.
TEST(RunFile, WriteErrorStopsCleanlyAndTheRunResumesBitIdentically) {
    expect_write_failure_then_resume(
        "wfail",
        [](const std::string& args, const std::string& out) {
            const std::string e = test::temp_path("wfail.err");
            // 16 MiB (in 512-byte blocks): about 60 % of the finished file.
            const std::string cmd = "sh -c 'ulimit -f 32768; trap \"\" XFSZ; exec " + std::string(TDYN_BINARY) +
                                    " train" + args + " --out " + out + "' >/dev/null 2>" + e;
            const int status = std::system(cmd.c_str());
            return Wrapped{status, test::slurp(e)};
        },
        "File too large");
}

// A real full file system: a 16 MiB tmpfs mounted in a private mount namespace (unshare -m, so
// nothing outside the test sees it). The file is copied out before the namespace ends. Skipped
// where mounting is not permitted (no root, or a container without CAP_SYS_ADMIN).
TEST(RunFile, FullDiskStopsCleanlyAndTheRunResumesBitIdentically) {
    expect_write_failure_then_resume(
        "enospc",
        [](const std::string& args, const std::string& out) {
            const std::string mnt = test::temp_path("enospc-mnt"), e = test::temp_path("enospc.err");
            fs::create_directories(mnt);
            if (std::system(("unshare -m sh -c 'mount -t tmpfs -o size=16m tmpfs " + mnt + "' 2>/dev/null").c_str()) !=
                0)
                return Wrapped{-77, "cannot mount a tmpfs in a private mount namespace here"};
            const std::string inner = "mount -t tmpfs -o size=16m tmpfs " + mnt + " && { " + std::string(TDYN_BINARY) +
                                      " train" + args + " --out " + mnt + "/run.h5 >/dev/null 2>" + e +
                                      "; rc=\\$?; cp " + mnt + "/run.h5 " + out + "; exit \\$rc; }";
            const int status = std::system(("unshare -m sh -c \"" + inner + "\"").c_str());
            // The message names the file where it was written; the test knows it as `out`.
            std::string err = test::slurp(e);
            for (std::size_t at; (at = err.find(mnt + "/run.h5")) != std::string::npos;)
                err.replace(at, mnt.size() + 7, out);
            return Wrapped{status, err};
        },
        "No space left on device");
}

}  // namespace
}  // namespace tdyn
