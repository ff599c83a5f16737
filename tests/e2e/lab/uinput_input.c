/* uinput-input: a scripted keyboard, mouse and touchscreen made with libevdev's uinput API — the
 * phone's (and a laptop's) input devices in e2e.vusbd_sensors. Creates three devices,
 * "vusb test keyboard" (letters, digits, modifiers, Enter, volume and power keys, the Caps Lock
 * and Num Lock LEDs), "vusb test mouse" (REL_X/Y, wheel, three buttons) and "vusb test touch"
 * (a 5-slot type-B multi-touch screen, 1080x2340, 10 units per mm, INPUT_PROP_DIRECT); once the
 * start gate exists it plays the steps given on the command line, 40 ms apart, each ending with
 * SYN_REPORT:
 *   kCODE:VALUE            a key (VALUE 1 down, 0 up)
 *   mDX,DY                 relative motion
 *   bMASK                  mouse buttons (1 left, 2 right, 4 middle)
 *   wN                     wheel
 *   tSLOT:ID:X:Y[/...]     touch slots in one frame (ID -1 lifts the slot's finger)
 *   led                    waits (up to 30 s) for the host to turn Caps Lock on
 * Prints "UINPUT-READY kbd=NODE mouse=NODE touch=NODE", "LAB-INFO input step=I" after each step,
 * "LAB-INFO led caps=1" when the LED came, "UINPUT-DONE" at the end.
 *
 * Usage: uinput-input [-g GATE_FILE] [-R READY_FILE] [-k KEEP_MS] STEP ...
 *   READY_FILE gets the three device nodes, one per line, once they exist.
 */
#include <errno.h>
#include <libevdev/libevdev-uinput.h>
#include <libevdev/libevdev.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

static struct libevdev_uinput *make(struct libevdev *dev) {
  struct libevdev_uinput *ui = NULL;
  int rc = libevdev_uinput_create_from_device(dev, LIBEVDEV_UINPUT_OPEN_MANAGED, &ui);
  if (rc < 0) {
    fprintf(stderr, "uinput-input: cannot create '%s': %s\n", libevdev_get_name(dev), strerror(-rc));
    exit(1);
  }
  const char *node = libevdev_uinput_get_devnode(ui);
  for (int i = 0; i < 250 && node && access(node, R_OK) != 0; i++) sleep_ms(20);
  return ui;
}

static void abs_axis(struct libevdev *d, unsigned code, int max, int res) {
  struct input_absinfo a = {.value = 0, .minimum = 0, .maximum = max, .fuzz = 0, .flat = 0,
                            .resolution = res};
  libevdev_enable_event_code(d, EV_ABS, code, &a);
}

/* Waits for EV_LED LED_CAPSL 1 on the keyboard's uinput descriptor. */
static int wait_caps(struct libevdev_uinput *ui, int ms) {
  int fd = libevdev_uinput_get_fd(ui);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
    if (left <= 0) return 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)left) <= 0) continue;
    struct input_event ev;
    while (read(fd, &ev, sizeof ev) == (ssize_t)sizeof ev) {
      if (ev.type == EV_LED && ev.code == LED_CAPSL && ev.value == 1) return 1;
    }
  }
}

int main(int argc, char **argv) {
  int keep = 1000, c;
  const char *gate = NULL, *ready = NULL;
  while ((c = getopt(argc, argv, "g:R:k:")) != -1) {
    switch (c) {
      case 'g': gate = optarg; break;
      case 'R': ready = optarg; break;
      case 'k': keep = atoi(optarg); break;
      default:
        fprintf(stderr, "usage: uinput-input [-g GATE] [-R READY] [-k KEEP_MS] STEP ...\n");
        return 2;
    }
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  struct libevdev *kd = libevdev_new();
  libevdev_set_name(kd, "vusb test keyboard");
  for (unsigned k = KEY_ESC; k <= KEY_KPDOT; k++) libevdev_enable_event_code(kd, EV_KEY, k, NULL);
  libevdev_enable_event_code(kd, EV_KEY, KEY_VOLUMEUP, NULL);
  libevdev_enable_event_code(kd, EV_KEY, KEY_VOLUMEDOWN, NULL);
  libevdev_enable_event_code(kd, EV_KEY, KEY_POWER, NULL);
  libevdev_enable_event_code(kd, EV_LED, LED_NUML, NULL);
  libevdev_enable_event_code(kd, EV_LED, LED_CAPSL, NULL);

  struct libevdev *md = libevdev_new();
  libevdev_set_name(md, "vusb test mouse");
  libevdev_enable_event_code(md, EV_REL, REL_X, NULL);
  libevdev_enable_event_code(md, EV_REL, REL_Y, NULL);
  libevdev_enable_event_code(md, EV_REL, REL_WHEEL, NULL);
  libevdev_enable_event_code(md, EV_KEY, BTN_LEFT, NULL);
  libevdev_enable_event_code(md, EV_KEY, BTN_RIGHT, NULL);
  libevdev_enable_event_code(md, EV_KEY, BTN_MIDDLE, NULL);

  struct libevdev *td = libevdev_new();
  libevdev_set_name(td, "vusb test touch");
  libevdev_enable_property(td, INPUT_PROP_DIRECT);
  libevdev_enable_event_code(td, EV_KEY, BTN_TOUCH, NULL);
  abs_axis(td, ABS_X, 1079, 10);
  abs_axis(td, ABS_Y, 2339, 10);
  abs_axis(td, ABS_MT_SLOT, 4, 0);
  abs_axis(td, ABS_MT_TRACKING_ID, 65535, 0);
  abs_axis(td, ABS_MT_POSITION_X, 1079, 10);
  abs_axis(td, ABS_MT_POSITION_Y, 2339, 10);

  struct libevdev_uinput *kbd = make(kd), *mouse = make(md), *touch = make(td);
  printf("UINPUT-READY kbd=%s mouse=%s touch=%s\n", libevdev_uinput_get_devnode(kbd),
         libevdev_uinput_get_devnode(mouse), libevdev_uinput_get_devnode(touch));
  if (ready) { /* the three nodes, one per line */
    FILE *f = fopen(ready, "w");
    if (f) {
      fprintf(f, "%s\n%s\n%s\n", libevdev_uinput_get_devnode(kbd),
              libevdev_uinput_get_devnode(mouse), libevdev_uinput_get_devnode(touch));
      fclose(f);
    }
  }
  if (gate) {
    struct stat st;
    while (stat(gate, &st) != 0) sleep_ms(20);
  }
  int down = 0; /* fingers down, for BTN_TOUCH */
  int slot_id[5] = {-1, -1, -1, -1, -1};
  int rc = 0;
  for (int i = optind; i < argc; i++) {
    const char *s = argv[i];
    struct libevdev_uinput *to = NULL;
    int a, b;
    if (s[0] == 'k' && sscanf(s + 1, "%d:%d", &a, &b) == 2) {
      to = kbd;
      libevdev_uinput_write_event(kbd, EV_KEY, (unsigned)a, b);
    } else if (s[0] == 'm' && sscanf(s + 1, "%d,%d", &a, &b) == 2) {
      to = mouse;
      libevdev_uinput_write_event(mouse, EV_REL, REL_X, a);
      libevdev_uinput_write_event(mouse, EV_REL, REL_Y, b);
    } else if (s[0] == 'b' && sscanf(s + 1, "%d", &a) == 1) {
      to = mouse;
      libevdev_uinput_write_event(mouse, EV_KEY, BTN_LEFT, a & 1);
      libevdev_uinput_write_event(mouse, EV_KEY, BTN_RIGHT, (a >> 1) & 1);
      libevdev_uinput_write_event(mouse, EV_KEY, BTN_MIDDLE, (a >> 2) & 1);
    } else if (s[0] == 'w' && sscanf(s + 1, "%d", &a) == 1) {
      to = mouse;
      libevdev_uinput_write_event(mouse, EV_REL, REL_WHEEL, a);
    } else if (s[0] == 't') {
      to = touch;
      const char *p = s + 1;
      int slot, id, x, y, n;
      while (sscanf(p, "%d:%d:%d:%d%n", &slot, &id, &x, &y, &n) == 4 && slot >= 0 && slot < 5) {
        libevdev_uinput_write_event(touch, EV_ABS, ABS_MT_SLOT, slot);
        libevdev_uinput_write_event(touch, EV_ABS, ABS_MT_TRACKING_ID, id);
        if (id >= 0) {
          libevdev_uinput_write_event(touch, EV_ABS, ABS_MT_POSITION_X, x);
          libevdev_uinput_write_event(touch, EV_ABS, ABS_MT_POSITION_Y, y);
        }
        slot_id[slot] = id;
        p += n;
        if (*p != '/') break;
        p++;
      }
      int now = 0;
      for (int k = 0; k < 5; k++) now += slot_id[k] >= 0;
      if ((now > 0) != (down > 0)) libevdev_uinput_write_event(touch, EV_KEY, BTN_TOUCH, now > 0);
      down = now;
    } else if (strcmp(s, "led") == 0) {
      if (wait_caps(kbd, 30000)) {
        printf("LAB-INFO led caps=1\n");
      } else {
        printf("LAB-INFO led caps=never\n");
        rc = 1;
      }
      continue;
    } else {
      fprintf(stderr, "uinput-input: bad step '%s'\n", s);
      return 2;
    }
    libevdev_uinput_write_event(to, EV_SYN, SYN_REPORT, 0);
    printf("LAB-INFO input step=%d %s\n", i - optind, s);
    sleep_ms(40);
  }
  printf("UINPUT-DONE\n");
  sleep_ms(keep);
  libevdev_uinput_destroy(kbd);
  libevdev_uinput_destroy(mouse);
  libevdev_uinput_destroy(touch);
  libevdev_free(kd);
  libevdev_free(md);
  libevdev_free(td);
  return rc;
}
