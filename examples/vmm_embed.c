/* vmm_embed: how a VMM embeds vusb's host controller through its C API (vusb_hc.h).
 *
 * The "VMM" here owns 16 MiB of guest RAM in a shared file (as QEMU's memory-backend-file,
 * share=on would), creates the controller, adds one VM function over that file, probes the
 * function's PCI configuration space as firmware does (IDs, BAR sizing and placement, the MSI-X
 * capability), programs an MSI-X vector, plugs an emulated Gadget Zero into port 1 — and then
 * plays the guest: it resets the controller, sets up the DCBAA, event ring and command ring,
 * resets the port, enables a slot, addresses the device and reads its device descriptor through
 * EP0's transfer ring, polling the controller from its "event loop" meanwhile.
 *
 * Build: part of the vusb build (build/bin/vmm_embed); run under `make test` as
 * integration.capi_example. Exit status 0 when the descriptor arrived and MSI-X messages fired. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vusb_hc.h"

#define RAM_SIZE (16u << 20)

static uint8_t* ram;       /* the guest's RAM, as the VMM maps it */
static unsigned msi_count; /* MSI-X messages the controller sent */

static void on_level(void* opaque, int asserted) {
  (void)opaque;
  (void)asserted;
}
static void on_msi(void* opaque, uint64_t address, uint32_t data) {
  (void)opaque;
  if (address == 0xfee00000u && data == 0x41) ++msi_count;
}

/* --- the guest side: little-endian structures in RAM --- */
static void put32(uint64_t gpa, uint32_t v) {
  memcpy(ram + gpa, &v, 4);
}
static void put64(uint64_t gpa, uint64_t v) {
  memcpy(ram + gpa, &v, 8);
}
static uint32_t get32(uint64_t gpa) {
  uint32_t v;
  memcpy(&v, ram + gpa, 4);
  return v;
}
static void trb(uint64_t gpa, uint64_t param, uint32_t status, uint32_t control) {
  put64(gpa, param);
  put32(gpa + 8, status);
  put32(gpa + 12, control); /* the cycle bit (bit 0) last, as a driver must */
}

static vusb_hc* hc;
static int vm;
static uint32_t op, rt, db;
static uint32_t ev_index;

static uint32_t rd(uint32_t off) {
  return (uint32_t)vusb_hc_mmio_read(hc, vm, off, 4);
}
static void wr(uint32_t off, uint32_t v) {
  vusb_hc_mmio_write(hc, vm, off, v, 4);
}

enum {
  DCBAA = 0x10000,
  ERST = 0x11000,
  EVENTS = 0x12000,
  CMDS = 0x13000,
  INPUT = 0x14000,
  OUTPUT = 0x15000,
  EP0 = 0x16000,
  DATA = 0x17000,
  EVENT_TRBS = 64
};

/* Waits (polling the controller, as the VMM's loop would) for the next event; its address. */
static uint64_t next_event(void) {
  for (int i = 0; i < 100000; ++i) {
    uint64_t at = EVENTS + 16u * ev_index;
    if (get32(at + 12) & 1) { /* cycle bit 1: the first lap */
      ++ev_index;
      wr(rt + 0x20 + 0x18, (uint32_t)(EVENTS + 16u * ev_index) | 8); /* ERDP, EHB */
      wr(rt + 0x20 + 0x1c, 0);
      return at;
    }
    vusb_hc_poll(hc);
  }
  fprintf(stderr, "vmm_embed: no event\n");
  exit(1);
}
static uint32_t completion(uint64_t ev) {
  return get32(ev + 8) >> 24;
}

int main(void) {
  /* The VMM's RAM file, mapped shared by the VMM and by the controller. */
  char path[] = "/tmp/vmm-embed-ramXXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || ftruncate(fd, RAM_SIZE) != 0) return perror("ram file"), 1;
  ram = mmap(NULL, RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ram == MAP_FAILED) return perror("mmap"), 1;

  hc = vusb_hc_create();
  vusb_hc_vm_ops ops = {
      .opaque = NULL, .model = VUSB_HC_XHCI, .set_irq_level = on_level, .send_msi = on_msi};
  vusb_hc_ram_region region = {.gpa = 0, .size = RAM_SIZE, .file_offset = 0};
  vm = vusb_hc_add_vm_file(hc, "vm1", path, RAM_SIZE, &region, 1, &ops);
  /* A second VM gets an EHCI function instead: same calls, another PCI class and BAR. (It
   * shares the file here; a VMM gives each VM its own RAM.) */
  vusb_hc_vm_ops ehci_ops = ops;
  ehci_ops.model = VUSB_HC_EHCI;
  int vm2 = vusb_hc_add_vm_file(hc, "vm2", path, RAM_SIZE, &region, 1, &ehci_ops);
  unlink(path); /* both mapped it: the file lives as long as the mappings */
  if (vm <= 0) return fprintf(stderr, "vmm_embed: add_vm_file: %d\n", vm), 1;

  /* Firmware's view: IDs, class, BAR size, MSI-X. */
  uint32_t id = vusb_hc_config_read(hc, vm, 0, 4);
  uint32_t class_code = vusb_hc_config_read(hc, vm, 8, 4) >> 8;
  vusb_hc_config_write(hc, vm, 0x10, 0xffffffffu, 4);
  uint32_t bar_size = ~(vusb_hc_config_read(hc, vm, 0x10, 4) & ~0xfu) + 1;
  vusb_hc_config_write(hc, vm, 0x10, 0xfe000000u, 4);
  vusb_hc_config_write(hc, vm, 0x14, 0, 4);
  vusb_hc_config_write(hc, vm, 0x04, 0x6, 2); /* memory space, bus master */
  uint32_t cap = vusb_hc_config_read(hc, vm, 0x34, 1), table = 0;
  while (cap) {
    uint32_t head = vusb_hc_config_read(hc, vm, cap, 4);
    if ((head & 0xff) == 0x11) {
      table = vusb_hc_config_read(hc, vm, cap + 4, 4) & ~7u;
      vusb_hc_config_write(hc, vm, cap + 2, 0x8000, 2); /* MSI-X enable */
      break;
    }
    cap = (head >> 8) & 0xff;
  }
  printf("PCI %04x:%04x class %06x, BAR %u KiB, MSI-X table at %#x\n", id & 0xffff, id >> 16,
         class_code, bar_size / 1024, table);
  if (class_code != 0x0c0330 || bar_size != vusb_hc_bar_size(hc, vm) || !table) return 1;
  wr(table + 0, 0xfee00000u); /* vector 0: address, data, unmasked */
  wr(table + 4, 0);
  wr(table + 8, 0x41);
  wr(table + 12, 0);

  if (vusb_hc_attach_emulated(hc, vm, 1, "gadget-zero?speed=high") != 0) return 1;

  /* The guest driver. */
  op = rd(0) & 0xff;
  rt = rd(0x18) & ~0x1fu;
  db = rd(0x14) & ~3u;
  wr(op + 0x00, 2); /* HCRST */
  while (rd(op + 0x04) & (1u << 11)) vusb_hc_poll(hc);
  wr(op + 0x38, 1);         /* CONFIG: one slot */
  put64(DCBAA + 8, OUTPUT); /* slot 1's output context */
  put64(ERST, EVENTS);      /* one segment */
  put32(ERST + 8, EVENT_TRBS);
  wr(rt + 0x20 + 0x08, 1);      /* ERSTSZ */
  wr(rt + 0x20 + 0x18, EVENTS); /* ERDP */
  wr(rt + 0x20 + 0x1c, 0);
  wr(rt + 0x20 + 0x10, ERST); /* ERSTBA */
  wr(rt + 0x20 + 0x14, 0);
  wr(op + 0x30, DCBAA); /* DCBAAP */
  wr(op + 0x34, 0);
  wr(op + 0x18, CMDS | 1); /* CRCR, RCS */
  wr(op + 0x1c, 0);
  wr(rt + 0x20 + 0x00, 2); /* IMAN.IE */
  wr(rt + 0x20 + 0x04, 0); /* IMOD: no moderation */
  wr(op + 0x00, 1 | 4);    /* RS, INTE */

  /* Port 1: the connection, then a reset (a Port Status Change event each). */
  next_event();
  wr(op + 0x400, (1u << 9) | (1u << 17));
  wr(op + 0x400, (1u << 9) | (1u << 4));
  next_event();
  uint32_t speed = (rd(op + 0x400) >> 10) & 0xf;

  /* Enable Slot, Address Device. */
  trb(CMDS, 0, 0, (9u << 10) | 1);
  wr(db, 0);
  uint64_t ev = next_event();
  uint32_t slot = get32(ev + 12) >> 24;
  if (completion(ev) != 1 || slot != 1) return fprintf(stderr, "Enable Slot failed\n"), 1;
  memset(ram + INPUT, 0, 1056);
  put32(INPUT + 4, 3);                                        /* add slot + EP0 */
  put32(INPUT + 32, (1u << 27) | (speed << 20));              /* slot: 1 entry, speed */
  put32(INPUT + 36, 1u << 16);                                /* root hub port 1 */
  put32(INPUT + 64 + 4, (64u << 16) | (4u << 3) | (3u << 1)); /* EP0: MPS 64, control */
  put64(INPUT + 64 + 8, EP0 | 1);                             /* dequeue, DCS */
  trb(CMDS + 16, INPUT, 0, (1u << 24) | (11u << 10) | 1);
  wr(db, 0);
  if (completion(next_event()) != 1) return fprintf(stderr, "Address Device failed\n"), 1;

  /* GET_DESCRIPTOR(device): Setup (IDT, TRT IN), Data (IN, ISP), Status (OUT, IOC). */
  uint64_t setup = 0x0012000001000680ull;
  trb(EP0, setup, 8, (3u << 16) | (2u << 10) | (1u << 6) | 1);
  trb(EP0 + 16, DATA, 18, (1u << 16) | (3u << 10) | (1u << 2) | 1);
  trb(EP0 + 32, 0, 0, (4u << 10) | (1u << 5) | 1);
  wr(db + 4, 1); /* slot 1, EP0 */
  ev = next_event();
  if (completion(ev) != 1) return fprintf(stderr, "GET_DESCRIPTOR: code %u\n", completion(ev)), 1;
  uint16_t vid = (uint16_t)(ram[DATA + 8] | (ram[DATA + 9] << 8));
  uint16_t pid = (uint16_t)(ram[DATA + 10] | (ram[DATA + 11] << 8));
  printf("enumerated %04x:%04x on port 1 (speed id %u) through the C API; %u MSI-X messages\n", vid,
         pid, speed, msi_count);

  uint32_t ehci_class = vm2 > 0 ? vusb_hc_config_read(hc, vm2, 8, 4) >> 8 : 0;
  printf("vm2: EHCI function, class %06x, BAR %u KiB, HCIVERSION %#x\n", ehci_class,
         vm2 > 0 ? vusb_hc_bar_size(hc, vm2) / 1024 : 0,
         vm2 > 0 ? (unsigned)(vusb_hc_mmio_read(hc, vm2, 0, 4) >> 16) : 0);
  if (vm2 > 0) vusb_hc_remove_vm(hc, vm2);

  vusb_hc_detach(hc, vm, 1);
  vusb_hc_remove_vm(hc, vm);
  vusb_hc_destroy(hc);
  munmap(ram, RAM_SIZE);
  close(fd);
  return vid == 0x0525 && msi_count >= 4 && ehci_class == 0x0c0320 ? 0 : 1;
}
