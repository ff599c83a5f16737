// SharedFileGuestMemory: guest RAM in a shared file (QEMU's memory-backend-file,share=on) —
// guest-physical ranges land at their file offsets, and nothing outside the regions is reached.
#include "host-controller/common/shared_file_memory.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>

namespace hc {
namespace {

class SharedFileTest : public ::testing::Test {
 protected:
  SharedFileTest() {
    fd = mkstemp(path);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(ftruncate(fd, 64 * 1024), 0);
  }
  ~SharedFileTest() override {
    close(fd);
    unlink(path);
  }
  char path[32] = "/tmp/vusb-ramXXXXXX";
  int fd = -1;
};

TEST_F(SharedFileTest, GuestAddressesLandAtTheirFileOffsets) {
  auto m =
      SharedFileGuestMemory::open(path, {{0x1000, 0x4000, 0}, {0x100000000ull, 0x1000, 0x8000}});
  ASSERT_TRUE(m) << m.error().message;
  const uint8_t a[4] = {1, 2, 3, 4};
  ASSERT_TRUE((*m)->write(0x1010, a));
  ASSERT_TRUE((*m)->write(0x100000ff0ull, a));
  uint8_t back[4] = {};
  ASSERT_EQ(pread(fd, back, 4, 0x10), 4);
  EXPECT_EQ(std::vector<uint8_t>(back, back + 4), std::vector<uint8_t>(a, a + 4));
  ASSERT_EQ(pread(fd, back, 4, 0x8ff0), 4);
  EXPECT_EQ(back[3], 4);
  // The VMM writes the file; the model reads it.
  const uint8_t z[2] = {9, 8};
  ASSERT_EQ(pwrite(fd, z, 2, 0x20), 2);
  uint8_t got[2] = {};
  ASSERT_TRUE((*m)->read(0x1020, got));
  EXPECT_EQ(got[0], 9);
}

TEST_F(SharedFileTest, NothingOutsideTheRegions) {
  auto m = SharedFileGuestMemory::open(path, {{0x1000, 0x4000, 0}});
  ASSERT_TRUE(m);
  uint8_t b[16];
  EXPECT_FALSE((*m)->read(0x0, b)) << "below the region";
  EXPECT_FALSE((*m)->read(0x4ff8, b)) << "crossing its end";
  EXPECT_FALSE((*m)->read(~uint64_t{0} - 4, b)) << "wrapping";
  EXPECT_TRUE((*m)->read(0x4ff0, b));
  EXPECT_FALSE(SharedFileGuestMemory::open(path, {{0, 0x20000, 0}})) << "beyond the file";
  EXPECT_FALSE(SharedFileGuestMemory::open("/nonexistent/ram", {{0, 1, 0}}));
}

TEST(SharedFileLayout, Q35SplitsAroundThePciHole) {
  auto small = SharedFileGuestMemory::q35_layout(1ull << 30);
  ASSERT_EQ(small.size(), 1u);
  EXPECT_EQ(small[0].size, 1ull << 30);
  auto big = SharedFileGuestMemory::q35_layout(4ull << 30);
  ASSERT_EQ(big.size(), 2u);
  EXPECT_EQ(big[0].size, 0x80000000ull);
  EXPECT_EQ(big[1].gpa, 0x100000000ull);
  EXPECT_EQ(big[1].offset, 0x80000000ull);
  EXPECT_EQ(big[1].size, (4ull << 30) - 0x80000000ull);
}

}  // namespace
}  // namespace hc
