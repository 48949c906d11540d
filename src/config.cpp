#include "tdyn/config.hpp"

namespace tdyn {

std::string to_string(Precision p) { return p == Precision::F32 ? "f32" : "f64"; }
std::string to_string(XPath x) { return x == XPath::Auto ? "auto" : x == XPath::Dense ? "dense" : "sparse"; }

void write_config(h5::File& f, const TrainConfig& c) {
    const Architecture arch = c.architecture();
    f.set_attr("/", "arch", std::vector<std::int64_t>(arch.widths.begin(), arch.widths.end()));
    f.set_attr("/", "activation", to_string(c.activation));
    f.set_attr("/", "output", to_string(c.output));
    f.set_attr("/", "alpha", c.lr);
    f.set_attr("/", "weight_decay", c.weight_decay);
    f.set_attr("/", "steps", std::int64_t(c.steps));
    f.set_attr("/", "batch", std::int64_t(c.batch));
    f.set_attr("/", "seed", std::int64_t(c.seed));
    f.set_attr("/", "data", c.data);
    f.set_attr("/", "samples", std::int64_t(c.samples));
    f.set_attr("/", "init", c.init);
    f.set_attr("/", "init_scheme", to_string(c.init_scheme));
    f.set_attr("/", "init_scale", c.init_scale);
    f.set_attr("/", "save_theta_every", std::int64_t(c.save_theta_every));
    f.set_attr("/", "precision", to_string(c.precision));
    f.set_attr("/", "x_path", to_string(c.x_path));
}

TrainConfig read_config(h5::File& f) {
    TrainConfig c;
    c.arch = [&] {
        const auto w = f.attr_ints("/", "arch");
        return Architecture{{w.begin(), w.end()}}.to_string();
    }();
    c.activation = parse_activation(f.attr_string("/", "activation"));
    c.output = parse_output(f.attr_string("/", "output"));
    c.lr = f.attr_double("/", "alpha");
    if (f.has_attr("/", "weight_decay")) c.weight_decay = f.attr_double("/", "weight_decay");
    c.steps = f.attr_int("/", "steps");
    c.batch = f.attr_int("/", "batch");
    c.seed = std::uint64_t(f.attr_int("/", "seed"));
    c.data = f.attr_string("/", "data");
    c.samples = f.attr_int("/", "samples");
    c.init = f.attr_string("/", "init");
    if (f.has_attr("/", "init_scheme")) c.init_scheme = parse_init_scheme(f.attr_string("/", "init_scheme"));
    if (f.has_attr("/", "init_scale")) c.init_scale = f.attr_double("/", "init_scale");
    c.save_theta_every = f.attr_int("/", "save_theta_every");
    c.precision = parse_precision(f.attr_string("/", "precision"));
    c.x_path = parse_xpath(f.attr_string("/", "x_path"));
    return c;
}

}  // namespace tdyn
