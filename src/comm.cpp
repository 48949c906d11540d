#include "tdyn/comm.hpp"

namespace tdyn {

Index SampleComm::global_rows(Index local) const {
    // sum over ranks of the local counts, in a double: exact for counts below 2^53
    double n = double(local);
    sum(&n, 1);
    return Index(n);
}

const SampleComm& local_comm() {
    static const LocalComm comm;
    return comm;
}

}  // namespace tdyn
