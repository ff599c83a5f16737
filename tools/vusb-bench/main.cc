// vusb-bench: throughput and latency of vusb, always beside a baseline measured in the same run.
//
//   vusb-bench stub [google-benchmark flags]
//     Gadget Zero bulk source (IN) and sink (OUT) through vusb-stub's USB/IP server over loopback,
//     driven by vusb's own USB/IP client, for 512 B, 16 KiB and 64 KiB URBs with 1 and 8 in
//     flight; then the same shapes over raw loopback TCP (RawTcpBaseline). Round-trip latency of
//     an 8-byte control IN (GET_DESCRIPTOR) against a raw TCP ping-pong of the same size.
//     Prints a summary table with the ratios (medians when --benchmark_repetitions=N is given;
//     this VM's loopback is noisy, so docs/PERFORMANCE.md uses 5 repetitions).
#include <benchmark/benchmark.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstdio>
#include <future>
#include <map>
#include <thread>

#include "devices/emulated/gadget_zero.h"
#include "devices/remote/usbip_remote_device.h"
#include "tools/vusb-bench/raw_tcp_baseline.h"
#include "usb-stub/export_table.h"
#include "usb-stub/usbip_server.h"

namespace {

namespace asio = boost::asio;

// The server side of every benchmark: vusb-stub's server with a Gadget Zero, and the raw TCP
// baseline server, on one loop on their own thread (as vusb-stub runs).
class ServerSide {
 public:
  ServerSide() : work_(io_.get_executor()), server_(io_, exports_, limits()), raw_(io_) {
    thread_ = std::thread([this] { io_.run(); });
    // The device, the export table and the server live on the loop thread (LoopChecker).
    std::promise<void> ready;
    asio::post(io_, [&] {
      device_ = std::make_unique<devices::GadgetZero>(
          devices::GadgetZeroOptions{}, usb::DeviceLocation{.busid = "1-1", .path = {}});
      (void)exports_.add(*device_);
      (void)server_.listen({"127.0.0.1", 0});
      ready.set_value();
    });
    ready.get_future().wait();
  }
  ~ServerSide() {
    std::promise<void> done;
    asio::post(io_, [&] {
      server_.stop();
      raw_.stop();
      exports_.remove(*device_);
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
  static stub::ConnectionLimits limits() { return {}; }
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  stub::ExportTable exports_;
  std::unique_ptr<devices::GadgetZero> device_;
  stub::UsbipServer server_;
  bench::RawTcpServer raw_;
  std::thread thread_;
};

ServerSide* g_server = nullptr;

// The client side: vusb's USB/IP client with Gadget Zero imported and configured (source/sink).
class Client {
 public:
  Client() {
    bool ready = false;
    devices::UsbipRemoteDevice::import(io_, {"127.0.0.1", g_server->usbip_port()}, "1-1", {},
                                       [&](auto r) {
                                         if (!r) {
                                           spdlog::error("import failed: {}", r.error().message);
                                           std::exit(1);
                                         }
                                         device_ = std::move(*r);
                                         device_->set_configuration(3, [&](usb::Status s) {
                                           if (s != usb::Status::kOk) std::exit(1);
                                           ready = true;
                                         });
                                       });
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

  std::vector<uint64_t> control_rtt(uint64_t count) {
    std::vector<uint64_t> rtt;
    rtt.reserve(count);
    for (uint64_t i = 0; i < count; ++i) {
      auto t = usb::Transfer::control(0x80, {0x80, usb::request::kGetDescriptor, 0x0100, 0, 8});
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
  std::unique_ptr<devices::UsbipRemoteDevice> device_;
};

Client* g_client = nullptr;
bench::RawTcpClient* g_raw = nullptr;
asio::io_context* g_raw_io = nullptr;

constexpr uint64_t kBatch = 64;  // URBs per benchmark iteration

void BM_VusbBulk(benchmark::State& state) {
  const bool in = state.range(0) == 1;
  const auto length = static_cast<uint32_t>(state.range(1));
  const int depth = static_cast<int>(state.range(2));
  for (auto _ : state) g_client->bulk(in ? 0x81 : 0x01, length, depth, kBatch);
  state.SetBytesProcessed(int64_t(state.iterations() * kBatch * length));
}

void BM_RawTcp(benchmark::State& state) {
  const bool in = state.range(0) == 1;
  const auto length = static_cast<uint32_t>(state.range(1));
  const int depth = static_cast<int>(state.range(2));
  for (auto _ : state) g_raw->run(in, length, depth, kBatch);
  state.SetBytesProcessed(int64_t(state.iterations() * kBatch * length));
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

void BM_RawTcpRtt(benchmark::State& state) {
  std::vector<uint64_t> all;
  for (auto _ : state) {
    auto r = g_raw->ping(100);
    all.insert(all.end(), r.begin(), r.end());
  }
  add_percentiles(state, std::move(all));
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
BENCHMARK(BM_RawTcpRtt)->MinTime(0.5)->UseRealTime();

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
      auto p50 = r.counters.find("p50_us");
      if (p50 != r.counters.end()) {
        results[name + "/p50"] = p50->second.value;
        results[name + "/p99"] = r.counters.at("p99_us").value;
      }
    }
  }
  void summary() const {
    std::printf("\n%-34s %12s %12s %8s\n", "case", "vusb MB/s", "raw MB/s", "ratio");
    for (const auto& [name, v] : results) {
      if (!name.starts_with("BM_VusbBulk/")) continue;
      std::string args = name.substr(std::string("BM_VusbBulk/").size());
      auto raw = results.find("BM_RawTcp/" + args);
      if (raw == results.end()) continue;
      std::printf("%-34s %12.1f %12.1f %8.2f\n", args.c_str(), v / 1e6, raw->second / 1e6,
                  v / raw->second);
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
    }
  }
  std::map<std::string, double> results;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "stub") {
    std::fprintf(stderr,
                 "usage: vusb-bench stub [--benchmark_filter=...]\n"
                 "  stub   Gadget Zero bulk and control through vusb-stub vs raw loopback TCP\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  argv[1] = argv[0];
  --argc;
  ++argv;
  benchmark::Initialize(&argc, argv);
  ServerSide server;
  g_server = &server;
  Client client;
  g_client = &client;
  asio::io_context raw_io;
  bench::RawTcpClient raw(raw_io, server.raw_port());
  g_raw = &raw;
  g_raw_io = &raw_io;
  Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);
  collector.summary();
  benchmark::Shutdown();
  return 0;
}
