#include "vmm-frontend/adapters/usbredir_vm_adapter.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "usb/net/connector.h"
#include "vmm-frontend/sharing/shared_device.h"

namespace vusbd {

namespace {
constexpr auto kRedial = std::chrono::seconds(2);
constexpr auto kConnectTimeout = std::chrono::seconds(5);
}  // namespace

UsbredirVmAdapter::UsbredirVmAdapter(boost::asio::io_context& io, std::string vm,
                                     std::vector<UsbredirAttachment> attachments,
                                     usb::net::Listener::Options listener)
    : io_(io), listener_(std::move(listener)), vm_(std::move(vm)) {
  for (auto& a : attachments) {
    auto slot = std::make_unique<Slot>();
    slot->attachment = std::move(a);
    slots_.push_back(std::move(slot));
  }
}

UsbredirVmAdapter::~UsbredirVmAdapter() {
  stop();
  for (auto& s : slots_) *s->alive = false;
}

usb::Result<void> UsbredirVmAdapter::start() {
  started_ = true;
  for (auto& s : slots_)
    if (auto r = start_slot(*s); !r) return r;
  return {};
}

usb::Result<void> UsbredirVmAdapter::start_slot(Slot& slot) {
  const auto& a = slot.attachment;
  if (a.connect) {
    spdlog::info("vusbd: vm {}: usbredir for {} to {} (vusbd connects)", vm_, a.device,
                 a.endpoint.to_string());
    dial(slot);
    return {};
  }
  usb::net::Listener::Options options = listener_;
  options.label = "vm " + vm_ + " usbredir " + a.device;
  slot.listener = std::make_unique<usb::net::Listener>(io_, options);
  if (auto r = slot.listener->listen(a.endpoint); !r)
    return usb::Error::make(r.error().code, "usbredir for " + a.device + ": " + r.error().message);
  slot.listener->start([this, &slot, alive = slot.alive](std::unique_ptr<usb::net::Stream> stream) {
    if (*alive) on_connection(slot, std::move(stream));
  });
  spdlog::info("vusbd: vm {}: usbredir for {} on {} (QEMU connects)", vm_, a.device,
               slot.listener->local_endpoint().to_string());
  return {};
}

void UsbredirVmAdapter::stop() {
  started_ = false;
  for (auto& s : slots_) stop_slot(*s);
}

void UsbredirVmAdapter::stop_slot(Slot& slot) {
  if (slot.listener) slot.listener->stop();
  if (slot.redial) slot.redial->cancel();
  unplug(slot);
  if (slot.channel) slot.channel->close();
  slot.channel.reset();
}

usb::Result<void> UsbredirVmAdapter::add(UsbredirAttachment attachment) {
  if (carries(attachment.device))
    return usb::Error::make(usb::Error::Code::kBusy,
                            "vm '" + vm_ + "' has a usbredir channel for " + attachment.device);
  auto slot = std::make_unique<Slot>();
  slot->attachment = std::move(attachment);
  if (started_)
    if (auto r = start_slot(*slot); !r) {
      stop_slot(*slot);
      *slot->alive = false;
      return r;
    }
  slots_.push_back(std::move(slot));
  return {};
}

bool UsbredirVmAdapter::remove(const std::string& device) {
  auto it = std::ranges::find_if(slots_, [&](const auto& s) { return s->attachment.device == device; });
  if (it == slots_.end()) return false;
  stop_slot(**it);
  *(*it)->alive = false;  // its pending callbacks find it gone
  spdlog::info("vusbd: vm {}: usbredir for {} removed", vm_, device);
  slots_.erase(it);
  return true;
}

bool UsbredirVmAdapter::carries(const std::string& device) const {
  for (const auto& s : slots_)
    if (s->attachment.device == device) return true;
  return false;
}

usb::Result<std::string> UsbredirVmAdapter::offer(const std::string& device, DeviceView& view) {
  for (auto& s : slots_) {
    if (s->attachment.device != device) continue;
    s->view = &view;
    plug(*s);
    return "usbredir " + std::string(s->attachment.connect ? "to " : "on ") +
           s->attachment.endpoint.to_string();
  }
  return usb::Error::make(usb::Error::Code::kNotFound, "no usbredir channel for " + device);
}

bool UsbredirVmAdapter::withdraw(DeviceView& view) {
  for (auto& s : slots_) {
    if (s->view != &view) continue;
    unplug(*s);
    s->view = nullptr;
    return true;
  }
  return false;
}

void UsbredirVmAdapter::plug(Slot& slot) {
  if (!slot.view || !slot.channel || !slot.channel->open() || slot.claimed) return;
  if (!slot.view->try_acquire()) {  // exclusive mode, held by another VM
    spdlog::warn("vusbd: vm {}: {} is held by another VM; not given to QEMU's usb-redir", vm_,
                 slot.attachment.device);
    return;
  }
  slot.claimed = true;
  slot.channel->attach(*slot.view);
}

void UsbredirVmAdapter::unplug(Slot& slot) {
  if (!slot.claimed) return;
  if (slot.channel) slot.channel->detach();
  release(slot);
}

void UsbredirVmAdapter::release(Slot& slot) {
  if (!slot.claimed) return;
  slot.view->release();
  slot.claimed = false;
}

void UsbredirVmAdapter::redial_later(Slot& slot) {
  slot.redial = std::make_unique<boost::asio::steady_timer>(io_, kRedial);
  slot.redial->async_wait([this, &slot, alive = slot.alive](boost::system::error_code ec) {
    if (!ec && *alive && started_) dial(slot);
  });
}

void UsbredirVmAdapter::on_connection(Slot& slot, std::unique_ptr<usb::net::Stream> stream) {
  const std::string peer = stream->peer().name;
  if (slot.channel && slot.channel->open()) {
    // QEMU reconnected: its old connection is dead even if no error reached us yet.
    spdlog::info("vusbd: vm {}: usbredir for {}: a new connection from {} replaces the old one",
                 vm_, slot.attachment.device, peer);
    unplug(slot);
    slot.channel->close();
  }
  usb::usbredir::HostChannel::Options options;
  options.label = "vm " + vm_ + " usbredir " + slot.attachment.device;
  auto channel = usb::usbredir::HostChannel::create(std::move(stream), std::move(options));
  std::weak_ptr<usb::usbredir::HostChannel> weak = channel;
  channel->on_closed([this, &slot, weak, alive = slot.alive](const std::string& why) {
    if (!*alive || slot.channel != weak.lock()) return;
    spdlog::info("vusbd: vm {}: usbredir for {} closed: {}", vm_, slot.attachment.device, why);
    // The device's transfers were cancelled with the channel; the view is free again.
    release(slot);
    slot.channel.reset();
    if (slot.attachment.connect && started_) redial_later(slot);
  });
  channel->on_rejected([this, &slot, alive = slot.alive](const std::string& why) {
    if (!*alive) return;
    spdlog::warn("vusbd: vm {}: QEMU refused {}: {}", vm_, slot.attachment.device, why);
    release(slot);
  });
  slot.channel = channel;
  spdlog::info("vusbd: vm {}: usbredir for {}: QEMU connected ({})", vm_, slot.attachment.device,
               peer);
  channel->start();
  plug(slot);
}

void UsbredirVmAdapter::dial(Slot& slot) {
  usb::net::async_connect(
      io_, slot.attachment.endpoint, {}, kConnectTimeout,
      [this, &slot, alive = slot.alive](usb::Result<std::unique_ptr<usb::net::Stream>> r) {
        if (!*alive || !started_) return;
        if (r) return on_connection(slot, std::move(*r));
        spdlog::debug("vusbd: vm {}: usbredir for {}: {} (retrying)", vm_, slot.attachment.device,
                      r.error().message);
        redial_later(slot);
      });
}

void UsbredirVmAdapter::describe(nlohmann::json& vm) const {
  auto list = nlohmann::json::array();
  for (const auto& s : slots_)
    list.push_back({{"device", s->attachment.device},
                    {s->attachment.connect ? "connect" : "listen",
                     s->listener ? s->listener->local_endpoint().to_string()
                                 : s->attachment.endpoint.to_string()},
                    {"connected", s->channel && s->channel->open()},
                    {"announced", s->channel && s->channel->announced()}});
  vm["usbredir"] = std::move(list);
}

nlohmann::json UsbredirVmAdapter::qemu_snippets(GuestController controller) const {
  // The guest's own controller: qemu-xhci takes every speed; usb-ehci only high-speed devices.
  const bool ehci = controller == GuestController::kEhci;
  const std::string bus = ehci ? "vusb-ehci.0" : "vusb-xhci.0";
  auto qemu = nlohmann::json::array(
      {"-device", ehci ? "usb-ehci,id=vusb-ehci" : "qemu-xhci,id=vusb-xhci"});
  std::string xml = ehci ? "<controller type='usb' model='ehci'/>\n"
                         : "<controller type='usb' model='qemu-xhci'/>\n";
  for (const auto& s : slots_) {
    const auto& a = s->attachment;
    const usb::net::Endpoint at = s->listener ? s->listener->local_endpoint() : a.endpoint;
    const std::string id = "vusb-" + a.device;
    // vusbd listens: QEMU connects and reconnects (libvirt mode='connect'); vusbd dials: QEMU
    // listens without waiting (mode='bind').
    const std::string where = at.is_unix() ? "path=" + at.path
                                           : "host=" + at.tcp.host + ",port=" +
                                                 std::to_string(at.tcp.port);
    qemu.push_back("-chardev");
    qemu.push_back("socket,id=" + id + "," + where +
                   (a.connect ? ",server=on,wait=off" : ",reconnect=2"));
    qemu.push_back("-device");
    qemu.push_back("usb-redir,chardev=" + id + ",id=" + id + "-redir,bus=" + bus);
    const std::string mode = a.connect ? "bind" : "connect";
    xml += "<redirdev bus='usb' type='" + std::string(at.is_unix() ? "unix" : "tcp") + "'>\n";
    if (at.is_unix())
      xml += "  <source mode='" + mode + "' path='" + at.path + "'/>\n";
    else
      xml += "  <source mode='" + mode + "' host='" + at.tcp.host + "' service='" +
             std::to_string(at.tcp.port) + "'/>\n";
    if (!at.is_unix()) xml += "  <protocol type='raw'/>\n";
    xml += "</redirdev>\n";
  }
  return {{"qemu", qemu}, {"libvirt", xml}};
}

uint16_t UsbredirVmAdapter::local_port(const std::string& device) const {
  for (const auto& s : slots_)
    if (s->attachment.device == device && s->listener) return s->listener->local_port();
  return 0;
}

}  // namespace vusbd
