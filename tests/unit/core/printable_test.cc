// usb::printable: peer-supplied strings made safe for a log line.
#include "usb/core/printable.h"

#include <gtest/gtest.h>

namespace usb {
namespace {

TEST(Printable, ControlBytesAreShownNotObeyed) {
  EXPECT_EQ(printable("1-1.2"), "1-1.2");
  // A forged log line and a terminal escape (clear screen) come out as text.
  EXPECT_EQ(printable("gz\n2026-12-07 info vusbd: all is well"),
            "gz\\x0a2026-12-07 info vusbd: all is well");
  EXPECT_EQ(printable("\x1b[2J"), "\\x1b[2J");
  EXPECT_EQ(printable(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(printable("\x7f"), "\\x7f");
  EXPECT_EQ(printable("back\\slash"), "back\\\\slash") << "so an escape cannot be faked";
  EXPECT_EQ(printable("héllo"), "héllo") << "UTF-8 text stays readable";
}

TEST(Printable, LongStringsAreCut) {
  EXPECT_EQ(printable(std::string(300, 'x')).size(), 256u + 3u);
  EXPECT_EQ(printable("abcdef", 3), "abc...");
  EXPECT_EQ(printable("abc", 3), "abc");
}

}  // namespace
}  // namespace usb
