// BandwidthLedger: costs from descriptors, admission all-or-nothing, and a property test: no
// sequence of reserves and releases ever over-commits a slot, and releasing gives back exactly.
#include "schedulers/bandwidth_ledger.h"

#include <gtest/gtest.h>

#include <random>

namespace sched {
namespace {

usb::EndpointDescriptor iso(uint8_t addr, uint16_t mps, uint8_t interval, uint8_t mult = 1) {
  usb::EndpointDescriptor e;
  e.address = addr;
  e.attributes = 1;  // isochronous
  e.max_packet_size = static_cast<uint16_t>(mps | ((mult - 1) << 11));
  e.interval = interval;
  return e;
}

TEST(BandwidthLedgerTest, BudgetsFollowTheSpec) {
  EXPECT_EQ(BandwidthLedger(usb::Speed::kHigh).budget(), 100000u) << "80% of 125 µs, in ns";
  EXPECT_EQ(BandwidthLedger(usb::Speed::kHigh).slots(), 8u);
  EXPECT_EQ(BandwidthLedger(usb::Speed::kFull).budget(), 900000u) << "90% of 1 ms";
  EXPECT_EQ(BandwidthLedger(usb::Speed::kFull).slots(), 1u);
  EXPECT_EQ(BandwidthLedger(usb::Speed::kSuper).budget(), 56250u) << "90% of 62500 bytes";
}

TEST(BandwidthLedgerTest, CostsGrowWithPacketSizeMultiplierAndShrinkWithInterval) {
  BandwidthLedger hs(usb::Speed::kHigh);
  const auto small = hs.cost(iso(0x81, 512, 1), usb::Speed::kHigh);
  const auto big = hs.cost(iso(0x81, 1024, 1), usb::Speed::kHigh);
  const auto triple = hs.cost(iso(0x81, 1024, 1, 3), usb::Speed::kHigh);
  EXPECT_LT(small.per_service, big.per_service);
  EXPECT_EQ(triple.per_service, 3 * big.per_service);
  // 1024 bytes at 480 Mb/s with stuffing is ~20 µs of a microframe.
  EXPECT_GT(big.per_service, 19000u);
  EXPECT_LT(big.per_service, 21500u);
  EXPECT_EQ(hs.cost(iso(0x81, 1024, 4), usb::Speed::kHigh).interval_slots, 8u);
  EXPECT_EQ(hs.cost(iso(0x81, 1024, 2), usb::Speed::kHigh).interval_slots, 2u);
  usb::EndpointDescriptor bulk;
  bulk.attributes = 2;
  bulk.max_packet_size = 512;
  EXPECT_EQ(hs.cost(bulk, usb::Speed::kHigh).per_service, 0u) << "bulk is not periodic";
}

TEST(BandwidthLedgerTest, AdmissionIsAllOrNothingAndRefusalsSayWhy) {
  BandwidthLedger hs(usb::Speed::kHigh);
  // Three 3×1024-byte endpoints every microframe do not fit in 100 µs (each ~61 µs).
  auto first = hs.reserve(1, std::vector{iso(0x81, 1024, 1, 3)}, usb::Speed::kHigh);
  ASSERT_TRUE(first);
  const uint32_t before = hs.load(0);
  auto second =
      hs.reserve(2, std::vector{iso(0x82, 512, 1), iso(0x83, 1024, 1, 3)}, usb::Speed::kHigh);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, usb::Error::Code::kBusy);
  EXPECT_NE(second.error().message.find("endpoint 131"), std::string::npos)
      << second.error().message;
  EXPECT_EQ(hs.load(0), before) << "nothing of the refused reservation stays";
  EXPECT_FALSE(hs.reservation(2));
  // Replacing a key's reservation (a new alternate setting) frees its old share first.
  ASSERT_TRUE(hs.reserve(1, std::vector{iso(0x81, 512, 1)}, usb::Speed::kHigh));
  EXPECT_LT(hs.load(0), before);
  ASSERT_TRUE(hs.reserve(2, std::vector{iso(0x83, 1024, 1, 3)}, usb::Speed::kHigh));
  hs.release(1);
  hs.release(2);
  EXPECT_EQ(hs.headroom(), hs.budget());
  EXPECT_FALSE(hs.reserve(3, std::vector{iso(0x81, 64, 1)}, usb::Speed::kFull))
      << "a full-speed device does not go on a high-speed ledger";
}

TEST(BandwidthLedgerTest, LongerIntervalsSpreadOverTheMicroframes) {
  BandwidthLedger hs(usb::Speed::kHigh);
  // Eight endpoints every 8 microframes, each too big to share a microframe with another
  // (~61 µs): one per microframe fits exactly; a ninth does not.
  for (uint64_t k = 0; k < 8; ++k)
    ASSERT_TRUE(hs.reserve(k, std::vector{iso(0x81, 1024, 4, 3)}, usb::Speed::kHigh)) << k;
  for (size_t s = 0; s < hs.slots(); ++s) EXPECT_GT(hs.load(s), 0u);
  EXPECT_FALSE(hs.reserve(8, std::vector{iso(0x81, 1024, 4, 3)}, usb::Speed::kHigh));
}

TEST(BandwidthLedgerTest, RandomReserveReleaseNeverOverCommits) {
  for (auto speed : {usb::Speed::kHigh, usb::Speed::kFull, usb::Speed::kSuper}) {
    BandwidthLedger l(speed);
    std::mt19937 rng(static_cast<unsigned>(speed));
    std::map<uint64_t, bool> held;
    for (int step = 0; step < 5000; ++step) {
      const uint64_t key = rng() % 32;
      if (rng() % 3 == 0) {
        l.release(key);
        held.erase(key);
      } else {
        std::vector<usb::EndpointDescriptor> eps;
        for (uint32_t n = rng() % 3 + 1; n > 0; --n) {
          const uint16_t mps = static_cast<uint16_t>(64 * (1 + rng() % 16));
          auto e = iso(static_cast<uint8_t>(0x81 + n),
                       speed == usb::Speed::kFull ? std::min<uint16_t>(mps, 1023) : mps,
                       static_cast<uint8_t>(1 + rng() % 4), static_cast<uint8_t>(1 + rng() % 3));
          if (speed == usb::Speed::kSuper)
            e.ss_companion = usb::SsEndpointCompanion{static_cast<uint8_t>(rng() % 4), 0, 0};
          eps.push_back(e);
        }
        if (l.reserve(key, eps, speed)) held[key] = true;
      }
      for (size_t s = 0; s < l.slots(); ++s) ASSERT_LE(l.load(s), l.budget()) << "step " << step;
    }
    for (auto& [key, _] : held) l.release(key);
    for (size_t s = 0; s < l.slots(); ++s) EXPECT_EQ(l.load(s), 0u) << "released exactly";
  }
}

}  // namespace
}  // namespace sched
