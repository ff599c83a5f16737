// USB/IP codec: every field offset, every rejection path and the framing helpers, checked against
// byte sequences laid out by hand from Linux's Documentation/usb/usbip_protocol.rst.
#include "usb/wire/usbip_codec.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace usb::wire::usbip {
namespace {

using Bytes = std::vector<uint8_t>;

void put32(Bytes& b, size_t off, uint32_t v) {
  b[off] = static_cast<uint8_t>(v >> 24);
  b[off + 1] = static_cast<uint8_t>(v >> 16);
  b[off + 2] = static_cast<uint8_t>(v >> 8);
  b[off + 3] = static_cast<uint8_t>(v);
}
void put16(Bytes& b, size_t off, uint16_t v) {
  b[off] = static_cast<uint8_t>(v >> 8);
  b[off + 1] = static_cast<uint8_t>(v);
}
void put_str(Bytes& b, size_t off, const char* s) {
  std::memcpy(&b[off], s, std::strlen(s));
}

template <typename T>
Bytes to_vec(const T& a) {
  return Bytes(a.begin(), a.end());
}

// A 48-byte URB header with the basic fields set (offsets from usbip_header_basic).
Bytes urb(uint32_t command, uint32_t seqnum, uint32_t devid = 0, uint32_t dir = 0,
          uint32_t ep = 0) {
  Bytes b(48, 0);
  put32(b, 0x00, command);
  put32(b, 0x04, seqnum);
  put32(b, 0x08, devid);
  put32(b, 0x0c, dir);
  put32(b, 0x10, ep);
  return b;
}

// --- Op header ---

TEST(UsbipOpHeader, EncodesBigEndian) {
  EXPECT_EQ(to_vec(encode_op_header({kVersion, kOpReqDevlist, 0})),
            (Bytes{0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0}));
  EXPECT_EQ(to_vec(encode_op_header({kVersion, kOpRepImport, kStNoDev})),
            (Bytes{0x01, 0x11, 0x00, 0x03, 0, 0, 0, 4}));
}

TEST(UsbipOpHeader, DecodesAndRoundTrips) {
  const Bytes b{0x01, 0x11, 0x80, 0x03, 0x12, 0x34, 0x56, 0x78};
  auto h = decode_op_header(b);
  ASSERT_TRUE(h.has_value()) << h.error().message;
  EXPECT_EQ(h->version, 0x0111);
  EXPECT_EQ(h->code, kOpReqImport);
  EXPECT_EQ(h->status, 0x12345678u);
  EXPECT_EQ(to_vec(encode_op_header(*h)), b);
}

TEST(UsbipOpHeader, DoesNotCheckCode) {
  auto h = decode_op_header(Bytes{0x01, 0x11, 0xab, 0xcd, 0, 0, 0, 0});
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->code, 0xabcd);
}

TEST(UsbipOpHeader, RejectsWrongVersion) {
  auto h = decode_op_header(Bytes{0x01, 0x10, 0x80, 0x05, 0, 0, 0, 0});
  ASSERT_FALSE(h.has_value());
  EXPECT_EQ(h.error().code, Error::Code::kMalformed);
  EXPECT_NE(h.error().message.find("0x0110"), std::string::npos) << h.error().message;
  // Little-endian version (a common implementation bug) is not accepted either.
  EXPECT_FALSE(decode_op_header(Bytes{0x11, 0x01, 0x80, 0x05, 0, 0, 0, 0}).has_value());
}

TEST(UsbipOpHeader, RejectsShortInput) {
  for (size_t n = 0; n < 8; ++n) {
    Bytes b{0x01, 0x11, 0x80, 0x05, 0, 0, 0, 0};
    b.resize(n);
    auto h = decode_op_header(b);
    ASSERT_FALSE(h.has_value()) << n;
    EXPECT_EQ(h.error().code, Error::Code::kMalformed);
  }
}

// --- Device record ---

DeviceRecord sample_device() {
  DeviceRecord d;
  d.path = "/sys/devices/pci0000:00/0000:00:1d.1/usb3/3-2";
  d.busid = "3-2";
  d.busnum = 3;
  d.devnum = 2;
  d.speed = 3;  // high
  d.id_vendor = 0x0525;
  d.id_product = 0xa4a0;
  d.bcd_device = 0x0517;
  d.device_class = 0xff;
  d.device_subclass = 0x01;
  d.device_protocol = 0x02;
  d.configuration_value = 3;
  d.num_configurations = 2;
  d.num_interfaces = 1;
  return d;
}

// The same record laid out by hand at the offsets of struct usbip_usb_device.
Bytes sample_device_bytes() {
  Bytes b(312, 0);
  put_str(b, 0x000, "/sys/devices/pci0000:00/0000:00:1d.1/usb3/3-2");
  put_str(b, 0x100, "3-2");
  put32(b, 0x120, 3);
  put32(b, 0x124, 2);
  put32(b, 0x128, 3);
  put16(b, 0x12c, 0x0525);
  put16(b, 0x12e, 0xa4a0);
  put16(b, 0x130, 0x0517);
  b[0x132] = 0xff;
  b[0x133] = 0x01;
  b[0x134] = 0x02;
  b[0x135] = 3;
  b[0x136] = 2;
  b[0x137] = 1;
  return b;
}

TEST(UsbipDeviceRecord, EveryFieldOffset) {
  EXPECT_EQ(to_vec(encode_device_record(sample_device())), sample_device_bytes());
}

TEST(UsbipDeviceRecord, DecodesEveryField) {
  auto d = decode_device_record(sample_device_bytes());
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(*d, sample_device());
}

TEST(UsbipDeviceRecord, EachFieldLandsAtItsOwnOffset) {
  // Change one field at a time and check exactly the expected bytes differ.
  const Bytes base = to_vec(encode_device_record(DeviceRecord{}));
  struct Case {
    void (*set)(DeviceRecord&);
    size_t offset;
    size_t size;
  };
  const Case cases[] = {
      {[](DeviceRecord& d) { d.busnum = 0x01020304; }, 0x120, 4},
      {[](DeviceRecord& d) { d.devnum = 0x01020304; }, 0x124, 4},
      {[](DeviceRecord& d) { d.speed = 0x01020304; }, 0x128, 4},
      {[](DeviceRecord& d) { d.id_vendor = 0x0102; }, 0x12c, 2},
      {[](DeviceRecord& d) { d.id_product = 0x0102; }, 0x12e, 2},
      {[](DeviceRecord& d) { d.bcd_device = 0x0102; }, 0x130, 2},
      {[](DeviceRecord& d) { d.device_class = 1; }, 0x132, 1},
      {[](DeviceRecord& d) { d.device_subclass = 1; }, 0x133, 1},
      {[](DeviceRecord& d) { d.device_protocol = 1; }, 0x134, 1},
      {[](DeviceRecord& d) { d.configuration_value = 1; }, 0x135, 1},
      {[](DeviceRecord& d) { d.num_configurations = 1; }, 0x136, 1},
      {[](DeviceRecord& d) { d.num_interfaces = 1; }, 0x137, 1},
  };
  for (const auto& c : cases) {
    DeviceRecord d;
    c.set(d);
    const Bytes b = to_vec(encode_device_record(d));
    for (size_t i = 0; i < b.size(); ++i) {
      const bool inside = i >= c.offset && i < c.offset + c.size;
      if (!inside) {
        EXPECT_EQ(b[i], base[i]) << "offset " << i << " for field at " << c.offset;
      }
    }
    // Big-endian: the most significant byte first.
    EXPECT_EQ(b[c.offset], c.size == 1 ? 1 : 0x01) << c.offset;
    EXPECT_EQ(b[c.offset + c.size - 1], c.size == 1 ? 1 : (c.size == 2 ? 0x02 : 0x04));
    auto back = decode_device_record(b);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, d);
  }
}

TEST(UsbipDeviceRecord, StringsAreTruncatedToStayTerminated) {
  DeviceRecord d;
  d.path = std::string(300, 'p');
  d.busid = std::string(40, 'b');
  const auto b = encode_device_record(d);
  EXPECT_EQ(b[254], 'p');
  EXPECT_EQ(b[255], 0);
  EXPECT_EQ(b[0x100 + 30], 'b');
  EXPECT_EQ(b[0x100 + 31], 0);
  auto back = decode_device_record(b);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->path, std::string(255, 'p'));
  EXPECT_EQ(back->busid, std::string(31, 'b'));
}

TEST(UsbipDeviceRecord, BytesAfterNulAreIgnored) {
  Bytes b = sample_device_bytes();
  b[0x100 + 10] = 'x';  // garbage after "3-2\0"
  b[200] = 'y';
  auto d = decode_device_record(b);
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->busid, "3-2");
  EXPECT_EQ(d->path, sample_device().path);
}

TEST(UsbipDeviceRecord, RejectsUnterminatedStrings) {
  Bytes b = sample_device_bytes();
  std::fill(b.begin() + 0x100, b.begin() + 0x120, 'a');
  auto d = decode_device_record(b);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, Error::Code::kMalformed);
  EXPECT_NE(d.error().message.find("busid"), std::string::npos);

  b = sample_device_bytes();
  std::fill(b.begin(), b.begin() + 0x100, 'a');
  d = decode_device_record(b);
  ASSERT_FALSE(d.has_value());
  EXPECT_NE(d.error().message.find("path"), std::string::npos);
}

TEST(UsbipDeviceRecord, RejectsShortInput) {
  Bytes b = sample_device_bytes();
  b.pop_back();
  auto d = decode_device_record(b);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().code, Error::Code::kMalformed);
  EXPECT_FALSE(decode_device_record({}).has_value());
}

TEST(UsbipInterfaceRecord, RoundTripsAndIgnoresPadding) {
  EXPECT_EQ(to_vec(encode_interface_record({8, 6, 0x50})), (Bytes{8, 6, 0x50, 0}));
  const std::array<uint8_t, 4> b{3, 1, 2, 0xee};
  EXPECT_EQ(decode_interface_record(b), (InterfaceRecord{3, 1, 2}));
}

// --- OP_REP_DEVLIST ---

// What Linux usbipd sends for one exported Gadget Zero with one vendor-class interface.
Bytes linux_devlist_reply() {
  Bytes b = {0x01, 0x11, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 1};
  const Bytes rec = sample_device_bytes();
  b.insert(b.end(), rec.begin(), rec.end());
  b.insert(b.end(), {0xff, 0x00, 0x00, 0x00});
  return b;
}

TEST(UsbipDevlist, EncodesAsLinuxUsbipdDoes) {
  const DevlistEntry e{sample_device(), {{0xff, 0, 0}}};
  const auto b = encode_devlist_reply(std::span(&e, 1));
  EXPECT_EQ(b, linux_devlist_reply());
  EXPECT_EQ(b.size(), 12u + 312 + 4);
  // Doc offsets (usbip_protocol.rst): busid at 0x10c, busnum at 0x12c, interfaces at 0x144.
  EXPECT_EQ(b[0x10c], '3');
  EXPECT_EQ(b[0x12c + 3], 3);
  EXPECT_EQ(b[0x143], 1);
  EXPECT_EQ(b[0x144], 0xff);
}

TEST(UsbipDevlist, EmptyList) {
  EXPECT_EQ(encode_devlist_reply({}), (Bytes{0x01, 0x11, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0}));
  auto d = decode_devlist_reply(encode_devlist_reply({}));
  ASSERT_TRUE(d.has_value());
  EXPECT_TRUE(d->empty());
}

TEST(UsbipDevlist, DecodesLinuxReply) {
  auto d = decode_devlist_reply(linux_devlist_reply());
  ASSERT_TRUE(d.has_value()) << d.error().message;
  ASSERT_EQ(d->size(), 1u);
  EXPECT_EQ((*d)[0].device, sample_device());
  EXPECT_EQ((*d)[0].interfaces, (std::vector<InterfaceRecord>{{0xff, 0, 0}}));
}

TEST(UsbipDevlist, SeveralDevicesRoundTrip) {
  std::vector<DevlistEntry> entries(3);
  for (size_t i = 0; i < entries.size(); ++i) {
    entries[i].device = sample_device();
    entries[i].device.busid = "1-" + std::to_string(i);
    entries[i].device.num_interfaces = static_cast<uint8_t>(i);
    for (size_t k = 0; k < i; ++k) {
      entries[i].interfaces.push_back({static_cast<uint8_t>(k), 1, 2});
    }
  }
  const auto b = encode_devlist_reply(entries);
  EXPECT_EQ(b.size(), 12u + 3 * 312 + (0 + 1 + 2) * 4);
  auto d = decode_devlist_reply(b);
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(*d, entries);
}

TEST(UsbipDevlist, InterfaceRecordsFollowNumInterfaces) {
  DevlistEntry e{sample_device(), {}};
  e.device.num_interfaces = 2;  // none given: two zero records
  auto b = encode_devlist_reply(std::span(&e, 1));
  EXPECT_EQ(b.size(), 12u + 312 + 8);
  e.device.num_interfaces = 1;  // three given: only one written
  e.interfaces = {{1, 1, 1}, {2, 2, 2}, {3, 3, 3}};
  b = encode_devlist_reply(std::span(&e, 1));
  EXPECT_EQ(b.size(), 12u + 312 + 4);
  EXPECT_EQ(b.back(), 0);
  EXPECT_EQ(b[b.size() - 4], 1);
}

TEST(UsbipDevlist, Rejections) {
  auto expect = [](Bytes b, Error::Code code, const char* what) {
    auto d = decode_devlist_reply(b);
    ASSERT_FALSE(d.has_value()) << what;
    EXPECT_EQ(d.error().code, code) << what << ": " << d.error().message;
  };
  Bytes good = linux_devlist_reply();
  Bytes b = good;
  b[1] = 0x10;
  expect(b, Error::Code::kMalformed, "version");
  b = good;
  b[3] = 0x03;
  expect(b, Error::Code::kMalformed, "code");
  b = good;
  b[7] = 1;
  expect(b, Error::Code::kIo, "status");
  expect(Bytes(good.begin(), good.begin() + 10), Error::Code::kMalformed, "no count");
  b = good;
  put32(b, 8, 2);
  expect(b, Error::Code::kMalformed, "count too large");
  b = good;
  put32(b, 8, 0xffffffff);
  expect(b, Error::Code::kMalformed, "huge count");
  b = good;
  b.pop_back();
  expect(b, Error::Code::kMalformed, "truncated interface");
  b = good;
  b.push_back(0);
  expect(b, Error::Code::kMalformed, "trailing byte");
  b = good;
  b[12 + 0x137] = 200;
  expect(b, Error::Code::kMalformed, "interfaces beyond buffer");
}

// --- Import ---

TEST(UsbipImport, RequestEncodesNulPadded) {
  auto b = encode_import_request("1-1.4");
  ASSERT_TRUE(b.has_value());
  Bytes want(32, 0);
  put_str(want, 0, "1-1.4");
  EXPECT_EQ(to_vec(*b), want);
  auto back = decode_import_request(*b);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(*back, "1-1.4");
}

TEST(UsbipImport, RequestBusidLimits) {
  EXPECT_TRUE(encode_import_request(std::string(31, 'a')).has_value());
  auto e = encode_import_request(std::string(32, 'a'));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code, Error::Code::kInvalidArgument);
  EXPECT_FALSE(encode_import_request(std::string("a\0b", 3)).has_value());
  auto empty = encode_import_request("");
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(*decode_import_request(*empty), "");
}

TEST(UsbipImport, RequestDecodeRejections) {
  Bytes b(32, 'a');
  auto r = decode_import_request(b);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Error::Code::kMalformed);
  r = decode_import_request(Bytes(31, 0));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code, Error::Code::kMalformed);
  b[31] = 0;
  r = decode_import_request(b);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->size(), 31u);
}

TEST(UsbipImport, ReplyOkCarriesRecord) {
  const auto d = sample_device();
  const auto b = encode_import_reply(kStOk, &d);
  ASSERT_EQ(b.size(), 8u + 312);
  EXPECT_EQ(Bytes(b.begin(), b.begin() + 8), (Bytes{0x01, 0x11, 0, 3, 0, 0, 0, 0}));
  EXPECT_EQ(Bytes(b.begin() + 8, b.end()), sample_device_bytes());
  // Doc offsets for the import reply: busid at 0x108, busnum at 0x128.
  EXPECT_EQ(b[0x108], '3');
  EXPECT_EQ(b[0x128 + 3], 3);
}

TEST(UsbipImport, ReplyErrorIsHeaderOnly) {
  const auto d = sample_device();
  EXPECT_EQ(encode_import_reply(kStNoDev, &d), (Bytes{0x01, 0x11, 0, 3, 0, 0, 0, 4}));
  EXPECT_EQ(encode_import_reply(kStDevBusy, nullptr), (Bytes{0x01, 0x11, 0, 3, 0, 0, 0, 2}));
  // OK without a record would leave the client waiting for 312 bytes: sent as an error.
  EXPECT_EQ(encode_import_reply(kStOk, nullptr), (Bytes{0x01, 0x11, 0, 3, 0, 0, 0, kStError}));
}

// --- URB headers ---

// CMD_SUBMIT as Linux vhci sends GET_DESCRIPTOR(DEVICE, 18) on ep0 of bus 1 device 2.
Bytes get_descriptor_submit() {
  Bytes b = urb(1, 0x10, 0x00010002, 1, 0);
  put32(b, 0x14, 0x00000200);  // URB_DIR_IN
  put32(b, 0x18, 18);
  put32(b, 0x1c, 0);
  put32(b, 0x20, 0xffffffff);  // not iso
  put32(b, 0x24, 0);
  const uint8_t setup[8] = {0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00};
  std::memcpy(&b[0x28], setup, 8);
  return b;
}

TEST(UsbipUrb, DecodesGetDescriptorSubmit) {
  auto pdu = decode_urb_header(get_descriptor_submit());
  ASSERT_TRUE(pdu.has_value()) << pdu.error().message;
  const auto* s = std::get_if<CmdSubmit>(&*pdu);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->seqnum, 0x10u);
  EXPECT_EQ(s->devid, make_devid(1, 2));
  EXPECT_EQ(s->direction, kDirIn);
  EXPECT_EQ(s->ep, 0u);
  EXPECT_EQ(s->transfer_flags, kUrbDirIn);
  EXPECT_EQ(s->transfer_buffer_length, 18);
  EXPECT_EQ(s->start_frame, 0);
  EXPECT_EQ(s->number_of_packets, -1);
  EXPECT_EQ(s->interval, 0);
  const auto setup = SetupPacket::from_bytes(s->setup);
  EXPECT_EQ(setup.request_type, 0x80);
  EXPECT_EQ(setup.request, request::kGetDescriptor);
  EXPECT_EQ(setup.value, 0x0100);
  EXPECT_EQ(setup.index, 0);
  EXPECT_EQ(setup.length, 18);
  EXPECT_EQ(to_vec(encode(*s)), get_descriptor_submit());
  EXPECT_EQ(submit_payload_length(*s), 0u);  // IN: no data follows
  EXPECT_EQ(submit_iso_length(*s), 0u);
}

TEST(UsbipUrb, CmdSubmitFieldOffsets) {
  CmdSubmit s;
  s.seqnum = 0x01020304;
  s.devid = 0x05060708;
  s.direction = kDirOut;
  s.ep = 0x0f;
  s.transfer_flags = 0x11121314;
  s.transfer_buffer_length = 0x21222324;
  s.start_frame = 0x31323334;
  s.number_of_packets = 0x41424344;
  s.interval = 0x51525354;
  s.setup = {0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68};
  const auto b = encode(s);
  const Bytes want = {0,    0,    0,    1,    1,    2,    3,    4,    5,    6,    7,    8,
                      0,    0,    0,    0,    0,    0,    0,    0x0f, 0x11, 0x12, 0x13, 0x14,
                      0x21, 0x22, 0x23, 0x24, 0x31, 0x32, 0x33, 0x34, 0x41, 0x42, 0x43, 0x44,
                      0x51, 0x52, 0x53, 0x54, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68};
  EXPECT_EQ(to_vec(b), want);
  Limits big{0x7fffffff, 0x7fffffff};
  auto back = decode_urb_header(b, big);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(std::get<CmdSubmit>(*back), s);
}

TEST(UsbipUrb, RetSubmitFieldOffsets) {
  RetSubmit r;
  r.seqnum = 0x01020304;
  r.status = -32;
  r.actual_length = 0x00000102;
  r.start_frame = -1;
  r.number_of_packets = 3;
  r.error_count = 0x05060708;
  const auto b = encode(r);
  Bytes want = urb(3, 0x01020304);
  put32(want, 0x14, 0xffffffe0);
  put32(want, 0x18, 0x102);
  put32(want, 0x1c, 0xffffffff);
  put32(want, 0x20, 3);
  put32(want, 0x24, 0x05060708);
  EXPECT_EQ(to_vec(b), want);
  auto back = decode_urb_header(b);
  ASSERT_TRUE(back.has_value()) << back.error().message;
  EXPECT_EQ(std::get<RetSubmit>(*back), r);
}

TEST(UsbipUrb, UnlinkFieldOffsets) {
  const CmdUnlink u{7, make_devid(2, 5), kDirIn, 0, 6};
  Bytes want = urb(2, 7, 0x00020005, 1, 0);
  put32(want, 0x14, 6);
  EXPECT_EQ(to_vec(encode(u)), want);
  auto back = decode_urb_header(want);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(std::get<CmdUnlink>(*back), u);

  const RetUnlink r{7, 0, 0, 0, -104};
  want = urb(4, 7);
  put32(want, 0x14, 0xffffff98);
  EXPECT_EQ(to_vec(encode(r)), want);
  back = decode_urb_header(want);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(std::get<RetUnlink>(*back), r);
}

TEST(UsbipUrb, PaddingIsIgnoredOnDecodeAndZeroOnEncode) {
  Bytes b = urb(4, 1);
  std::fill(b.begin() + 24, b.end(), 0xaa);
  auto pdu = decode_urb_header(b);
  ASSERT_TRUE(pdu.has_value());
  const auto again = encode(std::get<RetUnlink>(*pdu));
  EXPECT_TRUE(std::all_of(again.begin() + 24, again.end(), [](uint8_t x) { return x == 0; }));
}

TEST(UsbipUrb, LongerSpanUsesFirst48Bytes) {
  Bytes b = get_descriptor_submit();
  b.resize(100, 0xcc);
  EXPECT_TRUE(decode_urb_header(b).has_value());
}

void expect_rejected(const Bytes& b, Error::Code code, const Limits& limits = {}) {
  auto pdu = decode_urb_header(b, limits);
  ASSERT_FALSE(pdu.has_value());
  EXPECT_EQ(pdu.error().code, code) << pdu.error().message;
  EXPECT_FALSE(pdu.error().message.empty());
}

TEST(UsbipUrb, RejectsShortHeader) {
  Bytes b = get_descriptor_submit();
  b.pop_back();
  expect_rejected(b, Error::Code::kMalformed);
  expect_rejected({}, Error::Code::kMalformed);
}

TEST(UsbipUrb, RejectsUnknownCommand) {
  for (uint32_t cmd : {0u, 5u, 0x8001u, 0x01000000u}) {
    expect_rejected(urb(cmd, 1), Error::Code::kMalformed);
  }
}

TEST(UsbipUrb, RejectsBadDirectionAndEndpoint) {
  for (uint32_t cmd = 1; cmd <= 4; ++cmd) {
    expect_rejected(urb(cmd, 1, 0, 2, 0), Error::Code::kMalformed);
    expect_rejected(urb(cmd, 1, 0, 0x01000000, 0), Error::Code::kMalformed);
    expect_rejected(urb(cmd, 1, 0, 0, 16), Error::Code::kMalformed);
    EXPECT_TRUE(decode_urb_header(urb(cmd, 1, 0, 1, 15)).has_value()) << cmd;
  }
}

TEST(UsbipUrb, TransferBufferLengthLimits) {
  const Limits limits{4096, 8};
  Bytes b = get_descriptor_submit();
  put32(b, 0x18, 4096);
  EXPECT_TRUE(decode_urb_header(b, limits).has_value());
  put32(b, 0x18, 4097);
  expect_rejected(b, Error::Code::kTooLarge, limits);
  put32(b, 0x18, 0xffffffff);
  expect_rejected(b, Error::Code::kMalformed, limits);
  put32(b, 0x18, 0x80000000);
  expect_rejected(b, Error::Code::kMalformed, limits);
  put32(b, 0x18, 0);
  EXPECT_TRUE(decode_urb_header(b, limits).has_value());
  // Default limit: 16 MiB.
  put32(b, 0x18, 16u << 20);
  EXPECT_TRUE(decode_urb_header(b).has_value());
  put32(b, 0x18, (16u << 20) + 1);
  expect_rejected(b, Error::Code::kTooLarge);
}

TEST(UsbipUrb, NumberOfPacketsLimits) {
  const Limits limits{1 << 20, 8};
  for (uint32_t cmd : {kCmdSubmit, kRetSubmit}) {
    Bytes b = urb(cmd, 1);
    for (int32_t ok : {-1, 0, 1, 8}) {
      put32(b, 0x20, static_cast<uint32_t>(ok));
      EXPECT_TRUE(decode_urb_header(b, limits).has_value()) << cmd << " " << ok;
    }
    put32(b, 0x20, 9);
    expect_rejected(b, Error::Code::kTooLarge, limits);
    put32(b, 0x20, static_cast<uint32_t>(-2));
    expect_rejected(b, Error::Code::kMalformed, limits);
    put32(b, 0x20, 0x80000000);
    expect_rejected(b, Error::Code::kMalformed, limits);
    put32(b, 0x20, kMaxIsoPackets);
    EXPECT_TRUE(decode_urb_header(b).has_value());
    put32(b, 0x20, kMaxIsoPackets + 1);
    expect_rejected(b, Error::Code::kTooLarge);
  }
}

TEST(UsbipUrb, ActualLengthLimits) {
  const Limits limits{512, 8};
  Bytes b = urb(kRetSubmit, 9);
  put32(b, 0x18, 512);
  EXPECT_TRUE(decode_urb_header(b, limits).has_value());
  put32(b, 0x18, 513);
  expect_rejected(b, Error::Code::kTooLarge, limits);
  put32(b, 0x18, 0xfffffffe);
  expect_rejected(b, Error::Code::kMalformed, limits);
}

TEST(UsbipUrb, UnlinkFieldsAreNotLimitChecked) {
  Bytes b = urb(kCmdUnlink, 1);
  put32(b, 0x14, 0xffffffff);  // any seqnum may be unlinked
  put32(b, 0x20, 0xffffffff);  // padding
  EXPECT_TRUE(decode_urb_header(b, Limits{0, 0}).has_value());
  b = urb(kRetUnlink, 1);
  put32(b, 0x14, 0x80000000);
  auto pdu = decode_urb_header(b);
  ASSERT_TRUE(pdu.has_value());
  EXPECT_EQ(std::get<RetUnlink>(*pdu).status, INT32_MIN);
}

// --- Framing ---

TEST(UsbipFraming, SubmitPayload) {
  CmdSubmit s;
  s.transfer_buffer_length = 512;
  s.direction = kDirOut;
  EXPECT_EQ(submit_payload_length(s), 512u);
  s.direction = kDirIn;
  EXPECT_EQ(submit_payload_length(s), 0u);
  s.direction = kDirOut;
  s.transfer_buffer_length = -5;  // never decoded, but never a huge unsigned either
  EXPECT_EQ(submit_payload_length(s), 0u);
}

TEST(UsbipFraming, SubmitIso) {
  CmdSubmit s;
  s.number_of_packets = -1;
  EXPECT_EQ(submit_iso_length(s), 0u);
  s.number_of_packets = 0;
  EXPECT_EQ(submit_iso_length(s), 0u);
  s.number_of_packets = 3;
  EXPECT_EQ(submit_iso_length(s), 48u);
  s.number_of_packets = 1024;
  EXPECT_EQ(submit_iso_length(s), 16384u);
  s.number_of_packets = INT32_MAX;  // saturates instead of wrapping
  EXPECT_EQ(submit_iso_length(s), UINT32_MAX);
}

TEST(UsbipFraming, RetSubmit) {
  RetSubmit r;
  r.actual_length = 100;
  r.number_of_packets = 2;
  EXPECT_EQ(ret_submit_payload_length(r, kDirIn), 100u);
  EXPECT_EQ(ret_submit_payload_length(r, kDirOut), 0u);
  EXPECT_EQ(ret_submit_iso_length(r), 32u);
  r.number_of_packets = -1;
  EXPECT_EQ(ret_submit_iso_length(r), 0u);
  r.actual_length = -1;
  EXPECT_EQ(ret_submit_payload_length(r, kDirIn), 0u);
}

// --- Iso descriptors ---

TEST(UsbipIso, EncodesBigEndian) {
  const IsoDescriptor d{0x01020304, 0x05060708, 0x090a0b0c, -18};
  EXPECT_EQ(to_vec(encode_iso_descriptor(d)),
            (Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 0xa, 0xb, 0xc, 0xff, 0xff, 0xff, 0xee}));
}

TEST(UsbipIso, ManyRoundTrip) {
  std::vector<IsoDescriptor> in;
  for (uint32_t i = 0; i < 8; ++i) in.push_back({i * 192, 192, i * 10, i == 3 ? -18 : 0});
  Bytes b(in.size() * 16);
  encode_iso_descriptors(in, b);
  auto out = decode_iso_descriptors(b, 8 * 192);
  ASSERT_TRUE(out.has_value()) << out.error().message;
  EXPECT_EQ(*out, in);
  // One byte less of buffer and the last packet no longer fits.
  auto bad = decode_iso_descriptors(b, 8 * 192 - 1);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, Error::Code::kMalformed);
  EXPECT_NE(bad.error().message.find("iso descriptor 7"), std::string::npos);
}

TEST(UsbipIso, EncodeNeverOverflowsOutput) {
  std::vector<IsoDescriptor> in(3, IsoDescriptor{1, 2, 3, 4});
  Bytes b(40, 0xaa);  // room for two and a half
  encode_iso_descriptors(in, b);
  EXPECT_EQ(b[31], 4);
  EXPECT_EQ(b[32], 0xaa);
  EXPECT_EQ(b[39], 0xaa);
}

TEST(UsbipIso, DecodeBounds) {
  auto one = [](IsoDescriptor d, uint32_t buffer) {
    const auto b = encode_iso_descriptor(d);
    return decode_iso_descriptors(b, buffer);
  };
  EXPECT_TRUE(one({0, 0, 0, 0}, 0).has_value());
  EXPECT_TRUE(one({0, 100, 100, 0}, 100).has_value());
  EXPECT_TRUE(one({100, 0, 0, 0}, 100).has_value());
  EXPECT_FALSE(one({1, 100, 0, 0}, 100).has_value());
  EXPECT_FALSE(one({101, 0, 0, 0}, 100).has_value());
  EXPECT_FALSE(one({0, 100, 101, 0}, 1000).has_value());  // actual > length
  // offset + length overflowing 32 bits must not wrap into range.
  EXPECT_FALSE(one({0xffffff00, 0x200, 0, 0}, 0x100).has_value());
  EXPECT_FALSE(one({0xffffffff, 0xffffffff, 0, 0}, 0xffffffff).has_value());
}

TEST(UsbipIso, DecodeRejectsPartialDescriptor) {
  for (size_t n : {1u, 15u, 17u, 31u}) {
    auto r = decode_iso_descriptors(Bytes(n, 0), 100);
    ASSERT_FALSE(r.has_value()) << n;
    EXPECT_EQ(r.error().code, Error::Code::kMalformed);
  }
  auto empty = decode_iso_descriptors({}, 0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_TRUE(empty->empty());
}

TEST(UsbipDevid, Packing) {
  EXPECT_EQ(make_devid(1, 2), 0x00010002u);
  EXPECT_EQ(make_devid(3, 0x12345), 0x00032345u);
  static_assert(make_devid(0xffff, 0xffff) == 0xffffffffu);
}

}  // namespace
}  // namespace usb::wire::usbip
