// The C API (vusb_hc.h) over hc::Controller: a poll-driven loop of its own (posted tasks and
// timers run in vusb_hc_poll), VM functions with callback or shared-file RAM, and the devices on
// their ports (vusb_hc_attach_device; which devices exist by name is vusb_hc_emulated.cc's).
#include "host-controller/capi/vusb_hc.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "host-controller/capi/vusb_hc_device.h"
#include "host-controller/common/shared_file_memory.h"
#include "host-controller/controller.h"

namespace {

using SteadyClock = std::chrono::steady_clock;

class CallbackMemory : public hc::GuestMemory {
 public:
  explicit CallbackMemory(const vusb_hc_vm_ops& ops) : ops_(ops) {}
  bool read(uint64_t addr, std::span<uint8_t> out) const override {
    return ops_.read_memory && ops_.read_memory(ops_.opaque, addr, out.data(), out.size()) == 0;
  }
  bool write(uint64_t addr, std::span<const uint8_t> in) override {
    return ops_.write_memory && ops_.write_memory(ops_.opaque, addr, in.data(), in.size()) == 0;
  }

 private:
  const vusb_hc_vm_ops& ops_;
};

class CallbackIrq : public hc::IrqLine {
 public:
  explicit CallbackIrq(const vusb_hc_vm_ops& ops) : ops_(ops) {}
  void set_level(bool asserted) override {
    if (ops_.set_irq_level) ops_.set_irq_level(ops_.opaque, asserted ? 1 : 0);
  }
  void message(uint16_t) override {}  // the PciFunction's table turns it into msi()
  void msi(uint64_t address, uint32_t data) override {
    if (ops_.send_msi) ops_.send_msi(ops_.opaque, address, data);
  }

 private:
  const vusb_hc_vm_ops& ops_;
};

struct VmEntry {
  vusb_hc_vm_ops ops{};
  std::unique_ptr<hc::GuestMemory> memory;
  std::unique_ptr<CallbackIrq> irq;
  std::map<uint32_t, std::unique_ptr<usb::Device>> devices;  // by port
};

}  // namespace

struct vusb_hc {
  std::deque<std::function<void()>> tasks;
  std::multimap<SteadyClock::time_point, std::function<void()>> timers;
  // Declared after the queues it posts to, so it goes first.
  std::unique_ptr<hc::Controller> controller;
  std::map<int, std::unique_ptr<VmEntry>> vms;
};

namespace {

int add(vusb_hc* h, const char* name, const vusb_hc_vm_ops* ops,
        std::unique_ptr<hc::GuestMemory> (*make)(VmEntry&, void*), void* arg) {
  if (!h || !ops) return -EINVAL;
  auto e = std::make_unique<VmEntry>();  // on the heap: the adapters keep references into it
  e->ops = *ops;
  e->memory = make(*e, arg);
  if (!e->memory) return -EINVAL;
  e->irq = std::make_unique<CallbackIrq>(e->ops);
  const auto model =
      ops->model == VUSB_HC_EHCI ? hc::Controller::Model::kEhci : hc::Controller::Model::kXhci;
  const auto id =
      static_cast<int>(h->controller->add_vm(name ? name : "vm", *e->memory, *e->irq, 1, model));
  h->vms[id] = std::move(e);
  return id;
}

VmEntry* find(vusb_hc* h, int vm) {
  if (!h) return nullptr;
  auto it = h->vms.find(vm);
  return it == h->vms.end() ? nullptr : it->second.get();
}

}  // namespace

extern "C" {

vusb_hc* vusb_hc_create(void) {
  auto* h = new vusb_hc;
  h->controller = std::make_unique<hc::Controller>(
      [h](std::function<void()> f) { h->tasks.push_back(std::move(f)); },
      [] { return SteadyClock::now(); }, hc::Controller::Options{},
      [h](std::chrono::nanoseconds d, std::function<void()> f) {
        h->timers.emplace(SteadyClock::now() + d, std::move(f));
      });
  return h;
}

void vusb_hc_destroy(vusb_hc* h) {
  if (!h) return;
  for (auto& [id, vm] : h->vms) h->controller->remove_vm(static_cast<hc::Controller::VmId>(id));
  h->controller.reset();
  delete h;
}

int vusb_hc_add_vm(vusb_hc* h, const char* name, const vusb_hc_vm_ops* ops) {
  return add(
      h, name, ops,
      [](VmEntry& e, void*) -> std::unique_ptr<hc::GuestMemory> {
        if (!e.ops.read_memory || !e.ops.write_memory) return nullptr;
        return std::make_unique<CallbackMemory>(e.ops);
      },
      nullptr);
}

int vusb_hc_add_vm_file(vusb_hc* h, const char* name, const char* ram_path, uint64_t ram_size,
                        const vusb_hc_ram_region* regions, size_t n, const vusb_hc_vm_ops* ops) {
  if (!ram_path) return -EINVAL;
  std::vector<hc::SharedFileGuestMemory::Region> layout;
  for (size_t i = 0; regions && i < n; ++i)
    layout.push_back({regions[i].gpa, regions[i].size, regions[i].file_offset});
  if (layout.empty()) layout = hc::SharedFileGuestMemory::q35_layout(ram_size);
  struct Arg {
    std::string path;
    std::vector<hc::SharedFileGuestMemory::Region> layout;
  } arg{ram_path, std::move(layout)};
  return add(
      h, name, ops,
      [](VmEntry&, void* a) -> std::unique_ptr<hc::GuestMemory> {
        auto* x = static_cast<Arg*>(a);
        auto m = hc::SharedFileGuestMemory::open(x->path, x->layout);
        if (!m) {
          spdlog::error("vusb_hc: {}", m.error().message);
          return nullptr;
        }
        return std::move(*m);
      },
      &arg);
}

int vusb_hc_remove_vm(vusb_hc* h, int vm) {
  VmEntry* e = find(h, vm);
  if (!e) return -ENOENT;
  h->controller->remove_vm(static_cast<hc::Controller::VmId>(vm));
  h->vms.erase(vm);
  return 0;
}

int vusb_hc_set_weight(vusb_hc* h, int vm, uint32_t weight) {
  if (!find(h, vm)) return -ENOENT;
  h->controller->set_weight(static_cast<hc::Controller::VmId>(vm), weight);
  return 0;
}

uint32_t vusb_hc_bar_size(vusb_hc* h, int vm) {
  if (!find(h, vm)) return 0;
  const hc::PciFunction* pci = h->controller->pci(static_cast<hc::Controller::VmId>(vm));
  return pci ? pci->layout().bar_size : 0;
}

uint64_t vusb_hc_mmio_read(vusb_hc* h, int vm, uint32_t offset, unsigned size) {
  if (!find(h, vm)) return ~uint64_t{0};
  return h->controller->mmio_read(static_cast<hc::Controller::VmId>(vm), offset, size);
}

void vusb_hc_mmio_write(vusb_hc* h, int vm, uint32_t offset, uint64_t value, unsigned size) {
  if (find(h, vm))
    h->controller->mmio_write(static_cast<hc::Controller::VmId>(vm), offset, value, size);
}

uint32_t vusb_hc_config_read(vusb_hc* h, int vm, uint32_t offset, unsigned size) {
  if (!find(h, vm)) return 0xffffffff;
  return h->controller->config_read(static_cast<hc::Controller::VmId>(vm), offset, size);
}

void vusb_hc_config_write(vusb_hc* h, int vm, uint32_t offset, uint32_t value, unsigned size) {
  if (find(h, vm))
    h->controller->config_write(static_cast<hc::Controller::VmId>(vm), offset, value, size);
}

}  // extern "C"

int vusb_hc_attach_device(vusb_hc* h, int vm, uint32_t port, std::unique_ptr<usb::Device> device) {
  VmEntry* e = find(h, vm);
  if (!e || !device) return -EINVAL;
  if (e->devices.contains(port)) return -EBUSY;
  if (!h->controller->attach(static_cast<hc::Controller::VmId>(vm), port, *device)) return -EBUSY;
  e->devices[port] = std::move(device);
  return 0;
}

extern "C" {

int vusb_hc_detach(vusb_hc* h, int vm, uint32_t port) {
  VmEntry* e = find(h, vm);
  if (!e || !e->devices.contains(port)) return -ENOENT;
  h->controller->detach(static_cast<hc::Controller::VmId>(vm), port);
  e->devices.erase(port);
  return 0;
}

int vusb_hc_poll(vusb_hc* h) {
  if (!h) return -1;
  // What is due now; work posted meanwhile waits for the next call (the VMM's loop stays live).
  for (size_t n = h->tasks.size(); n > 0 && !h->tasks.empty(); --n) {
    auto f = std::move(h->tasks.front());
    h->tasks.pop_front();
    f();
  }
  const auto now = SteadyClock::now();
  while (!h->timers.empty() && h->timers.begin()->first <= now) {
    auto f = std::move(h->timers.begin()->second);
    h->timers.erase(h->timers.begin());
    f();
  }
  if (!h->tasks.empty()) return 0;
  if (h->timers.empty()) return -1;
  const auto left = h->timers.begin()->first - SteadyClock::now();
  return static_cast<int>(
      std::max<int64_t>(0, std::chrono::ceil<std::chrono::milliseconds>(left).count()));
}

}  // extern "C"
