#include "usb-stub/device_sources.h"

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <set>

#include "devices/emulated/emulated_factory.h"
#include "devices/emulated/hid_input_device.h"
#include "devices/emulated/hid_sensor_hub.h"
#include "devices/evdev/input_source.h"
#include "devices/evdev/sensor_sources.h"
#include "devices/libusb/libusb_provider.h"
#include "usb/net/asio_timer.h"

namespace stub {

DeviceSources::DeviceSources(boost::asio::io_context& io, usb::Executor& loop, usb::usbip::ExportTable& exports)
    : io_(io), loop_(loop), exports_(exports) {}

DeviceSources::~DeviceSources() {
  stop();
}

usb::Result<void> DeviceSources::add_emulated(const EmulateSpec& spec) {
  devices::EmulatedSpec what{.type = spec.type, .options = spec.options, .location = {}};
  what.location.busid = spec.busid;
  if (spec.type == "gadget-zero")
    what.options += (what.options.empty() ? "speed=" : ",speed=") + spec.speed;
  auto device = devices::make_emulated(what, usb::net::asio_timer(io_),
                                       [] { return std::chrono::steady_clock::now(); });
  if (!device) return std::unexpected(device.error());
  auto busid = exports_.add(**device);
  if (!busid) return std::unexpected(busid.error());
  spdlog::info("emulated {} exported as {}", spec.type, *busid);
  emulated_.push_back(std::move(*device));
  return {};
}

usb::Result<void> DeviceSources::add_libusb(const std::vector<std::string>& selectors, bool all) {
  devices::LibusbProvider::Options options;
  if (all) options.filters.push_back(devices::DeviceFilter::all());
  for (const auto& s : selectors) {
    auto f = devices::parse_device_filter(s);
    if (!f) return std::unexpected(f.error());
    options.filters.push_back(*f);
  }
  // Rescans (when libusb has no hotplug here) run on the loop through an Asio timer.
  options.timer = usb::net::asio_timer(io_);
  options.on_initial_scan_done = [this](size_t n) {
    spdlog::info("libusb: initial scan found {} device(s); exporting {}", n, exports_.size());
  };
  auto provider = devices::LibusbProvider::create(loop_, std::move(options));
  if (!provider) return std::unexpected(provider.error());
  (*provider)->add_observer(&exports_);
  for (usb::Device* d : (*provider)->devices()) exports_.on_device_added(*d);
  providers_.push_back(std::move(*provider));
  return {};
}

usb::Result<void> DeviceSources::add_sensors(const std::vector<std::string>& specs,
                                             const std::string& record) {
  std::set<devices::SensorKind> kinds;
  std::vector<std::unique_ptr<devices::EvdevSensorSource>> evdev;
  std::vector<std::unique_ptr<devices::ReplaySensorSource>> replays;
  std::vector<std::unique_ptr<devices::IioSensorSource>> iio;
  for (const auto& spec : specs) {
    if (spec == "evdev" || spec.starts_with("evdev:")) {
      std::vector<std::string> paths;
      if (spec == "evdev") {
        paths = devices::EvdevSensorSource::find_devices();
        if (paths.empty())
          return usb::Error::make(usb::Error::Code::kNotFound,
                                  "--sensors evdev: no motion sensor under /dev/input");
      } else {
        paths.push_back(spec.substr(6));
      }
      for (const auto& p : paths) {
        auto src = devices::EvdevSensorSource::open(io_, p);
        if (!src) return std::unexpected(src.error());
        kinds.insert((*src)->sensors().begin(), (*src)->sensors().end());
        evdev.push_back(std::move(*src));
      }
    } else if (spec == "iio" || spec.starts_with("iio:")) {
      std::vector<std::string> dirs;
      if (spec == "iio") {
        dirs = devices::IioSensorSource::find_devices();
        if (dirs.empty())
          return usb::Error::make(usb::Error::Code::kNotFound,
                                  "--sensors iio: no IIO motion or light sensor in sysfs");
      } else {
        dirs.push_back(spec.substr(4));
      }
      for (const auto& d : dirs) {
        auto src = devices::IioSensorSource::open(io_, d, std::chrono::milliseconds(50));
        if (!src) return std::unexpected(src.error());
        kinds.insert((*src)->sensors().begin(), (*src)->sensors().end());
        iio.push_back(std::move(*src));
      }
    } else if (spec.starts_with("replay:")) {
      std::string path = spec.substr(7);
      bool loop = false;
      if (path.ends_with(",loop")) {
        loop = true;
        path.resize(path.size() - 5);
      }
      auto steps = devices::ReplaySensorSource::load(path);
      if (!steps) return std::unexpected(steps.error());
      const auto of = devices::ReplaySensorSource::sensors_of(*steps);
      kinds.insert(of.begin(), of.end());
      replays.push_back(
          std::make_unique<devices::ReplaySensorSource>(io_, std::move(*steps), loop));
    } else {
      return usb::Error::make(
          usb::Error::Code::kInvalidArgument,
          "--sensors '" + spec +
              "': expected evdev, evdev:PATH, iio, iio:DIR or replay:FILE[,loop]");
    }
  }
  devices::HidSensorHubOptions options;
  options.sensors = kinds;
  auto hub = std::make_unique<devices::HidSensorHub>(options);
  hub->set_clock(usb::net::asio_timer(io_), [] { return std::chrono::steady_clock::now(); });
  hub->set_configuration(1, [](usb::Status) {});
  if (!record.empty()) {  // before the sources start: their first samples are recorded too
    auto recorder =
        devices::SensorRecorder::create(record, [] { return std::chrono::steady_clock::now(); });
    if (!recorder) return std::unexpected(recorder.error());
    (*recorder)->attach(*hub);
    spdlog::info("recording the hub's samples to {}", record);
    recorder_ = std::move(*recorder);
  }
  for (auto& e : evdev) e->start(*hub);
  for (auto& r : replays) r->start(*hub);
  for (auto& i : iio) i->start(*hub);
  auto busid = exports_.add(*hub);
  if (!busid) {
    recorder_.reset();  // it points at the hub, which goes now
    return std::unexpected(busid.error());
  }
  spdlog::info("HID sensor hub with {} sensor(s) exported as {}", kinds.size(), *busid);
  emulated_.push_back(std::move(hub));
  for (auto& e : evdev) evdev_.push_back(std::move(e));
  for (auto& r : replays) replays_.push_back(std::move(r));
  for (auto& i : iio) iio_.push_back(std::move(i));
  return {};
}

usb::Result<void> DeviceSources::add_inputs(const std::vector<std::string>& specs) {
  std::vector<std::pair<std::string, devices::EvdevInputSource::Options>> wanted;
  for (std::string spec : specs) {
    devices::EvdevInputSource::Options options;
    if (spec.ends_with(",nograb")) {
      options.grab = false;
      spec.resize(spec.size() - 7);
    }
    if (spec == "evdev") {
      const auto paths = devices::EvdevInputSource::find_devices();
      if (paths.empty())
        return usb::Error::make(
            usb::Error::Code::kNotFound,
            "--input evdev: no keyboard, mouse or touchscreen under /dev/input");
      for (const auto& p : paths) wanted.emplace_back(p, options);
    } else if (spec.starts_with("evdev:") && spec.size() > 6) {
      wanted.emplace_back(spec.substr(6), options);
    } else {
      return usb::Error::make(usb::Error::Code::kInvalidArgument,
                              "--input '" + spec + "': expected evdev or evdev:PATH[,nograb]");
    }
  }
  // Open everything first: a bad spec exports nothing.
  std::vector<std::unique_ptr<Input>> opened;
  for (const auto& [path, options] : wanted) {
    auto src = devices::EvdevInputSource::open(io_, path, options);
    if (!src) return std::unexpected(src.error());
    auto in = std::make_unique<Input>();
    in->device = std::make_unique<devices::HidInputDevice>((*src)->device_options());
    in->source = std::move(*src);
    opened.push_back(std::move(in));
  }
  for (auto& in_ptr : opened) {
    Input& in = *in_ptr;
    auto busid = exports_.add(*in.device);
    if (!busid) return std::unexpected(busid.error());
    spdlog::info("input device '{}' ({}) exported as {}", in.source->name(), in.source->path(),
                 *busid);
    in.source->start(*in.device);
    in.source->on_gone = [this, device = in.device.get()](const std::string&) {
      input_gone(device);
    };
    inputs_.push_back(std::move(in_ptr));
  }
  return {};
}

void DeviceSources::input_gone(devices::HidInputDevice* device) {
  // Unplug now (the importer sees its URBs end and the device leave); free it once the source's
  // handler that reported this has returned.
  device->disconnect();
  exports_.remove(*device);
  boost::asio::post(io_, [this, device] {
    std::erase_if(inputs_, [&](const auto& in) { return in->device.get() == device; });
  });
}

void DeviceSources::stop() {
  recorder_.reset();
  for (auto& in : inputs_) {
    in->source.reset();  // first: it holds the device's on_leds
    exports_.remove(*in->device);
  }
  inputs_.clear();
  evdev_.clear();
  replays_.clear();
  iio_.clear();
  for (auto& d : emulated_) exports_.remove(*d);
  emulated_.clear();
  // A provider's destructor reports every device removed to its observers (the export table).
  providers_.clear();
}

}  // namespace stub
