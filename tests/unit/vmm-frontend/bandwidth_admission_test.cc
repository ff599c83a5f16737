// BandwidthAdmission through SharedDevice's views, on a FakeDevice shaped like Gadget Zero (alt 1
// adds isochronous endpoints): what each VM selects is reserved in the bus book, and given back.
// The refusal of an over-committing setting is tested against emulated Gadget Zeros in
// schedulers_in_vusbd_test.cc.
#include <gtest/gtest.h>

#include "schedulers/bus_reservations.h"
#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;

class BandwidthAdmissionTest : public SharedDeviceTest {
 protected:
  BandwidthAdmissionTest() { shared.set_bandwidth(&book, "lab"); }
  const sched::BusReservations::Holding* holding() const {
    auto h = book.holdings();
    return h.size() == 1 ? h[0] : nullptr;
  }
  sched::BusReservations book;
};

TEST_F(BandwidthAdmissionTest, AnAlternateSettingIsReservedForItsVmsAndGivenBack) {
  EXPECT_EQ(shared.bus(), "lab");
  Status s = Status::kIoError;
  a.set_interface(0, 1, [&](Status st) { s = st; });
  ASSERT_EQ(s, Status::kOk);
  const auto* h = holding();
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->device, "gz");
  EXPECT_EQ(h->alternate, 1);
  EXPECT_EQ(h->vms, (std::set<std::string>{"vmA"}));
  b.set_interface(0, 1, [&](Status st) { s = st; });
  ASSERT_EQ(s, Status::kOk);
  ASSERT_NE(holding(), nullptr) << "one setting of one device: one reservation";
  EXPECT_EQ(holding()->vms, (std::set<std::string>{"vmA", "vmB"}));
  a.release();
  b.release();
  EXPECT_TRUE(book.holdings().empty());
}

TEST_F(BandwidthAdmissionTest, AControllerReservesTheSettingItsEndpointsBelongTo) {
  const auto* cfg = backend.descriptors().find_configuration(backend.active_configuration());
  ASSERT_NE(cfg, nullptr);
  const auto* alt1 = cfg->find(0, 1);
  ASSERT_NE(alt1, nullptr);
  EXPECT_EQ(a.admit_endpoints(alt1->endpoints), Status::kOk);
  ASSERT_NE(holding(), nullptr);
  EXPECT_EQ(holding()->alternate, 1);
  // Endpoints no configuration has: the device will refuse them, not the bus.
  const usb::EndpointDescriptor stray{.address = 0x8f, .attributes = 1, .max_packet_size = 8};
  EXPECT_EQ(b.admit_endpoints(std::span(&stray, 1)), Status::kOk);
  EXPECT_EQ(holding()->vms, (std::set<std::string>{"vmA"}));
}

TEST_F(BandwidthAdmissionTest, TheDeviceGoingAwayEndsItsReservations) {
  Status s = Status::kIoError;
  a.set_interface(0, 1, [&](Status st) { s = st; });
  ASSERT_EQ(s, Status::kOk);
  ASSERT_NE(holding(), nullptr);
  shared.set_backend(nullptr);
  EXPECT_TRUE(book.holdings().empty());
}

}  // namespace
}  // namespace vusbd
