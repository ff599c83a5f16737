/* iio-watch: reads an IIO device's x/y/z raw channels as fast as the driver answers and prints a
 * line each time the triple changes — the laptop side of e2e.vusbd_sensors. Each read of
 * in_<kind>_<axis>_raw is a GET_REPORT(Input) through the whole chain (hid-sensor-hub → USB/IP →
 * vusbd → the phone's stub), so a change is printed one read cycle after it reached the device.
 *
 * Usage: iio-watch DEVICE_DIR KIND SECONDS     (KIND: accel, anglvel, magn)
 * Output: "LAB-INFO accel X Y Z" per change, then "IIO-WATCH reads=N secs=S".
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long read_value(int fd) {
  char buf[32];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  return strtol(buf, NULL, 10);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: iio-watch DEVICE_DIR KIND SECONDS\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  int fd[3];
  const char axes[3] = {'x', 'y', 'z'};
  for (int i = 0; i < 3; i++) {
    char path[512];
    snprintf(path, sizeof path, "%s/in_%s_%c_raw", argv[1], argv[2], axes[i]);
    fd[i] = open(path, O_RDONLY);
    if (fd[i] < 0) {
      perror(path);
      return 1;
    }
  }
  const double end = now_s() + atof(argv[3]);
  long last[3] = {0, 0, 0};
  int have = 0;
  unsigned long reads = 0;
  const double start = now_s();
  while (now_s() < end) {
    long v[3];
    for (int i = 0; i < 3; i++) v[i] = read_value(fd[i]);
    reads++;
    if (!have || memcmp(v, last, sizeof v) != 0) {
      printf("LAB-INFO %s %ld %ld %ld\n", argv[2], v[0], v[1], v[2]);
      memcpy(last, v, sizeof v);
      have = 1;
    }
  }
  printf("IIO-WATCH reads=%lu secs=%.2f\n", reads, now_s() - start);
  return 0;
}
