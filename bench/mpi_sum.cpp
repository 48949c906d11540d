// The share of the ordered sums in a data-parallel training step (issue 15, docs/SCALING.md),
// measured in one program so that a loaded machine cannot fake it: every rank times
//   compute  its own shard's step work alone: reset(theta) + gradient + H V for M vectors
//            (an Evaluation over a one-process comm, so no sum is combined inside it);
//   sum      one MpiComm sum of P (M + 1) doubles, the gradient and the H V block of a step;
//   latency  one MpiComm sum of 2 doubles (loss and correct count travel like this);
// each after an MPI_Barrier, so the sums time moving and adding the blocks, not waiting for a
// slower rank. Rank 0 prints the medians of every rank and the share
//   sum + 2 latency / (compute + sum + 2 latency).
// Built with -DTDYN_MPI=ON only (scripts/build.sh --mpi):
//
//   OMP_NUM_THREADS=1 mpirun -np 2 -x OMP_NUM_THREADS build-mpi/mpi_sum_bench [--k 60000] [--vectors 8] [--reps 15]
#include "tdyn/data.hpp"
#include "tdyn/evaluation.hpp"
#include "tdyn/network.hpp"
#include "tdyn/ranks.hpp"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using namespace tdyn;

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

/// Median over reps of body()'s wall time, each call started together on all ranks.
template <class F>
double timed(int reps, F&& body) {
    std::vector<double> t;
    for (int r = 0; r < reps; ++r) {
        MPI_Barrier(MPI_COMM_WORLD);
        const auto t0 = std::chrono::steady_clock::now();
        body();
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return median(t);
}

}  // namespace

int main(int argc, char** argv) {
    ranks::init(&argc, &argv);
    Index k = 60000, M = 8;
    int reps = 15;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--k") k = std::atol(argv[i + 1]);
        else if (a == "--vectors") M = std::atol(argv[i + 1]);
        else if (a == "--reps") reps = std::atoi(argv[i + 1]);
        else {
            if (ranks::root()) std::fprintf(stderr, "mpi_sum_bench: unknown flag %s\n", a.c_str());
            ranks::finalize();
            return 2;
        }
    }
    try {
        const SampleComm& comm = ranks::comm();
        const Dataset ds = load_dataset("mnist", data_dir(""), k, 10, false, comm);  // this rank's rows
        const Architecture arch = Architecture::parse("784-50-10");
        const InputMatrix X(ds.X, XPath::Auto, Precision::F64, 0.3, &comm);
        const Vector theta = init_params(arch, 1);
        const Index P = theta.size();
        Evaluation e(arch, X, ds.T, theta);  // local comm: this rank's compute alone
        const Matrix V = Matrix::Random(P, M);
        Matrix HV(P, M);
        std::vector<double> block(std::size_t(P * (M + 1)), 1.0), pair(2, 1.0);
        const double compute = timed(reps, [&] {
            e.reset(theta);
            e.gradient();
            e.hessian_times(V, HV);
        });
        const double sum = timed(reps, [&] { comm.sum(block.data(), Index(block.size())); });
        const double latency = timed(reps, [&] { comm.sum(pair.data(), 2); });
        const double mine[4] = {double(ds.samples()), compute, sum, latency};
        std::vector<double> all(4 * std::size_t(ranks::size()));
        MPI_Gather(mine, 4, MPI_DOUBLE, all.data(), 4, MPI_DOUBLE, 0, MPI_COMM_WORLD);
        if (ranks::root()) {
            std::printf("np %d, k %ld, 784-50-10, M %ld, P (M + 1) = %ld doubles, medians of %d\n", ranks::size(),
                        long(k), long(M), long(P * (M + 1)), reps);
            std::printf("rank  rows   compute_ms  sum_ms  latency_ms  share\n");
            for (int r = 0; r < ranks::size(); ++r) {
                const double* a = &all[4 * std::size_t(r)];
                const double comms = a[2] + 2 * a[3];
                std::printf("%4d %6.0f %11.2f %7.3f %11.4f  %.4f\n", r, a[0], 1e3 * a[1], 1e3 * a[2], 1e3 * a[3],
                            comms / (a[1] + comms));
            }
        }
        ranks::done();
    } catch (const std::exception& ex) {
        const ranks::Outcome o = ranks::fail(std::string("mpi_sum_bench: ") + ex.what(), 1);
        if (ranks::root()) std::fprintf(stderr, "%s\n", o.line.c_str());
        ranks::finalize();
        return o.code;
    }
    ranks::finalize();
    return 0;
}
