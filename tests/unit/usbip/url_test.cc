// usbip:// and usbip+unix:// locations: what vusbd's sources and vusbctl -r accept, what they
// print, and what they refuse (with a reason).
#include "usb/usbip/url.h"

#include <gtest/gtest.h>

namespace usb::usbip {
namespace {

TEST(UsbipUrl, TcpAndUnixLocationsParseAndPrintBack) {
  auto tcp = parse_url("usbip://10.0.0.5:3240/1-1.2");
  ASSERT_TRUE(tcp) << tcp.error().message;
  EXPECT_FALSE(tcp->server.is_unix());
  EXPECT_EQ(tcp->server.tcp.host, "10.0.0.5");
  EXPECT_EQ(tcp->server.tcp.port, 3240);
  EXPECT_EQ(tcp->busid, "1-1.2");
  EXPECT_EQ(url(tcp->server, tcp->busid), "usbip://10.0.0.5:3240/1-1.2");

  auto unix_socket = parse_url("usbip+unix:///run/vusb/stub.sock/1-1");
  ASSERT_TRUE(unix_socket) << unix_socket.error().message;
  EXPECT_TRUE(unix_socket->server.is_unix());
  EXPECT_EQ(unix_socket->server.path, "/run/vusb/stub.sock");
  EXPECT_EQ(unix_socket->busid, "1-1");
  EXPECT_EQ(url(unix_socket->server, "*"), "usbip+unix:///run/vusb/stub.sock/*");
  EXPECT_EQ(parse_url(url(unix_socket->server, "*"))->busid, "*");

  auto v6 = parse_url("usbip://[::1]:3240/*");
  ASSERT_TRUE(v6) << v6.error().message;
  EXPECT_EQ(*parse_url(url(v6->server, v6->busid)), *v6);
}

TEST(UsbipUrl, MalformedLocationsAreRefusedWithAReason) {
  for (const char* bad : {"usbip://", "usbip://host:3240", "usbip://host:3240/",
                          "usbip://host:99999/1-1", "usbip+unix://", "usbip+unix:///1-1",
                          "usbip+unix://relative/x.sock/1-1", "usbip+unix:///run/x.sock/",
                          "usbip://h:1/0123456789012345678901234567890123", "tcp://h:1/1-1"}) {
    auto u = parse_url(bad);
    EXPECT_FALSE(u) << bad;
    if (!u) {
      EXPECT_NE(u.error().message.find(bad), std::string::npos) << u.error().message;
    }
  }
  EXPECT_FALSE(parse_url("usbip+unix:///" + std::string(200, 'p') + "/1-1"))
      << "longer than sockaddr_un allows";
  EXPECT_TRUE(is_url("usbip+unix:///x/1-1"));
  EXPECT_FALSE(is_url("libusb:1-1"));
}

}  // namespace
}  // namespace usb::usbip
