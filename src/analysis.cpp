#include "tdyn/analysis.hpp"

#include <algorithm>

namespace tdyn {

void truncate_from(h5::File& f, const std::string& steps, const std::vector<std::string>& series, Index s,
                   Index per_step) {
    if (!f.exists(steps)) return;
    const Vector t = f.read_vector(steps);
    Index keep = 0;
    while (keep < t.size() && t[keep] < double(s)) ++keep;
    for (const std::string& name : series)
        // a killed writer may have left a row more in some series than in the step index
        if (f.exists(name)) f.truncate_rows(name, std::min<hsize_t>(f.rows(name), hsize_t(keep * per_step)));
    f.truncate_rows(steps, hsize_t(keep));
}

Index checkpoint_row(h5::File& f, const std::string& steps, Index s) {
    if (!f.exists(steps)) return -1;
    const Vector t = f.read_vector(steps);
    Index row = -1;
    for (Index j = 0; j < t.size(); ++j)
        if (t[j] == double(s)) row = j;
    return row;
}

}  // namespace tdyn
