#include "devices/evdev/sensor_sources.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <libevdev/libevdev.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <optional>
#include <sstream>

#include "devices/evdev/evdev_device.h"
#include "devices/libusb/blocking_worker.h"

namespace devices {

namespace asio = boost::asio;

// --- EvdevSensorSource ---

namespace {

bool has_xyz(const libevdev* dev, unsigned first) {
  return libevdev_has_event_code(dev, EV_ABS, first) &&
         libevdev_has_event_code(dev, EV_ABS, first + 1) &&
         libevdev_has_event_code(dev, EV_ABS, first + 2);
}

// The name contains one of the words (case-insensitive, words of letters).
bool name_has(const libevdev* dev, std::initializer_list<std::string_view> words) {
  const char* n = libevdev_get_name(dev);
  std::string name = n ? n : "";
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (size_t i = 0; i < name.size();) {
    while (i < name.size() && !std::isalpha(static_cast<unsigned char>(name[i]))) ++i;
    size_t j = i;
    while (j < name.size() && std::isalpha(static_cast<unsigned char>(name[j]))) ++j;
    const std::string_view word(name.data() + i, j - i);
    for (auto w : words)
      // Prefixes for long words ("magnetometer" starts with "magnet"); short ones whole.
      if (word == w || (w.size() > 3 && word.starts_with(w))) return true;
    i = j;
  }
  return false;
}

}  // namespace

std::set<SensorKind> EvdevSensorSource::sensors_of(const libevdev* dev) {
  std::set<SensorKind> out;
  if (libevdev_has_property(dev, INPUT_PROP_ACCELEROMETER)) {
    if (has_xyz(dev, ABS_X)) out.insert(SensorKind::kAccelerometer);
    if (has_xyz(dev, ABS_RX)) out.insert(SensorKind::kGyrometer);
    return out;
  }
  if (name_has(dev, {"compass", "magnet"}) && has_xyz(dev, ABS_X)) out.insert(SensorKind::kCompass);
  if (name_has(dev, {"light", "ambient", "als"}) && libevdev_has_event_code(dev, EV_ABS, ABS_MISC))
    out.insert(SensorKind::kLight);
  return out;
}

usb::Result<std::unique_ptr<EvdevSensorSource>> EvdevSensorSource::open(asio::io_context& io,
                                                                        const std::string& path) {
  auto opened = open_evdev(path);
  if (!opened) return std::unexpected(opened.error());
  auto src = std::unique_ptr<EvdevSensorSource>(new EvdevSensorSource(io, *opened, path));
  if (src->sensors_.empty()) {
    return usb::Error::make(usb::Error::Code::kUnsupported,
                            "evdev " + path + " ('" + src->name_ +
                                "') is not a sensor (INPUT_PROP_ACCELEROMETER with ABS_X/Y/Z or "
                                "ABS_RX/RY/RZ; a compass or light sensor named so)");
  }
  return src;
}

std::vector<std::string> EvdevSensorSource::find_devices() {
  return find_evdev([](const libevdev* dev) { return !sensors_of(dev).empty(); });
}

EvdevSensorSource::EvdevSensorSource(asio::io_context& io, OpenedEvdev opened, std::string path)
    : reader_(std::make_unique<EvdevReader>(io, opened, path)),
      dev_(opened.dev),
      path_(std::move(path)) {
  name_ = reader_->name();
  sensors_ = sensors_of(dev_);
  auto resolution = [&](unsigned code) {
    const int r = libevdev_get_abs_resolution(dev_, code);
    return r > 0 ? r : 1;
  };
  for (SensorKind k : sensors_) {
    Channel c{
        .kind = k, .codes = {ABS_X, ABS_Y, ABS_Z}, .axes = 3, .resolution = 1, .hub_units = 100};
    if (k == SensorKind::kGyrometer) c.codes = {ABS_RX, ABS_RY, ABS_RZ};
    if (k == SensorKind::kCompass) c.hub_units = 1000;  // milligauss
    if (k == SensorKind::kLight) {
      c.codes = {ABS_MISC, 0, 0};
      c.axes = 1;
    }
    c.resolution = resolution(c.codes[0]);
    for (size_t i = 0; i < c.axes; ++i)
      c.value[i] = libevdev_get_event_value(dev_, EV_ABS, c.codes[i]);
    channels_.push_back(c);
  }
}

EvdevSensorSource::~EvdevSensorSource() = default;

void EvdevSensorSource::start(HidSensorHub& hub) {
  hub_ = &hub;
  std::string what;
  for (const auto& c : channels_)
    what += fmt::format("{}{} ({} per unit)", what.empty() ? "" : ", ",
                        ReplaySensorSource::kind_name(c.kind), c.resolution);
  spdlog::info("evdev: {} ('{}'): feeding {}", path_, name_, what);
  for (auto& c : channels_) c.dirty = true;
  emit();  // the current position, before any motion
  reader_->on_event = [this](const input_event& ev) { handle(ev); };
  reader_->start();
}

void EvdevSensorSource::handle(const input_event& ev) {
  // After SYN_DROPPED the reader delivers libevdev's differences the same way, ending in
  // SYN_REPORT: the channels come back to the device's state.
  if (ev.type == EV_ABS) {
    for (auto& c : channels_) {
      for (size_t i = 0; i < c.axes; ++i) {
        if (c.codes[i] != ev.code) continue;
        c.value[i] = ev.value;
        c.dirty = true;
      }
    }
  } else if (ev.type == EV_SYN && ev.code == SYN_REPORT) {
    emit();
  }
}

void EvdevSensorSource::emit() {
  if (!hub_) return;
  for (auto& c : channels_) {
    if (!c.dirty) continue;
    c.dirty = false;
    SensorSample sample;
    for (size_t i = 0; i < c.axes; ++i) {
      sample.value[i] = static_cast<int32_t>(std::clamp<int64_t>(
          int64_t{c.value[i]} * c.hub_units / c.resolution, INT32_MIN + 1, INT32_MAX));
    }
    hub_->set_sample(c.kind, sample);
    ++samples_;
  }
}

// --- IioSensorSource ---

namespace {

std::optional<double> read_number(const std::string& path) {
  std::ifstream in(path);
  double v = 0;
  if (!(in >> v)) return std::nullopt;
  return v;
}

// IIO units (Documentation/ABI/testing/sysfs-bus-iio) → the hub's raw units.
struct IioType {
  const char* prefix;  // "accel": in_accel_x_raw, in_accel_scale
  SensorKind kind;
  double to_hub;  // IIO unit → hub unit
};
constexpr double kG = 9.80665;
const IioType kTypes[] = {
    {"accel", SensorKind::kAccelerometer, 100.0 / kG},                      // m/s² → centi-g
    {"anglvel", SensorKind::kGyrometer, 100.0 * 180.0 / std::numbers::pi},  // rad/s → centi-deg/s
    {"magn", SensorKind::kCompass, 1000.0},                                 // gauss → milligauss
};

}  // namespace

usb::Result<std::unique_ptr<IioSensorSource>> IioSensorSource::open(
    asio::io_context& io, const std::string& dir, std::chrono::milliseconds period) {
  namespace fs = std::filesystem;
  std::vector<Channel> channels;
  auto exists = [&](const std::string& f) {
    std::error_code ec;
    return fs::exists(dir + "/" + f, ec);
  };
  for (const IioType& t : kTypes) {
    const std::string p = std::string("in_") + t.prefix + "_";
    if (!exists(p + "x_raw") || !exists(p + "y_raw") || !exists(p + "z_raw")) continue;
    Channel c{t.kind, {}, {}, {}};
    for (const char axis : {'x', 'y', 'z'}) {
      const std::string a(1, axis);
      c.files.push_back(dir + "/" + p + a + "_raw");
      auto scale = read_number(dir + "/" + p + a + "_scale");
      if (!scale) scale = read_number(dir + "/" + p + "scale");
      auto offset = read_number(dir + "/" + p + a + "_offset");
      if (!offset) offset = read_number(dir + "/" + p + "offset");
      c.scale.push_back(scale.value_or(1.0) * t.to_hub);
      c.offset.push_back(offset.value_or(0.0));
    }
    channels.push_back(std::move(c));
  }
  // Light: in_illuminance_input is lux already; in_illuminance_raw needs its scale.
  if (exists("in_illuminance_input")) {
    channels.push_back({SensorKind::kLight, {dir + "/in_illuminance_input"}, {100.0}, {0.0}});
  } else if (exists("in_illuminance_raw")) {
    const double scale = read_number(dir + "/in_illuminance_scale").value_or(1.0);
    const double offset = read_number(dir + "/in_illuminance_offset").value_or(0.0);
    channels.push_back(
        {SensorKind::kLight, {dir + "/in_illuminance_raw"}, {scale * 100.0}, {offset}});
  }
  if (channels.empty()) {
    return usb::Error::make(usb::Error::Code::kUnsupported,
                            "iio " + dir + ": no accel, anglvel, magn or illuminance channels");
  }
  return std::unique_ptr<IioSensorSource>(
      new IioSensorSource(io, dir, std::move(channels), period));
}

std::vector<std::string> IioSensorSource::find_devices(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(root, ec)) {
    const auto d = e.path().string();
    for (const char* f : {"/in_accel_x_raw", "/in_anglvel_x_raw", "/in_magn_x_raw",
                          "/in_illuminance_raw", "/in_illuminance_input"}) {
      std::error_code exists_ec;
      if (std::filesystem::exists(d + f, exists_ec)) {
        out.push_back(d);
        break;
      }
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

IioSensorSource::IioSensorSource(asio::io_context& io, std::string dir,
                                 std::vector<Channel> channels, std::chrono::milliseconds period)
    : io_(io),
      timer_(io),
      dir_(std::move(dir)),
      channels_(std::move(channels)),
      period_(period),
      worker_(std::make_unique<BlockingWorker>("iio-poll")) {
  for (const auto& c : channels_) sensors_.insert(c.kind);
}

IioSensorSource::~IioSensorSource() {
  *alive_ = false;
  timer_.cancel();
  worker_->stop();  // a read in progress finishes; its result is dropped (alive_)
}

void IioSensorSource::start(HidSensorHub& hub) {
  hub_ = &hub;
  spdlog::info("iio: {}: feeding {} sensor(s) every {} ms", dir_, sensors_.size(), period_.count());
  poll();
}

void IioSensorSource::poll() {
  // The reads run on the worker; the samples come back to the loop.
  worker_->post([this, alive = alive_, channels = channels_] {
    std::vector<std::pair<SensorKind, SensorSample>> samples;
    bool failed = false;
    for (const auto& c : channels) {
      SensorSample s;
      bool ok = true;
      for (size_t i = 0; i < c.files.size() && ok; ++i) {
        auto v = read_number(c.files[i]);
        if (!v) {
          ok = false;  // the hub keeps the last good sample rather than a made-up one
          break;
        }
        s.value[i] = static_cast<int32_t>(
            std::clamp(std::lround((*v + c.offset[i]) * c.scale[i]), -0x7fffffffL, 0x7fffffffL));
      }
      if (ok) {
        samples.push_back({c.kind, s});
      } else {
        failed = true;
      }
    }
    asio::post(io_, [this, alive, samples = std::move(samples), failed] {
      if (!*alive) return;
      if (failed && !warned_) {
        spdlog::warn("iio: {}: a channel could not be read (device gone?)", dir_);
        warned_ = true;
      }
      for (const auto& [kind, s] : samples) hub_->set_sample(kind, s);
      ++samples_;
      timer_.expires_after(period_);
      timer_.async_wait([this, alive](boost::system::error_code ec) {
        if (!ec && *alive) poll();
      });
    });
  });
}

// --- ReplaySensorSource ---

usb::Result<std::vector<ReplaySensorSource::Step>> ReplaySensorSource::parse(
    std::string_view text) {
  std::vector<Step> steps;
  size_t line_no = 0;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    ++line_no;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string_view> words;
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && line[i] == ' ') ++i;
      size_t j = i;
      while (j < line.size() && line[j] != ' ') ++j;
      if (j > i) words.push_back(line.substr(i, j - i));
      i = j;
    }
    auto bad = [&](const std::string& why) {
      return usb::Error::make(usb::Error::Code::kMalformed,
                              "replay line " + std::to_string(line_no) + ": " + why);
    };
    if (words.size() < 3) return bad("expected TIME_MS KIND X [Y Z]");
    auto number = [](std::string_view w, auto& out) {
      auto [end, ec] = std::from_chars(w.data(), w.data() + w.size(), out);
      return ec == std::errc{} && end == w.data() + w.size();
    };
    uint32_t ms = 0;
    if (!number(words[0], ms)) return bad("time '" + std::string(words[0]) + "'");
    Step s{std::chrono::milliseconds(ms), SensorKind::kAccelerometer, {}};
    const std::string kind(words[1]);
    if (kind == "accel")
      s.kind = SensorKind::kAccelerometer;
    else if (kind == "gyro")
      s.kind = SensorKind::kGyrometer;
    else if (kind == "compass")
      s.kind = SensorKind::kCompass;
    else if (kind == "light")
      s.kind = SensorKind::kLight;
    else
      return bad("kind '" + kind + "' (accel, gyro, compass, light)");
    const size_t n = s.kind == SensorKind::kLight ? 1 : 3;
    if (words.size() != 2 + n) return bad(kind + " takes " + std::to_string(n) + " value(s)");
    for (size_t i = 0; i < n; ++i)
      if (!number(words[2 + i], s.sample.value[i]))
        return bad("value '" + std::string(words[2 + i]) + "'");
    if (!steps.empty() && s.at < steps.back().at) return bad("time goes back");
    if (steps.size() >= 1'000'000) return bad("more than a million steps");
    steps.push_back(s);
  }
  if (steps.empty()) return usb::Error::make(usb::Error::Code::kMalformed, "replay: no steps");
  return steps;
}

usb::Result<std::vector<ReplaySensorSource::Step>> ReplaySensorSource::load(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return usb::Error::make(usb::Error::Code::kIo, "replay " + path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  auto steps = parse(ss.str());
  if (!steps) return usb::Error::make(steps.error().code, path + ": " + steps.error().message);
  return steps;
}

std::set<SensorKind> ReplaySensorSource::sensors_of(const std::vector<Step>& steps) {
  std::set<SensorKind> out;
  for (const auto& s : steps) out.insert(s.kind);
  return out;
}

ReplaySensorSource::ReplaySensorSource(asio::io_context& io, std::vector<Step> steps, bool loop)
    : timer_(io), steps_(std::move(steps)), loop_(loop) {}

ReplaySensorSource::~ReplaySensorSource() {
  *alive_ = false;
  timer_.cancel();
}

void ReplaySensorSource::start(HidSensorHub& hub) {
  hub_ = &hub;
  index_ = 0;
  epoch_ = std::chrono::steady_clock::now();
  next();
}

void ReplaySensorSource::next() {
  if (index_ >= steps_.size()) {
    if (!loop_ || steps_.empty()) return;
    epoch_ += steps_.back().at + std::chrono::milliseconds(1);
    index_ = 0;
  }
  timer_.expires_at(epoch_ + steps_[index_].at);
  timer_.async_wait([this, alive = alive_](boost::system::error_code ec) {
    if (ec || !*alive) return;
    const auto now_at = steps_[index_].at;
    // Every step due at this moment.
    while (index_ < steps_.size() && steps_[index_].at == now_at) {
      hub_->set_sample(steps_[index_].kind, steps_[index_].sample);
      ++played_;
      ++index_;
    }
    next();
  });
}

const char* ReplaySensorSource::kind_name(SensorKind kind) {
  switch (kind) {
    case SensorKind::kAccelerometer:
      return "accel";
    case SensorKind::kGyrometer:
      return "gyro";
    case SensorKind::kCompass:
      return "compass";
    case SensorKind::kLight:
      return "light";
  }
  return "?";
}

std::string ReplaySensorSource::format(const Step& step) {
  std::string line = std::to_string(step.at.count()) + " " + kind_name(step.kind);
  const size_t n = step.kind == SensorKind::kLight ? 1 : 3;
  for (size_t i = 0; i < n; ++i) line += " " + std::to_string(step.sample.value[i]);
  return line;
}

// --- SensorRecorder ---

usb::Result<std::unique_ptr<SensorRecorder>> SensorRecorder::create(const std::string& path,
                                                                    Clock clock) {
  std::FILE* f = std::fopen(path.c_str(), "we");
  if (!f) {
    return usb::Error::make(usb::Error::Code::kIo,
                            "sensor trace " + path + ": " + std::strerror(errno));
  }
  std::fputs(
      "# vusb sensor trace: TIME_MS KIND X [Y Z] in the hub's raw units (centi-g, centi-deg/s,\n"
      "# milligauss, centi-lux); replay with vusb-stub --sensors replay:FILE\n",
      f);
  std::fflush(f);
  return std::unique_ptr<SensorRecorder>(new SensorRecorder(f, path, std::move(clock)));
}

SensorRecorder::SensorRecorder(std::FILE* file, std::string path, Clock clock)
    : file_(file), path_(std::move(path)), clock_(std::move(clock)) {}

SensorRecorder::~SensorRecorder() {
  if (hub_) hub_->on_sample = nullptr;
  std::fclose(file_);
  spdlog::info("sensor trace {}: {} sample(s) recorded", path_, recorded_);
}

void SensorRecorder::attach(HidSensorHub& hub) {
  hub_ = &hub;
  hub.on_sample = [this](SensorKind kind, const SensorSample& sample) { record(kind, sample); };
}

void SensorRecorder::record(SensorKind kind, const SensorSample& sample) {
  if (failed_) return;
  const auto now = clock_();
  if (!start_) start_ = now;
  // Times never go back in a trace (parse() refuses that), whatever the clock does.
  last_ = std::max(last_, std::chrono::duration_cast<std::chrono::milliseconds>(now - *start_));
  const std::string line =
      ReplaySensorSource::format({.at = last_, .kind = kind, .sample = sample}) + "\n";
  // Flushed per line: a stub that is killed leaves a trace that replays up to that point.
  if (std::fputs(line.c_str(), file_) < 0 || std::fflush(file_) != 0) {
    failed_ = true;
    spdlog::error("sensor trace {}: write failed ({}); recording stops", path_,
                  std::strerror(errno));
    return;
  }
  ++recorded_;
}

}  // namespace devices
