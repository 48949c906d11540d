// The processes of one tdyn run. The default build has one. Built with -DTDYN_MPI=ON,
// `mpirun -np N tdyn ...` starts N ranks that each hold a contiguous block of the samples and
// the same theta, vectors and solvers; the sums over samples end in comm()'s ordered sum
// (docs/MPI.md). Rank 0 alone prints and writes files; every collective also carries the
// ranks' failure and stop flags, so an error on one rank, or a signal, reaches all of them at
// the same point of the program.
#pragma once

#include "tdyn/comm.hpp"

#include <atomic>
#include <string>

namespace tdyn::ranks {

/// Starts MPI when built with it (nothing otherwise); call first in main. Ranks other than 0
/// send stdout and stderr to /dev/null and keep their files in memory (h5::set_memory_only).
void init(int* argc, char*** argv);
int rank();
int size();
inline bool root() { return rank() == 0; }

/// The sum over samples of all ranks, rank 0 + rank 1 + ... in that order, the same bits on
/// every rank (local_comm() in one process). Collective.
const SampleComm& comm();
/// bytes <- rank 0's bytes, on every rank. Collective.
void broadcast(std::string& bytes);

/// Throws Error naming `what` unless every rank holds the same bits of x (a 64-bit hash of
/// them, compared by MIN and MAX). Collective; the TDYN_MPI_CHECK guard (docs/MPI.md).
void check_same(const Vector& x, const std::string& what);

/// The stop flag all ranks agree on: the OR of the ranks' `local` flags (set by their signal
/// handlers), exchanged at every collective, so it turns true at the same point on every rank.
/// One process: `local` itself.
const std::atomic<bool>* agreed_stop(const std::atomic<bool>* local);

/// Another rank failed; thrown from a collective on the ranks that did not, with the line the
/// failing rank reported and its exit code.
class Failed : public Error {
public:
    Failed(const std::string& line, int code) : Error(line), m_code(code) {}
    int code() const { return m_code; }

private:
    int m_code;
};

/// What the program reports after a failure: one line (rank 0 prints it) and the exit code.
struct Outcome {
    std::string line;
    int code = 1;
};
/// After an exception on this rank: the other ranks learn it at their next collective. Returns
/// the report of the lowest failing rank, the same on every rank. One process: (line, code).
Outcome fail(const std::string& line, int code);
/// The last collective of a program that succeeded here: a rank that failed after the others'
/// last sum is still heard (throws Failed).
void done();
/// Ends MPI (nothing without it).
void finalize();

}  // namespace tdyn::ranks
