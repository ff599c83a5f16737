#include "tests/unit/host-controller/ehci_ref_driver.h"

#include <gtest/gtest.h>

#include <cstring>

namespace hc::ehci::testing {

using namespace reg;

namespace {
constexpr uint32_t kTerminate = 1;
constexpr uint32_t kQhLink = 1u << 1;  // Typ = QH
}  // namespace

EhciRefDriver::EhciRefDriver(Target& target, Options options)
    : target_(target), options_(options), next_free_(options.ram_base) {}

uint64_t EhciRefDriver::alloc(uint64_t bytes, uint64_t align) {
  next_free_ = (next_free_ + align - 1) & ~(align - 1);
  const uint64_t at = next_free_;
  next_free_ += bytes;
  if (next_free_ > options_.ram_base + options_.ram_size)
    ADD_FAILURE() << "EHCI reference driver out of guest memory";
  std::vector<uint8_t> zero(bytes, 0);
  EXPECT_TRUE(mem().write(at, zero));
  return at;
}

uint32_t EhciRefDriver::op(uint32_t r) {
  return target_.read32(op_base_ + r);
}
uint32_t EhciRefDriver::portsc(uint32_t port) {
  return op(kPortSc + 4 * (port - 1));
}

bool EhciRefDriver::wait_for(const std::function<bool()>& done, const char* what) {
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      ADD_FAILURE() << "EHCI reference driver: timed out waiting for " << what;
      return false;
    }
    target_.idle();
  }
  return true;
}

bool EhciRefDriver::start() {
  op_base_ = target_.read32(kCapLength) & 0xff;
  target_.write32(op_base_ + kUsbCmd, kCmdReset);
  if (!wait_for([&] { return !(op(kUsbCmd) & kCmdReset); }, "HCRESET")) return false;
  // The async list's head: a QH with H set, linked to itself, its overlay halted (never run).
  head_ = static_cast<uint32_t>(alloc(sizeof(Qh)));
  Qh head;
  head.horizontal.raw = head_ | kQhLink;
  head.characteristics = (1u << 15) | (2u << 12);
  head.overlay.next.raw = kTerminate;
  head.overlay.alt_next.raw = kTerminate;
  head.overlay.token.raw = QtdToken::kHalted;
  EXPECT_TRUE(mem().write_obj(head_, head));
  target_.write32(op_base_ + kAsyncListAddr, head_);
  target_.write32(op_base_ + kUsbIntr, kStsInt | kStsErrInt | kStsPcd | kStsHse | kStsIaa);
  target_.write32(op_base_ + kUsbCmd, kCmdRun | kCmdAse | (8u << kCmdItcShift));
  target_.write32(op_base_ + kConfigFlag, 1);
  return wait_for([&] { return !(op(kUsbSts) & kStsHalted); }, "the controller to run");
}

bool EhciRefDriver::reset_port(uint32_t port) {
  const uint32_t r = op_base_ + kPortSc + 4 * (port - 1);
  if (!wait_for([&] { return (target_.read32(r) & kPortCcs) != 0; }, "a connection")) return false;
  target_.write32(r, kPortPower | kPortCsc | kPortReset);
  target_.idle();
  target_.write32(r, kPortPower);  // end the reset (ehci-hcd does after 50 ms)
  if (!wait_for([&] { return !(target_.read32(r) & kPortReset); }, "the port reset")) return false;
  return target_.read32(r) & kPortPed;
}

uint32_t EhciRefDriver::qh(uint8_t address, uint8_t endpoint, uint16_t max_packet, bool control) {
  const uint16_t key = static_cast<uint16_t>(address << 8 | endpoint);
  auto it = queues_.find(key);
  if (it != queues_.end()) return it->second.qh;
  Queue q;
  q.qh = static_cast<uint32_t>(alloc(sizeof(Qh)));
  q.dummy = static_cast<uint32_t>(alloc(sizeof(Qtd)));
  q.max_packet = max_packet;
  q.control = control;
  Qtd dummy;
  dummy.next.raw = kTerminate;
  dummy.alt_next.raw = kTerminate;
  EXPECT_TRUE(mem().write_obj(q.dummy, dummy));
  Qh head;
  EXPECT_TRUE(mem().read_obj(head_, head));
  Qh h;
  h.horizontal = head.horizontal;
  h.characteristics = address | (uint32_t{endpoint} << 8) | (2u << 12) | (control ? 1u << 14 : 0u) |
                      (uint32_t{max_packet} << 16);
  h.capabilities = 1u << 30;
  h.overlay.next.raw = q.dummy;
  h.overlay.alt_next.raw = kTerminate;
  EXPECT_TRUE(mem().write_obj(q.qh, h));
  // Link after the head: the new QH is complete before the controller can reach it.
  EXPECT_TRUE(mem().write_obj(head_, q.qh | kQhLink));
  queues_[key] = q;
  return q.qh;
}

std::vector<uint32_t> EhciRefDriver::queue(Queue& q, const std::vector<Stage>& stages) {
  std::vector<uint32_t> at;
  for (size_t i = 0; i < stages.size(); ++i)
    at.push_back(i == 0 ? q.dummy : static_cast<uint32_t>(alloc(sizeof(Qtd))));
  const uint32_t new_dummy = static_cast<uint32_t>(alloc(sizeof(Qtd)));
  Qtd d;
  d.next.raw = kTerminate;
  d.alt_next.raw = kTerminate;
  EXPECT_TRUE(mem().write_obj(new_dummy, d));
  std::vector<Qtd> qtds(stages.size());
  for (size_t i = 0; i < stages.size(); ++i) {
    const Stage& s = stages[i];
    Qtd& x = qtds[i];
    x.next.raw = i + 1 < stages.size() ? at[i + 1] : new_dummy;
    // A short control IN data stage goes on to the status stage.
    x.alt_next.raw =
        (q.control && s.pid == Pid::kIn && i + 1 < stages.size()) ? at.back() : kTerminate;
    x.token.raw = QtdToken::kActive | (static_cast<uint32_t>(s.pid) << 8) | (3u << 10) |
                  (s.ioc ? 1u << 15 : 0u) | ((s.length & 0x7fff) << 16) |
                  (s.toggle ? 1u << 31 : 0u);
    for (uint32_t p = 0; p < 5; ++p)
      x.buffer[p] = p == 0 ? s.buffer : ((s.buffer & ~0xfffu) + 4096 * p);
  }
  // Everything but the first qTD's token, then that token: the controller sees all or nothing.
  for (size_t i = 1; i < stages.size(); ++i) EXPECT_TRUE(mem().write_obj(at[i], qtds[i]));
  Qtd first = qtds[0];
  const uint32_t token = first.token.raw;
  first.token.raw = 0;
  EXPECT_TRUE(mem().write_obj(at[0], first));
  EXPECT_TRUE(mem().write_obj(at[0] + 8, token));
  q.dummy = new_dummy;
  return at;
}

EhciRefDriver::Result EhciRefDriver::collect(const std::vector<uint32_t>& qtds,
                                             const std::vector<Stage>& stages, bool in_data) {
  Result r;
  auto token = [&](uint32_t a) {
    QtdToken t;
    EXPECT_TRUE(mem().read_obj(a + 8, t));
    return t;
  };
  r.done = wait_for(
      [&] {
        bool all = true;
        for (uint32_t a : qtds) {
          const QtdToken t = token(a);
          if (t.halted()) return true;
          all = all && !t.active();
        }
        return all;
      },
      "qTDs to retire");
  for (size_t i = 0; i < qtds.size(); ++i) {
    const QtdToken t = token(qtds[i]);
    r.halted = r.halted || t.halted();
    if (!t.active()) r.status = t.raw & 0xff;
    const Stage& s = stages[i];
    if (s.pid == Pid::kSetup || t.active()) continue;
    const uint32_t moved = s.length - std::min(s.length, t.total_bytes());
    if (in_data && s.pid == Pid::kIn && moved) {
      std::vector<uint8_t> chunk(moved);
      EXPECT_TRUE(mem().read(s.buffer, chunk));
      r.data.insert(r.data.end(), chunk.begin(), chunk.end());
    }
    r.actual += moved;
  }
  return r;
}

std::vector<EhciRefDriver::Stage> EhciRefDriver::control_stages(const usb::SetupPacket& setup,
                                                                const std::vector<uint8_t>& out) {
  const bool in = setup.direction() == usb::Direction::kIn;
  const uint32_t setup_buf = static_cast<uint32_t>(alloc(8));
  const auto bytes = setup.to_bytes();
  EXPECT_TRUE(mem().write(setup_buf, bytes));
  std::vector<Stage> stages{{Pid::kSetup, 8, false, false, setup_buf}};
  if (setup.length) {
    const uint32_t data = static_cast<uint32_t>(alloc(setup.length, 4096));
    if (!in && !out.empty()) {
      EXPECT_TRUE(mem().write(data, out));
    }
    stages.push_back({in ? Pid::kIn : Pid::kOut, setup.length, true, false, data});
  }
  stages.push_back({(in && setup.length) ? Pid::kOut : Pid::kIn, 0, true, true, 0});
  return stages;
}

EhciRefDriver::Result EhciRefDriver::control(uint8_t address, const usb::SetupPacket& setup,
                                             std::vector<uint8_t> out) {
  qh(address, 0, 64, true);
  Queue& q = queues_[static_cast<uint16_t>(address << 8)];
  const auto stages = control_stages(setup, out);
  auto qtds = queue(q, stages);
  return collect(qtds, stages, setup.direction() == usb::Direction::kIn);
}

std::vector<EhciRefDriver::Result> EhciRefDriver::control_queue(
    uint8_t address, const std::vector<usb::SetupPacket>& setups) {
  qh(address, 0, 64, true);
  Queue& q = queues_[static_cast<uint16_t>(address << 8)];
  std::vector<std::pair<std::vector<uint32_t>, std::vector<Stage>>> queued;
  for (const auto& s : setups) {
    auto stages = control_stages(s, {});
    auto qtds = queue(q, stages);
    queued.emplace_back(std::move(qtds), std::move(stages));
  }
  std::vector<Result> results;
  for (size_t i = 0; i < queued.size(); ++i) {
    results.push_back(
        collect(queued[i].first, queued[i].second, setups[i].direction() == usb::Direction::kIn));
    if (!results.back().halted) continue;
    Qh h;
    EXPECT_TRUE(mem().read_obj(q.qh, h));
    h.overlay.token.raw = 0;
    h.overlay.next.raw = i + 1 < queued.size() ? queued[i + 1].first.front() : q.dummy;
    h.overlay.alt_next.raw = kTerminate;
    EXPECT_TRUE(mem().write_obj(q.qh + offsetof(Qh, overlay), h.overlay));
  }
  return results;
}

std::vector<EhciRefDriver::Result> EhciRefDriver::bulk_many(uint8_t address, uint8_t endpoint,
                                                            uint32_t length, int count,
                                                            std::vector<uint8_t> out) {
  qh(address, endpoint & 0x0f, 512, false);
  Queue& q = queues_[static_cast<uint16_t>(address << 8 | (endpoint & 0x0f))];
  const bool in = endpoint & 0x80;
  std::vector<std::vector<uint32_t>> all;
  std::vector<std::vector<Stage>> stage_sets;
  for (int i = 0; i < count; ++i) {
    const uint32_t buf = static_cast<uint32_t>(alloc(std::max<uint32_t>(length, 1), 4096));
    if (!in && !out.empty()) {
      EXPECT_TRUE(mem().write(buf, out));
    }
    std::vector<Stage> st{{in ? Pid::kIn : Pid::kOut, length, false, true, buf}};
    all.push_back(queue(q, st));
    stage_sets.push_back(st);
  }
  std::vector<Result> results;
  for (size_t i = 0; i < all.size(); ++i) results.push_back(collect(all[i], stage_sets[i], in));
  return results;
}

EhciRefDriver::Result EhciRefDriver::bulk(uint8_t address, uint8_t endpoint, uint32_t length,
                                          std::vector<uint8_t> out) {
  return bulk_many(address, endpoint, length, 1, std::move(out)).front();
}

bool EhciRefDriver::start_periodic() {
  frame_list_ = static_cast<uint32_t>(alloc(4096, 4096));
  std::vector<uint32_t> entries(1024, kTerminate);
  EXPECT_TRUE(mem().write(frame_list_, {reinterpret_cast<const uint8_t*>(entries.data()), 4096}));
  target_.write32(op_base_ + kPeriodicListBase, frame_list_);
  target_.write32(op_base_ + kUsbCmd, op(kUsbCmd) | kCmdPse);
  return wait_for([&] { return (op(kUsbSts) & kStsPss) != 0; }, "the periodic schedule");
}

uint32_t EhciRefDriver::itd(uint8_t address, uint8_t endpoint, uint16_t max_packet, uint32_t frame,
                            uint8_t uframes, uint32_t length, const std::vector<uint8_t>& out) {
  const uint32_t at = static_cast<uint32_t>(alloc(sizeof(Itd), 32));
  const uint32_t buf = static_cast<uint32_t>(alloc(7 * 4096, 4096));
  Itd x;
  uint32_t offset = 0;
  int last = -1;
  for (int i = 0; i < 8; ++i)
    if (uframes & (1u << i)) last = i;
  for (int i = 0; i < 8; ++i) {
    if (!(uframes & (1u << i))) continue;
    if (!(endpoint & 0x80) && !out.empty()) {
      EXPECT_TRUE(mem().write(buf + offset, {out.data(), std::min<size_t>(out.size(), length)}));
    }
    x.transaction[i] = Itd::kActive | ((length & 0xfff) << 16) | (i == last ? 1u << 15 : 0u) |
                       ((offset / 4096) << 12) | (offset % 4096);
    offset += length;
  }
  for (uint32_t p = 0; p < 7; ++p) x.buffer[p] = buf + 4096 * p;
  x.buffer[0] |= address | (uint32_t{endpoint & 0x0fu} << 8);
  x.buffer[1] |= max_packet | ((endpoint & 0x80) ? 1u << 11 : 0u);
  x.buffer[2] |= 1;  // mult
  const uint32_t slot = frame_list_ + 4 * (frame & 0x3ff);
  uint32_t old = 0;
  EXPECT_TRUE(mem().read_obj(slot, old));
  x.next.raw = old;
  EXPECT_TRUE(mem().write_obj(at, x));
  EXPECT_TRUE(mem().write_obj(slot, at));  // Typ 0: iTD
  return at;
}

EhciRefDriver::Result EhciRefDriver::wait_itd(uint32_t at) {
  Result r;
  Itd x;
  r.done = wait_for(
      [&] {
        EXPECT_TRUE(mem().read_obj(at, x));
        for (uint32_t t : x.transaction)
          if (t & Itd::kActive) return false;
        return true;
      },
      "an iTD to retire");
  for (uint32_t t : x.transaction) {
    if (!t) continue;
    r.status |= t >> 28;
    const uint32_t len = Itd::length(t);
    r.actual += len;
    if ((x.buffer[1] & (1u << 11)) && len) {
      std::vector<uint8_t> chunk(len);
      EXPECT_TRUE(mem().read((x.buffer[Itd::page(t)] & ~0xfffu) + Itd::offset(t), chunk));
      r.data.insert(r.data.end(), chunk.begin(), chunk.end());
    }
  }
  return r;
}

void EhciRefDriver::clear_halt(uint8_t address, uint8_t endpoint) {
  auto it = queues_.find(static_cast<uint16_t>(address << 8 | (endpoint & 0x0f)));
  if (it == queues_.end()) return;
  // What was queued behind the stall is dead; the queue restarts at the dummy.
  Qh h;
  EXPECT_TRUE(mem().read_obj(it->second.qh, h));
  h.overlay.token.raw = 0;
  h.overlay.next.raw = it->second.dummy;
  h.overlay.alt_next.raw = kTerminate;
  EXPECT_TRUE(mem().write_obj(it->second.qh + offsetof(Qh, overlay), h.overlay));
}

bool EhciRefDriver::unlink(uint8_t address, uint8_t endpoint) {
  auto it = queues_.find(static_cast<uint16_t>(address << 8 | (endpoint & 0x0f)));
  if (it == queues_.end()) return false;
  const uint32_t victim = it->second.qh;
  uint32_t at = head_;
  for (int n = 0; n < 64; ++n) {
    Qh x;
    EXPECT_TRUE(mem().read_obj(at, x));
    if (x.horizontal.address() == victim) {
      Qh v;
      EXPECT_TRUE(mem().read_obj(victim, v));
      EXPECT_TRUE(mem().write_obj(at, v.horizontal));
      break;
    }
    at = x.horizontal.address();
  }
  target_.write32(op_base_ + kUsbCmd, op(kUsbCmd) | kCmdIaad);
  const bool ok = wait_for([&] { return (op(kUsbSts) & kStsIaa) != 0; }, "async advance");
  target_.write32(op_base_ + kUsbSts, kStsIaa);
  queues_.erase(it);
  return ok;
}

std::optional<uint16_t> EhciRefDriver::enumerate(uint32_t port, uint8_t address) {
  if (!reset_port(port)) return std::nullopt;
  auto head = control(0, {0x80, 6, 0x0100, 0, 8});
  if (!head.done || head.halted || head.data.size() < 8) return std::nullopt;
  auto set = control(0, {0x00, 5, address, 0, 0});
  if (!set.done || set.halted) return std::nullopt;
  auto dev = control(address, {0x80, 6, 0x0100, 0, 18});
  if (!dev.done || dev.halted || dev.data.size() < 18) return std::nullopt;
  return static_cast<uint16_t>(dev.data[8] | (dev.data[9] << 8));
}

}  // namespace hc::ehci::testing
