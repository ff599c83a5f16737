// devices::GadgetZero: the Linux "Gadget Zero" test device (0525:a4a0), emulated on the chapter-9
// engine so the kernel's usbtest driver can run against vusb through USB/IP.
//
// Ownership and threading: as EmulatedDevice — owned by the exporting daemon, lives on its loop.
//
// Behaviour matched (facts from the kernel's legacy/zero.c, function/f_sourcesink.c,
// function/f_loopback.c, function/g_zero.h and misc/usbtest.c):
//  - Identity: vendor 0x0525, product 0xa4a0, bDeviceClass 0xff, two configurations: value 3
//    "source and sink data" first (index 0, so Linux picks it), value 2 "loop input to output"
//    second (options.loopback_first swaps them like zero.c's loopdefault). Both self-powered, no
//    remote wakeup. Strings: 1 manufacturer, 2 "Gadget Zero", 3 serial
//    "0123456789.0123456789.0123456789" (two packets), 4 and 5 the configuration/interface names.
//  - Source/sink interface 0 (class 0xff): alt 0 = bulk IN 0x81 + bulk OUT 0x01; alt 1 adds
//    iso IN 0x82 + iso OUT 0x02. usbtest's "gz" entry autoconfigures from the descriptors, takes
//    the first alt with bulk in+out (alt 0), or alt 1 with `alt=1`, and issues SET_INTERFACE
//    before every test — which resets halts and the sink/loopback state here, as set_alt does.
//  - Packet sizes: bulk 64 (full), 512 (high), 1024 (super, companion burst 0). Iso
//    wMaxPacketSize = isoc_maxpacket (full: at most 1023), high speed adds mult in bits 12:11,
//    SuperSpeed carries mult/maxburst in the companion with wBytesPerInterval =
//    maxpacket * (mult + 1) * (maxburst + 1); bInterval = isoc_interval. Option ranges are clamped
//    as f_sourcesink clamps them (interval 1..16, mult 0..2, maxburst 0..15, maxpacket <= 1024).
//  - Data pattern (usbtest `pattern` must agree): 0 = zeros, 1 = (i % wMaxPacketSize) % 63 with i
//    counted from the start of each transfer (the check usbtest's simple_check_buf makes, which
//    stays in sync because every transfer starts on a packet boundary), 2 = not generated and
//    not checked. The source fills every bulk IN transfer to its full length (a real device would
//    babble on an IN length that is not a multiple of maxpacket; the emulation just fills it).
//    The sink checks every bulk OUT transfer: the transfer itself completes OK (the data was
//    accepted) and then the OUT endpoint is halted, so the host sees -EPIPE from then on until
//    CLEAR_FEATURE(ENDPOINT_HALT), as check_read_data() + usb_ep_set_halt() behave.
//  - Iso IN (usbtest 16): every packet completes with min(length, bytes per interval) bytes of
//    the pattern counted from the packet start, status OK, so actual_length equals the
//    requested length when usbtest sizes packets as it does (maxp * mult). Iso OUT (usbtest 15):
//    every packet is accepted whole. Its pattern is checked per packet but a mismatch is only
//    counted (iso_out_mismatches()): f_sourcesink never checks iso OUT data and usbtest sends
//    zeros there whatever its pattern is.
//  - Vendor requests of the source/sink configuration (usbtest 14/21, Intel compliance device
//    style): 0x5b with bmRequestType exactly 0x40 stores the data stage in a ctrl_buflen-byte
//    buffer (4096 = USB_COMP_EP0_BUFSIZ); 0xc0/0x5c returns wLength bytes of that buffer. wValue
//    or wIndex non-zero, wLength > ctrl_buflen, another bmRequestType, or another configuration
//    active: stall.
//  - Loopback (configuration 2): bulk OUT data is stored in gadget-side requests of bulk_buflen
//    bytes (qlen of them, default 32) and played back on bulk IN packet by packet. A request
//    completes when full or at a short packet / ZLP; a request that is not full goes back to the
//    host terminated by a short packet or a ZLP, as f_loopback sets req->zero. When all requests
//    hold data, OUT transfers stay pending until the host reads; IN transfers stay pending until
//    data arrives (a bounded queue).
//  - Control behaviour usbtest 9 / 10 checks comes from EmulatedDevice: qualifier and
//    other-speed configurations at high speed (bcdUSB 0x0200), a BOS with USB 2.0 extension +
//    SuperSpeed capability at SuperSpeed (bcdUSB 0x0300, bMaxPacketSize0 9) and a stall for BOS /
//    qualifier where usbtest expects one, GET_INTERFACE answered, interface/endpoint descriptor
//    requests stalled, CLEAR_FEATURE(HALT) on ep0 accepted, short reads -EREMOTEIO when the URB
//    says short-not-ok.
//  - Bus-speed cap (options.bulk_rate, with set_pacing()): bulk transfers of the source/sink
//    configuration complete one after another when a link of that many bytes per second would
//    have carried them, so the device — not its hosts — is the bottleneck (the fair-scheduling
//    tests). The data is filled / checked on arrival; only the completion waits.
//  - Not matched: autoresume/remote-wakeup timers, OTG descriptors, interrupt endpoints (zero.c
//    has none; usbtest 25/26 skip), real iso timing (iso transfers complete at once).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "devices/emulated/emulated_device.h"
#include "usb/core/error.h"

namespace devices {

struct GadgetZeroOptions {
  usb::Speed speed = usb::Speed::kHigh;  // kFull, kHigh or kSuper
  uint8_t pattern = 0;                   // 0 zeros, 1 mod63, 2 none (usbtest `pattern=`)
  uint32_t bulk_buflen = 4096;           // gadget request size (loopback chunk)
  uint16_t isoc_maxpacket = 1024;        // 0..1024 (full speed: up to 1023)
  uint8_t isoc_mult = 0;                 // 0..2: extra transactions per microframe / SS Mult
  uint8_t isoc_maxburst = 0;             // 0..15, SuperSpeed only
  uint8_t isoc_interval = 4;             // 1..16, bInterval
  uint32_t loopback_qlen = 32;           // loopback requests (queue depth)
  uint32_t ctrl_buflen = 4096;           // 0x5b/0x5c buffer (USB_COMP_EP0_BUFSIZ)
  bool loopback_first = false;           // zero.c loopdefault: loopback is configuration index 0
  std::string manufacturer = "vusb";
  std::string serial = "0123456789.0123456789.0123456789";
  uint64_t bulk_rate = 0;  // bytes per second the bulk endpoints share (0: no cap); set_pacing()
};

// Options from "key=value,key=value" (speed=full|high|super, pattern, isoc_maxpacket, isoc_mult,
// isoc_maxburst, isoc_interval, bulk_rate, bulk_buflen, loopback_qlen, ctrl_buflen); each value
// range-checked. Used by vusbd's "emulated:gadget-zero?..." sources.
usb::Result<GadgetZeroOptions> parse_gadget_zero_options(std::string_view text);

class GadgetZero : public EmulatedDevice {
 public:
  static constexpr uint16_t kVendorId = 0x0525;
  static constexpr uint16_t kProductId = 0xa4a0;
  static constexpr uint8_t kSourceSinkConfig = 3;
  static constexpr uint8_t kLoopbackConfig = 2;
  static constexpr uint8_t kBulkIn = 0x81;
  static constexpr uint8_t kBulkOut = 0x01;
  static constexpr uint8_t kIsoIn = 0x82;
  static constexpr uint8_t kIsoOut = 0x02;
  static constexpr uint8_t kRequestWrite = 0x5b;  // control write test: fill the buffer
  static constexpr uint8_t kRequestRead = 0x5c;   // control read test: return the buffer

  explicit GadgetZero(GadgetZeroOptions options = {}, usb::DeviceLocation location = {});

  // The descriptor tables (full, high and SuperSpeed) for `options`, after clamping.
  static SpeedDescriptors make_descriptors(const GadgetZeroOptions& options);
  // The options in force, after clamping to the ranges f_sourcesink accepts.
  const GadgetZeroOptions& options() const { return options_; }
  ~GadgetZero() override;

  // The timer and clock options.bulk_rate paces completions with (the owner's loop; tests pass
  // fakes). Without them bulk_rate has no effect.
  using Timer = std::function<void(std::chrono::milliseconds, std::move_only_function<void()>)>;
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  void set_pacing(Timer timer, Clock clock);

  // Class state across time slices: the 0x5b/0x5c control buffer (what one VM wrote and expects
  // to read back).
  std::vector<uint8_t> save_class_state() const override { return ctrl_buffer_; }
  void restore_class_state(std::span<const uint8_t> state) override {
    std::copy_n(state.begin(), std::min(state.size(), ctrl_buffer_.size()), ctrl_buffer_.begin());
  }

  // Counters.
  uint64_t sink_mismatches() const { return sink_mismatches_; }        // OUT transfers that halted
  uint64_t iso_out_mismatches() const { return iso_out_mismatches_; }  // iso OUT packets
  size_t loopback_queued_chunks() const { return chunks_.size(); }

 protected:
  ControlReply on_control_request(const usb::SetupPacket& setup, std::span<uint8_t> data) override;
  void on_transfer(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint) override;
  size_t on_transfer_aborted(usb::Transfer& transfer) override;
  void on_configuration_changed(uint8_t value) override;
  void on_interface_changed(uint8_t interface, uint8_t alternate) override;

 private:
  // One loopback request holding host data for IN: played back in maxpacket packets, then a ZLP
  // when `zlp` is set.
  struct Chunk {
    std::vector<uint8_t> data;
    size_t position = 0;
    bool zlp = false;
  };

  void source_bulk(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint);
  void sink_bulk(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint);
  void iso(usb::Transfer& transfer, const usb::EndpointDescriptor& endpoint);
  void fill_pattern(std::span<uint8_t> data, uint16_t max_packet) const;
  bool check_pattern(std::span<const uint8_t> data, uint16_t max_packet) const;
  size_t iso_bytes_per_interval(const usb::EndpointDescriptor& endpoint) const;

  // Loopback: moves data from pending OUT transfers into requests and from requests into
  // pending IN transfers until neither side can progress.
  void loopback_pump();
  bool loopback_pump_out(uint16_t max_packet);
  bool loopback_pump_in(uint16_t max_packet);
  void loopback_close_open(bool terminated, uint16_t max_packet);
  void loopback_reset();

  // Bus-speed cap: completes `transfer` (then halts `halt_endpoint` unless 0) when the link is
  // through with it; at once without a cap.
  void complete_bulk(usb::Transfer& transfer, size_t actual, uint8_t halt_endpoint);
  void arm_pacer();
  void release_due();
  struct Paced {
    usb::Transfer* transfer;
    std::chrono::steady_clock::time_point due;
    size_t actual;
    uint8_t halt_endpoint;
  };
  Timer timer_;
  Clock clock_;
  std::deque<Paced> paced_;
  std::chrono::steady_clock::time_point link_free_{};
  bool pacer_armed_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);

  GadgetZeroOptions options_;
  std::vector<uint8_t> ctrl_buffer_;
  uint64_t sink_mismatches_ = 0;
  uint64_t iso_out_mismatches_ = 0;

  // Loopback state.
  std::deque<Chunk> chunks_;             // requests holding data for IN, oldest first
  std::vector<uint8_t> open_;            // the request currently receiving OUT data
  usb::Transfer* out_active_ = nullptr;  // OUT transfer being consumed, and how far
  size_t out_offset_ = 0;
  usb::Transfer* in_active_ = nullptr;  // IN transfer being filled, and how far
  size_t in_filled_ = 0;
  bool pumping_ = false;
};

}  // namespace devices
