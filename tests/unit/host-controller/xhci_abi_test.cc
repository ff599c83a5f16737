// The xHCI ABI headers against byte images laid out as the specification draws them, and guest
// memory's bounds checks.
#include <gtest/gtest.h>

#include <cstring>

#include "host-controller/common/guest_memory.h"
#include "host-controller/xhci/context.h"
#include "host-controller/xhci/regs.h"
#include "host-controller/xhci/trb.h"

namespace hc::xhci {
namespace {

Trb from_bytes(const std::array<uint8_t, 16>& b) {
  Trb t;
  static_assert(sizeof(t) == sizeof(b));
  std::memcpy(&t, b.data(), sizeof(t));
  return t;
}

TEST(XhciTrb, DecodesASetupStageAsLinuxWritesIt) {
  // GET_DESCRIPTOR(device, 18): bmRequestType 0x80, bRequest 6, wValue 0x0100, wLength 18, as
  // immediate data; TRB transfer length 8; IDT, TRT = IN (3), type Setup Stage (2), cycle 1.
  const Trb t = from_bytes({0x80, 0x06, 0x00, 0x01, 0x00, 0x00, 0x12, 0x00,  // parameter
                            0x08, 0x00, 0x00, 0x00,                          // status
                            0x41, 0x08, 0x03, 0x00});                        // control
  EXPECT_EQ(t.type(), TrbType::kSetupStage);
  EXPECT_TRUE(t.cycle());
  EXPECT_TRUE(t.idt());
  EXPECT_EQ(t.setup_trt(), 3u);
  EXPECT_EQ(t.transfer_length(), 8u);
  EXPECT_EQ(t.parameter & 0xff, 0x80u);
  EXPECT_EQ((t.parameter >> 48) & 0xffff, 18u);
}

TEST(XhciTrb, CommandFieldsAndLinkTarget) {
  Trb addr;
  addr.parameter = 0x12345670;
  addr.control = (5u << 24) | (1u << 9) | 1u;
  addr.set_type(TrbType::kAddressDevice);
  EXPECT_EQ(addr.slot_id(), 5);
  EXPECT_TRUE(addr.bsr());
  EXPECT_EQ(addr.context_pointer(), 0x12345670u);
  EXPECT_EQ(addr.control & 0xfc00u, 11u << 10);
  Trb stop;
  stop.control = (3u << 24) | (4u << 16);
  stop.set_type(TrbType::kStopEndpoint);
  EXPECT_EQ(stop.endpoint_id(), 4);
  Trb link;
  link.parameter = 0xabcdef0f;
  link.control = 2u;  // toggle cycle
  link.set_type(TrbType::kLink);
  EXPECT_EQ(link.link_target(), 0xabcdef00u);
  EXPECT_TRUE(link.ent_or_toggle());
}

TEST(XhciTrb, EventsCarryCodeSlotAndEndpoint) {
  const Trb e = Trb::transfer_event(0x1000, 7, Completion::kShortPacket, 2, 3);
  EXPECT_EQ(e.type(), TrbType::kTransferEvent);
  EXPECT_EQ(e.completion_code(), Completion::kShortPacket);
  EXPECT_EQ(e.event_residual(), 7u);
  EXPECT_EQ(e.slot_id(), 2);
  EXPECT_EQ(e.endpoint_id(), 3);
  const Trb c = Trb::command_completion(0x2000, Completion::kBandwidthError, 1);
  EXPECT_EQ(static_cast<int>(c.completion_code()), 8) << "Bandwidth Error is code 8 (6.4.5)";
  EXPECT_EQ(Trb::port_status_change(4).event_port(), 4);
}

TEST(XhciContext, FieldsSitWhereTheSpecDrawsThem) {
  EndpointContext ep;
  ep.dw[0] = (3u << 16) | 1u;                       // interval 3, running
  ep.dw[1] = (512u << 16) | (6u << 3) | (3u << 1);  // MPS 512, bulk IN, CErr 3
  ep.set_dequeue(0x7000, true);
  EXPECT_EQ(ep.state(), EndpointState::kRunning);
  EXPECT_EQ(ep.interval(), 3u);
  EXPECT_EQ(ep.type(), EndpointType::kBulkIn);
  EXPECT_EQ(ep.max_packet_size(), 512u);
  EXPECT_EQ(ep.cerr(), 3u);
  EXPECT_EQ(ep.dequeue_pointer(), 0x7000u);
  EXPECT_TRUE(ep.dequeue_cycle());
  SlotContext slot;
  slot.dw[0] = (1u << 27) | (3u << 20);  // one context entry, high speed
  slot.dw[1] = 2u << 16;                 // root hub port 2
  slot.set_state(SlotState::kAddressed);
  slot.set_usb_address(5);
  EXPECT_EQ(slot.context_entries(), 1u);
  EXPECT_EQ(slot.speed(), reg::kSpeedHigh);
  EXPECT_EQ(slot.root_hub_port(), 2u);
  EXPECT_EQ(slot.state(), SlotState::kAddressed);
  EXPECT_EQ(slot.usb_address(), 5u);
  EXPECT_EQ(slot.context_entries(), 1u) << "state and address leave the other fields alone";
}

TEST(GuestMemory, RefusesEveryAccessOutsideRam) {
  InMemoryGuestMemory mem(4096, 0x10000);
  Trb t = Trb::port_status_change(1);
  EXPECT_TRUE(mem.write_obj(0x10000, t));
  EXPECT_TRUE(mem.write_obj(0x10000 + 4096 - 16, t));
  EXPECT_FALSE(mem.write_obj(0x10000 + 4096 - 8, t)) << "straddles the end";
  EXPECT_FALSE(mem.write_obj(0xfff8, t)) << "starts below the base";
  EXPECT_FALSE(mem.write_obj(UINT64_MAX - 4, t)) << "wraps around";
  Trb back;
  EXPECT_TRUE(mem.read_obj(0x10000, back));
  EXPECT_EQ(back.type(), TrbType::kPortStatusChangeEvent);
  uint8_t big[16];
  EXPECT_FALSE(mem.read(0x10000 + 4090, big));
}

}  // namespace
}  // namespace hc::xhci
