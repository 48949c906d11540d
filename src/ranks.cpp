// One process: the build without MPI (src/ranks_mpi.cpp replaces this file with -DTDYN_MPI=ON).
#ifndef TDYN_MPI
#include "tdyn/ranks.hpp"

namespace tdyn::ranks {

void init(int*, char***) {}
int rank() { return 0; }
int size() { return 1; }
const SampleComm& comm() { return local_comm(); }
void broadcast(std::string&) {}
void check_same(const Vector&, const std::string&) {}
const std::atomic<bool>* agreed_stop(const std::atomic<bool>* local) { return local; }
Outcome fail(const std::string& line, int code) { return {line, code}; }
void done() {}
void finalize() {}

}  // namespace tdyn::ranks
#endif
