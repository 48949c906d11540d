// libFuzzer target: Architecture::parse (--arch) and the name parsers of --activation,
// --output. Any text either throws
// Error naming --arch or gives an architecture that prints back to itself.
#include "tdyn/network.hpp"

#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    using namespace tdyn;
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        const Architecture a = Architecture::parse(text);
        if (a.widths.size() < 2) std::abort();
        for (Index n : a.widths)
            if (n <= 0) std::abort();
        if (a.num_params() <= 0 || a.num_params() > 2147483647) std::abort();
        if (Architecture::parse(a.to_string()).widths != a.widths) std::abort();
    } catch (const Error& e) {
        if (std::string(e.what()).rfind("arch: ", 0) != 0) std::abort();  // names the parameter (tdyn shows --arch)
    }
    try {
        parse_activation(text);
    } catch (const Error&) {}
    try {
        parse_output(text);
    } catch (const Error&) {}
    return 0;
}
