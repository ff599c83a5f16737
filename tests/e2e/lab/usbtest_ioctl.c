/*
 * usbtest-ioctl: drives the Linux kernel's usbtest driver (drivers/usb/misc/usbtest.c) through
 * usbfs, one numbered test case at a time, and prints one machine-readable line per case:
 *
 *   USBTEST case=9 result=ok errno=0 secs=0.123 iter=20 len=512 vary=0 sglen=8 dev=/dev/bus/usb/001/002
 *   USBTEST case=15 result=fail errno=-95 (EOPNOTSUPP) ...
 *   USBTEST case=11 result=timeout errno=-62 ...     (the case did not finish within -t seconds)
 *
 * The vusb project's own program (the kernel's testusb is not packaged by Debian). It runs inside
 * the guest lab's initramfs, so it is built static and depends on nothing but libc.
 *
 * Usage: usbtest-ioctl [-D /dev/bus/usb/BBB/DDD] [-I ifno] [-w wait_secs] [-t case_timeout_secs]
 *                      [-n iterations] [-l length] [-v vary] [-s sglen] [-k] [-L]
 *                      CASE[:ITER[:LEN[:VARY[:SGLEN]]]] ...
 *   Without -D the first device whose interface is bound to usbtest is used (found by scanning
 *   /dev/bus/usb and asking usbfs which driver owns each interface). Empty fields in a CASE take
 *   the -n/-l/-v/-s values, else per-case defaults that satisfy usbtest's preconditions.
 *   -k keeps going after a case times out (default: later cases are reported result=skip, since
 *   the device is then usually wedged). -L lists the usbtest-bound devices and exits.
 * Exit status: 0 when every case passed, 1 when any failed, 2 on usage / no device, 3 when a case
 * timed out (the device or the kernel's USB stack is then probably wedged).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Must match struct usbtest_param_64 in drivers/usb/misc/usbtest.c (64-bit user space). */
struct usbtest_param_64 {
	/* inputs */
	uint32_t test_num;
	uint32_t iterations;
	uint32_t length;
	uint32_t vary;
	uint32_t sglen;
	/* outputs */
	int64_t duration_sec;
	int64_t duration_usec;
};
_Static_assert(sizeof(struct usbtest_param_64) == 40, "usbtest_param_64 layout");
#define USBTEST_REQUEST_64 _IOWR('U', 100, struct usbtest_param_64)

struct tcase {
	unsigned num, iterations, length, vary, sglen;
};

/* Defaults per case chosen so usbtest's preconditions hold (vary != 0 for 3/4/7/8, sglen >= 4
 * for 24, sglen == 16 so case 10 runs all its subcases, vary < length <= 0xffff for 14/21,
 * IN vary a multiple of the 512-byte high-speed maxpacket so reads stay packet aligned). */
static struct tcase default_case(unsigned num)
{
	struct tcase c = { num, 20, 512, 0, 8 };
	switch (num) {
	case 3: c.length = 2048; c.vary = 37; break;
	case 4: c.length = 2048; c.vary = 512; break;
	case 7: c.length = 2048; c.vary = 37; break;
	case 8: c.length = 2048; c.vary = 512; break;
	case 10: c.sglen = 16; break;
	case 14: case 21: c.length = 256; c.vary = 1; break;
	case 15: case 16: case 22: case 23: c.length = 1024; c.sglen = 4; c.iterations = 8; break;
	case 24: c.sglen = 8; break;
	case 27: case 28: c.length = 16384; c.sglen = 8; c.iterations = 8; break;
	}
	return c;
}

static const char *errname(int e)
{
	switch (e) {
	case 0: return "OK";
	case EPIPE: return "EPIPE";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EINVAL: return "EINVAL";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EIO: return "EIO";
	case ENODEV: return "ENODEV";
	case ENOENT: return "ENOENT";
	case ECONNRESET: return "ECONNRESET";
	case EPROTO: return "EPROTO";
	case EOVERFLOW: return "EOVERFLOW";
	case EREMOTEIO: return "EREMOTEIO";
	case EILSEQ: return "EILSEQ";
	case ENOMEM: return "ENOMEM";
	case EDOM: return "EDOM";
	case ERANGE: return "ERANGE";
	case EBADMSG: return "EBADMSG";
	case EACCES: return "EACCES";
	case ESHUTDOWN: return "ESHUTDOWN";
	case ENOTTY: return "ENOTTY";
	case EBUSY: return "EBUSY";
	case EINTR: return "EINTR";
	default: return "E?";
	}
}

/* Returns 1 when interface ifno of the usbfs node fd is bound to usbtest. */
static int bound_to_usbtest(int fd, int ifno)
{
	struct usbdevfs_getdriver gd;
	memset(&gd, 0, sizeof gd);
	gd.interface = (unsigned)ifno;
	if (ioctl(fd, USBDEVFS_GETDRIVER, &gd) != 0)
		return 0;
	return strcmp(gd.driver, "usbtest") == 0;
}

struct found {
	char path[96];
	int ifno;
	unsigned vid, pid;
};

/* Scans /dev/bus/usb for devices with an interface bound to usbtest; returns how many. */
static int scan(struct found *out, int max)
{
	int n = 0;
	DIR *top = opendir("/dev/bus/usb");
	if (!top)
		return 0;
	struct dirent *b;
	char buses[64][16];
	int nb = 0;
	while ((b = readdir(top)) && nb < 64)
		if (b->d_name[0] != '.')
			snprintf(buses[nb++], sizeof buses[0], "%.8s", b->d_name);
	closedir(top);
	for (int i = 0; i < nb && n < max; i++) {
		char dpath[64];
		snprintf(dpath, sizeof dpath, "/dev/bus/usb/%.8s", buses[i]);
		DIR *bd = opendir(dpath);
		if (!bd)
			continue;
		struct dirent *d;
		while ((d = readdir(bd)) && n < max) {
			if (d->d_name[0] == '.')
				continue;
			char path[96];
			snprintf(path, sizeof path, "%.40s/%.8s", dpath, d->d_name);
			int fd = open(path, O_RDWR);
			if (fd < 0)
				continue;
			/* usbfs read(): device descriptor then the raw configuration descriptors. */
			unsigned char desc[18];
			ssize_t got = read(fd, desc, sizeof desc);
			if (got == (ssize_t)sizeof desc && desc[4] != 9 /* hubs never bind usbtest */) {
				for (int ifno = 0; ifno < 8; ifno++) {
					if (bound_to_usbtest(fd, ifno)) {
						snprintf(out[n].path, sizeof out[n].path, "%s", path);
						out[n].ifno = ifno;
						out[n].vid = (unsigned)desc[8] | (unsigned)desc[9] << 8;
						out[n].pid = (unsigned)desc[10] | (unsigned)desc[11] << 8;
						n++;
						break;
					}
				}
			}
			close(fd);
		}
		closedir(bd);
	}
	return n;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct outcome {
	int err;		/* 0 or positive errno */
	int64_t sec, usec;	/* duration measured by usbtest */
};

/* Runs one case in a child process so a hung case can be abandoned after timeout seconds. */
static int run_case(const char *path, int ifno, const struct tcase *c, double timeout,
		    struct outcome *res)
{
	int pfd[2];
	if (pipe(pfd) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(pfd[0]);
		struct outcome o = { 0, 0, 0 };
		int fd = open(path, O_RDWR);
		if (fd < 0) {
			o.err = errno;
		} else {
			struct usbtest_param_64 p;
			memset(&p, 0, sizeof p);
			p.test_num = c->num;
			p.iterations = c->iterations;
			p.length = c->length;
			p.vary = c->vary;
			p.sglen = c->sglen;
			struct usbdevfs_ioctl w;
			memset(&w, 0, sizeof w);
			w.ifno = ifno;
			w.ioctl_code = (int)USBTEST_REQUEST_64;
			w.data = &p;
			int r = ioctl(fd, USBDEVFS_IOCTL, &w);
			o.err = r < 0 ? errno : 0;
			o.sec = p.duration_sec;
			o.usec = p.duration_usec;
			close(fd);
		}
		ssize_t wr = write(pfd[1], &o, sizeof o);
		_exit(wr == (ssize_t)sizeof o ? 0 : 1);
	}
	close(pfd[1]);
	struct pollfd pf = { .fd = pfd[0], .events = POLLIN };
	int ms = timeout > 0 ? (int)(timeout * 1000) : -1;
	int pr;
	do {
		pr = poll(&pf, 1, ms);
	} while (pr < 0 && errno == EINTR);
	int rc = 0;
	if (pr == 0) {
		kill(pid, SIGKILL);
		rc = 1; /* timed out */
		/* Reap without blocking forever: a task stuck in the kernel may never die. */
		for (int i = 0; i < 20; i++) {
			if (waitpid(pid, NULL, WNOHANG) == pid)
				break;
			usleep(50000);
		}
	} else {
		ssize_t got = read(pfd[0], res, sizeof *res);
		if (got != (ssize_t)sizeof *res) {
			res->err = EIO;
			res->sec = res->usec = 0;
		}
		waitpid(pid, NULL, 0);
	}
	close(pfd[0]);
	return rc;
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 0);
	if (errno || end == s || *end || v > 0xffffffffUL)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: usbtest-ioctl [-D dev] [-I ifno] [-w wait] [-t timeout] [-n iter] [-l len]\n"
		"                     [-v vary] [-s sglen] [-k] [-L] CASE[:ITER[:LEN[:VARY[:SGLEN]]]]...\n");
}

int main(int argc, char **argv)
{
	const char *dev = NULL;
	int ifno = -1, keep_going = 0, list = 0;
	double wait_secs = 0, timeout = 60;
	long g_iter = -1, g_len = -1, g_vary = -1, g_sglen = -1;
	int opt;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt(argc, argv, "D:I:w:t:n:l:v:s:kLh")) != -1) {
		switch (opt) {
		case 'D': dev = optarg; break;
		case 'I': ifno = atoi(optarg); break;
		case 'w': wait_secs = atof(optarg); break;
		case 't': timeout = atof(optarg); break;
		case 'n': g_iter = atol(optarg); break;
		case 'l': g_len = atol(optarg); break;
		case 'v': g_vary = atol(optarg); break;
		case 's': g_sglen = atol(optarg); break;
		case 'k': keep_going = 1; break;
		case 'L': list = 1; break;
		default: usage(); return 2;
		}
	}

	struct found f[16];
	int nf = 0;
	double deadline = now() + wait_secs;
	for (;;) {
		nf = scan(f, 16);
		if (dev) {
			int match = -1;
			for (int i = 0; i < nf; i++)
				if (strcmp(f[i].path, dev) == 0)
					match = i;
			if (match >= 0 || ifno >= 0) {
				if (match < 0) {
					snprintf(f[0].path, sizeof f[0].path, "%s", dev);
					f[0].ifno = ifno;
					f[0].vid = f[0].pid = 0;
				} else {
					f[0] = f[match];
					if (ifno >= 0)
						f[0].ifno = ifno;
				}
				nf = 1;
				break;
			}
		} else if (nf > 0) {
			break;
		}
		if (now() >= deadline)
			break;
		usleep(200000);
	}
	if (list) {
		for (int i = 0; i < nf; i++)
			printf("USBTEST-DEV path=%s ifno=%d id=%04x:%04x\n", f[i].path, f[i].ifno,
			       f[i].vid, f[i].pid);
		return nf ? 0 : 2;
	}
	if (nf == 0) {
		printf("USBTEST-ERROR no device bound to usbtest%s%s\n", dev ? " at " : "",
		       dev ? dev : "");
		return 2;
	}
	if (optind >= argc) {
		usage();
		return 2;
	}
	printf("USBTEST-DEV path=%s ifno=%d id=%04x:%04x\n", f[0].path, f[0].ifno, f[0].vid,
	       f[0].pid);

	int failures = 0, wedged = 0, timeouts = 0;
	for (int a = optind; a < argc; a++) {
		/* CASE[:ITER[:LEN[:VARY[:SGLEN]]]], empty fields take the defaults. */
		char spec[128];
		snprintf(spec, sizeof spec, "%s", argv[a]);
		char *fields[5] = { 0 };
		int nfld = 0;
		char *save = spec;
		for (char *p = spec;; p++) {
			if (*p == ':' || *p == '\0') {
				int end = *p == '\0';
				*p = '\0';
				if (nfld < 5)
					fields[nfld++] = save;
				save = p + 1;
				if (end)
					break;
			}
		}
		unsigned num;
		if (!fields[0] || parse_uint(fields[0], &num) != 0) {
			fprintf(stderr, "usbtest-ioctl: bad case spec '%s'\n", argv[a]);
			return 2;
		}
		struct tcase c = default_case(num);
		if (g_iter >= 0) c.iterations = (unsigned)g_iter;
		if (g_len >= 0) c.length = (unsigned)g_len;
		if (g_vary >= 0) c.vary = (unsigned)g_vary;
		if (g_sglen >= 0) c.sglen = (unsigned)g_sglen;
		unsigned *slots[4] = { &c.iterations, &c.length, &c.vary, &c.sglen };
		for (int i = 1; i < nfld; i++) {
			if (fields[i][0] == '\0')
				continue;
			if (parse_uint(fields[i], slots[i - 1]) != 0) {
				fprintf(stderr, "usbtest-ioctl: bad case spec '%s'\n", argv[a]);
				return 2;
			}
		}
		char params[160];
		snprintf(params, sizeof params, "iter=%u len=%u vary=%u sglen=%u dev=%s", c.iterations,
			 c.length, c.vary, c.sglen, f[0].path);
		if (wedged) {
			printf("USBTEST case=%u result=skip errno=0 secs=0 %s\n", c.num, params);
			failures++;
			continue;
		}
		struct outcome o = { 0, 0, 0 };
		double t0 = now();
		int rc = run_case(f[0].path, f[0].ifno, &c, timeout, &o);
		double wall = now() - t0;
		if (rc < 0) {
			printf("USBTEST case=%u result=fail errno=-%d (%s) secs=0 %s\n", c.num, errno,
			       errname(errno), params);
			failures++;
		} else if (rc == 1) {
			printf("USBTEST case=%u result=timeout errno=-%d (ETIMEDOUT) secs=%.3f %s\n",
			       c.num, ETIMEDOUT, wall, params);
			failures++;
			timeouts++;
			if (!keep_going)
				wedged = 1;
		} else if (o.err == 0) {
			printf("USBTEST case=%u result=ok errno=0 secs=%.3f wall=%.3f %s\n", c.num,
			       (double)o.sec + (double)o.usec / 1e6, wall, params);
		} else {
			printf("USBTEST case=%u result=fail errno=-%d (%s) secs=%.3f %s\n", c.num, o.err,
			       errname(o.err), wall, params);
			failures++;
		}
	}
	return timeouts ? 3 : failures ? 1 : 0;
}
