/* uinput-accel: a scripted accelerometer for the guest lab, made with libevdev's uinput API — the
 * "phone" of e2e.vusbd_sensors. It creates an input device with INPUT_PROP_ACCELEROMETER and
 * ABS_X/Y/Z (resolution RES units per g, range ±4 g), as a phone's motion sensor driver does,
 * then, once the start gate exists, moves through the steps given on the command line, holding
 * each for HOLD ms.
 *
 * Usage: uinput-accel [-r RES] [-H HOLD_MS] [-g GATE_FILE] [-R READY_FILE] [-k KEEP_MS] X,Y,Z ...
 *   X,Y,Z in milli-g. Prints "UINPUT-READY node=/dev/input/eventN", then per step
 *   "LAB-INFO step=I x=X y=Y z=Z" (raw units) right after its SYN_REPORT, "UINPUT-DONE" at the end.
 */
#include <errno.h>
#include <libevdev/libevdev-uinput.h>
#include <libevdev/libevdev.h>
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

int main(int argc, char **argv) {
  int res = 256, hold = 1000, keep = 1000, c;
  const char *gate = NULL, *ready = NULL;
  while ((c = getopt(argc, argv, "r:H:g:R:k:")) != -1) {
    switch (c) {
      case 'r': res = atoi(optarg); break;
      case 'H': hold = atoi(optarg); break;
      case 'g': gate = optarg; break;
      case 'R': ready = optarg; break;
      case 'k': keep = atoi(optarg); break;
      default:
        fprintf(stderr, "usage: uinput-accel [-r RES] [-H HOLD_MS] [-g GATE] [-k KEEP_MS] X,Y,Z ...\n");
        return 2;
    }
  }
  if (res <= 0 || optind >= argc) {
    fprintf(stderr, "uinput-accel: give a resolution > 0 and at least one step\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct libevdev *dev = libevdev_new();
  libevdev_set_name(dev, "vusb test accelerometer");
  libevdev_enable_property(dev, INPUT_PROP_ACCELEROMETER);
  for (unsigned code = ABS_X; code <= ABS_Z; code++) {
    struct input_absinfo abs = {.value = 0, .minimum = -4 * res, .maximum = 4 * res,
                                .fuzz = 0, .flat = 0, .resolution = res};
    libevdev_enable_event_code(dev, EV_ABS, code, &abs);
  }
  struct libevdev_uinput *ui = NULL;
  int rc = libevdev_uinput_create_from_device(dev, LIBEVDEV_UINPUT_OPEN_MANAGED, &ui);
  if (rc < 0) {
    fprintf(stderr, "uinput-accel: cannot create the device: %s\n", strerror(-rc));
    return 1;
  }
  /* devtmpfs makes the node a moment later: ready means readers can open it. */
  const char *node = libevdev_uinput_get_devnode(ui);
  for (int i = 0; i < 250 && node && access(node, R_OK) != 0; i++) sleep_ms(20);
  printf("UINPUT-READY node=%s\n", node ? node : "?");
  if (ready) {
    FILE *f = fopen(ready, "w");
    if (f) fclose(f);
  }
  if (gate) {
    struct stat st;
    while (stat(gate, &st) != 0) sleep_ms(20);
  }
  for (int i = optind; i < argc; i++) {
    long mg[3];
    if (sscanf(argv[i], "%ld,%ld,%ld", &mg[0], &mg[1], &mg[2]) != 3) {
      fprintf(stderr, "uinput-accel: step '%s' is not X,Y,Z\n", argv[i]);
      return 2;
    }
    int v[3];
    for (int a = 0; a < 3; a++) {
      v[a] = (int)(mg[a] * res / 1000);
      libevdev_uinput_write_event(ui, EV_ABS, ABS_X + a, v[a]);
    }
    libevdev_uinput_write_event(ui, EV_SYN, SYN_REPORT, 0);
    printf("LAB-INFO step=%d x=%d y=%d z=%d\n", i - optind, v[0], v[1], v[2]);
    sleep_ms(hold);
  }
  printf("UINPUT-DONE\n");
  sleep_ms(keep);
  libevdev_uinput_destroy(ui);
  libevdev_free(dev);
  return 0;
}
