// BusReservations: shared reservations, refusals that change nothing, and a property test of
// random uses and leaves in which no bus slot is ever over-committed.
#include "schedulers/bus_reservations.h"

#include <gtest/gtest.h>

#include <random>

namespace sched {
namespace {

usb::EndpointDescriptor iso(uint8_t address, uint16_t mps, uint8_t mult, uint8_t interval) {
  usb::EndpointDescriptor e;
  e.address = address;
  e.attributes = 0x01;
  e.max_packet_size = static_cast<uint16_t>(mps | (mult << 11));
  e.interval = interval;
  return e;
}

usb::EndpointDescriptor bulk(uint8_t address) {
  usb::EndpointDescriptor e;
  e.address = address;
  e.attributes = 0x02;
  e.max_packet_size = 512;
  return e;
}

// Gadget Zero alt 1 with 2 × 1024-byte transactions every microframe, IN and OUT: ~82 µs of
// the 100 µs a high-speed microframe may carry.
std::vector<usb::EndpointDescriptor> heavy_alt() {
  return {bulk(0x81), bulk(0x01), iso(0x82, 1024, 1, 1), iso(0x02, 1024, 1, 1)};
}

uint32_t max_load(const BusReservations& r) {
  uint32_t m = 0;
  for (const auto& b : r.buses())
    for (size_t s = 0; s < b.ledger->slots(); ++s) m = std::max(m, b.ledger->load(s));
  return m;
}

TEST(BusReservations, ASecondHeavyStreamOnTheSameBusIsRefusedAndChangesNothing) {
  BusReservations r;
  int changes = 0;
  r.on_change([&] { ++changes; });
  ASSERT_TRUE(r.use("vm1", "lab", "gz1", 0, 1, heavy_alt(), usb::Speed::kHigh));
  EXPECT_EQ(changes, 1);
  const uint32_t load = max_load(r);
  EXPECT_GT(load, 80000u);
  auto refused = r.use("vm2", "lab", "gz2", 0, 1, heavy_alt(), usb::Speed::kHigh);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("gz2"), std::string::npos) << refused.error().message;
  EXPECT_EQ(max_load(r), load);
  EXPECT_EQ(r.holdings().size(), 1u);
  EXPECT_EQ(changes, 1);
  // Another bus has room of its own.
  EXPECT_TRUE(r.use("vm2", "other", "gz3", 0, 1, heavy_alt(), usb::Speed::kHigh));
  // Once vm1 leaves, vm2 fits.
  r.leave("vm1", "gz1");
  EXPECT_TRUE(r.use("vm2", "lab", "gz2", 0, 1, heavy_alt(), usb::Speed::kHigh));
}

TEST(BusReservations, VmsUsingOneSettingOfASharedDeviceHoldOneReservation) {
  BusReservations r;
  ASSERT_TRUE(r.use("vm1", "lab", "gz", 0, 1, heavy_alt(), usb::Speed::kHigh));
  const uint32_t load = max_load(r);
  ASSERT_TRUE(r.use("vm2", "lab", "gz", 0, 1, heavy_alt(), usb::Speed::kHigh));
  EXPECT_EQ(max_load(r), load) << "one stream on the bus";
  ASSERT_EQ(r.holdings().size(), 1u);
  EXPECT_EQ(r.holdings()[0]->vms, (std::set<std::string>{"vm1", "vm2"}));
  r.leave("vm1", "gz");
  EXPECT_EQ(max_load(r), load) << "vm2 still holds it";
  r.leave("vm2", "gz", 0);
  EXPECT_EQ(max_load(r), 0u);
  EXPECT_TRUE(r.holdings().empty());
}

TEST(BusReservations, NonPeriodicSettingsReserveNothingAndReleaseWhatTheVmHeld) {
  BusReservations r;
  ASSERT_TRUE(r.use("vm1", "lab", "gz", 0, 1, heavy_alt(), usb::Speed::kHigh));
  ASSERT_TRUE(r.use("vm1", "lab", "gz", 0, 0, {{bulk(0x81), bulk(0x01)}}, usb::Speed::kHigh));
  EXPECT_TRUE(r.holdings().empty());
  EXPECT_EQ(max_load(r), 0u);
}

TEST(BusReservations, RemovingADeviceReleasesEveryReservationOnIt) {
  BusReservations r;
  ASSERT_TRUE(r.use("vm1", "lab", "gz", 0, 1, heavy_alt(), usb::Speed::kHigh));
  ASSERT_TRUE(r.use("vm1", "lab", "kbd", 0, 0, {{iso(0x81, 8, 0, 4)}}, usb::Speed::kHigh));
  r.remove_device("gz");
  ASSERT_EQ(r.holdings().size(), 1u);
  EXPECT_EQ(r.holdings()[0]->device, "kbd");
}

// Thousands of random uses and leaves by 8 VMs on 12 device interfaces of two buses: the load
// each ledger reports always equals the sum of the holdings' placements and never exceeds the
// budget; a refused use never changes the load.
TEST(BusReservations, RandomSequencesNeverOverCommit) {
  std::mt19937 rng(20261121);
  BusReservations r;
  const std::vector<std::vector<usb::EndpointDescriptor>> settings = {
      {},
      {iso(0x81, 1024, 0, 1)},
      {iso(0x81, 1024, 2, 1), iso(0x02, 512, 0, 2)},
      {iso(0x81, 3072 & 0x7ff, 1, 4)},
      {iso(0x83, 64, 0, 1), iso(0x84, 8, 0, 3)},
      heavy_alt(),
  };
  int refused = 0, accepted = 0;
  for (int step = 0; step < 20000; ++step) {
    const std::string vm = "vm" + std::to_string(rng() % 8);
    const std::string device = "dev" + std::to_string(rng() % 6);
    const std::string bus = (device.back() - '0') % 2 ? "b1" : "b0";
    const uint8_t intf = static_cast<uint8_t>(rng() % 2);
    if (rng() % 3 == 0) {
      r.leave(vm, device, rng() % 2 ? std::optional<uint8_t>(intf) : std::nullopt);
    } else {
      const auto before = max_load(r);
      const uint8_t alt = static_cast<uint8_t>(rng() % settings.size());
      if (auto ok = r.use(vm, bus, device, intf, alt, settings[alt], usb::Speed::kHigh)) {
        ++accepted;
      } else {
        ++refused;
        ASSERT_EQ(max_load(r), before);
      }
    }
    for (const auto& b : r.buses()) {
      std::vector<uint64_t> sum(b.ledger->slots(), 0);
      for (const auto* h : r.holdings())
        if (b.bus == h->bus)  // (one speed class per bus here)
          for (const auto& p : h->placements)
            for (size_t s = p.phase; s < sum.size(); s += p.cost.interval_slots)
              sum[s] += p.cost.per_service;
      for (size_t s = 0; s < sum.size(); ++s) {
        ASSERT_EQ(sum[s], b.ledger->load(s)) << "step " << step;
        ASSERT_LE(b.ledger->load(s), b.ledger->budget()) << "step " << step;
      }
    }
  }
  EXPECT_GT(refused, 100);
  EXPECT_GT(accepted, 1000);
}

}  // namespace
}  // namespace sched
