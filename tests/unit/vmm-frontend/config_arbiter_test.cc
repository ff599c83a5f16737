// ConfigArbiter through SharedDevice's views: SET_CONFIGURATION / SET_INTERFACE of two VMs in
// shared mode (the value in force, refusals, per-VM alternate settings).
#include <gtest/gtest.h>

#include "tests/unit/vmm-frontend/shared_device_fixture.h"

namespace vusbd {
namespace {

using namespace sharing_testing;  // NOLINT(google-build-using-namespace): the shared fixtures
using usb::Status;
using usb::Transfer;

TEST_F(SharedDeviceTest, ConfigurationInForceSucceedsAndAChangeIsRefusedWhileShared) {
  Status s1 = Status::kIoError, s2 = Status::kIoError;
  a.set_configuration(3, [&](Status s) { s1 = s; });
  EXPECT_EQ(s1, Status::kOk);
  b.set_configuration(1, [&](Status s) { s2 = s; });
  EXPECT_EQ(s2, Status::kStall) << "vmA uses configuration 3";
  EXPECT_EQ(b.stats().refused, 1u);
  EXPECT_TRUE(backend.calls.empty()) << "the device was never touched";
  a.release();
  b.set_configuration(1, [&](Status s) { s2 = s; });
  EXPECT_EQ(s2, Status::kOk);
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"set_configuration 1"}));
}

TEST_F(SharedDeviceTest, AnUnconfiguredDeviceTakesTheFirstConfigurationWhileShared) {
  // A device reset (or never configured): both VMs hold it, neither uses a configuration. The
  // first VM's driver configures it; the second's asks for the same and finds it in force.
  Status s1 = Status::kIoError, s2 = Status::kIoError;
  backend.set_configuration(0, [](Status) {});
  backend.calls.clear();
  a.set_configuration(3, [&](Status s) { s1 = s; });
  EXPECT_EQ(s1, Status::kOk);
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"set_configuration 3"}));
  b.set_configuration(3, [&](Status s) { s2 = s; });
  EXPECT_EQ(s2, Status::kOk);
  EXPECT_EQ(backend.calls.size(), 1u) << "in force: not sent again";
  EXPECT_EQ(a.stats().refused + b.stats().refused, 0u);
}

TEST_F(SharedDeviceTest, AlternateSettingsArePerVmWhenEndpointsAllowIt) {
  Status s = Status::kIoError;
  // vmB asks for alt 1 (alt 0 + iso): vmA's endpoints survive, so the device switches.
  b.set_interface(0, 1, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kOk);
  EXPECT_EQ(backend.calls, (std::vector<std::string>{"set_interface 0 1"}));
  EXPECT_EQ(b.alternate_setting(0), 1);
  EXPECT_EQ(a.alternate_setting(0), 0) << "vmA still sees the setting it chose";
  // vmA asks for alt 1 too: already in force.
  a.set_interface(0, 1, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kOk);
  EXPECT_EQ(backend.calls.size(), 1u);
  // vmB goes back to alt 0: vmA needs the iso endpoint, so vmB gets alt 0 on its own.
  b.set_interface(0, 0, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kOk);
  EXPECT_EQ(backend.calls.size(), 1u) << "the device stays at alt 1";
  EXPECT_EQ(b.alternate_setting(0), 0);
  Outcome o;
  auto gi = control({0x81, usb::request::kGetInterface, 0, 0, 1}, o);
  b.submit(*gi);
  EXPECT_EQ(gi->data()[0], 0) << "GET_INTERFACE answers vmB's own setting";
  // alt 2 redefines 0x81: neither switchable nor available virtually while vmA streams.
  a.set_interface(0, 2, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kStall);
  EXPECT_EQ(a.stats().refused, 1u);
  // A setting that does not exist stalls like on a device.
  a.set_interface(0, 7, [&](Status st) { s = st; });
  EXPECT_EQ(s, Status::kStall);
}

}  // namespace
}  // namespace vusbd
