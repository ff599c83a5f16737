/* evdev-watch: prints the events of the input devices whose name contains PATTERN — the laptop
 * side of the input part of e2e.vusbd_sensors. Waits (up to 60 s) until N such devices exist,
 * prints "LAB-INFO evw-dev I node=/dev/input/eventX props=P name=NAME" for each (I: its index,
 * P: the INPUT_PROP bits), creates READY_FILE, then for SECONDS prints
 * "LAB-INFO evw I TYPE CODE VALUE" per event
 * (SYN_REPORT included). With -L, when a device with LEDs reports KEY_ENTER released, it turns
 * that device's Caps Lock LED on (hid-input sends the keyboard a SET_REPORT(Output)).
 *
 * With -g, SECONDS count from when GATE_FILE exists.
 *
 * Usage: evdev-watch [-L] [-R READY_FILE] [-g GATE_FILE] PATTERN N SECONDS
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAXDEV 8

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fds[MAXDEV];
static char nodes[MAXDEV][300];
static int count;

static int known(const char *node) {
  for (int i = 0; i < count; i++)
    if (strcmp(nodes[i], node) == 0) return 1;
  return 0;
}

static void scan(const char *pattern) {
  DIR *d = opendir("/dev/input");
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) && count < MAXDEV) {
    if (strncmp(e->d_name, "event", 5) != 0) continue;
    char node[300];
    snprintf(node, sizeof node, "/dev/input/%s", e->d_name);
    if (known(node)) continue;
    int fd = open(node, O_RDWR | O_NONBLOCK);
    if (fd < 0) continue;
    char name[256] = "";
    ioctl(fd, EVIOCGNAME(sizeof name - 1), name);
    if (!strstr(name, pattern)) {
      close(fd);
      continue;
    }
    unsigned long props = 0;
    ioctl(fd, EVIOCGPROP(sizeof props), &props);
    fds[count] = fd;
    snprintf(nodes[count], sizeof nodes[count], "%s", node);
    printf("LAB-INFO evw-dev %d node=%s props=%lu name=%s\n", count, node, props, name);
    count++;
  }
  closedir(d);
}

int main(int argc, char **argv) {
  int leds = 0, c;
  const char *ready = NULL, *gate = NULL;
  while ((c = getopt(argc, argv, "LR:g:")) != -1) {
    if (c == 'L') leds = 1;
    else if (c == 'R') ready = optarg;
    else if (c == 'g') gate = optarg;
    else return 2;
  }
  if (argc - optind != 3) {
    fprintf(stderr, "usage: evdev-watch [-L] [-R READY] [-g GATE] PATTERN N SECONDS\n");
    return 2;
  }
  const char *pattern = argv[optind];
  int want = atoi(argv[optind + 1]);
  double secs = atof(argv[optind + 2]);
  setvbuf(stdout, NULL, _IOLBF, 0);
  double t0 = now_s();
  while (count < want && now_s() - t0 < 60) {
    scan(pattern);
    if (count < want) usleep(100000);
  }
  if (count < want) {
    printf("LAB-FAIL evdev-watch found %d of %d devices matching '%s'\n", count, want, pattern);
    return 1;
  }
  if (ready) {
    FILE *f = fopen(ready, "w");
    if (f) fclose(f);
  }
  struct pollfd p[MAXDEV];
  for (int i = 0; i < count; i++) p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  long events = 0;
  /* SECONDS count from the gate (when given; events before it are printed too), at most 120 s
   * after the devices were found. */
  t0 = now_s();
  double start = gate ? 0 : t0;
  while (!start ? now_s() - t0 < 120 : now_s() - start < secs) {
    if (!start && access(gate, F_OK) == 0) start = now_s();
    if (poll(p, (nfds_t)count, 100) <= 0) continue;
    for (int i = 0; i < count; i++) {
      if (!(p[i].revents & POLLIN)) continue;
      struct input_event ev;
      while (read(fds[i], &ev, sizeof ev) == (ssize_t)sizeof ev) {
        events++;
        printf("LAB-INFO evw %d %u %u %d\n", i, ev.type, ev.code, ev.value);
        if (leds && ev.type == EV_KEY && ev.code == KEY_ENTER && ev.value == 0) {
          struct input_event led[2] = {{.type = EV_LED, .code = LED_CAPSL, .value = 1},
                                       {.type = EV_SYN, .code = SYN_REPORT, .value = 0}};
          if (write(fds[i], led, sizeof led) != (ssize_t)sizeof led) perror("evdev-watch: LED");
          else printf("LAB-INFO evw-led %d caps=1\n", i);
        }
      }
    }
  }
  printf("LAB-INFO evw-done events=%ld\n", events);
  return 0;
}
