// vusb-bench soak (soak.cc): many VMs and devices through vusbd for minutes, the exporting stub
// killed and restarted; every URB accounted for, memory watched.
#pragma once

#include <string>

namespace vusb_bench {

// argv[1] is "soak"; `self` is this program's path (vusb-stub is found beside it).
int run_soak(int argc, char** argv, const std::string& self);

}  // namespace vusb_bench
