// FakeGuest: QEMU's side of usb-redir for tests — a libusbredirparser in guest mode with QEMU's
// capabilities on one end of a Stream, recording what the host sends. Lives on the test's loop.
#pragma once

#include <usbredirfilter.h>
#include <usbredirparser.h>

#include <boost/asio/buffer.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "usb/net/stream.h"

namespace usb::testing {

namespace asio = boost::asio;

// QEMU's side: a libusbredirparser in guest mode that records what the host sends.
class FakeGuest {
 public:
  struct Reply {
    int count = 0;  // a second answer to one id is a protocol error
    uint8_t status = 0xff;
    uint32_t length = 0;
    std::vector<uint8_t> data;
  };

  explicit FakeGuest(std::unique_ptr<usb::net::Stream> stream) : stream_(std::move(stream)) {
    p_ = usbredirparser_create();
    p_->priv = this;
    p_->log_func = [](void*, int, const char*) {};
    p_->read_func = [](void* priv, uint8_t* data, int count) -> int {
      auto& g = *static_cast<FakeGuest*>(priv);
      const size_t n = std::min(g.rx_.size(), static_cast<size_t>(count));
      if (!n) return 0;
      std::memcpy(data, g.rx_.data(), n);
      g.rx_ = g.rx_.subspan(n);
      return static_cast<int>(n);
    };
    p_->write_func = [](void* priv, uint8_t* data, int count) -> int {
      auto& g = *static_cast<FakeGuest*>(priv);
      g.out_.insert(g.out_.end(), data, data + count);
      return count;
    };
    p_->hello_func = [](void* priv, usb_redir_hello_header*) { self(priv).hello = true; };
    p_->device_connect_func = [](void* priv, usb_redir_device_connect_header* h) {
      self(priv).order.push_back("device_connect");
      self(priv).connect = *h;
    };
    p_->device_disconnect_func = [](void* priv) { self(priv).order.push_back("device_disconnect"); };
    p_->interface_info_func = [](void* priv, usb_redir_interface_info_header* h) {
      self(priv).order.push_back("interface_info");
      self(priv).interfaces = *h;
    };
    p_->ep_info_func = [](void* priv, usb_redir_ep_info_header* h) {
      self(priv).order.push_back("ep_info");
      self(priv).endpoints = *h;
    };
    p_->configuration_status_func = [](void* priv, uint64_t id,
                                       usb_redir_configuration_status_header* h) {
      self(priv).order.push_back("configuration_status");
      self(priv).statuses[id] = {1, h->status, h->configuration, {}};
    };
    p_->alt_setting_status_func = [](void* priv, uint64_t id, usb_redir_alt_setting_status_header* h) {
      self(priv).order.push_back("alt_setting_status");
      self(priv).statuses[id] = {1, h->status, h->alt, {}};
    };
    p_->interrupt_receiving_status_func = [](void* priv, uint64_t id,
                                             usb_redir_interrupt_receiving_status_header* h) {
      self(priv).statuses[id] = {1, h->status, h->endpoint, {}};
    };
    p_->iso_stream_status_func = [](void* priv, uint64_t id, usb_redir_iso_stream_status_header* h) {
      self(priv).statuses[id] = {1, h->status, h->endpoint, {}};
    };
    p_->control_packet_func = [](void* priv, uint64_t id, usb_redir_control_packet_header* h,
                                 uint8_t* data, int len) {
      self(priv).record(id, h->status, h->length, data, len);
    };
    p_->bulk_packet_func = [](void* priv, uint64_t id, usb_redir_bulk_packet_header* h,
                              uint8_t* data, int len) {
      self(priv).record(id, h->status, h->length | (uint32_t{h->length_high} << 16), data, len);
    };
    p_->interrupt_packet_func = [](void* priv, uint64_t id, usb_redir_interrupt_packet_header* h,
                                   uint8_t* data, int len) {
      FakeGuest& g = self(priv);
      if (h->endpoint & 0x80) {
        g.interrupt_in.emplace_back(data, data + len);
        usbredirparser_free_packet_data(g.p_, data);
      } else {
        g.record(id, h->status, h->length, data, len);
      }
    };
    p_->iso_packet_func = [](void* priv, uint64_t, usb_redir_iso_packet_header* h, uint8_t* data,
                             int len) {
      FakeGuest& g = self(priv);
      g.iso_in.push_back({h->endpoint, h->status, std::vector<uint8_t>(data, data + len)});
      usbredirparser_free_packet_data(g.p_, data);
    };
    p_->bulk_streams_status_func = [](void* priv, uint64_t id,
                                      usb_redir_bulk_streams_status_header* h) {
      self(priv).statuses[id] = {1, h->status, h->no_streams, {}};
    };
    p_->bulk_receiving_status_func = [](void* priv, uint64_t id,
                                        usb_redir_bulk_receiving_status_header* h) {
      self(priv).statuses[id] = {1, h->status, h->endpoint, {}};
    };
    p_->buffered_bulk_packet_func = [](void* priv, uint64_t, usb_redir_buffered_bulk_packet_header*,
                                       uint8_t* data, int) {
      usbredirparser_free_packet_data(self(priv).p_, data);
    };
    p_->filter_reject_func = [](void* priv) { self(priv).order.push_back("filter_reject"); };
    p_->filter_filter_func = [](void*, usbredirfilter_rule* rules, int) { usbredirfilter_free(rules); };
    uint32_t caps[USB_REDIR_CAPS_SIZE] = {};
    for (int cap : {usb_redir_cap_connect_device_version, usb_redir_cap_filter,
                    usb_redir_cap_ep_info_max_packet_size, usb_redir_cap_64bits_ids,
                    usb_redir_cap_32bits_bulk_length})
      usbredirparser_caps_set_cap(caps, cap);
    static char version[] = "fake-qemu";
    usbredirparser_init(p_, version, caps, USB_REDIR_CAPS_SIZE, 0);
    flush();
    read();
  }
  ~FakeGuest() { usbredirparser_destroy(p_); }

  void flush() {
    usbredirparser_do_write(p_);
    if (out_.empty()) return;
    auto bytes = std::make_shared<std::vector<uint8_t>>(std::move(out_));
    out_.clear();
    stream_->async_write(asio::buffer(*bytes), [bytes](boost::system::error_code, size_t) {});
  }
  usbredirparser* parser() { return p_; }
  void close() { stream_->close(); }

  bool hello = false;
  std::vector<std::string> order;
  std::optional<usb_redir_device_connect_header> connect;
  std::optional<usb_redir_interface_info_header> interfaces;
  std::optional<usb_redir_ep_info_header> endpoints;
  std::map<uint64_t, Reply> replies;   // data packets by id
  std::map<uint64_t, Reply> statuses;  // status packets by id (length: their second field)
  std::vector<std::vector<uint8_t>> interrupt_in;
  struct IsoPacket {
    uint8_t endpoint;
    uint8_t status;
    std::vector<uint8_t> data;
  };
  std::vector<IsoPacket> iso_in;

 private:
  static FakeGuest& self(void* priv) { return *static_cast<FakeGuest*>(priv); }
  void record(uint64_t id, uint8_t status, uint32_t length, uint8_t* data, int len) {
    Reply& r = replies[id];
    ++r.count;
    r.status = status;
    r.length = length;
    r.data.assign(data, data + len);
    usbredirparser_free_packet_data(p_, data);
  }
  void read() {
    stream_->async_read_some(asio::buffer(buf_), [this](boost::system::error_code ec, size_t n) {
      if (ec) return;
      rx_ = std::span<const uint8_t>(buf_.data(), n);
      usbredirparser_do_read(p_);
      flush();
      read();
    });
  }

  std::unique_ptr<usb::net::Stream> stream_;
  usbredirparser* p_ = nullptr;
  std::vector<uint8_t> buf_ = std::vector<uint8_t>(65536);
  std::span<const uint8_t> rx_;
  std::vector<uint8_t> out_;
};

}  // namespace usb::testing
