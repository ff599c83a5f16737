// vusb-probe: a small USB/IP importer of vusb's own, for checking a server from the outside.
//   vusb-probe list HOST[:PORT]                 exported devices (OP_REQ_DEVLIST)
//   vusb-probe descriptors HOST[:PORT] BUSID     import, print the device and its configurations
//   vusb-probe inquiry HOST[:PORT] BUSID         import a mass-storage device (bulk-only
//                                                transport) and send SCSI INQUIRY; prints the
//                                                vendor / product / revision it answers
// Exit status 0 on success, 1 on a USB or protocol failure, 2 on bad usage.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <optional>
#include <string>

#include "devices/remote/usbip_remote_device.h"
#include "usb/core/byte_order.h"

namespace {

namespace asio = boost::asio;

// Runs the loop until `done` is set or the deadline passes.
bool run_until(asio::io_context& io, const bool& done,
               std::chrono::seconds limit = std::chrono::seconds(20)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done && std::chrono::steady_clock::now() < deadline) {
    io.run_one_for(std::chrono::milliseconds(100));
    if (io.stopped()) io.restart();
  }
  return done;
}

std::unique_ptr<devices::UsbipRemoteDevice> import(
    asio::io_context& io, const usb::net::Endpoint& hp, const std::string& busid,
    std::shared_ptr<const usb::net::TlsContext> tls) {
  std::unique_ptr<devices::UsbipRemoteDevice> dev;
  bool done = false;
  devices::UsbipRemoteDevice::Options options;
  options.tls = std::move(tls);
  devices::UsbipRemoteDevice::import(io, hp, busid, std::move(options), [&](auto r) {
    if (!r)
      spdlog::error("import {}: {}", busid, r.error().message);
    else
      dev = std::move(*r);
    done = true;
  });
  if (!run_until(io, done)) spdlog::error("import {}: timed out", busid);
  return dev;
}

// Submits one transfer and waits for it.
usb::Status run_transfer(asio::io_context& io, usb::Device& dev, usb::Transfer& t) {
  bool done = false;
  t.set_completion([&](usb::Transfer&) { done = true; });
  dev.submit(t);
  if (!run_until(io, done)) {
    t.cancel();
    run_until(io, done, std::chrono::seconds(2));
    return usb::Status::kTimeout;
  }
  return t.status();
}

void print_descriptors(const usb::Device& dev) {
  const auto& d = dev.descriptors().device;
  std::printf(
      "device %04x:%04x bcdUSB %x.%02x class %02x/%02x/%02x speed %s, %u configuration(s)\n",
      d.vendor_id, d.product_id, d.bcd_usb >> 8, d.bcd_usb & 0xff, d.device_class,
      d.device_subclass, d.device_protocol, std::string(usb::to_string(dev.speed())).c_str(),
      d.num_configurations);
  for (const auto& c : dev.descriptors().configurations) {
    std::printf("  configuration %u: %u interface(s), attributes %02x, max power %u\n", c.value,
                c.num_interfaces, c.attributes, c.max_power);
    for (const auto& i : c.interfaces) {
      std::printf("    interface %u alt %u class %02x/%02x/%02x\n", i.number, i.alternate,
                  i.interface_class, i.interface_subclass, i.interface_protocol);
      for (const auto& e : i.endpoints)
        std::printf("      endpoint %02x %s max packet %u interval %u\n", e.address,
                    std::string(usb::to_string(e.type())).c_str(), e.max_packet(), e.interval);
    }
  }
}

// SCSI INQUIRY over USB Mass Storage Bulk-Only Transport (USB MSC BOT 1.0, 5.1 CBW / 5.2 CSW).
int inquiry(asio::io_context& io, devices::UsbipRemoteDevice& dev) {
  const usb::ConfigurationDescriptor* cfg = nullptr;
  const usb::InterfaceDescriptor* msc = nullptr;
  for (const auto& c : dev.descriptors().configurations)
    for (const auto& i : c.interfaces)
      if (!msc && i.interface_class == 0x08 && i.interface_protocol == 0x50) {
        cfg = &c;
        msc = &i;
      }
  if (!msc) {
    spdlog::error("no mass-storage bulk-only interface");
    return 1;
  }
  if (dev.active_configuration() != cfg->value) {
    bool done = false;
    usb::Status st = usb::Status::kIoError;
    dev.set_configuration(cfg->value, [&](usb::Status s) {
      st = s;
      done = true;
    });
    if (!run_until(io, done) || st != usb::Status::kOk) {
      spdlog::error("SET_CONFIGURATION {} failed: {}", cfg->value, usb::to_string(st));
      return 1;
    }
  }
  uint8_t ep_in = 0, ep_out = 0;
  for (const auto& e : msc->endpoints)
    if (e.type() == usb::TransferType::kBulk)
      (e.direction() == usb::Direction::kIn ? ep_in : ep_out) = e.address;
  if (!ep_in || !ep_out) {
    spdlog::error("mass-storage interface lacks bulk endpoints");
    return 1;
  }
  constexpr uint32_t kTag = 0x76757362;  // "vusb"
  constexpr uint32_t kLen = 36;
  usb::Transfer cbw(ep_out, usb::TransferType::kBulk, 31);
  uint8_t* c = cbw.buffer().data();
  std::fill_n(c, 31, 0);
  usb::store_le32(c, 0x43425355);  // "USBC"
  usb::store_le32(c + 4, kTag);
  usb::store_le32(c + 8, kLen);
  c[12] = 0x80;  // data-in
  c[13] = 0;     // LUN
  c[14] = 6;     // CDB length
  c[15] = 0x12;  // INQUIRY
  c[19] = kLen;  // allocation length
  if (auto s = run_transfer(io, dev, cbw); s != usb::Status::kOk) {
    spdlog::error("CBW: {}", usb::to_string(s));
    return 1;
  }
  usb::Transfer data(ep_in, usb::TransferType::kBulk, kLen);
  if (auto s = run_transfer(io, dev, data); s != usb::Status::kOk) {
    spdlog::error("INQUIRY data: {}", usb::to_string(s));
    return 1;
  }
  usb::Transfer csw(ep_in, usb::TransferType::kBulk, 13);
  if (auto s = run_transfer(io, dev, csw); s != usb::Status::kOk || csw.actual_length() != 13) {
    spdlog::error("CSW: {} ({} bytes)", usb::to_string(s), csw.actual_length());
    return 1;
  }
  const uint8_t* w = csw.data().data();
  if (usb::load_le32(w) != 0x53425355 || usb::load_le32(w + 4) != kTag || w[12] != 0) {
    spdlog::error("CSW signature/tag/status wrong (status {})", w[12]);
    return 1;
  }
  auto field = [&](size_t off, size_t len) {
    std::string s(reinterpret_cast<const char*>(data.data().data()) + off,
                  std::min(len, data.actual_length() > off ? data.actual_length() - off : 0));
    while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
    return s;
  };
  std::printf("INQUIRY: peripheral type %u vendor '%s' product '%s' revision '%s'\n",
              data.data()[0] & 0x1f, field(8, 8).c_str(), field(16, 16).c_str(),
              field(32, 4).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "vusb-probe: import a device from a USB/IP server (vusb-stub or usbipd) and look at it",
      "vusb-probe"};
  app.require_subcommand(1);
  std::string server, busid;
  auto* list = app.add_subcommand("list", "List exported devices");
  list->add_option("server", server,
                   "HOST[:PORT] (port 3240 by default) or unix:PATH; tls:HOST:PORT over TLS")
      ->required();
  usb::net::TlsConfig tls_config;
  app.add_option("--tls-ca", tls_config.ca_file, "PEM CA the server's certificate must chain to");
  app.add_option("--tls-cert", tls_config.cert_file, "PEM client certificate");
  app.add_option("--tls-key", tls_config.key_file, "PEM key of --tls-cert");
  app.add_option("--tls-psk", tls_config.psk_file, "IDENTITY:KEY file (a TLS PSK)");
  app.add_option("--tls-psk-identity", tls_config.psk_identity, "Which line of --tls-psk");
  app.add_option("--tls-server-name", tls_config.server_name,
                 "Name the server's certificate must carry (default: the host; * for any)");
  auto* desc = app.add_subcommand("descriptors", "Import a device and print its descriptors");
  desc->add_option("server", server)->required();
  desc->add_option("busid", busid)->required();
  auto* inq = app.add_subcommand("inquiry", "Import a mass-storage device and send SCSI INQUIRY");
  inq->add_option("server", server)->required();
  inq->add_option("busid", busid)->required();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_pattern("vusb-probe: %^%l%$: %v");

  auto hp = usb::net::parse_endpoint(
      server.find(':') == std::string::npos ? server + ":3240" : server, "127.0.0.1");
  if (!hp) {
    spdlog::error("{}", hp.error().message);
    return 2;
  }
  std::shared_ptr<const usb::net::TlsContext> tls;
  if (tls_config.enabled()) {
    auto ctx = usb::net::TlsContext::make(tls_config, usb::net::TlsRole::kClient);
    if (!ctx) {
      spdlog::error("{}", ctx.error().message);
      return 2;
    }
    tls = *ctx;
  }
  if (list->parsed()) {
    auto devs = usb::usbip::list_devices_blocking(*hp, tls);
    if (!devs) {
      spdlog::error("{}", devs.error().message);
      return 1;
    }
    for (const auto& e : *devs) {
      std::printf("%s %04x:%04x speed %u class %02x/%02x/%02x interfaces:", e.device.busid.c_str(),
                  e.device.id_vendor, e.device.id_product, e.device.speed, e.device.device_class,
                  e.device.device_subclass, e.device.device_protocol);
      for (const auto& i : e.interfaces)
        std::printf(" %02x/%02x/%02x", i.interface_class, i.interface_subclass,
                    i.interface_protocol);
      std::printf("\n");
    }
    return 0;
  }
  asio::io_context io;
  auto dev = import(io, *hp, busid, tls);
  if (!dev) return 1;
  print_descriptors(*dev);
  int rc = inq->parsed() ? inquiry(io, *dev) : 0;
  dev->close();
  return rc;
}
