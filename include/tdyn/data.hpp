// Data sets: IDX files (MNIST, Fashion-MNIST) and HDF5 data files, as X (k x d, samples
// are rows, pixels / 255) and one-hot targets T (k x c).
#pragma once

#include "tdyn/comm.hpp"
#include "tdyn/common.hpp"

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace tdyn {

/// X (k x d, samples are rows, row-major) as its source holds it: pixels (uint8, one byte per
/// entry, x = pixel / 255: IDX files and uint8 HDF5 /X) or float64 values (float HDF5 /X, arrays
/// given from Python). The products with X need no dense float64 copy of pixel data: InputMatrix
/// builds what its path uses (its non-zeros, a float32 matrix, or, for the dense float64 path alone, the
/// k x d float64 matrix) straight from the bytes, with the same values as pixel / 255.
class InputData {
public:
    InputData() = default;
    /// float64 values, taken as they are.
    InputData(RowMatrix values);  // NOLINT: a RowMatrix is a valid X
    /// pixels: rows x cols bytes, row-major; x_ij = pixels[i cols + j] / 255.
    InputData(std::vector<std::uint8_t> pixels, Index rows, Index cols);

    Index rows() const { return m_rows; }
    Index cols() const { return m_cols; }
    Index size() const { return m_rows * m_cols; }
    bool has_pixels() const { return m_has_pixels; }
    /// The bytes (rows x cols, row-major) of pixel data; empty for float data.
    const std::vector<std::uint8_t>& pixels() const { return m_pixels; }
    /// The float64 values of float data; empty (0 x 0) for pixel data.
    const RowMatrix& values() const { return m_values; }
    /// x_ij (pixel / 255 or the value).
    double operator()(Index i, Index j) const {
        return m_has_pixels ? pixel_value(m_pixels[std::size_t(i * m_cols + j)]) : m_values(i, j);
    }
    /// Row i of X into out[0, cols).
    void copy_row(Index i, double* out) const;
    /// X as a dense k x d float64 matrix (a copy: k d 8 bytes).
    RowMatrix dense() const;
    /// Entries != 0.
    Index nonzeros() const;
    /// pixel / 255 in float64, exactly as double(pixel) / 255.0 (a table of the 256 values).
    static double pixel_value(std::uint8_t p) { return kPixelValue[p]; }

private:
    static const std::array<double, 256> kPixelValue;
    Index m_rows = 0, m_cols = 0;
    bool m_has_pixels = false;
    std::vector<std::uint8_t> m_pixels;
    RowMatrix m_values;
};

/// The samples this process holds: all of them, or (MPI, ranks.hpp) rank r's contiguous block
/// [first_row, first_row + samples()) of the data set's total_rows.
struct Dataset {
    std::string name;                  ///< "mnist", "fashion-mnist" or the file path
    InputData X;                       ///< k x d (the rows held here): pixels or float64 values
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

/// Images (idx3, k x rows x cols) and labels (idx1, k) to a Dataset with x = pixel / 255 (held as
/// the pixels) and one-hot targets over `classes` classes. samples = 0 takes all, else the first
/// `samples`. Arrays that hold a block of rows (read_idx_rows) give that block of the first
/// `samples`. Pass the images as a temporary (std::move) and their bytes become X without a copy.
Dataset dataset_from_idx(IdxArray images, const IdxArray& labels, const std::string& images_path,
                         const std::string& labels_path, Index samples, Index classes = 10);

/// A data file (HDF5): /X [k x d] (uint8 held as pixels, x = pixel / 255; float32/float64 taken as is) and
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
