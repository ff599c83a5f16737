/* vusb host controller — C API for VMMs that embed the controller model.
 *
 * One vusb_hc is one shared virtual host controller; each VM gets its own xHCI function (a PCI
 * function with a 16 KiB memory BAR: capability, operational, runtime and doorbell registers, the
 * MSI-X table at 0x3000 and PBA at 0x3800) or EHCI function (4 KiB BAR, INTx) with its own guest
 * memory and interrupt callbacks.
 * The VMM forwards the VM's accesses to the function's BAR and PCI configuration space, and
 * calls vusb_hc_poll() from its event loop: transfer rings are served there (fairly across VMs)
 * and interrupt moderation timers run there.
 *
 * Threading: not thread-safe. Call every function from one thread (the VMM's device thread), or
 * serialize the calls. Callbacks run on that thread, inside the call that caused them.
 * Errors: functions returning int give 0 (or an id > 0) on success and a negative errno value.
 * See docs/vmm-api.md and examples/vmm_embed.c. */
#ifndef VUSB_HC_H
#define VUSB_HC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vusb_hc vusb_hc;

/* Which controller a VM's function is. */
enum { VUSB_HC_XHCI = 0, VUSB_HC_EHCI = 1 };

/* How the controller reaches one VM. */
typedef struct vusb_hc_vm_ops {
  void* opaque;
  /* VUSB_HC_XHCI (PCI class 0c0330, MSI-X) or VUSB_HC_EHCI (0c0320, INTx only). */
  int model;
  /* Guest RAM: copy len bytes at guest-physical gpa; return 0, or -1 if any byte is not RAM.
   * Used by vusb_hc_add_vm(); vusb_hc_add_vm_file() maps the RAM itself and ignores them. */
  int (*read_memory)(void* opaque, uint64_t gpa, void* buf, size_t len);
  int (*write_memory)(void* opaque, uint64_t gpa, const void* buf, size_t len);
  /* INTx level (MSI-X disabled). */
  void (*set_irq_level)(void* opaque, int asserted);
  /* An MSI-X message as the guest programmed it in the function's table. */
  void (*send_msi)(void* opaque, uint64_t address, uint32_t data);
} vusb_hc_vm_ops;

/* A guest-physical range of RAM and where it starts in the RAM file. */
typedef struct vusb_hc_ram_region {
  uint64_t gpa;
  uint64_t size;
  uint64_t file_offset;
} vusb_hc_ram_region;

vusb_hc* vusb_hc_create(void);
void vusb_hc_destroy(vusb_hc* hc);

/* A VM function whose RAM the callbacks reach; returns its id (> 0). `ops` is copied. */
int vusb_hc_add_vm(vusb_hc* hc, const char* name, const vusb_hc_vm_ops* ops);
/* A VM function over a shared RAM file (QEMU: memory-backend-file,share=on), mapped here.
 * regions == NULL, n == 0: the q35 layout for a file of ram_size bytes. */
int vusb_hc_add_vm_file(vusb_hc* hc, const char* name, const char* ram_path, uint64_t ram_size,
                        const vusb_hc_ram_region* regions, size_t n, const vusb_hc_vm_ops* ops);
int vusb_hc_remove_vm(vusb_hc* hc, int vm);
/* Weight of the VM's share of the controller's transfer service (default 1). */
int vusb_hc_set_weight(vusb_hc* hc, int vm, uint32_t weight);

/* The function's BAR (offset from the BAR's base; size 1, 2, 4 or 8) and config space. */
uint32_t vusb_hc_bar_size(vusb_hc* hc, int vm);
uint64_t vusb_hc_mmio_read(vusb_hc* hc, int vm, uint32_t offset, unsigned size);
void vusb_hc_mmio_write(vusb_hc* hc, int vm, uint32_t offset, uint64_t value, unsigned size);
uint32_t vusb_hc_config_read(vusb_hc* hc, int vm, uint32_t offset, unsigned size);
void vusb_hc_config_write(vusb_hc* hc, int vm, uint32_t offset, uint32_t value, unsigned size);

/* Devices. An emulated device on root-hub port `port` (1-based; xHCI: USB 2 ports 1-2, USB 3
 * ports 3-4; EHCI: ports 1-6, high speed): "gadget-zero" or "gadget-zero?speed=full,pattern=1,..."
 * (the options vusb-stub and vusbd take). Returns 0, -EINVAL for an unknown spec, -EBUSY for a
 * taken or unsuitable port. Part of libvusb_hc_capi; libvusb_hc_capi_core, the controller alone,
 * has no emulated devices (C++ code hands it devices through vusb_hc_device.h). */
int vusb_hc_attach_emulated(vusb_hc* hc, int vm, uint32_t port, const char* spec);
int vusb_hc_detach(vusb_hc* hc, int vm, uint32_t port);

/* Runs what is due: transfer rings, completions, moderation timers. Returns the milliseconds
 * until the next timer (-1: none, 0: more work is queued, call again). */
int vusb_hc_poll(vusb_hc* hc);

#ifdef __cplusplus
}
#endif

#endif /* VUSB_HC_H */
