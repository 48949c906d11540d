#include "tdyn/data.hpp"

#include "tdyn/h5.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace tdyn {

namespace {

std::uint32_t big_endian_u32(const std::uint8_t* p) {
    return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}

std::string shape_text(const std::vector<std::uint32_t>& dims) {
    std::string s;
    for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
    return s;
}

}  // namespace

namespace {

/// The checks of an IDX header against the file's size; `bytes` holds the first
/// min(size, 16) bytes. Returns the dims and sets `header` to the header's length.
std::vector<std::uint32_t> idx_dims(const std::uint8_t* bytes, std::size_t size, const std::string& what,
                                    std::size_t& header) {
    if (size < 4) throw Error(what + ": not an IDX file: " + std::to_string(size) + " bytes, too short for a header");
    if (bytes[0] != 0 || bytes[1] != 0)
        throw Error(what + ": not an IDX file: magic number must start with two zero bytes");
    if (bytes[2] != 0x08)
        throw Error(what + ": unsupported IDX element type 0x" + [&] {
            const char* hex = "0123456789abcdef";
            return std::string{hex[bytes[2] >> 4], hex[bytes[2] & 15]};
        }() + " (only unsigned bytes, 0x08, are supported)");
    const std::size_t ndims = bytes[3];
    if (ndims < 1 || ndims > 3)
        throw Error(what + ": IDX header says " + std::to_string(ndims) +
                    " dimensions; expected 1 (labels) or 3 (images)");
    header = 4 + 4 * ndims;
    if (size < header) throw Error(what + ": truncated: file ends inside the IDX header");
    std::vector<std::uint32_t> dims;
    std::size_t count = 1;
    for (std::size_t i = 0; i < ndims; ++i) {
        dims.push_back(big_endian_u32(bytes + 4 + 4 * i));
        // The file size bounds the count, so check before multiplying further: no overflow, no huge allocation.
        count *= dims.back();
        if (count > size) break;
    }
    const std::size_t have = size - header;
    if (count != have) {
        std::string shape = shape_text(dims);
        if (count > have)
            throw Error(what + ": truncated: header says " + shape + " bytes of data, file holds " +
                        std::to_string(have));
        throw Error(what + ": " + std::to_string(have - count) + " bytes of trailing data after the " + shape +
                    " array the header describes");
    }
    return dims;
}

}  // namespace

IdxArray parse_idx(const std::uint8_t* bytes, std::size_t size, const std::string& what) {
    IdxArray a;
    std::size_t header = 0;
    a.dims = idx_dims(bytes, size, what, header);
    a.data.assign(bytes + header, bytes + size);
    return a;
}

namespace {

/// An IDX file opened for reading, and its size; one-line errors naming the file.
std::ifstream open_idx(const std::string& path, std::uintmax_t& size) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) throw Error(path + ": no such file");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open for reading");
    size = std::filesystem::file_size(path, ec);
    if (ec) throw Error(path + ": cannot read its size");
    return in;
}

}  // namespace

namespace {

/// Rows [first, first + count) of an IDX file (count kAllRows: through the last row): the
/// header's checks against the file size (idx_dims), then those rows straight into the array.
constexpr std::size_t kAllRows = std::size_t(-1);
IdxArray read_idx_block(const std::string& path, std::size_t first, std::size_t count) {
    std::uintmax_t size = 0;
    std::ifstream in = open_idx(path, size);
    std::uint8_t head[16] = {};
    in.read(reinterpret_cast<char*>(head), std::streamsize(std::min<std::uintmax_t>(size, 16)));
    IdxArray a;
    std::size_t header = 0;
    a.dims = idx_dims(head, size, path, header);
    std::size_t row = 1;
    for (std::size_t i = 1; i < a.dims.size(); ++i) row *= a.dims[i];
    if (count == kAllRows) count = a.dims[0] - std::min<std::size_t>(first, a.dims[0]);
    if (first + count > a.dims[0])
        throw Error(path + ": rows " + std::to_string(first) + ".." + std::to_string(first + count) +
                    " requested, the file holds " + std::to_string(a.dims[0]));
    a.first = first;
    a.data = huge_vector<std::uint8_t>(count * row);
    in.seekg(std::streamoff(header + first * row));
    in.read(reinterpret_cast<char*>(a.data.data()), std::streamsize(a.data.size()));
    if (!in) throw Error(path + ": read error");
    return a;
}

}  // namespace

IdxArray read_idx_rows(const std::string& path, std::size_t first, std::size_t count) {
    return read_idx_block(path, first, count);
}

IdxArray read_idx(const std::string& path) { return read_idx_block(path, 0, kAllRows); }

namespace {

Index take(Index available, Index samples, const std::string& what) {
    if (samples < 0) throw Error("samples " + std::to_string(samples) + ": must be 0 (all) or positive");
    if (samples > available)
        throw Error("samples " + std::to_string(samples) + ": " + what + " holds only " + std::to_string(available) +
                    " samples");
    return samples == 0 ? available : samples;
}

/// Row `row` of T one-hot at `label`; `sample` (the global index) names it in errors.
void one_hot(RowMatrix& T, Index row, Index sample, std::int64_t label, Index classes, const std::string& what) {
    if (label < 0 || label >= classes)
        throw Error(what + ": label " + std::to_string(label) + " of sample " + std::to_string(sample) +
                    " is outside 0.." + std::to_string(classes - 1));
    T(row, label) = 1.0;
}

}  // namespace

Dataset dataset_from_idx(IdxArray images, const IdxArray& labels, const std::string& images_path,
                         const std::string& labels_path, Index samples, Index classes) {
    if (images.dims.size() != 3)
        throw Error(images_path + ": expected an idx3 image file (k x rows x cols), found " +
                    std::to_string(images.dims.size()) + " dimensions");
    if (labels.dims.size() != 1)
        throw Error(labels_path + ": expected an idx1 label file, found " + std::to_string(labels.dims.size()) +
                    " dimensions");
    if (images.dims[0] != labels.dims[0])
        throw Error(labels_path + ": holds " + std::to_string(labels.dims[0]) + " labels but " + images_path +
                    " holds " + std::to_string(images.dims[0]) + " images");
    const Index k = take(images.dims[0], samples, images_path);
    // With zero images no size check bounds rows x cols; an empty data set is no data set.
    if (k == 0) throw Error(images_path + ": holds no images");
    if (images.dims[1] == 0 || images.dims[2] == 0 || images.dims[1] * std::uint64_t(images.dims[2]) > (1u << 24))
        throw Error(images_path + ": images of " + std::to_string(images.dims[1]) + " x " +
                    std::to_string(images.dims[2]) + " pixels: expected between 1 and 2^24 pixels each");
    const Index d = Index(images.dims[1]) * Index(images.dims[2]);
    // The rows held (all, or a rank's block) that fall among the first k.
    const Index first = Index(images.first);
    const Index n = std::clamp<Index>(std::min(Index(images.data.size()) / d, Index(labels.data.size())), 0,
                                      std::max<Index>(k - first, 0));
    if (Index(labels.first) != first) throw Error(labels_path + ": holds other rows than " + images_path);
    Dataset ds;
    ds.first_row = first;
    ds.total_rows = k;
    // X = pixel / 255, held as the pixels: the first n rows of the bytes, moved, not copied.
    images.data.resize(std::size_t(n * d));
    ds.X = InputData(std::move(images.data), n, d);
    resize_huge(ds.T, n, classes);
    ds.T.setZero();
    for (Index i = 0; i < n; ++i) one_hot(ds.T, i, first + i, labels.data[i], classes, labels_path);
    return ds;
}

Dataset read_data_file(const std::string& path, Index samples, Index classes, const SampleComm& comm) {
    h5::File f = h5::File::open_read(path);
    if (!f.exists("/X")) throw Error(path + ": not a data file: no dataset /X (expected /X [k x d] and /T or /labels)");
    const auto xdims = f.shape("/X");
    if (xdims.size() != 2)
        throw Error(path + ": /X: expected a 2-d dataset [k x d], found " + std::to_string(xdims.size()) + "-d");
    Dataset ds;
    ds.name = path;
    const Index available = Index(xdims[0]);
    const Index k = take(available, samples, path);
    // This rank's block of the first k rows (all of them in one process), read as a hyperslab.
    const Index r0 = shard_begin(k, comm.rank(), comm.size()), n = shard_begin(k, comm.rank() + 1, comm.size()) - r0;
    ds.first_row = r0;
    ds.total_rows = k;
    if (f.type_class("/X") == h5::File::Type::Integer) {
        if (f.type_size("/X") != 1) throw Error(path + ": /X: integer data must be uint8 pixels (0..255)");
        // held as the pixels, x = pixel / 255
        ds.X = InputData(f.read_rows_u8("/X", hsize_t(r0), hsize_t(n)), n, Index(xdims[1]));
    } else if (f.type_class("/X") == h5::File::Type::Float) {
        RowMatrix X = f.read_rows("/X", hsize_t(r0), hsize_t(n));
        if (!X.allFinite()) throw Error(path + ": /X: contains NaN or Inf values");
        ds.X = InputData(std::move(X));
    } else {
        throw Error(path + ": /X: expected uint8, float32 or float64 values");
    }
    if (f.exists("/T")) {
        const auto tdims = f.shape("/T");
        if (tdims.empty() || Index(tdims[0]) != available)
            throw Error(path + ": /T has " + std::to_string(tdims.empty() ? 0 : tdims[0]) + " rows but /X has " +
                        std::to_string(available));
        if (tdims.size() != 2) throw Error(path + ": /T: expected a 2-d dataset [k x c]");
        ds.T = f.read_rows("/T", hsize_t(r0), hsize_t(n));
        if (!ds.T.allFinite()) throw Error(path + ": /T: contains NaN or Inf values");
    } else if (f.exists("/labels")) {
        const auto ldims = f.shape("/labels");
        if (ldims.size() != 1 || Index(ldims[0]) != available)
            throw Error(path + ": /labels has " + std::to_string(ldims.empty() ? 0 : ldims[0]) +
                        " entries but /X has " + std::to_string(available) + " rows");
        if (f.type_class("/labels") != h5::File::Type::Integer) throw Error(path + ": /labels: expected integers");
        const RowMatrix labels = f.read_rows("/labels", hsize_t(r0), hsize_t(n));  // integers, exact in a double
        Index c = classes;
        if (c == 0) {
            // Classes from the largest label of all ranks, bounded so that a corrupt label cannot ask for terabytes.
            constexpr Index kMaxClasses = Index(1) << 20;
            for (Index i = 0; i < n; ++i) {
                if (labels(i, 0) >= double(kMaxClasses))
                    throw Error(path + ": /labels: label " + std::to_string(std::int64_t(labels(i, 0))) +
                                " of sample " + std::to_string(r0 + i) + " is not a class index (at most " +
                                std::to_string(kMaxClasses) + " classes)");
                c = std::max<Index>(c, Index(labels(i, 0)) + 1);
            }
            c = comm.max(c);
        }
        resize_huge(ds.T, n, std::max<Index>(c, 1));
        ds.T.setZero();
        for (Index i = 0; i < n; ++i) one_hot(ds.T, i, r0 + i, std::int64_t(labels(i, 0)), c, path + ": /labels");
    } else {
        throw Error(path + ": not a data file: no /T [k x c] or /labels [k] next to /X");
    }
    return ds;
}

// ---------------------------------------------------------------------------------------------
// InputData

// pixel / 255 for every byte value, computed as before the table existed: double(p) / 255.0
const std::array<double, 256> InputData::kPixelValue = [] {
    std::array<double, 256> v{};
    for (int p = 0; p < 256; ++p) v[std::size_t(p)] = double(p) / 255.0;
    return v;
}();

InputData::InputData(RowMatrix values) : m_rows(values.rows()), m_cols(values.cols()), m_values(std::move(values)) {}

InputData::InputData(std::vector<std::uint8_t> pixels, Index rows, Index cols)
    : m_rows(rows), m_cols(cols), m_has_pixels(true), m_pixels(std::move(pixels)) {
    if (Index(m_pixels.size()) != rows * cols)
        throw Error("X: " + std::to_string(m_pixels.size()) + " pixels do not fill " + std::to_string(rows) + " x " +
                    std::to_string(cols));
}

void InputData::copy_row(Index i, double* out) const {
    if (!m_has_pixels) {
        Eigen::Map<Eigen::RowVectorXd>(out, m_cols) = m_values.row(i);
        return;
    }
    const std::uint8_t* p = m_pixels.data() + i * m_cols;
    for (Index j = 0; j < m_cols; ++j) out[j] = pixel_value(p[j]);
}

RowMatrix InputData::dense() const {
    if (!m_has_pixels) return m_values;
    RowMatrix X(m_rows, m_cols);
    const Index rows = m_rows;
#pragma omp parallel for schedule(static) if (X.size() >= (Index(1) << 20))
    for (Index i = 0; i < rows; ++i) copy_row(i, X.row(i).data());
    return X;
}

Index InputData::nonzeros() const {
    if (!m_has_pixels) return Index((m_values.array() != 0.0).count());
    const std::uint8_t* p = m_pixels.data();
    const Index n = Index(m_pixels.size());
    Index count = 0;
#pragma omp parallel for schedule(static) reduction(+ : count) if (n >= (Index(1) << 20))
    for (Index i = 0; i < n; ++i) count += p[i] != 0;
    return count;
}

std::string data_dir(const std::string& flag) {
    if (!flag.empty()) return flag;
    if (const char* env = std::getenv("TDYN_DATA"); env && *env) return env;
    return std::string(TDYN_SOURCE_DIR) + "/data";
}

Dataset load_dataset(const std::string& spec, const std::string& dir, Index samples, Index classes, bool test,
                     const SampleComm& comm) {
    if (spec == "mnist" || spec == "fashion-mnist") {
        const std::string base = dir + "/" + spec + "/" + (test ? "t10k" : "train");
        const std::string ip = base + "-images-idx3-ubyte", lp = base + "-labels-idx1-ubyte";
        std::error_code ec;
        if (!std::filesystem::exists(ip, ec))
            throw Error(ip +
                        ": no such file (run scripts/setup.sh to fetch the data sets, or point "
                        "TDYN_DATA (tdyn --data-dir) at a folder holding " +
                        spec + "/)");
        Dataset ds;
        if (comm.size() == 1) {
            ds = dataset_from_idx(read_idx(ip), read_idx(lp), ip, lp, samples, classes);
        } else {
            // This rank's block [K r/N, K (r+1)/N) of the first K samples: the headers first, then only those rows.
            const IdxArray head = read_idx_rows(ip, 0, 0), labels_head = read_idx_rows(lp, 0, 0);
            if (head.dims.size() != 3 || labels_head.dims.size() != 1 || labels_head.dims[0] != head.dims[0]) {
                ds = dataset_from_idx(head, labels_head, ip, lp, samples, classes);  // throws, naming the file
            } else {
                const Index K = take(head.dims[0], samples, ip);
                const Index r0 = shard_begin(K, comm.rank(), comm.size());
                const std::size_t n = std::size_t(shard_begin(K, comm.rank() + 1, comm.size()) - r0);
                ds = dataset_from_idx(read_idx_rows(ip, std::size_t(r0), n), read_idx_rows(lp, std::size_t(r0), n), ip,
                                      lp, samples, classes);
            }
        }
        ds.name = spec;
        ds.comm = &comm;
        return ds;
    }
    std::error_code ec;
    if (!std::filesystem::exists(spec, ec))
        throw Error("data: '" + spec + "' is neither mnist, fashion-mnist nor an existing HDF5 data file");
    Dataset ds = read_data_file(spec, samples, classes, comm);
    ds.comm = &comm;
    return ds;
}

}  // namespace tdyn
