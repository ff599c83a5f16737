#include "vmm-frontend/backends/process_source.h"

namespace vusbd {

void ProcessSource::add_stats(nlohmann::json& device) const {
  const auto& st = process_.status();
  device["process"] = {{"pid", st.pid}, {"starts", st.starts}, {"last_exit", st.last_exit}};
}

}  // namespace vusbd
