// Data sets: IDX files (MNIST, Fashion-MNIST) and HDF5 data files, as X (k x d, samples
// are rows, pixels / 255) and one-hot targets T (k x c).
#pragma once

#include "tdyn/comm.hpp"
#include "tdyn/common.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace tdyn {

/// The samples this process holds: all of them, or (MPI, ranks.hpp) rank r's contiguous block
/// [first_row, first_row + samples()) of the data set's total_rows.
struct Dataset {
    std::string name;                  ///< "mnist", "fashion-mnist" or the file path
    RowMatrix X;                       ///< k x d (the rows held here)
    RowMatrix T;                       ///< k x c targets (one-hot for labelled data)
    Index first_row = 0;               ///< global index of row 0
    Index total_rows = -1;             ///< rows of all ranks (-1: samples(), this process holds all)
    const SampleComm* comm = nullptr;  ///< how sums over the rows of all ranks combine (nullptr: local_comm())
    Index samples() const { return X.rows(); }
    Index global_samples() const { return total_rows < 0 ? samples() : total_rows; }
};

/// An IDX file: big-endian header (0x00 0x00 type ndims, then ndims uint32 sizes), unsigned
/// bytes only (type 0x08). Magic, dimensions and the file size are checked before any
/// allocation, so a corrupt header cannot ask for terabytes.
struct IdxArray {
    std::vector<std::uint32_t> dims;
    std::vector<std::uint8_t> data;  ///< rows [first, first + data.size() / row size) of the file's dims[0]
    std::size_t first = 0;
};
IdxArray read_idx(const std::string& path);
/// Only rows [first, first + count) of the first axis (a rank's block); the header and the
/// file size get the same checks as read_idx.
IdxArray read_idx_rows(const std::string& path, std::size_t first, std::size_t count);
/// The same checks on bytes already in memory (`what` names them in errors); the fuzz target uses it.
IdxArray parse_idx(const std::uint8_t* bytes, std::size_t size, const std::string& what);

/// Images (idx3, k x rows x cols) and labels (idx1, k) to a Dataset with x = pixel / 255 and
/// one-hot targets over `classes` classes. samples = 0 takes all, else the first `samples`.
/// Arrays that hold a block of rows (read_idx_rows) give that block of the first `samples`.
Dataset dataset_from_idx(const IdxArray& images, const IdxArray& labels, const std::string& images_path,
                         const std::string& labels_path, Index samples, Index classes = 10);

/// A data file (HDF5): /X [k x d] (uint8 is divided by 255; float32/float64 taken as is) and
/// /T [k x c] or /labels [k] (integers 0..c-1, one-hot over `classes`, or over max+1 when 0).
/// With comm (MPI), this rank reads only its block of rows (HDF5 hyperslabs) and the class
/// count is the largest label of all ranks (collective).
Dataset read_data_file(const std::string& path, Index samples, Index classes = 0,
                       const SampleComm& comm = local_comm());

/// Where the named data sets live: `flag` (--data-dir) if given, else $TDYN_DATA, else
/// data/ under the project root.
std::string data_dir(const std::string& flag);

/// `spec` is mnist, fashion-mnist (training split; test split with `test`), or a path to an
/// HDF5 data file. Errors name the file and say how to get it.
/// comm: the rank reads its block [K r/N, K (r+1)/N) of the K samples (shard_begin) and the
/// Dataset remembers comm for the sums over them.
Dataset load_dataset(const std::string& spec, const std::string& dir, Index samples, Index classes = 10,
                     bool test = false, const SampleComm& comm = local_comm());

}  // namespace tdyn
