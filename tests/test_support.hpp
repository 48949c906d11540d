// Shared by the tests: the central-difference checker, known-answer problems and where
// the data and the PyTorch reference file are.
#pragma once

#include "tdyn/common.hpp"
#include "tdyn/data.hpp"
#include "tdyn/evaluation.hpp"
#include "tdyn/network.hpp"
#include "tdyn/run.hpp"

#include <chrono>
#include <csignal>
#include <thread>

#include <filesystem>
#include <unistd.h>
#include <fstream>
#include <sys/wait.h>
#include <gtest/gtest.h>
#include "tdyn/h5.hpp"
#include <functional>
#include <random>
#include <string>

namespace tdyn::test {

/// ||a - b|| / max(||a||, ||b||, tiny)
template <class A, class B>
double relative_error(const A& a, const B& b) {
    const double scale = std::max({a.norm(), b.norm(), 1e-300});
    return (a - b).norm() / scale;
}

inline double relative_error(double a, double b) {
    return std::abs(a - b) / std::max({std::abs(a), std::abs(b), 1e-300});
}

/// Central differences of a vector-valued f (R^n -> R^m) at x: column i is
/// (f(x + h e_i) - f(x - h e_i)) / 2h; truncation error O(h^2), rounding O(eps/h).
inline Matrix central_jacobian(const std::function<Vector(const Vector&)>& f, const Vector& x, double h = 1e-5) {
    Matrix J;
    Vector xp = x;
    for (Index i = 0; i < x.size(); ++i) {
        xp[i] = x[i] + h;
        const Vector fp = f(xp);
        xp[i] = x[i] - h;
        const Vector fm = f(xp);
        xp[i] = x[i];
        if (i == 0) J.resize(fp.size(), x.size());
        J.col(i) = (fp - fm) / (2 * h);
    }
    return J;
}

/// Central differences of a scalar f: the gradient.
inline Vector central_gradient(const std::function<double(const Vector&)>& f, const Vector& x, double h = 1e-5) {
    return central_jacobian([&](const Vector& y) { return Vector::Constant(1, f(y)); }, x, h).row(0).transpose();
}

/// A small random problem: X ~ U(-1, 1), T one-hot (softmax) or U(0, 1) targets, theta from
/// init_params scaled up so that the nonlinearities are well inside their curved range.
struct Problem {
    Architecture arch;
    RowMatrix X, T;
    Vector theta;
};

inline Problem random_problem(const Architecture& arch, Index k, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> u(-1, 1);
    Problem p{arch, RowMatrix(k, arch.inputs()), RowMatrix::Zero(k, arch.outputs()), Vector()};
    for (Index i = 0; i < p.X.size(); ++i) p.X.data()[i] = u(gen);
    for (Index i = 0; i < k; ++i) {
        if (arch.output == Output::SoftmaxCE) p.T(i, Index(gen() % arch.outputs())) = 1.0;
        else
            for (Index j = 0; j < arch.outputs(); ++j) p.T(i, j) = 0.5 + 0.5 * u(gen);
    }
    p.theta = 2.0 * init_params(arch, seed + 1);
    return p;
}

/// Every hidden activation and output pair, for tests that loop over them.
inline std::vector<Activation> all_activations() {
    return {Activation::Sigmoid, Activation::Tanh, Activation::Relu, Activation::Softplus, Activation::Identity};
}
inline std::vector<Output> all_outputs() { return {Output::SoftmaxCE, Output::SigmoidMSE, Output::IdentityMSE}; }

inline std::string mnist_dir() { return data_dir("") + "/mnist"; }
inline bool have_mnist() { return std::filesystem::exists(mnist_dir() + "/train-images-idx3-ubyte"); }
inline std::string reference_file() { return std::string(TDYN_SOURCE_DIR) + "/../shared/reference/mnist_k1000_seed7.h5"; }
inline bool have_reference() { return std::filesystem::exists(reference_file()); }

#define TDYN_REQUIRE_MNIST()                                                                                   \
    if (!::tdyn::test::have_mnist())                                                                           \
    GTEST_SKIP() << "MNIST not found under " << ::tdyn::test::mnist_dir() << " (run scripts/setup.sh)"
#define TDYN_REQUIRE_REFERENCE()                                                                               \
    if (!::tdyn::test::have_reference())                                                                       \
    GTEST_SKIP() << "reference file " << ::tdyn::test::reference_file() << " not present"

}  // namespace tdyn::test

namespace tdyn::test {

/// A fresh path in a temp dir of this test process (removed if it exists); ctest runs tests
/// in parallel processes, so a shared directory would let them overwrite each other's files.
inline std::string temp_path(const std::string& name) {
    const std::string dir = ::testing::TempDir() + "tdyn_tests_" + std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    const std::string p = dir + "/" + name;
    std::filesystem::remove_all(p);
    return p;
}

/// The result of running the tdyn program.
struct Command {
    int exit_code = -1;
    std::string out, err;
};

inline std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// Runs `tdyn ARGS` (ARGS are shell words) and captures its exit code, stdout and stderr.
inline Command run_tdyn(const std::string& args) {
    const std::string o = temp_path("cmd.out"), e = temp_path("cmd.err");
    const std::string cmd = std::string(TDYN_BINARY) + " " + args + " >" + o + " 2>" + e + " </dev/null";
    const int status = std::system(cmd.c_str());
    Command c;
    c.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    c.out = slurp(o);
    c.err = slurp(e);
    return c;
}

/// Writes a small random classification data file: /X [k x d] float64, /labels [k], where the
/// label depends on X (so training makes progress).
inline void write_data_file(const std::string& path, Index k, Index d, Index classes, std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    std::uniform_real_distribution<double> u(0, 1);
    RowMatrix X(k, d);
    std::vector<std::int64_t> labels(k);
    for (Index i = 0; i < k; ++i) {
        for (Index j = 0; j < d; ++j) X(i, j) = u(gen);
        Index label = 0;
        X.row(i).head(classes).maxCoeff(&label);  // the label is the largest of the first features
        labels[i] = label;
    }
    h5::File f = h5::File::create(path);
    f.write_matrix("/X", X);
    f.write_ints("/labels", labels);
}

/// Starts `tdyn ARGS...` as a child process and returns its pid (the caller kills or waits).
inline pid_t spawn_tdyn(const std::vector<std::string>& args) {
    const pid_t pid = fork();
    if (pid == 0) {
        std::vector<const char*> a = {TDYN_BINARY};
        for (const auto& s : args) a.push_back(s.c_str());
        a.push_back(nullptr);
        execv(TDYN_BINARY, const_cast<char* const*>(a.data()));
        _exit(127);
    }
    return pid;
}

/// Polls a run file that is being written (SWMR) until /trajectory holds at least `rows` rows
/// or about 20 s have passed; returns the rows last seen.
inline Index wait_for_rows(const std::string& run, Index rows) {
    Index seen = 0;
    for (int i = 0; i < 4000 && seen < rows; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        try {
            seen = RunReader(run).info().rows;
        } catch (const Error&) {  // not created yet
        }
    }
    return seen;
}

/// Expects the run file `b` (interrupted and resumed) to equal the uninterrupted run `a`: status
/// completed, theta at step `last`, and each named 1-d and 2-d series bit for bit (NaN == NaN).
/// (A run stopped by SIGINT/SIGTERM also stores theta at the step it stopped, so the stored
/// thetas are compared only where the caller names /trajectory/theta.)
inline void expect_same_run(const std::string& a, const std::string& b, Index last, std::initializer_list<const char*> series,
                            std::initializer_list<const char*> matrices = {}) {
    RunReader x(a), y(b);
    EXPECT_EQ(to_string(y.info().status), "completed");
    EXPECT_EQ(x.stored_theta(last), y.stored_theta(last));
    for (const char* s : series) EXPECT_EQ(x.file().read_vector(s), y.file().read_vector(s)) << s;
    for (const char* s : matrices) {
        const RowMatrix p = x.file().read_matrix(s), q = y.file().read_matrix(s);
        EXPECT_TRUE(p.rows() == q.rows() && p.cols() == q.cols() && (p.array() == q.array() || (p.array().isNaN() && q.array().isNaN())).all())
            << s;
    }
}

/// Sends `sig` to a child and waits for it; returns the wait status.
inline int signal_and_wait(pid_t pid, int sig) {
    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    return status;
}

}  // namespace tdyn::test
