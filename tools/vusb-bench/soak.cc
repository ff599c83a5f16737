// vusb-bench soak: many VMs, many devices, URBs in flight for minutes through vusbd, with the
// exporting vusb-stub killed and restarted — a benchmark of staying correct, not of speed.
//
//   vusb-bench soak [--minutes M] [--vms N] [--devices D] [--inflight K] [--kills X]
//
// A real vusb-stub child process exports D Gadget Zeros; vusbd (in this process, on its own
// loop thread) imports them and shares each with all N VMs (shared mode, the device at bus id
// 1-k on every VM's port); N x D client lanes (vusb's own USB/IP client, on a second loop) each
// import their device from their VM's port, select the source/sink configuration and keep K bulk
// IN URBs in flight, resubmitting each as it completes. X times, evenly spaced, the stub is
// killed with SIGKILL and started again a second later: in-flight URBs fail, vusbd re-imports,
// the lanes re-import and go on. Every submitted URB is accounted for: completed exactly once
// (a second completion of one submission is counted as a duplicate), or still outstanding at the
// end (lost). The process's resident memory is sampled every 10 s. Prints a summary and exits
// non-zero if any URB was lost or duplicated, or memory grew by more than 10% + 16 MiB between
// the first sample after warm-up and the end.
#include "tools/vusb-bench/soak.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/spdlog.h>

#include "devices/remote/usbip_remote_device.h"
#include "usb/core/transfer.h"
#include "vmm-frontend/vusbd.h"

extern char** environ;

namespace vusb_bench {

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

struct Options {
  double minutes = 10;
  int vms = 16;
  int devices = 4;
  int inflight = 4;
  int kills = 2;
};

double rss_mib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024;
  return 0;
}

// The exporting stub: a child process that can be killed and started again on the same port.
class Stub {
 public:
  Stub(std::string program, uint16_t port, int devices)
      : program_(std::move(program)), port_(port), devices_(devices) {}
  ~Stub() { kill(); }
  bool start() {
    std::vector<std::string> args{program_, "--listen", "127.0.0.1:" + std::to_string(port_),
                                  "--log-level", "warn"};
    for (int k = 1; k <= devices_; ++k) {
      args.push_back("--emulate");
      args.push_back("gadget-zero=1-" + std::to_string(k));
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return posix_spawn(&pid_, program_.c_str(), nullptr, nullptr, argv.data(), environ) == 0;
  }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::string program_;
  uint16_t port_;
  int devices_;
  pid_t pid_ = -1;
};

// One VM's use of one device: import, configure, keep URBs in flight; re-import when it breaks.
// Lives on the client loop.
struct Lane {
  asio::io_context& io;
  uint16_t port;
  std::string busid;
  int inflight;
  std::unique_ptr<devices::UsbipRemoteDevice> dev;
  std::vector<std::unique_ptr<usb::Transfer>> urbs;
  std::vector<bool> outstanding;
  asio::steady_timer retry;
  bool stopping = false;
  bool importing = false;
  uint64_t submitted = 0, ok = 0, failed = 0, duplicates = 0, imports = 0;
  std::map<std::string, uint64_t> by_status;

  Lane(asio::io_context& io, uint16_t port, std::string busid, int inflight)
      : io(io), port(port), busid(std::move(busid)), inflight(inflight), retry(io) {}

  size_t pending() const { return std::count(outstanding.begin(), outstanding.end(), true); }

  void start_import() {
    if (stopping || importing) return;
    importing = true;
    devices::UsbipRemoteDevice::Options o;
    o.connect_timeout = std::chrono::seconds(5);
    o.import_timeout = std::chrono::seconds(5);
    devices::UsbipRemoteDevice::import(io, usb::net::Endpoint("127.0.0.1", port), busid, o,
                                       [this](auto r) {
                                         importing = false;
                                         if (!r) return again();
                                         dev = std::move(*r);
                                         ++imports;
                                         dev->set_configuration(3, [this](usb::Status s) {
                                           if (s != usb::Status::kOk) return broken();
                                           for (int i = 0; i < inflight; ++i) submit(i);
                                         });
                                       });
  }
  void again() {
    if (stopping) return;
    retry.expires_after(std::chrono::milliseconds(500));
    retry.async_wait([this](boost::system::error_code ec) {
      if (!ec) start_import();
    });
  }
  void submit(int i) {
    if (stopping || !dev || !dev->connected()) return broken();
    if (urbs.size() <= static_cast<size_t>(i)) {
      urbs.resize(i + 1);
      outstanding.resize(i + 1, false);
    }
    if (!urbs[i]) urbs[i] = std::make_unique<usb::Transfer>(0x81, usb::TransferType::kBulk, 512);
    auto& t = *urbs[i];
    if (t.state() == usb::Transfer::State::kCompleted) t.rearm();
    t.set_completion([this, i](usb::Transfer& x) {
      if (!outstanding[i]) {
        ++duplicates;
        return;
      }
      outstanding[i] = false;
      (x.status() == usb::Status::kOk ? ok : failed)++;
      if (x.status() != usb::Status::kOk) ++by_status[std::string(usb::to_string(x.status()))];
      // The next on a fresh loop turn (no recursion when a device completes inline); after a
      // failure, 10 ms later (as a driver would back off).
      if (x.status() == usb::Status::kOk) return asio::post(io, [this, i] { submit(i); });
      auto timer = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(10));
      timer->async_wait([this, i, timer](boost::system::error_code) { submit(i); });
    });
    outstanding[i] = true;
    ++submitted;
    dev->submit(t);  // the device begins it
  }
  void broken() {
    // Every URB of this import must come back before the device object goes.
    if (pending() || !dev) {
      if (!dev && !importing) again();
      return;
    }
    dev->close();
    dev.reset();
    again();
  }
  void stop() {
    stopping = true;
    retry.cancel();
    if (dev) dev->close();  // outstanding URBs complete with kNoDevice
  }
};

}  // namespace

int run_soak(int argc, char** argv, const std::string& self) {
  Options o;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--minutes") o.minutes = std::stod(v);
    else if (k == "--vms") o.vms = std::stoi(v);
    else if (k == "--devices") o.devices = std::stoi(v);
    else if (k == "--inflight") o.inflight = std::stoi(v);
    else if (k == "--kills") o.kills = std::stoi(v);
    else {
      std::fprintf(stderr, "vusb-bench soak: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::err);
  const auto stub_path = std::filesystem::path(self).parent_path() / "vusb-stub";
  // A free port for the stub: bind 0, read it, close (the stub binds it right after).
  uint16_t stub_port = 0;
  {
    asio::io_context tmp;
    asio::ip::tcp::acceptor a(tmp, {asio::ip::make_address("127.0.0.1"), 0});
    stub_port = a.local_endpoint().port();
  }
  Stub stub(stub_path.string(), stub_port, o.devices);
  if (!stub.start()) {
    std::fprintf(stderr, "vusb-bench soak: cannot start %s\n", stub_path.c_str());
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  // vusbd on its own loop thread.
  asio::io_context vio;
  auto vwork = asio::make_work_guard(vio);
  vusbd::VusbdConfig config;
  for (int v = 1; v <= o.vms; ++v) config.vms.push_back({"vm" + std::to_string(v), {"127.0.0.1", 0}});
  for (int k = 1; k <= o.devices; ++k) {
    vusbd::DeviceConfig d;
    d.name = "gz" + std::to_string(k);
    d.source = "usbip://127.0.0.1:" + std::to_string(stub_port) + "/1-" + std::to_string(k);
    if (!vusbd::parse_source(d.source, d)) return 1;
    for (auto& vm : config.vms) {
      d.vms.push_back(vm.name);
      d.ports[vm.name] = static_cast<uint32_t>(k);
    }
    config.devices.push_back(d);
  }
  vusbd::Vusbd daemon(vio, config);
  std::promise<std::vector<uint16_t>> ports;
  asio::post(vio, [&] {
    if (auto r = daemon.start(); !r) {
      std::fprintf(stderr, "vusb-bench soak: vusbd: %s\n", r.error().message.c_str());
      std::exit(1);
    }
    std::vector<uint16_t> p;
    for (int v = 1; v <= o.vms; ++v) p.push_back(daemon.vm_port("vm" + std::to_string(v)));
    ports.set_value(p);
  });
  std::thread vthread([&] { vio.run(); });
  const auto vm_ports = ports.get_future().get();

  // The lanes on the client loop.
  asio::io_context cio;
  auto cwork = asio::make_work_guard(cio);
  std::vector<std::unique_ptr<Lane>> lanes;
  for (uint16_t p : vm_ports)
    for (int k = 1; k <= o.devices; ++k)
      lanes.push_back(std::make_unique<Lane>(cio, p, "1-" + std::to_string(k), o.inflight));
  asio::post(cio, [&] {
    for (auto& l : lanes) l->start_import();
  });
  std::thread cthread([&] { cio.run(); });

  const auto total = std::chrono::duration<double>(o.minutes * 60);
  const auto t0 = Clock::now();
  std::vector<std::pair<double, double>> rss;  // (seconds, MiB)
  int killed = 0;
  auto stats = [&] {
    std::promise<std::array<uint64_t, 5>> p;
    asio::post(cio, [&] {
      std::array<uint64_t, 5> s{};
      for (auto& l : lanes) {
        s[0] += l->submitted;
        s[1] += l->ok;
        s[2] += l->failed;
        s[3] += l->duplicates;
        s[4] += l->imports;
      }
      p.set_value(s);
    });
    return p.get_future().get();
  };
  std::printf("soak: %d VMs x %d devices, %d URBs in flight per lane, %.1f min, %d stub kills\n",
              o.vms, o.devices, o.inflight, o.minutes, o.kills);
  while (Clock::now() - t0 < total) {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    rss.emplace_back(secs, rss_mib());
    const auto s = stats();
    std::printf("  %6.0f s  URBs %llu ok %llu failed %llu  imports %llu  RSS %.1f MiB\n", secs,
                static_cast<unsigned long long>(s[0]), static_cast<unsigned long long>(s[1]),
                static_cast<unsigned long long>(s[2]), static_cast<unsigned long long>(s[4]),
                rss.back().second);
    std::fflush(stdout);
    if (killed < o.kills && secs >= total.count() * (killed + 1) / (o.kills + 1)) {
      std::printf("  %6.0f s  killing vusb-stub (SIGKILL), restarting it in 1 s\n", secs);
      stub.kill();
      std::this_thread::sleep_for(std::chrono::seconds(1));
      stub.start();
      ++killed;
    }
  }
  // Stop: no more resubmits; every outstanding URB must still complete (kNoDevice on close).
  asio::post(cio, [&] {
    for (auto& l : lanes) l->stop();
  });
  const auto drain_until = Clock::now() + std::chrono::seconds(30);
  size_t lost = 0;
  do {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::promise<size_t> p;
    asio::post(cio, [&] {
      size_t n = 0;
      for (auto& l : lanes) n += l->pending();
      p.set_value(n);
    });
    lost = p.get_future().get();
  } while (lost && Clock::now() < drain_until);
  const auto s = stats();
  {
    std::promise<std::string> p;
    asio::post(cio, [&] {
      std::map<std::string, uint64_t> all;
      std::string per_lane;
      for (auto& l : lanes) {
        for (auto& [k, v] : l->by_status) all[k] += v;
        per_lane += " " + std::to_string(l->ok) + "/" + std::to_string(l->failed);
      }
      std::string text = "failures by status:";
      for (auto& [k, v] : all) text += " " + k + " " + std::to_string(v);
      p.set_value(text + "\nper lane ok/failed:" + per_lane);
    });
    std::printf("%s\n", p.get_future().get().c_str());
  }
  asio::post(cio, [&] { lanes.clear(); });
  cwork.reset();
  cio.stop();
  cthread.join();
  asio::post(vio, [&] { daemon.stop(); });
  vwork.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  vio.stop();
  vthread.join();
  stub.kill();

  // Memory: the first sample after a minute of warm-up (or the first) against the last.
  double base = rss.empty() ? 0 : rss.front().second;
  for (const auto& [t, m] : rss)
    if (t >= 60) {
      base = m;
      break;
    }
  const double end = rss.empty() ? 0 : rss.back().second;
  const bool flat = end <= base * 1.10 + 16;
  const uint64_t accounted = s[1] + s[2];
  std::printf("soak result: %llu URBs submitted, %llu completed ok, %llu failed (stub kills), "
              "%zu lost, %llu duplicated; %llu imports; RSS %.1f MiB after warm-up, %.1f MiB at "
              "the end (%s)\n",
              static_cast<unsigned long long>(s[0]), static_cast<unsigned long long>(s[1]),
              static_cast<unsigned long long>(s[2]), lost, static_cast<unsigned long long>(s[3]),
              static_cast<unsigned long long>(s[4]), base, end, flat ? "flat" : "GREW");
  const bool exact = accounted + lost == s[0];
  if (!exact)
    std::printf("soak: accounting mismatch: %llu submitted vs %llu completed + %zu lost\n",
                static_cast<unsigned long long>(s[0]), static_cast<unsigned long long>(accounted),
                lost);
  return (lost == 0 && s[3] == 0 && exact && flat) ? 0 : 1;
}

}  // namespace vusb_bench
