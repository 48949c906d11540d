// The sample-sum seam: every sum over samples in the Evaluation (loss, correct count, gradient,
// the H V and G V blocks) ends in ONE call of SampleComm::sum, and every mean divides by the
// global sample count. One process uses LocalComm, whose sum does nothing. A data-parallel
// implementation (ranks hold contiguous row blocks of X and T; theta, V and every result are
// replicated) implements sum as an ORDERED reduction, rank 0 + rank 1 + ... in that order, so
// that every rank gets identical bits (docs/MATH.md "Sums over samples"); the numerics do not
// change.
#pragma once

#include "tdyn/common.hpp"

namespace tdyn {

class SampleComm {
public:
    virtual ~SampleComm() = default;
    /// data[0:n) <- sum over ranks of data[0:n), in place. Collective: every rank calls it with
    /// the same n, and every rank receives the same bits.
    virtual void sum(double* data, Index n) const = 0;
    /// The global sample count when this rank holds `local` rows. Collective. The default sums
    /// the counts with sum() (exact below 2^53).
    virtual Index global_rows(Index local) const;
    /// The largest of the ranks' values (a data file's class count). Collective. The default is
    /// one rank's answer; a comm of several ranks whose data may need it overrides it.
    virtual Index max(Index local) const { return local; }
    /// This process among the ranks that share the samples: rows [K r/N, K (r+1)/N) are rank r's.
    virtual int rank() const { return 0; }
    virtual int size() const { return 1; }
};

/// One process holds every sample: sums are already global.
class LocalComm final : public SampleComm {
public:
    void sum(double*, Index) const override {}
    Index global_rows(Index local) const override { return local; }
};

/// First global row of rank r's block when K rows are split over N ranks: K r / N (the same
/// formula as the row chunks), so block sizes differ by at most one and a rank may hold none.
inline Index shard_begin(Index K, int r, int N) { return K * r / N; }

/// The process-wide LocalComm, the Evaluation's default.
const SampleComm& local_comm();

}  // namespace tdyn
