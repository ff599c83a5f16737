// UsbredirVmAdapter: a VM reaches some of its devices through QEMU's own `-device usb-redir` —
// nothing installed in the guest, any guest OS. Each configured device has its own usbredir
// channel (a channel carries one device): vusbd listens for QEMU (`-chardev socket,...,
// reconnect=2`, libvirt <redirdev> mode='connect') or connects to a QEMU that listens
// (`server=on,wait=off`, libvirt mode='bind', redialled every 2 s), over TCP or a UNIX socket.
// The device's view is claimed while QEMU is connected to it, as a USB/IP import would; a
// reconnecting QEMU replaces its dead connection.
//
// Owned by Vusbd (per VM, in the VM's adapter list; it carries only its configured devices);
// lives on vusbd's loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>
#include <vector>

#include "usb/net/endpoint.h"
#include "usb/net/listener.h"
#include "usb/usbredir/host_channel.h"
#include "vmm-frontend/adapters/usbredir_attachment.h"
#include "vmm-frontend/adapters/vm_adapter.h"

namespace vusbd {

class UsbredirVmAdapter final : public VmAdapter {
 public:
  // `listener`: who may connect to the ports vusbd listens on (the VM's allow-list).
  UsbredirVmAdapter(boost::asio::io_context& io, std::string vm,
                    std::vector<UsbredirAttachment> attachments,
                    usb::net::Listener::Options listener = {});
  ~UsbredirVmAdapter() override;

  std::string_view kind() const override { return "usbredir"; }
  usb::Result<void> start() override;
  void stop() override;
  bool carries(const std::string& device) const override;
  usb::Result<std::string> offer(const std::string& device, DeviceView& view) override;
  bool withdraw(DeviceView& view) override;
  // The reservation device has no usbredir channel: it stays on the VM's USB/IP server.
  void place_reservations(usb::Device&) override {}
  void unplace_reservations(usb::Device&) override {}
  void describe(nlohmann::json& vm) const override;

  // A channel for one more device / one fewer (vusbctl usbredir add|remove). The owner moves
  // the device between adapters (Vusbd::rearrange) around the call.
  usb::Result<void> add(UsbredirAttachment attachment);
  bool remove(const std::string& device);
  bool empty() const { return slots_.empty(); }

  // What to give QEMU and libvirt for these devices: {"qemu": [argv...], "libvirt": "XML"} — the
  // guest's controller (qemu-xhci, or usb-ehci for high-speed devices), and per device a socket
  // chardev (reconnecting to vusbd, or listening when vusbd dials) and a usb-redir on it;
  // libvirt's <controller> and <redirdev> in the same two modes.
  enum class GuestController { kXhci, kEhci };
  nlohmann::json qemu_snippets(GuestController controller = GuestController::kXhci) const;
  // The TCP port vusbd listens on for `device` (0: none; tests bind port 0).
  uint16_t local_port(const std::string& device) const;

 private:
  struct Slot {
    UsbredirAttachment attachment;
    std::unique_ptr<usb::net::Listener> listener;
    std::shared_ptr<usb::usbredir::HostChannel> channel;
    std::unique_ptr<boost::asio::steady_timer> redial;
    DeviceView* view = nullptr;  // offered, not necessarily plugged
    bool claimed = false;
    std::shared_ptr<bool> alive = std::make_shared<bool>(true);  // false once removed
  };

  usb::Result<void> start_slot(Slot& slot);
  void stop_slot(Slot& slot);
  void on_connection(Slot& slot, std::unique_ptr<usb::net::Stream> stream);
  void dial(Slot& slot);
  void plug(Slot& slot);
  void unplug(Slot& slot);
  // The view's claim goes (the channel is gone or QEMU refused the device).
  void release(Slot& slot);
  void redial_later(Slot& slot);

  boost::asio::io_context& io_;
  usb::net::Listener::Options listener_;
  std::string vm_;
  std::vector<std::unique_ptr<Slot>> slots_;
  bool started_ = false;
};

}  // namespace vusbd
