// vusb-bench: throughput and latency of vusb, always beside a baseline measured in the same run.
//
//   vusb-bench stub [google-benchmark flags]
//     Gadget Zero bulk source (IN) and sink (OUT) through vusb-stub's USB/IP server over loopback,
//     driven by vusb's own USB/IP client, for 512 B, 16 KiB and 64 KiB URBs with 1 and 8 in
//     flight; then the same shapes over raw loopback TCP (RawTcpBaseline). Round-trip latency of
//     an 8-byte control IN (GET_DESCRIPTOR) against a raw TCP ping-pong of the same size.
//     Prints a summary table with the ratios (medians when --benchmark_repetitions=N is given;
//     this VM's loopback is noisy, so docs/PERFORMANCE.md uses 5 repetitions).
//
//   vusb-bench tls
//     The same bulk shapes and control RTT over TLS 1.3 with mutual certificates (a second Gadget
//     Zero on the same server behind a tls: listener) beside plain TCP, with the ratio.
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <optional>
#include <thread>
#include <unistd.h>

#include "devices/emulated/gadget_zero.h"
#include "devices/remote/usbip_remote_device.h"
#include "devices/remote/usbredir_remote_device.h"
#include "tools/vusb-bench/raw_tcp_baseline.h"
#include "usb/net/pki.h"
#include "usb/net/tls.h"
#include "tools/vusb-bench/soak.h"
#include "usb/usbip/export_table.h"
#include "usb/usbip/server.h"
#include "vmm-frontend/vusbd.h"

namespace {

namespace asio = boost::asio;

// The server side of every benchmark: vusb-stub's server with a Gadget Zero, and the raw TCP
// baseline server, on one loop on their own thread (as vusb-stub runs).
class ServerSide {
 public:
  // `tls`: also a second Gadget Zero (1-2) behind a TLS 1.3 listener (certificates made here).
  explicit ServerSide(bool tls = false)
      : work_(io_.get_executor()), server_(io_, exports_, limits()), raw_(io_) {
    if (tls) make_tls();
    thread_ = std::thread([this] { io_.run(); });
    // The device, the export table and the server live on the loop thread (LoopChecker).
    std::promise<void> ready;
    asio::post(io_, [&] {
      device_ = std::make_unique<devices::GadgetZero>(
          devices::GadgetZeroOptions{}, usb::DeviceLocation{.busid = "1-1", .path = {}});
      (void)exports_.add(*device_);
      (void)server_.listen({"127.0.0.1", 0});
      if (tls_server_) {
        device2_ = std::make_unique<devices::GadgetZero>(
            devices::GadgetZeroOptions{}, usb::DeviceLocation{.busid = "1-2", .path = {}});
        (void)exports_.add(*device2_);
        usb::net::Endpoint at("127.0.0.1", 0);
        at.tls = true;
        if (auto r = tls_server_->listen(at); !r) {
          spdlog::error("tls listen: {}", r.error().message);
          std::exit(1);
        }
      }
      ready.set_value();
    });
    ready.get_future().wait();
  }
  uint16_t tls_port() const { return tls_server_ ? tls_server_->local_port() : 0; }
  std::shared_ptr<const usb::net::TlsContext> client_tls() const { return client_tls_; }
  ~ServerSide() {
    std::promise<void> done;
    asio::post(io_, [&] {
      server_.stop();
      if (tls_server_) tls_server_->stop();
      raw_.stop();
      exports_.remove(*device_);
      if (device2_) exports_.remove(*device2_);
      done.set_value();
    });
    done.get_future().wait();
    work_.reset();
    io_.stop();
    thread_.join();
  }
  uint16_t usbip_port() const { return server_.local_port(); }
  uint16_t raw_port() const { return raw_.port(); }

 private:
  static usb::usbip::ConnectionLimits limits() { return {}; }
  // A CA, a server and a client certificate in a scratch directory; the contexts for both ends.
  void make_tls() {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("vusb-bench-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto ca = usb::net::make_ca("bench CA");
    auto server = usb::net::issue_certificate(*ca, {"stub", {"127.0.0.1"}});
    auto client = usb::net::issue_certificate(*ca, {"vusbd", {}});
    auto put = [&](const std::string& name, const std::string& text) {
      std::ofstream(dir / name) << text;
      return (dir / name).string();
    };
    usb::net::TlsConfig s, c;
    s.ca_file = c.ca_file = put("ca.crt", ca->cert);
    s.cert_file = put("stub.crt", server->cert);
    s.key_file = put("stub.key", server->key);
    c.cert_file = put("vusbd.crt", client->cert);
    c.key_file = put("vusbd.key", client->key);
    usb::net::Listener::Options o;
    o.tls = *usb::net::TlsContext::make(s, usb::net::TlsRole::kServer);
    client_tls_ = *usb::net::TlsContext::make(c, usb::net::TlsRole::kClient);
    tls_server_.emplace(io_, exports_, limits(), o);
    std::filesystem::remove_all(dir);  // the contexts have read them
  }
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  usb::usbip::ExportTable exports_;
  std::unique_ptr<devices::GadgetZero> device_;
  usb::usbip::Server server_;
  std::unique_ptr<devices::GadgetZero> device2_;
  std::optional<usb::usbip::Server> tls_server_;
  std::shared_ptr<const usb::net::TlsContext> client_tls_;
  bench::RawTcpServer raw_;
  std::thread thread_;
};

ServerSide* g_server = nullptr;

// The client side: Gadget Zero imported and configured (source/sink) with vusb's USB/IP client,
// or with its usbredir guest (what QEMU's usb-redir is) when `usbredir` is set.
class Client {
 public:
  explicit Client(uint16_t port, bool batch = true, bool usbredir = false,
                  std::shared_ptr<const usb::net::TlsContext> tls = nullptr,
                  const std::string& busid = "1-1") {
    bool ready = false;
    auto imported = [&](auto r) {
      if (!r) {
        spdlog::error("import failed: {}", r.error().message);
        std::exit(1);
      }
      device_ = std::move(*r);
      device_->set_configuration(3, [&](usb::Status s) {
        if (s != usb::Status::kOk) std::exit(1);
        ready = true;
      });
    };
    if (usbredir) {
      devices::UsbredirRemoteDevice::import(io_, {"127.0.0.1", port}, {}, imported);
    } else {
      devices::UsbipRemoteDevice::Options options;
      options.batch = batch;
      options.tls = tls;
      usb::net::Endpoint at("127.0.0.1", port);
      at.tls = tls != nullptr;
      devices::UsbipRemoteDevice::import(io_, at, busid, std::move(options), imported);
    }
    while (!ready) io_.run_one();
  }

  // Keeps `depth` bulk URBs of `length` bytes in flight until `count` complete; each completed
  // transfer is rearmed and resubmitted (same object, same buffer).
  void bulk(uint8_t ep, uint32_t length, int depth, uint64_t count) {
    std::vector<std::unique_ptr<usb::Transfer>> ts;
    uint64_t submitted = 0, completed = 0;
    std::function<void(usb::Transfer&)> on_done;
    auto submit = [&](usb::Transfer& t) {
      ++submitted;
      t.set_completion([&](usb::Transfer& x) { on_done(x); });
      device_->submit(t);
    };
    on_done = [&](usb::Transfer& t) {
      if (t.status() != usb::Status::kOk) {
        spdlog::error("bulk transfer failed: {}", usb::to_string(t.status()));
        std::exit(1);
      }
      ++completed;
      if (submitted < count) {
        t.rearm();
        submit(t);
      }
    };
    for (int i = 0; i < depth; ++i) {
      ts.push_back(std::make_unique<usb::Transfer>(ep, usb::TransferType::kBulk, length));
      std::fill_n(ts.back()->buffer().data(), length, 0);  // Gadget Zero pattern 0
    }
    for (auto& t : ts)
      if (submitted < count) submit(*t);
    while (completed < count) io_.run_one();
  }

  // GET_DESCRIPTOR(device, 8 bytes) by default; `value` picks another descriptor.
  std::vector<uint64_t> control_rtt(uint64_t count, uint16_t value = 0x0100) {
    std::vector<uint64_t> rtt;
    rtt.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      auto t = usb::Transfer::control(0x80, {0x80, usb::request::kGetDescriptor, value, 0x0409, 8});
      bool done = false;
      t->set_completion([&](usb::Transfer&) { done = true; });
      auto t0 = std::chrono::steady_clock::now();
      device_->submit(*t);
      while (!done) io_.run_one();
      rtt.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - t0)
                        .count());
    }
    return rtt;
  }

 private:
  asio::io_context io_;
  std::unique_ptr<usb::Device> device_;
};

Client* g_client = nullptr;
Client* g_tls_client = nullptr;    // the same server's second Gadget Zero over TLS 1.3
Client* g_vusbd_client = nullptr;  // through vusbd
Client* g_redir_client = nullptr;  // through vusbd's usbredir adapter
Client* g_unbatched = nullptr;     // straight to the stub, one write per URB
bench::RawTcpClient* g_raw = nullptr;
bench::RawTcpClient* g_relayed = nullptr;  // client → RawTcpRelay → RawTcpServer
bench::RawTcpClient* g_spliced = nullptr;  // the same through a splice(2) relay
asio::io_context* g_raw_io = nullptr;

constexpr uint64_t kBatch = 64;  // URBs per benchmark iteration

// The bulk shapes every throughput case shares: range(0) IN (1) or OUT, range(1) bytes per URB,
// range(2) URBs in flight; kBatch URBs per iteration.
template <typename Run>
void run_bulk(benchmark::State& state, Run run) {
  const bool in = state.range(0) == 1;
  const auto length = static_cast<uint32_t>(state.range(1));
  const int depth = static_cast<int>(state.range(2));
  for (auto _ : state) run(in, length, depth);
  state.SetBytesProcessed(int64_t(state.iterations() * kBatch * length));
}

void BM_VusbBulk(benchmark::State& state) {
  run_bulk(state, [&](bool in, uint32_t length, int depth) {
    g_client->bulk(in ? 0x81 : 0x01, length, depth, kBatch);
  });
}

// vusb-bench tls: the same shapes over TLS 1.3 (mutual certificates), beside plain TCP.
void BM_TlsBulk(benchmark::State& state) {
  run_bulk(state, [&](bool in, uint32_t length, int depth) {
    g_tls_client->bulk(in ? 0x81 : 0x01, length, depth, kBatch);
  });
}

void BM_RawTcp(benchmark::State& state) {
  run_bulk(state,
           [&](bool in, uint32_t length, int depth) { g_raw->run(in, length, depth, kBatch); });
}

// The two-hop yardstick for vusbd: the same shapes through a byte relay on its own thread.
void BM_RawRelay(benchmark::State& state) {
  run_bulk(state, [&](bool in, uint32_t length, int depth) {
    (state.range(3) ? g_spliced : g_relayed)->run(in, length, depth, kBatch);
  });
}

void add_percentiles(benchmark::State& state, std::vector<uint64_t> rtt) {
  std::sort(rtt.begin(), rtt.end());
  state.counters["p50_us"] = double(rtt[rtt.size() / 2]) / 1000.0;
  state.counters["p99_us"] = double(rtt[rtt.size() * 99 / 100]) / 1000.0;
}

void BM_VusbControlRtt(benchmark::State& state) {
  std::vector<uint64_t> all;
  for (auto _ : state) {
    auto r = g_client->control_rtt(100);
    all.insert(all.end(), r.begin(), r.end());
  }
  add_percentiles(state, std::move(all));
}

void BM_TlsControlRtt(benchmark::State& state) {
  std::vector<uint64_t> all;
  for (auto _ : state) {
    auto r = g_tls_client->control_rtt(100);
    all.insert(all.end(), r.begin(), r.end());
  }
  add_percentiles(state, std::move(all));
}

void BM_RawTcpRtt(benchmark::State& state) {
  std::vector<uint64_t> all;
  for (auto _ : state) {
    auto r = g_raw->ping(100);
    all.insert(all.end(), r.begin(), r.end());
  }
  add_percentiles(state, std::move(all));
}

// vusbd on its own loop thread, importing the stub's Gadget Zero and serving one VM.
class VusbdSide {
 public:
  explicit VusbdSide(uint16_t stub_port) : work_(io_.get_executor()) {
    thread_ = std::thread([this] { io_.run(); });
    std::promise<void> ready;
    asio::post(io_, [&] {
      vusbd::VusbdConfig config;
      config.vms = {{"vm1", {"127.0.0.1", 0}}, {"vm2", {"127.0.0.1", 0}}, {"vm3", {"127.0.0.1", 0}}};
      config.vms[2].usbredir = {{"gz", {"127.0.0.1", 0}, false}};  // vm3: QEMU's usb-redir
      vusbd::DeviceConfig d;
      d.name = "gz";
      (void)vusbd::parse_source("usbip://127.0.0.1:" + std::to_string(stub_port) + "/1-1", d);
      d.vms = {"vm1", "vm2", "vm3"};
      config.devices = {d};
      daemon_ = std::make_unique<vusbd::Vusbd>(io_, config);
      (void)daemon_->start([&] { ready.set_value(); });
    });
    ready.get_future().wait();
    std::promise<void> port;
    asio::post(io_, [&] {
      port_ = daemon_->vm_port("vm1");
      port2_ = daemon_->vm_port("vm2");
      auto at = usb::net::parse_endpoint(
          daemon_->vms_json()[2]["usbredir"][0]["listen"].get<std::string>());
      redir_port_ = at ? at->tcp.port : 0;
      port.set_value();
    });
    port.get_future().wait();
  }
  ~VusbdSide() {
    std::promise<void> done;
    asio::post(io_, [&] {
      daemon_->stop();
      done.set_value();
    });
    done.get_future().wait();
    work_.reset();
    io_.stop();
    thread_.join();
  }
  uint16_t port() const { return port_; }
  uint16_t port2() const { return port2_; }
  uint16_t redir_port() const { return redir_port_; }  // vm3's usbredir listener

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  std::unique_ptr<vusbd::Vusbd> daemon_;
  uint16_t port_ = 0, port2_ = 0, redir_port_ = 0;
  std::thread thread_;
};

void BM_VusbdBulk(benchmark::State& state) {
  run_bulk(state, [&](bool in, uint32_t length, int depth) {
    g_vusbd_client->bulk(in ? 0x81 : 0x01, length, depth, kBatch);
  });
}

// Write batching in vusb's client: 512-byte OUT URBs, 8 in flight, through vusbd (vm1 batched,
// vm2 unbatched; the device is shared).
void BM_Batching(benchmark::State& state) {
  Client* c = state.range(0) ? g_client : g_unbatched;
  for (auto _ : state) c->bulk(0x01, 512, 8, kBatch);
  state.SetItemsProcessed(int64_t(state.iterations() * kBatch));
}

// Control round trip through vusbd: served from its cache (device descriptor) or forwarded to
// the stub (a string descriptor, which vusbd does not cache).
void BM_VusbdControlRtt(benchmark::State& state) {
  const uint16_t value = state.range(0) ? 0x0100 : 0x0301;
  std::vector<uint64_t> all;
  for (auto _ : state) {
    auto r = g_vusbd_client->control_rtt(100, value);
    all.insert(all.end(), r.begin(), r.end());
  }
  add_percentiles(state, std::move(all));
}

// The same through vusbd's usbredir adapter (vm3: what QEMU's usb-redir sends) and, for the
// ratio, through its USB/IP adapter (vm1).
void BM_RedirBulk(benchmark::State& state) {
  run_bulk(state, [&](bool in, uint32_t length, int depth) {
    g_redir_client->bulk(in ? 0x81 : 0x01, length, depth, kBatch);
  });
}
void BM_UsbipBulk(benchmark::State& state) {
  run_bulk(state, [&](bool in, uint32_t length, int depth) {
    g_vusbd_client->bulk(in ? 0x81 : 0x01, length, depth, kBatch);
  });
}
void BM_RedirControlRtt(benchmark::State& state) {
  const uint16_t value = state.range(0) ? 0x0100 : 0x0301;
  std::vector<uint64_t> all;
  for (auto _ : state) {
    auto r = g_redir_client->control_rtt(100, value);
    all.insert(all.end(), r.begin(), r.end());
  }
  add_percentiles(state, std::move(all));
}

void redir_bulk_args(benchmark::internal::Benchmark* b) {
  for (int in : {1, 0})
    for (int len : {16384, 65536})
      for (int depth : {1, 8}) b->Args({in, len, depth});
  b->ArgNames({"in", "bytes", "depth"});
  b->MinTime(0.5);
  b->UseRealTime();
}

void vusbd_bulk_args(benchmark::internal::Benchmark* b) {
  for (int in : {1, 0})
    for (int depth : {1, 8}) b->Args({in, 65536, depth});
  b->Args({1, 512, 8});
  b->ArgNames({"in", "bytes", "depth"});
  b->MinTime(0.5);
  b->UseRealTime();
}

void bulk_args(benchmark::internal::Benchmark* b) {
  for (int in : {1, 0})
    for (int len : {512, 16384, 65536})
      for (int depth : {1, 8}) b->Args({in, len, depth});
  b->ArgNames({"in", "bytes", "depth"});
  b->MinTime(0.5);
  b->UseRealTime();
}

BENCHMARK(BM_VusbBulk)->Apply(bulk_args);
BENCHMARK(BM_RawTcp)->Apply(bulk_args);
BENCHMARK(BM_VusbControlRtt)->MinTime(0.5)->UseRealTime();
BENCHMARK(BM_TlsBulk)->Apply(bulk_args);
BENCHMARK(BM_TlsControlRtt)->MinTime(0.5)->UseRealTime();
BENCHMARK(BM_VusbdBulk)->Apply(vusbd_bulk_args);
BENCHMARK(BM_RawRelay)->Apply([](benchmark::internal::Benchmark* b) {
  for (int splice : {0, 1}) {
    for (int in : {1, 0})
      for (int depth : {1, 8}) b->Args({in, 65536, depth, splice});
    b->Args({1, 512, 8, splice});
  }
  b->ArgNames({"in", "bytes", "depth", "splice"});
  b->MinTime(0.5);
  b->UseRealTime();
});
BENCHMARK(BM_Batching)->Arg(1)->Arg(0)->ArgName("batched")->MinTime(0.5)->UseRealTime();
BENCHMARK(BM_VusbdControlRtt)->Arg(1)->Arg(0)->ArgName("cached")->MinTime(0.5)->UseRealTime();
BENCHMARK(BM_RawTcpRtt)->MinTime(0.5)->UseRealTime();
BENCHMARK(BM_RedirBulk)->Apply(redir_bulk_args);
BENCHMARK(BM_UsbipBulk)->Apply(redir_bulk_args);
BENCHMARK(BM_RedirControlRtt)->Arg(1)->Arg(0)->ArgName("cached")->MinTime(0.5)->UseRealTime();

// Collects results so the ratios can be printed next to each other at the end.
class Collector : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const auto& r : runs) {
      // With --benchmark_repetitions, the median of the repetitions is what the summary uses.
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      if (r.run_type == Run::RT_Iteration && r.repetitions > 1) continue;
      std::string name = r.benchmark_name();
      if (r.run_type == Run::RT_Aggregate) name = name.substr(0, name.rfind('_'));
      auto bps = r.counters.find("bytes_per_second");
      if (bps != r.counters.end()) results[name] = bps->second.value;
      auto ips = r.counters.find("items_per_second");
      if (ips != r.counters.end()) results[name] = ips->second.value;
      auto p50 = r.counters.find("p50_us");
      if (p50 != r.counters.end()) {
        results[name + "/p50"] = p50->second.value;
        results[name + "/p99"] = r.counters.at("p99_us").value;
      }
    }
  }
  // usbredir mode: each shape through vusbd's usbredir adapter, its USB/IP adapter and raw TCP.
  void summary_redir() const {
    std::printf("\n%-34s %10s %10s %10s %8s %8s\n", "case", "redir MB/s", "usbip MB/s",
                "raw MB/s", "r/usbip", "r/raw");
    for (const auto& [name, v] : results) {
      if (!name.starts_with("BM_RedirBulk/")) continue;
      const std::string args = name.substr(std::string("BM_RedirBulk/").size());
      auto usbip = results.find("BM_UsbipBulk/" + args);
      auto raw = results.find("BM_RawTcp/" + args);
      if (usbip == results.end() || raw == results.end()) continue;
      std::printf("%-34s %10.1f %10.1f %10.1f %8.2f %8.2f\n", args.c_str(), v / 1e6,
                  usbip->second / 1e6, raw->second / 1e6, v / usbip->second, v / raw->second);
    }
    auto get = [&](const std::string& n) {
      auto it = results.find(n);
      return it == results.end() ? 0.0 : it->second;
    };
    for (const char* pct : {"p50", "p99"}) {
      const std::string suffix = std::string("/min_time:0.500/real_time/") + pct;
      const double rc = get("BM_RedirControlRtt/cached:1" + suffix);
      const double rf = get("BM_RedirControlRtt/cached:0" + suffix);
      const double uc = get("BM_VusbdControlRtt/cached:1" + suffix);
      const double uf = get("BM_VusbdControlRtt/cached:0" + suffix);
      const double raw = get(std::string("BM_RawTcpRtt/min_time:0.500/real_time/") + pct);
      if (rc > 0 && uc > 0)
        std::printf("control RTT %s: usbredir cached %.1f us, forwarded %.1f us; USB/IP cached "
                    "%.1f us, forwarded %.1f us; raw TCP %.1f us; usbredir/USB/IP %.2f (cached), "
                    "%.2f (forwarded)\n",
                    pct, rc, rf, uc, uf, raw, rc / uc, uf > 0 ? rf / uf : 0.0);
    }
  }
  void summary(const std::string& prefix) const {
    std::printf("\n%-34s %10s %10s %6s %10s %6s %10s %6s\n", "case", "vusb MB/s", "raw MB/s",
                "ratio", "relay", "ratio", "splice", "ratio");
    for (const auto& [name, v] : results) {
      if (!name.starts_with(prefix + "/")) continue;
      std::string args = name.substr(prefix.size() + 1);
      auto raw = results.find("BM_RawTcp/" + args);
      if (raw == results.end()) continue;
      // The relays' names carry one more argument: ".../depth:D/splice:S/min_time...".
      auto relay_name = [&](int splice) {
        std::string a = args;
        a.insert(a.find("/min_time"), "/splice:" + std::to_string(splice));
        return "BM_RawRelay/" + a;
      };
      auto relay = results.find(relay_name(0)), spliced = results.find(relay_name(1));
      if (relay == results.end() || spliced == results.end()) {
        std::printf("%-34s %10.1f %10.1f %6.2f\n", args.c_str(), v / 1e6, raw->second / 1e6,
                    v / raw->second);
        continue;
      }
      std::printf("%-34s %10.1f %10.1f %6.2f %10.1f %6.2f %10.1f %6.2f\n", args.c_str(), v / 1e6,
                  raw->second / 1e6, v / raw->second, relay->second / 1e6, v / relay->second,
                  spliced->second / 1e6, spliced->second / raw->second);
    }
    auto get = [&](const std::string& k) {
      auto it = results.find(k);
      return it == results.end() ? 0.0 : it->second;
    };
    for (const char* pct : {"p50", "p99"}) {
      double v = get(std::string("BM_VusbControlRtt/min_time:0.500/real_time/") + pct);
      double r = get(std::string("BM_RawTcpRtt/min_time:0.500/real_time/") + pct);
      if (v > 0 && r > 0)
        std::printf("control RTT %s: vusb %.1f us, raw TCP %.1f us, ratio %.2f\n", pct, v, r,
                    v / r);
      double cached =
          get(std::string("BM_VusbdControlRtt/cached:1/min_time:0.500/real_time/") + pct);
      double fwd = get(std::string("BM_VusbdControlRtt/cached:0/min_time:0.500/real_time/") + pct);
      if (cached > 0 && fwd > 0)
        std::printf("control RTT %s through vusbd: cached %.1f us, forwarded %.1f us, ratio %.2f\n",
                    pct, cached, fwd, cached / fwd);
    }
    double on = get("BM_Batching/batched:1/min_time:0.500/real_time");
    double off = get("BM_Batching/batched:0/min_time:0.500/real_time");
    if (on > 0 && off > 0)
      std::printf(
          "client write batching, 512 B OUT x 8: batched %.0f URB/s, unbatched %.0f URB/s, "
          "gain %.2fx\n",
          on, off, on / off);
  }
  // vusb-bench tls: TLS against plain TCP, case by case.
  void summary_tls() const {
    std::printf("\n%-34s %10s %10s %6s\n", "case", "TLS MB/s", "TCP MB/s", "ratio");
    for (const auto& [name, v] : results) {
      if (!name.starts_with("BM_TlsBulk/")) continue;
      const std::string args = name.substr(std::strlen("BM_TlsBulk/"));
      auto plain = results.find("BM_VusbBulk/" + args);
      if (plain == results.end()) continue;
      std::printf("%-34s %10.1f %10.1f %6.2f\n", args.c_str(), v / 1e6, plain->second / 1e6,
                  v / plain->second);
    }
    for (const char* pct : {"p50", "p99"}) {
      auto t = results.find(std::string("BM_TlsControlRtt/min_time:0.500/real_time/") + pct);
      auto p = results.find(std::string("BM_VusbControlRtt/min_time:0.500/real_time/") + pct);
      if (t != results.end() && p != results.end())
        std::printf("control RTT %s: TLS %.1f us, TCP %.1f us, ratio %.2f\n", pct, t->second,
                    p->second, t->second / p->second);
    }
  }
  std::map<std::string, double> results;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc >= 2 ? argv[1] : "";
  if (mode == "soak") return vusb_bench::run_soak(argc, argv, argv[0]);
  if (mode != "stub" && mode != "tls" && mode != "vusbd" && mode != "usbredir" &&
      mode != "schedulers" && mode != "xhci") {
    std::fprintf(
        stderr,
        "usage: vusb-bench stub|tls|vusbd|usbredir|schedulers|xhci [google-benchmark flags]\n"
        "       vusb-bench soak [--minutes M] [--vms N] [--devices D] [--inflight K] [--kills X]\n"
        "  soak        N VMs x D devices through vusbd for M minutes, vusb-stub killed X times:\n"
        "              every URB completes exactly once, memory stays flat\n"
        "  stub        Gadget Zero bulk and control through vusb-stub vs raw loopback TCP\n"
        "  tls         the stub shapes over TLS 1.3 (mutual certificates) vs plain TCP\n"
        "  vusbd       client -> vusbd -> vusb-stub -> Gadget Zero vs raw loopback TCP;\n"
        "              batched vs unbatched client writes; cached vs forwarded control\n"
        "  usbredir    bulk and control through vusbd's usbredir adapter (QEMU's usb-redir)\n"
        "              vs its USB/IP adapter and raw loopback TCP\n"
        "  schedulers  fair-queue decision cost and Jain's index, 2..1024 VMs, vs a FIFO\n"
        "  xhci        Gadget Zero bulk IN through our xHCI (reference driver, in process)\n"
        "              vs the device alone and a memcpy\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  // Keep only this mode's benchmarks (plus the baselines they are compared with).
  std::vector<char*> args{argv[0]};
  std::string filter =
      mode == "stub" ? "--benchmark_filter=^BM_(VusbBulk|RawTcp|VusbControlRtt|RawTcpRtt)/"
      : mode == "tls"
          ? "--benchmark_filter=^BM_(VusbBulk|TlsBulk|VusbControlRtt|TlsControlRtt)/"
      : mode == "vusbd"
          ? "--benchmark_filter=^BM_(VusbdBulk|RawTcp|RawRelay|Batching|VusbdControlRtt)/"
      : mode == "usbredir"
          ? "--benchmark_filter=^BM_(RedirBulk|UsbipBulk|RawTcp|RedirControlRtt|VusbdControlRtt|"
            "RawTcpRtt)/(in:[01]/bytes:(16384|65536)/|cached|min_time)"
      : mode == "schedulers" ? "--benchmark_filter=^BM_(FairQueueDecision|FifoBaseline)/"
                             : "--benchmark_filter=^BM_(XhciBulkIn|GadgetZeroDirect|MemcpyFloor)/";
  bool has_filter = false;
  for (int i = 2; i < argc; ++i) {
    args.push_back(argv[i]);
    has_filter = has_filter || std::string(argv[i]).starts_with("--benchmark_filter");
  }
  if (!has_filter) args.push_back(filter.data());
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (mode == "schedulers" || mode == "xhci") {  // in process: no servers, no summary table
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
  }
  ServerSide server(mode == "tls");
  g_server = &server;
  asio::io_context raw_io;
  bench::RawTcpClient raw(raw_io, server.raw_port());
  g_raw = &raw;
  g_raw_io = &raw_io;
  // Gadget Zero takes one importer: in stub mode vusb's client, in vusbd mode vusbd (whose VM
  // port then serves a batched and an unbatched client, both in shared mode).
  std::unique_ptr<Client> direct, via, unbatched, redir;
  std::unique_ptr<VusbdSide> vusbd_side;
  // The relay gets a loop thread of its own, as vusbd has.
  asio::io_context relay_io, relayed_io;
  std::optional<bench::RawTcpRelay> relay, splice_relay;
  std::optional<bench::RawTcpClient> relayed, spliced;
  std::thread relay_thread;
  auto relay_work = asio::make_work_guard(relay_io);
  std::unique_ptr<Client> tls_client;
  if (mode == "stub" || mode == "tls") {
    direct = std::make_unique<Client>(server.usbip_port());
    g_client = direct.get();
    if (mode == "tls") {
      tls_client = std::make_unique<Client>(server.tls_port(), true, false, server.client_tls(),
                                            "1-2");
      g_tls_client = tls_client.get();
    }
  } else {
    vusbd_side = std::make_unique<VusbdSide>(server.usbip_port());
    via = std::make_unique<Client>(vusbd_side->port());
    unbatched = std::make_unique<Client>(vusbd_side->port2(), /*batch=*/false);
    g_vusbd_client = g_client = via.get();
    g_unbatched = unbatched.get();
    relay.emplace(relay_io, server.raw_port());
    splice_relay.emplace(relay_io, server.raw_port(), /*splice=*/true);
    if (mode == "usbredir")
      redir = std::make_unique<Client>(vusbd_side->redir_port(), true, /*usbredir=*/true);
    g_redir_client = redir.get();
    relay_thread = std::thread([&] { relay_io.run(); });
    relayed.emplace(relayed_io, relay->port());
    spliced.emplace(relayed_io, splice_relay->port());
    g_relayed = &*relayed;
    g_spliced = &*spliced;
  }
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  if (mode == "usbredir")
    collector.summary_redir();
  else if (mode == "tls")
    collector.summary_tls();
  else
    collector.summary(mode == "stub" ? "BM_VusbBulk" : "BM_VusbdBulk");
  benchmark::Shutdown();
  if (relay_thread.joinable()) {
    asio::post(relay_io, [&] {
      relay->stop();
      splice_relay->stop();
    });
    relay_work.reset();
    relay_io.stop();
    relay_thread.join();
  }
  return 0;
}
