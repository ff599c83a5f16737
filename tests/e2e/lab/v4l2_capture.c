/* v4l2-capture: the project's V4L2 capture program for the guest lab. It streams frames from a
 * video node with mmap buffers (the way applications use uvcvideo), reads the frame counter vusb's
 * emulated camera puts in every frame, and reports drops, duplicates and the frame rate.
 *
 * Counter formats (devices/emulated/test_pattern.h): MJPEG — a COM segment right after SOI with
 * "vusb-frame NNNNNNNNNN"; YUYV — the first 48 macropixels of row 0 spell the magic 0x5655 and the
 * 32-bit counter, most significant bit first (Y > 128 is a one).
 *
 * Usage: v4l2-capture [-d /dev/video0] [-f mjpeg|yuyv] [-s WxH] [-r FPS] [-n FRAMES]
 *                     [-t SECONDS] [-b BUFFERS] [-g START_FILE] [-R] [-D N]
 *   -g FILE  wait (up to -t) for FILE to exist before STREAMON (a start barrier)
 *   -D N     tolerate up to N dropped frames (default 0; sanitizer builds, whose slower daemons
 *            can make the camera drop a whole frame now and then)
 *   -R       ride out a disconnect: when the device goes away, wait for it to come back (up to
 *            -t), open it again and keep counting (the counter check restarts after a reconnect)
 * Output lines (one each, parsed by tests/e2e):
 *   V4L2-FORMAT fourcc=MJPG width=640 height=480 sizeimage=N interval=1/30 card=...
 *   V4L2-FRAME-INFO n=I counter=C bytes=B ms=T            (first 3 and every 30th frame)
 *   V4L2-DISCONNECT after=N errno=E / V4L2-RECONNECT after_ms=T
 *   V4L2-CAPTURE frames=N dropped=D duplicated=U bad=B errors=E reconnects=R first=C0 last=C1
 *                secs=S fps=F first_frame_ms=T
 * Exit status: 0 all frames captured and none (beyond -D) dropped, none duplicated or bad; 1 they were not;
 * 2 usage / setup error; 3 timeout; 4 the device went away (without -R).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/videodev2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUFFERS 16

struct buffer {
  void *start;
  size_t length;
};

static const char *device = "/dev/video0";
static uint32_t fourcc = V4L2_PIX_FMT_MJPEG;
static unsigned width = 640, height = 480, fps = 30, frames_wanted = 150, nbuffers = 4;
static double timeout_s = 60;
static const char *gate;
static int ride_out;
static unsigned max_dropped;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int xioctl(int fd, unsigned long req, void *arg) {
  int r;
  do r = ioctl(fd, req, arg);
  while (r < 0 && errno == EINTR);
  return r;
}

/* The counter a frame carries; -1 when it carries none. */
static int64_t frame_counter(const uint8_t *p, size_t n) {
  if (fourcc == V4L2_PIX_FMT_MJPEG) {
    static const char prefix[] = "vusb-frame ";
    const size_t plen = sizeof(prefix) - 1, digits = 10;
    if (n < 6 + plen + digits || p[0] != 0xff || p[1] != 0xd8 || p[2] != 0xff || p[3] != 0xfe)
      return -1;
    if (((size_t)p[4] << 8 | p[5]) != plen + digits + 2) return -1;
    if (memcmp(p + 6, prefix, plen) != 0) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < digits; i++) {
      uint8_t c = p[6 + plen + i];
      if (c < '0' || c > '9') return -1;
      v = v * 10 + (c - '0');
    }
    return v > 0xffffffffLL ? -1 : v;
  }
  if (n < 48 * 4) return -1;
  uint64_t bits = 0;
  for (size_t i = 0; i < 48; i++) bits = bits << 1 | (p[i * 4] > 128 ? 1u : 0u);
  if ((bits >> 32) != 0x5655) return -1;
  return (int64_t)(bits & 0xffffffffu);
}

struct stream {
  int fd;
  struct buffer bufs[MAX_BUFFERS];
  unsigned count;
};

static void close_stream(struct stream *s) {
  if (s->fd < 0) return;
  enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  xioctl(s->fd, VIDIOC_STREAMOFF, &type);
  for (unsigned i = 0; i < s->count; i++)
    if (s->bufs[i].start && s->bufs[i].start != MAP_FAILED) munmap(s->bufs[i].start, s->bufs[i].length);
  s->count = 0;
  close(s->fd);
  s->fd = -1;
}

/* Opens, sets the format and rate, maps and queues the buffers. Returns 0, or 2 on a setup error
 * (printed). `announce` prints V4L2-FORMAT. */
static int open_stream(struct stream *s, int announce) {
  s->fd = open(device, O_RDWR | O_NONBLOCK);
  if (s->fd < 0) {
    fprintf(stderr, "v4l2-capture: open %s: %s\n", device, strerror(errno));
    return 2;
  }
  struct v4l2_capability cap;
  memset(&cap, 0, sizeof cap);
  if (xioctl(s->fd, VIDIOC_QUERYCAP, &cap) < 0 || !(cap.device_caps & V4L2_CAP_STREAMING)) {
    fprintf(stderr, "v4l2-capture: %s is not a streaming capture device\n", device);
    return 2;
  }
  struct v4l2_format fmt;
  memset(&fmt, 0, sizeof fmt);
  fmt.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  fmt.fmt.pix.width = width;
  fmt.fmt.pix.height = height;
  fmt.fmt.pix.pixelformat = fourcc;
  fmt.fmt.pix.field = V4L2_FIELD_NONE;
  if (xioctl(s->fd, VIDIOC_S_FMT, &fmt) < 0) {
    fprintf(stderr, "v4l2-capture: VIDIOC_S_FMT: %s\n", strerror(errno));
    return 2;
  }
  /* The driver may have chosen another format (a shared camera steers to the one in use). */
  fourcc = fmt.fmt.pix.pixelformat;
  struct v4l2_streamparm parm;
  memset(&parm, 0, sizeof parm);
  parm.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  parm.parm.capture.timeperframe.numerator = 1;
  parm.parm.capture.timeperframe.denominator = fps;
  if (xioctl(s->fd, VIDIOC_S_PARM, &parm) < 0)
    fprintf(stderr, "v4l2-capture: VIDIOC_S_PARM: %s (keeping the default rate)\n", strerror(errno));
  memset(&parm, 0, sizeof parm);
  parm.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  xioctl(s->fd, VIDIOC_G_PARM, &parm);
  if (announce) {
    printf("V4L2-FORMAT fourcc=%.4s width=%u height=%u sizeimage=%u interval=%u/%u card=%s\n",
           (const char *)&fourcc, fmt.fmt.pix.width, fmt.fmt.pix.height, fmt.fmt.pix.sizeimage,
           parm.parm.capture.timeperframe.numerator, parm.parm.capture.timeperframe.denominator,
           (const char *)cap.card);
    fflush(stdout);
  }
  struct v4l2_requestbuffers req;
  memset(&req, 0, sizeof req);
  req.count = nbuffers;
  req.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  req.memory = V4L2_MEMORY_MMAP;
  if (xioctl(s->fd, VIDIOC_REQBUFS, &req) < 0 || req.count < 2) {
    fprintf(stderr, "v4l2-capture: VIDIOC_REQBUFS: %s\n", strerror(errno));
    return 2;
  }
  s->count = req.count > MAX_BUFFERS ? MAX_BUFFERS : req.count;
  for (unsigned i = 0; i < s->count; i++) {
    struct v4l2_buffer b;
    memset(&b, 0, sizeof b);
    b.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    b.memory = V4L2_MEMORY_MMAP;
    b.index = i;
    if (xioctl(s->fd, VIDIOC_QUERYBUF, &b) < 0) return 2;
    s->bufs[i].length = b.length;
    s->bufs[i].start = mmap(NULL, b.length, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, b.m.offset);
    if (s->bufs[i].start == MAP_FAILED) {
      fprintf(stderr, "v4l2-capture: mmap: %s\n", strerror(errno));
      return 2;
    }
    if (xioctl(s->fd, VIDIOC_QBUF, &b) < 0) {
      fprintf(stderr, "v4l2-capture: VIDIOC_QBUF: %s\n", strerror(errno));
      return 2;
    }
  }
  return 0;
}

/* After a reconnect the camera may come back under another node: the first /dev/videoN that
 * captures video. */
static int find_capture_node(char *out, size_t n) {
  for (int i = 0; i < 16; i++) {
    char path[32];
    snprintf(path, sizeof path, "/dev/video%d", i);
    int fd = open(path, O_RDWR | O_NONBLOCK);
    if (fd < 0) continue;
    struct v4l2_capability cap;
    memset(&cap, 0, sizeof cap);
    int ok = xioctl(fd, VIDIOC_QUERYCAP, &cap) == 0 && (cap.device_caps & V4L2_CAP_VIDEO_CAPTURE);
    close(fd);
    if (ok) {
      snprintf(out, n, "%s", path);
      return 0;
    }
  }
  return -1;
}

static int start_stream(struct stream *s) {
  enum v4l2_buf_type type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
  if (xioctl(s->fd, VIDIOC_STREAMON, &type) < 0) {
    fprintf(stderr, "v4l2-capture: VIDIOC_STREAMON: %s\n", strerror(errno));
    return 2;
  }
  return 0;
}

static int parse_args(int argc, char **argv) {
  int c;
  while ((c = getopt(argc, argv, "d:f:s:r:n:t:b:g:RD:")) != -1) {
    switch (c) {
      case 'd': device = optarg; break;
      case 'f':
        if (!strcmp(optarg, "mjpeg")) fourcc = V4L2_PIX_FMT_MJPEG;
        else if (!strcmp(optarg, "yuyv")) fourcc = V4L2_PIX_FMT_YUYV;
        else return -1;
        break;
      case 's':
        if (sscanf(optarg, "%ux%u", &width, &height) != 2) return -1;
        break;
      case 'r': fps = (unsigned)atoi(optarg); break;
      case 'n': frames_wanted = (unsigned)atoi(optarg); break;
      case 't': timeout_s = atof(optarg); break;
      case 'b': nbuffers = (unsigned)atoi(optarg); break;
      case 'g': gate = optarg; break;
      case 'R': ride_out = 1; break;
      case 'D': max_dropped = (unsigned)atoi(optarg); break;
      default: return -1;
    }
  }
  if (!fps || !frames_wanted || nbuffers < 2 || nbuffers > MAX_BUFFERS) return -1;
  return 0;
}

int main(int argc, char **argv) {
  if (parse_args(argc, argv) < 0) {
    fprintf(stderr, "usage: v4l2-capture [-d DEV] [-f mjpeg|yuyv] [-s WxH] [-r FPS] [-n FRAMES] "
                    "[-t SECONDS] [-b BUFFERS] [-g START_FILE] [-R]\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const double t_begin = now_s();
  const double deadline = t_begin + timeout_s;
  struct stream s = {.fd = -1};
  int rc = open_stream(&s, 1);
  if (rc) return rc;
  if (gate) {
    struct stat st;
    while (stat(gate, &st) != 0) {
      if (now_s() > deadline) {
        fprintf(stderr, "v4l2-capture: start gate %s never opened\n", gate);
        return 3;
      }
      usleep(20000);
    }
  }
  if ((rc = start_stream(&s))) return rc;

  unsigned frames = 0, dropped = 0, duplicated = 0, bad = 0, errors = 0, reconnects = 0;
  int64_t first = -1, last = -1;
  double t_start = now_s(), t_first = 0;
  while (frames < frames_wanted) {
    if (now_s() > deadline) {
      printf("V4L2-CAPTURE frames=%u dropped=%u duplicated=%u bad=%u errors=%u reconnects=%u "
             "first=%lld last=%lld secs=%.3f fps=0 first_frame_ms=%.0f result=timeout\n",
             frames, dropped, duplicated, bad, errors, reconnects, (long long)first,
             (long long)last, now_s() - t_start, t_first ? (t_first - t_start) * 1e3 : -1.0);
      return 3;
    }
    struct pollfd pfd = {.fd = s.fd, .events = POLLIN};
    int pr = poll(&pfd, 1, 200);
    if (pr < 0 && errno == EINTR) continue;
    struct v4l2_buffer b;
    memset(&b, 0, sizeof b);
    b.type = V4L2_BUF_TYPE_VIDEO_CAPTURE;
    b.memory = V4L2_MEMORY_MMAP;
    int gone = (pr > 0 && (pfd.revents & (POLLERR | POLLHUP)) && !(pfd.revents & POLLIN));
    if (!gone && pr > 0) {
      if (xioctl(s.fd, VIDIOC_DQBUF, &b) < 0) {
        if (errno == EAGAIN) continue;
        gone = 1;
      }
    }
    if (!gone && pr == 0) continue;
    if (gone) {
      printf("V4L2-DISCONNECT after=%u errno=%d\n", frames, errno);
      if (!ride_out) return 4;
      /* Close only once the driver has finished tearing the device down: Debian 6.1's uvcvideo
       * can dereference NULL (ida_free from media_device_unregister_entity, a kernel panic) when
       * the last close of the node runs while the disconnect is still unregistering the media
       * device. The node's removal comes first; the rest follows within moments. */
      for (int i = 0; i < 40 && access(device, F_OK) == 0; i++) usleep(50000);
      usleep(300000);
      close_stream(&s);
      const double t_gone = now_s();
      /* Wait for the node to come back and answer again. */
      static char node[32];
      while (now_s() < deadline) {
        usleep(100000);
        if (find_capture_node(node, sizeof node) != 0) continue;
        device = node;
        if (open_stream(&s, 0) == 0 && start_stream(&s) == 0) break;
        close_stream(&s);
      }
      if (s.fd < 0) continue; /* the deadline check above reports it */
      ++reconnects;
      last = -1; /* the counter check restarts with the new stream */
      printf("V4L2-RECONNECT after_ms=%.0f device=%s\n", (now_s() - t_gone) * 1e3, device);
      continue;
    }
    if (b.flags & V4L2_BUF_FLAG_ERROR) {
      ++errors;
    } else {
      const int64_t c = frame_counter(s.bufs[b.index].start, b.bytesused);
      if (!frames) t_first = now_s();
      if (c < 0) {
        ++bad;
      } else {
        if (first < 0) first = c;
        if (last >= 0) {
          if (c <= last) ++duplicated;
          else if (c > last + 1) dropped += (unsigned)(c - last - 1);
        }
        last = c;
      }
      if (frames < 3 || frames % 30 == 0)
        printf("V4L2-FRAME-INFO n=%u counter=%lld bytes=%u ms=%.0f\n", frames, (long long)c,
               b.bytesused, (now_s() - t_start) * 1e3);
      ++frames;
    }
    if (xioctl(s.fd, VIDIOC_QBUF, &b) < 0 && errno != ENODEV && errno != EINVAL)
      fprintf(stderr, "v4l2-capture: VIDIOC_QBUF: %s\n", strerror(errno));
  }
  const double t_end = now_s();
  /* The rate over the frames after the first (the first waits for the stream to start). */
  const double fps_seen = frames > 1 && t_end > t_first ? (frames - 1) / (t_end - t_first) : 0;
  printf("V4L2-CAPTURE frames=%u dropped=%u duplicated=%u bad=%u errors=%u reconnects=%u "
         "first=%lld last=%lld secs=%.3f fps=%.2f first_frame_ms=%.0f result=%s\n",
         frames, dropped, duplicated, bad, errors, reconnects, (long long)first, (long long)last,
         t_end - t_start, fps_seen, (t_first - t_start) * 1e3,
         dropped > max_dropped || duplicated || bad ? "fail" : "ok");
  close_stream(&s);
  return dropped > max_dropped || duplicated || bad ? 1 : 0;
}
