// libFuzzer target: the IDX reader. The bytes are parsed from memory (parse_idx) and, as a
// file, by read_idx; both must agree (same array, or both an Error), never crash, never
// allocate more than the input. The bytes are also read as an image array followed by a
// label array and turned into a Dataset, so label checks and count mismatches are reached too.
#include "tdyn/data.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unistd.h>

namespace {

std::string temp_file() {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/tdyn_idx_fuzz_" + std::to_string(::getpid());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tdyn;
    bool memory_ok = false, file_ok = false;
    IdxArray a, b;
    try {
        a = parse_idx(data, size, "fuzz");
        memory_ok = true;
        std::size_t count = 1;
        for (auto d : a.dims) count *= d;
        if (count != a.data.size()) std::abort();  // the header's shape is the data's
    } catch (const Error&) {}
    static const std::string path = temp_file();
    if (std::FILE* f = std::fopen(path.c_str(), "wb")) {
        std::fwrite(data, 1, size, f);
        std::fclose(f);
        try {
            b = read_idx(path);
            file_ok = true;
        } catch (const Error&) {}
        if (file_ok != memory_ok || (file_ok && (a.dims != b.dims || a.data != b.data))) std::abort();
    }
    // Images from the array the header at the front describes, labels from the bytes after it.
    if (size >= 8) {
        const std::size_t header = 4 + 4 * std::size_t(data[3]);
        std::size_t n = header;
        if (size >= header) {
            std::size_t count = 1;
            for (std::size_t i = 0; i < data[3] && count <= size; ++i)
                count *= (std::size_t(data[4 + 4 * i]) << 24) | (std::size_t(data[5 + 4 * i]) << 16) |
                         (std::size_t(data[6 + 4 * i]) << 8) | std::size_t(data[7 + 4 * i]);
            n = count <= size ? header + count : size + 1;
        }
        if (n <= size) {
            try {
                const IdxArray images = parse_idx(data, n, "images");
                const IdxArray labels = parse_idx(data + n, size - n, "labels");
                const Dataset ds = dataset_from_idx(images, labels, "images", "labels", 0, 10);
                if (ds.X.rows() != ds.T.rows() || !ds.X.dense().allFinite() || ds.X.dense().maxCoeff() > 1.0)
                    std::abort();
            } catch (const Error&) {}
        }
    }
    return 0;
}
