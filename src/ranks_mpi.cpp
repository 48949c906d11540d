// The ranks of an MPI run (built only with -DTDYN_MPI=ON; src/ranks.cpp is the one-process twin).
//
// Every collective starts with one small MPI_Allreduce (MAX) of two ints: the lowest failing
// rank (negated) and the OR of the ranks' stop flags. A rank whose code threw calls fail(),
// which takes part in exactly that exchange, so the others learn of it at whatever collective
// they are in next, and no rank waits forever for a rank that left the program's path.
#include "tdyn/h5.hpp"
#include "tdyn/ranks.hpp"

#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mpi.h>
#include <string>
#include <vector>

namespace tdyn::ranks {

namespace {

int g_rank = 0, g_size = 1;
// TDYN_MPI_TIMING: seconds inside MpiComm::sum (waiting for the slowest rank, then moving and
// adding the blocks), the number of sums and the doubles summed; rank 0 prints them at the end.
double g_sum_seconds = 0, g_sum_doubles = 0, g_sums = 0;
const std::atomic<bool>* g_local_stop = nullptr;
std::atomic<bool> g_agreed_stop{false};

/// The exchange at the start of every collective: returns the lowest failing rank (g_size if
/// none) and records the agreed stop flag.
int exchange(bool failed) {
    int v[2] = {failed ? -g_rank : -g_size, g_local_stop && g_local_stop->load() ? 1 : 0};
    MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (v[1]) g_agreed_stop.store(true);
    return -v[0];
}

/// The failing rank's report, sent from `from` to every rank.
Outcome receive(int from, Outcome mine) {
    long long head[2] = {mine.code, (long long)mine.line.size()};
    MPI_Bcast(head, 2, MPI_LONG_LONG, from, MPI_COMM_WORLD);
    mine.code = int(head[0]);
    mine.line.resize(std::size_t(head[1]));
    MPI_Bcast(mine.line.data(), int(head[1]), MPI_CHAR, from, MPI_COMM_WORLD);
    return mine;
}

/// Every collective begins here: throws Failed when another rank has failed.
void check() {
    const int f = exchange(false);
    if (f < g_size) {
        const Outcome o = receive(f, {});
        throw Failed(o.line, o.code);
    }
}

/// data[0:n) <- sum over ranks, in rank order, as an ordered reduce-scatter and an allgather:
/// rank j receives block j of every rank (MPI only moves bytes), adds the blocks in the order
/// rank 0, 1, ..., and sends its sum to all. MPI_Allreduce may add in any order and grouping,
/// which differ with message size and rank count (docs/MPI.md); this order is fixed.
class MpiComm final : public SampleComm {
public:
    void sum(double* data, Index n) const override {
        const double t0 = MPI_Wtime();
        sum_in_rank_order(data, n);
        g_sum_seconds += MPI_Wtime() - t0;
        g_sum_doubles += double(n);
        g_sums += 1;
    }
    void sum_in_rank_order(double* data, Index n) const {
        check();
        if (g_size == 1 || n == 0) return;
        const int N = g_size;
        auto begin = [&](int j) { return int(shard_begin(n, j, N)); };
        m_counts.resize(N);
        m_displs.resize(N);
        for (int j = 0; j < N; ++j) {
            m_displs[j] = begin(j);
            m_counts[j] = begin(j + 1) - begin(j);
        }
        const int mine = m_counts[g_rank];
        m_recv_counts.assign(N, mine);
        m_recv_displs.resize(N);
        for (int i = 0; i < N; ++i) m_recv_displs[i] = i * mine;
        m_blocks.resize(std::size_t(N) * std::size_t(mine));
        MPI_Alltoallv(data, m_counts.data(), m_displs.data(), MPI_DOUBLE, m_blocks.data(), m_recv_counts.data(),
                      m_recv_displs.data(), MPI_DOUBLE, MPI_COMM_WORLD);
        // block sum = ((x_0 + x_1) + x_2) + ...: the order of the ranks
        m_sum.assign(m_blocks.begin(), m_blocks.begin() + mine);
        for (int i = 1; i < N; ++i) {
            const double* x = m_blocks.data() + std::size_t(i) * mine;
            for (int e = 0; e < mine; ++e) m_sum[e] += x[e];
        }
        MPI_Allgatherv(m_sum.data(), mine, MPI_DOUBLE, data, m_counts.data(), m_displs.data(), MPI_DOUBLE,
                       MPI_COMM_WORLD);
    }
    Index max(Index local) const override {
        check();
        long long v = local;
        MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
        return Index(v);
    }
    int rank() const override { return g_rank; }
    int size() const override { return g_size; }

private:
    // Scratch kept between sums (one product's P x M block is the largest).
    mutable std::vector<int> m_counts, m_displs, m_recv_counts, m_recv_displs;
    mutable std::vector<double> m_blocks, m_sum;
};

const MpiComm& mpi_comm() {
    static const MpiComm comm;
    return comm;
}

}  // namespace

void init(int* argc, char*** argv) {
    int provided = 0;
    // OpenMP threads compute; MPI is called from the main thread only.
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_rank != 0) {
        // Rank 0 prints for all (a failing rank's message travels to it) and writes every file.
        if (!std::freopen("/dev/null", "w", stdout) || !std::freopen("/dev/null", "w", stderr))
            MPI_Abort(MPI_COMM_WORLD, 1);
        h5::set_memory_only(true);
    }
}

int rank() { return g_rank; }
int size() { return g_size; }
const SampleComm& comm() { return mpi_comm(); }

void broadcast(std::string& bytes) {
    check();
    long long n = (long long)bytes.size();
    MPI_Bcast(&n, 1, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
    bytes.resize(std::size_t(n));
    for (long long at = 0; at < n; at += INT_MAX)
        MPI_Bcast(bytes.data() + at, int(std::min<long long>(INT_MAX, n - at)), MPI_CHAR, 0, MPI_COMM_WORLD);
}

void check_same(const Vector& x, const std::string& what) {
    check();
    // FNV-1a over the bytes: equal bits give equal hashes; MIN == MAX over the ranks then
    std::uint64_t h = 1469598103934665603ULL;
    const auto* b = reinterpret_cast<const unsigned char*>(x.data());
    for (std::size_t i = 0; i < std::size_t(x.size()) * sizeof(double); ++i) h = (h ^ b[i]) * 1099511628211ULL;
    unsigned long long lo = h, hi = h;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (lo != hi) throw Error("TDYN_MPI_CHECK: " + what + " differs between the ranks");
}

const std::atomic<bool>* agreed_stop(const std::atomic<bool>* local) {
    if (g_size == 1) return local;  // nothing to agree on
    g_local_stop = local;
    return &g_agreed_stop;
}

Outcome fail(const std::string& line, int code) {
    if (g_size == 1) return {line, code};
    const int f = exchange(true);
    return receive(f, {line, code});
}

void done() { check(); }

void finalize() {
    const char* env = std::getenv("TDYN_MPI_TIMING");
    if (env && *env && std::string(env) != "0") {
        // Only from a finished program: every rank calls finalize, on every path.
        double t[2] = {g_sum_seconds, -g_sum_seconds};
        MPI_Reduce(g_rank == 0 ? MPI_IN_PLACE : t, t, 2, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
        if (g_rank == 0)
            std::fprintf(
                stderr,
                "tdyn: mpi timing: %.0f sums of %.3g doubles in all; time in the sums per rank: max %.3f s, min %.3f s\n",
                g_sums, g_sum_doubles, t[0], -t[1]);
    }
    MPI_Finalize();
}

}  // namespace tdyn::ranks
