// Shared pieces of the tdyn benchmark programs: the data, the X-product yardstick and
// robust wall-clock timing.
//
// Yardstick ("X-product unit"): one dense float64 product X W with X the k x 784 row-major
// MNIST matrix and W a 784 x 50 row-major matrix, written as `out.noalias() = X * W`. It is
// measured once per k at program start (median of 7 after warm-up) in the same process as
// the operation it divides, so a ratio survives a noisy or different machine.
//
// Times are wall clock (OpenMP threads do the work; the main thread's CPU time would
// under-count). The counters use the median over the iterations of one run, the "Time"
// column of Google Benchmark is the mean.
#pragma once

#include "tdyn/common.hpp"
#include "tdyn/data.hpp"
#include "tdyn/network.hpp"

#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tdyn::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

inline double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The seed network, 784-50-10.
inline const Architecture& arch() {
    static const Architecture a = Architecture::parse("784-50-10");
    return a;
}

/// The first k MNIST training images (pixel / 255) and one-hot labels, loaded once per k.
inline const Dataset& mnist(Index k) {
    static std::map<Index, std::unique_ptr<Dataset>> cache;
    auto& slot = cache[k];
    if (!slot) slot = std::make_unique<Dataset>(load_dataset("mnist", data_dir(""), k));
    return *slot;
}

/// X of mnist(k) as a dense float64 matrix (the data set holds the pixels), built once per k.
inline const RowMatrix& mnist_x(Index k) {
    static std::map<Index, std::unique_ptr<RowMatrix>> cache;
    auto& slot = cache[k];
    if (!slot) slot = std::make_unique<RowMatrix>(mnist(k).X.dense());
    return *slot;
}

/// Seconds of one yardstick product X W (k x 784 times 784 x 50, float64, dense, noalias):
/// 2 warm-up products, then the median of 7.
inline double measure_x_unit(Index k) {
    const RowMatrix& X = mnist_x(k);
    const RowMatrix W = RowMatrix::Random(X.cols(), 50) * 0.05;
    RowMatrix out(X.rows(), W.cols());
    for (int i = 0; i < 2; ++i) out.noalias() = X * W;
    std::vector<double> t;
    for (int i = 0; i < 7; ++i) {
        const auto t0 = Clock::now();
        out.noalias() = X * W;
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        t.push_back(seconds_since(t0));
    }
    return median(t);
}

/// The yardstick of each k, measured by measure_x_units() at program start.
inline std::map<Index, double>& x_units() {
    static std::map<Index, double> m;
    return m;
}

inline double x_unit(Index k) {
    auto it = x_units().find(k);
    if (it == x_units().end()) it = x_units().emplace(k, measure_x_unit(k)).first;
    return it->second;
}

/// Program options of the tdyn bench programs, taken out of argv before Google Benchmark
/// sees it:  --k=1000,10000,60000  --seconds=1.5 (target wall time of one benchmark run).
struct Options {
    std::vector<Index> ks{1000, 10000, 60000};
    double seconds = 1.5;
};

inline Options parse_options(int& argc, char** argv) {
    Options o;
    int w = 1;
    for (int r = 1; r < argc; ++r) {
        const std::string a = argv[r];
        if (a.rfind("--k=", 0) == 0) {
            o.ks.clear();
            std::stringstream ss(a.substr(4));
            std::string item;
            while (std::getline(ss, item, ','))
                if (!item.empty()) o.ks.push_back(std::stol(item));
        } else if (a.rfind("--seconds=", 0) == 0) {
            o.seconds = std::stod(a.substr(10));
        } else {
            argv[w++] = argv[r];
        }
    }
    argc = w;
    argv[argc] = nullptr;
    return o;
}

/// Measures the yardstick of every k and records the machine in the benchmark context.
inline void measure_x_units(const Options& o) {
#ifdef _OPENMP
    benchmark::AddCustomContext("omp_max_threads", std::to_string(omp_get_max_threads()));
#endif
    benchmark::AddCustomContext("eigen_threads", std::to_string(Eigen::nbThreads()));
    for (Index k : o.ks) {
        const double s = x_unit(k);
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.4f", s * 1e3);
        benchmark::AddCustomContext("x_unit_ms_k" + std::to_string(k), buf);
        std::fprintf(stderr, "yardstick: k = %ld, X(k x 784) W(784 x 50) f64 dense = %.3f ms (median of 7)\n", long(k),
                     s * 1e3);
    }
}

/// Iterations so that one run takes about `seconds`, from an estimate of one call.
inline benchmark::IterationCount iterations_for(double est_seconds, double seconds, int lo = 2, int hi = 2000) {
    const double n = seconds / std::max(est_seconds, 1e-6);
    return std::clamp<benchmark::IterationCount>(benchmark::IterationCount(n), lo, hi);
}

/// Per-iteration wall times of one run; set the median-based counters from it.
struct Timer {
    std::vector<double> t;
    Clock::time_point t0;
    void start() { t0 = Clock::now(); }
    void stop() { t.push_back(seconds_since(t0)); }
    double median() const { return bench::median(t); }
};

/// The yardstick re-timed next to every iteration of a benchmark (untimed for the operation):
/// on a shared machine whose load changes within a run, the median of the per-iteration
/// ratios (operation time / adjacent yardstick time) is steadier than a ratio to the
/// yardstick measured once at program start. Counter `x_units_adj` (per call) uses it.
struct AdjacentYardstick {
    const RowMatrix& X;
    RowMatrix W, out;
    std::vector<double> ratio;
    explicit AdjacentYardstick(Index k) : X(mnist_x(k)), W(RowMatrix::Random(X.cols(), 50) * 0.05), out(X.rows(), 50) {
        out.noalias() = X * W;  // warm-up
    }
    /// Times one yardstick product and records t_op / t_yardstick.
    void record(double t_op) {
        const auto t0 = Clock::now();
        out.noalias() = X * W;
        benchmark::DoNotOptimize(out.data());
        benchmark::ClobberMemory();
        ratio.push_back(t_op / seconds_since(t0));
    }
    double median_ratio() const { return bench::median(ratio); }
};

/// The timed loop of a benchmark: op() once per iteration into tm, and after each (untimed) the
/// adjacent yardstick. op does its own DoNotOptimize / ClobberMemory.
template <class Op>
void time_with_yardstick(benchmark::State& state, Timer& tm, AdjacentYardstick& adj, Op&& op) {
    for (auto _ : state) {
        tm.start();
        op();
        tm.stop();
        state.PauseTiming();
        adj.record(tm.t.back());
        state.ResumeTiming();
    }
}

}  // namespace tdyn::bench
