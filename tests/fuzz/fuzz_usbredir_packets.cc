// libFuzzer: what vusbd does with the usbredir packets a hostile guest sends through QEMU — a
// HostChannel serving a vusbd DeviceView (a SharedDevice in the mode the input picks, over a
// scripted Gadget Zero-shaped device, with a second VM holding it too), driven by arbitrary
// sequences of *well-formed* packets. The input is a program: each step builds one packet with
// libusbredirparser's own guest mode (so it passes the parser and reaches the handlers — ids,
// endpoints, lengths, counts and orders are the fuzzer's), or makes the device complete, unplug
// and return, or fires the timers. Nothing may crash, leak, or leave the channel unable to
// close. (fuzz_usbredir_host feeds raw bytes instead: the parser's side.)
#include <usbredirparser.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "tests/unit/usbredir/fake_guest.h"
#include "usb/core/fake_device.h"
#include "usb/net/socket_stream.h"
#include "usb/usbredir/host_channel.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace {

struct Input {
  const uint8_t* p;
  size_t n;
  uint8_t u8() {
    if (!n) return 0;
    --n;
    return *p++;
  }
  uint16_t u16() { return static_cast<uint16_t>(u8() | (u8() << 8)); }
};

void settle(boost::asio::io_context& io) {
  for (int idle = 0, i = 0; idle < 3 && i < 2000; ++i) idle = io.poll() ? 0 : idle + 1;
  io.restart();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  Input in{data, size};
  boost::asio::io_context io;
  auto pair = usb::net::stream_pair(io);
  if (!pair) return 0;
  std::vector<std::move_only_function<void()>> timers;
  auto timer = [&](auto, std::move_only_function<void()> fn) { timers.push_back(std::move(fn)); };
  const auto mode = static_cast<vusbd::SharedDevice::Mode>(in.u8() % 3);
  usb::testing::FakeDevice backend(usb::testing::gadget_zero_like_descriptors());
  vusbd::SharedDevice shared("gz", mode, timer);
  shared.set_backend(&backend);
  vusbd::DeviceView& view = shared.view("vm1", {.busid = "1-1", .path = {}});
  vusbd::DeviceView& other = shared.view("vm2", {.busid = "1-1", .path = {}});
  if (!view.try_acquire()) return 0;
  (void)other.try_acquire();

  usb::usbredir::HostChannel::Options options;
  options.label = "fuzz";
  options.clock = [] { return std::chrono::steady_clock::time_point{}; };
  options.timer = timer;
  auto channel = usb::usbredir::HostChannel::create(std::move(pair->first), std::move(options));
  usb::testing::FakeGuest guest(std::move(pair->second));
  channel->start();
  channel->attach(view);
  settle(io);

  usbredirparser* g = guest.parser();
  std::vector<uint8_t> payload;
  auto data_of = [&](size_t n) {
    payload.assign(n, in.u8());
    return payload.data();
  };
  for (int step = 0; step < 256 && in.n; ++step) {
    const uint64_t id = in.u8() % 16;
    switch (in.u8() % 20) {
      case 0: {  // control
        usb_redir_control_packet_header h{};
        h.requesttype = in.u8();
        h.endpoint = h.requesttype & 0x80;
        h.request = in.u8();
        h.value = in.u16();
        h.index = in.u16();
        h.length = in.u16() % 600;
        const bool out = !(h.endpoint & 0x80);
        usbredirparser_send_control_packet(g, id, &h, out ? data_of(h.length) : nullptr,
                                           out ? h.length : 0);
        break;
      }
      case 1: {  // bulk
        usb_redir_bulk_packet_header h{};
        h.endpoint = in.u8();
        h.length = in.u16() % 5000;
        h.length_high = in.u8() < 8 ? in.u8() : 0;
        h.stream_id = in.u8() < 8 ? 1 : 0;
        const bool out = !(h.endpoint & 0x80);
        const int n = out ? h.length : 0;
        if (out) h.length_high = 0;
        usbredirparser_send_bulk_packet(g, id, &h, out ? data_of(n) : nullptr, n);
        break;
      }
      case 2: {  // interrupt OUT
        usb_redir_interrupt_packet_header h{static_cast<uint8_t>(in.u8() & 0x7f), 0,
                                            static_cast<uint16_t>(in.u8())};
        usbredirparser_send_interrupt_packet(g, id, &h, data_of(h.length), h.length);
        break;
      }
      case 3: {
        usb_redir_set_configuration_header h{static_cast<uint8_t>(in.u8() % 3)};
        usbredirparser_send_set_configuration(g, id, &h);
        break;
      }
      case 4:
        usbredirparser_send_get_configuration(g, id);
        break;
      case 5: {
        usb_redir_set_alt_setting_header h{static_cast<uint8_t>(in.u8() % 3),
                                           static_cast<uint8_t>(in.u8() % 3)};
        usbredirparser_send_set_alt_setting(g, id, &h);
        break;
      }
      case 6: {
        usb_redir_get_alt_setting_header h{in.u8()};
        usbredirparser_send_get_alt_setting(g, id, &h);
        break;
      }
      case 7: {
        usb_redir_start_interrupt_receiving_header h{in.u8()};
        usbredirparser_send_start_interrupt_receiving(g, id, &h);
        break;
      }
      case 8: {
        usb_redir_stop_interrupt_receiving_header h{in.u8()};
        usbredirparser_send_stop_interrupt_receiving(g, id, &h);
        break;
      }
      case 9: {
        usb_redir_start_iso_stream_header h{in.u8(), in.u8(), in.u8()};
        usbredirparser_send_start_iso_stream(g, id, &h);
        break;
      }
      case 10: {
        usb_redir_stop_iso_stream_header h{in.u8()};
        usbredirparser_send_stop_iso_stream(g, id, &h);
        break;
      }
      case 11: {  // iso OUT packets
        const uint8_t ep = in.u8() & 0x7f;
        for (int k = in.u8() % 8; k >= 0; --k) {
          usb_redir_iso_packet_header h{ep, 0, static_cast<uint16_t>(in.u16() % 1100)};
          usbredirparser_send_iso_packet(g, 0, &h, data_of(h.length), h.length);
        }
        break;
      }
      case 12:
        usbredirparser_send_cancel_data_packet(g, id);
        break;
      case 13:
        usbredirparser_send_reset(g);
        break;
      case 14: {  // the device answers some of what is pending
        for (int k = in.u8() % 4; k >= 0 && !backend.pending.empty(); --k) {
          usb::Transfer& t = *backend.pending.front();
          for (auto& p : t.iso_packets) p.actual_length = in.u8() % 2 ? p.length : 0;
          const uint8_t s = in.u8();
          backend.finish(t, s < 200 ? usb::Status::kOk : s < 230 ? usb::Status::kStall
                                                                 : usb::Status::kShortPacket,
                         in.u16());
        }
        break;
      }
      case 15:
        usbredirparser_send_filter_reject(g);
        break;
      case 16: {
        usb_redir_alloc_bulk_streams_header h{in.u8(), in.u8()};
        usbredirparser_send_alloc_bulk_streams(g, id, &h);
        break;
      }
      case 17:  // the device goes and comes back
        channel->detach();
        settle(io);  // the guest's parser acknowledges the disconnect itself
        channel->attach(view);
        break;
      case 18: {  // timers (pacing, the sharing layer's)
        auto due = std::move(timers);
        timers.clear();
        for (auto& fn : due) fn();
        break;
      }
      case 19: {
        usb_redir_start_bulk_receiving_header h{0, in.u16(), in.u8(), in.u8()};
        usbredirparser_send_start_bulk_receiving(g, id, &h);
        break;
      }
    }
    guest.flush();
    settle(io);
  }
  guest.close();
  settle(io);
  channel->close();
  settle(io);
  // Whatever is still at the device completes (an unplug): nothing may run on a dead channel.
  backend.unplug();
  for (auto& fn : timers) fn();
  timers.clear();
  settle(io);
  return 0;
}
