// libFuzzer target: `tdyn spectrum --steps` (apps/values.cpp). The first bytes choose the
// run's last step and its stored steps; the rest is the flag's text. Accepted lists hold
// only steps 0..last_step and stay bounded by the run's length; everything else is an Error
// naming --steps.
#include "values.hpp"

#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tdyn;
    FuzzedDataProvider in(data, size);
    const Index last = in.ConsumeIntegralInRange<Index>(0, 100000);
    const Index every = in.ConsumeIntegralInRange<Index>(1, 1000);
    std::vector<Index> stored;
    for (Index t = 0; t <= last && stored.size() < 64; t += every) stored.push_back(t);
    const std::string text = in.ConsumeRemainingBytesAsString();
    try {
        const std::vector<Index> steps = cli::parse_steps(text, stored, last);
        const std::size_t parts = 1 + std::count(text.begin(), text.end(), ',');
        if (steps.size() > parts * std::size_t(last + 1) + stored.size()) std::abort();
        for (Index t : steps)
            if (t < 0 || t > last) std::abort();
    } catch (const Error& e) {
        if (std::string(e.what()).rfind("--steps", 0) != 0) std::abort();
    }
    return 0;
}
