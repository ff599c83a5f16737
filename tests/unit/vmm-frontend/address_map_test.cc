#include "vmm-frontend/address_map.h"

#include <gtest/gtest.h>

namespace vusbd {
namespace {

TEST(AddressMapTest, EachVmHasItsOwnAddressSpace) {
  AddressMap map;
  const auto cam = map.add_device("cam"), gz = map.add_device("gz");
  EXPECT_NE(cam, gz);
  // Both VMs see their first device at 1-1, devid 0x10002, but they are different devices.
  auto a = map.assign("vm1", cam), b = map.assign("vm2", gz);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->busid, "1-1");
  EXPECT_EQ(b->busid, "1-1");
  EXPECT_EQ(a->devid(), 0x10002u);
  EXPECT_EQ(map.resolve_devid("vm1", 0x10002), cam);
  EXPECT_EQ(map.resolve_devid("vm2", 0x10002), gz);
  EXPECT_EQ(map.resolve_busid("vm2", "1-1"), gz);
  // vm1 was not given gz: no address of vm1's reaches it.
  EXPECT_FALSE(map.address("vm1", gz));
  EXPECT_FALSE(map.resolve_devid("vm1", 0x10003));
  EXPECT_FALSE(map.resolve_devid("vm3", 0x10002));
  EXPECT_FALSE(map.resolve_devid("vm1", 0x20002)) << "another bus";
  EXPECT_FALSE(map.resolve_devid("vm1", 0x10001)) << "the root hub's address";
  EXPECT_FALSE(map.resolve_busid("vm1", "1-01"));
  EXPECT_FALSE(map.resolve_busid("vm1", "1-1x"));
  EXPECT_FALSE(map.resolve_busid("vm1", "2-1"));
}

TEST(AddressMapTest, PortsAreReusedAndRequestedPortsHonoured) {
  AddressMap map;
  const auto a = map.add_device("a"), b = map.add_device("b"), c = map.add_device("c");
  EXPECT_EQ(map.assign("vm", a)->port, 1u);
  EXPECT_EQ(map.assign("vm", b, 5)->busid, "1-5");
  EXPECT_EQ(map.assign("vm", b)->port, 5u) << "assigning again keeps the address";
  auto taken = map.assign("vm", c, 5);
  ASSERT_FALSE(taken);
  EXPECT_EQ(taken.error().code, usb::Error::Code::kBusy);
  EXPECT_FALSE(map.assign("vm", c, AddressMap::kMaxPort + 1));
  map.release("vm", a);
  EXPECT_FALSE(map.resolve_busid("vm", "1-1"));
  EXPECT_EQ(map.assign("vm", c)->port, 1u) << "the lowest free port";
  ASSERT_EQ(map.holders(b).size(), 1u);
  map.remove_device(b);
  EXPECT_TRUE(map.holders(b).empty());
  EXPECT_FALSE(map.resolve_busid("vm", "1-5"));
  EXPECT_FALSE(map.assign("vm", b)) << "a removed device cannot be given";
  const auto d = map.add_device("d");
  EXPECT_GT(d, c) << "global ids are not reused";
}

TEST(AddressMapTest, ABusFillsUp) {
  AddressMap map;
  for (uint32_t i = 0; i < AddressMap::kMaxPort; ++i)
    ASSERT_TRUE(map.assign("vm", map.add_device("d" + std::to_string(i))));
  auto full = map.assign("vm", map.add_device("one-too-many"));
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, usb::Error::Code::kBusy);
  EXPECT_TRUE(map.assign("other-vm", map.add_device("fine")));
}

}  // namespace
}  // namespace vusbd
