#include "values.hpp"

namespace tdyn::cli {

Ends parse_which(const std::string& which) {
    // Spelled out here (not parse_ends) so that the fuzz targets need no spectrum code.
    if (which == "top") return Ends::Top;
    if (which == "bottom") return Ends::Bottom;
    if (which == "both") return Ends::Both;
    throw Error("--which: expected top, bottom or both, found '" + which + "'");
}

std::vector<Index> parse_steps(const std::string& text, const std::vector<Index>& stored, Index last_step) {
    if (stored.empty()) throw Error("--steps: the run stored no theta yet");
    if (text.empty() || text == "last") return {stored.back()};
    if (text == "stored") return stored;
    auto bad = [&] {
        return Error("--steps: expected 'last', 'stored' or a list like 0,10,50:100:10 (first:last:stride), found '" +
                     text + "'");
    };
    auto past_end = [&](Index t) {
        return Error("--steps: step " + std::to_string(t) + " is past the end of the run (last step " +
                     std::to_string(last_step) + ")");
    };
    std::vector<Index> steps;
    std::size_t pos = 0;
    while (pos <= text.size()) {
        const std::size_t comma = std::min(text.find(',', pos), text.size());
        const std::string part = text.substr(pos, comma - pos);
        std::vector<Index> nums;
        std::size_t p = 0;
        while (p <= part.size() && nums.size() < 4) {
            const std::size_t colon = std::min(part.find(':', p), part.size());
            const std::string num = part.substr(p, colon - p);
            if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos || num.size() > 12) throw bad();
            nums.push_back(std::stoll(num));
            p = colon + 1;
        }
        if (nums.size() == 1) {
            if (nums[0] > last_step) throw past_end(nums[0]);
            steps.push_back(nums[0]);
        } else if (nums.size() == 3 && nums[2] > 0 && nums[0] <= nums[1]) {
            if (nums[1] > last_step) throw past_end(nums[1]);  // before expanding: bounded by the run's length
            for (Index t = nums[0]; t <= nums[1]; t += nums[2]) steps.push_back(t);
        } else {
            throw bad();
        }
        pos = comma + 1;
    }
    return steps;
}

}  // namespace tdyn::cli
